"""Shared fixtures: photos made in tmp_path (any size, mode, format, EXIF orientation), a fresh
workspace, and the shared real data one folder above the repository when it is present."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labeling.workspace import init_workspace

SHARED = Path(__file__).resolve().parents[2] / "shared"
ORIENTATION_TAG = 0x0112

# How a phone stores an upright picture under each EXIF orientation: the inverse of the transpose a
# viewer applies (2, 3, 4, 5 and 7 are their own inverse; 6 and 8 are a quarter turn each way).
T = Image.Transpose
STORE_TRANSPOSE = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM,
                   5: T.TRANSPOSE, 6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}


def picture(size=(64, 48), seed=0, corner=(255, 0, 0)):
    """An upright RGB test picture: a smooth random texture (so perceptual hashes of two seeds
    differ, and JPEG keeps it well) with a solid `corner` block top-left (so a turn shows)."""
    w, h = size
    rng = np.random.RandomState(seed)
    small = Image.fromarray(rng.randint(0, 256, (6, 8, 3)).astype(np.uint8))
    im = small.resize((w, h), Image.BICUBIC)
    if corner:
        im.paste(corner, (0, 0, max(1, w // 5), max(1, h // 5)))
    return im


def make_photo(path, size=(64, 48), mode="RGB", orientation=None, seed=0, quality=95, exif=None,
               image=None, **save_args):
    """Write a photo as a phone would and return the upright RGB picture a viewer shows.

    `size` is the upright size; with `orientation` 5-8 the stored pixels are `size` turned, so
    the file is h x w. The format follows the suffix (.jpg .png .heic ...). `exif` is an
    `Image.Exif` to store (the orientation tag is added to it). `image` replaces the picture.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    upright = image.convert("RGB") if image is not None else picture(size, seed)
    stored = image if image is not None else upright
    if orientation and STORE_TRANSPOSE[orientation] is not None:
        stored = stored.transpose(STORE_TRANSPOSE[orientation])
    if mode != stored.mode:
        stored = stored.convert(mode)
    if orientation or exif is not None:
        exif = exif if exif is not None else Image.Exif()
        if orientation:
            exif[ORIENTATION_TAG] = orientation
        save_args["exif"] = exif.tobytes()  # pillow-heif wants bytes; PIL takes both
    if path.suffix.lower() in (".jpg", ".jpeg", ".heic", ".heif"):
        save_args.setdefault("quality", quality)
    stored.save(path, **save_args)
    return upright


@pytest.fixture(name="make_photo")
def make_photo_fixture():
    return make_photo


@pytest.fixture
def shared_dir():
    """/work/shared (the real photos and labelme's own examples); the test skips without it."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not present at {SHARED}")
    return SHARED


def run_at_once(target, arg_lists, start="spawn", timeout=120):
    """target(*args, barrier) in one process per args tuple, all let go together by the barrier
    (so they really overlap); returns their exit codes."""
    import multiprocessing

    ctx = multiprocessing.get_context(start)
    barrier = ctx.Barrier(len(arg_lists))
    procs = [ctx.Process(target=target, args=(*args, barrier)) for args in arg_lists]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    return [p.exitcode for p in procs]


@pytest.fixture
def ws(tmp_path):
    """A fresh workspace with two classes."""
    return init_workspace(tmp_path / "ws", ["fish", "shark"])


def heic_can_encode() -> bool:
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        Image.new("RGB", (16, 16)).save(io.BytesIO(), format="HEIF")
        return True
    except Exception:
        return False


def mean_abs_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"{a.shape} != {b.shape}"
    return float(np.abs(a - b).mean())


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def headless_chromium(tmp_path, *extra_args):
    """Debian's Chromium driven by selenium through Debian's chromedriver (nothing downloaded), with
    the flags that keep it off the network; skips the test where either is not installed."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chrome-profile'}", *extra_args):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def installed_checkpoint():
    """torchvision's MobileNetV2 checkpoint from the weights package; skips the test where it is not installed."""
    from hackathon.train.weights import find_checkpoint
    from hackathon.core.errors import KitError

    try:
        return find_checkpoint()
    except KitError as e:
        pytest.skip(f"needs the pretrained weights package: {e}")

"""open_upright lets libjpeg do the shrinking (DCT scaling) on phone-sized JPEGs, and the pixels still
come out upright, at the right size, and like a careful full-size resize."""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

import labeling.photos as photos
from hackathon.core.errors import KitError
from labeling.photos import open_upright


def phone_jpeg(path, orientation=1, fmt="JPEG"):
    """A 4032x3024 photo as a phone stores it (sensor-wide, EXIF orientation), with a red block and fine
    stripes; returns the upright picture a person sees."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(60, 200, (189, 252, 3), dtype=np.uint8)).resize((4032, 3024), Image.BICUBIC)
    d = ImageDraw.Draw(base)
    d.rectangle((400, 300, 1400, 1100), fill=(230, 20, 20))
    for x in range(2000, 3800, 24):
        d.rectangle((x, 1800, x + 11, 2800), fill=(20, 20, 20))
    upright = base
    stored = base.transpose(Image.Transpose.ROTATE_90) if orientation == 6 else base  # 6: turn 90 cw to view
    exif = Image.Exif()
    exif[0x0112] = orientation
    if fmt == "MPO":
        stored.save(path, format="MPO", save_all=True, append_images=[stored.resize((160, 120))], quality=92,
                     exif=exif.tobytes())
    else:
        stored.save(path, format="JPEG", quality=92, exif=exif.tobytes())
    return upright


@pytest.fixture
def resize_inputs(monkeypatch):
    """The sizes that reach the final resize, i.e. what the JPEG decoder handed over."""
    seen = []
    real = photos._resize

    def spy(a, size):
        seen.append((a.shape[1], a.shape[0]))
        return real(a, size)

    monkeypatch.setattr(photos, "_resize", spy)
    return seen


@pytest.mark.parametrize("orientation", [1, 6])
def test_phone_photo_is_decoded_small_and_comes_out_upright_like_a_full_resize(tmp_path, resize_inputs, orientation):
    upright = phone_jpeg(tmp_path / "p.jpg", orientation)
    im = open_upright(tmp_path / "p.jpg", max_side=1024)
    assert im.mode == "RGB" and im.size == (1024, 768)
    assert resize_inputs == [(1008, 756)]  # libjpeg decoded at 1/4, not the full 12 MP
    reference = np.asarray(upright.resize((1024, 768), Image.LANCZOS), dtype=np.float64)
    diff = np.abs(np.asarray(im, dtype=np.float64) - reference)
    assert diff.mean() < 4, diff.mean()
    red = np.asarray(im)[90:265, 115:340]  # inside the red block (upright rows 76-279, columns 101-355)
    assert red[..., 0].min() > 180 and red[..., 1].max() < 70


def test_a_reduction_far_short_of_the_target_is_not_taken(tmp_path, resize_inputs):
    phone_jpeg(tmp_path / "p.jpg")
    im = open_upright(tmp_path / "p.jpg", max_side=1100)  # 1/4 would give 1008: 8% short, so 1/2 and shrink
    assert im.size == (1100, 825)
    assert resize_inputs == [(2016, 1512)]


def test_mpo_photos_are_decoded_small_too(tmp_path, resize_inputs):
    phone_jpeg(tmp_path / "p.jpg", fmt="MPO")
    with Image.open(tmp_path / "p.jpg") as raw:
        assert raw.format == "MPO"
    im = open_upright(tmp_path / "p.jpg", max_side=1024)
    assert im.size == (1024, 768)
    assert resize_inputs == [(1008, 756)]


def test_same_photo_same_pixels(tmp_path):
    phone_jpeg(tmp_path / "p.jpg", 6)
    a, b = (np.asarray(open_upright(tmp_path / "p.jpg", max_side=1024)) for _ in range(2))
    assert np.array_equal(a, b)


def pil_only(monkeypatch):
    """open_upright as it reads any file that is not a whole sequential JPEG: through PIL alone."""
    monkeypatch.setattr(photos, "_decode_sequential_jpeg", lambda *args: None)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_as_pil_turns_it(tmp_path, monkeypatch, orientation):
    """OpenCV decodes a phone's JPEG and the kit turns the array; PIL's exif_transpose is the reference."""
    rng = np.random.default_rng(orientation)
    stored = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((1600, 1200), Image.NEAREST)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "p.jpg", quality=95, exif=exif.tobytes())
    with Image.open(tmp_path / "p.jpg") as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize(
            (im.height // 4, im.width // 4) if orientation >= 5 else (im.width // 4, im.height // 4), Image.BOX),
            dtype=np.float64)
    fast = np.asarray(open_upright(tmp_path / "p.jpg", max_side=400), dtype=np.float64)
    assert fast.shape == reference.shape
    assert np.abs(fast - reference).mean() < 3  # a wrong turn or mirror would be ~80 off
    monkeypatch.undo()
    pil_only(monkeypatch)
    assert np.abs(np.asarray(open_upright(tmp_path / "p.jpg", max_side=400), dtype=np.float64) - fast).mean() < 1


def test_cut_phone_jpeg_is_an_error_not_grey_pixels(tmp_path):
    """libjpeg (in OpenCV) would pad a cut-off file with grey: such a file must reach PIL and fail there."""
    phone_jpeg(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    assert photos._is_whole_sequential_jpeg(data)
    for cut in (len(data) // 2, len(data) - 2):  # mid-scan; the end-of-image marker alone missing
        (tmp_path / "cut.jpg").write_bytes(data[:cut])
        assert not photos._is_whole_sequential_jpeg(data[:cut])
        with pytest.raises(KitError, match=r"cut\.jpg: the image is corrupt or truncated.*Fix:"):
            open_upright(tmp_path / "cut.jpg", max_side=1024)


def test_progressive_and_grey_jpegs_are_read_by_pil_alike(tmp_path, monkeypatch):
    phone_jpeg(tmp_path / "p.jpg")
    with Image.open(tmp_path / "p.jpg") as im:
        im.save(tmp_path / "progressive.jpg", quality=92, progressive=True)
        im.convert("L").save(tmp_path / "grey.jpg", quality=92)
    assert not photos._is_whole_sequential_jpeg((tmp_path / "progressive.jpg").read_bytes())
    sequential = np.asarray(open_upright(tmp_path / "p.jpg", max_side=1024), dtype=np.float64)
    for name in ("progressive.jpg", "grey.jpg"):
        im = open_upright(tmp_path / name, max_side=1024)
        assert im.mode == "RGB" and im.size == (1024, 768)
        tol = 4 if name == "progressive.jpg" else 40  # grey: only the brightness is alike
        assert np.abs(np.asarray(im, dtype=np.float64) - sequential).mean() < tol


def test_pack_stores_what_open_upright_sees(tmp_path):
    """upright_jpeg (hack pack's path, BGR arrays from decoder to encoder) and open_upright agree."""
    phone_jpeg(tmp_path / "p.jpg", orientation=6)
    jpeg, w, h = photos.upright_jpeg(tmp_path / "p.jpg", max_side=1024, quality=95)
    assert (w, h) == (1024, 768) and jpeg[:2] == b"\xff\xd8" and b"Exif" not in jpeg[:200]
    packed = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float64)
    seen = open_upright(tmp_path / "p.jpg", max_side=1024)
    # the same q95 4:2:0 encoding by PIL (the photo's random colours lose much to 4:2:0 either way)
    same_encoding = np.asarray(Image.open(io.BytesIO(photos.encode_jpeg(seen, 95))), dtype=np.float64)
    assert np.abs(packed - same_encoding).mean() < 1
    assert np.abs(packed - np.asarray(seen, dtype=np.float64)).mean() < 6

"""Reading phone photos as upright RGB pixels, whatever the phone or app wrote.

labelme draws on the upright (EXIF-rotated) image; MXNet's decoder ignores EXIF. So every stage
that hands pixels to MXNet goes through `open_upright`, and every size check uses `upright_size`.
"""
import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from labeling.errors import KitError
from labeling.fileutil import display

try:  # HEIC/HEIF, the iPhone default
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - setup.py installs it
    pillow_heif = None

# A 200 MP phone sensor is the largest in use; anything past it is a mistake or a decompression bomb.
MAX_PIXELS = 200_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a half-copied photo is an error, not grey pixels (see _load_strict)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".bmp", ".tif", ".tiff"}
ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 swap width and height.
_SWAPS = {5, 6, 7, 8}
# libjpeg shrinks by 1/2, 1/4 or 1/8 while decoding, far cheaper than decoding whole and resizing.
# A reduction that stops up to 3% short of the target is still taken and the rest enlarged: a 4032 px
# phone photo is decoded straight to 1008 px for --max-side 1024 (then 1024): half the work of
# decoding to 2016 px and shrinking, and about as close to a full decode + Lanczos (bench/RESULTS.md).
DRAFT_SLACK = 0.97


def is_image_name(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _open(source, name):
    """PIL image from a path or bytes, with one clear KitError for each way it can be unreadable."""
    try:
        with warnings.catch_warnings(), _no_truncated_images():
            # 1-2x MAX_PIXELS only warns in PIL; _check_pixels turns it into the one clear message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if isinstance(source, (bytes, bytearray)):
                if not source:
                    raise KitError(f"{name}: the embedded image data is empty. Fix: re-save the file in labelme.")
                return Image.open(io.BytesIO(source))
            if os.path.getsize(source) == 0:
                raise KitError(f"{name}: the file is empty (0 bytes), the copy failed. Fix: copy it again from the phone.")
            return Image.open(source)
    except Image.DecompressionBombError as e:
        raise KitError(f"{name}: {str(e).rstrip('.')}. Fix: no phone takes such a photo; remove the file.") from None
    except UnidentifiedImageError:
        raise KitError(f"{name}: not an image the kit can read. Fix: export it as JPEG, PNG or HEIC, "
                       "or remove it.") from None
    except FileNotFoundError:
        raise KitError(f"{name}: no such file. Fix: check the path.") from None
    except IsADirectoryError:
        raise KitError(f"{name}: a folder, not a photo. Fix: give the photo files, or rename the folder.") from None
    except PermissionError:
        raise KitError(f"{name}: no permission to read it. Fix: check the file's permissions.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # PIL's plugins fail on a cut header this way
        raise KitError(f"{name}: the image is corrupt or truncated ({e}). Fix: copy it again from the "
                       "phone, or remove it.") from None


def _check_pixels(im, name):
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise KitError(f"{name}: {w}x{h} pixels is larger than any phone photo "
                       f"({MAX_PIXELS // 1_000_000} MP). Fix: remove it or downscale it first.")
    if w < 1 or h < 1:
        raise KitError(f"{name}: the image has no pixels ({w}x{h}). Fix: remove it.")


def orientation(im) -> int:
    try:
        with _no_truncated_images():  # a PNG's getexif() decodes the whole file to find a late eXIf chunk
            value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a mangled EXIF block: treat as upright, as labelme does
        return 1
    return value if 1 <= value <= 8 else 1


def upright_size(source, name=None):
    """(width, height) of the upright image, from the header only (no decoding)."""
    name = name or display(source)
    with _open(source, name) as im:
        _check_pixels(im, name)
        w, h = im.size
        return (h, w) if orientation(im) in _SWAPS else (w, h)


def to_rgb(im):
    """8-bit RGB from any mode a phone, a scanner or an editor writes (alpha goes onto white)."""
    if "transparency" in im.info and im.mode in ("L", "RGB"):
        im = im.convert("RGBA")  # a PNG colour key (tRNS): that colour is transparent
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 or im.mode.startswith("I;16") else 255.0
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
        return Image.fromarray((a * 255 + 0.5).astype(np.uint8)).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = (im.convert("LA") if im.mode == "La" else im).convert("RGBA")  # PIL has no La -> RGBA
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def target_size(w, h, max_side):
    """The size after shrinking so the long side is at most `max_side` (never enlarged)."""
    if not max_side or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def open_upright(source, max_side=None, name=None):
    """Decode a photo as upright 8-bit RGB, shrunk so its long side is at most `max_side`.

    JPEGs are shrunk while decoding (libjpeg's DCT scaling, see DRAFT_SLACK), which makes 12 MP
    phone photos several times cheaper to read than a full decode followed by a resize.
    """
    name = name or display(source)
    im = _open(source, name)
    try:
        _check_pixels(im, name)
        orient = orientation(im)
        w, h = im.size
        tw, th = target_size(w, h, max_side)
        if (tw, th) != (w, h) and im.format in ("JPEG", "MPO"):  # MPO: a JPEG with extra frames
            im.draft("RGB", _draft_size(w, h, tw, th))
        _load_strict(im)
        if orient != 1:
            im = ImageOps.exif_transpose(im)
        im = to_rgb(im)
        if max_side:
            size = target_size(*_upright(w, h, orient), max_side)
            if im.size != size:
                im = _resize(im, size)
        return im
    except KitError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise KitError(f"{name}: the image is corrupt or truncated ({e}). Fix: copy it again from the "
                       "phone, or remove it.") from None


def _draft_size(w, h, tw, th):
    """The size to ask PIL's JPEG draft for so that it takes the largest DCT reduction (1/8, 1/4,
    1/2) keeping at least DRAFT_SLACK of the target (tw, th): PIL reduces by min(w // dw, h // dh)."""
    for s in (8, 4, 2):
        if w // s >= tw * DRAFT_SLACK and h // s >= th * DRAFT_SLACK:
            return w // s, h // s
    return w, h


def _resize(im, size):
    """Shrink with PIL (antialiased); enlarge the last few percent after a DCT reduction that stopped
    short with OpenCV's bicubic, about 8x faster than PIL's on a 1 MP image."""
    if im.width >= size[0] and im.height >= size[1]:
        return im.resize(size, Image.BILINEAR, reducing_gap=2.0)
    import cv2  # here: only a resize needs it, and `import cv2` is not free

    return Image.fromarray(cv2.resize(np.asarray(im), size, interpolation=cv2.INTER_CUBIC))


@contextlib.contextmanager
def _no_truncated_images():
    """A truncated file is an error here, whatever the global says: `import gluoncv` sets PIL's
    LOAD_TRUNCATED_IMAGES to True, which would pack half a photo as grey pixels."""
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _load_strict(im):
    with _no_truncated_images():
        im.load()


def _upright(w, h, orient):
    return (h, w) if orient in _SWAPS else (w, h)


def encode_jpeg(im, quality=95) -> bytes:
    """JPEG bytes with no metadata at all (no EXIF, no GPS, no thumbnail)."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=False, subsampling="4:2:0")
    return buf.getvalue()


def dhash(im, size=8) -> int:
    """A 64-bit difference hash of the picture: near-identical photos differ in a few bits."""
    g = im.convert("L").resize((size + 1, size), Image.BILINEAR)
    a = np.asarray(g, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")

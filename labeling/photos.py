"""Reading phone photos as upright RGB pixels, whatever the phone or app wrote.

labelme draws on the upright (EXIF-rotated) image; MXNet's decoder ignores EXIF. So every stage
that hands pixels to MXNet goes through `open_upright`, and every size check uses `upright_size`.
"""
import contextlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display

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
    im, size, _ = _decode(source, max_side, name)
    if isinstance(im, Image.Image):
        return im if im.size == size else Image.fromarray(_resize(np.asarray(im), size))
    import cv2

    return Image.fromarray(cv2.cvtColor(_resize(im, size), cv2.COLOR_BGR2RGB))


def upright_jpeg(source, max_side=None, quality=95, name=None):
    """(JPEG bytes, width, height): the photo as `hack pack` stores it, upright, shrunk so its long
    side is at most `max_side`, 4:2:0, with no metadata at all (no EXIF, no GPS, no thumbnail).

    An upright RGB JPEG file that needs no resizing is returned as its own bytes (no second lossy
    encoding); it is still decoded, so a truncated photo fails here and not in training. A phone's
    JPEG goes from decoder to encoder without leaving OpenCV's arrays (see _decode_sequential_jpeg).
    """
    import cv2

    im, (w, h), untouched = _decode(source, max_side, name)
    if untouched and isinstance(source, (str, Path)):
        return Path(source).read_bytes(), w, h
    a = _resize(np.asarray(im)[..., ::-1] if isinstance(im, Image.Image) else im, (w, h))  # BGR, as OpenCV's
    ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, quality,
                                       cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420])
    if not ok:  # pragma: no cover - libjpeg encodes any 8-bit 3-channel array
        raise KitError(f"{name or display(source)}: the JPEG encoder failed. Fix: report this with the photo.")
    return buf.tobytes(), w, h


@contextlib.contextmanager
def keeping_freed_memory():
    """For a loop over many photos: glibc keeps the memory it frees for the next photo, and gives
    it back at the end. By default it hands every freed block over ~128 KB back to the kernel, so
    each 12 MP photo faults ~12 MB of decoding buffers in afresh: `open_upright` takes 25 ms a
    photo instead of 18.5 (bench/RESULTS.md, "hack import"). Not glibc: nothing is changed."""
    libc = _glibc()
    if libc:
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)  # blocks up to 64 MB come from the heap...
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)  # ...which is not shrunk until 256 MB of it are free
    try:
        yield
    finally:
        if libc:
            libc.mallopt(_M_MMAP_THRESHOLD, 128 << 10)  # glibc's starting values (which it would have
            libc.mallopt(_M_TRIM_THRESHOLD, 128 << 10)  # moved up by itself; they stay put now)
            libc.malloc_trim(0)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def _glibc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _decode(source, max_side=None, name=None):
    """(pixels, size, untouched): the upright photo, and the size (w, h) it is to have once shrunk
    so its long side is at most `max_side`. The pixels are OpenCV's BGR array for a phone's JPEG
    (shrunk while decoding, see _decode_sequential_jpeg), else PIL's RGB image, each still to be
    resized to `size` by the caller in its own form (no copy from one to the other for nothing).
    Untouched: the file is an upright RGB JPEG already at that size."""
    name = name or display(source)
    im = _open(source, name)
    try:
        _check_pixels(im, name)
        orient = orientation(im)
        w, h = im.size
        tw, th = target_size(w, h, max_side)
        size = target_size(*_upright(w, h, orient), max_side)
        untouched = im.format == "JPEG" and im.mode == "RGB" and orient == 1 and (tw, th) == (w, h)
        a = _decode_sequential_jpeg(source, im, orient, tw, th)
        if a is not None:
            im.close()
            return a, size, untouched
        # PIL decodes everything else: PNG, HEIC, grey, CMYK, progressive, whole-size and broken files
        if (tw, th) != (w, h) and im.format in ("JPEG", "MPO"):  # MPO: a JPEG with extra frames
            im.draft("RGB", _draft_size(w, h, tw, th))
        _load_strict(im)
        return to_rgb(ImageOps.exif_transpose(im) if orient != 1 else im), size, untouched
    except KitError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise KitError(f"{name}: the image is corrupt or truncated ({e}). Fix: copy it again from the "
                       "phone, or remove it.") from None


def _decode_sequential_jpeg(source, im, orient, tw, th):
    """The upright BGR pixels (an array) of a whole, sequential (baseline) colour JPEG that is to be
    shrunk, decoded by OpenCV's libjpeg-turbo at 1/2, 1/4 or 1/8 scale as PIL's draft would be;
    None for any other file, which PIL decodes. Phones write such JPEGs. Kept in OpenCV's arrays
    from decoder to encoder, a 12 MP photo costs `hack pack` ~2 ms (~8%) less than through PIL's
    images (bench/RESULTS.md, "pack vs im2rec").

    libjpeg takes a cut-off file as a warning and pads it with grey, so a file is decoded here only
    when its scan is followed by the end-of-image marker; any other goes to PIL, whose decoder
    raises on a cut-off file."""
    if im.format not in ("JPEG", "MPO") or im.mode != "RGB":  # grey, CMYK: PIL converts them
        return None
    w, h = im.size
    scale = _draft_scale(w, h, tw, th) if (tw, th) != (w, h) else 1
    if scale == 1:  # decoded whole, PIL is as fast, and needs no `import cv2` (0.1 s) nor BGR copies
        return None
    data = source if isinstance(source, (bytes, bytearray)) else _read_bytes(source)
    if data is None or not _is_whole_sequential_jpeg(data):
        return None
    import cv2  # here: `import cv2` is not free, and only decoding, resizing and encoding need it

    flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    a = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if a is None or a.shape != (-(-h // scale), -(-w // scale), 3):  # libjpeg gave up: PIL says why
        return None
    return _ORIENT[orient](a)


# What PIL's ImageOps.exif_transpose does for each EXIF orientation, on an (h, w, 3) array.
_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # upside down and mirrored
    5: lambda a: a.transpose(1, 0, 2),  # PIL's TRANSPOSE
    6: lambda a: a.transpose(1, 0, 2)[:, ::-1],  # stored turned: view it turned 90 degrees clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # PIL's TRANSVERSE
    8: lambda a: a.transpose(1, 0, 2)[::-1],  # view it turned 90 degrees counter-clockwise
}

# Start-of-frame markers of sequential Huffman JPEGs (baseline, extended); the others (progressive,
# lossless, arithmetic-coded) are left to PIL.
_SEQUENTIAL_SOF = {0xC0, 0xC1}
_OTHER_SOF = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _is_whole_sequential_jpeg(data) -> bool:
    """True when `data` is a sequential JPEG whose first scan is followed by an end-of-image marker.

    Inside a scan's entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker,
    so the first FF D9 after the scan header ends the scan: a file cut anywhere before it has none.
    (Data after it, such as an MPO's second frame, is not needed for the picture.)
    """
    if data[:2] != b"\xff\xd8":
        return False
    i, n, sequential = 2, len(data), False
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in _OTHER_SOF:
            return False
        sequential = sequential or marker in _SEQUENTIAL_SOF
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # start of scan
            return sequential and data.rfind(b"\xff\xd9", i + 2 + length) != -1  # from the end: fast
        i += 2 + length
    return False


def _read_bytes(path):
    try:
        return Path(path).read_bytes()
    except OSError:  # PIL opened it a moment ago; PIL's path then reports whatever this is
        return None


def _draft_scale(w, h, tw, th):
    """The largest DCT reduction (8, 4 or 2, else 1) of a w x h JPEG that keeps at least
    DRAFT_SLACK of the target size (tw, th)."""
    for s in (8, 4, 2):
        if w // s >= tw * DRAFT_SLACK and h // s >= th * DRAFT_SLACK:
            return s
    return 1


def _draft_size(w, h, tw, th):
    """The size to ask PIL's JPEG draft for so that it takes that reduction: PIL reduces by
    min(w // dw, h // dh)."""
    s = _draft_scale(w, h, tw, th)
    return w // s, h // s


def _resize(a, size):
    """An (h, w, 3) array resized to `size` (w, h) with OpenCV: shrunk by pixel-area averaging
    (antialiased), or enlarged bicubically by the last few percent after a DCT reduction that
    stopped short (DRAFT_SLACK). Already that size: the array itself, made contiguous."""
    import cv2

    if (a.shape[1], a.shape[0]) == tuple(size):
        return np.ascontiguousarray(a)
    shrink = a.shape[1] >= size[0] and a.shape[0] >= size[1]
    return cv2.resize(np.ascontiguousarray(a), size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


_strict = {"lock": threading.Lock(), "depth": 0, "saved": None}


@contextlib.contextmanager
def _no_truncated_images():
    """A truncated file is an error here, whatever the global says: `import gluoncv` sets PIL's
    LOAD_TRUNCATED_IMAGES to True, which would pack half a photo as grey pixels.

    The flag is one global and `hack pack` reads photos in several threads: the first reader in
    saves it and the last one out puts it back (a plain save/restore per reader would let one
    thread restore True while another is still reading, and leave False behind)."""
    with _strict["lock"]:
        if _strict["depth"] == 0:
            _strict["saved"] = ImageFile.LOAD_TRUNCATED_IMAGES
        _strict["depth"] += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _strict["lock"]:
            _strict["depth"] -= 1
            if _strict["depth"] == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _strict["saved"]


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

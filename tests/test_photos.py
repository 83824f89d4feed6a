"""Reading photos: upright from every EXIF orientation, every pixel format a phone or editor
writes as 8-bit RGB, and one KitError naming the file and its fix for each way a file is broken."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import heic_can_encode, mean_abs_diff, picture
from hackathon.core.errors import KitError
from labeling.photos import open_upright, to_rgb, upright_size

RED, GREEN, GREY = (255, 0, 0), (0, 255, 0), (128, 128, 128)

# From the EXIF spec's words ("the 0th row is the visual right-hand side, the 0th column the visual
# top", ...): where the stored top-left and top-right pixels show up in the upright picture.
SPEC = {1: ("TL", "TR"), 2: ("TR", "TL"), 3: ("BR", "BL"), 4: ("BL", "BR"),
        5: ("TL", "BL"), 6: ("TR", "BR"), 7: ("BR", "TR"), 8: ("BL", "TL")}


def corner(a, where, inset=3):
    h, w = a.shape[:2]
    y = inset if where[0] == "T" else h - 1 - inset
    x = inset if where[1] == "L" else w - 1 - inset
    return a[y, x].astype(int)


def close(pixel, colour, tol=40):
    return np.abs(np.asarray(pixel, int) - np.asarray(colour)).max() <= tol


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_follows_the_spec(tmp_path, orientation):
    stored = Image.new("RGB", (60, 40), GREY)  # raw pixels, as the sensor wrote them
    stored.paste(RED, (0, 0, 12, 12))
    stored.paste(GREEN, (48, 0, 60, 12))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "p.jpg"
    stored.save(path, exif=exif, quality=95)
    im = open_upright(path)
    assert im.mode == "RGB"
    expected_size = (40, 60) if orientation >= 5 else (60, 40)
    assert im.size == expected_size and upright_size(path) == expected_size
    a = np.asarray(im)
    red_at, green_at = SPEC[orientation]
    assert close(corner(a, red_at), RED), f"orientation {orientation}: red should be {red_at}"
    assert close(corner(a, green_at), GREEN), f"orientation {orientation}: green should be {green_at}"


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_gives_back_the_upright_picture(tmp_path, make_photo, orientation, suffix):
    upright = make_photo(tmp_path / f"p{suffix}", size=(64, 48), orientation=orientation)
    im = open_upright(tmp_path / f"p{suffix}")
    if suffix == ".png":  # lossless: every pixel
        assert np.array_equal(np.asarray(im), np.asarray(upright))
    else:
        assert mean_abs_diff(im, upright) < 4


def test_heic_is_read_upright(tmp_path, make_photo):
    if not heic_can_encode():
        pytest.skip("this pillow-heif build cannot encode HEIC")
    upright = make_photo(tmp_path / "IMG_0001.HEIC", size=(64, 48), orientation=6, quality=90)
    with Image.open(tmp_path / "IMG_0001.HEIC") as raw:
        assert raw.format == "HEIF"
    assert upright_size(tmp_path / "IMG_0001.HEIC") == (64, 48)
    im = open_upright(tmp_path / "IMG_0001.HEIC")
    assert im.size == (64, 48) and im.mode == "RGB"
    assert mean_abs_diff(im, upright) < 8
    assert close(np.asarray(im)[2, 2], RED)


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # pure red in ink
    im = open_upright(tmp_path / "cmyk.jpg")
    assert im.mode == "RGB" and close(np.asarray(im)[15, 20], RED, tol=12)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_grayscale_becomes_grey_rgb(tmp_path, suffix):
    a = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    Image.fromarray(a, "L").save(tmp_path / f"g{suffix}")
    im = open_upright(tmp_path / f"g{suffix}")
    out = np.asarray(im).astype(int)
    assert im.mode == "RGB"
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0] - a).mean() < 2


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "depth.png")
    with Image.open(tmp_path / "depth.png") as raw:
        assert raw.mode.startswith("I")  # really 16-bit on disk
    out = np.asarray(open_upright(tmp_path / "depth.png"))[0, :, 0].astype(int)
    assert out[0] == 0 and out[3] == 255
    assert abs(out[2] - 128) <= 1  # 32768 of 65535, not clipped to 255
    assert out[1] <= 5  # 1000 of 65535 is dark, not clipped to 255


def test_16_bit_rgb_png_is_read(tmp_path):
    # PIL writes no 16-bit RGB, so write the PNG by hand: IHDR bit depth 16, colour type 2.
    a = np.zeros((4, 6, 3), dtype=">u2")
    a[..., 0] = 65535
    a[..., 2] = 32768
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(6, 4, 16, 2, b"".join(b"\0" + row.tobytes() for row in a)))
    out = np.asarray(open_upright(path)).astype(int)
    assert close(out[2, 3], (255, 0, 128), tol=2)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(w, h, depth, colour_type, raw_rows=b""):
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw_rows)) + png_chunk(b"IEND", b""))


def test_alpha_png_goes_onto_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((255, 0, 0, 255), (0, 0, 4, 8))  # opaque left half
    rgba.paste((0, 0, 255, 128), (4, 4, 8, 8))  # half-transparent blue
    rgba.save(tmp_path / "a.png")
    out = np.asarray(open_upright(tmp_path / "a.png")).astype(int)
    assert close(out[1, 1], RED, 0) and close(out[1, 6], (255, 255, 255), 0)
    assert close(out[6, 6], (127, 127, 255), 2)


def test_gray_alpha_png_goes_onto_white(tmp_path):
    la = Image.new("LA", (8, 8), (0, 0))
    la.paste((0, 255), (0, 0, 4, 8))
    la.save(tmp_path / "la.png")
    out = np.asarray(open_upright(tmp_path / "la.png")).astype(int)
    assert close(out[1, 1], (0, 0, 0), 0) and close(out[1, 6], (255, 255, 255), 0)


def test_palette_png_with_transparency_goes_onto_white(tmp_path):
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.paste(1, (0, 0, 4, 8))
    p.save(tmp_path / "p.png", transparency=0)
    out = np.asarray(open_upright(tmp_path / "p.png")).astype(int)
    assert close(out[1, 1], RED, 0) and close(out[1, 6], (255, 255, 255), 0)


@pytest.mark.parametrize("mode,key", [("L", 0), ("RGB", (0, 0, 0))])
def test_png_transparent_colour_key_goes_onto_white(tmp_path, mode, key):
    im = Image.new(mode, (8, 8), key)
    im.paste(200 if mode == "L" else (200, 0, 0), (0, 0, 4, 8))
    im.save(tmp_path / "k.png", transparency=key)
    out = np.asarray(open_upright(tmp_path / "k.png")).astype(int)
    assert out[1, 1, 0] == 200
    assert close(out[1, 6], (255, 255, 255), 0)  # the transparent colour, not black


def test_to_rgb_takes_premultiplied_alpha():
    for base, mode in (("LA", "La"), ("RGBA", "RGBa")):
        im = Image.new(base, (4, 4), (0,) * len(base)).convert(mode)
        assert im.mode == mode
        assert close(np.asarray(to_rgb(im))[0, 0], (255, 255, 255), 0)


# --- broken files: one KitError naming the file, with the fix -------------------------------------

def jpeg_bytes(size=(320, 240)):
    buf = io.BytesIO()
    picture(size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bomb_png(w, h):
    """A valid tiny PNG whose header claims w x h pixels (the IHDR patched, its CRC redone)."""
    buf = io.BytesIO()
    Image.new("1", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def noise_png():
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(1).randint(0, 255, (64, 64, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


BROKEN = {
    "empty.jpg": lambda: b"",
    "half.jpg": lambda: jpeg_bytes()[:len(jpeg_bytes()) // 2],
    "header only.jpg": lambda: jpeg_bytes()[:300],
    "random.jpg": lambda: np.random.RandomState(0).bytes(4000),
    "bomb.png": lambda: bomb_png(30000, 30000),
    "huge.png": lambda: bomb_png(16000, 16000),  # 256 MP: past any phone, under PIL's bomb error
    "half.png": lambda: noise_png()[: len(noise_png()) // 2],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
@pytest.mark.parametrize("reader", ["open_upright", "open_upright_small", "upright_size"])
def test_broken_file_is_one_kit_error_with_its_name_and_fix(tmp_path, name, reader, recwarn):
    path = tmp_path / name
    path.write_bytes(BROKEN[name]())
    read = {"open_upright": open_upright, "open_upright_small": lambda p: open_upright(p, max_side=64),
            "upright_size": upright_size}[reader]
    if reader == "upright_size" and name in ("half.jpg", "half.png"):
        assert read(path)  # the header alone is whole; decoding is what finds the cut
        return
    with pytest.raises(KitError) as e:
        read(path)
    assert name in str(e.value) and "Fix:" in str(e.value)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("name", ["half.jpg", "half.png"])
def test_truncated_photo_stays_an_error_after_gluoncv_allows_them(tmp_path, monkeypatch, name):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # what `import gluoncv` does
    (tmp_path / name).write_bytes(BROKEN[name]())
    for max_side in (None, 32):
        with pytest.raises(KitError, match=rf"{name}: the image is corrupt or truncated"):
            open_upright(tmp_path / name, max_side=max_side)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # gluoncv's own readers keep their setting


def test_broken_bytes_are_named_too():
    with pytest.raises(KitError, match=r"IMG_7\.json \(imageData\).*Fix:"):
        open_upright(jpeg_bytes()[:500], name="IMG_7.json (imageData)")


def test_missing_file_and_folder_are_kit_errors(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    for path in (tmp_path / "gone.jpg", tmp_path / "folder.jpg"):
        for read in (open_upright, upright_size):
            with pytest.raises(KitError, match=f"{path.name}.*Fix:"):
                read(path)


# --- size -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation", [1, 6])
def test_max_side_downscales_once_keeping_the_aspect(tmp_path, make_photo, orientation):
    make_photo(tmp_path / "p.jpg", size=(400, 300), orientation=orientation)
    assert open_upright(tmp_path / "p.jpg", max_side=100).size == (100, 75)
    assert open_upright(tmp_path / "p.jpg", max_side=1000).size == (400, 300)  # never enlarged
    make_photo(tmp_path / "tall.png", size=(300, 1000))
    assert open_upright(tmp_path / "tall.png", max_side=500).size == (150, 500)


def test_shrinking_while_decoding_matches_a_full_decode(tmp_path, make_photo):
    make_photo(tmp_path / "big.jpg", size=(1600, 1200), quality=92)
    fast = open_upright(tmp_path / "big.jpg", max_side=400)  # libjpeg's DCT scaling
    with Image.open(tmp_path / "big.jpg") as im:
        full = im.convert("RGB").resize((400, 300), Image.LANCZOS)
    assert fast.size == (400, 300)
    assert mean_abs_diff(fast, full) < 3


def test_cut_photos_read_in_threads_stay_errors_and_the_flag_comes_back(tmp_path, monkeypatch):
    """`hack pack` reads in threads after `import gluoncv` (in a notebook) set PIL's
    LOAD_TRUNCATED_IMAGES: every cut photo must still fail, and the flag end as it was."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    whole, cut = jpeg_bytes(), jpeg_bytes()[: len(jpeg_bytes()) // 2]
    for i in range(40):
        (tmp_path / f"{i}.jpg").write_bytes(cut if i % 2 else whole)

    def read(i):
        try:
            open_upright(tmp_path / f"{i}.jpg", max_side=32)
            return "ok"
        except KitError:
            return "error"

    for _ in range(5):
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(read, range(40)))
        assert got == ["ok" if i % 2 == 0 else "error" for i in range(40)]
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True

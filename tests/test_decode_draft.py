"""open_upright lets libjpeg do the shrinking (DCT scaling) on phone-sized JPEGs, and the pixels still
come out upright, at the right size, and like a careful full-size resize."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

import labeling.photos as photos
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

    def spy(im, size):
        seen.append(im.size)
        return real(im, size)

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

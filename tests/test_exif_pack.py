"""A photo stored sideways with an EXIF orientation tag, labeled upright (as labelme shows it), packed:
the box must sit on the object in the packed image, as GluonCV and mxnet read the record back.

MXNet's JPEG decoder ignores EXIF, so a pack that copied the sideways bytes would put every box of a
portrait phone photo on the wrong pixels without any error."""
import mxnet as mx
import numpy as np
import pytest
from gluoncv.data import RecordFileDetection
from PIL import Image, ImageDraw

from labeling.pack import pack_dataset
from labelme_data import labelme_json, rect

CLASSES = ["fish", "shark"]
GREY, RED = (128, 128, 128), (230, 20, 20)
# (file, EXIF orientation, class, the object's box in the upright 640x480 picture)
PHOTOS = [("turned_cw.jpg", 6, "fish", (400, 60, 580, 220)),
          ("turned_ccw.jpg", 8, "shark", (40, 280, 200, 440))]


def make_sideways_set(folder, make_photo):
    for name, orientation, label, box in PHOTOS:
        upright = Image.new("RGB", (640, 480), GREY)
        ImageDraw.Draw(upright).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=RED)
        make_photo(folder / name, image=upright, orientation=orientation, quality=95)
        with Image.open(folder / name) as raw:
            assert raw.size == (480, 640)  # the bytes are sideways
        labelme_json(folder / name, [rect(label, *box)], size=(640, 480))  # labelme: upright size, upright points


def redness(pixels):
    """Share of pixels that are the object's red (not the grey background)."""
    p = np.asarray(pixels, dtype=np.int16).reshape(-1, 3)
    return float(((p[:, 0] > 180) & (p[:, 1] < 90) & (p[:, 2] < 90)).mean())


def ring(img, x1, y1, x2, y2, width=12):
    """The pixels in a band just outside a box (clipped to the image)."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[max(0, y1 - width):min(h, y2 + width), max(0, x1 - width):min(w, x2 + width)] = True
    mask[y1:y2, x1:x2] = False
    return img[mask]


@pytest.mark.parametrize("max_side", [None, 320])
def test_box_sits_on_the_object_of_a_sideways_photo(tmp_path, make_photo, max_side):
    make_sideways_set(tmp_path / "labels", make_photo)
    manifest = pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, val_fraction=0, max_side=max_side,
                            workers=1, progress=False)
    assert manifest["splits"]["train"]["images"] == 2 and manifest["splits"]["val"]["images"] == 0
    scale = 1.0 if max_side is None else max_side / 640
    expected_shape = (round(480 * scale), round(640 * scale), 3)

    ds = RecordFileDetection(str(tmp_path / "data" / "train.rec"))
    by_source = {r["source"]: r["index"] for r in manifest["records"]["train"]}
    for name, _, label, box in PHOTOS:
        img, lab = ds[by_source[name.replace(".jpg", ".json")]]
        img = img.asnumpy()
        assert img.shape == expected_shape  # landscape, as labelme showed it
        assert lab.shape == (1, 5) and lab[0, 4] == CLASSES.index(label)
        np.testing.assert_allclose(lab[0, :4], np.array(box) * scale, atol=0.5)
        x1, y1, x2, y2 = (int(round(v)) for v in lab[0, :4])
        inside = img[y1 + 3:y2 - 3, x1 + 3:x2 - 3]
        assert redness(inside) > 0.95, f"{name}: the box is not on the red object"
        assert redness(ring(img, x1 - 3, y1 - 3, x2 + 3, y2 + 3)) < 0.05, f"{name}: the object spills out of the box"


def test_mxnet_image_det_iter_reads_the_upright_box(tmp_path, make_photo):
    make_sideways_set(tmp_path / "labels", make_photo)
    manifest = pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, val_fraction=0, workers=1,
                            progress=False)
    it = mx.image.ImageDetIter(batch_size=1, data_shape=(3, 480, 640),
                               path_imgrec=str(tmp_path / "data" / "train.rec"))
    sources = [r["source"] for r in sorted(manifest["records"]["train"], key=lambda r: r["index"])]
    seen = 0
    for batch, source in zip(it, sources):
        _, _, label, box = next(p for p in PHOTOS if p[0].replace(".jpg", ".json") == source)
        row = batch.label[0].asnumpy()[0, 0]  # ImageDetIter: [cls, xmin, ymin, xmax, ymax], normalized
        assert row[0] == CLASSES.index(label)
        np.testing.assert_allclose(row[1:5], [box[0] / 640, box[1] / 480, box[2] / 640, box[3] / 480], atol=1e-3)
        img = batch.data[0].asnumpy()[0].transpose(1, 2, 0)  # CHW -> HWC, float RGB
        assert img.shape == (480, 640, 3)
        assert redness(img[box[1] + 3:box[3] - 3, box[0] + 3:box[2] - 3]) > 0.95
        seen += 1
    assert seen == 2

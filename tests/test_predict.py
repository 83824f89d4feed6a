"""hack predict with a real exported GluonCV SSD (random weights, built and exported in tmp_path):
files written, EXIF orientation respected, boxes mapped back to the photo's pixels, unreadable
photos named while the others are still done, and broken exports refused with a clear error."""
import json

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from hackathon.deploy.predict import Detector, collect_images, draw, load_detector, predict_images
from hackathon.deploy.predictions import read_predictions
from hackathon.evaluate.truth import read_truth
from hackathon.core.errors import KitError
from labelme_data import labeled_set

CLASSES = ["fish", "shark"]


def make_export(out, classes=CLASSES, shape=300, background_logit=None, first_stride=16):
    """A tiny export as `hack export` writes it, without training (the contracts' recipe). With
    `background_logit`, every anchor scores each class 1 / (exp(logit) + classes): an unsure model.
    The random untrained net keeps the stride-16 layout these contracts were written on: with the
    stride-8 map's 5,776 more near-tied random scores, the int8 and calibration checks compare
    noise (test_models and test_train cover the default layout, trained)."""
    from hackathon.train.models import build_ssd

    out.mkdir(parents=True, exist_ok=True)
    net = build_ssd(classes, shape, pretrained_base=False, first_stride=first_stride)
    net.hybridize()
    net(mx.nd.zeros((1, 3, shape, shape)))
    if background_logit is not None:
        for name, p in net.class_predictors.collect_params().items():
            value = np.zeros(p.shape, np.float32)
            if name.endswith("bias"):
                value[::len(classes) + 1] = background_logit  # per anchor: background, then the classes
            p.set_data(mx.nd.array(value))
    net.export(str(out / "model"), 0)
    (out / "classes.txt").write_text("".join(c + "\n" for c in classes))
    (out / "export.json").write_text(json.dumps({"kit_export": 1, "data_shape": [shape, shape], "mean": [0.485, 0.456, 0.406],
                                                 "std": [0.229, 0.224, 0.225], "classes": classes}))
    return out


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export") / "export")


class FixedNet:
    """Stands in for the SSD: returns given boxes in input pixels, and records the input it saw."""

    def __init__(self, ids, scores, boxes):
        self.out = [mx.nd.array(np.asarray(a, np.float32)[None]) for a in (ids, scores, boxes)]
        self.seen = None

    def __call__(self, x):
        self.seen = x.asnumpy()
        return self.out


def test_boxes_map_back_to_the_photo_and_preprocessing_is_gluoncv_s(tmp_path):
    from gluoncv.data.transforms.presets.ssd import SSDDefaultValTransform

    net = FixedNet([[0], [1], [-1], [0], [1]], [[0.9], [0.5], [0.99], [0.005], [0.7]],
                   [[30, 60, 150, 240], [-10, 0, 400, 20], [0, 0, 5, 5], [0, 0, 10, 10], [50, 50, 50.001, 60]])
    det = Detector(net, CLASSES, (300, 300), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), mx.cpu())
    im = Image.fromarray(np.random.RandomState(0).randint(0, 256, (120, 600, 3)).astype(np.uint8))
    rows = det.detect(im, threshold=0.01)
    # x scaled by 600/300, y by 120/300; clipped to the photo; padding (-1), score < threshold and a box
    # that is empty at the written precision (0.01 px) dropped
    assert rows == [{"label": "fish", "score": 0.9, "bbox": [60.0, 24.0, 300.0, 96.0]},
                    {"label": "shark", "score": 0.5, "bbox": [0.0, 0.0, 600.0, 8.0]}]
    expected, _ = SSDDefaultValTransform(300, 300)(mx.nd.array(np.asarray(im), dtype="uint8"), np.zeros((1, 5)))
    np.testing.assert_allclose(net.seen[0], expected.asnumpy(), atol=1e-5)


def test_cli_writes_predictions_and_drawn_images(tmp_path, export_dir, make_photo):
    labeled_set(tmp_path / "test" / "scene-b", n=2, size=(160, 120))
    make_photo(tmp_path / "test" / "turned.png", size=(120, 80), orientation=6)  # stored 80x120
    (tmp_path / "test" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    result = CliRunner().invoke(cli, ["predict", str(export_dir), str(tmp_path / "test"), "--out", str(tmp_path / "p"),
                                      "--threshold", "0.3"])
    assert result.exit_code == 1, result.output
    assert "broken.jpg" in result.output and "corrupt or truncated" in result.output
    rows = json.loads((tmp_path / "p" / "predictions.json").read_text())
    names = {r["image"] for r in rows}
    assert names == {"scene-b/img_00.jpg", "scene-b/img_01.jpg", "turned.png"}
    size = {"scene-b/img_00.jpg": (160, 120), "scene-b/img_01.jpg": (160, 120), "turned.png": (120, 80)}
    for r in rows:
        w, h = size[r["image"]]
        x1, y1, x2, y2 = r["bbox"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and r["label"] in CLASSES and r["score"] >= 0.01
    assert max(r["bbox"][2] for r in rows if r["image"] == "turned.png") > 80  # upright: 120 wide, not 80
    csv_lines = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    assert csv_lines[0] == "image,label,score,xmin,ymin,xmax,ymax" and len(csv_lines) == len(rows) + 1
    drawn = Image.open(tmp_path / "p" / "images" / "turned.png")
    assert drawn.format == "PNG" and drawn.size == (120, 80)
    assert Image.open(tmp_path / "p" / "images" / "scene-b" / "img_00.jpg").format == "JPEG"
    # the file reads back against the truth of the same folder (names relative to it)
    truth = read_truth(tmp_path / "test" / "scene-b", classes=CLASSES)
    sub = [dict(r, image=r["image"].removeprefix("scene-b/")) for r in rows if r["image"].startswith("scene-b/")]
    (tmp_path / "sub.json").write_text(json.dumps(sub))
    assert len(read_predictions(tmp_path / "sub.json", truth)) == len(sub)


def test_exif_orientation_is_respected(tmp_path, export_dir, make_photo):
    upright = make_photo(tmp_path / "a" / "turned.png", size=(96, 64), orientation=8)
    upright.save(tmp_path / "a" / "plain.png")
    det = load_detector(export_dir)
    rows = predict_images(det, [tmp_path / "a" / "turned.png", tmp_path / "a" / "plain.png"], tmp_path / "a", progress=False)
    turned = [dict(r, image=None) for r in rows if r["image"] == "turned.png"]
    plain = [dict(r, image=None) for r in rows if r["image"] == "plain.png"]
    assert turned and turned == plain


def test_unreadable_photo_raises_without_a_failed_list(tmp_path, export_dir):
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(KitError, match="x.jpg: the file is empty"):
        predict_images(load_detector(export_dir), [tmp_path / "x.jpg"], tmp_path, progress=False)


def test_broken_exports_are_refused_by_name(tmp_path, export_dir):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    (bad / "model-0000.params").unlink()
    with pytest.raises(KitError, match="model-0000.params: missing from the export"):
        load_detector(bad)
    (bad / "model-0000.params").write_bytes(b"\x00" * 64)
    with pytest.raises(KitError, match="cannot be loaded.*export again"):
        load_detector(bad)
    shutil.copy(export_dir / "model-0000.params", bad)
    (bad / "export.json").write_text('{"data_shape": [300], "mean": [0, 0, 0], "std": [1, 1, 1]}')
    with pytest.raises(KitError, match="export.json: data_shape must be"):
        load_detector(bad)
    (bad / "export.json").unlink()  # exported by hand from GluonCV: 512 and ImageNet defaults
    assert load_detector(bad).data_shape == (512, 512)
    with pytest.raises(KitError, match="no such export folder"):
        load_detector(tmp_path / "nothing")


def test_collect_images_and_draw(tmp_path):
    for n in ("b/2.jpg", "a/1.png", ".hidden/3.jpg", "notes.txt"):
        (tmp_path / "set" / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / n).write_bytes(b"x")
    paths, root = collect_images([tmp_path / "set"])
    assert [p.relative_to(root).as_posix() for p in paths] == ["a/1.png", "b/2.jpg"] and root == tmp_path / "set"
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("x")
    with pytest.raises(KitError, match="no photos in"):
        collect_images([tmp_path / "text"])
    with pytest.raises(KitError, match="none: no such file or folder"):
        collect_images([tmp_path / "set" / "a" / "none"])
    im = Image.new("RGB", (100, 80), (128, 128, 128))
    out = draw(im, [{"label": "shark", "score": 0.8, "bbox": [10, 10, 60, 50]},
                    {"label": "fish", "score": 0.1, "bbox": [70, 10, 90, 30]}], CLASSES, threshold=0.3)
    a = np.asarray(out).astype(int)
    assert (a[30, 10] != 128).any() and (a[20, 70] == 128).all()  # the 0.8 box drawn, the 0.1 box not


def test_a_chinese_class_name_is_drawn_in_its_own_glyphs():
    from labeling.show import find_cjk_font

    if find_cjk_font() is None:
        pytest.skip("no font with CJK glyphs installed (the Makefile's system-deps installs fonts-wqy-zenhei)")
    im = Image.new("RGB", (200, 120), (128, 128, 128))
    row = {"score": 0.8, "bbox": [10, 30, 150, 100]}
    shark, whale = (np.asarray(draw(im, [dict(row, label=c)], [c], threshold=0.3)) for c in ("鲨鱼", "鲸鱼"))
    # drawn as "missing glyph" boxes, the two names would look alike
    assert (shark != whale).any()


def test_when_no_detection_reaches_the_threshold_predict_says_so_and_what_to_try(tmp_path):
    import re

    unsure = make_export(tmp_path / "export", background_logit=2.0)  # every score 1 / (e^2 + 2) = 0.107
    labeled_set(tmp_path / "test", n=2, size=(160, 120))
    runner = CliRunner()
    r = runner.invoke(cli, ["predict", str(unsure), str(tmp_path / "test"), "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    top = max(row["score"] for row in json.loads((tmp_path / "p" / "predictions.json").read_text()))
    assert top == pytest.approx(1 / (np.exp(2) + 2), abs=1e-4)
    said = re.search(r"warning: 0 boxes >= 0.3; the top score was ([\d.]+); try --threshold ([\d.]+)", r.output)
    assert said and float(said.group(1)) == pytest.approx(top, abs=0.005), r.output
    suggested = float(said.group(2))
    assert 0 < suggested <= top
    # the threshold it suggests does draw boxes, and then nothing is said
    r = runner.invoke(cli, ["predict", str(unsure), str(tmp_path / "test"), "--out", str(tmp_path / "q"),
                            "--threshold", str(suggested)])
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    drawn = [np.asarray(Image.open(tmp_path / d / "images" / "img_00.jpg")).astype(int) for d in ("p", "q")]
    photo = np.asarray(Image.open(tmp_path / "test" / "img_00.jpg")).astype(int)
    assert np.abs(drawn[0] - photo).max() < 40 < np.abs(drawn[1] - photo).max()  # p: nothing drawn; q: boxes

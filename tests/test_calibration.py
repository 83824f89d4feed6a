"""Score calibration at `hack export`: the VOC judging of val detections, the Platt fit, the graph
rewrite (ids and boxes untouched, invalid rows kept at -1), and the mAP of the export unchanged."""
import json

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner

from hackathon.cli import cli
from hackathon.deploy import calibration
from hackathon.deploy.calibration import calibrate_graph, calibrated, fit_platt, judge
from test_predict import CLASSES, make_export


def test_the_voc_rule_takes_each_truth_box_once_best_score_first():
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float64)
    ids = np.array([0, 1])
    rows = [{"label": "fish", "score": 0.9, "bbox": [0, 0, 10, 10]},     # right
            {"label": "fish", "score": 0.8, "bbox": [0, 0, 10, 9]},      # the same fish again: wrong
            {"label": "fish", "score": 0.7, "bbox": [20, 20, 30, 30]},   # a shark's place: wrong class
            {"label": "shark", "score": 0.6, "bbox": [22, 22, 32, 32]},  # IoU 64/136 < 0.5: wrong
            {"label": "shark", "score": 0.5, "bbox": [21, 20, 30, 30]}]  # IoU 0.9: right
    got = sorted(judge(rows, truth, ids, CLASSES), key=lambda t: -t[0])
    assert got == [(0.9, True), (0.8, False), (0.7, False), (0.6, False), (0.5, True)]


def test_platt_recovers_a_known_map():
    rng = np.random.RandomState(0)
    s = rng.uniform(0.01, 0.99, 40000)
    right = rng.uniform(size=s.size) < 1 / (1 + np.exp(-(2.0 * np.log(s / (1 - s)) - 1.0)))
    a, b = fit_platt(s, right)
    assert a == pytest.approx(2.0, abs=0.08) and b == pytest.approx(-1.0, abs=0.05)
    assert calibration.ece(calibrated(s, a, b), right) < calibration.ece(s, right) / 3


@pytest.mark.parametrize("background_logit", [None, 12.0])
def test_the_rewritten_graph_maps_scores_and_nothing_else(tmp_path, background_logit):
    export = make_export(tmp_path / "e", shape=300, background_logit=background_logit)
    x = mx.nd.array(np.random.RandomState(0).uniform(-2, 2, (2, 3, 300, 300)))
    plain = mx.gluon.SymbolBlock.imports(str(export / "model-symbol.json"), ["data"], str(export / "model-0000.params"))
    want = [o.asnumpy() for o in plain(x)]
    (tmp_path / "cal.json").write_text(calibrate_graph(export / "model-symbol.json", 1.7, 0.4))
    net = mx.gluon.SymbolBlock.imports(str(tmp_path / "cal.json"), ["data"], str(export / "model-0000.params"))
    got = [o.asnumpy() for o in net(x)]
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[2], want[2])
    valid = want[1] > 0
    assert np.allclose(got[1][valid], calibrated(want[1][valid], 1.7, 0.4), atol=1e-5)
    assert np.array_equal(got[1][~valid], want[1][~valid])
    if background_logit:  # a model that finds nothing: every row stays invalid (-1)
        assert not valid.any() and (got[1] == -1).all()
    else:
        assert valid.any()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_train import one_epoch_run

    return one_epoch_run(tmp_path_factory.mktemp("calib"), n=10, val_fraction=0.4)


def test_a_weak_model_keeps_its_scores_and_export_json_says_why(run, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    entry = json.loads((tmp_path / "e" / "export.json").read_text())["score_calibration"]
    assert entry["applied"] is False and "needs at least 10 right and 10 wrong" in entry["why"]
    assert "scores left uncalibrated: needs at least" in r.output


def iou(a, b):
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def test_calibrated_export_scores_the_same_map_with_mapped_scores(tmp_path):
    """Truth made of the model's own top boxes: right and wrong detections by construction."""
    import shutil

    from PIL import Image

    from hackathon.deploy.predict import load_detector
    from hackathon.evaluate.evaluation import evaluate

    mx.random.seed(0)
    raw = make_export(tmp_path / "raw", shape=300)
    detector = load_detector(raw, precision="fp32", fuse=False)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    rng = np.random.RandomState(0)
    items = []
    for i in range(8):
        pixels = rng.randint(0, 256, (150, 200, 3)).astype(np.uint8)
        image = Image.fromarray(pixels)
        image.save(photos / f"p{i}.png")  # lossless: the model sees these exact pixels again
        top = []  # the model's best boxes, apart from each other: the truth of this photo
        for r in detector.detect(image):
            b = np.array(r["bbox"])
            w_h = b[2:] - b[:2]
            if (w_h > 1).all() and all(iou(b, np.array(t["bbox"])) < 0.2 for t in top):
                top.append(r)
            if len(top) == 4:
                break
        shapes = [{"label": r["label"], "points": [r["bbox"][:2], r["bbox"][2:]], "shape_type": "rectangle",
                   "flags": {}, "group_id": None, "description": ""} for r in top]
        (photos / f"p{i}.json").write_text(json.dumps({"version": "5.11.4", "flags": {}, "shapes": shapes,
                                                       "imagePath": f"p{i}.png", "imageData": None,
                                                       "imageHeight": 150, "imageWidth": 200}))
        items.append((pixels, np.array([r["bbox"] for r in top], np.float32),
                      np.array([CLASSES.index(r["label"]) for r in top])))

    class Records:  # what apply() reads of a DetectionRecords: keys and read(i)
        keys = list(range(len(items)))

        def read(self, i):
            return items[i]

    cal = tmp_path / "cal"
    shutil.copytree(raw, cal)
    entry = calibration.apply(cal, Records(), "model-symbol.json", "model-0000.params")
    assert entry["applied"] and entry["a"] > 0 and entry["right"] >= calibration.MIN_EACH, entry
    assert entry["ece_val_after"] < entry["ece_val_before"]
    x = detector.preprocess(Image.open(photos / "p0.png"))
    cal_det = load_detector(cal, precision="fp32", fuse=False)
    want, got = [o.asnumpy() for o in detector.net(x)], [o.asnumpy() for o in cal_det.net(x)]
    valid = want[1] > 0
    # (atol: at a raw score of exactly 1, float32's clip below 1 and float64's differ in the 5th digit)
    assert np.allclose(got[1][valid], calibrated(want[1][valid], entry["a"], entry["b"]), atol=1e-3)
    maps = [evaluate(photos, export=e, n_boot=20, progress=False, echo=lambda m: None)
            .result["in_scene"] for e in (raw, cal)]
    assert maps[0]["voc07_map50"] > 0
    for metric in ("voc07_map50", "voc_map50", "coco_map"):
        assert maps[0][metric] == pytest.approx(maps[1][metric], abs=1e-9)  # the same rankings

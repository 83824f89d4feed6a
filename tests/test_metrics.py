"""Metrics against their references on many small random scenes: pycocotools' COCOeval for COCO AP
(to 1e-6, per class too), GluonCV's VOC07MApMetric / VOCMApMetric for VOC; then the properties a
judge relies on: row order never counts, duplicates are false positives, difficult boxes are
ignored, a class without detections scores 0, a class without truth is left out, and bootstrap
weights count an image as that many copies."""
import contextlib
import io

import numpy as np
import pytest

from hackathon.evaluate.metrics import METRICS, bootstrap_weights, match
from hackathon.deploy.predictions import Predictions
from hackathon.evaluate.truth import Truth

CLASSES = ["fish", "shark", "ray", "crab"]  # "crab" is never in the truth


def random_scene(seed, n_img=None, difficult=True, ties=False):
    """A few images of random size with random truth (some difficult, some empty images) and
    detections: jittered copies of the truth (duplicates among them), misses, wrong classes,
    random false boxes, and detections of a class that has no truth."""
    rng = np.random.RandomState(seed)
    n_img = n_img or rng.randint(1, 7)
    images = [f"s{seed}/img_{i:02d}.jpg" for i in range(n_img)]
    boxes, labels, diff, sizes, rows = {}, {}, {}, {}, []
    for name in images:
        w, h = rng.randint(40, 400, size=2)
        sizes[name] = (int(w), int(h))
        n = rng.choice([0, 1, 2, 3, 5])
        x1, y1 = rng.uniform(0, w * 0.7, n), rng.uniform(0, h * 0.7, n)
        bw, bh = rng.uniform(2, w * 0.5, n), rng.uniform(2, h * 0.5, n)
        gt = np.stack([x1, y1, np.minimum(x1 + bw, w), np.minimum(y1 + bh, h)], 1) if n else np.zeros((0, 4))
        boxes[name], labels[name] = gt, rng.randint(0, 3, n)
        diff[name] = rng.rand(n) < (0.2 if difficult else 0)
        for b, c in zip(gt, labels[name]):
            for _ in range(rng.choice([0, 1, 1, 2, 3])):  # 0 = a miss, 2-3 = duplicates
                s = rng.uniform(0.3, 0.5) * (b[2:] - b[:2]).mean()
                j = b + rng.normal(0, s, 4)
                j = np.array([min(j[0], j[2] - 0.5), min(j[1], j[3] - 0.5), max(j[2], j[0] + 0.5), max(j[3], j[1] + 0.5)])
                lab = c if rng.rand() > 0.1 else rng.randint(0, 4)
                rows.append({"image": name, "label": CLASSES[lab], "score": float(rng.rand()), "bbox": j.tolist()})
        for _ in range(rng.randint(0, 4)):  # background false positives, the no-truth class among them
            x, y = rng.uniform(0, w - 5), rng.uniform(0, h - 5)
            rows.append({"image": name, "label": CLASSES[rng.randint(0, 4)], "score": float(rng.rand()),
                         "bbox": [x, y, x + rng.uniform(1, w - x), y + rng.uniform(1, h - y)]})
    if ties:
        for r in rows:
            r["score"] = round(r["score"], 1)
    truth = Truth(CLASSES, images, boxes, labels, sizes, diff)
    return truth, rows


def canonical(rows):
    """Rows in the kit's ranking order for ties (score descending, then corners), so a reference
    that keeps input order on ties (pycocotools' mergesort) sees the same order."""
    return sorted(rows, key=lambda r: (-r["score"], *r["bbox"]))


def coco_reference(truth, rows):
    """pycocotools' stats[0], stats[1] and per-class AP / AP50 (difficult given as iscrowd)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = []
    for i, name in enumerate(truth.images):
        for b, c, d in zip(truth.boxes[name], truth.labels[name], truth.difficult[name]):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": int(d)})
    gt = COCO()
    gt.dataset = {"images": [{"id": i + 1} for i in range(len(truth.images))], "annotations": anns,
                  "categories": [{"id": k + 1, "name": c} for k, c in enumerate(truth.classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": truth.index[r["image"]] + 1, "category_id": truth.classes.index(r["label"]) + 1,
                          "bbox": [r["bbox"][0], r["bbox"][1], r["bbox"][2] - r["bbox"][0], r["bbox"][3] - r["bbox"][1]],
                          "score": r["score"]} for r in canonical(rows)])
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, 2]  # T, R, K at area all, maxDets 100
    per_class = []
    for k in range(len(truth.classes)):
        p = prec[:, :, k]
        per_class.append((np.mean(p[p > -1]) if (p > -1).any() else None,
                          np.mean(p[0][p[0] > -1]) if (p[0] > -1).any() else None))
    return ev.stats[0], ev.stats[1], per_class


def gluoncv_reference(truth, rows, eleven_point=True):
    """GluonCV's VOC07MApMetric (or VOCMApMetric) fed one image at a time: (mAP, per-class APs)."""
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric

    metric = (VOC07MApMetric if eleven_point else VOCMApMetric)(iou_thresh=0.5, class_names=truth.classes)
    for name in truth.images:
        mine = [r for r in rows if r["image"] == name]
        n = max(1, len(mine))
        pb, pl, ps = np.zeros((1, n, 4)), -np.ones((1, n)), -np.ones((1, n))
        for k, r in enumerate(mine):
            pb[0, k], pl[0, k], ps[0, k] = r["bbox"], truth.classes.index(r["label"]), r["score"]
        m = max(1, len(truth.labels[name]))
        gb, gl, gd = np.zeros((1, m, 4)), -np.ones((1, m)), np.zeros((1, m))
        k = len(truth.labels[name])
        gb[0, :k], gl[0, :k], gd[0, :k] = truth.boxes[name], truth.labels[name], truth.difficult[name]
        metric.update(pb, pl, ps, gb, gl, gd)
    if not metric._n_pos:  # no truth box and no detection at all: GluonCV cannot say (max of nothing)
        return float("nan"), [float("nan")] * len(truth.classes)
    names, values = metric.get()
    return values[-1], values[:-1]


def kit(truth, rows):
    return match(truth, Predictions.from_rows(rows, truth))


def close(a, b, tol):
    if a is None or b is None or (isinstance(b, float) and np.isnan(b)):
        return (a is None or np.isnan(a)) and (b is None or np.isnan(b))
    return abs(a - b) <= tol


@pytest.mark.parametrize("seed", range(40))
def test_coco_equals_pycocotools(seed):
    truth, rows = random_scene(seed, ties=seed % 4 == 0)
    s = kit(truth, rows).summary()
    if not rows:  # pycocotools' loadRes cannot take an empty list; its accumulate would give 0 / -1
        has_truth = any((~truth.difficult[n]).any() for n in truth.images)
        assert all(s[m] == (0.0 if has_truth else None) for m in ("coco_map", "coco_map50"))
        return
    ap, ap50, per_class = coco_reference(truth, rows)
    assert close(s["coco_map"], None if ap < 0 else ap, 1e-6), (s["coco_map"], ap)
    assert close(s["coco_map50"], None if ap50 < 0 else ap50, 1e-6), (s["coco_map50"], ap50)
    for k, c in enumerate(CLASSES):
        assert close(s["per_class"][c]["coco_map"], per_class[k][0], 1e-6), c
        assert close(s["per_class"][c]["coco_map50"], per_class[k][1], 1e-6), c


def test_coco_equals_pycocotools_past_100_detections_per_image():
    truth, rows = random_scene(1000, n_img=3)
    rng = np.random.RandomState(0)
    extra = []
    for r in rows:
        for _ in range(40):  # far more than 100 per image and class: only the top 100 count
            b = np.array(r["bbox"]) + rng.normal(0, 2, 4)
            b[2:] = np.maximum(b[2:], b[:2] + 1)
            extra.append({**r, "score": float(rng.rand()), "bbox": b.tolist()})
    rows = rows + extra
    s = kit(truth, rows).summary()
    ap, ap50, _ = coco_reference(truth, rows)
    assert abs(s["coco_map"] - ap) < 1e-6 and abs(s["coco_map50"] - ap50) < 1e-6


@pytest.mark.parametrize("seed", range(40))
def test_voc_equals_gluoncv(seed):
    truth, rows = random_scene(seed)
    s = kit(truth, rows).summary()
    for metric, eleven in (("voc07_map50", True), ("voc_map50", False)):
        ref, per_class = gluoncv_reference(truth, rows, eleven)
        assert close(s[metric], float(ref), 1e-9), (metric, s[metric], ref)
        for k, c in enumerate(CLASSES[:len(per_class)]):
            assert close(s["per_class"][c][metric], float(per_class[k]), 1e-9), (metric, c)


def test_voc_uses_the_plus_one_pixel_convention_and_coco_does_not():
    # IoU with +1: (10*5) / (10*10) = 0.5, a hit; continuous: (9*4) / (9*9) = 0.44, a miss
    truth = Truth(["fish"], ["a.jpg"], {"a.jpg": [[0, 0, 9, 9]]}, {"a.jpg": [0]}, {"a.jpg": (20, 20)}, {})
    rows = [{"image": "a.jpg", "label": "fish", "score": 0.9, "bbox": [0, 0, 9, 4]}]
    s = kit(truth, rows).summary()
    assert s["voc07_map50"] == pytest.approx(1.0) and s["voc_map50"] == 1.0
    assert s["coco_map50"] == 0.0
    assert gluoncv_reference(truth, rows)[0] == pytest.approx(1.0)
    assert coco_reference(truth, rows)[1] == 0.0


@pytest.mark.parametrize("seed", range(10))
def test_row_order_never_counts(seed):
    truth, rows = random_scene(seed + 100, ties=True)  # scores rounded: many exact ties
    rng = np.random.RandomState(seed)
    first = kit(truth, rows).summary()
    for _ in range(3):
        shuffled = [rows[i] for i in rng.permutation(len(rows))]
        assert kit(truth, shuffled).summary() == first


def test_identical_truth_scores_one_and_a_duplicate_is_a_false_positive():
    truth, _ = random_scene(7, n_img=4, difficult=False)
    rows = [{"image": n, "label": CLASSES[c], "score": 0.5 + 0.01 * k, "bbox": b.tolist()}
            for n in truth.images for k, (b, c) in enumerate(zip(truth.boxes[n], truth.labels[n]))]
    s = kit(truth, rows).summary()
    assert all(s[m] == pytest.approx(1.0) for m in METRICS)
    # the same box again with a higher score: it takes the truth box, the original becomes the duplicate
    top = dict(rows[0], score=0.99)
    m = kit(truth, rows + [top])
    assert (m.voc == 0).sum() == 1 and m.det_score[m.voc == 0][0] == rows[0]["score"]


def test_dropping_half_the_detections_halves_recall():
    # one class, 4 truth boxes, perfect detections for 2 of them: AP = 0.5 on every metric
    # (VOC07: precision 1 at recall 0..0.5, i.e. 6 of the 11 points)
    names = [f"{i}.jpg" for i in range(4)]
    truth = Truth(["fish"], names, {n: [[10, 10, 50, 50]] for n in names}, {n: [0] for n in names},
                  {n: (64, 64) for n in names}, {})
    rows = [{"image": n, "label": "fish", "score": 0.9, "bbox": [10, 10, 50, 50]} for n in names[:2]]
    s = kit(truth, rows).summary()
    assert s["voc07_map50"] == pytest.approx(6 / 11)
    assert s["voc_map50"] == pytest.approx(0.5)
    assert s["coco_map"] == pytest.approx(51 / 101) and s["coco_map50"] == pytest.approx(51 / 101)


def test_difficult_truth_is_neither_found_nor_missed():
    truth = Truth(["fish"], ["a.jpg"], {"a.jpg": [[0, 0, 10, 10], [20, 20, 40, 40]]}, {"a.jpg": [0, 0]},
                  {"a.jpg": (64, 64)}, {"a.jpg": [False, True]})
    found = [{"image": "a.jpg", "label": "fish", "score": 0.9, "bbox": [0, 0, 10, 10]}]
    on_difficult = [{"image": "a.jpg", "label": "fish", "score": s, "bbox": [20, 20, 40, 40]} for s in (0.95, 0.97)]
    for rows in (found, found + on_difficult):
        s = kit(truth, rows).summary()
        assert s["voc07_map50"] == pytest.approx(1.0) and s["coco_map"] == pytest.approx(1.0)
        assert s["per_class"]["fish"]["n_truth"] == 1
    m = kit(truth, found + on_difficult)
    assert sorted(m.voc.tolist()) == [-1, -1, 1]


def test_class_without_detections_scores_zero_and_class_without_truth_is_left_out():
    truth = Truth(["fish", "shark", "crab"], ["a.jpg"], {"a.jpg": [[0, 0, 10, 10], [20, 20, 40, 40]]},
                  {"a.jpg": [0, 1]}, {"a.jpg": (64, 64)}, {})
    rows = [{"image": "a.jpg", "label": "fish", "score": 0.9, "bbox": [0, 0, 10, 10]},
            {"image": "a.jpg", "label": "crab", "score": 0.8, "bbox": [30, 0, 40, 10]}]
    s = kit(truth, rows).summary()
    assert s["per_class"]["shark"] == {m: 0.0 for m in METRICS} | {"n_truth": 0 + 1}
    assert s["per_class"]["crab"] == {m: None for m in METRICS} | {"n_truth": 0}
    assert all(s[m] == pytest.approx(0.5) for m in METRICS)  # (1 + 0) / 2: crab is not in the mean


def test_no_detections_at_all_and_no_truth_at_all():
    truth, _ = random_scene(3, n_img=3)
    assert all(v == 0.0 for k, v in kit(truth, []).summary().items() if k != "per_class")
    empty = Truth(CLASSES, ["a.jpg"], {}, {}, {"a.jpg": (10, 10)}, {})
    s = kit(empty, [{"image": "a.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, 5, 5]}]).summary()
    assert all(s[m] is None for m in METRICS)


@pytest.mark.parametrize("seed", range(8))
def test_bootstrap_weights_count_an_image_as_that_many_copies(seed):
    truth, rows = random_scene(seed + 200, n_img=5)
    weights = bootstrap_weights(len(truth.images), n=3, seed=seed)
    m = kit(truth, rows)
    for w in weights:
        names, boxes, labels, diff, sizes, copies = [], {}, {}, {}, {}, []
        for i, n in enumerate(truth.images):
            for k in range(int(w[i])):
                c = f"copy{k}/{n}"
                names.append(c)
                boxes[c], labels[c], diff[c], sizes[c] = truth.boxes[n], truth.labels[n], truth.difficult[n], truth.sizes[n]
                copies += [dict(r, image=c) for r in rows if r["image"] == n]
        copied = Truth(CLASSES, names, boxes, labels, sizes, diff)
        expected = kit(copied, copies)
        for metric in METRICS:
            a, b = m.score(metric, weights=w), expected.score(metric)
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12), metric


def test_bootstrap_weights_shape_and_seed():
    w = bootstrap_weights(7, n=50, seed=3)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all() and w.dtype.kind == "i"
    assert (w == bootstrap_weights(7, n=50, seed=3)).all() and not (w == bootstrap_weights(7, n=50, seed=4)).all()
    truth, rows = random_scene(5, n_img=4)
    with pytest.raises(ValueError, match="one per truth image"):
        kit(truth, rows).score("coco_map", weights=np.ones(3))


def test_real_aquarium_labels_against_both_references(shared_dir):
    """The 200 labeled aquarium photos (1,362 boxes, 7 classes) with jittered, re-scored, partly
    dropped and duplicated detections: pycocotools and GluonCV agree with the kit."""
    from hackathon.evaluate.truth import read_truth

    truth = read_truth(shared_dir / "data" / "aquarium-scene-a")
    rng = np.random.RandomState(0)
    rows = []
    for n in truth.images:
        for b, c in zip(truth.boxes[n], truth.labels[n]):
            for _ in range(rng.choice([0, 1, 1, 2])):
                j = b + rng.normal(0, 0.1, 4) * np.repeat(b[2:] - b[:2], 2)
                j[2:] = np.maximum(j[2:], j[:2] + 1)
                lab = c if rng.rand() > 0.1 else rng.randint(len(truth.classes))
                rows.append({"image": n, "label": truth.classes[lab], "score": float(rng.rand()), "bbox": j.tolist()})
    s = kit(truth, rows).summary()
    ap, ap50, _ = coco_reference(truth, rows)
    assert abs(s["coco_map"] - ap) < 1e-6 and abs(s["coco_map50"] - ap50) < 1e-6
    assert abs(s["voc07_map50"] - gluoncv_reference(truth, rows)[0]) < 1e-9
    assert 0.1 < s["coco_map"] < s["coco_map50"] < 1  # a real, not a degenerate, case


@pytest.mark.parametrize("seed", range(6))
def test_many_resamples_at_once_equal_one_by_one(seed):
    """per_class_many (the bootstrap's batched path) gives the very bits of per_class row by row,
    zero weights, difficult boxes and classes without truth in some resamples included."""
    truth, rows = random_scene(seed + 300, n_img=9)
    m = kit(truth, rows)
    weights = bootstrap_weights(len(truth.images), n=40, seed=seed)
    weights[0] = 0  # a resample without any image
    weights[1] = np.eye(len(truth.images), dtype=weights.dtype)[0]  # one image only
    for metric in METRICS:
        many = m.per_class_many(metric, weights)
        one = np.array([m.per_class(metric, w) for w in weights])
        np.testing.assert_array_equal(many, one, err_msg=metric)
        scores = m.score_many(metric, weights)
        np.testing.assert_array_equal(scores, [m.score(metric, w) for w in weights], err_msg=metric)
    with pytest.raises(ValueError, match="truth images"):
        m.per_class_many("voc07_map50", np.ones((3, len(truth.images) + 1)))

"""The kit's scoring against pycocotools' COCOeval on one synthetic set, in one run.

    python bench/bench_metrics.py            # 5,000 images x 100 detections, 20 classes, seed 0

Both start from the same list of detection dicts and the same truth. Timed:
- kit: ``Predictions.from_rows`` (every row validated) + ``metrics.match`` + ``Matches.summary``
  (all four metrics: VOC07, VOC, COCO AP and AP50, overall and per class);
- pycocotools: ``loadRes`` + ``evaluate`` + ``accumulate`` + ``summarize``, with the area ranges
  set to "all" only (what the kit computes; the default four ranges cost pycocotools ~4x more,
  `--coco-default-areas` times that too).
The COCO AP and AP50, overall and per class, are asserted equal (1e-9). The ratio printed last is
pycocotools' seconds over the kit's.
"""
import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hackathon.evaluate.metrics import match  # noqa: E402
from hackathon.deploy.predictions import Predictions  # noqa: E402
from hackathon.evaluate.truth import Truth  # noqa: E402


def synthetic(n_images, n_dets, n_classes, seed):
    """Truth of 1-15 boxes an image; detections: jittered copies of the truth (several per box, some
    with the wrong class) and random boxes, `n_dets` an image, random scores."""
    rng = np.random.default_rng(seed)
    classes = [f"class{k:02d}" for k in range(n_classes)]
    images = [f"img_{i:05d}.jpg" for i in range(n_images)]
    boxes, labels, sizes, rows = {}, {}, {}, []
    for name in images:
        w, h = 640, 480
        n = int(rng.integers(1, 16))
        xy = rng.uniform(0, [w * 0.8, h * 0.8], (n, 2))
        wh = rng.uniform(8, [w * 0.4, h * 0.4], (n, 2))
        gt = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
        boxes[name], labels[name], sizes[name] = gt, rng.integers(0, n_classes, n), (w, h)
        src = rng.integers(0, n, n_dets)
        jitter = rng.normal(0, 0.15, (n_dets, 4)) * np.repeat(wh[src], 2, axis=0).reshape(n_dets, 4)
        det = gt[src] + jitter
        rand = rng.random(n_dets) < 0.3  # 30% anywhere
        xy2 = rng.uniform(0, [w * 0.9, h * 0.9], (n_dets, 2))
        det[rand] = np.concatenate([xy2, xy2 + rng.uniform(4, [w * 0.3, h * 0.3], (n_dets, 2))], 1)[rand]
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        lab = np.where(rng.random(n_dets) < 0.8, labels[name][src], rng.integers(0, n_classes, n_dets))
        score = rng.random(n_dets)
        rows += [{"image": name, "label": classes[c], "score": float(s), "bbox": b.tolist()}
                 for c, s, b in zip(lab, score, det)]
    return Truth(classes, images, boxes, labels, sizes, {}), rows


def run_kit(truth, rows):
    t0 = time.perf_counter()
    preds = Predictions.from_rows(rows, truth)
    t1 = time.perf_counter()
    m = match(truth, preds)
    t2 = time.perf_counter()
    s = m.summary()
    t3 = time.perf_counter()
    return s, {"validate": t1 - t0, "match": t2 - t1, "summary": t3 - t2, "total": t3 - t0}


def coco_gt(truth):
    from pycocotools.coco import COCO

    anns = []
    for i, name in enumerate(truth.images):
        for b, c in zip(truth.boxes[name], truth.labels[name]):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
    gt = COCO()
    gt.dataset = {"images": [{"id": i + 1} for i in range(len(truth.images))], "annotations": anns,
                  "categories": [{"id": k + 1, "name": c} for k, c in enumerate(truth.classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def run_pycocotools(truth, rows, gt, all_areas_only=True):
    from pycocotools.cocoeval import COCOeval

    cls = {c: k + 1 for k, c in enumerate(truth.classes)}
    # the kit's tie order (score, then corners) so ties, if any, are ranked alike
    results = [{"image_id": truth.index[r["image"]] + 1, "category_id": cls[r["label"]],
                "bbox": [r["bbox"][0], r["bbox"][1], r["bbox"][2] - r["bbox"][0], r["bbox"][3] - r["bbox"][1]],
                "score": r["score"]} for r in sorted(rows, key=lambda r: (-r["score"], *r["bbox"]))]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        if all_areas_only:
            ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e5 ** 2]], ["all"]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    seconds = time.perf_counter() - t0
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_class = [(prec[:, :, k][prec[:, :, k] > -1].mean(), prec[0, :, k][prec[0, :, k] > -1].mean())
                 for k in range(len(truth.classes))]
    return ev.stats[0], ev.stats[1], per_class, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kit-rounds", type=int, default=3, help="the kit is timed this often, the median kept")
    ap.add_argument("--coco-default-areas", action="store_true", help="also time pycocotools with its 4 area ranges")
    args = ap.parse_args()

    truth, rows = synthetic(args.images, args.dets, args.classes, args.seed)
    print(f"set: {len(truth.images)} images, {truth.n_boxes} truth boxes, {len(rows)} detections, "
          f"{len(truth.classes)} classes (seed {args.seed})", flush=True)
    kit_runs = [run_kit(truth, rows) for _ in range(args.kit_rounds)]
    summary = kit_runs[0][0]
    kit_s = float(np.median([t["total"] for _, t in kit_runs]))
    parts = {k: float(np.median([t[k] for _, t in kit_runs])) for k in ("validate", "match", "summary")}
    print(f"kit: {kit_s:.2f} s (median of {args.kit_rounds}; validate {parts['validate']:.2f}, "
          f"match {parts['match']:.2f}, summary {parts['summary']:.2f})", flush=True)
    gt = coco_gt(truth)
    ap_, ap50, per_class, coco_s = run_pycocotools(truth, rows, gt)
    print(f"pycocotools (area 'all'): {coco_s:.2f} s", flush=True)
    if args.coco_default_areas:
        _, _, _, full_s = run_pycocotools(truth, rows, coco_gt(truth), all_areas_only=False)
        print(f"pycocotools (default 4 area ranges): {full_s:.2f} s = {full_s / kit_s:.1f}x the kit", flush=True)

    assert abs(summary["coco_map"] - ap_) <= 1e-9, (summary["coco_map"], ap_)
    assert abs(summary["coco_map50"] - ap50) <= 1e-9, (summary["coco_map50"], ap50)
    for k, c in enumerate(truth.classes):
        assert abs(summary["per_class"][c]["coco_map"] - per_class[k][0]) <= 1e-9, c
        assert abs(summary["per_class"][c]["coco_map50"] - per_class[k][1]) <= 1e-9, c
    print(f"identical: COCO AP {ap_:.6f}, AP50 {ap50:.6f} (and per class) in both; kit VOC07 "
          f"{summary['voc07_map50']:.6f}, VOC {summary['voc_map50']:.6f}")
    print(f"RATIO metrics_vs_pycocotools {coco_s / kit_s:.2f}")


if __name__ == "__main__":
    main()

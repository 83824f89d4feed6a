"""Exploratory: an export re-scored on bench_train's accuracy split, seen once or with test-time views
(bench/RESULTS.md, "Test-time views"). `Detector.detect_many` is patched for this process only.

    OMP_NUM_THREADS=2 python bench/explore_tta.py EXPORT {none,flip,flip2,flipnms}

flip / flip2: the photo and its mirror (flip2: and a 2x2 grid of tiles) fused as `hack prefill`
fuses its views; flipnms: the two views' boxes pooled, per-class NMS at IoU 0.45.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import bench_train  # noqa: E402
from hackathon.core.constants import KEEP_SCORE  # noqa: E402
from hackathon.deploy import predict as P  # noqa: E402
from hackathon.deploy.prefill import detect_fused  # noqa: E402
from hackathon.evaluate.evaluation import evaluate  # noqa: E402
from labeling.labelme_io import box_iou  # noqa: E402

NMS_IOU, MAX_ROWS = 0.45, 100


def mirrored(row, w):
    x0, y0, x1, y1 = row["bbox"]
    return dict(row, bbox=[w - x1, y0, w - x0, y1])


def patch(mode):
    one_view = P.Detector.detect_many

    class OneView:  # what detect_fused calls: the detector as exported
        def __init__(self, d):
            self.d, self.classes = d, d.classes

        def detect_many(self, images, threshold):
            return one_view(self.d, images, threshold)

    def fused(self, images, threshold=KEEP_SCORE):
        return [detect_fused(OneView(self), im, threshold, {"flip": 1, "flip2": 2}[mode]) for im in images]

    def pooled(self, images, threshold=KEEP_SCORE):
        out = []
        for im in images:
            a, b = one_view(self, [im, im.transpose(P.Image.FLIP_LEFT_RIGHT)], threshold)
            keep = []
            for r in sorted(a + [mirrored(r, im.size[0]) for r in b], key=lambda r: -r["score"]):
                if all(k["label"] != r["label"] or box_iou(k["bbox"], r["bbox"]) < NMS_IOU for k in keep):
                    keep.append(r)
            out.append(keep[:MAX_ROWS])
        return out

    if mode != "none":
        P.Detector.detect_many = pooled if mode == "flipnms" else fused


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="a folder `hack export` wrote")
    ap.add_argument("mode", choices=["none", "flip", "flip2", "flipnms"])
    a = ap.parse_args()
    split = bench_train.accuracy_split(ROOT / "bench/work/train/accuracy", 0)
    patch(a.mode)
    ev = evaluate(split["heldout"], export=a.export, shift=split["proxy"], n_boot=200, progress=False,
                  echo=lambda m: None)
    print(json.dumps({"export": str(a.export), "mode": a.mode,
                      "in": round(ev.result["in_scene"]["voc07_map50"], 4),
                      "shift": round(ev.result["shift"]["voc07_map50"], 4)}))


if __name__ == "__main__":
    try:
        main()
    except P.KitError as e:
        sys.exit(f"error: {e}")

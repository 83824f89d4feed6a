"""Exploratory: re-score an export on bench_train's accuracy split with test-time views (flip, flip2, flipnms) or none (bench/RESULTS.md, "Test-time views")."""
import sys, json
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import bench_train
from hackathon.deploy import predict as P
from hackathon.deploy.prefill import detect_fused
from hackathon.evaluate.evaluation import evaluate
acc = ROOT / "bench/work/train/accuracy"
split = bench_train.accuracy_split(acc, 0)
export = Path(sys.argv[1]); mode = sys.argv[2]
orig = P.Detector.detect_many
if mode.startswith("flip") and mode != "flipnms":
    tiles = int(mode[4:] or 1)
    class Raw:  # what detect_fused calls: the un-patched detector
        def __init__(s, d): s.d = d; s.classes = d.classes
        def detect_many(s, ims, thr): return orig(s.d, ims, thr)
        def detect(s, im, threshold): return orig(s.d, [im], threshold)[0]
    def many(self, images, threshold=0.01):
        return [detect_fused(Raw(self), im, threshold, tiles) for im in images]
    P.Detector.detect_many = many
if mode == "flipnms":
    from PIL import Image as I
    from hackathon.deploy.prefill import _iou
    def many(self, images, threshold=0.01):
        out = []
        for im in images:
            a, b = orig(self, [im, im.transpose(I.FLIP_LEFT_RIGHT)], threshold)
            w = im.size[0]
            rows = a + [dict(r, bbox=[w - r["bbox"][2], r["bbox"][1], w - r["bbox"][0], r["bbox"][3]]) for r in b]
            keep = []
            for r in sorted(rows, key=lambda r: -r["score"]):
                if all(k["label"] != r["label"] or _iou(k["bbox"], r["bbox"]) < 0.45 for k in keep):
                    keep.append(r)
            out.append(keep[:100])
        return out
    P.Detector.detect_many = many
ev = evaluate(split["heldout"], export=export, shift=split["proxy"], n_boot=200, progress=False, echo=lambda m: None)
print(json.dumps({"export": str(export), "mode": mode, "in": round(ev.result["in_scene"]["voc07_map50"], 4),
                  "shift": round(ev.result["shift"]["voc07_map50"], 4)}))

"""Calibration of the scores, raw vs calibrated export, on photos the fit never saw (issue 14).

Both exports are run as fp32 (oneDNN fused) by `hack eval`'s code on the held-out scene-A photos and
the shift proxy of `bench_train.py accuracy`; printed: VOC07 mAP@0.5 (equal by design) and the
expected calibration error (ECE, hack eval's reliability table) of each.

    python bench/bench_calibration.py --raw EXPORT_RAW --calibrated EXPORT [--split bench/work/train/accuracy/split-0]

EXPORT_RAW: `hack export RUN --out X --no-calibrate`; EXPORT: `hack export RUN --out Y`.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import hackathon.core.cores  # noqa: E402,F401  (the kit's threads before mxnet loads)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--calibrated", type=Path, required=True)
    ap.add_argument("--split", type=Path, default=ROOT / "bench" / "work" / "train" / "accuracy" / "split-0")
    args = ap.parse_args()
    import hackathon.deploy.predict as predict
    from hackathon.evaluate.evaluation import evaluate

    load = predict.load_detector
    predict.load_detector = lambda export, **k: load(export, precision="fp32")  # both as fp32
    for name, export in (("raw", args.raw), ("calibrated", args.calibrated)):
        r = evaluate(args.split / "heldout", export=export, shift=args.split / "proxy", n_boot=200, progress=False,
                     echo=lambda m: None).result
        print(f"{name:<11} " + "  ".join(f"{k}: VOC07 mAP {r[k]['voc07_map50']:.4f} ECE {r[k]['reliability']['ece']:.3f}"
                                       for k in ("in_scene", "shift")), flush=True)


if __name__ == "__main__":
    main()

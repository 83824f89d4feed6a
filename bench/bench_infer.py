"""Inference speed and accuracy of one export's graphs on this machine, side by side in one run.

    python bench/bench_infer.py --run RUN [--export EXPORT] [--repeat 20]

RUN is a trained run folder (its pack's val.rec is the accuracy check). The export (made from RUN
with `hack export --int8` unless --export names one that has an INT8 graph) is measured four ways,
each in its own process so the thread count is set before mxnet loads:

  fp32, 1 thread     the kit before: the hybridized fp32 graph at MXNet's default on 2 cores
  fp32, all cores    OMP_NUM_THREADS = the usable cores
  fp32 fused         oneDNN's fused graph, all cores
  int8               the INT8 graph, all cores

For each: ms per image at batch 1, images/s at batch 8 (the net alone on a fixed input, median of
--repeat passes after two warm-ups) and VOC07 mAP@0.5 on the val photos (through the kit's
Detector, photo preprocessing included). Prints `RATIO int8_vs_fp32_1thread_batch1 X` last.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("fp32, 1 thread", "1", dict(precision="fp32", fuse=False)),
           ("fp32, all cores", None, dict(precision="fp32", fuse=False)),
           ("fp32 fused", None, dict(precision="fp32", fuse=True)),
           ("int8", None, dict(precision="int8"))]


def measure(export, run, how, repeat):
    """In this process: the speeds and the val mAP of one way of running `export`."""
    from PIL import Image

    from hackathon.deploy.int8 import voc07_map
    from hackathon.deploy.predict import load_detector, seconds_per_batch
    from hackathon.train.data import DataDir, DetectionRecords
    from hackathon.train.rundir import RunDir

    det = load_detector(export, **how)
    out = {"graph": det.precision, "omp_threads": os.environ.get("OMP_NUM_THREADS", "default")}
    for b in (1, 8):
        seconds = seconds_per_batch(det, b, repeat)
        out[f"ms_per_image_b{b}"] = 1000 * seconds / b
        out[f"images_per_s_b{b}"] = b / seconds
    data = DataDir(RunDir.open(run).data_path())
    recs = DetectionRecords(data.rec("val"))
    val = []
    for i in range(len(recs.keys)):
        image, boxes, ids = recs.read(i)
        val.append((Image.fromarray(image), boxes, ids))
    out["val_map50"] = voc07_map(det, val)
    out["val_images"] = len(val)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--export", type=Path)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one config in this process
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.export, args.run, json.loads(args.one), args.repeat)))
        return
    export = args.export or ROOT / "bench" / "work" / "infer-export"
    hack = [sys.executable, "-m", "hackathon.cli"]
    if args.export is None:
        subprocess.run(hack + ["export", str(args.run), "--out", str(export), "--int8"], check=True, cwd=ROOT)
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    rows = []
    for name, threads, how in CONFIGS:
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=threads or cores)
        proc = subprocess.run([sys.executable, __file__, "--run", str(args.run), "--export", str(export),
                               "--repeat", str(args.repeat), "--one", json.dumps(how)],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(f"{name}: failed:\n{proc.stderr[-2000:]}")
        rows.append((name, json.loads(proc.stdout.strip().splitlines()[-1])))
    print(f"{'how':<18} {'graph':<20} {'threads':>7} {'ms/img b1':>10} {'img/s b8':>9} {'val mAP@0.5':>12}")
    for name, r in rows:
        print(f"{name:<18} {r['graph']:<20} {r['omp_threads']:>7} {r['ms_per_image_b1']:>10.1f} "
              f"{r['images_per_s_b8']:>9.1f} {r['val_map50']:>12.4f}")
    base, int8 = rows[0][1], rows[-1][1]
    print(f"val photos: {base['val_images']}; INT8 mAP - fp32 mAP: {int8['val_map50'] - base['val_map50']:+.4f}")
    print(f"RATIO int8_vs_fp32_1thread_batch1 {base['ms_per_image_b1'] / int8['ms_per_image_b1']:.2f}")


if __name__ == "__main__":
    main()

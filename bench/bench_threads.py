"""How many OpenMP threads and DataLoader workers `hack train` should use on THIS machine.

Not a peer benchmark: it times the kit against itself under several thread settings, to choose
the kit's defaults (hackathon/__init__.py, `default_workers`). Each setting is a real short
`hack train` (a fresh interpreter, as OMP_NUM_THREADS is read when mxnet loads) on the first
--photos photos of ../shared/data/aquarium-scene-a, packed once; its speed is the best training
images/s over epochs 2.. (epoch 1 pays for tracing the graph). Settings alternate for --rounds
rounds and the best round is kept: on a shared machine the least disturbed run is the closest to
the truth. Each run waits (up to --wait s) until other processes use less than --quiet of the cores.

    python bench/bench_threads.py [--settings 1/1,2/0,2/1,2/2 --photos 64 --epochs 3 --rounds 2]

A setting is OMP/WORKERS (OMP_NUM_THREADS / `--workers`); OMP/WORKERS/ENGINE also sets
MXNET_CPU_WORKER_NTHREADS. The ratio printed last is the best setting against 1/1 (mxnet 1.9.1's
own default on a 2-core x86 machine, and the kit's default before it chose its threads).
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "aquarium-scene-a"
WORK = ROOT / "bench" / "work" / "threads"


def packed(photos):
    out = WORK / f"data-{photos}"
    if (out / "manifest.json").exists():
        return out
    src = WORK / f"photos-{photos}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for js in sorted(SHARED.glob("*.json"))[:photos]:
        for f in (js, js.with_suffix(".jpg")):
            shutil.copy2(f, src / f.name)
    subprocess.run([sys.executable, "-m", "hackathon.cli", "pack", str(src), "--out", str(out), "--labels",
                    str(SHARED / "labels.txt")], check=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def busy_share(seconds=2.0):
    """Share of all cores busy over `seconds` (/proc/stat), while this benchmark itself is idle."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit, wait):
    """Wait (at most `wait` s) until others use less than `limit` of the cores; return their share."""
    deadline = time.time() + wait
    while True:
        share = busy_share()
        if share < limit or time.time() > deadline:
            return share


def run(data, setting, epochs):
    omp, workers, *engine = setting.split("/")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=omp)
    if engine:
        env["MXNET_CPU_WORKER_NTHREADS"] = engine[0]
    out = WORK / "run"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "hackathon.cli", "train", str(data), "--out", str(out), "--epochs",
                    str(epochs), "--patience", "0", "--workers", workers], check=True, cwd=ROOT, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return max(float(r["images_per_s"]) for r in rows[1:]), time.time() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="1/1,2/0,2/1,2/2")
    p.add_argument("--photos", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quiet", type=float, default=0.15, help="start a run when others use less than this share")
    p.add_argument("--wait", type=float, default=300, help="seconds to wait for that before running anyway")
    args = p.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED}")
    data = packed(args.photos)
    settings = args.settings.split(",")
    best = {s: 0.0 for s in settings}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cores} usable cores, {args.photos} photos, {args.epochs} epochs, {args.rounds} rounds", flush=True)
    for r in range(args.rounds):
        for s in settings:
            others = wait_quiet(args.quiet, args.wait)
            img_s, wall = run(data, s, args.epochs)
            best[s] = max(best[s], img_s)
            print(f"round {r + 1} OMP/workers {s}: {img_s:.2f} img/s (run {wall:.0f} s; others used "
                  f"{100 * others:.0f}% of the cores just before)", flush=True)
    for s in settings:
        print(f"best OMP/workers {s}: {best[s]:.2f} img/s")
    top = max(settings, key=best.get)
    if "1/1" in best:
        print(f"RATIO threads_best_{top.replace('/', '_')}_vs_1_1 {best[top] / best['1/1']:.3f}")


if __name__ == "__main__":
    main()

"""The judges' evening, timed before and after issue 17: `hack score` on N teams' exported models and
M test photos, whole (submission checks, every model run in its sandbox, matching, bootstrap,
history, board files).

- **Before**: the kit as it was before the fast-inference work (commit --before, default f39409e,
  checked out in a worktree under bench/work/judges): every model run as hybridized fp32 at
  MXNet's default of one OpenMP thread on this 2-core machine, a photo per forward pass; the
  teams' exports are fp32 only, as `hack export` wrote them then.
- **After**: the kit now: both cores, the INT8 graph where the export has one (oneDNN), else fused
  fp32, 8 photos per forward pass; the same exports with their INT8 graph.

The N teams are copies of one export (the scorer's cost per team does not depend on what it learnt);
the test photos are the first M labelled photos of ../shared/data/aquarium-scene-a. The two boards'
VOC07 mAP@0.5 are printed side by side (INT8 must stay close to fp32).

    python bench/bench_judges.py --export EXPORT [--teams 30] [--photos 200] [--before f39409e]

EXPORT must have an INT8 graph (`hack export RUN --out EXPORT --int8`). Prints
`RATIO judges_evening_before_vs_after X` (before seconds / after seconds) last.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "judges"
SHARED = ROOT.parent / "shared" / "data" / "aquarium-scene-a"


def test_set(n):
    truth = WORK / f"truth-{n}"
    if not truth.is_dir():
        truth.mkdir(parents=True)
        for j in sorted(SHARED.glob("*.json"))[:n]:
            image = SHARED / json.loads(j.read_text())["imagePath"]
            shutil.copyfile(j, truth / j.name)
            shutil.copyfile(image, truth / image.name)
        shutil.copyfile(SHARED / "labels.txt", truth / "labels.txt")
    return truth


def inbox(export, teams, with_int8):
    box = WORK / ("inbox-after" if with_int8 else "inbox-before")
    shutil.rmtree(box, ignore_errors=True)
    meta = json.loads((export / "export.json").read_text())
    if not with_int8:  # what `hack export` wrote then: no INT8 graph, no later keys
        meta = {k: v for k, v in meta.items() if k in ("kit_export", "data_shape", "mean", "std", "classes", "model",
                                                        "weights", "run", "nms")}
    for t in range(teams):
        team = box / f"team-{t:02d}"
        team.mkdir(parents=True)
        for name in ("model-symbol.json", "model-0000.params", "classes.txt"):
            shutil.copyfile(export / name, team / name)
        if with_int8:
            for name in (meta["int8"]["symbol"], meta["int8"]["params"]):
                shutil.copyfile(export / name, team / name)
        (team / "export.json").write_text(json.dumps(meta))
    return box


def old_kit(commit):
    tree = WORK / f"kit-{commit}"
    if not tree.is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True,
                       capture_output=True)
    return tree


def score(kit, truth, box, out):
    """Seconds of one `hack score` of `kit`'s code (its own package first on the path, children too)."""
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(kit)
    code = "import sys; from hackathon.cli import cli; sys.argv[0] = 'hack'; cli()"
    which = subprocess.run([sys.executable, "-c", "import hackathon; print(hackathon.__file__)"], env=env,
                           capture_output=True, text=True, cwd=str(WORK)).stdout.strip()
    assert which.startswith(str(kit)), f"{kit}: python imports {which}"
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code, "score", "--truth", str(truth), "--submissions", str(box),
                           "--out", str(out)], env=env, capture_output=True, text=True, cwd=str(WORK))
    seconds = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"hack score ({kit}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def board(out):
    """The scored teams' primary metric (VOC07 mAP@0.5), and how many were not scored."""
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scores = [float(r["score"]) for r in rows if r["score"] not in (None, "")]
    return scores, len(rows) - len(scores)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, required=True)
    ap.add_argument("--teams", type=int, default=30)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--before", default="f39409e")
    args = ap.parse_args()
    meta = json.loads((args.export / "export.json").read_text())
    if not meta.get("int8"):
        sys.exit(f"{args.export}: no INT8 graph. Fix: hack export RUN --out {args.export} --int8")
    WORK.mkdir(parents=True, exist_ok=True)
    truth = test_set(args.photos)
    results = {}
    for name, kit, with_int8 in (("before", old_kit(args.before), False), ("after", ROOT, True)):
        seconds, stdout = score(kit, truth, inbox(args.export, args.teams, with_int8), WORK / f"board-{name}")
        scores, unscored = board(WORK / f"board-{name}")
        if unscored or not scores:
            sys.exit(f"{name}: {unscored} team(s) not scored; see {WORK / f'board-{name}' / 'leaderboard.md'}")
        results[name] = seconds
        print(f"{name:<7} {seconds / 60:6.1f} min for {args.teams} teams x {args.photos} photos "
              f"({1000 * seconds / (args.teams * args.photos):.0f} ms a model-photo); VOC07 mAP@0.5 "
              f"{min(scores):.4f}..{max(scores):.4f} over {len(scores)} teams", flush=True)
    print(f"RATIO judges_evening_before_vs_after {results['before'] / results['after']:.2f}")


if __name__ == "__main__":
    main()

"""hack prefill: the labeling actions it saves against drawing every box by hand.

On ../shared/data/aquarium-scene-a (200 labelled photos): a workspace gets --first photos with
their labels (a seeded random pick) and the others without; it is packed and trained the
README's way (`hack pack photos --out data`, `hack train data --out run --max-minutes M`), then
`hack prefill run` pre-fills the photos without labels (once with `--tiles 0`, the photo seen once,
and once with the kit's default views, on the same model). Each pre-filled file is compared with the
photo's true labels (hidden from the kit until then):

    keep    a machine box on a true box of its class with IoU >= 0.7: no action
    fix     a machine box on a true box with IoU >= 0.3 (the wrong class, or placed loosely): 1 action
    delete  a machine box on no true box: 1 action
    add     a true box no machine box is on: 1 action (drawn)

Pairs are taken greedily, highest IoU first, each box in one pair at most. Labeling the same
photos from scratch is one action per true box; "saved" is 1 - actions / from scratch. Round 2
labels --more of the remaining photos (their true labels), retrains from the ImageNet backbone
with the same budget, and pre-fills the rest again (--more 0: one round only).

Why a figure is what it is, per round and view: the model's VOC07 mAP on the pre-filled photos
at IoU 0.5 and at 0.7 (the IoU a kept box needs), and an oracle bound: the actions saved with
per-class thresholds chosen on the very photos scored, with their true labels (no team has
that; it says what any threshold rule could reach with this model).

    python bench/bench_prefill.py                           # the issue's measurement: 10-minute trainings
    python bench/bench_prefill.py --minutes 1 --photos 60 --first 20 --more 20   # a quick look only
    python bench/bench_prefill.py --first 160 --more 0 --minutes 30   # a stronger model: the bound of the loop

The training budget decides the figure: run it on a quiet machine. It prints one line per round
and `RATIO prefill_actions_saved_round1 X` (and round2) last; bench/work/prefill/results.json
keeps the counts.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "aquarium-scene-a"
WORK = ROOT / "bench" / "work" / "prefill"
KEEP_IOU, FIX_IOU = 0.7, 0.3


def hack(*args):
    """The CLI as a team runs it, in a child process (its own memory, its own mxnet)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print("$ hack " + " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "hackathon.cli", *map(str, args)], env=env, check=True)


def boxes_of(json_path, machine_only=False):
    from labeling.labelme_io import box_of_points, is_machine, read_labelme

    return [(s.label, box_of_points(s.points)) for s in read_labelme(json_path).shapes
            if not machine_only or is_machine(s)]


def actions(predicted, truth):
    """{"keep", "fix", "delete", "add"} for one photo's machine boxes against its true boxes."""
    from labeling.labelme_io import box_iou

    pairs = sorted(((box_iou(p[1], t[1]), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)),
                   reverse=True)
    used_p, used_t, counts = set(), set(), {"keep": 0, "fix": 0, "delete": 0, "add": 0}
    for same_class_only, floor, kind in ((True, KEEP_IOU, "keep"), (False, FIX_IOU, "fix")):
        for iou, i, j in pairs:
            if iou < floor or i in used_p or j in used_t:
                continue
            if same_class_only and predicted[i][0] != truth[j][0]:
                continue
            used_p.add(i), used_t.add(j)
            counts[kind] += 1
    counts["delete"] = len(predicted) - len(used_p)
    counts["add"] = len(truth) - len(used_t)
    return counts


def measure(ws_photos, hidden):
    """Summed actions over the pre-filled photos `hidden` ({photo in the workspace: its true JSON})."""
    total = {"photos": 0, "truth": 0, "keep": 0, "fix": 0, "delete": 0, "add": 0}
    for photo, truth_json in hidden.items():
        made = photo.with_suffix(".json")
        predicted = boxes_of(made, machine_only=True) if made.exists() else []
        truth = boxes_of(truth_json)
        for k, v in actions(predicted, truth).items():
            total[k] += v
        total["photos"] += 1
        total["truth"] += len(truth)
    done = total["fix"] + total["delete"] + total["add"]
    total["actions"] = done
    total["saved"] = 1 - done / total["truth"] if total["truth"] else 0.0
    return total


def diagnose(run, hidden, tiles):
    """{"map50", "map70", "oracle_saved"}: the run's detections (score >= 0.05, `tiles` views) on
    the pre-filled photos against their true labels."""
    import numpy as np
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

    from hackathon.deploy.prefill import SCORE_FLOOR, detect_fused, open_model
    from labeling.photos import open_upright

    model = open_model(run)
    try:
        classes = list(model.detector.classes)
        seen = []  # (rows, truth) per photo
        for photo, truth_json in hidden.items():
            rows = detect_fused(model.detector, open_upright(photo).convert("RGB"), SCORE_FLOOR, tiles)
            seen.append(([(r["label"], list(r["bbox"]), r["score"]) for r in rows], boxes_of(truth_json)))
    finally:
        model.close()
    out = {}
    for iou in (0.5, 0.7):
        metric = VOC07MApMetric(iou_thresh=iou, class_names=classes)
        for rows, truth in seen:
            metric.update(np.array([b for _, b, _ in rows] or np.zeros((0, 4)))[None],
                          np.array([classes.index(c) for c, _, _ in rows])[None],
                          np.array([s for _, _, s in rows])[None],
                          np.array([b for _, b in truth] or np.zeros((0, 4)))[None],
                          np.array([classes.index(c) for c, _ in truth])[None])
        out[f"map{round(iou * 100)}"] = float(metric.get()[1][-1])

    def total(thresholds):  # actions with these per-class thresholds
        return sum(sum(v for k, v in actions([(c, b) for c, b, s in rows if s >= thresholds[c]], truth).items()
                       if k != "keep") for rows, truth in seen)

    # coordinate descent over the classes: each class's best threshold given the others (twice)
    thresholds = {c: 2.0 for c in classes}
    best = total(thresholds)
    for _ in range(2):
        for c in classes:
            for t in sorted({round(s, 2) for rows, _ in seen for k, _, s in rows if k == c}):
                trial = total({**thresholds, c: t})
                if trial < best:
                    best, thresholds = trial, {**thresholds, c: t}
    truth_n = sum(len(t) for _, t in seen)
    out["oracle_saved"] = 1 - best / truth_n if truth_n else 0.0
    return out


def label(photo, truth_json):
    """What a team's labeling does to the workspace: the photo's true labels beside it."""
    shutil.copy(truth_json, photo.with_suffix(".json"))


def round_(ws, n, minutes, hidden, seed):
    data, run = ws / f"data-{n}", ws / f"run-{n}"
    shutil.rmtree(data, ignore_errors=True), shutil.rmtree(run, ignore_errors=True)
    for photo in hidden:  # a fresh prefill: no machine file from the round before
        photo.with_suffix(".json").unlink(missing_ok=True)
    hack("--project", ws, "pack", ws / "photos", "--out", data, "--seed", seed)
    hack("--project", ws, "train", data, "--out", run, "--max-minutes", minutes, "--seed", seed)
    results = {}
    for name, extra in (("tiles 0", ["--tiles", "0"]), ("default", [])):  # the photo once, then the kit's views
        for photo in hidden:
            photo.with_suffix(".json").unlink(missing_ok=True)
        hack("--project", ws, "prefill", run, *extra)
        result = results[name] = measure(ws / "photos", hidden)
        from hackathon.deploy.prefill import DEFAULT_TILES  # hack prefill's --tiles default

        result.update(diagnose(run, hidden, 0 if extra else DEFAULT_TILES))
        print(f"round {n} ({name}): {result['photos']} photos pre-filled, {result['truth']} true boxes; keep "
              f"{result['keep']}, fix {result['fix']}, delete {result['delete']}, add {result['add']}: "
              f"{result['actions']} actions against {result['truth']} from scratch, {100 * result['saved']:.1f}% saved; "
              f"the model there: mAP@0.5 {result['map50']:.3f}, mAP@0.7 {result['map70']:.3f}, "
              f"oracle thresholds {100 * result['oracle_saved']:.1f}% saved", flush=True)
    return {**results["default"], "tiles0": results["tiles 0"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of each round (the README's 10)")
    ap.add_argument("--photos", type=int, default=0, help="use a seeded subset of this many photos (0: all)")
    ap.add_argument("--first", type=int, default=40, help="photos labelled before the first training")
    ap.add_argument("--more", type=int, default=40, help="photos labelled before the second training")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED}")
    from labeling.workspace import init_workspace, read_classes

    photos = sorted(p for p in SHARED.glob("*.jpg") if p.with_suffix(".json").is_file())
    random.Random(args.seed).shuffle(photos)
    photos = photos[:args.photos or None]
    if args.first < 1 or args.more < 0:
        sys.exit(f"--first must be at least 1 and --more at least 0 (got {args.first}, {args.more})")
    if args.first + args.more >= len(photos):
        sys.exit(f"--first {args.first} + --more {args.more} leaves no photo to pre-fill of {len(photos)}")
    shutil.rmtree(WORK, ignore_errors=True)
    ws = init_workspace(WORK / "ws", read_classes(SHARED / "labels.txt")).root
    scene = ws / "photos" / "scene-a"
    scene.mkdir(parents=True)
    truth = {}
    for p in photos:
        shutil.copy(p, scene / p.name)
        truth[scene / p.name] = p.with_suffix(".json")
    order = [scene / p.name for p in photos]
    for photo in order[:args.first]:
        label(photo, truth[photo])
    results = {"settings": vars(args), "rounds": []}
    hidden = {p: truth[p] for p in order[args.first:]}
    results["rounds"].append(round_(ws, 1, args.minutes, hidden, args.seed))
    if args.more:
        for photo in order[args.first:args.first + args.more]:
            label(photo, truth[photo])
        hidden = {p: truth[p] for p in order[args.first + args.more:]}
        results["rounds"].append(round_(ws, 2, args.minutes, hidden, args.seed))
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    for n, r in enumerate(results["rounds"], 1):
        print(f"RATIO prefill_actions_saved_round{n} {r['saved']:.3f}")
    for n, r in enumerate(results["rounds"], 1):  # the same model, the photo seen once
        print(f"RATIO prefill_actions_saved_round{n}_tiles0 {r['tiles0']['saved']:.3f}")
    for n, r in enumerate(results["rounds"], 1):  # what any threshold rule could reach with that model
        print(f"RATIO prefill_oracle_saved_round{n} {r['oracle_saved']:.3f}")


if __name__ == "__main__":
    main()

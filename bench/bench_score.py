"""`hack score` on 100 teams x 1,000 test images against a pycocotools COCOeval loop, in one run.

The inputs are synthetic and seeded: a labelme test set of N images (small gray JPEGs, 1-5 boxes
of C classes each) and one predictions.json per team (each truth box found with a probability
and a jitter that depend on the team's skill, plus false positives), cached in --work.

- **Kit**: ``score_submissions`` as ``hack score`` calls it, into a fresh history: read and check
  the truth, open and hash every submission, validate every row, match once per team, the four
  metrics, 1,000 paired bootstrap resamples of the primary metric (for the intervals and tie
  marks), SQLite history, CSV/MD/HTML. Reported also: a second run over the same files (the
  history reuses every result) and the part spent in bootstrap.
- **Peer**: for every team, ``json.load`` of its file, ``COCO.loadRes``, ``COCOeval.evaluate()``,
  ``accumulate()``, ``summarize()``: one number (COCO AP) per team, no validation, no VOC, no
  intervals. The ground truth is built once, outside the timing.

The script checks that the kit's COCO AP equals pycocotools' ``stats[0]`` for every team (1e-6).
The ratio (peer seconds / kit seconds, > 1: the kit is faster) is printed last.

    python bench/bench_score.py [--teams 100] [--images 1000] [--bootstrap 1000] [--work bench/work/score]
"""
import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SIZE = (320, 240)
INPUTS_VERSION = 1


def make_truth(folder, n_images, classes, rng):
    folder.mkdir(parents=True)
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    gray = Image.new("RGB", SIZE, (110, 110, 110))
    truth = []
    for i in range(n_images):
        name = f"img_{i:05d}.jpg"
        gray.save(folder / name, quality=50)
        shapes = []
        for _ in range(rng.randint(1, 6)):
            w, h = rng.uniform(16, 140), rng.uniform(16, 110)
            x, y = rng.uniform(0, SIZE[0] - w), rng.uniform(0, SIZE[1] - h)
            label = classes[rng.randint(len(classes))]
            box = [round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)]
            shapes.append({"label": label, "points": [box[:2], box[2:]], "group_id": None, "description": "",
                           "shape_type": "rectangle", "flags": {}, "mask": None})
            truth.append((name, label, box))
        (folder / f"img_{i:05d}.json").write_text(json.dumps(
            {"version": "5.11.4", "flags": {}, "shapes": shapes, "imagePath": name, "imageData": None,
             "imageHeight": SIZE[1], "imageWidth": SIZE[0]}))
    return truth


def team_predictions(truth, classes, skill, rng, fp_per_image, names):
    rows = []
    for name, label, box in truth:
        if rng.rand() < 0.4 + 0.55 * skill:
            w, h = box[2] - box[0], box[3] - box[1]
            jitter = rng.randn(4) * (0.25 - 0.2 * skill) * np.array([w, h, w, h]) / 2
            b = np.clip(np.array(box) + jitter, 0, [SIZE[0], SIZE[1], SIZE[0], SIZE[1]])
            if b[2] - b[0] > 1 and b[3] - b[1] > 1:
                rows.append({"image": name, "label": label, "score": float(rng.uniform(0.3, 1.0)),
                             "bbox": [round(float(v), 2) for v in b]})
    for name in names:
        for _ in range(rng.poisson(fp_per_image)):
            w, h = rng.uniform(10, 120), rng.uniform(10, 100)
            x, y = rng.uniform(0, SIZE[0] - w), rng.uniform(0, SIZE[1] - h)
            rows.append({"image": name, "label": classes[rng.randint(len(classes))],
                         "score": float(rng.uniform(0.0, 0.7)), "bbox": [round(x, 2), round(y, 2),
                                                                         round(x + w, 2), round(y + h, 2)]})
    return rows


def make_inputs(work, n_teams, n_images, n_classes, fp_per_image, seed):
    key = f"v{INPUTS_VERSION}-t{n_teams}-i{n_images}-c{n_classes}-f{fp_per_image}-s{seed}"
    root = work / key
    if (root / "done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.RandomState(seed)
    classes = [f"class{k}" for k in range(n_classes)]
    truth = make_truth(root / "test", n_images, classes, rng)
    names = sorted({t[0] for t in truth})
    for k in range(n_teams):
        d = root / "inbox" / f"team-{k:03d}"
        d.mkdir(parents=True)
        rows = team_predictions(truth, classes, rng.uniform(0, 1), rng, fp_per_image, names)
        (d / "predictions.json").write_text(json.dumps(rows))
    (root / "done").write_text(key)
    return root


def coco_gt(truth):
    from pycocotools.coco import COCO

    gt = COCO()
    anns = []
    for i, name in enumerate(truth.images):
        for b, c in zip(truth.boxes[name], truth.labels[name]):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)], "area": float(w * h)})
    gt.dataset = {"images": [{"id": i, "width": SIZE[0], "height": SIZE[1]} for i in range(len(truth.images))],
                  "categories": [{"id": k, "name": c} for k, c in enumerate(truth.classes)], "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def pycocotools_loop(gt, truth, inbox):
    from pycocotools.cocoeval import COCOeval

    image_id = {n: i for i, n in enumerate(truth.images)}
    class_id = {c: k for k, c in enumerate(truth.classes)}
    out = {}
    for team in sorted(p.name for p in inbox.iterdir()):
        rows = json.loads((inbox / team / "predictions.json").read_text())
        dets = [{"image_id": image_id[r["image"]], "category_id": class_id[r["label"]], "score": r["score"],
                 "bbox": [r["bbox"][0], r["bbox"][1], r["bbox"][2] - r["bbox"][0], r["bbox"][3] - r["bbox"][1]]}
                for r in rows]
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(dets), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[team] = ev.stats[0]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teams", type=int, default=100)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--fp", type=float, default=6.0, help="False positives an image, per team (Poisson mean).")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "work" / "score")
    args = ap.parse_args()

    from hackathon.judge import score as score_mod
    from hackathon.judge.score import score_submissions
    from hackathon.evaluate.truth import read_truth

    t = time.perf_counter()
    root = make_inputs(args.work, args.teams, args.images, args.classes, args.fp, args.seed)
    print(f"inputs: {root} ({time.perf_counter() - t:.1f} s to make or find)")
    truth = read_truth(root / "test")
    gt = coco_gt(truth)
    n_rows = sum(len(json.loads(p.read_text())) for p in (root / "inbox").glob("*/predictions.json"))
    print(f"{args.teams} teams x {len(truth.images)} images, {truth.n_boxes} truth boxes, "
          f"{n_rows} detections in all ({n_rows / args.teams:.0f} a team)")

    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    boot_time = [0.0]
    real_scores = score_mod._scores

    def timed_scores(preds, ctx):  # the bootstrap's share, measured inside the same run
        t0 = time.perf_counter()
        r = real_scores(preds, ctx)
        boot_time[0] += time.perf_counter() - t0
        return r

    score_mod._scores = timed_scores
    t = time.perf_counter()
    res = score_submissions(root / "test", root / "inbox", out, n_boot=args.bootstrap, seed=args.seed)
    kit = time.perf_counter() - t
    score_mod._scores = real_scores
    t = time.perf_counter()
    again = score_submissions(root / "test", root / "inbox", out, n_boot=args.bootstrap, seed=args.seed)
    rerun = time.perf_counter() - t
    assert not again["new_run"]

    t = time.perf_counter()
    peer_scores = pycocotools_loop(gt, truth, root / "inbox")
    peer = time.perf_counter() - t

    rows = {r["team"]: r for r in res["board"]["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), [r["message"] for r in rows.values() if r["status"] != "ok"]
    worst = max(abs(rows[team]["coco"] - v) for team, v in peer_scores.items())
    assert worst < 1e-6, f"COCO AP differs from pycocotools by {worst}"
    ties = sum(r["tie_above"] for r in rows.values())
    print(f"kit (hack score, {args.bootstrap} resamples): {kit:.2f} s, {args.teams / kit:.2f} teams/s "
          f"(of which match + summary + bootstrap {boot_time[0]:.2f} s); {ties} neighbour ties marked")
    print(f"kit again on the same files (history reused): {rerun:.2f} s")
    print(f"pycocotools loop (COCO AP only): {peer:.2f} s, {args.teams / peer:.2f} teams/s")
    print(f"COCO AP equal to pycocotools for all {len(peer_scores)} teams (max |diff| {worst:.1e})")
    print(f"RATIO score_vs_pycocotools {peer / kit:.2f}")


if __name__ == "__main__":
    main()

"""`hack demo`: the kit's whole evening on its bundled sample (60 aquarium photos), offline.

import -> check -> pack -> show -> train -> export -> predict + eval -> shift -> score.
Each step is one function below and calls the same functions as its `hack` command, so this file
reads as the evening's recipe; the notebooks call these steps too.

The sample has one scene only. To show what a change of scene does, :func:`other_camera` makes a
*simulated* test scene: the validation photos as a different camera would see them (a colour cast,
darker, blurred, cropped differently, saved at a lower JPEG quality), with their boxes moved to
match. It is a stand-in, not a second venue: a real test scene (other tanks, other light, other
backgrounds) usually costs more than this.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from labeling.check import check_labels
from hackathon.core.errors import KitError
from hackathon.core.fileutil import write_json_atomic
from labeling.importing import import_photos
from labeling.pack import pack_dataset
from labeling.photos import open_upright
from labeling.show import show_grid
from labeling.workspace import init_workspace, read_classes

SAMPLE = Path(__file__).resolve().parent.parent / "labeling" / "sample"
SCENE = "aquarium-a"
STEPS = 9
DEMO_MARKER = ".hack/demo"  # only folders carrying it are deleted and rebuilt


def run_demo(out, minutes=4.0, photos=None, echo=print, progress=True):
    """Run every step into `out` (a new workspace, rebuilt on each run); returns {result: path}.

    `minutes` is the training budget; `photos` keeps only the first N sample photos (tests).
    """
    out = Path(out)
    ws, classes = make_workspace(out, photos, echo)
    report = check_step(ws, classes, echo)
    data, manifest = pack_step(ws, out, classes, report, echo)
    grid = show_step(data, out, echo)
    scenes = make_scenes(ws, manifest, out, classes, echo)
    summary = train_step(data, out, minutes, echo, progress)
    export = export_step(summary["run"], out, echo)
    preds, metrics = eval_step(export, scenes, out, echo, progress)
    shift = shift_step(scenes, out, echo, progress)
    board = score_step(export, scenes, classes, out, echo, progress)
    return {"workspace": ws.root, "data": data, "grid": grid, "run": summary["run"],
            "curves": Path(summary["run"]) / "curves.png", "best_map50": summary["best_map50"],
            "export": export, "predictions": preds, "eval": metrics, "shift": shift, "board": board}


def make_workspace(out, photos=None, echo=print):
    """1. A fresh workspace with the sample's classes, and the sample's photos imported into it."""
    clear_demo_folder(out)
    classes = read_classes(SAMPLE / "labels.txt")
    source = SAMPLE / SCENE
    if photos:  # a smaller copy of the sample (photo + its labelme file), for quick runs
        source = out.parent / f".{out.name}-sample"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        for jpg in sorted(SAMPLE.joinpath(SCENE).glob("*.jpg"))[:photos]:
            shutil.copy2(jpg, source / jpg.name)
            shutil.copy2(jpg.with_suffix(".json"), source / jpg.with_suffix(".json").name)
    ws = init_workspace(out, classes)
    mark_demo_folder(out)
    summary = import_photos(ws, [source], scene=SCENE, max_side=1024, progress=sys.stderr.isatty())  # no bar in a log
    if photos:
        shutil.rmtree(source)
    echo(f"1/{STEPS} import: {summary.line()} -> {ws.photos_dir} ({len(classes)} classes)")
    return ws, classes


def clear_demo_folder(out):
    """Remove `out` when an earlier demo or notebook made it (it is rebuilt); refuse any other folder,
    so a mistyped --out never deletes a team's workspace."""
    out = Path(out)
    if not out.exists():
        return
    if not (out / DEMO_MARKER).is_file():
        raise KitError(f"{out} exists and was not made by `hack demo`. Fix: pass another --out, or remove it yourself.")
    shutil.rmtree(out)


def mark_demo_folder(out):
    (Path(out) / DEMO_MARKER).write_text("made by hack demo (or a notebook): rebuilt, so deleted, on the next run\n")


def check_step(ws, classes, echo=print):
    """2. Every label checked (`hack check`)."""
    report = check_labels([ws.photos_dir], classes)
    echo(f"2/{STEPS} check: {report.summary()}")
    echo(report.table())
    return report


def pack_step(ws, out, classes, report, echo=print):
    """3. Train/val RecordIO, 80/20 (`hack pack`)."""
    data = out / "data"
    manifest = pack_dataset([ws.photos_dir], data, classes, val_fraction=0.2, seed=0, report=report, progress=False)
    s = manifest["splits"]
    echo(f"3/{STEPS} pack: {s['train']['images']} train / {s['val']['images']} val photos -> {data}")
    return data, manifest


def show_step(data, out, echo=print):
    """4. What training will see, drawn from the .rec (`hack show`)."""
    grid = out / "train-grid.png"
    show_grid(data / "train.rec", grid, n=16)
    echo(f"4/{STEPS} show: {grid}")
    return grid


def make_scenes(ws, manifest, out, classes, echo=print):
    """The photo folders the later steps compare: the training photos, the validation photos with
    their labels (the in-scene test), and those photos as another camera sees them (simulated)."""
    scenes = out / "scenes"
    folders = {"train": scenes / "train-photos", "val": scenes / "val", "other": scenes / "other-camera"}
    for name, split in (("train", "train"), ("val", "val")):
        folders[name].mkdir(parents=True)
        for rec in manifest["records"][split]:
            stem = Path(rec["source"]).with_suffix("")
            photo = next(p for p in ws.photos_dir.joinpath(stem.parent).glob(stem.name + ".*") if p.suffix != ".json")
            shutil.copy2(photo, folders[name] / photo.name)
            if name == "val":
                shutil.copy2(ws.photos_dir / rec["source"], folders[name] / Path(rec["source"]).name)
    (folders["val"] / "classes.txt").write_text("".join(c + "\n" for c in classes))
    other_camera(folders["val"], folders["other"])
    (folders["other"] / "classes.txt").write_text("".join(c + "\n" for c in classes))
    echo(f"    scenes: {folders['val']} (in-scene test) and {folders['other']} "
         "(SIMULATED scene change: the val photos with a colour cast, darker, blurred and cropped; not a real venue)")
    return folders


def other_camera(src, dst, crop=0.12, seed=0):
    """The labelme photos in `src` as a different camera would see them, labels moved along, into `dst`.

    Each photo is cropped by up to `crop` of its size on each side (another framing), tinted
    blue-green, darkened (gamma 1.6), blurred and saved at JPEG quality 60. A box keeps its label
    when at least half of it is still in the photo, clipped to the new frame.
    """
    rng = np.random.RandomState(seed)
    dst.mkdir(parents=True, exist_ok=True)
    for jpath in sorted(src.glob("*.json")):
        doc = json.loads(jpath.read_text())
        x0, y0, x1, y1 = _reshoot(src / doc["imagePath"], dst / doc["imagePath"], crop, rng)
        shapes = []
        for s in doc["shapes"]:
            (ax, ay), (bx, by) = s["points"][0], s["points"][-1]
            ax, bx, ay, by = min(ax, bx), max(ax, bx), min(ay, by), max(ay, by)
            cx0, cy0, cx1, cy1 = max(ax, x0), max(ay, y0), min(bx, x1), min(by, y1)
            if cx1 <= cx0 or cy1 <= cy0 or (cx1 - cx0) * (cy1 - cy0) < 0.5 * (bx - ax) * (by - ay):
                continue
            shapes.append({**s, "points": [[cx0 - x0, cy0 - y0], [cx1 - x0, cy1 - y0]]})
        write_json_atomic(dst / jpath.name, {**doc, "shapes": shapes, "imageData": None,
                                             "imageWidth": x1 - x0, "imageHeight": y1 - y0})
    return dst


def other_camera_photos(src, dst, crop=0.12, seed=1):
    """The photos in `src` (no labels needed, none written) as :func:`other_camera` sees them: a sample
    of the simulated test scene, e.g. for `hack adapt`."""
    from labeling.photos import is_image_name

    rng = np.random.RandomState(seed)
    dst.mkdir(parents=True, exist_ok=True)
    for photo in sorted(p for p in src.iterdir() if is_image_name(p)):
        _reshoot(photo, dst / photo.with_suffix(".jpg").name, crop, rng)
    return dst


def _reshoot(photo, out, crop, rng):
    """Save `photo` as the other camera shoots it; returns its frame (x0, y0, x1, y1) in the photo."""
    from PIL import Image, ImageFilter

    im = open_upright(photo)
    w, h = im.size
    l, t, r, b = (rng.uniform(0, crop, 4) * [w, h, w, h]).round()
    x0, y0, x1, y1 = int(l), int(t), int(w - r), int(h - b)
    pixels = np.asarray(im.crop((x0, y0, x1, y1)), dtype=np.float32) / 255
    pixels = (pixels ** 1.6) * np.array([0.75, 0.95, 1.05]) * 255  # darker, blue-green water light
    shot = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))
    shot.save(out, quality=60)
    return x0, y0, x1, y1


def train_step(data, out, minutes, echo=print, progress=True):
    """5. Fine-tune the SSD (`hack train`) for at most `minutes` minutes, at 300x300."""
    from hackathon.train.loop import TrainConfig, train

    cfg = TrainConfig(data=str(data), out=str(out / "run"), data_shape=300, max_minutes=minutes, patience=0)
    echo(f"5/{STEPS} train: {minutes:g} min on the CPU, all of them (hack demo --minutes for longer)")
    summary = train(cfg, echo=lambda m: echo("    " + m), progress=progress)
    echo(f"    best val mAP@0.5 {summary['best_map50']:.4f} at epoch {summary['best_epoch']:g}; limited by "
         f"{summary['stopped_by']}; curves: {Path(summary['run']) / 'curves.png'}")
    return summary


def export_step(run, out, echo=print):
    """6. The best weights as a deployable model folder (`hack export`)."""
    from hackathon.deploy.calibration import describe, export_calibrated

    export, calibration = export_calibrated(run, out / "export")
    echo(f"6/{STEPS} export: {export} ({describe(calibration)})")
    return export


def eval_step(export, scenes, out, echo=print, progress=True):
    """7. Detections on the simulated scene (`hack predict`), and the detector scored on the
    in-scene val photos and on the simulated scene, with the gap between them (`hack eval --shift`)."""
    from hackathon.evaluate.evaluation import evaluate
    from hackathon.evaluate.report import terminal_summary, write_report
    from hackathon.deploy.predict import run_predict

    preds = out / "predictions"
    rows, _, drawn = run_predict(export, [scenes["other"]], preds, progress=False)
    echo(f"7/{STEPS} predict: {len(rows)} detections on {drawn} photos of the simulated scene -> "
         f"{preds / 'predictions.json'}, drawn in {preds / 'images'}")
    metrics = out / "eval"
    ev = evaluate(scenes["val"], export=export, shift=scenes["other"], n_boot=200, progress=progress,
                  echo=lambda m: echo("    " + m))
    write_report(ev, metrics)
    echo("    " + terminal_summary(ev.result).replace("\n", "\n    "))
    echo(f"    eval report: {metrics / 'report.html'}")
    return preds, metrics


def shift_step(scenes, out, echo=print, progress=True):
    """8. How far the simulated scene is from the training photos (`hack shift`)."""
    from hackathon.evaluate.shift import measure_shift
    from hackathon.evaluate.shift_report import write_report

    report = out / "shift-report"
    result = measure_shift(scenes["train"], scenes["other"], report, permutations=99, progress=progress)
    write_report(result, report)
    echo(f"8/{STEPS} shift: {result.verdict()}")
    echo(f"    shift report: {report / 'shift.md'}, {report / 'most-like-test.png'}, {report / 'roc.png'}")
    return report


def baseline_rows(truth):
    """A weak 'baseline' team: one box in the middle of every photo, labeled with the most common
    class. It shows what the leaderboard does with a detector that learned nothing."""
    counts = np.bincount(np.concatenate([truth.labels[i] for i in truth.images]), minlength=len(truth.classes))
    label = truth.classes[int(counts.argmax())]
    rows = []
    for name in truth.images:
        w, h = truth.sizes[name]
        rows.append({"image": name, "label": label, "score": 0.5,
                     "bbox": [w * 0.25, h * 0.25, w * 0.75, h * 0.75]})
    return rows


def score_step(export, scenes, classes, out, echo=print, progress=True):
    """9. Judging (`hack score`): the demo's model and a baseline team on the simulated scene, ranked."""
    from hackathon.deploy.predictions import write_predictions
    from hackathon.judge.score import score_submissions
    from hackathon.evaluate.truth import read_truth

    inbox = out / "submissions"
    team = inbox / "demo-team"
    team.mkdir(parents=True)
    for name in ("model-symbol.json", "model-0000.params", "classes.txt", "export.json"):
        shutil.copy2(Path(export) / name, team / name)
    truth = read_truth(scenes["other"])
    (inbox / "baseline").mkdir()
    write_predictions(baseline_rows(truth), inbox / "baseline" / "predictions.json")
    board = out / "board"
    result = score_submissions(scenes["other"], inbox, board, in_scene=scenes["val"], n_boot=200, progress=progress)
    echo(f"9/{STEPS} score: {len(result['board']['rows'])} teams on the simulated scene")
    for r in result["board"]["rows"]:
        score = "" if r["score"] is None else f"{r['score']:.4f}"
        echo(f"    {r['rank'] or '-'}. {r['team']}: {r['status']} {score}")
    echo(f"    leaderboard: {result['paths']['html']} (live: hack leaderboard serve --db {result['db']})")
    return board

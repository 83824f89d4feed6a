"""Write the tutorial notebooks (the .ipynb files beside this script) from the cells below.

    python notebooks/make_notebooks.py        # after editing a cell here; commit the .ipynb files

The notebooks are committed without outputs. Every notebook runs alone, top to bottom, on the
bundled sample; each reuses what an earlier one left in notebooks/work/ (the packed data, the
run, the export) and makes it when missing. Environment variables keep CI fast:
KIT_NOTEBOOK_MINUTES (training budget, default 2), KIT_NOTEBOOK_PHOTOS (use only the first N
sample photos; default all 60), KIT_NOTEBOOK_WORK (where results go, default notebooks/work).
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''import os, sys
from pathlib import Path
from IPython.display import Image, Markdown, display

try:
    import hackathon                       # installed by `make setup` (pip install -e .)
except ImportError:                        # or run from notebooks/ in a checkout
    sys.path.insert(0, str(Path.cwd().parent))
    import hackathon
KIT = Path(hackathon.__file__).resolve().parent.parent
WORK = Path(os.environ.get("KIT_NOTEBOOK_WORK", KIT / "notebooks" / "work")).resolve()
MINUTES = float(os.environ.get("KIT_NOTEBOOK_MINUTES", "2"))   # training budget
PHOTOS = int(os.environ.get("KIT_NOTEBOOK_PHOTOS", "0")) or None  # None: all 60 sample photos
print("results go to", WORK)'''

# Notebooks 2-4 start from what notebook 1 (and 2) made, and make it when it is missing.
PREPARE = '''from hackathon import demo

def packed(work=WORK):
    """The sample imported, checked and packed into work/ (notebook 1's steps), made once."""
    if not (work / "data" / "manifest.json").is_file():
        ws, classes = demo.make_workspace(work, PHOTOS)
        report = demo.check_step(ws, classes)
        demo.pack_step(ws, work, classes, report)
    import json
    return json.loads((work / "data" / "manifest.json").read_text())'''


# Notebooks 3 and 4: the simulated scene and a trained run, made here when notebook 2 has not run.
SCENES_AND_RUN = """manifest = packed()
classes = manifest["classes"]
scenes = WORK / "scenes"
if not (scenes / "other-camera").is_dir():
    from labeling.workspace import find_workspace
    demo.make_scenes(find_workspace(WORK), manifest, WORK, classes)
if not (WORK / "run" / "best.params").is_file():        # notebook 2's run, or a short one now
    demo.train_step(WORK / "data", WORK, MINUTES, progress=False)"""


def nb(cells):
    book = new_notebook(cells=[new_markdown_cell(c[3:]) if c.startswith("md:") else new_code_cell(c) for c in cells])
    for i, cell in enumerate(book.cells):  # stable ids: regenerating changes only what was edited
        cell.id = f"cell-{i:02d}"
    book.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}}
    return book


PHOTOS_AND_LABELS = [
    """md:# 1. Photos and labels: from a phone to RecordIO

Tonight your team photographs objects, draws a box around each one in labelme, and packs the
result into the files MXNet trains from. This notebook does those steps on the kit's bundled
sample (60 aquarium photos, already labeled) with the same functions as the `hack` commands:

| step | command | function |
| --- | --- | --- |
| make a workspace | `hack init` | `labeling.workspace.init_workspace` |
| bring photos in | `hack import` | `labeling.importing.import_photos` |
| check the labels | `hack check` | `labeling.check.check_labels` |
| pack train/val | `hack pack` | `labeling.pack.pack_dataset` |
| look at it | `hack show` | `labeling.show.show_grid` |""",
    SETUP,
    """md:## Import

`import_photos` copies photos into `photos/<scene>/`: turned upright from the EXIF orientation
(a phone stores most photos sideways plus a note; MXNet ignores the note, labelme does not),
downscaled to 1024 px, saved without metadata (no GPS), duplicates skipped. A photo that arrives
with its labelme JSON keeps its labels.""",
    """from labeling.workspace import init_workspace, read_classes
from labeling.importing import import_photos
from hackathon.demo import SAMPLE, SCENE, clear_demo_folder, mark_demo_folder

classes = read_classes(SAMPLE / "labels.txt")
clear_demo_folder(WORK)          # this notebook starts from scratch (only in a folder it made)
sources = sorted(SAMPLE.joinpath(SCENE).glob("*.jpg"))[:PHOTOS]   # each brings its labelme JSON along
ws = init_workspace(WORK, classes)
mark_demo_folder(WORK)
summary = import_photos(ws, sources, scene=SCENE, progress=False)
print(classes)
print(summary.line())""",
    """md:## Check

A labelme file can hold many mistakes a model would silently learn from: a typo in a class
name, a box drawn as a polygon, a box off the photo, a photo labeled sideways. `check_labels`
finds them all, each with its file and the fix, and counts boxes per class and scene.""",
    """from labeling.check import check_labels

report = check_labels([ws.photos_dir], classes)
print(report.summary())
print(report.table())
for problem in report.problems[:5]:
    print(problem)""",
    """md:One labelme file, as your teammates' labelme writes it: corners in pixels of the upright photo.""",
    """from labeling.labelme_io import read_labelme

item = report.items[0]
lm = read_labelme(item.json_path)
print(item.key, item.width, "x", item.height, "-", len(item.boxes), "boxes, the first five:")
for cls, x1, y1, x2, y2 in item.boxes[:5]:
    print(f"  {classes[cls]:<10} ({x1:.0f}, {y1:.0f}) - ({x2:.0f}, {y2:.0f})")""",
    """md:## Pack

`pack_dataset` splits the photos 80/20 (seeded, so the split is the same on every laptop) and
writes `train.rec`/`val.rec` with their `.idx`: one JPEG and its boxes per record, normalized to
0-1, the layout GluonCV's `RecordFileDetection` reads. `manifest.json` says what went where.""",
    """from labeling.pack import pack_dataset

manifest = pack_dataset([ws.photos_dir], WORK / "data", classes, val_fraction=0.2, seed=0,
                        report=report, progress=False)
for split in ("train", "val"):
    s = manifest["splits"][split]
    print(f"{split:<5} {s['images']:>3} photos, {s['boxes']:>4} boxes: {s['per_class']}")
print(manifest["warnings"])""",
    """md:**Look at the counts.** Fish have hundreds of boxes, starfish and stingrays a few dozen: a
detector learns the classes it sees often. A class with no box in `val` cannot be measured at
all (the warning above says so when it happens); at the event, photograph the rare classes more.

## Look at what training will see

`show_grid` decodes records from the `.rec` and draws their boxes: if a box is off here, it is
off in training. This is the single most useful picture of the evening.""",
    """from labeling.show import show_grid

show_grid(WORK / "data" / "train.rec", WORK / "train-grid.png", n=12, tile=256)
display(Image(filename=str(WORK / "train-grid.png"), width=760))""",
    """md:## Your turn

- `hack init fishy --classes fish,jellyfish,shark`, `hack import ~/DCIM --scene tank-a`,
  `hack label --member 1/3`, `hack check`, `hack pack photos --out data`, `hack show data/train.rec`.
- Break a label on purpose (rename a class to `Fihs` in one JSON) and run the check cell again.""",
]

FINE_TUNING = [
    """md:# 2. Fine-tuning an SSD

An SSD (single-shot detector) puts a few thousand *anchor boxes* of fixed sizes over the photo
and, for each one, predicts a class (or background) and a small shift of the box. The kit's SSD
sits on MobileNetV2, a network that already learned to see on ImageNet; we only *fine-tune* it:
its first blocks stay frozen and the new detection layers learn our classes.

This notebook: what `hybridize()` changes, how several devices share a batch, and a short
training with a time budget.""",
    SETUP,
    PREPARE,
    """manifest = packed()
classes = manifest["classes"]
print(manifest["splits"]["train"]["images"], "training photos,", len(classes), "classes")""",
    """md:## Hybridization: from Python to one graph

A Gluon network runs *imperatively* by default: Python calls each layer in turn, which is easy
to debug. `hybridize()` traces the network once into a symbolic graph that MXNet runs as a whole
(memory planned once with `static_alloc`, no Python between layers). Same weights, same numbers,
less overhead. We time the same forward pass both ways.""",
    """import time
import numpy as np
import mxnet as mx
from hackathon.train.models import build_ssd

net = build_ssd(classes, data_shape=300)       # ImageNet backbone, new detection layers still random
x = mx.nd.random.uniform(shape=(4, 3, 300, 300))

def seconds_per_batch(net, repeat=3):
    net(x)[0].wait_to_read()                                       # the first call traces/allocates
    t = time.perf_counter()
    for _ in range(repeat):
        net(x)[0].wait_to_read()                                   # MXNet is asynchronous: wait for it
    return (time.perf_counter() - t) / repeat

imperative = seconds_per_batch(net)
before = [o.asnumpy() for o in net(x)]
net.hybridize(static_alloc=True, static_shape=True)
hybrid = seconds_per_batch(net)
after = [o.asnumpy() for o in net(x)]
print(f"imperative {imperative:.3f} s/batch, hybridized {hybrid:.3f} s/batch ({imperative / hybrid:.2f}x)")
print("same scores both ways:", np.allclose(before[1], after[1], atol=1e-4))   # outputs: ids, scores, boxes""",
    """md:On a CPU the gain is modest (the convolutions dominate); on a GPU, where Python's overhead
is a larger share, it is larger. `hack train` and `hack export` always hybridize; the export
*is* the traced graph (`model-symbol.json`).

## Several devices: one batch, split

With `--gpus 0,1` (or `--cpus 2` on a laptop, to try the same code path) the kit makes one
*context* per device. Each batch is split across them (`split_and_load`), every device computes
its part's gradients, and the trainer sums them before one update: the same step as one device
with the whole batch, done in parallel.""",
    """from hackathon.train.loop import TrainConfig, contexts

cfg = TrainConfig(data=str(WORK / "data"), out=str(WORK / "run"), cpus=2)
ctxs = contexts(cfg)
batch = mx.nd.zeros((cfg.batch_size * len(ctxs), 3, 300, 300))
parts = mx.gluon.utils.split_and_load(batch, ctxs)
print("devices:", ctxs)
print("a batch of", batch.shape[0], "->", [(str(p.context), p.shape[0]) for p in parts])""",
    """md:`cpus=2` gives two contexts on the same processor: it shows the mechanics, not a speed-up
(both share the same cores). With GPUs: `hack train data --out run --gpus 0,1 --amp`.

## A short training run

`train(cfg)` is `hack train`. `max_minutes` is a time budget for the whole call, the last
validation and saves included; with it there is no epoch limit or early stop unless you set them.
Only whole epochs are trained; a budget too small for one trains part of it, validates and saves
(its row in `results.csv` is a fraction of an epoch). It writes `results.csv`, `curves.png`, `best.params` and
`config.yaml` into the run folder. Here: a budget of a minute or two on one context (two
contexts on one CPU would make each step twice the batch, so half as many steps in the same time).""",
    """import shutil
from hackathon.train.loop import train

shutil.rmtree(WORK / "run", ignore_errors=True)
cfg = TrainConfig(data=str(WORK / "data"), out=str(WORK / "run"), data_shape=300,
                  max_minutes=MINUTES, patience=0)
summary = train(cfg, progress=False)
print(summary)""",
    """from hackathon.train.rundir import RunDir

for row in RunDir.open(WORK / "run").read_results():
    val = "not validated" if row["val_map50"] is None else f"{row['val_map50']:.4f}"  # --val-every
    print(f"epoch {row['epoch']:>5g}: class loss {row['cls_loss']:.3f}, box loss {row['box_loss']:.3f}, "
          f"val mAP@0.5 {val}")
display(Image(filename=str(WORK / "run" / "curves.png"), width=900))""",
    """md:**Reading the curves.** Both losses should fall; the class loss first (background is easy),
the box loss slower. The validation mAP@0.5 (VOC07) is what counts: the fraction of objects found
with a box overlapping the truth by half, averaged over recall and classes. After a minute or two
on a CPU it is small but above zero; the demo's 4 minutes reach more, an evening's 45 minutes
much more. If the loss goes up or becomes NaN, lower the learning rate (`--lr`).

## Your turn

- `hack train data --out run --max-minutes 45` for the evening; `--resume run` continues a stopped run.
- Change `data_shape` to 512: small objects are found better; each step costs ~3x.""",
    """md:## The loop: the first detector pre-fills labelme, the team only corrects

Labeling is the longest hour of the evening. Correcting a box is quicker than drawing it, once a
model places boxes tight enough to keep; on the aquarium set a 10-minute detector on 40 photos does
not yet (bench/RESULTS.md, prefill: its classes are switched off and it pre-fills almost nothing),
and a 30-minute one on 160 photos saves 0.6% (mAP 0.35 at IoU 0.5, 0.16 at the 0.7 a kept box needs). The loop:

1. label ~40 photos (`hack label --order typical --batch 40`: the most typical, varied ones first)
2. `hack pack photos --out data` and `hack train data --out run --max-minutes 10`
3. `hack prefill run`: every photo without labels gets the model's boxes in its labelme JSON
4. `hack label --order uncertain --model run`: fix, delete or add boxes, tick **reviewed**
5. pack and train again (unreviewed pre-filled photos stay out of training until ticked)

Here, the validation photos play the team's next, unlabelled batch: copied without their labels
and pre-filled by the run above (`prefill_photos` is `hack prefill`). The thresholds are chosen per
class on the run's val photos (the score that saves the most actions), so on these very photos they
flatter the model.""",
    """import json
from hackathon.deploy.prefill import choose_thresholds, open_model, prefill_photos

batch = WORK / "next-batch" / "photos" / "next"
shutil.rmtree(WORK / "next-batch", ignore_errors=True)
batch.mkdir(parents=True)
for record in manifest["records"]["val"]:
    shutil.copy(WORK / "photos" / Path(record["source"]).with_suffix(".jpg"), batch)   # the photo, not its labels
model = open_model(WORK / "run")           # a run folder: exported to a temp folder first
thresholds, how = choose_thresholds(model.detector, model.val_rec)
for c in classes:
    print(f"{c:<10} threshold {thresholds[c]:.2f}: {how[c]}")
result = prefill_photos(model.detector, sorted(batch.glob("*.jpg")), thresholds, model.name, progress=False)
model.close()
print(result.line())
made = sorted(batch.glob("*.json"))
if made:
    first = json.loads(made[0].read_text())
    print("file flags:", first["flags"], "- made by:", first["kitPrefill"]["model"])
    for shape in first["shapes"][:3]:
        print(" ", shape["label"], shape["flags"], shape["description"])
else:   # every class switched off: on val this model cost more actions than it saved
    print("no machine boxes: this run is too short to help; train longer (KIT_NOTEBOOK_MINUTES)")""",
    """md:In labelme each machine box shows its `auto` flag and score; a person fixes what is wrong and
ticks **reviewed**. `hack check` counts what is left; `hack pack` trains only on reviewed photos
(`--include-unreviewed` takes them all). Below, one photo is ticked as if a person had gone over
it, and the model is trained again on the first labels plus that photo (a copy of a val photo here,
so this second run shows the mechanics, not a gain).""",
    """from labeling.check import check_labels
from labeling.pack import pack_dataset

report = check_labels([batch], classes)
print(report.problems[-1] if report.unreviewed else "nothing left to review")
for done in made[:1]:
    marked = json.loads(done.read_text())
    marked["flags"]["reviewed"] = True         # what the tick in labelme does
    done.write_text(json.dumps(marked))
roots = [WORK / "photos", WORK / "next-batch" / "photos"]
again = pack_dataset(roots, WORK / "data-2", classes, val_fraction=0.2, seed=0, progress=False)
print(again["splits"]["train"]["images"], "train photos;", again["unreviewed_left_out"], "pre-filled photos left out (not reviewed)")
cfg2 = TrainConfig(data=str(WORK / "data-2"), out=str(WORK / "run-2"), data_shape=300,
                   max_minutes=MINUTES / 2, patience=0)
shutil.rmtree(WORK / "run-2", ignore_errors=True)
print(train(cfg2, progress=False))""",
]

SHIFT = [
    """md:# 3. Covariate shift: the test scene is not your scene

The judges test on photos of *another* scene: other tanks, other light, another camera. The
objects are the same (the labels mean the same), but the photos look different: that is
*covariate shift*. A detector scored only on its own scene's val photos looks better than it is.

The sample has a single scene, so here the test scene is **simulated**: the validation photos as
another camera would see them (a blue-green cast, darker, blurred, cropped differently). It is a
stand-in for the real thing, which usually costs more.""",
    SETUP,
    PREPARE,
    SCENES_AND_RUN + """
folders = {"train": scenes / "train-photos", "val": scenes / "val", "other": scenes / "other-camera"}
if not (WORK / "export" / "model-symbol.json").is_file():
    demo.export_step(WORK / "run", WORK)
print({k: len(list(v.glob("*.jpg"))) for k, v in folders.items()}, "photos")""",
    """md:Side by side: a validation photo and the same photo as the simulated second camera sees it.""",
    """from PIL import Image as PILImage
name = sorted(folders["val"].glob("*.jpg"))[0].name
pair = [PILImage.open(folders[k] / name) for k in ("val", "other")]
h = 300
row = PILImage.new("RGB", (sum(int(p.width * h / p.height) for p in pair) + 10, h), "white")
x = 0
for p in pair:
    p = p.resize((int(p.width * h / p.height), h)); row.paste(p, (x, 0)); x += p.width + 10
row.save(WORK / "side-by-side.jpg"); display(Image(filename=str(WORK / "side-by-side.jpg")))""",
    """md:## The gap

`run_eval` is `hack eval export --data val --shift other-camera`: the same detector scored on both
sets, with 95% bootstrap intervals over the photos, the **gap** (in-scene − shifted) and the
**retention** (shifted ÷ in-scene). With a dozen photos a side the intervals are wide: a real test
set has a few hundred photos.""",
    """from hackathon.evaluate.evaluation import evaluate
from hackathon.evaluate.report import terminal_summary, write_report

ev = evaluate(folders["val"], export=WORK / "export", shift=folders["other"], n_boot=200, progress=False)
write_report(ev, WORK / "eval")
result = ev.result
print(terminal_summary(result))""",
    """md:**Read the intervals before the numbers.** After a minute or two of training both scores
are small and their intervals overlap: the gap can even come out negative, which says "too few
photos and too weak a detector to tell", not "the other camera is easier". The demo's 4-minute
detector kept 71% of its score (VOC07 0.068 in-scene, 0.048 on the simulated scene), and even
that gap's interval includes 0 with 12 photos a side. The organizers' few hundred test photos,
and a detector trained all evening, make the gap measurable.

The worst and best photos, truth in white, detections in colour:""",
    """display(Image(filename=str(WORK / "eval" / "examples.png"), width=900))""",
    """md:## How far is the other scene? `hack shift`

Before any training you can already measure how different the test scene looks: describe every
photo by the pretrained backbone's features, then train a small classifier to tell *your*
photos from the *test* photos. If it cannot (ROC-AUC near 0.5), the scenes look alike to the
network; near 1.0, every photo's scene is obvious. The same classifier gives each of your
photos a weight: how much it resembles the test scene.""",
    """from hackathon.evaluate.shift import measure_shift
from hackathon.evaluate.shift_report import write_report

shift = measure_shift(folders["train"], folders["other"], WORK / "shift-report", permutations=99, progress=False)
write_report(shift, WORK / "shift-report")
print(shift.verdict())
display(Markdown((WORK / "shift-report" / "shift.md").read_text()[:1500]))""",
    """display(Image(filename=str(WORK / "shift-report" / "roc.png"), width=420))
display(Image(filename=str(WORK / "shift-report" / "most-like-test.png"), width=900))""",
    """md:**What to shoot more of.** The contact sheet shows your photos that look most like the test
scene: shoot more like those (their light, distance, background), fewer like
`least-like-test.png`. The *effective sample size* says how many of your photos the test scene
effectively gets: 100 photos with ESS 16% count as 16. Augmentation (`hack train` varies colour,
light and zoom) narrows the gap a little; photos of the test conditions narrow it most.

## Closing the gap without labels: `hack adapt`

Organizers often show a few dozen photos of the test scene. *Unlabelled*, they still help: every
BatchNorm layer of the detector normalizes with statistics measured on your photos, and `hack
adapt` measures them again on the test scene's (AdaBN, Li et al. 2016). Nothing else changes, and
the result is a normal export. Use only photos the organizers allow, and never their labels.

Here the "sample of the test scene" is the simulated camera's view of your *training* photos: other
photos than the ones scored below, of the same (simulated) scene, with no labels.""",
    """from hackathon.evaluate.adapt import adapt

sample = demo.other_camera_photos(folders["train"], WORK / "test-scene-sample")
adapted = adapt(WORK / "export", sample, WORK / "export-adapted", progress=False)
print(adapted.summary())
after = evaluate(folders["val"], export=WORK / "export-adapted", shift=folders["other"], n_boot=200,
                 progress=False).result
num = lambda v: "n/a" if v is None else f"{v:.3f}"  # retention is n/a when the in-scene score is 0
for name, r in (("before", result), ("after hack adapt", after)):
    print(f"{name:<17} in-scene {num(r['in_scene']['voc07_map50'])}  shifted {num(r['shift']['voc07_map50'])} "
          f"{r['shift']['ci95']['voc07_map50']}  retention {num(r['retention']['voc07_map50'])}")""",
    """md:The adapted export is meant for the test scene: its in-scene score may drop, since its
statistics are now the other scene's. With a short training and a dozen photos the intervals
overlap; bench/RESULTS.md ("adapt") has the figures of a 30-minute detector. `hack shift --model
export-adapted` compares the scenes as the adapted network sees them.

## Your turn

- `hack shift photos/tank-a organizers/sample --out shift-report` with the organizers' sample photos.
- `hack eval export --data data/val.rec --shift photos/tank-b --out report` (`data/val.rec`: the
  photos `hack pack` held out; `photos/tank-b`: a second scene you shot and labeled yourself and did
  not pack for training), then open `report/report.html`.
- `hack adapt export --photos organizers/sample --out export-adapted`, then score both exports.""",
]

JUDGING = [
    """md:# 4. Judging: scoring submissions, reading the leaderboard

At the end of the evening each team hands in one folder (or `.zip`): either its predictions file
(`hack predict` on the test photos) or its exported model, which the scorer runs itself in a
separate process with a time limit (team code is never run, nothing is unpickled).
`score_submissions` is `hack score`. Here three teams are judged on the simulated scene of
notebook 3: the model trained in notebook 2, a baseline that draws one box in the middle of every
photo, and a team whose file is broken.""",
    SETUP,
    PREPARE,
    SCENES_AND_RUN + """
if not (WORK / "export" / "model-symbol.json").is_file():
    demo.export_step(WORK / "run", WORK)""",
    """import json, shutil
from hackathon.deploy.predictions import write_predictions
from hackathon.evaluate.truth import read_truth

test = scenes / "other-camera"
inbox = WORK / "inbox"
shutil.rmtree(inbox, ignore_errors=True)
# team 1: the exported model itself
shutil.copytree(WORK / "export", inbox / "reef-raiders")
# team 2: a predictions file: one box in the middle of every photo
truth = read_truth(test)
(inbox / "baseline").mkdir()
write_predictions(demo.baseline_rows(truth), inbox / "baseline" / "predictions.json")
# team 3: a file with a box of no width: refused with a message, the others are still scored
(inbox / "late-night").mkdir()
bad = [{"image": truth.images[0], "label": classes[0], "score": 0.9, "bbox": [10, 10, 10, 50]}]
(inbox / "late-night" / "predictions.json").write_text(json.dumps(bad))
print(sorted(p.name for p in inbox.iterdir()))""",
    """from hackathon.judge.score import score_submissions

shutil.rmtree(WORK / "board", ignore_errors=True)
result = score_submissions(test, inbox, WORK / "board", in_scene=scenes / "val", n_boot=200)
display(Markdown((WORK / "board" / "leaderboard.md").read_text()))""",
    """md:## Reading the leaderboard

- **score**: VOC07 mAP@0.5 on the hidden test photos (the original event's metric), with its
  95% bootstrap interval: the photos resampled 200 times (1,000 by default). Ties are broken by
  COCO AP, then by the earlier submission.
- **≈** marks a *statistical tie* with the team above: on the same resamples for both teams, the
  interval of their difference contains 0. With a small test set, neighbours are often tied: a
  reason to look closer, not to change the ranking.
- **in-scene, gap, retention**: the same team on the scene it trained in (`--in-scene`); the gap
  is what the change of scene cost it. A team with a high in-scene score and a low retention
  learned its own tank, not the objects.
- **invalid** rows carry a message the team can act on; they never stop the judging.""",
    """import csv
rows = list(csv.DictReader(open(WORK / "board" / "leaderboard.csv")))
for r in rows:
    print(f"{r['rank'] or '-':>2} {r['team']:<13} {r['status']:<8} score {r['score'] or '-':<7} "
          f"[{r['score_lo']}, {r['score_hi']}] in-scene {r['in_scene'] or '-'} {r['message'][:60]}")""",
    """md:Scoring the same files again is free: the history (`board/leaderboard.db`, SQLite) knows
each submission by the hash of its files, and recomputes nothing. On the projector:
`hack leaderboard serve --db board/leaderboard.db` serves a page that updates itself when a new
`hack score` lands.""",
    """again = score_submissions(test, inbox, WORK / "board", in_scene=scenes / "val", n_boot=200)
print("new scoring run:", again["new_run"], "- teams:", [r["team"] for r in again["board"]["rows"]])""",
    """md:## Your turn

- `hack predict export test-photos/ --out preds` writes `preds/predictions.json`: the file a team
  hands in. Open `preds/images/` to see the detections drawn.
- Add a fourth team that copies `baseline` but sets every score to 0.9: does the ranking move?""",
]

NOTEBOOKS = {"01-photos-and-labels.ipynb": PHOTOS_AND_LABELS, "02-fine-tuning-an-ssd.ipynb": FINE_TUNING,
             "03-covariate-shift.ipynb": SHIFT, "04-judging.ipynb": JUDGING}

if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        nbformat.write(nb(cells), str(HERE / name))
        print("wrote", HERE / name)

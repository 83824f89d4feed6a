"""hack train against GluonCV's reference SSD pipeline: speed (images/s) and accuracy (same budget).

speed: the kit's loop (its augmentation and numpy SSD targets in hack train's data workers, frozen stem
       by default) against the loop of GluonCV's fine-tuning tutorial / train_ssd.py
       (RecordFileDetection, SSDDefaultTrainTransform in DataLoader workers, split_and_load, static
       hybridize, trainer.step(1)) and against the model-only ceiling (forward + backward + update
       on one batch already in memory), on the same data, model, input size, batch and cores.
       The three alternate for --rounds rounds; each round times --steps steps after 2 warm-up steps.
       All in one process, so with the same OpenMP threads (the kit's, or OMP_NUM_THREADS if set).
accuracy: each recipe trains within the same CPU budget (process CPU seconds, so other load on
       the machine does not eat into one side only) on a seeded 160/40 split of
       ../shared/data/aquarium-scene-a; validation VOC07 mAP@0.5 of each.

    python bench/bench_train.py speed [--data-shape 300 --batch-size 8 --rounds 3 --steps 6]
    python bench/bench_train.py accuracy [--cpu-minutes 30]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Before any mxnet import: the kit's thread settings (OMP_NUM_THREADS from the usable cores, unless
# set) for every pipeline here, the model-only ceiling included, and for the _recipe children.
import hackathon  # noqa: E402
SHARED = ROOT.parent / "shared" / "data" / "aquarium-scene-a"
WORK = ROOT / "bench" / "work" / "train"


def packed_data():
    from labeling.pack import pack_dataset
    from labeling.workspace import read_classes

    out = WORK / "data"
    if not (out / "manifest.json").exists():
        if not SHARED.is_dir():
            sys.exit(f"needs {SHARED}")
        pack_dataset([SHARED], out, read_classes(SHARED / "labels.txt"), val_fraction=0.2, seed=0, progress=False)
    return out


def cpu_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def reference_loader(net, rec, shape, batch, workers):
    """GluonCV's tutorial/train_ssd.py data pipeline, as written there."""
    import mxnet as mx
    from gluoncv.data import RecordFileDetection
    from gluoncv.data.batchify import Stack, Tuple
    from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

    with mx.autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, shape, shape)))
    anchors = anchors.as_in_context(mx.cpu())
    ds = RecordFileDetection(str(rec))
    return mx.gluon.data.DataLoader(ds.transform(SSDDefaultTrainTransform(shape, shape, anchors)), batch, True,
                                    batchify_fn=Tuple(Stack(), Stack(), Stack()), last_batch="rollover",
                                    num_workers=workers)


def kit_loader(net, data, shape, batch, workers, seed=0):
    import mxnet as mx

    from hackathon.train.augment import SceneShiftAugment
    from hackathon.train.data import DataDir, DetectionRecords, EpochBatches, TrainSamples, train_loader

    d = DataDir(data)
    with mx.autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, shape, shape)))
    rec = DetectionRecords(d.rec("train"), len(d.classes), decode_side=shape)
    batches = EpochBatches(len(rec), batch, seed=seed)
    return train_loader(TrainSamples(rec, SceneShiftAugment(shape), anchors.as_in_context(mx.cpu()), seed),
                        batches, workers), batches


def make_net(classes, shape, freeze_blocks):
    from hackathon.train.models import build_ssd
    from hackathon.train.loop import freeze

    net = build_ssd(classes, data_shape=shape)
    freeze(net, freeze_blocks)
    return net


def step_fn(net, lr, optimizer="sgd"):
    import mxnet as mx
    from gluoncv.loss import SSDMultiBoxLoss

    opt = {"learning_rate": lr, "wd": 5e-4, **({"momentum": 0.9} if optimizer == "sgd" else {})}
    trainer = mx.gluon.Trainer(net.collect_params(), optimizer, opt)
    loss_fn = SSDMultiBoxLoss()
    net.hybridize(static_alloc=True, static_shape=True)

    def step(x, ct, bt):
        # as split_and_load does in both loops: DataLoader workers hand batches over in shared memory
        x, ct, bt = (a.as_in_context(mx.cpu()) for a in (x, ct, bt))
        with mx.autograd.record():
            cp, bp, _ = net(x)
            total, cls_l, box_l = loss_fn(cp, bp, ct, bt)
            mx.autograd.backward(total)
        trainer.step(1)
        return float(sum(l.mean().asscalar() for l in cls_l))
    return step


def timed(batches, step, steps, batch):
    it = iter(batches)
    for _ in range(2):
        step(*next(it))
    t0 = time.time()
    for _ in range(steps):
        step(*next(it))
    return steps * batch / (time.time() - t0)


def forever(loader, batches=None):
    epoch = 0
    while True:
        if batches is not None:
            batches.set_epoch(epoch)
        yield from loader
        epoch += 1


def speed(args):
    from labeling.workspace import read_classes

    data = packed_data()
    classes = read_classes(data / "classes.txt")
    shape, batch = args.data_shape, args.batch_size
    results = {"kit": [], "reference": [], "ceiling": [], "kit_unfrozen": [], "ceiling_unfrozen": []}
    for r in range(args.rounds):
        net = make_net(classes, shape, args.freeze_blocks)
        loader, batches = kit_loader(net, data, shape, batch, args.kit_workers)
        results["kit"].append(timed(forever(loader, batches), step_fn(net, 0.001, "adam"), args.steps, batch))
        first = next(iter(loader))
        results["ceiling"].append(timed(iter(lambda: first, None), step_fn(net, 0.001, "adam"), args.steps, batch))
        del loader
        net = make_net(classes, shape, 0)
        ref = reference_loader(net, data / "train.rec", shape, batch, args.ref_workers)
        results["reference"].append(timed(forever(ref), step_fn(net, 0.001), args.steps, batch))
        del ref
        loader, batches = kit_loader(net, data, shape, batch, args.kit_workers)
        results["kit_unfrozen"].append(timed(forever(loader, batches), step_fn(net, 0.001, "adam"), args.steps, batch))
        first = next(iter(loader))
        results["ceiling_unfrozen"].append(timed(iter(lambda: first, None), step_fn(net, 0.001, "adam"), args.steps, batch))
        del loader
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} img/s" for k, v in results.items()), flush=True)
    med = {k: float(np.median(v)) for k, v in results.items()}
    print(json.dumps({"data_shape": shape, "batch": batch, "rounds": args.rounds, "steps": args.steps,
                      "threads": hackathon.cpu_settings(args.kit_workers), "median_img_per_s": med}, indent=1))
    print(f"kit / ceiling (frozen stem): {med['kit'] / med['ceiling']:.3f}")
    print(f"kit_unfrozen / ceiling_unfrozen: {med['kit_unfrozen'] / med['ceiling_unfrozen']:.3f}")
    print(f"reference / ceiling_unfrozen: {med['reference'] / med['ceiling_unfrozen']:.3f}")
    print(f"RATIO train_kit_unfrozen_vs_reference {med['kit_unfrozen'] / med['reference']:.3f}")
    print(f"RATIO train_vs_reference {med['kit'] / med['reference']:.3f}")


def accuracy(args):
    """Both recipes within the same CPU budget; prints their validation VOC07 mAP@0.5."""
    import subprocess

    packed_data()
    budget = args.cpu_minutes * 60
    out = {}
    for name in args.recipes.split(","):
        cmd = [sys.executable, __file__, "_recipe", name, "--cpu-minutes", str(args.cpu_minutes)]
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = [l for l in res.stdout.splitlines() if l.startswith("{")]
        if res.returncode or not line:
            sys.exit(f"{name} failed:\n{res.stderr[-3000:]}")
        out[name] = json.loads(line[-1])
        out[name]["wall_s"] = round(time.time() - t0, 1)
        print(name, out[name], flush=True)
    print(json.dumps({"cpu_budget_s": budget, "results": out}, indent=1))
    print(f"RATIO accuracy_points_ahead {100 * (out['kit']['val_map50'] - out['tutorial']['val_map50']):.1f}")


def recipe(args):
    """One recipe in this process, stopping at the CPU budget, then validating."""
    import mxnet as mx
    from labeling.workspace import read_classes

    from hackathon.train.data import DataDir, DetectionRecords, ValSamples, val_loader
    from hackathon.train.loop import TrainConfig, validate

    data = packed_data()
    classes = read_classes(data / "classes.txt")
    budget = args.cpu_minutes * 60
    start = cpu_seconds()
    if args.name == "kit":
        run = WORK / "run-kit"
        if run.exists():
            import shutil
            shutil.rmtree(run)
        # The default recipe; the budget as CPU time is turned into wall minutes on an idle 2-core machine.
        # workers=0: samples are made in this process, so its CPU clock counts them (as the tutorial's).
        cfg = TrainConfig(data=str(data), out=str(run), epochs=args.kit_epochs, patience=0, workers=0)
        summary = _train_cpu_budget(cfg, budget, start)
        print(json.dumps({"val_map50": summary["best_map50"], "epochs": summary["epochs_done"],
                          "cpu_s": round(cpu_seconds() - start, 1)}))
        return
    # GluonCV's fine-tuning tutorial recipe on the same backbone weights: 512, batch 16, SGD 0.001.
    shape, batch = 512, 16
    net = make_net(classes, shape, 0)
    ref = reference_loader(net, data / "train.rec", shape, batch, 0)
    step = step_fn(net, 0.001)
    epochs = 0
    while cpu_seconds() - start < budget:
        net.hybridize(static_alloc=True, static_shape=True)
        for batch_data in ref:
            step(*batch_data)
            if cpu_seconds() - start >= budget:
                break
        epochs += 1
    d = DataDir(data)
    vl = val_loader(ValSamples(DetectionRecords(d.rec("val"), len(classes)), shape), 8, 0)
    print(json.dumps({"val_map50": validate(net, vl, [mx.cpu()], classes), "epochs": epochs,
                      "cpu_s": round(cpu_seconds() - start, 1)}))


def _train_cpu_budget(cfg, budget, start):
    """Train the kit's recipe until this process has used `budget` CPU seconds: the loop's own time
    budget (max_minutes, checked every step) is fed the process CPU clock instead of the wall clock."""
    import types

    import hackathon.train.loop as t

    t.time = types.SimpleNamespace(time=lambda: cpu_seconds() - start)
    cfg.max_minutes = budget / 60
    return t.train(cfg, progress=False)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--data-shape", type=int, default=300)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--steps", type=int, default=6)
    s.add_argument("--freeze-blocks", type=int, default=3)
    s.add_argument("--kit-workers", type=int, default=None, help="default: the kit's (hack train's) for these cores")
    s.add_argument("--ref-workers", type=int, default=2)
    a = sub.add_parser("accuracy")
    a.add_argument("--cpu-minutes", type=float, default=30)
    a.add_argument("--recipes", default="kit,tutorial")
    r = sub.add_parser("_recipe")
    r.add_argument("name")
    r.add_argument("--cpu-minutes", type=float, default=30)
    r.add_argument("--kit-epochs", type=int, default=40)
    args = p.parse_args()
    {"speed": speed, "accuracy": accuracy, "_recipe": recipe}[args.cmd](args)


if __name__ == "__main__":
    main()

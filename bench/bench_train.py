"""hack train against GluonCV's reference SSD pipeline: speed (images/s) and accuracy (same budget).

speed: the kit's loop (its augmentation and numpy SSD targets in hack train's data workers, frozen stem
       by default) against the loop of GluonCV's fine-tuning tutorial / train_ssd.py
       (RecordFileDetection, SSDDefaultTrainTransform in DataLoader workers, split_and_load, static
       hybridize, trainer.step(1)) and against the model-only ceiling (forward + backward + update
       on one batch already in memory), on the same data, model, input size, batch and cores.
       The three alternate for --rounds rounds; each round times --steps steps after 2 warm-up steps.
       All in one process, so with the same OpenMP threads (the kit's, or OMP_NUM_THREADS if set).
accuracy: each recipe gets the same wall-clock budget, one after the other (run it on a quiet
       machine): the kit's README command (`hack pack` defaults, `hack train data --out run
       --max-minutes M`, `hack export`) against GluonCV's fine-tuning tutorial recipe, both on the
       160 training photos of a seeded 160/40 split of ../shared/data/aquarium-scene-a. Each export
       is scored by `hack eval`'s code on the 40 held-out photos and on those photos as the kit's
       simulated other camera sees them (the shift proxy), VOC07 mAP@0.5 with 95% bootstrap
       intervals; RATIO lines: kit / tutorial in each. Then the README's step 8b on the shift proxy
       (`hack adapt` on unlabelled photos of the test scene), cross-fitted: adapted on one half of
       the proxy's photos, scored on the other, both halves' detections scored as one set
       (`accuracy_shift_kit_evening_vs_tutorial`: the adapted kit against the tutorial as it is;
       the tutorial's export adapted the same way is printed beside it).

    python bench/bench_train.py speed [--data-shape 300 --batch-size 8 --rounds 3 --steps 6]
    python bench/bench_train.py accuracy [--minutes 30 --seed 0]
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
import hackathon.core.cores  # noqa: E402  (the kit's threads before mxnet loads)
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


def make_net(classes, shape, freeze_blocks, first_stride=8):
    """The kit's SSD (first_stride 8, its default); 16 is GluonCV's layout (ssd_512_mobilenet1.0's maps)."""
    from hackathon.train.models import build_ssd
    from hackathon.train.loop import freeze

    net = build_ssd(classes, data_shape=shape, first_stride=first_stride)
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
                      "threads": hackathon.core.cores.cpu_settings(args.kit_workers), "median_img_per_s": med}, indent=1))
    print(f"kit / ceiling (frozen stem): {med['kit'] / med['ceiling']:.3f}")
    print(f"kit_unfrozen / ceiling_unfrozen: {med['kit_unfrozen'] / med['ceiling_unfrozen']:.3f}")
    print(f"reference / ceiling_unfrozen: {med['reference'] / med['ceiling_unfrozen']:.3f}")
    print(f"RATIO train_kit_unfrozen_vs_reference {med['kit_unfrozen'] / med['reference']:.3f}")
    print(f"RATIO train_vs_reference {med['kit'] / med['reference']:.3f}")


def accuracy(args):
    """Both recipes on the same wall-clock budget, one after the other; each export scored on the
    held-out photos of scene A and on the simulated other camera, with bootstrap intervals."""
    import subprocess

    from hackathon.evaluate.evaluation import evaluate
    from hackathon.evaluate.report import write_report

    acc = WORK / "accuracy"
    split = accuracy_split(acc, args.seed)
    hack = [sys.executable, "-m", "hackathon.cli"]
    subprocess.run(hack + ["pack", str(split["train"]), "--out", str(acc / "data"), "--labels",
                          str(split["train"] / "classes.txt")], check=True,
                   capture_output=True, cwd=ROOT)
    results = {}
    for name in args.recipes.split(","):
        export = acc / f"export-{name}"
        t0 = time.time()
        if name == "kit":  # the README's evening command, as a team types it
            run = acc / "run-kit"
            cmd = hack + ["train", str(acc / "data"), "--out", str(run), "--max-minutes", f"{args.minutes:g}"]
            if run.exists():
                import shutil
                shutil.rmtree(run)
        else:
            cmd = [sys.executable, __file__, "_tutorial", "--minutes", f"{args.minutes:g}", "--data",
                   str(acc / "data"), "--out", str(export)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        wall = time.time() - t0  # training, validation and saving: the budget holds all of it
        if name == "kit":
            subprocess.run(hack + ["export", str(run), "--out", str(export)], check=True, capture_output=True, cwd=ROOT)
        ev = evaluate(split["heldout"], export=export, shift=split["proxy"], n_boot=args.bootstrap, progress=False,
                      echo=lambda m: None)
        write_report(ev, acc / f"eval-{name}")
        result = ev.result
        results[name] = {"wall_s": round(wall, 1), "stdout_tail": proc.stdout.strip().splitlines()[-1:],
                         "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t0))}
        for key in ("in_scene", "shift"):
            results[name][key] = result[key]["voc07_map50"]
            results[name][key + "_ci95"] = result[key]["ci95"]["voc07_map50"]
        if args.adapt:
            try:
                results[name].update(adapted_shift(export, split["proxy"], acc / f"adapt-{name}", args.bootstrap))
            except subprocess.CalledProcessError as e:  # reported, and the other recipe still runs
                print(f"{name}: hack adapt failed: {e.stderr.strip()[-500:]}", flush=True)
        print(name, json.dumps(results[name]), flush=True)
    # A recipe not run now keeps its last result (`--recipes tutorial` after a kit-only run, on the
    # same split and machine): said on the RATIO lines' first line, with when each was measured.
    try:
        earlier = json.loads((acc / "results.json").read_text())
    except (OSError, ValueError):
        earlier = {}
    reused = {k: v for k, v in earlier.items() if k not in results and args.seed == v.get("seed", 0)}
    for name, r in results.items():
        r["seed"] = args.seed
    results = {**reused, **results}
    if reused:
        print("from an earlier invocation of this benchmark: " + ", ".join(
            f"{k} (measured {v.get('measured', '?')})" for k, v in reused.items()))
    print(f"{'recipe':<10} {'wall min':>8}  {'held-out scene A (VOC07 mAP@0.5, 95% CI)':<42} {'simulated other camera':<30}"
          f"{'  + hack adapt (cross-fitted halves)' if args.adapt else ''}")
    for name, r in results.items():
        ci = lambda k: f"{r[k]:.3f} [{r[k + '_ci95'][0]:.3f}, {r[k + '_ci95'][1]:.3f}]"
        extra = f"  {ci('shift_adapted')} (adapt {r['adapt_wall_s']:.0f} s)" if "shift_adapted" in r else ""
        print(f"{name:<10} {r['wall_s'] / 60:>8.1f}  {ci('in_scene'):<42} {ci('shift'):<30}{extra}")
    (acc / "results.json").write_text(json.dumps(results, indent=1))
    if {"kit", "tutorial"} <= set(results):
        k, t = results["kit"], results["tutorial"]
        div = lambda a, b: a / b if b > 0 else float("inf")
        print(f"RATIO accuracy_in_scene_kit_vs_tutorial {div(k['in_scene'], t['in_scene']):.2f}")
        print(f"RATIO accuracy_shift_kit_vs_tutorial {div(k['shift'], t['shift']):.2f}")
        if "shift_adapted" in k:  # the README's evening: the test scene gets the export `hack adapt` wrote
            print(f"RATIO accuracy_shift_kit_evening_vs_tutorial {div(k['shift_adapted'], t['shift']):.2f}")
        if "shift_adapted" in k and "shift_adapted" in t:
            print(f"RATIO accuracy_shift_adapted_kit_vs_adapted_tutorial {div(k['shift_adapted'], t['shift_adapted']):.2f}")


def adapted_shift(export, proxy, work, n_boot):
    """The README's step 8b on the shift proxy, cross-fitted so that no photo is scored by a model
    adapted on it: the proxy's photos in two seeded halves; `hack adapt EXPORT --photos HALF` on each
    half's photos alone (no labels), that export predicts the other half; the two halves'
    detections are scored together, as one 40-photo set, with the same bootstrap as the unadapted
    figure."""
    import shutil
    import subprocess

    from hackathon.deploy.predict import load_detector
    from hackathon.deploy.predictions import write_predictions
    from hackathon.evaluate.evaluation import _detect_all, evaluate
    from hackathon.evaluate.truth import read_truth

    from bench_adapt import halves

    shutil.rmtree(work, ignore_errors=True)
    parts = halves(proxy, work=work)  # [(labelled, photos)] per half, seeded as bench_adapt's folds
    rows, wall = [], []
    for k in range(2):
        out = work / f"export-adapted-half{k}"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "hackathon.cli", "adapt", str(export), "--photos",
                        str(parts[k][1]), "--out", str(out)],
                       check=True, capture_output=True, text=True, cwd=ROOT)
        wall.append(time.time() - t0)
        other = read_truth(parts[1 - k][0])
        rows += _detect_all(load_detector(out), other, progress=False)
    preds = write_predictions(rows, work / "shift-predictions.json")
    full = read_truth(proxy)
    in_scene_rows = _detect_all(load_detector(export), read_truth(proxy.parent / "heldout"), progress=False)
    plain = write_predictions(in_scene_rows, work / "in-scene-predictions.json")
    ev = evaluate(proxy.parent / "heldout", predictions=plain, shift=proxy, shift_predictions=preds,
                  classes=full.classes, n_boot=n_boot, progress=False, echo=lambda m: None)
    shift = ev.result["shift"]
    return {"shift_adapted": shift["voc07_map50"], "shift_adapted_ci95": shift["ci95"]["voc07_map50"],
            "adapt_wall_s": round(max(wall), 1)}


def accuracy_split(acc, seed=0, heldout=40):
    """A seeded split of ../shared/data/aquarium-scene-a: `heldout` photos (with their labels) kept
    out of training, the rest to train on, and the held-out photos as the kit's simulated other
    camera sees them (hackathon.demo.other_camera: colour cast, darker, blurred, reframed, JPEG 60)."""
    import shutil

    from hackathon.demo import other_camera

    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED}")
    folders = {k: acc / f"split-{seed}" / k for k in ("train", "heldout", "proxy")}
    if all(f.is_dir() for f in folders.values()):
        return folders
    shutil.rmtree(acc / f"split-{seed}", ignore_errors=True)
    photos = sorted(p for p in SHARED.glob("*.jpg") if p.with_suffix(".json").is_file())
    order = np.random.RandomState(seed).permutation(len(photos))
    for k, idx in (("heldout", order[:heldout]), ("train", order[heldout:])):
        folders[k].mkdir(parents=True)
        for i in idx:
            for src in (photos[i], photos[i].with_suffix(".json")):
                shutil.copy2(src, folders[k] / src.name)
        shutil.copy2(SHARED / "labels.txt", folders[k] / "classes.txt")
    other_camera(folders["heldout"], folders["proxy"])
    shutil.copy2(SHARED / "labels.txt", folders["proxy"] / "classes.txt")
    return folders


def tutorial(args):
    """GluonCV's fine-tuning tutorial recipe on the same ImageNet MobileNetV2: SSD-512, SGD 1e-3
    momentum 0.9 wd 5e-4, SSDDefaultTrainTransform, batch 8, static hybridize; epochs until the
    wall-clock budget (from this process's start, export included) would run out; then exported as
    `hack export` writes an export, so the same scorer runs it."""
    import mxnet as mx

    from hackathon.core.constants import IMAGENET_MEAN, IMAGENET_STD
    from hackathon.deploy.export import NMS_THRESH, NMS_TOPK, POST_NMS
    from labeling.workspace import read_classes

    start, budget = time.time(), args.minutes * 60
    data = Path(args.data)
    classes = read_classes(data / "classes.txt")
    shape, batch = 512, 8
    net = make_net(classes, shape, 0, first_stride=16)  # the tutorial's SSD-512 maps: 32, 16, 8, 4, 2, 1
    ref = reference_loader(net, data / "train.rec", shape, batch, 2)
    step = step_fn(net, 0.001)
    epochs, epoch_s, spare = 0, 0.0, 60.0  # spare: the export at the end
    while time.time() - start + epoch_s + spare < budget:
        t0 = time.time()
        net.hybridize(static_alloc=True, static_shape=True)
        for batch_data in ref:
            step(*batch_data)
        epochs += 1
        epoch_s = time.time() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net.set_nms(nms_thresh=NMS_THRESH, nms_topk=NMS_TOPK, post_nms=POST_NMS)
    net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros((1, 3, shape, shape)))
    net.export(str(out / "model"), 0)
    (out / "classes.txt").write_text("".join(c + "\n" for c in classes))
    (out / "export.json").write_text(json.dumps({"kit_export": 1, "data_shape": [shape, shape], "mean": list(IMAGENET_MEAN),
                                                 "std": list(IMAGENET_STD), "classes": classes}))
    print(json.dumps({"epochs": epochs, "wall_s": round(time.time() - start, 1)}))


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
    a.add_argument("--minutes", type=float, default=30, help="wall-clock budget of each recipe")
    a.add_argument("--recipes", default="kit,tutorial")
    a.add_argument("--seed", type=int, default=0, help="the held-out split")
    a.add_argument("--bootstrap", type=int, default=1000)
    a.add_argument("--no-adapt", dest="adapt", action="store_false",
                   help="skip step 8b (hack adapt on the shift proxy's photos, cross-fitted halves)")
    r = sub.add_parser("_tutorial")
    r.add_argument("--minutes", type=float, default=30)
    r.add_argument("--data", required=True)
    r.add_argument("--out", required=True)
    args = p.parse_args()
    {"speed": speed, "accuracy": accuracy, "_tutorial": tutorial}[args.cmd](args)


if __name__ == "__main__":
    main()

"""`hack adapt` (AdaBN) against the same export unadapted, on a scene it has not seen (issue 16).

Inputs: an export (default: the kit's 30-minute export of `bench_train.py accuracy`, trained on
160 photos of ../shared/data/aquarium-scene-a) and that benchmark's split: the 40 held-out scene-A
photos and the same photos as the kit's simulated other camera sees them (`hackathon.demo.
other_camera`: tinted, darker, blurred, reframed, JPEG 60), with their labels.

1. The simulated scene, two folds: its 40 photos split in seeded halves; adapt on one half's
   photos (copied without their labels), score on the other half, and the other way round. For
   each setting of --keep and --layers: VOC07 mAP@0.5 on the held-out half, adapted and
   unadapted, the paired-bootstrap interval of their ratio (the same resampled photos for both),
   and the in-scene figure (the 40 held-out scene-A photos) beside it, with the gap and retention.
2. How many photos the statistics need: the default setting adapted on the first n photos of a
   half, scored on the other.
3. The real other aquarium, without labels: `hack shift`'s AUC and ESS of the training photos
   against ../shared/data/aquarium-scene-b-sample, with features from the export's backbone
   before and after adapting on those 40 photos.

    python bench/bench_adapt.py [--export EXPORT] [--split bench/work/train/accuracy/split-0] [--self-train-minutes 3]

With --self-train-minutes M (default 3; 0 skips it) the default AdaBN setting is also run with
self-training, from the export's run folder (--run, default run-kit beside the export).

Prints `RATIO adapt_shift_map_vs_unadapted X` (default setting, both folds pooled) last.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import hackathon.core.cores  # noqa: E402,F401  (the kit's threads before mxnet loads)

ACC = ROOT / "bench" / "work" / "train" / "accuracy"
WORK = ROOT / "bench" / "work" / "adapt"
SCENE_B = ROOT.parent / "shared" / "data" / "aquarium-scene-b-sample"
SETTINGS = [(0.0, "all"), (0.5, "all"), (0.9, "all"), (0.0, "backbone"), (0.0, "10"), (0.0, "30")]


def halves(proxy, seed=0, work=WORK):
    """Two labelled halves of the simulated scene, and each half's photos alone (no JSON), in `work`."""
    docs = sorted(proxy.glob("*.json"))
    order = np.random.RandomState(seed).permutation(len(docs))
    parts = [[docs[i] for i in order[: len(docs) // 2]], [docs[i] for i in order[len(docs) // 2:]]]
    out = []
    for k, part in enumerate(parts):
        labelled, photos = work / f"half{k}" / "labelled", work / f"half{k}" / "photos"
        for d in (labelled, photos):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        for j in part:
            image = proxy / json.loads(j.read_text())["imagePath"]
            shutil.copyfile(j, labelled / j.name)
            shutil.copyfile(image, labelled / image.name)
            shutil.copyfile(image, photos / image.name)
        for name in ("classes.txt", "labels.txt"):  # the class list beside the labels
            if (proxy / name).is_file():
                shutil.copyfile(proxy / name, labelled / name)
        out.append((labelled, photos))
    return out


def score(export, heldout, target, n_boot):
    from hackathon.evaluate.evaluation import evaluate

    return evaluate(heldout, export=export, shift=target, n_boot=n_boot, progress=False, echo=lambda m: None)


def ratio_ci(ev_adapted, ev_plain, n_boot, seed=0):
    """Paired bootstrap of shift mAP adapted / unadapted: the same resampled photos for both."""
    from hackathon.evaluate.metrics import bootstrap_weights, percentile_interval

    a, p = ev_adapted.sets[1].matches, ev_plain.sets[1].matches
    w = bootstrap_weights(len(a.truth.images), n=n_boot, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a.score_many("voc07_map50", w) / p.score_many("voc07_map50", w)
    return percentile_interval(r[np.isfinite(r)])


def gap_ret(r):
    """The gap (in-scene - shift) and the retention (shift / in-scene), each with its 95% interval."""
    def one(key, digits):
        v, ci = r[key]["voc07_map50"], r[f"{key}_ci95"]["voc07_map50"]
        num = lambda x: "n/a" if x is None else f"{x:.{digits}f}"
        return f"{key} {num(v)} [{num(ci[0]) if ci else 'n/a'}, {num(ci[1]) if ci else 'n/a'}]"

    return f"{one('gap', 3)}, {one('retention', 2)}"


def fmt(r, key):
    lo, hi = r[key]["ci95"]["voc07_map50"]
    return f"{r[key]['voc07_map50']:.3f} [{lo:.3f}, {hi:.3f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, default=ACC / "export-kit")
    ap.add_argument("--split", type=Path, default=ACC / "split-0")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--self-train-minutes", type=float, default=3.0, help="0: AdaBN settings only")
    ap.add_argument("--run", type=Path, help="the export's run folder (default: run-kit beside the export)")
    args = ap.parse_args()
    from hackathon.evaluate import adapt as adapt_mod
    from hackathon.evaluate.adapt import DEFAULT_KEEP, DEFAULT_LAYERS, adapt

    for need in (args.export / "model-symbol.json", args.split / "heldout", args.split / "proxy"):
        if not need.exists():
            sys.exit(f"needs {need} (run `python bench/bench_train.py accuracy --minutes 30` first, or give "
                     "--export/--split)")
    WORK.mkdir(parents=True, exist_ok=True)
    heldout = args.split / "heldout"
    parts = halves(args.split / "proxy")
    print(f"export {args.export}; simulated scene: {sum(len(list(p.glob('*.jpg'))) for _, p in parts)} photos in two "
          f"halves; in-scene: {len(list(heldout.glob('*.json')))} held-out scene-A photos", flush=True)
    plain = [score(args.export, heldout, parts[1 - k][0], args.bootstrap) for k in range(2)]
    rows = []
    print(f"{'setting':<20} {'fold':>4}  {'shift mAP adapted':<24} {'unadapted':<24} {'ratio [95% CI]':<22} "
          f"{'in-scene adapted':<24} gap and retention (95% CI)")
    for keep, layers in SETTINGS:
        for k in range(2):  # adapt on half k, score on the other half
            out = WORK / f"export-keep{keep:g}-{layers}-half{k}"
            shutil.rmtree(out, ignore_errors=True)
            adapt(args.export, parts[k][1], out, keep=keep, layers=layers, progress=False)
            ev = score(out, heldout, parts[1 - k][0], args.bootstrap)
            r, p = ev.result, plain[k].result
            ratio = r["shift"]["voc07_map50"] / p["shift"]["voc07_map50"]
            lo, hi = ratio_ci(ev, plain[k], args.bootstrap)
            rows.append({"keep": keep, "layers": layers, "fold": k, "shift": r["shift"]["voc07_map50"],
                         "shift_unadapted": p["shift"]["voc07_map50"], "ratio": ratio, "ratio_ci95": [lo, hi],
                         "in_scene": r["in_scene"]["voc07_map50"], "in_scene_unadapted": p["in_scene"]["voc07_map50"],
                         "retention": r["retention"]["voc07_map50"], "retention_ci95": r["retention_ci95"]["voc07_map50"],
                         "gap": r["gap"]["voc07_map50"], "gap_ci95": r["gap_ci95"]["voc07_map50"]})
            print(f"{f'keep {keep:g}, {layers}':<20} {k:>4}  {fmt(r, 'shift'):<24} {fmt(p, 'shift'):<24} "
                  f"{f'{ratio:.2f} [{lo:.2f}, {hi:.2f}]':<22} {fmt(r, 'in_scene'):<24} {gap_ret(r)}", flush=True)
    if args.self_train_minutes:
        run = args.export.parent / "run-kit" if args.run is None else args.run
        for k in range(2):
            out = WORK / f"export-selftrain-half{k}"
            shutil.rmtree(out, ignore_errors=True)
            res = adapt(run, parts[k][1], out, keep=DEFAULT_KEEP, layers=DEFAULT_LAYERS,
                        self_train_minutes=args.self_train_minutes, progress=False)
            ev = score(out, heldout, parts[1 - k][0], args.bootstrap)
            r, p = ev.result, plain[k].result
            ratio = r["shift"]["voc07_map50"] / p["shift"]["voc07_map50"]
            lo, hi = ratio_ci(ev, plain[k], args.bootstrap)
            rows.append({"keep": DEFAULT_KEEP, "layers": DEFAULT_LAYERS, "self_train": res.self_train, "fold": k,
                         "shift": r["shift"]["voc07_map50"], "shift_unadapted": p["shift"]["voc07_map50"],
                         "ratio": ratio, "ratio_ci95": [lo, hi], "in_scene": r["in_scene"]["voc07_map50"],
                         "retention": r["retention"]["voc07_map50"]})
            name = f"+ self-train {args.self_train_minutes:g} min"
            print(f"{name:<20} {k:>4}  {fmt(r, 'shift'):<24} {fmt(p, 'shift'):<24} "
                  f"{f'{ratio:.2f} [{lo:.2f}, {hi:.2f}]':<22} {fmt(r, 'in_scene'):<24} "
                  f"{gap_ret(r)}  ({res.self_train['pseudo_boxes']} pseudo-boxes on "
                  f"{res.self_train['photos_with_pseudo_labels']} photos, {res.self_train['epochs']} epochs)", flush=True)
    for k in range(2):
        p = plain[k].result
        print(f"unadapted, fold {k}: shift {fmt(p, 'shift')}, in-scene {fmt(p, 'in_scene')}, {gap_ret(p)}")

    print("\nphotos needed (default setting, adapted on the first n photos of half 0, scored on half 1; "
          f"the kit's floor MIN_PHOTOS={adapt_mod.MIN_PHOTOS} lifted here to see below it):")
    floor, adapt_mod.MIN_PHOTOS = adapt_mod.MIN_PHOTOS, 1
    photos0 = sorted(parts[0][1].glob("*.jpg"))
    for n in (2, 4, 8, 12, len(photos0)):
        sub = WORK / f"first{n}"
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir()
        for p in photos0[:n]:
            shutil.copyfile(p, sub / p.name)
        out = WORK / f"export-first{n}"
        shutil.rmtree(out, ignore_errors=True)
        adapt(args.export, sub, out, keep=DEFAULT_KEEP, layers=DEFAULT_LAYERS, progress=False)
        r = score(out, heldout, parts[1][0], args.bootstrap).result
        print(f"  n={n:>2}: shift {fmt(r, 'shift')} (unadapted {plain[0].result['shift']['voc07_map50']:.3f})", flush=True)
    adapt_mod.MIN_PHOTOS = floor

    if SCENE_B.is_dir():
        from hackathon.evaluate.shift import measure_shift

        out = WORK / "export-scene-b"
        shutil.rmtree(out, ignore_errors=True)
        adapt(args.export, SCENE_B, out, progress=False)
        print("\nthe other aquarium (40 unlabelled sample photos), hack shift of the training photos against them:")
        for name, model in (("before", args.export), ("after", out)):
            res = measure_shift(args.split / "train", SCENE_B, WORK / f"shift-{name}", permutations=200,
                                progress=False, model=model)
            print(f"  {name:<6} AUC {res.auc:.3f}, ESS {res.ess:.1f} of {res.n_train} ({res.ess_fraction:.0%}), "
                  f"KID {res.kid:.4f}")
    default = [r for r in rows if r["keep"] == DEFAULT_KEEP and r["layers"] == DEFAULT_LAYERS and not r.get("self_train")]
    (WORK / "results.json").write_text(json.dumps(rows, indent=1))
    pooled = sum(r["shift"] for r in default) / sum(r["shift_unadapted"] for r in default)
    print(f"RATIO adapt_shift_map_vs_unadapted {pooled:.2f}")


if __name__ == "__main__":
    main()

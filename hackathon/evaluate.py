"""`hack eval`: a detector scored on a labeled set, and the gap to a second scene when one is given.

What it reports, per set: the four metrics of hackathon/evaluate/metrics.py overall and per class, each
with a 95% bootstrap interval over the set's images (percentile method, `n_boot` resamples of the
images with replacement; an image drawn k times counts k times, truth and detections). With a shift
set: the **gap** (in-scene minus shift) and the **retention** (shift / in-scene). The two sets are
different images, so there is no image-level pairing: each resample draws the in-scene images and the
shift images independently (a two-sample bootstrap) and the gap's interval is the spread of the
resampled differences. The detector is the same in both, so its randomness is not resampled.
(`metrics.bootstrap_weights` rows applied to two detectors on the *same* set give the paired
bootstrap the judges' scorer uses to compare teams.)

Also: a per-class drop table, recall by box size relative to the photo (``sqrt(box area / photo
area)``: small < 0.1, medium < 0.3, large >= 0.3 -- a phone photo's objects are large, COCO's pixel
buckets would put nearly all of them in "large"), and per image at the operating threshold (default
0.3): true/false positives and misses under VOC matching, F1, and the best and worst images drawn.

Writes REPORT/metrics.json, report.md, report.html (self-contained: images inlined, text escaped),
pr_curves.png and examples.png.
"""
import base64
import html
import io
import warnings
from pathlib import Path

import numpy as np

from hackathon.evaluate.metrics import METRICS, bootstrap_weights, match
from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic, write_json_atomic, write_text_atomic

SIZE_BUCKETS = (("small", 0.0, 0.1), ("medium", 0.1, 0.3), ("large", 0.3, np.inf))
NAMES = {"voc07_map50": "VOC07 mAP@0.5", "voc_map50": "VOC mAP@0.5", "coco_map": "COCO AP@[.5:.95]",
         "coco_map50": "COCO AP50"}
SET_KEYS = ("in_scene", "shift")


class Scored:
    """One set: its truth, its predictions matched, and what the report says about them."""

    def __init__(self, key, truth, predictions):
        self.key, self.truth, self.predictions = key, truth, predictions
        self.matches = match(truth, predictions)
        self.summary = self.matches.summary()


def run_eval(data, out, export=None, predictions=None, shift=None, shift_predictions=None, classes=None,
             n_boot=1000, seed=0, threshold=0.3, progress=True, echo=print):
    """Score (export | predictions) on `data` and, with `shift`, on the shift set; write the report to `out`."""
    from hackathon.deploy.predictions import Predictions, read_predictions
    from hackathon.evaluate.truth import read_truth

    if (export is None) == (predictions is None):
        raise KitError("give an EXPORT folder or --predictions FILE (one of the two). Fix: e.g. "
                       "`hack eval export --data test` or `hack eval --predictions p.json --data test`.")
    if export is not None and shift_predictions is not None:
        raise KitError("--shift-predictions goes with --predictions; with an EXPORT the shift set is predicted here. "
                       "Fix: drop --shift-predictions.")
    if predictions is not None and (shift is None) != (shift_predictions is None):
        raise KitError("with --predictions, --shift SET needs --shift-predictions FILE (the detections on that set), "
                       "and the other way round. Fix: give both or neither.")
    detector = None
    if export is not None:
        from hackathon.deploy.predict import load_detector

        detector = load_detector(export)
    sets = []
    for key, path, pred_file in (("in_scene", data, predictions), ("shift", shift, shift_predictions)):
        if path is None:
            continue
        truth = read_truth(path, classes)
        extra = [c for c in detector.classes if c not in truth.classes] if detector else []
        if extra:  # they have no truth: left out of every mean, and said so
            echo(f"warning: the model's class(es) {', '.join(extra)} are not in the class list of {truth.source} "
                 f"({', '.join(truth.classes)}); their detections are not scored. Fix: train with the event's classes.")
            truth.classes = truth.classes + extra
        classes = truth.classes
        if truth.unlabeled:
            echo(f"warning: {len(truth.unlabeled)} photo(s) in {truth.source} have no labelme file and are not "
                 f"scored (e.g. {truth.unlabeled[0]}). Fix: label them, with no shapes if nothing is on them.")
        if detector is not None:
            preds = Predictions.from_rows(_detect_all(detector, truth, progress), truth, source=display(export))
        else:
            preds = read_predictions(pred_file, truth)
        sets.append(Scored(key, truth, preds))
    result = build_result(sets, n_boot, seed, threshold)
    result["sources"] = {s.key: {"truth": s.truth.source, "predictions": s.predictions.source} for s in sets}
    write_report(sets, result, Path(out), threshold)
    return result


def _detect_all(detector, truth, progress):
    from tqdm import tqdm

    rows = []
    for name in tqdm(truth.images, desc=f"detect {Path(truth.source).name}", unit="img", disable=not progress):
        rows += [{"image": name, **r} for r in detector.detect(truth.open_image(name), threshold=0.01)]
    return rows


# ---- the numbers ----

def build_result(sets, n_boot=1000, seed=0, threshold=0.3):
    """metrics.json's content: per set the summary, intervals, size buckets and per-image counts;
    gap and retention with intervals when there are two sets."""
    result, boot = {}, {}
    for k, s in enumerate(sets):
        w = bootstrap_weights(len(s.truth.images), n=n_boot, seed=seed + k)
        boot[s.key] = {m: s.matches.per_class_many(m, w) for m in METRICS}  # (B, classes)
        entry = dict(s.summary)
        entry["n_images"], entry["n_boxes"] = len(s.truth.images), int(s.matches.n_pos.sum())
        entry["ci95"] = {m: _ci(_nanmean_rows(boot[s.key][m])) for m in METRICS}
        for c, name in enumerate(s.truth.classes):
            entry["per_class"][name]["ci95"] = {m: _ci(boot[s.key][m][:, c]) for m in METRICS}
        entry["size_buckets"] = size_buckets(s, threshold)
        entry["images"] = per_image(s, threshold)
        result[s.key] = entry
    if len(sets) == 2:
        a, b = (result[k] for k in SET_KEYS)
        ba, bb = (boot[k] for k in SET_KEYS)
        result["gap"] = {m: _sub(a[m], b[m]) for m in METRICS}
        result["retention"] = {m: _div(b[m], a[m]) for m in METRICS}
        result["gap_ci95"] = {m: _ci(_nanmean_rows(ba[m]) - _nanmean_rows(bb[m])) for m in METRICS}
        with np.errstate(divide="ignore", invalid="ignore"):
            result["retention_ci95"] = {m: _ci(_nanmean_rows(bb[m]) / _nanmean_rows(ba[m])) for m in METRICS}
        result["per_class_drop"] = {
            name: {m: {"in_scene": a["per_class"][name][m], "shift": b["per_class"][name][m],
                       "drop": _sub(a["per_class"][name][m], b["per_class"][name][m]),
                       "drop_ci95": _ci(ba[m][:, c] - bb[m][:, c])} for m in METRICS}
            for c, name in enumerate(sets[0].truth.classes)}
    result["bootstrap"] = {"resamples": n_boot, "seed": seed, "interval": "95% percentile, images resampled "
                           "with replacement; the two sets independently (different images)"}
    result["threshold"] = threshold
    return result


def _nanmean_rows(a):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample may hold no truth at all: NaN, dropped by _ci
        return np.nanmean(a, axis=1)


def _ci(values):
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [float(lo), float(hi)]


def _sub(a, b):
    return None if a is None or b is None else a - b


def _div(a, b):
    return None if a is None or b is None or b == 0 else a / b


def _bucket_of(boxes, size):
    w, h = size
    rel = np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None) / (w * h))
    return np.searchsorted([b[2] for b in SIZE_BUCKETS[:-1]], rel, side="right")


def size_buckets(s, threshold):
    """Per bucket: truth boxes, recall at IoU 0.5 (any score / score >= threshold), false positives >= threshold."""
    m, t = s.matches, s.truth
    sizes = np.array([t.sizes[n] for n in t.images], dtype=np.float64).reshape(-1, 2)
    g_b = _bucket_of(m.gt_box, sizes[m.gt_image].T) if len(m.gt_box) else np.zeros(0, int)
    d_b = _bucket_of(m.det_box, sizes[m.det_image].T) if len(m.det_box) else np.zeros(0, int)
    found = m.gt_found >= 0
    found_thr = found & (m.det_score[np.maximum(m.gt_found, 0)] >= threshold) if len(found) else found
    out = {}
    for k, (name, lo, hi) in enumerate(SIZE_BUCKETS):
        g = (g_b == k) & ~m.gt_difficult
        n = int(g.sum())
        out[name] = {"range": [lo, None if np.isinf(hi) else hi], "n_truth": n,
                     "recall50": float(found[g].mean()) if n else None,
                     "recall50_at_threshold": float(found_thr[g].mean()) if n else None,
                     "false_positives_at_threshold": int(((d_b == k) & (m.voc == 0) & (m.det_score >= threshold)).sum())}
    return out


def per_image(s, threshold):
    """[{image, tp, fp, fn, f1}] at the threshold under VOC matching, worst first."""
    m, t = s.matches, s.truth
    above = m.det_score >= threshold
    n = len(t.images)
    tp = np.bincount(m.det_image[above & (m.voc == 1)], minlength=n)
    fp = np.bincount(m.det_image[above & (m.voc == 0)], minlength=n)
    fn = m.n_pos.sum(1).astype(int) - tp
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
    order = np.lexsort((np.array(t.images), -(fp + fn), f1))  # worst first; ties: more errors, then name
    return [{"image": t.images[i], "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i]), "f1": float(f1[i])} for i in order]


# ---- the report ----

def write_report(sets, result, out, threshold):
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", result)
    pr_png = plot_pr_curves(sets)
    ex_png = example_sheet(sets, result, threshold)
    write_bytes_atomic(out / "pr_curves.png", pr_png)
    write_bytes_atomic(out / "examples.png", ex_png)
    blocks = report_blocks(sets, result, threshold)
    write_text_atomic(out / "report.md", render_md(blocks))
    write_text_atomic(out / "report.html", render_html(blocks, {"pr_curves.png": pr_png, "examples.png": ex_png}))


def _fmt(v, ci=None):
    if v is None:
        return "n/a"
    num = lambda x: f"{x:.3f}".replace("-0.000", "0.000")
    return num(v) + (f" [{num(ci[0])}, {num(ci[1])}]" if ci else "")


def report_blocks(sets, result, threshold):
    """The report as (kind, payload) blocks, rendered to Markdown and HTML alike."""
    b = [("h1", "Evaluation report")]
    src = result["sources"]
    b.append(("p", "; ".join(f"{k}: truth {v['truth']}, predictions {v['predictions']}" for k, v in src.items())))
    head = ["metric"] + [f"{k} ({result[k]['n_images']} images, {result[k]['n_boxes']} boxes)" for k in src]
    rows = [[NAMES[m]] + [_fmt(result[k][m], result[k]["ci95"][m]) for k in src] for m in METRICS]
    if "gap" in result:
        head += ["gap (in - shift)", "retention (shift / in)"]
        for r, m in zip(rows, METRICS):
            r += [_fmt(result["gap"][m], result["gap_ci95"][m]), _fmt(result["retention"][m], result["retention_ci95"][m])]
    b += [("h2", "Metrics (95% bootstrap interval)"), ("table", (head, rows)),
          ("p", f"Intervals: {result['bootstrap']['resamples']} resamples of the images ({result['bootstrap']['interval']}). "
                "Means over the classes that have truth; hackathon/evaluate/metrics.py defines each metric.")]
    b += [("h2", "Per class")]
    classes = sets[0].truth.classes
    for m in ("voc07_map50", "coco_map"):
        head = ["class"] + [f"{k} n" for k in src] + [f"{k} {NAMES[m]}" for k in src]
        rows = [[c] + [str(result[k]["per_class"][c]["n_truth"]) for k in src]
                + [_fmt(result[k]["per_class"][c][m], result[k]["per_class"][c]["ci95"][m]) for k in src]
                for c in classes]
        if "per_class_drop" in result:
            head.append("drop")
            for r, c in zip(rows, classes):
                d = result["per_class_drop"][c][m]
                r.append(_fmt(d["drop"], d["drop_ci95"]))
            drops = [result["per_class_drop"][c][m]["drop"] for c in classes]
            order = sorted(range(len(rows)), key=lambda i: (drops[i] is None, -(drops[i] or 0)))  # biggest drop first
            rows = [rows[i] for i in order]
        b.append(("table", (head, rows)))
    b += [("h2", "Box size relative to the photo"),
          ("p", "sqrt(box area / photo area): small < 0.1, medium 0.1-0.3, large >= 0.3. Recall at IoU 0.5 (VOC "
                f"matching) over all detections and over those scoring >= {threshold}; false positives >= {threshold}.")]
    head = ["set", "bucket", "truth boxes", "recall@0.5", f"recall@0.5, score >= {threshold}", "false positives"]
    rows = [[k, name, str(v["n_truth"]), _fmt(v["recall50"]), _fmt(v["recall50_at_threshold"]),
             str(v["false_positives_at_threshold"])] for k in src for name, v in result[k]["size_buckets"].items()]
    b.append(("table", (head, rows)))
    b += [("h2", f"Best and worst images (score >= {threshold})")]
    for k in src:
        imgs = result[k]["images"]
        ranks = list(range(min(5, len(imgs)))) + [j for j in range(max(5, len(imgs) - 3), len(imgs))]
        rows = [[f"{j + 1} of {len(imgs)}", imgs[j]["image"], str(imgs[j]["tp"]), str(imgs[j]["fp"]),
                 str(imgs[j]["fn"]), f"{imgs[j]['f1']:.2f}"] for j in ranks]
        b.append(("table", ([f"{k}: rank (1 = worst)", "image", "found", "false", "missed", "F1"], rows)))
    b += [("h2", "Precision/recall (VOC matching)"), ("img", "pr_curves.png"),
          ("h2", "Examples: truth in white, detections in colour"), ("img", "examples.png")]
    return b


def render_md(blocks):
    lines = []
    for kind, x in blocks:
        if kind == "h1":
            lines += [f"# {x}", ""]
        elif kind == "h2":
            lines += [f"## {x}", ""]
        elif kind == "p":
            lines += [x, ""]
        elif kind == "img":
            lines += [f"![{x}]({x})", ""]
        elif kind == "table":
            head, rows = x
            cell = lambda v: str(v).replace("|", "\\|")
            lines += ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows] + [""]
    return "\n".join(lines)


def render_html(blocks, images):
    e = html.escape
    body = []
    for kind, x in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{e(x)}</{kind}>")
        elif kind == "img":
            data = base64.b64encode(images[x]).decode("ascii")
            body.append(f'<img alt="{e(x)}" src="data:image/png;base64,{data}">')
        elif kind == "table":
            head, rows = x
            body.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>" for r in rows)
                        + "</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Evaluation report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def plot_pr_curves(sets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sets[0].truth.classes
    cols = min(4, len(classes))
    rows = int(np.ceil(len(classes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for c, ax in enumerate(axes.flat):
        if c >= len(classes):
            ax.axis("off")
            continue
        for s, style in zip(sets, ("-", "--")):
            rec, prec = s.matches.pr_curve(c)
            ap = s.summary["per_class"][classes[c]]["voc_map50"]
            label = f"{s.key} AP {ap:.2f}" if ap is not None else f"{s.key} (no truth)"
            if not len(rec):
                label += ", no detections"
            ax.plot(rec, prec, style, label=label, drawstyle="steps-post")
        ax.set(title=classes[c], xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def example_sheet(sets, result, threshold, tile=320, n_worst=3, n_best=2):
    """One column per set: its worst then best images, truth in white, detections >= threshold in colour."""
    from PIL import Image, ImageDraw, ImageFont

    from hackathon.deploy.predict import draw

    font = ImageFont.load_default()
    columns = []
    for s in sets:
        by_image = {}
        for r in s.predictions.rows():
            by_image.setdefault(r["image"], []).append(r)
        imgs = result[s.key]["images"]
        picked = imgs[:n_worst] + [i for i in imgs[::-1][:n_best] if i not in imgs[:n_worst]]
        tiles = []
        for info in picked:
            name = info["image"]
            try:
                im = s.truth.open_image(name)
            except KitError:
                im = Image.new("RGB", s.truth.sizes[name], (60, 60, 60))
            rows = by_image.get(name, [])
            scale = tile / max(im.size)
            shown = draw(im, rows, s.truth.classes, threshold, max_side=tile)
            d = ImageDraw.Draw(shown)
            for bx in s.truth.boxes[name]:
                d.rectangle([v * min(scale, 1.0) for v in bx], outline=(255, 255, 255), width=1)
            canvas = Image.new("RGB", (tile, shown.height + 18), (24, 24, 24))
            canvas.paste(shown, (0, 14))
            ImageDraw.Draw(canvas).text((2, 1), f"{s.key}: {name[-34:]} F1 {info['f1']:.2f} "
                                        f"({info['tp']}/{info['fp']}/{info['fn']})", fill=(255, 255, 255), font=font)
            tiles.append(canvas)
        columns.append(tiles)
    n_rows = max(1, max(len(t) for t in columns))
    heights = [max([c[i].height for c in columns if i < len(c)], default=1) for i in range(n_rows)]
    tops = np.concatenate(([0], np.cumsum(heights)))
    sheet = Image.new("RGB", (tile * len(columns) + 4 * (len(columns) - 1), int(tops[-1])), (24, 24, 24))
    for j, tiles in enumerate(columns):
        for i, t in enumerate(tiles):
            sheet.paste(t, (j * (tile + 4), int(tops[i])))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def terminal_summary(result) -> str:
    keys = [k for k in SET_KEYS if k in result]
    lines = [f"{'metric':<18}" + "".join(f"{k:>24}" for k in keys) + (f"{'gap':>24}{'retention':>12}" if "gap" in result else "")]
    for m in METRICS:
        line = f"{NAMES[m]:<18}" + "".join(f"{_fmt(result[k][m], result[k]['ci95'][m]):>24}" for k in keys)
        if "gap" in result:
            line += f"{_fmt(result['gap'][m], result['gap_ci95'][m]):>24}{_fmt(result['retention'][m]):>12}"
        lines.append(line)
    return "\n".join(lines)

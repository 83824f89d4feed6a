"""`hack eval`'s report: an Evaluation (hackathon.evaluate.evaluation) as files a person reads.

REPORT/metrics.json (every figure), report.md and report.html (self-contained: images inlined, text
escaped), pr_curves.png and examples.png (the worst and best photos drawn); and the terminal summary.
"""
import base64
import html
import io
from pathlib import Path

import numpy as np

from hackathon.core.fileutil import write_bytes_atomic, write_json_atomic, write_text_atomic
from hackathon.core.errors import KitError
from hackathon.evaluate.evaluation import SET_KEYS, example_threshold
from hackathon.evaluate.metrics import METRIC_NAMES as NAMES, METRICS

def write_report(evaluation, out):
    """Every report file of `evaluation` into the folder `out`, each written atomically."""
    sets, result, threshold = evaluation.sets, evaluation.result, evaluation.threshold
    out = Path(out)
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
          *[("p", f"{k}: {result[k]['dropped_note']}") for k in src if result[k].get("dropped_note")],
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
    b += [("h2", "Do the scores mean something? (reliability)"),
          ("p", "Per score bin: the detections in it, their mean score, and how many of them are right (VOC "
                "matching, IoU 0.5). Well calibrated: the last two columns agree, so a box drawn at score 0.3 is "
                "right about 30% of the time. ECE: their weighted mean difference (0 is perfect).")]
    head = ["set", "score", "detections", "mean score", "right (precision)"]
    rows = [[k, f"{v['range'][0]:.1f}-{v['range'][1]:.1f}", str(v["n"]), _fmt(v["mean_score"]), _fmt(v["precision"])]
            for k in src for v in result[k]["reliability"]["bins"] if v["n"]]
    b.append(("table", (head, rows)))
    b.append(("p", "; ".join(f"{k}: ECE {_fmt(result[k]['reliability']['ece'])} over "
                             f"{result[k]['reliability']['n_detections']} detections" for k in src)))
    b += [("h2", f"Best and worst images (score >= {threshold})")]
    for k in src:
        imgs = result[k]["images"]
        ranks = list(range(min(5, len(imgs)))) + [j for j in range(max(5, len(imgs) - 3), len(imgs))]
        rows = [[f"{j + 1} of {len(imgs)}", imgs[j]["image"], str(imgs[j]["tp"]), str(imgs[j]["fp"]),
                 str(imgs[j]["fn"]), f"{imgs[j]['f1']:.2f}"] for j in ranks]
        b.append(("table", ([f"{k}: rank (1 = worst)", "image", "found", "false", "missed", "F1"], rows)))
    b += [("h2", "Precision/recall (VOC matching)"), ("img", "pr_curves.png"),
          ("h2", "Examples: truth in white, detections in colour")]
    b += [("p", f"{s.key}: no detection scores >= {threshold}; drawn are those >= {example_threshold(s, threshold):g}.")
          for s in sets if example_threshold(s, threshold) != threshold]
    b.append(("img", "examples.png"))
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
    from PIL import Image, ImageDraw

    from hackathon.deploy.predict import draw
    from labeling.show import fit_text, label_font

    font = label_font()
    columns = []
    for s in sets:
        by_image = {}
        for r in s.predictions.rows():
            by_image.setdefault(r["image"], []).append(r)
        imgs = result[s.key]["images"]
        picked = imgs[:n_worst] + [i for i in imgs[::-1][:n_best] if i not in imgs[:n_worst]]
        drawn_from = example_threshold(s, threshold)
        tiles = []
        for info in picked:
            name = info["image"]
            try:
                im = s.truth.open_image(name)
            except KitError:
                im = Image.new("RGB", s.truth.sizes[name], (60, 60, 60))
            rows = by_image.get(name, [])
            scale = tile / max(im.size)
            shown = draw(im, rows, s.truth.classes, drawn_from, max_side=tile)
            d = ImageDraw.Draw(shown)
            for bx in s.truth.boxes[name]:
                d.rectangle([v * min(scale, 1.0) for v in bx], outline=(255, 255, 255), width=1)
            canvas = Image.new("RGB", (tile, shown.height + 18), (24, 24, 24))
            canvas.paste(shown, (0, 14))
            d = ImageDraw.Draw(canvas)
            tail = f" F1 {info['f1']:.2f} ({info['tp']}/{info['fp']}/{info['fn']})"
            room = tile - 4 - d.textlength(f"{s.key}: {tail}", font=font)
            d.text((2, 1), f"{s.key}: {fit_text(d, name, font, room)}{tail}", fill=(255, 255, 255), font=font)
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

"""The board as files: leaderboard.csv, leaderboard.md and a self-contained leaderboard.html.

Team names and messages come from the teams, so every format escapes them its own way: CSV cells
that a spreadsheet would run as a formula (= + - @ tab CR) get a leading quote, Markdown gets a
backslash before its markup and pipes, HTML goes through html.escape (the chart is inline SVG,
built the same way). Each file is written atomically.

Example
-------
>>> paths = write_board(board, Path("out"))     # board from leaderboard.board()
"""
import csv
import datetime as dt
import html
import io
from pathlib import Path

from hackathon.core.fileutil import write_text_atomic

METRIC_NAMES = {"voc07_map50": "VOC07 mAP@0.5", "voc_map50": "VOC mAP@0.5 (area)",
                "coco_map": "COCO AP@[.5:.95]", "coco_map50": "COCO AP50"}
CSV_COLUMNS = ("rank", "team", "status", "score", "score_lo", "score_hi", "tie_with_above", "coco_map",
               "in_scene", "gap", "retention", "kind", "sha256", "message")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MD_SPECIAL = "\\`*_[]<>|~&!#"


def write_board(board, out):
    """Write leaderboard.csv, .md and .html into ``out``; return their paths."""
    out = Path(out)
    paths = {"csv": out / "leaderboard.csv", "md": out / "leaderboard.md", "html": out / "leaderboard.html"}
    write_text_atomic(paths["csv"], to_csv(board))
    write_text_atomic(paths["md"], to_markdown(board))
    write_text_atomic(paths["html"], to_html(board))
    return paths


def has_shift(board):
    return any(r.get("in_scene") is not None for r in board["rows"])


def fmt(x, digits=4):
    return "" if x is None else f"{x:.{digits}f}"


def csv_text(value):
    """A cell as text a spreadsheet shows and never evaluates."""
    value = "" if value is None else str(value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def to_csv(board):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in board["rows"]:
        # Numbers are ours (fmt) and stay numbers; every text cell goes through csv_text.
        w.writerow(["" if r["rank"] is None else r["rank"], csv_text(r["team"]), csv_text(r["status"]),
                    fmt(r["score"]), fmt(r["lo"]), fmt(r["hi"]), "yes" if r["tie_above"] else "", fmt(r["coco"]),
                    fmt(r["in_scene"]), fmt(r["gap"]), fmt(r["retention"]), csv_text(r.get("kind")),
                    csv_text(r.get("sha256")), csv_text(r["message"])])
    return buf.getvalue()


def md_text(value):
    """Text that Markdown shows as typed: markup and pipes escaped, one line."""
    value = "" if value is None else " ".join(str(value).split())
    return "".join("\\" + c if c in MD_SPECIAL else c for c in value)


def _title(board):
    run = board["run"] or {}
    metric = METRIC_NAMES.get(run.get("metric"), run.get("metric", ""))
    when = dt.datetime.fromtimestamp(run.get("last_scored_at") or 0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return metric, when


def to_markdown(board):
    metric, when = _title(board)
    run = board["run"] or {}
    shift = has_shift(board)
    head = ["rank", "team", metric, "95% interval", "COCO AP"] + (["in-scene", "gap", "retention"] if shift else [])
    lines = [f"# Leaderboard: {md_text(metric)}", "",
             f"{run.get('n_images', 0)} test images, scored {when}; ≈ marks a statistical tie with the team "
             "above (paired bootstrap, 95%).", "",
             "| " + " | ".join(md_text(h) for h in head + ["status", "message"]) + " |",
             "|" + "|".join("---" for _ in head + ["status", "message"]) + "|"]
    for r in board["rows"]:
        rank = "" if r["rank"] is None else f"{r['rank']}{' ≈' if r['tie_above'] else ''}"
        cells = [rank, md_text(r["team"]), fmt(r["score"]),
                 f"{fmt(r['lo'])} – {fmt(r['hi'])}" if r["lo"] is not None else "", fmt(r["coco"])]
        if shift:
            cells += [fmt(r["in_scene"]), fmt(r["gap"]), fmt(r["retention"], 3)]
        lines.append("| " + " | ".join(cells + [md_text(r["status"]), md_text(r["message"])]) + " |")
    return "\n".join(lines) + "\n"


def esc(value):
    return html.escape("" if value is None else str(value), quote=True)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}td.t,th.t{text-align:left}
tr.invalid td{color:#999}.tie{color:#b60;font-weight:bold}.msg{max-width:40em;text-align:left;white-space:pre-line;font-size:.85em}
td.t{white-space:normal;min-width:6em;max-width:20em;overflow-wrap:break-word}"""


def to_html(board):
    metric, when = _title(board)
    run = board["run"] or {}
    shift = has_shift(board)
    head = ["rank", "team", esc(metric), "95% interval", "COCO AP"]
    head += ["in-scene", "gap", "retention"] if shift else []
    rows = []
    for r in board["rows"]:
        tie = ' <span class="tie" title="statistical tie with the team above">≈</span>' if r["tie_above"] else ""
        cells = [f"{'' if r['rank'] is None else r['rank']}{tie}", f'<td class="t">{esc(r["team"])}</td>',
                 fmt(r["score"]), f"{fmt(r['lo'])} – {fmt(r['hi'])}" if r["lo"] is not None else "", fmt(r["coco"])]
        if shift:
            cells += [fmt(r["in_scene"]), fmt(r["gap"]), fmt(r["retention"], 3)]
        cells += [esc(r["status"]), f'<td class="msg">{esc(r["message"])}</td>']
        tds = "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells)
        rows.append(f'<tr class="{"ok" if r["status"] == "ok" else "invalid"}">{tds}</tr>')
    header = "".join(f'<th class="t">{h}</th>' if h in ("team", "message") else f"<th>{h}</th>"
                     for h in head + ["status", "message"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Leaderboard</title><style>{CSS}</style></head><body>
<h1>Leaderboard: {esc(metric)}</h1>
<p>{esc(run.get('n_images', 0))} test images ({esc(run.get('truth', ''))}), scored {esc(when)}.
Intervals: 95% bootstrap over test images ({esc(run.get('n_boot', 0))} resamples); ≈ marks a statistical
tie with the team above (paired bootstrap: the 95% interval of the difference contains 0).
{'Gap = in-scene − test score; retention = test ÷ in-scene.' if shift else ''}</p>
<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>
<h2>Chart</h2>{chart_svg(board)}
<h2>Per-class AP ({esc(metric)})</h2>{per_class_table(board)}
</body></html>
"""


def per_class_table(board):
    run = board["run"] or {}
    classes, metric = run.get("classes", []), run.get("metric")
    head = "".join(f"<th>{esc(c)}</th>" for c in classes)
    body = []
    for r in board["rows"]:
        if r["status"] != "ok":
            continue
        per = (r.get("summary") or {}).get("per_class", {})
        cells = "".join(f"<td>{fmt((per.get(c) or {}).get(metric), 3)}</td>" for c in classes)
        body.append(f'<tr><td>{r["rank"]}</td><td class="t">{esc(r["team"])}</td>{cells}</tr>')
    return f'<table><thead><tr><th>rank</th><th class="t">team</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def chart_svg(board, width=720, bar=22):
    """Horizontal bars of the primary score with the 95% interval as a whisker, inline SVG."""
    scored = [r for r in board["rows"] if r["status"] == "ok"]
    if not scored:
        return "<p>No team scored yet.</p>"
    label_w, pad = 220, 10
    plot_w = width - label_w - 2 * pad
    top = max([1.0] + [r["hi"] or 0 for r in scored])
    x = lambda v: label_w + plot_w * max(0.0, v or 0.0) / top  # noqa: E731
    parts = []
    for i, r in enumerate(scored):
        y = pad + i * (bar + 6)
        name = r["team"] if len(r["team"]) <= 28 else r["team"][:27] + "…"
        label = f"{r['rank']}. {name}"
        parts.append(f'<text x="{label_w - 6}" y="{y + bar * 0.7:.1f}" text-anchor="end" font-size="13">'
                     f'{esc(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{x(r["score"]) - label_w:.1f}" height="{bar}" '
                     f'fill="{"#d98c3a" if r["tie_above"] or r["tie_below"] else "#4a7ab5"}"/>')
        if r["lo"] is not None:
            ym = y + bar / 2
            parts.append(f'<path d="M{x(r["lo"]):.1f} {ym}H{x(r["hi"]):.1f}M{x(r["lo"]):.1f} {ym - 6}V{ym + 6}'
                         f'M{x(r["hi"]):.1f} {ym - 6}V{ym + 6}" stroke="#222" stroke-width="1.5" fill="none"/>')
        right = x(r["hi"] if r["hi"] is not None else r["score"])
        parts.append(f'<text x="{right + 5:.1f}" y="{y + bar * 0.7:.1f}" font-size="11">{fmt(r["score"], 3)}</text>')
    height = pad * 2 + len(scored) * (bar + 6)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="scores with 95% intervals">{"".join(parts)}</svg>')

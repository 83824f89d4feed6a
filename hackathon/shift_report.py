"""The report ``hack shift`` writes: shift.json, shift.md, two contact sheets and a ROC curve PNG.

All files are written atomically into the report folder; :func:`write_report` is the entry point
(:func:`hackathon.evaluate.shift.measure_shift` calls it with its :class:`~hackathon.evaluate.shift.ShiftResult`).
"""
import io
from pathlib import Path

import numpy as np

from hackathon.evaluate.shift import LEAST_LIKE, MOST_LIKE, ROC_PNG, roc_curve
from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic, write_json_atomic, write_text_atomic

SHEET_SIZE, THUMB, COLUMNS = 16, 200, 4  # photos a contact sheet, tile pixels, tiles a row


def write_report(result, out):
    """Write shift.json, shift.md, most-like-test.png, least-like-test.png and roc.png into `out`."""
    out = Path(out)
    order = np.argsort(-result.beta, kind="mergesort")
    shown = min(SHEET_SIZE, max(1, result.n_train // 2))  # the two sheets never show the same photo
    contact_sheet([result.train_paths[i] for i in order[:shown]], result.beta[order[:shown]],
                  f"training photos most like the test scene (highest β of {result.n_train})", out / MOST_LIKE)
    least = order[::-1][:shown]
    contact_sheet([result.train_paths[i] for i in least], result.beta[least],
                  f"training photos least like the test scene (lowest β of {result.n_train})", out / LEAST_LIKE)
    roc_figure(result, out / ROC_PNG)
    write_json_atomic(out / "shift.json", report_json(result))
    write_text_atomic(out / "shift.md", report_markdown(result, order))


def _name(path, root):
    return display(Path(path).relative_to(root).as_posix()) if Path(path).is_relative_to(root) else display(path)


def report_json(r):
    from hackathon.evaluate.features import CACHE_KEY

    return {
        "kit_shift": 1, "verdict": r.verdict(), "train": display(r.train_dir), "test": display(r.test_dir),
        "n_train": r.n_train, "n_test": r.n_test, "auc": r.auc, "auc_p_value": r.p_value,
        "n_permutations": r.permutations, "folds": r.folds, "kid": r.kid, "kid_std": r.kid_std,
        "kid_subset_size": r.kid_subset_size, "clip": r.clip, "ess": r.ess, "ess_fraction": r.ess_fraction,
        "calibration": {"slope": r.calibration[0], "intercept": r.calibration[1]},
        "features": CACHE_KEY,
        # logit: out-of-fold, as the classifier gave it; beta = min(exp(slope·logit + intercept)·n_train/n_test, clip)
        "weights": [{"image": _name(p, r.train_dir), "beta": float(b), "logit": float(h)}
                    for p, b, h in zip(r.train_paths, r.beta, r.train_logits)],
        "test_logits": [{"image": _name(p, r.test_dir), "logit": float(h)} for p, h in zip(r.test_paths, r.test_logits)],
        "skipped": [{"image": display(p), "error": m} for p, m in r.skipped],
        "files": {"report": "shift.md", "roc": ROC_PNG, "most_like_test": MOST_LIKE, "least_like_test": LEAST_LIKE},
    }


def report_markdown(r, order):
    rows = lambda idx: "\n".join(f"| {_name(r.train_paths[i], r.train_dir)} | {r.beta[i]:.3g} |" for i in idx)
    shown = min(10, max(1, r.n_train // 2))
    skipped = "".join(f"\n- {m}" for _, m in r.skipped) or "\nnone"
    return f"""# Scene shift: {display(r.train_dir)} → {display(r.test_dir)}

**{r.verdict()}**

| measure | value | reads as |
|---|---|---|
| photos | {r.n_train} train, {r.n_test} test | |
| domain classifier ROC-AUC | {r.auc:.3f} ({r.p_text()}, {r.permutations} permutations, {r.folds}-fold CV) | 0.5: the scenes look alike; 1: every photo's scene is obvious |
| KID | {r.kid:.4f} ± {r.kid_std:.4f} (subsets of {r.kid_subset_size}) | about 0 for one scene; grows with the difference |
| effective sample size | {r.ess:.1f} of {r.n_train} ({r.ess_fraction:.0%}) | how many training photos the test scene gets out of yours |

Features: the pooled 1280-d output of MobileNetV2 (torchvision's ImageNet weights), each photo
resized whole to 224x224. Weights β = min(exp(h) · n_train / n_test, {r.clip:g}), h = {r.calibration[0]:.3g}·logit
{"+" if r.calibration[1] >= 0 else "−"} {abs(r.calibration[1]):.3g}: a photo's out-of-fold logit of "test scene", Platt-calibrated.

![ROC curve]({ROC_PNG})

## Shoot more like these ({MOST_LIKE})

| photo | β |
|---|---|
{rows(order[:shown])}

![most like the test scene]({MOST_LIKE})

## Fewer like these ({LEAST_LIKE})

| photo | β |
|---|---|
{rows(order[::-1][:shown])}

![least like the test scene]({LEAST_LIKE})

## Skipped photos
{skipped}
"""



def contact_sheet(paths, betas, title, out):
    """Thumbnails of `paths` with their names and β, four a row, under a title; written atomically."""
    from PIL import Image, ImageDraw

    from labeling.photos import open_upright

    font = _font(13)
    caption, head = 34, 30
    rows = max(1, -(-len(paths) // COLUMNS))
    sheet = Image.new("RGB", (COLUMNS * THUMB, head + rows * (THUMB + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), title, fill=(0, 0, 0), font=font)
    for k, (path, beta) in enumerate(zip(paths, betas)):
        x, y = (k % COLUMNS) * THUMB, head + (k // COLUMNS) * (THUMB + caption)
        try:
            im = open_upright(path, max_side=2 * THUMB)
            im.thumbnail((THUMB - 8, THUMB - 8), Image.BILINEAR)
            sheet.paste(im, (x + (THUMB - im.width) // 2, y + (THUMB - im.height) // 2))
        except KitError:  # read once already; a file changed since then gets an empty tile, not a crash
            draw.rectangle([x + 4, y + 4, x + THUMB - 4, y + THUMB - 4], outline=(200, 0, 0))
        name = display(Path(path).name)
        while len(name) > 4 and draw.textlength(name, font=font) > THUMB - 8:
            name = name[:len(name) // 2 - 1] + "…" + name[len(name) // 2 + 1:]
        draw.text((x + 4, y + THUMB), name, fill=(0, 0, 0), font=font)
        draw.text((x + 4, y + THUMB + 16), f"β {beta:.3g}", fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())


def _font(size):
    """DejaVu Sans (shipped with matplotlib; PIL's built-in font has no β), else PIL's own."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=False), size)
    except (ImportError, ValueError, OSError):
        return ImageFont.load_default(size=size)


def roc_figure(r, out):
    """The out-of-fold ROC curve beside the permutation null distribution of the AUC, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.r_[np.zeros(r.n_train), np.ones(r.n_test)]
    fpr, tpr = roc_curve(np.r_[r.train_logits, r.test_logits], labels)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
    a.plot(fpr, tpr, drawstyle="steps-post", lw=2, label=f"AUC {r.auc:.2f}")
    a.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="no shift")
    a.set(xlabel="train photos called 'test scene'", ylabel="test photos called 'test scene'",
          title="domain classifier (out-of-fold)", xlim=(0, 1), ylim=(0, 1.01))
    a.legend(loc="lower right")
    if len(r.null_aucs):
        b.hist(r.null_aucs, bins=20, range=(0, 1), color="lightgrey", edgecolor="grey", label="labels shuffled")
    b.axvline(r.auc, color="C0", lw=2, label=f"observed ({r.p_text()})")
    b.set(xlabel="ROC-AUC", ylabel="permutations", title=f"{r.permutations} permutations", xlim=(0, 1))
    b.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(out, buf.getvalue())

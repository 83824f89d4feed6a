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

The numbers only: :mod:`hackathon.evaluate.report` writes them as REPORT/metrics.json, report.md,
report.html (self-contained: images inlined, text escaped), pr_curves.png and examples.png.

Example
-------
>>> ev = evaluate("data/val.rec", export="export", shift="photos/tank-b")
>>> write_report(ev, "report"); print(terminal_summary(ev.result))
"""
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hackathon.evaluate.metrics import METRICS, bootstrap_weights, match, percentile_interval
from hackathon.core.constants import KEEP_SCORE
from hackathon.deploy.predict import PREDICT_BATCH, suggest_threshold, threshold_hint
from hackathon.core.errors import KitError
from hackathon.core.fileutil import display

SIZE_BUCKETS = (("small", 0.0, 0.1), ("medium", 0.1, 0.3), ("large", 0.3, np.inf))
SET_KEYS = ("in_scene", "shift")


@dataclass
class Evaluation:
    """What `evaluate` found: the scored sets (truth, predictions, matches) and metrics.json's content."""
    sets: list
    result: dict
    threshold: float


class Scored:
    """One set: its truth, its predictions matched, and what the report says about them."""

    def __init__(self, key, truth, predictions):
        self.key, self.truth, self.predictions = key, truth, predictions
        self.matches = match(truth, predictions)
        self.summary = self.matches.summary()


def evaluate(data, export=None, predictions=None, shift=None, shift_predictions=None, classes=None,
             n_boot=1000, seed=0, threshold=0.3, progress=True, echo=print) -> Evaluation:
    """Score (export | predictions) on `data` and, with `shift`, on the shift set. The caller writes
    the report (:func:`hackathon.evaluate.report.write_report`)."""
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
    truths = []
    for key, path, pred_file in (("in_scene", data, predictions), ("shift", shift, shift_predictions)):
        if path is None:
            continue
        truth = read_truth(path, classes)  # every set is read and judged before any model runs
        if truth.classes_note():
            echo(truth.classes_note())
        for line in truth.dropped_warnings():
            echo(line)
        if truth.unlabeled:
            echo(f"warning: {len(truth.unlabeled)} photo(s) in {truth.source} have no labelme file and are not "
                 f"scored (e.g. {truth.unlabeled[0]}). Fix: label them, with no shapes if nothing is on them.")
        classes = truth.classes
        truths.append((key, truth, pred_file))
    detector = None
    if export is not None:
        from hackathon.deploy.predict import load_detector

        detector = load_detector(export)
    sets = []
    for key, truth, pred_file in truths:
        extra = [c for c in detector.classes if c not in truth.classes] if detector else []
        if extra and truth is truths[0][1]:  # they have no truth: left out of every mean, and said so (once)
            echo(f"warning: the model's class(es) {', '.join(extra)} are not in the class list of {truth.source} "
                 f"({', '.join(truth.classes)}); their detections are not scored. Fix: train with the event's classes.")
        truth.classes = truth.classes + extra
        if detector is not None:
            preds = Predictions.from_rows(_detect_all(detector, truth, progress, echo), truth, source=display(export))
        else:
            preds = read_predictions(pred_file, truth)
        sets.append(Scored(key, truth, preds))
    result = build_result(sets, n_boot, seed, threshold)
    for s in sets:
        hint = threshold_hint(s.predictions.score.tolist(), threshold, len(s.truth.images))
        drawn_from = example_threshold(s, threshold)
        if hint:
            echo(f"warning: {s.key} ({s.truth.source}): {hint}"
                 + (f"; the report's examples are drawn from {drawn_from:g}" if drawn_from != threshold else ""))
    result["sources"] = {s.key: {"truth": s.truth.source, "predictions": s.predictions.source} for s in sets}
    return Evaluation(sets, result, threshold)


def example_threshold(s, threshold):
    """The lowest score the examples draw: `threshold`, or, when no detection of the set reaches it,
    one that shows about a box a photo, so the drawings show the detections there are."""
    if not len(s.predictions) or (s.predictions.score >= threshold).any():
        return threshold
    return suggest_threshold(s.predictions.score.tolist(), len(s.truth.images))


def _detect_all(detector, truth, progress, echo=print):
    """The model's detections on every photo of `truth`: a bar on a terminal, else one line when done."""
    import time

    from tqdm import tqdm

    rows, start = [], time.time()
    bar = tqdm(total=len(truth.images), desc=f"detect {Path(truth.source).name}", unit="img",
               disable=None if progress else True)  # None: no bar unless stderr is a terminal
    names = list(truth.images)
    for first in range(0, len(names), PREDICT_BATCH):  # one forward pass a batch of photos
        chunk = names[first:first + PREDICT_BATCH]
        found = detector.detect_many([truth.open_image(n) for n in chunk], threshold=KEEP_SCORE)
        rows += [{"image": n, **r} for n, f in zip(chunk, found) for r in f]
        bar.update(len(chunk))
    bar.close()
    if progress and bar.disable:
        echo(f"detect {Path(truth.source).name}: {len(truth.images)} photo(s), {len(rows)} detection(s) "
             f"in {time.time() - start:.1f} s")
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
        entry["reliability"] = reliability(s)
        entry["images"] = per_image(s, threshold)
        entry["dropped_boxes"] = [{"file": f, "message": m} for f, m in s.truth.dropped]
        entry["dropped_note"] = s.truth.dropped_note()
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
    lo, hi = percentile_interval(values)
    return None if lo is None else [lo, hi]


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


RELIABILITY_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def reliability(s):
    """Whether a score means what it says: per score bin, the detections in it, their mean score and
    the fraction that are true positives (VOC matching, IoU 0.5; ignored ones left out), and the
    expected calibration error (the bins' |precision - mean score| weighted by their counts). A
    well-calibrated detector's boxes at score 0.3 are right about 30% of the time."""
    m = s.matches
    judged = m.voc >= 0
    score, tp = m.det_score[judged], (m.voc[judged] == 1)
    edges = np.array(RELIABILITY_EDGES)
    which = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, len(edges) - 2)
    bins, ece = [], 0.0
    for k in range(len(edges) - 1):
        inside = which == k
        n = int(inside.sum())
        mean, prec = (float(score[inside].mean()), float(tp[inside].mean())) if n else (None, None)
        if n:
            ece += n / len(score) * abs(prec - mean)
        bins.append({"range": [float(edges[k]), float(edges[k + 1])], "n": n, "mean_score": mean, "precision": prec})
    return {"bins": bins, "ece": float(ece) if len(score) else None, "n_detections": int(len(score))}


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

"""Scores that mean something: `hack export` maps the detector's scores so that a box at score s is
right about a fraction s of the time on the run's validation photos.

A fine-tuned SSD's softmax scores are far from that: on the aquarium set most true detections
score below 0.3, so the README's drawing threshold hid most of what the model found. At export,
every detection on the run's val photos (score >= 0.01, the kit's keep score) is judged right or
wrong by the VOC rule (IoU >= 0.5 with a truth box of its class not already taken by a higher
score), and Platt scaling fits one map for all classes:

    calibrated = 0.01 + 0.99 * sigmoid(a * logit(score) + b),   a > 0

appended to the exported graph after NMS (MXNet operators only: the export stays data; invalid
rows keep their -1). The map is increasing and the same for every class, so every ranking, and so
every AP and mAP, is unchanged (the 0.01 floor keeps every detection above the kit's keep score, so
predict, eval and the scorer keep the same ones); only what a threshold means changes. Without val photos, without
enough detections of both kinds (MIN_EACH), or when the fit finds no increasing map, the scores are
left as they are and export.json says why. `hack eval`'s reliability table shows the result on
photos the fit never saw.
"""
import warnings

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display

MIN_EACH = 10  # right and wrong detections each, for a two-parameter fit worth having
IOU = 0.5
EPS = 1e-6


def judge(rows, boxes, ids, classes):
    """[(score, right)] of one photo's detection rows against its truth, by the VOC rule."""
    out = []
    for c, name in enumerate(classes):
        truth = boxes[ids == c]
        used = np.zeros(len(truth), bool)
        for r in sorted((r for r in rows if r["label"] == name), key=lambda r: -r["score"]):
            right = False
            if len(truth):
                b = np.asarray(r["bbox"], np.float64)
                lt, rb = np.maximum(truth[:, :2], b[:2]), np.minimum(truth[:, 2:], b[2:])
                inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
                union = np.prod(truth[:, 2:] - truth[:, :2], axis=1) + np.prod(b[2:] - b[:2]) - inter
                iou = inter / np.maximum(union, 1e-12)
                j = int(np.argmax(iou))
                if iou[j] >= IOU and not used[j]:
                    used[j] = right = True
            out.append((r["score"], right))
    return out


def fit_platt(scores, right, iterations=50):
    """(a, b) of the logistic fit of `right` on logit(score) (Newton's method, a tiny ridge)."""
    s = np.clip(np.asarray(scores, np.float64), EPS, 1 - EPS)
    x = np.stack([np.log(s / (1 - s)), np.ones(len(s))], axis=1)
    y = np.asarray(right, np.float64)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (p - y) + 1e-6 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def ece(scores, right, edges=np.linspace(0, 1, 11)):
    """Expected calibration error over score bins of 0.1 (as `hack eval`'s reliability table)."""
    scores, right = np.asarray(scores, np.float64), np.asarray(right, np.float64)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    return float(sum(abs(right[which == k].mean() - scores[which == k].mean()) * (which == k).sum()
                     for k in range(len(edges) - 1) if (which == k).any()) / max(len(scores), 1))


def calibrated(s, a, b):
    """The map: Platt's probability, lifted into [KEEP_SCORE, 1] so that every detection the graph
    keeps (raw score >= 0.01) is still kept by predict, eval and the scorer (their 0.01 cut): the
    same detections in the same order, so every AP is unchanged."""
    from hackathon.core.constants import KEEP_SCORE

    s = np.clip(np.asarray(s, np.float64), EPS, 1 - EPS)
    return KEEP_SCORE + (1 - KEEP_SCORE) / (1 + np.exp(-(a * np.log(s / (1 - s)) + b)))


def fit_on_val(detector, val_records):
    """The calibration entry for export.json, fitted on `val_records` (DetectionRecords of val.rec)."""
    from PIL import Image

    from hackathon.core.constants import KEEP_SCORE
    from hackathon.deploy.predict import PREDICT_BATCH

    judged = []
    n = len(val_records.keys)
    for first in range(0, n, PREDICT_BATCH):
        items = [val_records.read(i) for i in range(first, min(n, first + PREDICT_BATCH))]
        found = detector.detect_many([Image.fromarray(img) for img, _, _ in items], threshold=KEEP_SCORE)
        for (_, boxes, ids), rows in zip(items, found):
            judged += judge(rows, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(ids).reshape(-1),
                            detector.classes)
    scores = np.array([s for s, _ in judged])
    right = np.array([r for _, r in judged], bool)
    entry = {"method": "Platt scaling of logit(score), one map for all classes, fitted on the run's val photos",
             "val_images": n, "detections": int(len(judged)), "right": int(right.sum())}
    if right.sum() < MIN_EACH or (~right).sum() < MIN_EACH:
        return {**entry, "applied": False, "why": f"needs at least {MIN_EACH} right and {MIN_EACH} wrong detections "
                                                  f"on the val photos, has {int(right.sum())} and {int((~right).sum())}"}
    a, b = fit_platt(scores, right)
    if not a > 0:
        return {**entry, "applied": False, "why": f"the fit found no increasing map (a = {a:.3g})"}
    return {**entry, "applied": True, "a": a, "b": b, "ece_val_before": ece(scores, right),
            "ece_val_after": ece(calibrated(scores, a, b), right)}


def calibrate_graph(symbol_path, a, b):
    """The export's symbol JSON with its scores output mapped (ids and boxes untouched)."""
    import mxnet as mx

    sym = mx.sym.load(str(symbol_path))
    ids, scores, boxes = sym[0], sym[1], sym[2]
    s = mx.sym.clip(scores, EPS, 1 - EPS)
    from hackathon.core.constants import KEEP_SCORE

    mapped = KEEP_SCORE + (1 - KEEP_SCORE) * mx.sym.sigmoid(a * (mx.sym.log(s) - mx.sym.log(1 - s)) + b)
    return mx.sym.Group([ids, mx.sym.where(scores > 0, mapped, scores), boxes]).tojson()


def export_calibrated(run_path, out, weights="best", calibrate=True):
    """`hack export`: the run's export (deploy.export.export_run), its scores then calibrated on the
    run's val photos unless `calibrate` is False; returns (folder, export.json's entry or None)."""
    from hackathon.deploy.export import export_run

    folder = export_run(run_path, out, weights=weights)
    return folder, (calibrate_export(folder, run_path) if calibrate else None)


def calibrate_export(folder, run_path):
    """Calibrate the export in `folder` on the val photos of the run at `run_path` (or say why not,
    in export.json's ``score_calibration``); returns that entry."""
    import json
    from pathlib import Path

    from hackathon.core.fileutil import write_json_atomic
    from hackathon.deploy.export import META, PARAMS, SYMBOL
    from hackathon.train.data import DataDir, DetectionRecords
    from hackathon.train.rundir import RunDir

    folder = Path(folder)
    meta = json.loads((folder / META).read_text("utf-8"))
    try:
        run = RunDir.open(run_path)
        val = DetectionRecords(DataDir(run.data_path()).rec("val"), len(meta["classes"]),
                               decode_side=max(meta["data_shape"]))
    except KitError as e:
        entry = {"applied": False, "why": f"no val photos to fit on ({e})"}
    else:
        entry = apply(folder, val, SYMBOL, PARAMS)
    meta["score_calibration"] = entry
    write_json_atomic(folder / META, meta)
    return entry


def apply(folder, val_records, symbol_name, params_name):
    """Fit on the val photos and rewrite `folder`'s graph; returns the export.json entry."""
    import mxnet as mx

    from hackathon.core.fileutil import write_text_atomic
    from hackathon.deploy.predict import load_detector

    detector = load_detector(folder, precision="fp32", fuse=False)
    entry = fit_on_val(detector, val_records)
    if not entry["applied"]:
        return entry
    symbol = folder / symbol_name
    text = calibrate_graph(symbol, entry["a"], entry["b"])
    probe = mx.nd.array(np.random.RandomState(1).uniform(-2, 2, (1, 3, *detector.data_shape)))
    want = [o.asnumpy() for o in detector.net(probe)]
    tmp = folder / (symbol_name + ".calibrated")
    tmp.write_text(text, "utf-8")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
            net = mx.gluon.SymbolBlock.imports(str(tmp), ["data"], str(folder / params_name))
        got = [o.asnumpy() for o in net(probe)]
    finally:
        tmp.unlink()
    valid = want[1] > 0
    if not (np.array_equal(got[0], want[0], equal_nan=True) and np.allclose(got[2], want[2], equal_nan=True)
            and np.allclose(got[1][valid], calibrated(want[1][valid], entry["a"], entry["b"]), atol=1e-4)):
        raise KitError(f"{display(symbol)}: the calibrated graph does not give the detector's boxes. Fix: export "
                       "again with --no-calibrate, and report this.")
    write_text_atomic(symbol, text)
    return entry


def describe(entry):
    """One line for the export's output."""
    if not entry.get("applied"):
        return f"scores left uncalibrated: {entry.get('why')}"
    return (f"scores calibrated on {entry['val_images']} val photo(s) ({entry['detections']} detections): a box at "
            f"score s is right about s of the time there (ECE {entry['ece_val_before']:.3f} -> "
            f"{entry['ece_val_after']:.3f})")

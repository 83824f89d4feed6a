"""The predictions file: what `hack predict` writes and what `hack eval` and the judges' scorer read.

JSON: a list of ``{"image": "scene-b/img_0042.jpg", "label": "fish", "score": 0.93,
"bbox": [xmin, ymin, xmax, ymax]}``; CSV: the header ``image,label,score,xmin,ymin,xmax,ymax`` and
one detection a row. ``image`` is the path relative to the test folder (posix), boxes are corners in
pixels of the upright test image, and ``score`` any finite number (higher = more confident).

Reading validates every row against the truth, because both pycocotools and GluonCV count a NaN box
as a true positive and skip an unknown image without a word: an unknown image or class, a NaN or
infinite number, a box with zero or negative width or height, a wrong type or a missing field is a
KitError naming the file, the row and the fix. Nothing is dropped silently.

Example::

    >>> truth = read_truth("test-scene")
    >>> preds = read_predictions("team-a/predictions.json", truth)
    >>> write_predictions(rows, "out/predictions.csv")
"""
import csv
import difflib
import io
import json
from itertools import chain, repeat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_text_atomic

CSV_HEADER = ["image", "label", "score", "xmin", "ymin", "xmax", "ymax"]
FIELDS = ("image", "label", "score", "bbox")
MAX_SHOWN = 5  # bad rows quoted in one error; the count says how many more


@dataclass
class Predictions:
    """Validated detections as arrays, one entry a row: image index into ``truth.images``, class
    index into ``truth.classes``, score, and box corners (n, 4) float64."""
    image: np.ndarray
    label: np.ndarray
    score: np.ndarray
    boxes: np.ndarray
    truth: object
    source: str = "rows"

    def __len__(self):
        return len(self.score)

    def rows(self):
        """The detections as dicts (the JSON format)."""
        names, classes = self.truth.images, self.truth.classes
        return [{"image": names[i], "label": classes[c], "score": float(s), "bbox": [float(v) for v in b]}
                for i, c, s, b in zip(self.image, self.label, self.score, self.boxes)]

    @classmethod
    def from_rows(cls, rows, truth, source="rows", row_names=None):
        """Validate in-memory rows (dicts as the JSON format) against `truth`.

        `row_names[k]` says where row k came from in messages (default ``row k+1``)."""
        return _validate(list(rows), truth, source, row_names)


def read_predictions(path, truth) -> Predictions:
    """Read a predictions file (.json or .csv) and validate it against `truth` (see the module docstring)."""
    path = Path(path)
    name = display(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KitError(f"{name}: no such predictions file. Fix: check the path (`hack predict` writes "
                       "predictions.json).") from None
    except OSError as e:
        raise KitError(f"{name}: cannot read it ({e.strerror}). Fix: check the path and its permissions.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise KitError(f"{name}: not UTF-8 text. Fix: save the predictions as UTF-8 JSON or CSV.") from None
    suffix = path.suffix.lower()
    if suffix == ".csv" or (suffix != ".json" and not text.lstrip().startswith("[")):
        rows, where = _csv_rows(text, name)
    else:
        rows, where = _json_rows(text, name)
    return _validate(rows, truth, name, where)


def write_predictions(rows, path):
    """Write detections (dicts as the JSON format) atomically as .json or .csv, by the suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        write_text_atomic(path, json.dumps([_plain(r) for r in rows], ensure_ascii=False) + "\n")
    elif suffix == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_HEADER)
        for r in rows:
            w.writerow([r["image"], r["label"], repr(float(r["score"]))] + [repr(float(v)) for v in r["bbox"]])
        write_text_atomic(path, buf.getvalue())
    else:
        raise KitError(f"{display(path)}: predictions are written as .json or .csv. Fix: name the file "
                       "predictions.json or predictions.csv.")
    return path


def _plain(r):
    return {"image": r["image"], "label": r["label"], "score": float(r["score"]),
            "bbox": [float(v) for v in r["bbox"]]}


def _json_rows(text, name):
    try:
        data = json.loads(text)
    except ValueError as e:
        raise KitError(f"{name}: not valid JSON ({e}). Fix: write a JSON list of "
                       '{"image", "label", "score", "bbox"} objects, as `hack predict` does.') from None
    if not isinstance(data, list):
        raise KitError(f"{name}: the JSON is a {type(data).__name__}, not a list. Fix: write a list of "
                       '{"image", "label", "score", "bbox": [xmin, ymin, xmax, ymax]} objects.')
    return data, None


def _csv_rows(text, name):
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise KitError(f"{name}: the CSV is empty. Fix: write the header {','.join(CSV_HEADER)} and one row per detection.")
    header = [h.strip().lower() for h in header]
    missing = [c for c in CSV_HEADER if c not in header]
    if missing:
        raise KitError(f"{name}: line 1: the header lacks {', '.join(missing)}. Fix: make the first line "
                       f"{','.join(CSV_HEADER)}.")
    col = {c: header.index(c) for c in CSV_HEADER}
    rows, where = [], []
    for lineno, rec in enumerate(reader, 2):
        if not rec or not "".join(rec).strip():
            continue
        if len(rec) < len(header):
            rows.append({})  # reported as missing fields
        else:
            row = {"image": rec[col["image"]], "label": rec[col["label"]], "score": rec[col["score"]],
                   "bbox": [rec[col[c]] for c in CSV_HEADER[3:]]}
            rows.append(_csv_numbers(row))
        where.append(f"line {lineno}")
    return rows, where


def _csv_numbers(row):
    """CSV cells are text: numbers become floats ('nan' too, caught later); anything else stays text."""
    def num(v):
        try:
            return float(v)
        except ValueError:
            return v
    row["score"] = num(row["score"])
    row["bbox"] = [num(v) for v in row["bbox"]]
    return row


def _validate(rows, truth, source, row_names):
    classes = {c: i for i, c in enumerate(truth.classes)}
    n = len(rows)
    columns = _fast_columns(rows, truth, classes)
    if columns is not None:
        image, label, score, boxes = columns
        suspects = np.flatnonzero((image < 0) | (label < 0))
    else:
        image, label = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        score, boxes = np.zeros(n, np.float64), np.zeros((n, 4), np.float64)
        suspects = range(n)
    bad = []  # (row, message)
    for k in suspects:  # the slow, careful look: only rows the fast path could not take
        r = rows[k]
        try:
            image[k] = truth.index[r["image"]]
            label[k] = classes[r["label"]]
            s, b = r["score"], r["bbox"]
            if not _is_number(s) or not isinstance(b, (list, tuple, np.ndarray)) or len(b) != 4 \
                    or not all(map(_is_number, b)):
                raise TypeError
            score[k] = s
            boxes[k] = b
        except (KeyError, TypeError, IndexError, ValueError):
            bad.append((k, _row_problem(r, truth, classes)))
            if len(bad) > 1000:
                break
    ok = np.ones(n, bool)
    ok[[k for k, _ in bad]] = False
    finite = np.isfinite(score) & np.isfinite(boxes).all(1)
    for k in np.flatnonzero(ok & ~finite)[:MAX_SHOWN + 1]:
        bad.append((k, f"score {rows[k]['score']!r} / bbox {list(rows[k]['bbox'])!r} holds NaN or infinity. "
                       "Fix: the detector produced a broken number; drop the row or fix the model."))
    thin = ok & finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    for k in np.flatnonzero(thin)[:MAX_SHOWN + 1]:
        x1, y1, x2, y2 = boxes[k]
        bad.append((k, f"bbox {list(rows[k]['bbox'])!r} has width {x2 - x1:g} and height {y2 - y1:g}; both "
                       "must be positive. Fix: write [xmin, ymin, xmax, ymax] corners (not x, y, width, height), "
                       "and drop empty boxes."))
    n_bad = len(bad) + max(0, int((ok & ~finite).sum()) - MAX_SHOWN - 1) + max(0, int(thin.sum()) - MAX_SHOWN - 1)
    if bad:
        bad.sort(key=lambda kb: kb[0])
        where = (lambda k: row_names[k]) if row_names else (lambda k: f"row {k + 1}")
        shown = "\n  ".join(f"{where(k)}: {m}" for k, m in bad[:MAX_SHOWN])
        more = f"\n  ... {n_bad - MAX_SHOWN} more bad row(s)" if n_bad > MAX_SHOWN else ""
        raise KitError(f"{source}: {n_bad if n_bad <= 1000 else 'over 1000'} bad row(s) of {n}; none is scored:\n"
                       f"  {shown}{more}")
    return Predictions(image=image, label=label, score=score, boxes=boxes, truth=truth, source=source)


def _fast_columns(rows, truth, classes):
    """The rows as arrays when every one is a plain dict of str, str, float|int and a list of 4
    floats|ints (what json.load and hack predict give), else None; unknown names come back as -1."""
    n = len(rows)
    try:
        images = [r["image"] for r in rows]
        labels = [r["label"] for r in rows]
        scores = [r["score"] for r in rows]
        bboxes = [r["bbox"] for r in rows]
        image = np.fromiter(map(truth.index.get, images, repeat(-1)), np.int64, n)
        label = np.fromiter(map(classes.get, labels, repeat(-1)), np.int64, n)
    except (KeyError, TypeError):  # a row that is not a dict, lacks a field, or names an image with a list
        return None
    plain = {float, int}
    if not (set(map(type, scores)) <= plain and set(map(type, bboxes)) <= {list} and set(map(len, bboxes)) <= {4}
            and set(map(type, chain.from_iterable(bboxes))) <= plain):
        return None
    return image, label, np.array(scores, np.float64), np.array(bboxes, np.float64).reshape(n, 4)


def _is_number(v):
    """A real number: Python or numpy, not a bool (True is no score) and not text ("0.9" in JSON)."""
    return isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, (bool, np.bool_))


def _row_problem(r, truth, classes):
    """Why row `r` could not be read, with its fix."""
    if not isinstance(r, dict):
        return f"a {type(r).__name__}, not an object. Fix: each row is " \
               '{"image", "label", "score", "bbox": [xmin, ymin, xmax, ymax]}.'
    missing = [f for f in FIELDS if f not in r]
    if missing:
        return f"missing {', '.join(missing)}. Fix: give every row image, label, score and bbox."
    img, lab = r["image"], r["label"]
    if not isinstance(img, str):
        return f"image {img!r} is not a file name. Fix: the image's path relative to the test folder, as text."
    if img not in truth.index:
        return _unknown_image(img, truth)
    if not isinstance(lab, str) or lab not in classes:
        near = difflib.get_close_matches(str(lab), list(classes), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return (f"unknown class {lab!r}; {hint}Fix: use the class names of the truth "
                f"({', '.join(truth.classes)}).")
    s, b = r["score"], r["bbox"]
    if not _is_number(s):
        return f"score {s!r} is not a number. Fix: write the confidence as a number, e.g. 0.87."
    if not isinstance(b, (list, tuple, np.ndarray)) or len(b) != 4:
        return f"bbox {b!r} is not 4 numbers. Fix: write [xmin, ymin, xmax, ymax] in pixels."
    return f"bbox {list(b)!r} holds a value that is not a number. Fix: write [xmin, ymin, xmax, ymax] in pixels."


def _unknown_image(img, truth):
    fixed = img.replace("\\", "/").removeprefix("./")
    if fixed != img and fixed in truth.index:
        return f"image {img!r} is written {fixed!r} in the truth. Fix: use forward slashes, relative to the test folder."
    if img in truth.unlabeled:
        return (f"image {img!r} has no labelme file in {truth.source}, so nobody knows what is on it. Fix: "
                "label it (a photo with nothing on it: save it in labelme with no shapes), or drop its rows.")
    tails = [n for n in truth.images if n.endswith("/" + fixed) or fixed.endswith("/" + n)]
    if len(tails) == 1:
        return f"image {img!r} is not in the truth; {tails[0]!r} is. Fix: name images relative to the test folder."
    near = difflib.get_close_matches(fixed, truth.images, n=1, cutoff=0.8)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return (f"image {img!r} is not in the truth ({len(truth.images)} images in {truth.source}); {hint}"
            "Fix: predict on the test folder itself, or drop rows of other images.")

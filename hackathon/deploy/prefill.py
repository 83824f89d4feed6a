"""`hack prefill`: the team's first detector draws its boxes into labelme, the team only corrects.

For each photo, labelme 5.11.4 JSON beside it (labelme's own convention), boxes in the upright
photo's pixels. Each machine box carries the shape flag ``auto: true`` and its score in
``description``; the file carries the flag ``reviewed: false`` and, under ``kitPrefill``, the model
that made it (labeling/labelme_io.py owns these marks and the merge). A photo that already has a
person's boxes keeps every one of them as it was; a prediction that overlaps one of them (same
class, IoU >= 0.5) is dropped. A file ticked ``reviewed`` is left alone.

Thresholds, per class, are chosen on the run's validation photos (its ``val.rec``) to save the
team the most actions: the model runs on each photo, its boxes are matched to the true ones (same
class, IoU >= 0.5, best score first), and each box kept above a threshold is worth +1 if a person
keeps it as it is (IoU >= ``KEEP_IOU``: one box less to draw), 0 if it needs fixing (a fix instead
of a draw) and -1 if it matches nothing (a delete). The threshold is the score where the sum is
highest. A class with fewer than ``MIN_VAL_BOXES`` true val boxes gets the threshold of all classes
pooled. A class whose best sum is not above 0 is switched off (no machine boxes): the model costs
more actions there than it saves. Without the run's val data every class gets
``DEFAULT_THRESHOLD``. ``--threshold`` overrides them all.

Boxes come from several views of each photo (``detect_fused``): the photo, its mirror and a grid
of overlapping tiles, in which small objects are seen larger; thresholds see the same views.

Example::

    >>> model = open_model("run")                          # a run folder (exported to a temp folder) or an export
    >>> thresholds, how = choose_thresholds(model.detector, model.val_rec)
    >>> summary = prefill_photos(model.detector, photos, thresholds, model.name)
"""
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic, write_json_atomic

DEFAULT_THRESHOLD = 0.5
OFF = float("inf")  # the threshold of a class the model never found on val: no machine boxes
MIN_VAL_BOXES = 5
MATCH_IOU = 0.5
KEEP_IOU = 0.7  # a machine box this close to the true one is kept as it is
MIN_BOX_PX = 1.0  # thinner is no object: `hack check` would reject the file
SCORE_FLOOR = 0.05  # lower scores are never a box worth showing a person
BACKUP_DIR = ".prefill-backup"  # beside the photos; hidden, so labelme, check and pack skip it
# Views the model sees each photo in (detect_fused): the photo, its mirror, and an N x N grid of
# overlapping tiles, in which small objects are seen larger; their boxes are fused.
DEFAULT_TILES = 2
TILE_OVERLAP = 1 / 3  # of a tile's side
CUT_EDGE = 0.02  # a tile's box this close to a side the tile cuts through (of its size) is a cut object
FUSE_IOU = 0.55  # boxes of one class from different views this close are one object


@dataclass
class Model:
    detector: object
    name: str  # what the files record as the model that made them
    val_rec: Path = None  # the run's validation photos, when found
    _tmp: object = None  # the temp export of a run folder, removed by close()

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def open_model(path) -> Model:
    """A run folder (its best weights exported to a temp folder first) or an export folder."""
    from hackathon.deploy.calibration import export_calibrated
    from hackathon.deploy.export import META
    from hackathon.deploy.predict import load_detector
    from hackathon.train.rundir import RunDir

    path = Path(path)
    if (path / "config.yaml").is_file():
        tmp = tempfile.TemporaryDirectory(prefix="hack-prefill-")
        try:
            export_calibrated(path, Path(tmp.name) / "export")
            detector = load_detector(Path(tmp.name) / "export")
        except BaseException:
            tmp.cleanup()
            raise
        return Model(detector, f"run {display(path.resolve())}", _val_rec(RunDir(path)), tmp)
    detector = load_detector(path)
    run = None
    try:
        run = json.loads((path / META).read_text("utf-8")).get("run")
    except (OSError, ValueError, AttributeError):
        pass
    val = _val_rec(RunDir(run)) if isinstance(run, str) and (Path(run) / "config.yaml").is_file() else None
    return Model(detector, f"export {display(path.resolve())}", val)


def _val_rec(run):
    """The run's val.rec, from the data folder its config.yaml names (relative to where it was trained,
    or to the run's parent)."""
    try:
        data = Path(str(run.read_config()["train"]["data"]))
    except (KitError, KeyError, TypeError):
        return None
    for base in (Path.cwd(), run.path.parent, run.path.parent.parent):
        rec = data if data.is_absolute() else base / data
        if (rec / "val.rec").is_file() and (rec / "val.idx").is_file():
            return rec / "val.rec"
    return None


def choose_thresholds(detector, val_rec=None, progress=False, tiles=DEFAULT_TILES):
    """({class: threshold}, {class: how it was chosen}): per class, the score that saves the most
    actions on `val_rec` (see the module docstring)."""
    classes = list(detector.classes)
    if val_rec is None:
        return ({c: DEFAULT_THRESHOLD for c in classes},
                {c: "default (the run's val.rec was not found)" for c in classes})
    from PIL import Image
    from tqdm import tqdm

    from hackathon.train.data import DetectionRecords

    records = DetectionRecords(val_rec, len(classes))
    scored = {c: [] for c in classes}  # class -> [(score, IoU with the true box it matched, or 0)]
    n_true = Counter()
    for i in tqdm(range(len(records)), desc="thresholds on val", unit="img", disable=not progress):
        img, boxes, ids = records.read(i)
        truth = [(classes[int(k)], b) for k, b in zip(ids, boxes)]
        n_true.update(c for c, _ in truth)
        taken = set()
        for r in detect_fused(detector, Image.fromarray(img), SCORE_FLOOR, tiles):  # best first
            best, best_iou = None, MATCH_IOU
            for j, (c, b) in enumerate(truth):
                if c == r["label"] and j not in taken:
                    o = _iou(r["bbox"], b)
                    if o >= best_iou:
                        best, best_iou = j, o
            if best is not None:
                taken.add(best)
            scored[r["label"]].append((r["score"], best_iou if best is not None else 0.0))
    thresholds, how = {}, {}
    pooled, pooled_gain = _most_saved([x for c in classes for x in scored[c]])
    for c in classes:
        t, gain = _most_saved(scored[c])
        if n_true[c] >= MIN_VAL_BOXES:
            thresholds[c] = OFF if t is None else t
            how[c] = (f"costs more actions than it saves on {n_true[c]} val boxes" if t is None else
                      f"saves {gain} action(s) on {n_true[c]} val boxes")
        else:
            thresholds[c] = OFF if pooled is None else pooled
            how[c] = f"{n_true[c]} val box(es), all classes pooled" + (", which save nothing" if pooled is None else "")
    return thresholds, how


def _most_saved(scored):
    """(score, actions saved) where keeping boxes of at least that score saves the most actions:
    +1 a box kept as it is, 0 one to fix, -1 one to delete; (None, 0) if no score saves any."""
    if not scored:
        return None, 0
    scored = sorted(scored, key=lambda x: -x[0])
    gains = np.cumsum([1 if iou >= KEEP_IOU else 0 if iou >= MATCH_IOU else -1 for _, iou in scored])
    k = int(np.argmax(gains))
    return (float(scored[k][0]), int(gains[k])) if gains[k] > 0 else (None, 0)


def tile_regions(w, h, tiles):
    """[(x0, y0, x1, y1)]: an N x N grid of tiles of a w x h photo, neighbours overlapping by
    TILE_OVERLAP of a tile's side (none for tiles < 2)."""
    if tiles < 2:
        return []
    tw, th = w / (tiles - (tiles - 1) * TILE_OVERLAP), h / (tiles - (tiles - 1) * TILE_OVERLAP)
    xs = [round(i * (w - tw) / (tiles - 1)) for i in range(tiles)]
    ys = [round(j * (h - th) / (tiles - 1)) for j in range(tiles)]
    return [(x, y, min(w, round(x + tw)), min(h, round(y + th))) for y in ys for x in xs]


def detect_fused(detector, image, threshold=SCORE_FLOOR, tiles=DEFAULT_TILES):
    """`detector.detect` rows of an upright PIL image, seen whole, mirrored and (tiles >= 2) in an
    N x N grid of overlapping tiles, fused: best first, score >= `threshold`.

    Tile boxes that touch a side the tile cuts through are dropped (a cut object). The rest, by score,
    join the first group of their class whose fused box they overlap at IoU >= FUSE_IOU and that
    has no box of their view yet. A group's box is the score-weighted mean of its boxes (several
    views place the corners more exactly than one), its score the sum of its scores over the views
    that see all of the box: an object every view finds keeps its score, one a single view finds
    is discounted. With tiles=0 the photo is seen once, as `detector.detect` sees it."""
    if tiles < 1:
        return detector.detect(image, threshold=threshold)
    from PIL import Image as PILImage

    w, h = image.size
    regions = [(0, 0, w, h), (0, 0, w, h)] + tile_regions(w, h, tiles)
    crops = [image, image.transpose(PILImage.FLIP_LEFT_RIGHT)] + [image.crop(r) for r in regions[2:]]
    found = []  # (score, label, box in photo pixels, view)
    for v, (rows, (x0, y0, x1, y1)) in enumerate(zip(detector.detect_many(crops, SCORE_FLOOR), regions)):
        cut = CUT_EDGE * (x1 - x0), CUT_EDGE * (y1 - y0)
        for r in rows:
            b = list(r["bbox"])
            if v == 1:
                b = [w - b[2], b[1], w - b[0], b[3]]
            elif v >= 2:
                if (x0 > 0 and b[0] < cut[0]) or (y0 > 0 and b[1] < cut[1]) or \
                        (x1 < w and b[2] > x1 - x0 - cut[0]) or (y1 < h and b[3] > y1 - y0 - cut[1]):
                    continue
                b = [b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0]
            found.append((r["score"], r["label"], b, v))
    groups = []  # [label, [(score, box, view)], fused box]
    for score, label, box, v in sorted(found, key=lambda f: -f[0]):
        for g in groups:
            if g[0] == label and all(m[2] != v for m in g[1]) and _iou(g[2], box) >= FUSE_IOU:
                g[1].append((score, box, v))
                weights = np.array([m[0] for m in g[1]])
                g[2] = list(np.average(np.array([m[1] for m in g[1]]), axis=0, weights=weights))
                break
        else:
            groups.append([label, [(score, box, v)], list(box)])
    out = []
    for label, members, box in groups:
        seen_by = sum(1 for (x0, y0, x1, y1) in regions
                      if box[0] >= x0 - 1 and box[1] >= y0 - 1 and box[2] <= x1 + 1 and box[3] <= y1 + 1)
        score = min(1.0, sum(m[0] for m in members) / max(seen_by, 1))
        if score >= threshold:
            out.append({"label": label, "score": round(float(score), 6), "bbox": [round(float(c), 2) for c in box]})
    return sorted(out, key=lambda r: -r["score"])


def _iou(a, b):
    from labeling.labelme_io import box_iou

    return box_iou(a, b)


def photos_without_labels(folder) -> list:
    """The photos below `folder` nobody has labelled: no labelme JSON beside them, or one pre-filled
    and not reviewed (a newer model refreshes its untouched machine boxes; a person's are kept)."""
    from labeling.label import still_to_label

    return [Path(folder) / p for p in still_to_label(folder)]


@dataclass
class PrefillSummary:
    photos: int = 0
    written: list = field(default_factory=list)  # JSON paths written (or that would be, with dry_run)
    boxes: Counter = field(default_factory=Counter)  # class -> machine boxes added
    dropped: int = 0  # predictions dropped on a person's box
    skipped: list = field(default_factory=list)  # [(path, why)]: nothing to do there
    failed: list = field(default_factory=list)  # [(path, message)]: a file to fix

    def line(self, dry_run=False) -> str:
        per_class = ", ".join(f"{c} {n}" for c, n in sorted(self.boxes.items())) or "none"
        verb = "would write" if dry_run else "wrote"
        return (f"{self.photos} photo(s): {verb} {len(self.written)} labelme file(s), "
                f"{sum(self.boxes.values())} machine box(es) ({per_class}), {self.dropped} dropped on a person's box; "
                f"{len(self.skipped)} skipped, {len(self.failed)} failed")


def prefill_photos(detector, photos, thresholds, model_name, dry_run=False, progress=True,
                   tiles=DEFAULT_TILES) -> PrefillSummary:
    """Write (or, with `dry_run`, only count) the machine boxes of each photo into its labelme JSON.
    One bad photo or JSON is listed in `failed` and the others are still done."""
    from tqdm import tqdm

    summary = PrefillSummary(photos=len(photos))
    record = {"model": model_name, "classes": list(detector.classes),
              "thresholds": {c: None if t == OFF else round(float(t), 4) for c, t in thresholds.items()},
              "tiles": int(tiles), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    floor = max(min(thresholds.values()), 0.0) if thresholds else DEFAULT_THRESHOLD
    for photo in tqdm(list(photos), desc="prefill", unit="photo", disable=not progress):
        try:
            done = _prefill_one(detector, Path(photo), thresholds, floor, record, dry_run, summary, tiles)
        except KitError as e:
            summary.failed.append((photo, str(e)))
            continue
        if done:
            summary.written.append(done)
    return summary


def _prefill_one(detector, photo, thresholds, floor, record, dry_run, summary, tiles=DEFAULT_TILES):
    from labeling.labelme_io import REVIEWED_FLAG, merge_machine_boxes, new_labelme_document, read_labelme
    from labeling.photos import open_upright

    json_path = photo.with_suffix(".json")
    doc = None
    if json_path.exists():
        lf = read_labelme(json_path)  # KitError names the file a person must fix
        if lf.flags.get(REVIEWED_FLAG) is True:
            summary.skipped.append((photo, "ticked reviewed"))
            return None
        doc = json.loads(json_path.read_bytes().decode("utf-8-sig"))
    image = open_upright(photo)
    w, h = image.size
    if doc is not None and (doc.get("imageWidth"), doc.get("imageHeight")) not in ((w, h), (None, None)):
        raise KitError(f"{display(json_path)}: says {doc.get('imageWidth')}x{doc.get('imageHeight')} but the upright "
                       f"photo is {w}x{h}. Fix: `hack check` says why; label this photo again.")
    rows = [r for r in detect_fused(detector, image, floor, tiles) if r["score"] >= thresholds.get(r["label"], 1.1)
            and min(r["bbox"][2] - r["bbox"][0], r["bbox"][3] - r["bbox"][1]) >= MIN_BOX_PX]
    if doc is None and not rows:
        summary.skipped.append((photo, "no box above its class threshold"))
        return None
    merged, added, dropped = merge_machine_boxes(doc or new_labelme_document(photo.name, w, h), rows, record)
    summary.dropped += dropped
    summary.boxes.update(s["label"] for s in merged["shapes"][len(merged["shapes"]) - added:])
    if not dry_run:
        if doc is not None:  # the file as it was, before this merge
            backup = json_path.parent / BACKUP_DIR / f"{json_path.stem}.{time.strftime('%Y%m%d-%H%M%S')}.json"
            write_bytes_atomic(backup, json_path.read_bytes())
        write_json_atomic(json_path, merged)
    return json_path


def uncertainty_order(detector, photos, thresholds, progress=True, tiles=DEFAULT_TILES):
    """[(photo, uncertainty)], the photos the model is least sure of first, unreadable ones left out.

    A box's doubt is 1 at its class threshold and falls to 0 at score 0 or 1; a photo's is the sum
    over its boxes (score >= SCORE_FLOOR), so a photo with many borderline boxes comes first."""
    from tqdm import tqdm

    from labeling.photos import open_upright

    out = []
    for photo in tqdm(list(photos), desc="uncertainty", unit="photo", disable=not progress):
        try:
            image = open_upright(photo)
        except KitError:
            continue
        doubt = 0.0
        for r in detect_fused(detector, image, SCORE_FLOOR, tiles):
            t = thresholds.get(r["label"], DEFAULT_THRESHOLD)
            if t <= 1:  # a class switched off says nothing about the photo
                doubt += 1 - abs(r["score"] - t) / max(t, 1 - t)
        out.append((photo, doubt))
    return sorted(out, key=lambda x: (-x[1], str(x[0])))

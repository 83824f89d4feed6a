"""Ground truth for evaluation: a labelme folder (organizers label with the same tool) or a packed `.rec`.

Every image is named by its path relative to the folder (posix, e.g. ``scene-b/img_0042.jpg``),
which is how `hack predict FOLDER` names its rows. Boxes are corners in pixels of the upright image.

- **labelme folder**: the labels are judged by `hack check` first; any error stops here with the
  list. A labelme file with no shapes is an image with nothing on it (false positives on it count);
  a photo with no labelme file at all is *not* part of the truth (nobody said what is on it) and is
  listed in ``Truth.unlabeled``. A shape with the labelme flag ``difficult`` checked is a
  "difficult" object: neither found nor missed (see hackathon/evaluate/metrics.py).
- **.rec** (`hack pack`'s layout): boxes in pixels of the packed image; names from the
  ``manifest.json`` beside it, so they equal the names `hack predict` gives the labelme folder the
  set was packed from. Predictions must then be made on the packed pixels (`hack eval EXPORT
  --data val.rec` does that); a 6th label column, when present, is GluonCV's difficult flag.

Example::

    >>> truth = read_truth("test-scene")            # classes from classes.txt beside the labels
    >>> truth.images[:2], truth.boxes[truth.images[0]]
"""
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display

CLASS_FILES = ("classes.txt", "labels.txt")


@dataclass
class Truth:
    """The labeled test images: for each image (sorted names) its boxes, class indices, difficult
    flags and upright size. Built by `read_truth`, or directly from arrays (tests, benchmarks)."""
    classes: list
    images: list
    boxes: dict  # image -> float64 (n, 4) x1, y1, x2, y2
    labels: dict  # image -> int64 (n,)
    sizes: dict  # image -> (w, h)
    difficult: dict  # image -> bool (n,)
    root: Path = None  # the folder image names are relative to; None for a .rec
    source: str = ""  # what was read, for messages
    unlabeled: list = field(default_factory=list)  # photos under root without a labelme file
    _pixels: dict = field(default_factory=dict, repr=False)  # image -> Path | bytes | ("rec", key)

    def __post_init__(self):
        self.images = sorted(self.images)
        for name in self.images:
            self.boxes[name] = np.asarray(self.boxes.get(name, np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
            self.labels[name] = np.asarray(self.labels.get(name, []), dtype=np.int64).reshape(-1)
            n = len(self.labels[name])
            d = self.difficult.get(name)
            self.difficult[name] = np.zeros(n, bool) if d is None else np.asarray(d, dtype=bool).reshape(-1)
            if len(self.boxes[name]) != n or len(self.difficult[name]) != n:
                raise ValueError(f"{name}: {len(self.boxes[name])} boxes, {n} labels, {len(self.difficult[name])} flags")
        self.index = {name: i for i, name in enumerate(self.images)}

    @property
    def n_boxes(self) -> int:
        return sum(len(v) for v in self.labels.values())

    def open_image(self, name):
        """The upright RGB PIL image `name`, as the labels were drawn on it."""
        from labeling.photos import open_upright

        src = self._pixels.get(name)
        if src is None and self.root is not None:
            src = Path(self.root) / name
        if isinstance(src, tuple):
            return _read_rec_image(Path(self.source), src[1])
        if src is None:
            raise KitError(f"{self.source}: has no pixels for {name}. Fix: evaluate on the labelme folder.")
        return open_upright(src, name=name if isinstance(src, bytes) else None)


def read_truth(path, classes=None) -> Truth:
    """The ground truth in `path`: a labelme folder or a packed `.rec` (see the module docstring).

    `classes` defaults to ``classes.txt`` (or labelme's ``labels.txt``) in the folder or the one
    above it, then to the sorted labels used in the files; for a .rec, the ``classes.txt`` beside it.
    """
    path = Path(path)
    if path.suffix == ".rec":
        return _read_rec(path, classes)
    if path.is_file():
        raise KitError(f"{display(path)}: give the folder of labelme files, or a packed .rec. Fix: pass its folder.")
    if not path.is_dir():
        raise KitError(f"{display(path)}: no such folder. Fix: give the folder of labeled test photos.")
    return _read_labelme_folder(path, classes)


def _classes_near(folder: Path):
    from labeling.workspace import read_classes

    for d in (folder, folder.parent):
        for name in CLASS_FILES:
            if (d / name).is_file():
                return read_classes(d / name)
    return None


def _labels_used(jsons):
    from labeling.labelme_io import read_labelme
    from labeling.workspace import LABELME_PSEUDO_CLASSES

    used = set()
    for _, p in jsons:
        try:
            used.update(" ".join(s.label.split()) for s in read_labelme(p).shapes)
        except KitError:
            pass  # check_labels reports it
    return sorted(u for u in used if u and u not in LABELME_PSEUDO_CLASSES)


def _read_labelme_folder(folder: Path, classes):
    from labeling.check import check_labels, find_label_files

    jsons, _ = find_label_files([folder])
    if not jsons:
        raise KitError(f"{display(folder)}: no labelme files. Fix: label the test photos with labelme "
                       "(`hack label FOLDER`) or give the folder that holds their JSON files.")
    classes = list(classes) if classes else (_classes_near(folder) or _labels_used(jsons))
    if not classes:
        raise KitError(f"{display(folder)}: no class names (no classes.txt and no labeled shapes). "
                       "Fix: put classes.txt beside the labels, or pass the classes.")
    report = check_labels([folder], classes)
    if report.errors:
        shown = "\n  ".join(str(p) for p in report.errors[:10])
        more = f"\n  ... and {len(report.errors) - 10} more" if len(report.errors) > 10 else ""
        raise KitError(f"{display(folder)}: {len(report.errors)} error(s) in the test labels:\n  {shown}{more}\n"
                       f"Fix: correct them in labelme (`hack check {display(folder)}` lists them).")
    t = dict(images=[], boxes={}, labels={}, sizes={}, difficult={}, pixels={})
    done = set()
    for item in report.items:
        flags = _difficult_boxes(item.json_path, classes, item.width, item.height)
        _add(t, folder, item.json_path, item.image_source, item.width, item.height,
             [b[1:] for b in item.boxes], [b[0] for b in item.boxes],
             [(b[0],) + tuple(b[1:]) in flags for b in item.boxes])
        done.add(item.json_path)
    for _, p in jsons:  # empty images: check_labels skips them (nothing to pack), evaluation needs them
        if p not in done:
            _add_if_empty(t, folder, p)
    dup = [n for n, k in Counter(t["images"]).items() if k > 1]
    if dup:
        raise KitError(f"{display(folder)}: two labelme files name the image {dup[0]}. Fix: delete one of them.")
    return Truth(classes, t["images"], t["boxes"], t["labels"], t["sizes"], t["difficult"], root=folder,
                 source=display(folder), unlabeled=[_name(folder, p, None) for p in report.unlabeled],
                 _pixels=t["pixels"])


def _name(folder, image_source, json_path):
    """An image's name: its path relative to the folder; an image embedded in its JSON (imageData)
    is named after the JSON with a .jpg suffix."""
    p = image_source if isinstance(image_source, Path) else Path(json_path).with_suffix(".jpg")
    return Path(os.path.relpath(os.path.abspath(p), os.path.abspath(folder))).as_posix()


def _add(t, folder, json_path, source, w, h, boxes, labels, difficult):
    name = _name(folder, source, json_path)
    t["images"].append(name)
    t["boxes"][name], t["labels"][name], t["difficult"][name] = boxes, labels, difficult
    t["sizes"][name] = (int(w), int(h))
    if isinstance(source, bytes):
        t["pixels"][name] = source


def _add_if_empty(t, folder, json_path):
    from labeling.labelme_io import read_labelme
    from labeling.photos import upright_size

    lf = read_labelme(json_path)
    if lf.shapes or lf.image_source is None:
        return  # a second file on an already labeled photo (check warned), or no photo (check erred)
    w, h = upright_size(lf.image_source, display(json_path))
    _add(t, folder, json_path, lf.image_source, w, h, [], [], [])


def _difficult_boxes(json_path, classes, w, h):
    """{(class, x1, y1, x2, y2)} of the shapes flagged difficult, in check.py's clipped corners."""
    try:
        shapes = json.loads(Path(json_path).read_bytes().decode("utf-8-sig")).get("shapes", [])
    except (OSError, ValueError):
        return set()
    folded = {" ".join(c.split()).casefold(): i for i, c in enumerate(classes)}
    out = set()
    for s in shapes:
        if not (isinstance(s, dict) and isinstance(s.get("flags"), dict) and s["flags"].get("difficult")):
            continue
        cls = folded.get(" ".join(str(s.get("label", "")).split()).casefold())
        pts = np.asarray(s.get("points", []), dtype=np.float64).reshape(-1, 2)
        if cls is None or len(pts) < 2:
            continue
        x1, y1 = pts.min(0)
        x2, y2 = pts.max(0)
        out.add((cls, max(0.0, float(x1)), max(0.0, float(y1)), min(float(w), float(x2)), min(float(h), float(y2))))
    return out


# ---- packed RecordIO ----

def _rec_reader(rec: Path):
    import mxnet as mx

    idx = rec.with_suffix(".idx")
    if not rec.is_file() or not idx.is_file():
        raise KitError(f"{display(rec)}: needs the .rec and its .idx beside it. Fix: run `hack pack` first.")
    return mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "r")


def _read_rec_image(rec: Path, key):
    import mxnet as mx
    from PIL import Image

    reader = _rec_reader(rec)
    try:
        _, payload = mx.recordio.unpack(reader.read_idx(key))
    finally:
        reader.close()
    return Image.open(io.BytesIO(payload)).convert("RGB")


def _rec_names(rec: Path):
    """{record index: image name} from the manifest.json beside a packed .rec (the labelme sources)."""
    manifest = rec.parent / "manifest.json"
    names = {}
    try:
        records = json.loads(manifest.read_text("utf-8"))["records"][rec.stem]
    except (OSError, ValueError, KeyError, TypeError):
        return names
    suffixes = {}
    lst = rec.with_suffix(".lst")
    if lst.is_file():
        for line in lst.read_text("utf-8", errors="surrogateescape").splitlines():
            parts = line.split("\t")
            if len(parts) > 2:
                suffixes[int(float(parts[0]))] = Path(parts[-1]).suffix
    for r in records:
        names[r["index"]] = Path(r["source"]).with_suffix(suffixes.get(r["index"], ".jpg")).as_posix()
    return names


def _read_rec(rec: Path, classes):
    import mxnet as mx
    from PIL import Image

    beside = rec.parent / "classes.txt"
    from labeling.workspace import read_classes

    rec_classes = read_classes(beside) if beside.is_file() else None
    classes = list(classes) if classes else rec_classes
    if not classes:
        raise KitError(f"{display(rec)}: no classes.txt beside it. Fix: pass the classes, or copy the "
                       "classes.txt `hack pack` wrote beside the .rec.")
    remap = None
    if rec_classes and rec_classes != classes:
        missing = [c for c in rec_classes if c not in classes]
        if missing:
            raise KitError(f"{display(rec)}: packed with class(es) {', '.join(missing)} that the class list lacks. "
                           "Fix: evaluate with the classes.txt beside the .rec.")
        remap = np.array([classes.index(c) for c in rec_classes])
    names = _rec_names(rec)
    t = dict(images=[], boxes={}, labels={}, sizes={}, difficult={})
    pixels = {}
    reader = _rec_reader(rec)
    try:
        for k in sorted(reader.keys):
            header, payload = mx.recordio.unpack(reader.read_idx(k))
            label = np.asarray(header.label, dtype=np.float64).ravel()
            if label.size < 2 or int(label[0]) < 2 or int(label[1]) < 5 or (label.size - int(label[0])) % int(label[1]):
                raise KitError(f"{display(rec)}: record {k} is not in the detection layout [4, 5, w, h, ...]. "
                               "Fix: pack it with `hack pack`.")
            hl, width = int(label[0]), int(label[1])
            if hl >= 4 and label[2] > 0 and label[3] > 0:
                w, h = int(label[2]), int(label[3])
            else:
                w, h = Image.open(io.BytesIO(payload)).size
            rows = label[hl:].reshape(-1, width)
            name = names.get(k, f"record-{k:06d}.jpg")
            cls = rows[:, 0].astype(np.int64)
            if len(cls) and (cls.min() < 0 or cls.max() >= len(rec_classes or classes)):
                raise KitError(f"{display(rec)}: record {k} has class id {int(cls.max())} beyond the "
                               f"{len(rec_classes or classes)} classes. Fix: pack it again with `hack pack`.")
            t["images"].append(name)
            t["labels"][name] = remap[cls] if remap is not None else cls
            t["boxes"][name] = rows[:, 1:5] * [w, h, w, h]
            t["difficult"][name] = rows[:, 5] > 0 if width >= 6 else None
            t["sizes"][name] = (w, h)
            pixels[name] = ("rec", k)
    finally:
        reader.close()
    if not t["images"]:
        raise KitError(f"{display(rec)}: no records. Fix: pack labeled photos with `hack pack`.")
    return Truth(classes, t["images"], t["boxes"], t["labels"], t["sizes"], t["difficult"], root=None,
                 source=display(rec), _pixels=pixels)

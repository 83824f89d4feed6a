"""`hack check`: labelme files judged against the class list and their images, before anything is packed.

Errors make the packed data wrong (an unknown class, a box off the image, an image that changed
since labeling) and stop `hack pack`; warnings are mended the one obvious way and said
(a label's case, a polygon's bounding box, a duplicate box) and do not.
"""
import difflib
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display
from labeling.labelme_io import read_labelme
from labeling.photos import is_image_name, upright_size

DUPLICATE_IOU = 0.9
CLIP_SILENTLY_PX = 1.0  # labelme lets a corner land a pixel outside; that is not a mistake
REJECTED_SHAPES = {"circle": "a circle", "line": "a line", "linestrip": "a line strip",
                   "point": "a point", "points": "points", "mask": "a mask"}


@dataclass
class Problem:
    severity: str  # "error" or "warning"
    file: str
    message: str

    def __str__(self):
        return f"{self.severity}: {self.file}: {self.message}"


@dataclass
class Item:
    """One labeled photo, ready to pack: boxes are (class index, xmin, ymin, xmax, ymax) in pixels
    of the upright image of size (width, height)."""
    json_path: Path
    image_source: object  # a Path, or bytes for a JSON with embedded imageData
    key: str  # the JSON's path relative to its label folder, for manifests and messages
    scene: str
    width: int
    height: int
    boxes: list


@dataclass
class CheckReport:
    classes: list
    items: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    unlabeled: list = field(default_factory=list)
    files: int = 0

    @property
    def errors(self):
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self):
        return [p for p in self.problems if p.severity == "warning"]

    def counts(self):
        """{scene: Counter(class -> boxes)} and {scene: images}."""
        boxes, images = defaultdict(Counter), Counter()
        for it in self.items:
            images[it.scene] += 1
            for b in it.boxes:
                boxes[it.scene][self.classes[b[0]]] += 1
        return boxes, images

    def table(self) -> str:
        """Boxes per class (rows) and scene (columns), with images per scene and totals."""
        boxes, images = self.counts()
        scenes = sorted(images)
        head = ["class"] + scenes + ["total"]
        rows = [[c] + [str(boxes[s][c]) for s in scenes] + [str(sum(boxes[s][c] for s in scenes))]
                for c in self.classes]
        rows.append(["(images)"] + [str(images[s]) for s in scenes] + [str(sum(images.values()))])
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])

    def summary(self) -> str:
        n_boxes = sum(len(it.boxes) for it in self.items)
        return (f"{self.files} label file(s), {len(self.items)} photo(s) with boxes, {n_boxes} box(es); "
                f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")


def find_label_files(roots):
    """(root, json path) pairs and the photos below `roots` (a root may also be one JSON file)."""
    jsons, photos = [], []
    for root in roots:
        root = Path(root)
        if root.is_file():
            jsons.append((root.parent, root))
            continue
        if not root.is_dir():
            raise KitError(f"{display(root)}: no such folder. Fix: give the folder that holds labelme's JSON files.")
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.startswith("."):
                    continue
                if f.lower().endswith(".json"):
                    jsons.append((root, Path(folder) / f))
                elif is_image_name(f):
                    photos.append(Path(folder) / f)
    return jsons, photos


def scene_of(root: Path, json_path: Path) -> str:
    """The first folder below the label root (workspace layout photos/<scene>/), else the root's name."""
    parts = json_path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else (root.resolve().name or "default")


def check_labels(roots, classes) -> CheckReport:
    """Read and judge every labelme file below `roots`. Never raises for a bad file: each problem
    is a `Problem` in the report, so one bad file never hides the others."""
    report = CheckReport(classes=list(classes))
    jsons, photos = find_label_files(roots)
    report.files = len(jsons)
    base = os.path.commonpath([os.path.abspath(root) for root, _ in jsons]) if jsons else ""
    lookup = _label_lookup(classes)
    labeled_images = {}
    for root, path in jsons:
        name = display(path)
        try:
            item = _check_file(root, path, base, classes, lookup, report.problems)
        except KitError as e:
            report.problems.append(Problem("error", name, str(e).removeprefix(name + ": ")))
            continue
        if item is None:
            continue
        if isinstance(item.image_source, Path):
            real = os.path.realpath(item.image_source)
            if real in labeled_images:
                report.problems.append(Problem("warning", name, f"labels the same photo as {labeled_images[real]}; "
                                               "only that one is packed. Fix: delete one of the two JSON files."))
                continue
            labeled_images[real] = name
        if not item.boxes:
            report.problems.append(Problem("warning", name, "has no boxes, so it is not packed (a record needs "
                                           "at least one object). Fix: label the objects, or ignore this if none show."))
            continue
        report.items.append(item)
    json_images = set(labeled_images)
    report.unlabeled = [p for p in photos if os.path.realpath(p) not in json_images
                        and not p.with_suffix(".json").exists()]
    if report.unlabeled:
        shown = ", ".join(display(p) for p in report.unlabeled[:5])
        more = f" and {len(report.unlabeled) - 5} more" if len(report.unlabeled) > 5 else ""
        report.problems.append(Problem("warning", shown + more, f"{len(report.unlabeled)} photo(s) have no labels "
                                       "yet. Fix: label them with `hack label`, or move them out."))
    return report


def _label_lookup(classes):
    """Map of a label's folded form (case, spaces) to its class index."""
    return {" ".join(c.split()).casefold(): i for i, c in enumerate(classes)}


def _check_file(root, path, base, classes, lookup, problems):
    name = display(path)
    lf = read_labelme(path)
    if lf.image_data is None and lf.image_path is None:
        raise KitError("its photo is missing (imagePath and no photo with the same name beside it). "
                       "Fix: put the photo beside the JSON, or delete the JSON.")
    w, h = upright_size(lf.image_source, display(lf.image_path) if lf.image_path else name + " (imageData)")
    if lf.width and lf.height and (lf.width, lf.height) != (w, h):
        if (lf.width, lf.height) == (h, w):
            why = ("the photo was labeled sideways (a tool that ignored its EXIF orientation). "
                   "Fix: label it again in labelme, which shows it upright")
        else:
            why = "the photo changed after labeling (resized or replaced). Fix: label the current photo again"
        raise KitError(f"the JSON says {lf.width}x{lf.height} but the upright photo is {w}x{h}: {why}.")
    boxes, errors = [], []
    for k, shape in enumerate(lf.shapes, 1):
        where = f"shape {k} ({shape.label!r})"
        cls = _class_of(shape.label, classes, lookup, where, errors, problems, name)
        box = _box_of(shape, where, w, h, errors, problems, name)
        if cls is not None and box is not None:
            boxes.append((cls,) + box)
    for message in errors:
        problems.append(Problem("error", name, message))
    if errors:
        return None
    return Item(json_path=path, image_source=lf.image_source, key=display(Path(os.path.relpath(os.path.abspath(path), base)).as_posix()),
                scene=scene_of(root, path), width=w, height=h, boxes=_drop_duplicates(boxes, classes, problems, name))


def _class_of(label, classes, lookup, where, errors, problems, name):
    if label in classes:
        return classes.index(label)
    folded = " ".join(label.split()).casefold()
    if folded in lookup:
        right = classes[lookup[folded]]
        problems.append(Problem("warning", name, f"{where}: label {label!r} is taken as {right!r} "
                                f"(case or spaces differ). Fix: rename it to {right!r} in labelme."))
        return lookup[folded]
    if not label.strip():
        errors.append(f"{where}: the shape has no label. Fix: give it one of {', '.join(classes)}.")
        return None
    near = difflib.get_close_matches(folded, list(lookup), n=1, cutoff=0.6)
    hint = f"did you mean {classes[lookup[near[0]]]!r}? " if near else ""
    errors.append(f"{where}: unknown class {label!r}; {hint}Fix: rename it in labelme, or add it to "
                  f"classes.txt (classes: {', '.join(classes)}).")
    return None


def _box_of(shape, where, w, h, errors, problems, name):
    kind = shape.shape_type
    if kind in REJECTED_SHAPES:
        errors.append(f"{where}: {REJECTED_SHAPES[kind]} is not a box. Fix: draw a rectangle (Ctrl+R) around "
                      "the object instead, and delete this shape.")
        return None
    if kind not in ("rectangle", "polygon") or len(shape.points) < 2:
        errors.append(f"{where}: a {kind} with {len(shape.points)} point(s) is not a box. Fix: redraw it as a rectangle.")
        return None
    xs = [p[0] for p in shape.points]
    ys = [p[1] for p in shape.points]
    x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)  # reversed corners are fine
    if kind == "polygon":
        problems.append(Problem("warning", name, f"{where}: a polygon; its bounding box "
                                f"[{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}] is used. Fix: nothing, or redraw as a rectangle."))
    if x2 - x1 < 1 or y2 - y1 < 1:
        errors.append(f"{where}: the box is {x2 - x1:.1f}x{y2 - y1:.1f} px, too thin to be an object. "
                      "Fix: delete it or redraw it around the object.")
        return None
    cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        errors.append(f"{where}: the box [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}] lies outside the {w}x{h} photo. "
                      "Fix: delete it and draw it on the object.")
        return None
    if max(cx1 - x1, cy1 - y1, x2 - cx2, y2 - cy2) > CLIP_SILENTLY_PX:
        problems.append(Problem("warning", name, f"{where}: the box runs off the {w}x{h} photo; it is clipped to "
                                f"[{cx1:.0f}, {cy1:.0f}, {cx2:.0f}, {cy2:.0f}]. Fix: nothing, or redraw it inside."))
    return (cx1, cy1, cx2, cy2)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _drop_duplicates(boxes, classes, problems, name):
    kept = []
    for b in boxes:
        twin = next((k for k in kept if k[0] == b[0] and iou(k[1:], b[1:]) >= DUPLICATE_IOU), None)
        if twin:
            problems.append(Problem("warning", name, f"two {classes[b[0]]!r} boxes on the same object "
                                    f"[{b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f}, {b[4]:.0f}]; one is packed. "
                                    "Fix: delete one in labelme."))
            continue
        kept.append(b)
    return kept

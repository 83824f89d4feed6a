"""Reading labelme's JSON, as written by labelme 3.x to 5.x.

A labelme file names its image with `imagePath`, relative to the JSON (Windows labelme writes
backslashes), and may carry the image itself as base64 `imageData`. Older versions lack the
`description` and `mask` keys; newer ones add them. Nothing here judges the labels: see check.py.
"""
import base64
import binascii
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display
from labeling.photos import IMAGE_SUFFIXES

# `hack prefill`'s marks in a labelme file. labelme keeps all three when it saves: the shape flag
# and the file flag are declared in its config (`hack label` does that, labelme_config.yaml), and
# labelme writes a top-level key it does not know back as it read it.
AUTO_FLAG = "auto"            # shape flag: the model drew this box
REVIEWED_FLAG = "reviewed"    # file flag: a person went over every box of this photo
PREFILL_KEY = "kitPrefill"    # {"model": ..., "thresholds": {class: score}, "time": ...}
LABELME_VERSION = "5.11.4"    # the labelme the kit pins, and the format prefill writes
OVERLAP_IOU = 0.5             # a prediction this close to a person's box of its class is that box
# A machine box's description: its score, and what the model drew (to tell a box nobody touched).
_MACHINE_RE = re.compile(r"^score (?P<score>[0-9.]+) \(model: (?P<label>.*) at (?P<box>[-0-9., ]+)\)$")


@dataclass
class Shape:
    label: str
    shape_type: str
    points: list  # [[x, y], ...] in pixels of the upright image
    flags: dict = field(default_factory=dict)  # labelme's per-shape flags, e.g. {"auto": True}
    description: str = ""


@dataclass
class LabelmeFile:
    json_path: Path
    image_path: Path = None  # the image file, when one is found
    image_data: bytes = None  # the embedded image, when the JSON carries one
    image_path_text: str = ""  # the JSON's imagePath as written, for messages
    width: int = None
    height: int = None
    shapes: list = field(default_factory=list)
    version: str = ""
    flags: dict = field(default_factory=dict)  # labelme's file flags, e.g. {"reviewed": False}
    prefill: dict = None  # the PREFILL_KEY record of `hack prefill` (which model), when present

    @property
    def image_source(self):
        """What to decode: the embedded bytes when present, else the image file."""
        return self.image_data if self.image_data else self.image_path


def _not_labelme(path, why):
    return KitError(f"{display(path)}: not a labelme file ({why}). Fix: open the photo in labelme and "
                    "save again, or move this JSON out of the label folder.")


def read_labelme(path) -> LabelmeFile:
    """Parse one labelme JSON file; KitError names the file and what is wrong with it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KitError(f"{display(path)}: cannot read ({e.strerror}).") from None
    if not raw.strip():
        raise KitError(f"{display(path)}: the file is empty (labelme was stopped while saving?). "
                       "Fix: delete it and label the photo again.")
    try:
        d = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise _not_labelme(path, "not UTF-8 text") from None
    except ValueError as e:
        raise _not_labelme(path, f"invalid JSON: {e}") from None
    except RecursionError:  # labelme nests 3 levels; Python's parser gives up near 1,000
        raise _not_labelme(path, "JSON nested too deeply to read") from None
    if not isinstance(d, dict) or "shapes" not in d or not isinstance(d["shapes"], list):
        raise _not_labelme(path, "no 'shapes' list")
    lf = LabelmeFile(json_path=path, version=str(d.get("version", "")))
    for i, s in enumerate(d["shapes"]):
        if not isinstance(s, dict) or not isinstance(s.get("points"), list):
            raise _not_labelme(path, f"shape {i + 1} has no 'points' list")
        try:
            points = [[float(p[0]), float(p[1])] for p in s["points"]]
        except (TypeError, ValueError, IndexError):
            raise _not_labelme(path, f"shape {i + 1} has points that are not [x, y] numbers") from None
        label = s.get("label")
        flags = s.get("flags") if isinstance(s.get("flags"), dict) else {}
        # NFC: a Mac keyboard types 'é' as e + a combining accent (NFD); it is the same class
        lf.shapes.append(Shape(label="" if label is None else unicodedata.normalize("NFC", str(label)),
                               shape_type=str(s.get("shape_type") or "polygon"), points=points,
                               flags=flags, description=str(s.get("description") or "")))
    lf.flags = d["flags"] if isinstance(d.get("flags"), dict) else {}
    lf.prefill = d[PREFILL_KEY] if isinstance(d.get(PREFILL_KEY), dict) else None
    for key in ("imageWidth", "imageHeight"):
        value = d.get(key)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise _not_labelme(path, f"{key} is {value!r}")
    lf.width = int(d["imageWidth"]) if d.get("imageWidth") else None
    lf.height = int(d["imageHeight"]) if d.get("imageHeight") else None
    if d.get("imageData"):
        try:
            lf.image_data = base64.b64decode(d["imageData"], validate=False)
        except (binascii.Error, TypeError, ValueError):
            raise KitError(f"{display(path)}: the embedded imageData is not valid base64. Fix: delete the "
                           "imageData value (set it to null) with the photo beside the JSON.") from None
    lf.image_path_text = d.get("imagePath") if isinstance(d.get("imagePath"), str) else ""
    lf.image_path = find_image(path, d.get("imagePath"))
    return lf


def find_image(json_path: Path, image_path):
    """The image a labelme file belongs to: its `imagePath` relative to the JSON, else a photo with
    the same stem beside the JSON (files are moved and renamed folders happen all evening)."""
    folder = json_path.parent
    if isinstance(image_path, str) and image_path:
        rel = PureWindowsPath(image_path).as_posix() if "\\" in image_path else image_path
        candidate = folder / rel
        if candidate.is_file():
            return candidate
        if (folder / Path(rel).name).is_file():
            return folder / Path(rel).name
    for suffix in sorted(IMAGE_SUFFIXES):
        for s in (suffix, suffix.upper()):
            candidate = json_path.with_suffix(s)
            if candidate.is_file():
                return candidate
    return None


# ---- `hack prefill`'s marks: writing machine boxes, merging them with a person's, reading them back ----

def box_of_points(points):
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def box_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def machine_shape(label, score, bbox) -> dict:
    """A labelme 5.11.4 rectangle the model drew: flag `auto`, its score in `description`."""
    x1, y1, x2, y2 = (round(float(v), 2) for v in bbox)
    return {"label": label, "points": [[x1, y1], [x2, y2]], "group_id": None,
            "description": f"score {score:.3f} (model: {label} at {x1}, {y1}, {x2}, {y2})",
            "shape_type": "rectangle", "flags": {AUTO_FLAG: True}, "mask": None}


def is_machine(shape) -> bool:
    """A box the model drew (a person may have moved it since: see `is_untouched`)."""
    flags = shape.flags if isinstance(shape, Shape) else (shape.get("flags") or {})
    return flags.get(AUTO_FLAG) is True


def is_untouched(shape) -> bool:
    """A machine box exactly as the model drew it: same class, same corners."""
    if isinstance(shape, dict):
        shape = Shape(label=str(shape.get("label") or ""), shape_type=str(shape.get("shape_type") or ""),
                      points=shape.get("points") or [], flags=shape.get("flags") or {},
                      description=str(shape.get("description") or ""))
    m = _MACHINE_RE.match(shape.description or "")
    if not (is_machine(shape) and m and m.group("label") == shape.label and len(shape.points) == 2):
        return False
    try:
        drawn = [float(v) for v in m.group("box").split(",")]
    except ValueError:
        return False
    return len(drawn) == 4 and all(abs(a - b) < 0.01 for a, b in zip(box_of_points(shape.points), drawn))


def is_unreviewed_prefill(lf: LabelmeFile) -> bool:
    """Pre-filled by `hack prefill` and the `reviewed` flag not ticked yet."""
    return lf.prefill is not None and lf.flags.get(REVIEWED_FLAG) is not True


def new_labelme_document(image_name, width, height) -> dict:
    """An empty labelme 5.11.4 file for the photo `image_name` beside it (labelme's own layout)."""
    return {"version": LABELME_VERSION, "flags": {REVIEWED_FLAG: False}, "shapes": [], "imagePath": image_name,
            "imageData": None, "imageHeight": int(height), "imageWidth": int(width)}


def merge_machine_boxes(doc, predictions, prefill, overlap=OVERLAP_IOU):
    """`doc` (a labelme file's JSON object) with the model's `predictions` ({"label", "score",
    "bbox"}) added as machine boxes; returns (new doc, boxes added, boxes dropped).

    Every shape a person drew or changed is kept as it was, in its place (a machine box a person
    moved or relabelled counts as theirs). Machine boxes nobody touched, from an earlier prefill,
    are replaced by these predictions. A prediction that overlaps a person's box of the same class
    (IoU >= `overlap`) is dropped. The `reviewed` flag is set to false; `prefill` says which model.
    """
    kept = [s for s in doc.get("shapes", []) if not is_untouched(s)]
    human = []
    for s in kept:
        try:
            human.append((str(s.get("label")), box_of_points(s["points"])))
        except (KeyError, TypeError, IndexError, ValueError):
            continue  # a shape without points overlaps nothing
    added, dropped = [], 0
    for p in predictions:
        if any(label == p["label"] and box_iou(box, p["bbox"]) >= overlap for label, box in human):
            dropped += 1
            continue
        added.append(machine_shape(p["label"], p["score"], p["bbox"]))
    out = dict(doc)
    out["shapes"] = kept + added
    out["flags"] = {**(doc.get("flags") if isinstance(doc.get("flags"), dict) else {}), REVIEWED_FLAG: False}
    out[PREFILL_KEY] = prefill
    return out, len(added), dropped

"""Reading labelme's JSON, as written by labelme 3.x to 5.x.

A labelme file names its image with `imagePath`, relative to the JSON (Windows labelme writes
backslashes), and may carry the image itself as base64 `imageData`. Older versions lack the
`description` and `mask` keys; newer ones add them. Nothing here judges the labels: see check.py.
"""
import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display
from labeling.photos import IMAGE_SUFFIXES


@dataclass
class Shape:
    label: str
    shape_type: str
    points: list  # [[x, y], ...] in pixels of the upright image


@dataclass
class LabelmeFile:
    json_path: Path
    image_path: Path = None  # the image file, when one is found
    image_data: bytes = None  # the embedded image, when the JSON carries one
    width: int = None
    height: int = None
    shapes: list = field(default_factory=list)
    version: str = ""

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
        lf.shapes.append(Shape(label="" if label is None else str(label),
                               shape_type=str(s.get("shape_type") or "polygon"), points=points))
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

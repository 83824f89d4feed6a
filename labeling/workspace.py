"""A team's workspace: its class list, its photos (one folder per scene) and labelme's JSON beside them.

Layout::

    DIR/classes.txt              one class a line (labelme's --labels format)
    DIR/photos/<scene>/*.jpg     upright, downscaled, metadata-free copies made by `hack import`
    DIR/photos/<scene>/*.json    labelme's labels, saved beside each photo
    DIR/.hack/workspace.json     marks the folder as a workspace
    DIR/.hack/photos.json        the import index (source checksums, perceptual hashes)
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, file_lock, write_json_atomic, write_text_atomic

MARKER = Path(".hack") / "workspace.json"
# labelme's own labels files start with these two pseudo-classes; they are not objects.
LABELME_PSEUDO_CLASSES = {"__ignore__", "_background_"}
SCENE_RE = re.compile(r"^[\w][\w.+-]*$")


def parse_classes(text: str, source: str = "the class list") -> list:
    """Class names from labelme's labels format: one a line, blank lines and `#` comments skipped.

    Raises KitError on a duplicate (also one differing only in case or spaces) or an empty list.

    >>> parse_classes("fish\\n\\nshark\\n")
    ['fish', 'shark']
    """
    classes, seen = [], {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        name = " ".join(raw.split())  # stray and doubled spaces are never meant
        if not name or name.startswith("#") or name in LABELME_PSEUDO_CLASSES:
            continue
        key = name.casefold()
        if key in seen:
            raise KitError(
                f"{source}: class {name!r} on line {lineno} repeats {classes[seen[key]]!r} "
                f"(line {_line_of(text, classes[seen[key]])}). Fix: keep one of them.")
        if "," in name:
            raise KitError(f"{source}: class {name!r} on line {lineno} holds a comma. Fix: rename it.")
        seen[key] = len(classes)
        classes.append(name)
    if not classes:
        raise KitError(f"{source}: no class names. Fix: write one class a line, e.g. 'fish'.")
    return classes


def _line_of(text, name):
    for lineno, raw in enumerate(text.splitlines(), 1):
        if " ".join(raw.split()) == name:
            return lineno
    return "?"


def read_classes(path) -> list:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise KitError(f"{display(path)}: no such labels file. Fix: give one class a line in a text file.")
    except UnicodeDecodeError:
        raise KitError(f"{display(path)}: not UTF-8 text. Fix: save the class list as UTF-8.")
    return parse_classes(text, display(path))


def classes_from_option(classes_csv=None, labels_file=None):
    """The class list from `--classes a,b` or `--labels FILE`; None when neither is given."""
    if classes_csv and labels_file:
        raise KitError("give --classes or --labels, not both")
    if labels_file:
        return read_classes(labels_file)
    if classes_csv:
        return parse_classes("\n".join(classes_csv.split(",")), "--classes")
    return None


def check_scene_name(scene: str) -> str:
    if not SCENE_RE.fullmatch(scene or ""):  # not match: "$" lets a trailing newline through
        raise KitError(f"scene name {scene!r}: use letters, digits, '-', '_' or '.', e.g. 'aquarium-a'.")
    return scene


@dataclass
class Workspace:
    root: Path

    @property
    def classes_file(self) -> Path:
        return self.root / "classes.txt"

    @property
    def photos_dir(self) -> Path:
        return self.root / "photos"

    @property
    def state_dir(self) -> Path:
        return self.root / ".hack"

    @property
    def index_file(self) -> Path:
        return self.state_dir / "photos.json"

    @property
    def classes(self) -> list:
        return read_classes(self.classes_file)

    def import_lock(self):
        """Held while a photo is stored and the import index updated, so a `hack import` and a
        `hack capture` (or two imports) on one workspace never take the same file name or drop
        each other's index entries."""
        return file_lock(self.state_dir / "import.lock")

    def scenes(self) -> list:
        if not self.photos_dir.is_dir():
            return []
        return sorted(p.name for p in self.photos_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def init_workspace(root, classes) -> Workspace:
    """Create a workspace at `root` (an existing empty or non-workspace folder is fine)."""
    root = Path(root)
    if (root / MARKER).exists():
        raise KitError(f"{display(root)} is already a workspace. Fix: pick another folder, or edit its classes.txt.")
    if not classes:
        raise KitError("a workspace needs its classes: --classes fish,shark or --labels labels.txt")
    ws = Workspace(root)
    ws.photos_dir.mkdir(parents=True, exist_ok=True)
    ws.state_dir.mkdir(exist_ok=True)
    write_text_atomic(ws.classes_file, "".join(c + "\n" for c in classes))
    write_json_atomic(root / MARKER, {"kind": "hackathon-kit workspace", "version": 1})
    return ws


def find_workspace(start=None, required=True):
    """The workspace holding `start` (default: the current folder), searching upwards."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return Workspace(folder)
    if required:
        raise KitError(f"{display(here)} is not inside a workspace. Fix: `hack init DIR --classes ...` "
                       "then cd into it, or pass --project DIR.")
    return None

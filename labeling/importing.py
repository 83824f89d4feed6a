"""`hack import`: phone photos into a workspace, upright, downscaled once, metadata-free, de-duplicated.

Originals are only read. Each stored photo is written atomically; the index of what was
imported (source checksum, perceptual hash, scene) lives in `.hack/photos.json` and is rebuilt
from the photos themselves when it is missing or stale, so a killed import loses nothing.
Another process importing into the same workspace at the same time (`hack capture`, a second
`hack import`) takes turns through the workspace's lock file: see _Batch.
"""
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic, write_json_atomic, write_text_atomic
from labeling.photos import (dhash, encode_jpeg, hamming, is_image_name, keeping_freed_memory, open_upright,
                             upright_size)
from labeling.workspace import Workspace, check_scene_name

NEAR_DUPLICATE_BITS = 3  # dHash distance: burst shots and re-sent copies; distinct shots differ more
JPEG_QUALITY = 92


@dataclass
class ImportSummary:
    imported: list = field(default_factory=list)
    exact_duplicates: list = field(default_factory=list)
    near_duplicates: list = field(default_factory=list)
    failed: list = field(default_factory=list)  # (file, message): every problem to show; the CLI exits 1
    labels: list = field(default_factory=list)  # photos whose labelme JSON came along
    labels_left: list = field(default_factory=list)  # imported photos whose JSON did not fit (also in failed)

    def line(self) -> str:
        parts = [f"imported {len(self.imported)} photo(s)"]
        if self.exact_duplicates:
            parts.append(f"{len(self.exact_duplicates)} exact duplicate(s) skipped")
        if self.near_duplicates:
            parts.append(f"{len(self.near_duplicates)} near duplicate(s) skipped")
        if self.labels:
            parts.append(f"{len(self.labels)} with their labelme labels")
        unreadable = len(self.failed) - len(self.labels_left)
        if unreadable:
            parts.append(f"{unreadable} unreadable (listed above)")
        if self.labels_left:
            parts.append(f"{len(self.labels_left)} labelme file(s) left behind (listed above)")
        return ", ".join(parts)


def collect_sources(sources) -> list:
    """Files as named, and image files found below named folders, in a stable order."""
    found = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            for root, dirs, files in os.walk(src):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(root) / f for f in sorted(files) if is_image_name(f) and not f.startswith(".")]
        elif src.suffix.lower() == ".json" and src.is_file():
            continue  # labelme's labels, as `hack import phone/*` passes them: they come along with their photo
        elif src.exists():
            found.append(src)
        else:
            raise KitError(f"{display(src)}: no such file or folder. Fix: check the path.")
    return found


def safe_stem(path) -> str:
    """A file name stem that works in labelme, RecordIO lists and every OS: letters of any script
    are kept; spaces, path characters and bytes that are not UTF-8 become '_'."""
    stem = os.fsdecode(Path(path).stem).encode("utf-8", "replace").decode("utf-8")
    stem = unicodedata.normalize("NFC", stem)
    stem = re.sub(r"[^\w.-]+", "_", stem, flags=re.UNICODE).strip("._")
    return stem[:80] or "photo"


def load_index(ws: Workspace) -> dict:
    """The import index, reconciled with the photos on disk (entries for vanished photos dropped,
    photos with no entry hashed anew)."""
    entries = _read_index(ws)
    on_disk = {}
    for scene in ws.scenes():
        for p in sorted((ws.photos_dir / scene).iterdir()):
            if p.is_file() and is_image_name(p.name) and not p.name.startswith("."):
                rel = p.relative_to(ws.photos_dir).as_posix()
                e = entries.get(rel)
                if not isinstance(e, dict) or not _is_hash(e.get("dhash")):
                    e = {"scene": scene, "source_sha256": None, "dhash": format(dhash(open_upright(p, 256)), "016x")}
                on_disk[rel] = e
    return on_disk


def _read_index(ws: Workspace) -> dict:
    """The index file's entries as they are (no reconciliation); {} when missing or unreadable."""
    try:
        entries = json.loads(ws.index_file.read_text("utf-8")).get("photos", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return entries if isinstance(entries, dict) else {}  # hand-edited or from a newer kit: rebuilt


def _stamp(path):
    """What changes when another process rewrites the file (atomic writes give it a new inode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _is_hash(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value) is not None


def save_index(ws: Workspace, entries: dict):
    """The index as JSON, one photo a line (written after every imported photo: json's C encoder
    makes each line, where indent= would take the slow pure-Python one)."""
    lines = [f"    {json.dumps(rel, ensure_ascii=False)}: {json.dumps(e, ensure_ascii=False)}"
             for rel, e in sorted(entries.items())]
    write_text_atomic(ws.index_file, '{\n  "version": 1,\n  "photos": {\n' + ",\n".join(lines) + "\n  }\n}\n")


def import_photos(ws: Workspace, sources, scene="default", max_side=1024, progress=True) -> ImportSummary:
    """Copy photos into `ws/photos/<scene>/`; see the module docstring for what is done to them."""
    _check_options(scene, max_side)
    files = collect_sources(sources)
    if not files:
        raise KitError("no photos found in " + ", ".join(display(s) for s in sources)
                       + ". Fix: point at the photo files or the folder that holds them (.jpg .png .heic).")
    batch = _Batch(ws, scene, max_side)
    summary = ImportSummary()
    with keeping_freed_memory():
        for src in tqdm(files, desc="import", unit="photo", disable=not progress):
            batch.add(src, summary)
    with ws.import_lock():
        batch.save()
    return summary


def import_file(ws: Workspace, path, scene="default", max_side=1024, name=None, stored_name=None) -> ImportSummary:
    """Import one file exactly as `import_photos` imports each of its files: the capture station's entry.

    `name` is how messages and the index call the file (default: its path); the stored photo is named
    after the stem of `stored_name` (default: the file's own), made safe and unique. Safe beside
    other processes importing into the same workspace (see _Batch).
    """
    _check_options(scene, max_side)
    batch = _Batch(ws, scene, max_side)
    summary = ImportSummary()
    batch.add(Path(path), summary, name=name, stored_name=stored_name)
    if summary.imported:
        with ws.import_lock():
            batch.save()
    return summary


def _check_options(scene, max_side):
    check_scene_name(scene)
    if max_side is not None and max_side < 64:
        raise KitError(f"--max-side {max_side} is too small for detection. Fix: use 512 or more (default 1024).")


class _Batch:
    """What each imported photo is checked against: the index, its checksums and hashes, the names taken.

    Another process may import into the same workspace meanwhile (`hack capture` while a teammate
    runs `hack import`). So each photo is decoded and encoded outside the workspace's lock; under
    it, the index is merged with what another process wrote since, the duplicate checks run, the
    photo takes a file name that is free on disk, and every SAVE_EVERY photos (and at the end) the
    index is merged and written: no photo is ever written over, no index entry dropped.
    """

    SAVE_EVERY = 25

    def __init__(self, ws: Workspace, scene, max_side):
        self.ws, self.scene, self.max_side = ws, scene, max_side
        self.out_dir = ws.photos_dir / scene
        with ws.import_lock():
            self._use(load_index(ws))
            self.taken = self._taken_now()[1]
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._seen = _stamp(ws.index_file)
        self._mine = set()  # the photos this batch stored
        self._unsaved = 0

    def _use(self, index):
        self.index = index
        self.by_sha = {e["source_sha256"]: rel for rel, e in index.items()
                       if isinstance(e, dict) and e.get("source_sha256")}
        self.hashes = [(int(e["dhash"], 16), rel) for rel, e in index.items()
                       if isinstance(e, dict) and _is_hash(e.get("dhash"))]

    def _taken_now(self):
        """The file name stems taken in the workspace (any scene, any file)."""
        files = [p for p in self.ws.photos_dir.glob("*/*") if p.is_file()]
        return files, {p.stem.casefold() for p in files}

    def _sync(self):
        """Under the lock: take in what another process wrote to the index since we last looked,
        and the names it took. The entries of the photos this batch stored win (the other process
        may have indexed them from the file alone, without their source's checksum); entries whose
        photo is gone are dropped."""
        stamp = _stamp(self.ws.index_file)
        if stamp != self._seen:
            files, self.taken = self._taken_now()
            there = {p.relative_to(self.ws.photos_dir).as_posix() for p in files}
            merged = {**self.index, **_read_index(self.ws), **{r: self.index[r] for r in self._mine}}
            self._use({r: e for r, e in merged.items() if r in there})
            self._seen = stamp

    def _free_stem(self, stem):
        """A stem no file of the workspace has, the photo and labels checked on disk too (a file
        copied in by hand since the import started)."""
        while True:
            stem_ = _unique_stem(stem, self.taken)
            if not any((self.out_dir / f"{stem_}{ext}").exists() for ext in (".jpg", ".json")):
                return stem_

    def _skip_duplicate(self, name, sha, h, summary) -> bool:
        """Count `name` as an exact (same bytes) or near (same picture, dHash `h`) duplicate of a
        stored photo, if it is one."""
        if sha in self.by_sha:
            summary.exact_duplicates.append((name, self.by_sha[sha]))
            return True
        near = None if h is None else next((rel for hh, rel in self.hashes if hamming(h, hh) <= NEAR_DUPLICATE_BITS), None)
        if near:
            summary.near_duplicates.append((name, near))
            return True
        return False

    def add(self, src: Path, summary: ImportSummary, name=None, stored_name=None):
        name = name or display(src)
        try:
            data = src.read_bytes()
        except OSError as e:
            summary.failed.append((name, f"{name}: cannot read ({e.strerror}). Fix: check the file's permissions."))
            return
        if not data:
            summary.failed.append((name, f"{name}: the file is empty (0 bytes), the copy failed. "
                                         "Fix: copy it again from the phone, or remove it."))
            return
        sha = hashlib.sha256(data).hexdigest()
        if self._skip_duplicate(name, sha, None, summary):
            return
        try:
            im = open_upright(data, self.max_side, name=name)
        except KitError as e:
            summary.failed.append((name, str(e)))
            return
        h = dhash(im)
        if self._skip_duplicate(name, sha, h, summary):
            return
        jpeg = encode_jpeg(im, JPEG_QUALITY)
        with self.ws.import_lock():
            self._sync()
            if self._skip_duplicate(name, sha, h, summary):  # another process stored it meanwhile
                return
            stem = self._free_stem(safe_stem(stored_name or src))
            rel = f"{self.scene}/{stem}.jpg"
            self.out_dir.mkdir(parents=True, exist_ok=True)  # the scene's folder may have been removed meanwhile
            write_bytes_atomic(self.out_dir / f"{stem}.jpg", jpeg)
            carried = carry_labels(src, self.out_dir / f"{stem}.json", im.size)
            self.index[rel] = {"scene": self.scene, "source": Path(name).name, "source_sha256": sha,
                               "dhash": format(h, "016x"), "width": im.width, "height": im.height}
            self.by_sha[sha] = rel
            self.hashes.append((h, rel))
            self._mine.add(rel)
            self._unsaved += 1
            if self._unsaved >= self.SAVE_EVERY:
                self.save()
        if carried is True:
            summary.labels.append(rel)
        elif carried:
            summary.failed.append((display(src.with_suffix(".json")), carried))
            summary.labels_left.append(rel)
        summary.imported.append(rel)

    def save(self):
        """Merge the index with the file and write it; call it under the workspace's import lock."""
        self._sync()
        save_index(self.ws, self.index)
        self._seen, self._unsaved = _stamp(self.ws.index_file), 0


def carry_labels(src: Path, dest_json: Path, new_size):
    """Bring a photo's labelme JSON along, its points scaled to the stored photo.

    Returns None (no JSON beside the photo), True (carried), or a message when the labels do not
    fit the photo (the photo is still imported; the JSON is left where it is).
    """
    src_json = src.with_suffix(".json")
    if not src_json.is_file():
        return None
    name = display(src_json)
    try:
        d = json.loads(src_json.read_text("utf-8-sig"))
        shapes = d["shapes"]
        w, h = upright_size(src)
        if d.get("imageWidth") and (d["imageWidth"], d.get("imageHeight")) != (w, h):
            return (f"{name}: its labels are for a {d['imageWidth']}x{d.get('imageHeight')} image but the upright "
                    f"photo is {w}x{h}; the photo was imported without them. Fix: label it again with `hack label`.")
        sx, sy = new_size[0] / w, new_size[1] / h
        for shape in shapes:
            shape["points"] = [[round(x * sx, 2), round(y * sy, 2)] for x, y in shape["points"]]
    except (ValueError, KeyError, TypeError, OSError, KitError) as e:
        return f"{name}: not a readable labelme file ({e}); the photo was imported without it. Fix: label it again."
    d.update(imagePath=dest_json.with_suffix(".jpg").name, imageData=None,
             imageWidth=new_size[0], imageHeight=new_size[1])
    write_json_atomic(dest_json, d)
    return True


def _unique_stem(stem, taken):
    candidate, k = stem, 1
    while candidate.casefold() in taken:
        k += 1
        candidate = f"{stem}_{k}"
    taken.add(candidate.casefold())
    return candidate

"""The judges' inbox: one folder or .zip per team, opened without trusting a byte of it.

A submission is either a predictions file (``predictions.json`` or ``predictions.csv``, the format
of :mod:`hackathon.deploy.predictions`) or an exported model (``model-symbol.json`` + ``model-0000.params``
+ ``classes.txt`` [+ ``export.json``], as ``hack export`` writes it). Optionally beside either:
``predictions-in-scene.json``/``.csv``, the team's predictions on the in-scene set (``--in-scene``).

Only those file names are ever taken out of a submission, into a private temporary folder; the
judges' folder is only read. Team code is never run and nothing is unpickled. Zip members that
would land outside their folder, links, encrypted members, too many members, files past the size
cap and zip bombs (checked on the declared sizes *and* while decompressing) are refused with a
message the team can act on.

Example
-------
>>> for sub in discover(Path("submissions")):
...     open_submission(sub, Path(tmp), Limits())
...     print(sub.team, sub.kind, sub.error or sub.sha256[:12])
"""
import hashlib
import os
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from hackathon.core.fileutil import display

PREDICTION_FILES = ("predictions.json", "predictions.csv")
IN_SCENE_FILES = ("predictions-in-scene.json", "predictions-in-scene.csv")
MODEL_FILES = ("model-symbol.json", "model-0000.params", "classes.txt")
OPTIONAL_MODEL_FILES = ("export.json",)
KNOWN = PREDICTION_FILES + IN_SCENE_FILES + MODEL_FILES + OPTIONAL_MODEL_FILES
# What a team might send instead of an export; named in the message so they know what to do.
CODE_OR_PICKLE = (".py", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".h5", ".sh", ".ipynb")
IGNORED_NAMES = ("__MACOSX", ".DS_Store", "Thumbs.db")
HOW_TO_SUBMIT = ("send a folder or .zip with predictions.json (hack predict) or the exported model "
                 "(model-symbol.json, model-0000.params, classes.txt from hack export)")


@dataclass
class Limits:
    """Caps on one submission; past any of them it is refused before its bytes are trusted."""

    max_file_mb: float = 300.0  # one file: the params of GluonCV's largest SSD are ~140 MB
    max_total_mb: float = 600.0  # everything taken out of one submission
    max_members: int = 200  # entries in a zip or files in a folder, ignored ones included
    max_predictions_mb: float = 100.0  # 1,000 images x 100 boxes is ~11 MB of JSON

    @property
    def max_file_bytes(self):
        return int(self.max_file_mb * 2**20)

    @property
    def max_total_bytes(self):
        return int(self.max_total_mb * 2**20)


@dataclass
class Submission:
    """One team's entry. ``error`` set means invalid; the message says what to fix."""

    team: str
    source: Path  # the folder or .zip in the judges' folder (only ever read)
    mtime: float
    kind: str = ""  # "predictions" or "model" once opened
    sha256: str = ""  # of the files taken out (names + bytes), so re-zipping the same files is the same submission
    files: dict = field(default_factory=dict)  # known name -> path in the private temp folder
    error: str = ""
    notes: list = field(default_factory=list)

    @property
    def path(self):
        """The predictions file, or the folder of the exported model."""
        if self.kind == "predictions":
            return next(self.files[n] for n in PREDICTION_FILES if n in self.files)
        if self.kind == "model":
            return self.files["model-symbol.json"].parent
        return None

    @property
    def in_scene_path(self):
        return next((self.files[n] for n in IN_SCENE_FILES if n in self.files), None)


class Refused(Exception):
    """A submission that cannot be scored; the message is shown to the team."""


def discover(folder):
    """One Submission per entry of ``folder`` (team = folder name or zip stem), sorted by team.

    Hidden entries are skipped; anything else that is neither a folder nor a .zip, and a team
    that appears twice (``a/`` and ``a.zip``), is listed as invalid so nobody is dropped silently.
    """
    folder = Path(folder)
    subs, seen = [], {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        st = entry.stat(follow_symlinks=False)
        is_zip = entry.name.lower().endswith(".zip")
        team = printable(display(entry.name[:-4] if is_zip else entry.name))
        sub = Submission(team=team, source=path, mtime=st.st_mtime)
        if stat.S_ISLNK(st.st_mode):
            sub.error = f"{display(entry.name)} is a symbolic link; copy the real folder or zip in its place."
        elif not (stat.S_ISDIR(st.st_mode) or (is_zip and stat.S_ISREG(st.st_mode))):
            sub.error = f"{display(entry.name)} is neither a folder nor a .zip; {HOW_TO_SUBMIT}."
        if team in seen:
            sub.error = (f"team {team!r} has two entries ({display(seen[team].source.name)} and "
                         f"{display(entry.name)}); keep one.")
        seen.setdefault(team, sub)
        subs.append(sub)
    return subs


def printable(name):
    """A name with its control characters spelled out (\\x1b...), so no terminal or page runs them."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def open_submission(sub, workdir, limits):
    """Take the known files of ``sub`` into ``workdir`` (safely), hash them and tell what it is.

    Sets ``sub.files``, ``sub.sha256``, ``sub.kind``; on a refusal sets ``sub.error`` instead
    (and ``sub.sha256`` of the raw zip when there is one, so the history still knows the file).
    """
    if sub.error:
        return sub
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if sub.source.is_dir():
            names, seen = _copy_folder(sub.source, workdir, limits)
        else:
            names, seen = _extract_zip(sub.source, workdir, limits)
        sub.files = {n: workdir / n for n in names}
        sub.sha256 = _hash_files(sub.files)
        sub.kind = _kind(names, seen)
        for name in PREDICTION_FILES + IN_SCENE_FILES:
            if name in sub.files and sub.files[name].stat().st_size > limits.max_predictions_mb * 2**20:
                raise Refused(f"{name} is past the cap of {limits.max_predictions_mb:g} MB for a predictions "
                              "file; keep at most 100 boxes an image (hack predict --threshold).")
        if sub.kind == "model":
            from hackathon.judge.model_check import check_export

            check_export(sub.files)
    except Refused as e:
        sub.error = str(e)
    except OSError as e:  # unreadable by the judges' account, or changed while being read
        sub.error = (f"{display(sub.source.name)} could not be read ({e.strerror or type(e).__name__}); "
                     "hand it in again as a plain folder or .zip.")
    if not sub.sha256 and sub.source.is_file():
        sub.sha256 = _hash_raw(sub.source)
    return sub


def _kind(names, seen):
    preds = [n for n in PREDICTION_FILES if n in names]
    model = [n for n in MODEL_FILES if n in names]
    if len(preds) > 1:
        raise Refused("holds both predictions.json and predictions.csv; keep the one you mean.")
    if preds and model:
        raise Refused(f"holds both {preds[0]} and a model ({', '.join(model)}); keep the one you want scored.")
    if preds:
        return "predictions"
    if model:
        missing = [n for n in MODEL_FILES if n not in names]
        if missing:
            raise Refused(f"the exported model lacks {', '.join(missing)}; send all of "
                          f"{', '.join(MODEL_FILES)} as `hack export` writes them.")
        return "model"
    code = [n for n in seen if n.lower().endswith(CODE_OR_PICKLE)]
    hint = (f" Found {', '.join(code[:3])}: the judges never run code or load pickles." if code else "")
    raise Refused(f"no predictions file or exported model found.{hint} Fix: {HOW_TO_SUBMIT}.")


def _find_root(names):
    """Where the known files sit: the top, or a single folder the team zipped around them."""
    tops = {PurePosixPath(n).parts[0] for n in names}
    if any(n in KNOWN for n in names) or len(tops) != 1:
        return ""
    return tops.pop() + "/"


def _check_member_name(name):
    """Refuse names that could land outside the extraction folder, on any OS."""
    if "\x00" in name or "\\" in name:
        raise Refused(f"member {name!r} has a backslash or NUL in its name; zip it again with a standard tool.")
    p = PurePosixPath(name)
    if p.is_absolute() or (len(name) > 1 and name[1] == ":") or ".." in p.parts:
        raise Refused(f"member {name!r} would be written outside the submission folder (absolute path or ..); "
                      "zip the files themselves, with relative names.")


def _declared_entries(path):
    """The entry count in the zip's end record, read before zipfile parses a directory of any size."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - (22 + 65535)))  # the end record and its longest comment
        tail = f.read()
    i = tail.rfind(b"PK\x05\x06")
    return struct.unpack("<H", tail[i + 10:i + 12])[0] if 0 <= i <= len(tail) - 22 else None


def _extract_zip(path, workdir, limits):
    if path.stat().st_size > limits.max_total_bytes:
        raise Refused(f"{display(path.name)} is {path.stat().st_size / 2**20:.0f} MB, past the cap of "
                      f"{limits.max_total_mb:g} MB; send only the predictions file or the exported model.")
    count = _declared_entries(path)
    if count is not None and count != 0xFFFF and count > limits.max_members:
        raise Refused(f"the zip holds {count} entries, more than {limits.max_members}; send only the "
                      "predictions file or the exported model.")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise Refused(f"{display(path.name)} is not a readable zip ({e}); zip the folder again.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise Refused(f"the zip holds {len(infos)} entries, more than {limits.max_members}; send only the "
                          "predictions file or the exported model.")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise Refused("the zip holds two members with the same name; zip the folder again.")
        for info in infos:
            _check_member_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise Refused(f"member {info.filename!r} is a symbolic link; zip the real file instead.")
            if info.flag_bits & 0x1:
                raise Refused(f"member {info.filename!r} is encrypted; send it without a password.")
        files = [i for i in infos if not i.is_dir() and not _ignored(i.filename)]
        root = _find_root([i.filename for i in files])
        wanted = {i.filename[len(root):]: i for i in files if i.filename.startswith(root)
                  and i.filename[len(root):] in KNOWN}
        total = sum(i.file_size for i in wanted.values())
        for name, info in wanted.items():
            if info.file_size > limits.max_file_bytes:
                raise Refused(f"{name} is {info.file_size / 2**20:.0f} MB, past the cap of {limits.max_file_mb:g} MB.")
        if total > limits.max_total_bytes:
            raise Refused(f"the files add up to {total / 2**20:.0f} MB, past the cap of {limits.max_total_mb:g} MB.")
        budget = limits.max_total_bytes
        for name, info in wanted.items():
            budget -= _extract_member(zf, info, workdir / name, min(info.file_size, limits.max_file_bytes), budget)
    return sorted(wanted), [PurePosixPath(i.filename).name for i in files]


def _extract_member(zf, info, dest, declared, budget):
    """Decompress in chunks, stopping as soon as the bytes exceed what the header declared."""
    written = 0
    try:
        with zf.open(info) as src, open(dest, "xb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if written > declared or written > budget:
                    raise Refused(f"{info.filename} decompresses to more than its declared {declared} bytes "
                                  "(a zip bomb or a corrupt zip); zip the folder again.")
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError, ValueError) as e:
        raise Refused(f"{info.filename} cannot be read from the zip ({type(e).__name__}: {e}); zip it again.") from None
    return written


def _copy_folder(folder, workdir, limits):
    """The folder form: same rules as a zip (no links, member and size caps), copied byte-capped."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            entries.append(p)
            if len(entries) > limits.max_members:
                raise Refused(f"the folder holds more than {limits.max_members} entries; send only the "
                              "predictions file or the exported model.")
            if p.is_symlink():
                raise Refused(f"{display(p.relative_to(folder))} is a symbolic link; put the real file there.")
        dirnames[:] = [d for d in dirnames if not _ignored(d)]
    rel = [p.relative_to(folder).as_posix() for p in entries if p.is_file() and not _ignored(p.name)]
    root = _find_root(rel)
    wanted = {r[len(root):]: folder / r for r in rel if r.startswith(root) and r[len(root):] in KNOWN}
    budget = limits.max_total_bytes
    for name, src in wanted.items():
        budget -= _copy_capped(src, workdir / name, limits, budget)
    return sorted(wanted), [PurePosixPath(r).name for r in rel]


def _copy_capped(src, dest, limits, budget):
    # a link swapped in after the walk is refused; a FIFO swapped in does not block the open
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f, open(dest, "xb") as out:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Refused(f"{display(src.name)} is not a regular file.")
        written = 0
        while chunk := f.read(1 << 20):
            written += len(chunk)
            if written > limits.max_file_bytes or written > budget:
                raise Refused(f"{display(src.name)} is past the size cap of {limits.max_file_mb:g} MB a file, "
                              f"{limits.max_total_mb:g} MB in all.")
            out.write(chunk)
    return written


def _ignored(name):
    return any(part in IGNORED_NAMES for part in PurePosixPath(name).parts)


def _hash_files(files):
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0")
        with open(files[name], "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _hash_raw(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


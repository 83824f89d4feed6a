"""`hack pack`: checked labelme labels to MXNet RecordIO in im2rec's detection layout.

Each record's label is ``[4, 5, width, height, cls, xmin, ymin, xmax, ymax, cls, ...]``: a header of
length 4 (itself, the object width 5, the image size), then one row per object with corners
normalized to [0, 1], as `tools/im2rec.py --pack-label` writes and as GluonCV's
`RecordFileDetection` and mxnet's `ImageDetIter` read; labeling/recordio.py writes the bytes
`mx.recordio` would, without importing mxnet. Pixels are made upright and resized once,
here. The same inputs give the same bytes.

The output appears whole or not at all: every file is written into a hidden folder beside
``--out`` (``.NAME.packing-*``), which then takes the place of ``--out`` in one rename (an older
pack there is replaced as a whole). ``--out`` may only hold a pack's own files, so nothing else
is ever deleted, and it may not be inside an input folder (nor hold one). The manifest lists each
file's size and sha256; `verify_pack` checks them, and every reader of a pack (training,
`hack show`, a .rec as truth) calls it first.

Example::

    >>> from labeling.pack import pack_dataset
    >>> manifest = pack_dataset(["photos"], "data", ["fish", "shark"], val_fraction=0.2, seed=0)
    >>> from gluoncv.data import RecordFileDetection
    >>> img, label = RecordFileDetection("data/train.rec")[0]   # label: [[xmin, ymin, xmax, ymax, cls]]
"""
import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from labeling.check import check_labels
from hackathon.core.errors import KitError
from hackathon.core.fileutil import atomic_path, display, file_lock, write_json_atomic, write_text_atomic
from labeling.photos import keeping_freed_memory, upright_jpeg
from labeling.recordio import IndexedRecordWriter, pack_record

FORMAT = ("im2rec detection layout: label = [4, 5, width, height] + [class, xmin, ymin, xmax, ymax] "
          "per object, corners normalized to [0, 1]")
JPEG_QUALITY = 95  # im2rec's default
PACK_FILES = ("train.rec", "train.idx", "train.lst", "val.rec", "val.idx", "val.lst", "classes.txt")
MANIFEST = "manifest.json"
# What a file browser leaves in any folder: replaced along with the pack without a word.
BROWSER_DROPPINGS = (".DS_Store", "Thumbs.db", "desktop.ini")


def split_items(items, val_fraction=0.2, seed=0, val_scene=None):
    """(train, val): all photos of `val_scene` in val, or a seeded random `val_fraction` of them."""
    items = sorted(items, key=lambda it: it.key)
    if val_scene is not None:
        scenes = sorted({it.scene for it in items})
        val = [it for it in items if it.scene == val_scene]
        train = [it for it in items if it.scene != val_scene]
        if not val:
            raise KitError(f"--val-scene {val_scene!r}: no labeled photos of that scene (scenes: {', '.join(scenes)}).")
        if not train:
            raise KitError(f"--val-scene {val_scene!r}: every photo is of that scene, nothing is left to train on. "
                           "Fix: import photos of another scene, or use --val-fraction.")
        return train, val
    if not 0 <= val_fraction < 1:
        raise KitError(f"--val-fraction {val_fraction}: give a fraction from 0 to below 1, e.g. 0.2.")
    order = np.random.RandomState(seed).permutation(len(items))
    n_val = int(round(len(items) * val_fraction))
    if val_fraction > 0 and len(items) >= 2:
        n_val = min(max(n_val, 1), len(items) - 1)
    val = sorted((items[i] for i in order[:n_val]), key=lambda it: it.key)
    train = sorted((items[i] for i in order[n_val:]), key=lambda it: it.key)
    return train, val


def record_label(item, out_w, out_h) -> np.ndarray:
    rows = [[c, x1 / item.width, y1 / item.height, x2 / item.width, y2 / item.height]
            for c, x1, y1, x2, y2 in item.boxes]
    return np.array([4, 5, out_w, out_h] + [v for r in rows for v in r], dtype=np.float32)


def encode_item(args):
    """(source, max_side, quality, name) -> (jpeg bytes, width, height), see upright_jpeg."""
    source, max_side, quality, name = args
    return upright_jpeg(source, max_side, quality, name=name)


def ordered_map(fn, jobs, executor, window):
    """fn(job) for each job, in order, at most `window` running or waiting ahead of the consumer (so
    a slow disk never piles every encoded photo up in memory). On an error, or when the consumer
    stops, the jobs not yet started are dropped."""
    if executor is None:
        yield from map(fn, jobs)
        return
    jobs = iter(jobs)
    ahead = deque(executor.submit(fn, job) for job in itertools.islice(jobs, window))
    try:
        while ahead:
            result = ahead.popleft().result()
            for job in itertools.islice(jobs, 1):
                ahead.append(executor.submit(fn, job))
            yield result
    finally:
        for future in ahead:
            future.cancel()


@contextlib.contextmanager
def decoding_threads(workers):
    """A pool of `workers` threads for encode_item (None for one), with the process tuned for them
    while it lasts. Threads, not processes: OpenCV and libjpeg release the GIL, and the JPEG bytes
    then need no pickling through a pipe (about 5% less time than a process pool, bench/RESULTS.md).
    OpenCV resizes on the calling thread alone (the other threads have the other cores), and freed
    memory is kept for the next photo (photos.keeping_freed_memory); both are put back afterwards,
    since a notebook's kernel runs on."""
    with keeping_freed_memory():
        if workers <= 1:
            yield None
            return
        import cv2

        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="hack-pack") as executor:
                yield executor
        finally:
            cv2.setNumThreads(threads)


def _write_split(name, items, build, out, max_side, quality, executor, workers, progress, classes):
    """Write NAME.rec/.idx/.lst into `build`; the .lst names photos relative to `out`, where the
    folder will be."""
    jobs = [(it.image_source, max_side, quality, display(it.json_path)) for it in items]
    records = []
    with atomic_path(build / f"{name}.rec") as rec_tmp, atomic_path(build / f"{name}.idx") as idx_tmp, \
            atomic_path(build / f"{name}.lst") as lst_tmp:
        # surrogateescape: a file name that is not UTF-8 is written with its own bytes, as im2rec reads it
        with IndexedRecordWriter(rec_tmp, idx_tmp) as writer, \
                open(lst_tmp, "w", encoding="utf-8", errors="surrogateescape") as lst:
            results = ordered_map(encode_item, jobs, executor, window=4 * workers)
            bar = tqdm(results, total=len(jobs), desc=f"pack {name}", unit="img", disable=not progress)
            for i, (it, (jpeg, w, h)) in enumerate(zip(items, bar)):
                label = record_label(it, w, h)
                writer.write_idx(i, pack_record(label, jpeg, i))
                src = it.image_source if isinstance(it.image_source, Path) else it.json_path
                lst.write("\t".join([str(i)] + [f"{v:.8g}" for v in label] + [_lst_path(src, out)]) + "\n")
                records.append({"index": i, "source": it.key, "scene": it.scene, "width": w, "height": h,
                                "boxes": [[classes[b[0]]] + [round(v, 3) for v in b[1:]] for b in it.boxes]})
    return records


def _lst_path(src, out):
    return Path(os.path.relpath(os.path.abspath(src), os.path.abspath(out))).as_posix()


def _stats(records):
    per_class = Counter(b[0] for r in records for b in r["boxes"])
    return {"images": len(records), "boxes": sum(len(r["boxes"]) for r in records),
            "per_class": dict(sorted(per_class.items())),
            "per_scene": dict(sorted(Counter(r["scene"] for r in records).items()))}


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_out_folder(roots, out):
    """KitError when `out` is an input folder, inside one (the next `hack check` would read the
    pack's manifest.json as a broken labelme file) or holds one (the pack replaces `out` whole)."""
    out_real = os.path.realpath(out)
    for root in roots:
        folder = os.path.realpath(root if not Path(root).is_file() else Path(root).parent)
        if _is_within(out_real, folder):
            raise KitError(f"--out {display(out)} is inside the input folder {display(root)}: the pack's files "
                           "would be read as labels next time. Fix: pack into a folder beside it, e.g. --out data.")
        if _is_within(folder, out_real):
            raise KitError(f"--out {display(out)} holds the input folder {display(root)}, and a pack replaces its "
                           "--out folder as a whole. Fix: pack into a folder of its own, e.g. --out data.")


def _is_within(path, folder):
    return os.path.commonpath([path, folder]) == folder


def pack_dataset(roots, out, classes, val_fraction=0.2, seed=0, val_scene=None, max_side=None,
                 workers=None, quality=JPEG_QUALITY, progress=True, report=None, include_unreviewed=False):
    """Check the labels below `roots`, then write train/val RecordIO, classes.txt and manifest.json
    into `out`, which appears whole or not at all (see the module docstring). Raises KitError when
    the labels have errors (run `check_labels` to list them).

    Photos pre-filled by `hack prefill` and not ticked `reviewed` are left out (a model's mistakes
    would be trained on as truth) unless `include_unreviewed`; manifest["unreviewed_left_out"] counts them."""
    out = Path(out)
    check_out_folder(roots, out)
    report = report or check_labels(roots, classes)
    if report.errors:
        raise KitError(f"{len(report.errors)} error(s) in the labels (listed above); nothing was packed. "
                       "Fix them, then pack again (`hack check` lists them too).")
    items = report.items if include_unreviewed else [it for it in report.items if not it.unreviewed]
    left_out = len(report.items) - len(items)
    if not items:
        unreviewed = (f" ({left_out} pre-filled photo(s) are not reviewed yet: tick 'reviewed' in labelme, or "
                      "pass --include-unreviewed)") if left_out else ""
        raise KitError("no labeled photos with boxes under " + ", ".join(display(r) for r in roots)
                       + f"{unreviewed}. Fix: label some photos with `hack label` first.")
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if workers < 1:
        raise KitError(f"--workers {workers}: give 1 or more (default: one per core).")
    if max_side is not None and max_side < 64:
        raise KitError(f"--max-side {max_side} is too small for detection. Fix: use 512 or more.")
    train, val = split_items(items, val_fraction, seed, val_scene)
    workers = min(workers, len(items))
    with _building(out) as build:
        with decoding_threads(workers) as executor:
            records = {name: _write_split(name, items, build, out, max_side, quality, executor, workers,
                                          progress, classes)
                       for name, items in (("train", train), ("val", val))}
        write_text_atomic(build / "classes.txt", "".join(c + "\n" for c in classes))
        manifest = {
            "format": FORMAT,
            "classes": list(classes),
            "settings": {"val_fraction": None if val_scene else val_fraction, "seed": seed, "val_scene": val_scene,
                         "max_side": max_side, "jpeg_quality": quality, "include_unreviewed": include_unreviewed},
            "unreviewed_left_out": left_out,
            "splits": {name: _stats(recs) for name, recs in records.items()},
            "records": records,
            "files": {f: sha256_file(build / f) for f in PACK_FILES},
            "sizes": {f: (build / f).stat().st_size for f in PACK_FILES},
        }
        write_json_atomic(build / MANIFEST, manifest)
    missing = [c for c in classes if manifest["splits"]["train"]["per_class"].get(c) and
               not manifest["splits"]["val"]["per_class"].get(c)]
    manifest["warnings"] = ([f"class(es) {', '.join(missing)} have no box in val: their mAP cannot be measured. "
                             "Fix: label more photos of them, or change --seed."] if missing and val else [])
    untrained = [c for c in classes if not manifest["splits"]["train"]["per_class"].get(c)]
    if untrained:
        manifest["warnings"].insert(0, f"class(es) {', '.join(untrained)} have no box in train: the model cannot "
                                       "learn them (their AP will be 0). Fix: label photos of them, or drop them "
                                       "from the class list.")
    return manifest


# ---- the output folder: built beside, swapped in whole ----

@contextlib.contextmanager
def _building(out):
    """Yield an empty hidden folder beside `out`; when the block succeeds, it takes `out`'s place
    in one rename and the older pack there is deleted. A pack killed at any moment leaves `out`
    as it was (its build folder is cleared by the next pack)."""
    final = Path(os.path.realpath(out))  # a symlinked --out keeps its link, to the new pack
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KitError(f"--out {display(out)}: cannot make its folder ({e.strerror}). Fix: give a writable place.") from None
    with file_lock(final.parent / f".{final.name}.pack-lock"):  # two packs into one --out take turns
        for stale in final.parent.glob(f".{glob.escape(final.name)}.packing-*"):  # left by killed packs
            shutil.rmtree(stale, ignore_errors=True)
        _refuse_foreign_files(out, final)
        try:
            build = Path(tempfile.mkdtemp(prefix=f".{final.name}.packing-", dir=final.parent))
        except OSError as e:
            raise KitError(f"--out {display(out)}: cannot write beside it in {display(final.parent)} "
                           f"({e.strerror}). Fix: give a writable place.") from None
        try:
            yield build
            os.chmod(build, 0o777 & ~_umask())  # mkdtemp makes 0700; a finished folder gets the usual mode
            _swap_in(build, final, out)
        finally:
            shutil.rmtree(build, ignore_errors=True)  # after the swap, this path holds the older pack


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse_foreign_files(out, final):
    """A pack replaces `out` as a whole: refuse when it holds anything a pack did not write."""
    if not final.exists():
        return
    if not final.is_dir():
        raise KitError(f"--out {display(out)} is a file. Fix: give a folder (new, or an older pack's).")
    known = set(PACK_FILES) | {MANIFEST} | set(BROWSER_DROPPINGS)
    foreign = sorted(n for n in os.listdir(final) if n not in known and not n.endswith(".partial"))
    if foreign:
        shown = ", ".join(display(n) for n in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise KitError(f"--out {display(out)} holds {shown}, which a pack did not write; a pack replaces the "
                       "folder as a whole. Fix: move them out, or pack into a new folder.")


def _swap_in(build, final, out):
    """Put `build` at `final`: atomically exchanged with an older pack (Linux renameat2), else
    renamed over an absent one; else the older pack is first moved aside (`build` then holds it)."""
    if not final.exists():
        os.rename(build, final)
        return
    if _exchange(build, final):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.packing-", dir=final.parent))
    try:
        os.rename(final, aside / "old")
    except OSError as e:
        raise KitError(f"--out {display(out)}: cannot replace it ({e.strerror}; a mount point?). "
                       "Fix: pack into a folder inside it, or a new one.") from None
    os.rename(build, final)
    os.rename(aside, build)


_RENAME_EXCHANGE = 2


def _exchange(a, b) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE); False where it is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # not Linux, or glibc < 2.28
        return False
    at_fdcwd = -100
    # on any failure (a file system without it, a mount point) the caller's slower way says why
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


# ---- every reader: the files against the manifest ----

def verify_pack(folder, required=True):
    """Check that the pack in `folder` is whole: every file manifest.json lists is there with its
    size and sha256 (sizes first, which catch a mixed pack at once, then the hashes, which catch
    the rest: 37 ms for the 200-photo sample pack, 8 MB; sha256 runs at ~640 MB/s, so
    ~1 s for 200 full-size 12 MP photos, beside minutes of training). Returns the manifest, or None
    when there is no manifest.json and not `required` (a .rec from mxnet's im2rec)."""
    folder = Path(folder)
    path = folder / MANIFEST
    again = (f"Fix: pack again (`hack pack LABELS --out {display(folder)}`).")
    if not path.is_file():
        if not required:
            return None
        raise KitError(f"{display(folder)}: no {MANIFEST}, so this is not a whole `hack pack` output "
                       f"(a pack stopped before its end?). {again}")
    try:
        manifest = json.loads(path.read_text("utf-8"))
        files, sizes = manifest["files"], manifest.get("sizes", {})
        if not isinstance(files, dict) or not isinstance(sizes, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise KitError(f"{display(path)}: not a readable pack manifest. {again}") from None
    bad = []
    for name in files:
        p = folder / name
        if Path(name).name != name or not p.is_file():
            bad.append(f"{name} is missing")
        elif name in sizes and p.stat().st_size != sizes[name]:
            bad.append(f"{name} is {p.stat().st_size} bytes, not {sizes[name]}")
    for name, digest in files.items():
        if not bad and sha256_file(folder / name) != digest:
            bad.append(f"{name} is not the file the manifest lists (its sha256 differs)")
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise KitError(f"{display(folder)}: {bad[0]}{more}: its files do not match {MANIFEST} (a pack was stopped "
                       f"halfway, or files were changed or mixed with another pack's). {again}")
    return manifest

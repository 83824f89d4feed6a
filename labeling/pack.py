"""`hack pack`: checked labelme labels to MXNet RecordIO in im2rec's detection layout.

Each record's label is ``[4, 5, width, height, cls, xmin, ymin, xmax, ymax, cls, ...]``: a header of
length 4 (itself, the object width 5, the image size), then one row per object with corners
normalized to [0, 1], as `tools/im2rec.py --pack-label` writes and as GluonCV's
`RecordFileDetection` and mxnet's `ImageDetIter` read; labeling/recordio.py writes the bytes
`mx.recordio` would, without importing mxnet. Pixels are made upright and resized once,
here. Every file is written under a temporary name and renamed when whole; the manifest, with
each file's checksum, comes last. The same inputs give the same bytes.

Example::

    >>> from labeling.pack import pack_dataset
    >>> manifest = pack_dataset(["photos"], "data", ["fish", "shark"], val_fraction=0.2, seed=0)
    >>> from gluoncv.data import RecordFileDetection
    >>> img, label = RecordFileDetection("data/train.rec")[0]   # label: [[xmin, ymin, xmax, ymax, cls]]
"""
import ctypes
import hashlib
import multiprocessing as mp
import os
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from labeling.check import check_labels
from labeling.errors import KitError
from labeling.fileutil import atomic_path, display, write_json_atomic, write_text_atomic
from labeling.photos import encode_jpeg, open_upright, orientation, _open
from labeling.recordio import IndexedRecordWriter, pack_record

FORMAT = ("im2rec detection layout: label = [4, 5, width, height] + [class, xmin, ymin, xmax, ymax] "
          "per object, corners normalized to [0, 1]")
JPEG_QUALITY = 95  # im2rec's default


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
    """Worker: (source, max_side, quality, name) -> (jpeg bytes, width, height).

    An upright RGB JPEG that needs no resizing is stored as it is (no second lossy encoding);
    it is still decoded once, so a truncated photo fails here and not in training.
    """
    source, max_side, quality, name = args
    im = open_upright(source, max_side, name=name)
    if isinstance(source, (str, Path)):
        with _open(source, name) as raw:
            untouched = raw.format == "JPEG" and raw.mode == "RGB" and orientation(raw) == 1 and raw.size == im.size
        if untouched:
            return Path(source).read_bytes(), im.width, im.height
    return encode_jpeg(im, quality), im.width, im.height


def _keep_freed_memory():
    """Pool initializer: a decoding worker keeps the memory it frees for the next photo. By default
    glibc hands every freed block over 128 KB back to the kernel, so each photo faults ~9 MB of
    fresh pages in again: 25-30% of the worker's CPU (bench/RESULTS.md). Not glibc: nothing to do."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: blocks up to 64 MB come from the heap...
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: ...which is not shrunk until 256 MB of it are free


def _write_split(name, items, out, max_side, quality, pool, progress, classes):
    jobs = [(it.image_source, max_side, quality, display(it.json_path)) for it in items]
    records = []
    with atomic_path(out / f"{name}.rec") as rec_tmp, atomic_path(out / f"{name}.idx") as idx_tmp, \
            atomic_path(out / f"{name}.lst") as lst_tmp:
        # surrogateescape: a file name that is not UTF-8 is written with its own bytes, as im2rec reads it
        with IndexedRecordWriter(rec_tmp, idx_tmp) as writer, \
                open(lst_tmp, "w", encoding="utf-8", errors="surrogateescape") as lst:
            results = pool.imap(encode_item, jobs, chunksize=2) if pool else map(encode_item, jobs)
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


def pack_dataset(roots, out, classes, val_fraction=0.2, seed=0, val_scene=None, max_side=None,
                 workers=None, quality=JPEG_QUALITY, progress=True, report=None):
    """Check the labels below `roots`, then write train/val RecordIO, classes.txt and manifest.json
    into `out`. Raises KitError when the labels have errors (run `check_labels` to list them)."""
    out = Path(out)
    report = report or check_labels(roots, classes)
    if report.errors:
        raise KitError(f"{len(report.errors)} error(s) in the labels (listed above); nothing was packed. "
                       "Fix them, then pack again (`hack check` lists them too).")
    if not report.items:
        raise KitError("no labeled photos with boxes under " + ", ".join(display(r) for r in roots)
                       + ". Fix: label some photos with `hack label` first.")
    if max_side is not None and max_side < 64:
        raise KitError(f"--max-side {max_side} is too small for detection. Fix: use 512 or more.")
    train, val = split_items(report.items, val_fraction, seed, val_scene)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.partial"):  # left by a pack that was killed
        stale.unlink()
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    ctx = mp.get_context("fork")
    pool = ctx.Pool(workers, initializer=_keep_freed_memory) if workers > 1 and len(report.items) > 1 else None
    try:
        records = {name: _write_split(name, items, out, max_side, quality, pool, progress, classes)
                   for name, items in (("train", train), ("val", val))}
    finally:
        if pool:
            pool.terminate()
    write_text_atomic(out / "classes.txt", "".join(c + "\n" for c in classes))
    files = ["train.rec", "train.idx", "train.lst", "val.rec", "val.idx", "val.lst", "classes.txt"]
    manifest = {
        "format": FORMAT,
        "classes": list(classes),
        "settings": {"val_fraction": None if val_scene else val_fraction, "seed": seed, "val_scene": val_scene,
                     "max_side": max_side, "jpeg_quality": quality},
        "splits": {name: _stats(recs) for name, recs in records.items()},
        "records": records,
        "files": {f: sha256_file(out / f) for f in files},
    }
    write_json_atomic(out / "manifest.json", manifest)
    missing = [c for c in classes if manifest["splits"]["train"]["per_class"].get(c) and
               not manifest["splits"]["val"]["per_class"].get(c)]
    manifest["warnings"] = ([f"class(es) {', '.join(missing)} have no box in val: their mAP cannot be measured. "
                             "Fix: label more photos of them, or change --seed."] if missing and val else [])
    return manifest

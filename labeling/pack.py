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
import contextlib
import hashlib
import itertools
import os
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from labeling.check import check_labels
from hackathon.core.errors import KitError
from hackathon.core.fileutil import atomic_path, display, write_json_atomic, write_text_atomic
from labeling.photos import keeping_freed_memory, upright_jpeg
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


def _write_split(name, items, out, max_side, quality, executor, workers, progress, classes):
    jobs = [(it.image_source, max_side, quality, display(it.json_path)) for it in items]
    records = []
    with atomic_path(out / f"{name}.rec") as rec_tmp, atomic_path(out / f"{name}.idx") as idx_tmp, \
            atomic_path(out / f"{name}.lst") as lst_tmp:
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
    workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    if workers < 1:
        raise KitError(f"--workers {workers}: give 1 or more (default: one per core).")
    if max_side is not None and max_side < 64:
        raise KitError(f"--max-side {max_side} is too small for detection. Fix: use 512 or more.")
    train, val = split_items(report.items, val_fraction, seed, val_scene)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.partial"):  # left by a pack that was killed
        stale.unlink()
    workers = min(workers, len(report.items))
    with decoding_threads(workers) as executor:
        records = {name: _write_split(name, items, out, max_side, quality, executor, workers, progress, classes)
                   for name, items in (("train", train), ("val", val))}
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

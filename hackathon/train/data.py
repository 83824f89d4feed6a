"""Training and validation data from `hack pack`'s RecordIO: records, batches, SSD targets.

A record holds a JPEG and the im2rec detection label (``[4, 5, w, h]`` then ``[cls, x1, y1, x2,
y2]`` normalized per object; labeling/pack.py). Training samples are augmented
(:mod:`hackathon.train.augment`) and turned into SSD targets (GluonCV's ``SSDTargetGenerator``, ported to numpy) in
DataLoader worker processes, so the model's cores only run the model.

Batches come from :class:`EpochBatches`: each epoch a seeded permutation, cut into shards for
several machines and into batches of a fixed size (the last one filled from the epoch's start, so
a statically hybridized net never sees a new shape). Sample ``(epoch, i)`` is always augmented the
same way, which is what makes ``--resume`` exact.

Example
-------
>>> data = DataDir("data")                              # checks the files and class list
>>> train = DetectionRecords(data.rec("train"))
>>> img, boxes, ids = train.read(0)                     # HWC RGB uint8, pixels, class ids
"""
import math
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display
from labeling.pack import verify_pack
from labeling.workspace import read_classes

RECORD_FILES = ("train.rec", "train.idx", "val.rec", "val.idx", "classes.txt")


class DataDir:
    """A `hack pack` output folder: train/val RecordIO and classes.txt, checked on opening against
    its manifest.json (every file's size and sha256, labeling.pack.verify_pack)."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise KitError(f"{display(self.path)}: no such folder. Fix: `hack pack photos --out {self.path}` first.")
        missing = [f for f in RECORD_FILES if not (self.path / f).is_file()]
        if missing:
            raise KitError(f"{display(self.path)}: missing {', '.join(missing)}: not a `hack pack` output. "
                           f"Fix: `hack pack photos --out {self.path}`.")
        self.manifest = verify_pack(self.path)  # a pack stopped halfway, or mixed with another's
        self.classes = read_classes(self.path / "classes.txt")

    def rec(self, split):
        return self.path / f"{split}.rec"


class DetectionRecords:
    """Random access to a detection ``.rec`` (+ ``.idx``), opened lazily in each process.

    Parameters
    ----------
    rec_path : Path
        The ``.rec``; its ``.idx`` must sit beside it.
    num_classes : int, optional
        When given, a record naming a class id outside ``0..num_classes-1`` is a KitError.
    decode_side : int, optional
        Decode large JPEGs at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) as long as the long
        side stays at least this big: the detector sees ``data_shape`` pixels anyway.
    """

    def __init__(self, rec_path, num_classes=None, decode_side=None):
        self.rec_path = Path(rec_path)
        self.idx_path = self.rec_path.with_suffix(".idx")
        self.num_classes, self.decode_side = num_classes, decode_side
        self.keys = self._read_index()
        self._reader, self._pid = None, None

    def _read_index(self):
        keys = []
        with open(self.idx_path, encoding="ascii") as f:
            for n, line in enumerate(f, 1):
                parts = line.split("\t")
                if len(parts) != 2 or not parts[0].strip().isdigit():
                    raise KitError(f"{display(self.idx_path)} line {n}: not a RecordIO index line. "
                                   "Fix: pack the data again (`hack pack`).")
                keys.append(int(parts[0]))
        if not keys:
            raise KitError(f"{display(self.rec_path)}: no records (an empty split). Fix: pack with more "
                           "labeled photos, or a --val-fraction that leaves photos on both sides.")
        return keys

    def __len__(self):
        return len(self.keys)

    def _record(self, i):
        import mxnet as mx

        if self._reader is None or self._pid != os.getpid():  # a forked worker opens its own handle
            self._reader = mx.recordio.MXIndexedRecordIO(str(self.idx_path), str(self.rec_path), "r")
            self._pid = os.getpid()
        return mx.recordio.unpack(self._reader.read_idx(self.keys[i]))

    def label(self, i):
        """(boxes normalized (n, 4), class ids (n,)) of record i, checked."""
        header, _ = self._record(i)
        return self._parse_label(header.label, i)

    def _parse_label(self, label, i):
        from labeling.recordio import parse_detection_label

        where = f"{display(self.rec_path)} record {i}"
        try:
            _, _, _, rows = parse_detection_label(np.asarray(label, np.float32))
        except ValueError as e:
            raise KitError(f"{where}: {e}. Fix: pack with `hack pack`.") from None
        rows = rows.astype(np.float32)
        ids, boxes = rows[:, 0].astype(np.int64), rows[:, 1:5]
        if self.num_classes is not None and len(ids) and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise KitError(f"{where}: class id {int(ids.max())} but classes.txt lists {self.num_classes}. "
                           "Fix: pack again with the same class list.")
        return boxes, ids

    def read(self, i):
        """(HWC RGB uint8 image, boxes (n, 4) in its pixels, class ids (n,)) of record i."""
        header, jpeg = self._record(i)
        boxes, ids = self._parse_label(header.label, i)
        img = decode(jpeg, self.decode_side)
        if img is None:
            raise KitError(f"{display(self.rec_path)} record {i}: the image does not decode. Fix: pack again.")
        h, w = img.shape[:2]
        return img, boxes * np.array([w, h, w, h], np.float32), ids


def decode(jpeg_bytes, min_side=None):
    """Decode to RGB, at 1/2, 1/4 or 1/8 scale when the long side stays >= min_side."""
    buf = np.frombuffer(jpeg_bytes, np.uint8)
    flag = cv2.IMREAD_COLOR
    if min_side:
        w, h = _jpeg_size(jpeg_bytes) or (0, 0)
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if max(w, h) / factor >= min_side:
                flag = reduced
                break
    img = cv2.imdecode(buf, flag)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _jpeg_size(data):
    """(width, height) from a JPEG's SOF marker, without decoding; None if not found."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    return None


def repeat_factors(records, threshold):
    """Per-image repeat factors of repeat-factor sampling (Gupta et al., LVIS, 2019): a class found
    in a fraction f of the photos gets r = max(1, sqrt(threshold / f)), a photo the largest r of its
    classes. threshold 0: all ones. E.g. at 0.3 a class on 9% of the photos is seen ~1.8x as often,
    one on 44% as before."""
    n = len(records)
    if not threshold or not n:
        return np.ones(n)
    ids = [set(records.label(i)[1].tolist()) for i in range(n)]
    photos_with = Counter(c for row in ids for c in row)
    r_class = {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in photos_with.items()}
    return np.array([max([r_class[c] for c in row], default=1.0) for row in ids])


class EpochBatches:
    """Batches of sample keys ``(epoch, i)`` for one shard: a seeded permutation each epoch, split
    into ``num_parts`` equal shards (several machines) and batches of exactly ``batch_size``.

    Shards and the last batch are filled by wrapping around the epoch's order, so every machine
    runs the same number of steps (dist_sync waits for all) and every batch has one shape.

    ``repeats`` (:func:`repeat_factors`, one per sample): each epoch sample i comes floor(r_i)
    times, and once more for the epoch's remaining places, drawn (seeded) in proportion to r_i's
    fraction, so every epoch has the same length, round(sum r). The k-th extra copy is key
    ``(epoch, i, k)`` (augmented its own way).
    """

    def __init__(self, n, batch_size, seed=0, num_parts=1, part_index=0, shuffle=True, repeats=None):
        self.base_n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.repeats = None if repeats is None or np.allclose(repeats, 1) else np.asarray(repeats, np.float64)
        self.n = n if self.repeats is None else int(round(self.repeats.sum()))
        self.num_parts, self.part_index = num_parts, part_index
        self.epoch = 0
        self.per_part = math.ceil(self.n / num_parts)
        self.steps = math.ceil(self.per_part / batch_size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.steps

    def _keys(self):
        """This epoch's sample keys, in order."""
        rs = np.random.RandomState([self.seed, self.epoch])
        if self.repeats is None:
            order = rs.permutation(self.n) if self.shuffle else np.arange(self.n)
            return [(self.epoch, int(i)) for i in order]
        counts = np.floor(self.repeats).astype(int)
        frac = self.repeats - counts
        extra = self.n - counts.sum()
        if extra > 0:
            counts[rs.choice(self.base_n, extra, replace=False, p=frac / frac.sum())] += 1
        keys = [(self.epoch, i) if k == 0 else (self.epoch, i, k) for i in range(self.base_n) for k in range(counts[i])]
        order = rs.permutation(len(keys)) if self.shuffle else np.arange(len(keys))
        return [keys[j] for j in order]

    def __iter__(self):
        keys = self._keys()
        order = np.resize(np.arange(len(keys)), self.per_part * self.num_parts)  # wraps around
        mine = order[self.part_index::self.num_parts]
        mine = np.resize(mine, self.steps * self.batch_size)
        for s in range(self.steps):
            yield [keys[int(j)] for j in mine[s * self.batch_size:(s + 1) * self.batch_size]]


class TrainSamples:
    """Dataset for Gluon's DataLoader: key ``(epoch, i)`` -> (image CHW, cls targets, box targets)."""

    def __init__(self, records, augment, anchors, seed=0):
        self.records, self.augment, self.seed = records, augment, seed
        self.anchors = np.asarray(anchors.asnumpy() if hasattr(anchors, "asnumpy") else anchors, np.float32)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, key):
        i = key[1]  # key (epoch, i), or (epoch, i, k): the k-th extra copy of sample i in a repeat-factor epoch
        rng = np.random.default_rng([self.seed, *key])
        img, boxes, ids = self.records.read(i)
        x, boxes, ids = self.augment(img, boxes, ids, rng)
        cls_t, box_t = self.targets(boxes, ids)
        return x, cls_t, box_t

    def targets(self, boxes, ids):
        return ssd_targets(self.anchors, boxes, ids)


_STDS = np.array([0.1, 0.1, 0.2, 0.2], np.float32)


def ssd_targets(anchors, boxes, ids, iou_thresh=0.5):
    """SSD training targets in numpy: what GluonCV's ``SSDTargetGenerator(iou_thresh=0.5,
    negative_mining_ratio=-1)`` returns, ~10x faster (tests/test_train_data.py compares them).

    anchors: (1, N, 4) or (N, 4) centre-form (cx, cy, w, h); boxes: (M, 4) corners; ids: (M,).
    Returns (class targets (N,): 0 background, id + 1 matched; box targets (N, 4), zero when
    unmatched). Matching as GluonCV's: every object first takes its best anchor, greedily by IoU
    over all pairs (``bipartite_matching``); an anchor whose best object has no better anchor joins
    it (``share_max=False``); then any anchor with IoU >= iou_thresh joins its best object.
    """
    from hackathon.train.augment import box_iou

    a = np.asarray(anchors, np.float32).reshape(-1, 4)
    n = len(a)
    if not len(boxes):
        return np.zeros((n,), np.float32), np.zeros((n, 4), np.float32)
    corners = np.concatenate([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], axis=1)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    iou = box_iou(corners, boxes).astype(np.float32)  # (N, M)
    match = np.full(n, -1, np.int64)
    free = iou.copy()
    for _ in range(len(boxes)):  # greedy global maximum, first (anchor-major) pair on ties
        i, j = divmod(int(np.argmax(free)), free.shape[1])
        if free[i, j] < 1e-12:
            break
        match[i] = j
        free[i, :] = -1
        free[:, j] = -1
    best = iou.argmax(axis=1)
    best_iou = iou[np.arange(n), best]
    shared = best_iou + 1e-12 >= iou.max(axis=0)[best]
    match = np.where(match < 0, np.where(shared, best, -1), match)
    match = np.where(match < 0, np.where(best_iou >= iou_thresh, best, -1), match)
    pos = match >= 0
    cls_t = np.where(pos, np.asarray(ids, np.float32)[np.maximum(match, 0)] + 1, 0).astype(np.float32)
    # the encoder sees the anchors as corners and turns them back into centres, as GluonCV's does
    aw, ah = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    ax, ay = corners[:, 0] + aw / 2, corners[:, 1] + ah / 2
    g = boxes[np.maximum(match, 0)]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    gx, gy = g[:, 0] + gw / 2, g[:, 1] + gh / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.stack([(gx - ax) / aw, (gy - ay) / ah, np.log(gw / aw), np.log(gh / ah)], axis=1) / _STDS
    box_t = np.where(pos[:, None], codes, 0).astype(np.float32)
    return cls_t, box_t


class ValSamples:
    """Validation: image resized to the square input (as GluonCV's SSDDefaultValTransform), and
    the label as rows ``[x1, y1, x2, y2, cls]`` in input pixels, padded with -1 by the batchify."""

    def __init__(self, records, size):
        self.records, self.size = records, size

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        from hackathon.train.augment import normalize

        img, boxes, ids = self.records.read(i)
        h, w = img.shape[:2]
        interp = cv2.INTER_AREA if max(w, h) > self.size else cv2.INTER_CUBIC
        x = normalize(cv2.resize(img, (self.size, self.size), interpolation=interp))
        boxes = boxes * np.array([self.size / w, self.size / h] * 2, np.float32)
        return x, np.hstack([boxes, ids[:, None].astype(np.float32)]).astype(np.float32)


def train_loader(samples, batches, workers=None):
    """Batches of (image, class targets, box targets); `workers` None: the kit's default for this machine."""
    from gluoncv.data.batchify import Stack, Tuple
    from mxnet import gluon

    from hackathon.core.cores import default_workers

    workers = default_workers() if workers is None else workers

    return gluon.data.DataLoader(samples, batch_sampler=batches, batchify_fn=Tuple(Stack(), Stack(), Stack()),
                                 num_workers=workers, thread_pool=False, prefetch=2 * max(workers, 1))


def val_loader(samples, batch_size, workers=None):
    from gluoncv.data.batchify import Pad, Stack, Tuple
    from mxnet import gluon

    from hackathon.core.cores import default_workers

    workers = default_workers() if workers is None else workers

    return gluon.data.DataLoader(samples, batch_size=batch_size, shuffle=False, last_batch="keep",
                                 batchify_fn=Tuple(Stack(), Pad(pad_val=-1)), num_workers=workers,
                                 thread_pool=False)

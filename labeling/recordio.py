"""Writing MXNet RecordIO (.rec + .idx) without importing mxnet.

`import mxnet` costs about 3 s of CPU (it builds a Python function for every operator): more
than decoding an evening's photos on two cores, and `hack pack` needs none of it to write a few
bytes of framing around each JPEG. The format is dmlc-core's `RecordIOWriter` (src/recordio.cc),
unchanged since 2015; the records are `mx.recordio.pack`'s. The bytes are exactly the ones
`mx.recordio.MXIndexedRecordIO` writes (tests/test_recordio.py compares them), so mxnet, GluonCV
and `hack show` read the files as ever.

Example::

    >>> with IndexedRecordWriter("train.rec", "train.idx") as w:
    ...     w.write_idx(0, pack_record([4, 5, 640, 480, 0, 0.1, 0.2, 0.5, 0.6], jpeg_bytes, 0))
"""
import struct

import numpy as np

_MAGIC_WORD = 0xCED7230A
MAGIC = struct.pack("<I", _MAGIC_WORD)  # starts every record part (dmlc::RecordIOWriter::kMagic)
_LREC = struct.Struct("<I")  # (continue flag << 29) | length of the part
_HEADER = struct.Struct("<IfQQ")  # mx.recordio.IRHeader: flag, label, id, id2
MAX_RECORD = (1 << 29) - 1


def pack_record(label, payload: bytes, id: int, id2: int = 0) -> bytes:
    """What `mx.recordio.pack(IRHeader(0, label, id, id2), payload)` returns for a 1-D label array:
    the header's flag holds the label's length and the float32 label goes before the payload."""
    label = np.asarray(label, dtype="<f4").ravel()
    if not label.size:
        raise ValueError("pack_record: the label is empty; a detection record has at least its 4-value header.")
    return _HEADER.pack(label.size, 0.0, id, id2) + label.tobytes() + payload


class IndexedRecordWriter:
    """`mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "w")`, writing only."""

    def __init__(self, rec_path, idx_path):
        self._rec = open(rec_path, "wb")
        self._idx = open(idx_path, "w", encoding="ascii", newline="\n")

    def write_idx(self, idx: int, record: bytes):
        """Append `record` and note its byte offset under key `idx` in the .idx file."""
        pos = self._rec.tell()
        self._rec.write(frame(record))
        self._idx.write(f"{idx}\t{pos}\n")

    def close(self):
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def frame(record: bytes) -> bytes:
    """One record as dmlc's RecordIOWriter::WriteRecord lays it out: magic, length, data, zero padding
    to 4 bytes. Where the magic number itself appears at a 4-byte boundary in the data, the record is
    split there (continue flags 1, 2, 3) so a reader that resyncs on the magic never lands mid-record."""
    n = len(record)
    if n > MAX_RECORD:
        raise ValueError(f"a RecordIO record holds at most {MAX_RECORD} bytes, this one is {n}.")
    out = []
    start = 0
    words = np.frombuffer(record, dtype="<u4", count=n // 4)  # the whole 4-byte words, as dmlc checks them
    for hit in (4 * np.flatnonzero(words == _MAGIC_WORD)).tolist():
        out += [MAGIC, _LREC.pack((1 if start == 0 else 2) << 29 | (hit - start)), record[start:hit]]
        start = hit + 4
    out += [MAGIC, _LREC.pack((3 if start else 0) << 29 | (n - start)), record[start:], b"\0" * (-n % 4)]
    return b"".join(out)


def parse_detection_label(label):
    """im2rec's detection label, read back: ``(header width, object width, (w, h) or None, rows)``.

    The layout `hack pack` writes and GluonCV's ``RecordFileDetection`` reads: ``[A, B, (extra
    header values), objects...]`` with A >= 2 the header's length, B >= 5 each object's length
    (``class, xmin, ymin, xmax, ymax[, difficult]``, normalized), and with A >= 4 the photo's width
    and height at 2 and 3 (0 when unknown). Raises ValueError saying what is malformed; the caller
    names the file and record.
    """
    label = np.asarray(label, dtype=np.float64).ravel()
    if label.size < 2 or not np.isfinite(label[:2]).all():
        raise ValueError(f"not in the detection layout [4, 5, w, h, ...] ({label.size} values)")
    head, width = int(label[0]), int(label[1])
    if head < 2 or width < 5 or label.size < head or (label.size - head) % width:
        raise ValueError(f"not in the detection layout [4, 5, w, h, ...] (header {head}, object width {width}, "
                         f"{label.size} values)")
    size = (int(label[2]), int(label[3])) if head >= 4 and label[2] > 0 and label[3] > 0 else None
    return head, width, size, label[head:].reshape(-1, width)

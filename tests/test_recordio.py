"""labeling.recordio writes the very bytes mxnet's own RecordIO writer writes, and mxnet reads them back."""
import numpy as np
import pytest

from labeling.recordio import MAGIC, IndexedRecordWriter, pack_record

mx = pytest.importorskip("mxnet")

RECORDS = [
    b"",
    b"a",
    b"abcde",
    bytes(range(256)) * 3 + b"xy",
    MAGIC,  # the whole record is the magic number
    MAGIC + b"tail",  # at the start
    b"abcd" + MAGIC + MAGIC + b"ef",  # twice in a row, at a 4-byte boundary
    b"ab" + MAGIC + b"cdefg",  # not at a boundary: no split
    b"abcdefgh" + MAGIC,  # at the very end
    b"abc" + MAGIC + b"d" + MAGIC,  # one off the boundary, one on it
    np.random.RandomState(0).bytes(100_003),
]


def write_both(tmp_path, records, labels=None):
    ours_rec, ours_idx = tmp_path / "ours.rec", tmp_path / "ours.idx"
    theirs_rec, theirs_idx = tmp_path / "mx.rec", tmp_path / "mx.idx"
    mxw = mx.recordio.MXIndexedRecordIO(str(theirs_idx), str(theirs_rec), "w")
    with IndexedRecordWriter(ours_rec, ours_idx) as w:
        for i, r in enumerate(records):
            if labels is None:
                w.write_idx(i, r)
                mxw.write_idx(i, r)
            else:
                w.write_idx(i, pack_record(labels[i], r, i))
                mxw.write_idx(i, mx.recordio.pack(mx.recordio.IRHeader(0, labels[i], i, 0), r))
    mxw.close()
    return (ours_rec, ours_idx), (theirs_rec, theirs_idx)


def test_same_bytes_as_mxnet_even_when_the_data_holds_the_magic_number(tmp_path):
    (ours_rec, ours_idx), (mx_rec, mx_idx) = write_both(tmp_path, RECORDS)
    assert ours_rec.read_bytes() == mx_rec.read_bytes()
    assert ours_idx.read_bytes() == mx_idx.read_bytes()
    r = mx.recordio.MXIndexedRecordIO(str(ours_idx), str(ours_rec), "r")
    assert [r.read_idx(i) for i in range(len(RECORDS))] == RECORDS
    r.close()


def test_detection_records_match_mx_recordio_pack(tmp_path):
    labels = [[4, 5, 640, 480, 1, 0.1, 0.2, 0.5, 0.6],
              [4, 5, 1024, 768, 0, 0.0, 0.0, 1.0, 1.0, 3, 0.25, 0.5, 0.75, 0.875]]
    payloads = [b"\xff\xd8jpeg" + MAGIC + b"\xff\xd9", b"\xff\xd8" + bytes(1001)]
    (ours_rec, ours_idx), (mx_rec, _) = write_both(tmp_path, payloads, labels)
    assert ours_rec.read_bytes() == mx_rec.read_bytes()
    r = mx.recordio.MXIndexedRecordIO(str(ours_idx), str(ours_rec), "r")
    for i, (label, payload) in enumerate(zip(labels, payloads)):
        header, data = mx.recordio.unpack(r.read_idx(i))
        assert header.id == i
        np.testing.assert_allclose(header.label, np.float32(label))
        assert data == payload
    r.close()


def test_an_empty_label_is_refused():
    with pytest.raises(ValueError, match="label is empty"):
        pack_record([], b"x", 0)

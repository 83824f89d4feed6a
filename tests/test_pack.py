"""hack pack: real RecordIO read back by GluonCV and mxnet, boxes equal to labelme's, same bytes twice,
atomic when killed, and nothing written when the labels are wrong."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from gluoncv.data import RecordFileDetection

from hackathon.cli import cli
from labeling.check import check_labels
from hackathon.core.errors import KitError
from labeling.pack import pack_dataset, split_items
from labeling.workspace import read_classes
from labelme_data import labeled_set, labelme_json, photo, rect

CLASSES = ["fish", "shark"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "aquarium-scene-a"


def json_boxes(labels_root, manifest, split):
    """{record index: [[xmin, ymin, xmax, ymax, cls] scaled to the packed image]} from the labelme files."""
    out = {}
    for r in manifest["records"][split]:
        d = json.loads((Path(labels_root) / r["source"]).read_text("utf-8"))
        sx, sy = r["width"] / d["imageWidth"], r["height"] / d["imageHeight"]
        rows = []
        for s in d["shapes"]:
            (x1, y1), (x2, y2) = np.min(s["points"], 0), np.max(s["points"], 0)
            rows.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy, manifest["classes"].index(s["label"])])
        out[r["index"]] = sorted(rows)
    return out


def flat(rows):
    return [v for r in rows for v in r]


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_gluoncv_reads_back_every_box(tmp_path):
    labeled_set(tmp_path / "labels", n=10, size=(640, 480))
    m = pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, val_fraction=0.3, seed=1,
                     max_side=320, progress=False)
    assert m["splits"]["train"]["images"] == 7 and m["splits"]["val"]["images"] == 3
    for split in ("train", "val"):
        ds = RecordFileDetection(str(tmp_path / "data" / f"{split}.rec"))
        expected = json_boxes(tmp_path / "labels", m, split)
        assert len(ds) == len(expected)
        for i in range(len(ds)):
            img, label = ds[i]
            assert img.shape == (240, 320, 3)
            assert flat(sorted(label.tolist())) == pytest.approx(flat(expected[i]), abs=0.01)


def test_imagedetiter_reads_the_same_records(tmp_path):
    labeled_set(tmp_path / "labels", n=4, size=(320, 240))
    m = pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, val_fraction=0, progress=False)
    it = mx.image.ImageDetIter(batch_size=1, data_shape=(3, 240, 320),
                               path_imgrec=str(tmp_path / "data" / "train.rec"),
                               path_imgidx=str(tmp_path / "data" / "train.idx"))
    expected = json_boxes(tmp_path / "labels", m, "train")
    for i, batch in enumerate(it):
        row = batch.label[0].asnumpy()[0][0]  # [cls, xmin, ymin, xmax, ymax] normalized
        want = expected[i][0]
        assert row[0] == want[4]
        assert row[1:5] * [320, 240, 320, 240] == pytest.approx(want[:4], abs=0.01)
    assert i == 3


def test_record_layout_is_im2recs(tmp_path):
    labeled_set(tmp_path / "labels", n=2)
    pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, val_fraction=0, progress=False)
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "data/train.idx"), str(tmp_path / "data/train.rec"), "r")
    header, _ = mx.recordio.unpack(rec.read_idx(0))
    assert list(header.label[:4]) == [4, 5, 320, 240] and len(header.label) == 9
    lst = (tmp_path / "data/train.lst").read_text().splitlines()
    assert lst[0].split("\t")[:5] == ["0", "4", "5", "320", "240"] and lst[0].endswith("img_00.jpg")
    assert (tmp_path / "data/classes.txt").read_text() == "fish\nshark\n"


def test_same_inputs_same_bytes(tmp_path):
    labeled_set(tmp_path / "labels", n=8, size=(640, 480))
    for out in ("a", "b"):
        pack_dataset([tmp_path / "labels"], tmp_path / out, CLASSES, max_side=400, progress=False)
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b"))
    assert names == sorted(["train.rec", "train.idx", "train.lst", "val.rec", "val.idx", "val.lst",
                            "classes.txt", "manifest.json"])
    for n in names:
        assert sha(tmp_path / "a" / n) == sha(tmp_path / "b" / n), n


def test_one_thread_or_several_same_bytes_and_the_process_is_put_back(tmp_path):
    import cv2

    labeled_set(tmp_path / "labels", n=9, size=(1600, 1200))
    threads = cv2.getNumThreads()
    for out, workers in (("one", 1), ("three", 3)):
        pack_dataset([tmp_path / "labels"], tmp_path / out, CLASSES, max_side=400, workers=workers, progress=False)
    for n in os.listdir(tmp_path / "one"):
        assert sha(tmp_path / "one" / n) == sha(tmp_path / "three" / n), n
    assert cv2.getNumThreads() == threads  # a notebook's OpenCV keeps its threads after a pack


def test_a_cut_photo_stops_the_pack_naming_it_and_writes_nothing(tmp_path):
    """`hack check` reads headers only; the pixels of a half-copied photo fail in the decoding threads."""
    labeled_set(tmp_path / "labels", n=8, size=(1600, 1200))
    cut = tmp_path / "labels" / "img_05.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    r = CliRunner().invoke(cli, ["pack", str(tmp_path / "labels"), "--out", str(tmp_path / "data"),
                                 "--classes", "fish,shark", "--max-side", "400", "--workers", "2"])
    assert r.exit_code == 1, r.output
    assert "img_05" in r.output and "corrupt or truncated" in r.output and "Fix:" in r.output
    assert not [n for n in os.listdir(tmp_path / "data") if not n.startswith(".")]
    assert cut.read_bytes() == data[: len(data) * 2 // 3]  # the user's file is left as it was


def test_workers_below_one_is_one_clear_error(tmp_path):
    labeled_set(tmp_path / "labels", n=2)
    r = CliRunner().invoke(cli, ["pack", str(tmp_path / "labels"), "--out", str(tmp_path / "data"),
                                 "--classes", "fish,shark", "--workers", "0"])
    assert r.exit_code == 1 and "--workers 0: give 1 or more" in r.output


def test_manifest_counts_sources_and_checksums(tmp_path):
    labeled_set(tmp_path / "labels", n=6)
    m = pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, val_fraction=0.5, progress=False)
    on_disk = json.loads((tmp_path / "data/manifest.json").read_text())
    assert on_disk["splits"] == m["splits"]
    assert m["splits"]["train"]["per_class"] | {} and sum(s["boxes"] for s in m["splits"].values()) == 6
    sources = sorted(r["source"] for s in m["records"].values() for r in s)
    assert sources == [f"img_{i:02d}.json" for i in range(6)]
    for name, digest in m["files"].items():
        assert sha(tmp_path / "data" / name) == digest


def test_split_by_seed_and_by_scene(tmp_path):
    labeled_set(tmp_path / "labels", n=6, scene="tank-a")
    labeled_set(tmp_path / "labels", n=3, scene="tank-b")
    items = check_labels([tmp_path / "labels"], CLASSES).items
    a = split_items(items, 0.3, seed=0)[1]
    b = split_items(items, 0.3, seed=5)[1]
    assert len(a) == len(b) == 3 and {i.key for i in a} != {i.key for i in b}
    train, val = split_items(items, val_scene="tank-b")
    assert {i.scene for i in val} == {"tank-b"} and {i.scene for i in train} == {"tank-a"}
    with pytest.raises(KitError, match="no labeled photos of that scene"):
        split_items(items, val_scene="tank-z")


def test_label_errors_stop_the_pack_and_write_nothing(tmp_path):
    labeled_set(tmp_path / "labels", n=3)
    labelme_json(photo(tmp_path / "labels" / "bad.jpg"), [rect("whale", 1, 1, 40, 40)])
    r = CliRunner().invoke(cli, ["pack", str(tmp_path / "labels"), "--out", str(tmp_path / "data"),
                                 "--classes", "fish,shark"])
    assert r.exit_code == 1 and "unknown class 'whale'" in r.output and "nothing was packed" in r.output
    assert not (tmp_path / "data").exists() or not os.listdir(tmp_path / "data")


def test_unicode_and_spaces_in_paths(tmp_path):
    labeled_set(tmp_path / "étiquettes 鱼", n=3)
    out = tmp_path / "données out"
    r = CliRunner().invoke(cli, ["pack", str(tmp_path / "étiquettes 鱼"), "--out", str(out), "--classes", "fish,shark"])
    assert r.exit_code == 0, r.output
    assert len(RecordFileDetection(str(out / "train.rec"))) + len(RecordFileDetection(str(out / "val.rec"))) == 3


def _kill_mid_pack(tmp_path, out):
    cmd = [sys.executable, "-m", "hackathon.cli", "pack", str(tmp_path / "labels"), "--out", str(out),
           "--classes", "fish,shark", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        partial = list(out.glob(".train.rec.*.partial")) if out.exists() else []
        if partial and partial[0].stat().st_size > 200_000:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    return False


def test_a_killed_pack_leaves_no_half_file_and_keeps_the_old_one(tmp_path):
    labeled_set(tmp_path / "labels", n=40, size=(1600, 1200))
    out = tmp_path / "data"
    assert _kill_mid_pack(tmp_path, out), "the pack finished before it could be killed"
    assert not (out / "train.rec").exists() and not (out / "manifest.json").exists()
    pack_dataset([tmp_path / "labels"], out, CLASSES, progress=False)
    before = {n: sha(out / n) for n in os.listdir(out) if not n.startswith(".")}
    assert _kill_mid_pack(tmp_path, out)
    after = {n: sha(out / n) for n in os.listdir(out) if not n.startswith(".")}
    assert after == before  # the finished dataset is untouched by the killed run
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(sha(out / n) == d for n, d in manifest["files"].items())


def test_real_photos_every_box_read_back(tmp_path):
    if not SHARED.is_dir():
        pytest.skip("../shared data absent")
    classes = read_classes(SHARED / "labels.txt")
    m = pack_dataset([SHARED], tmp_path / "data", classes, val_fraction=0.2, seed=0, max_side=256, progress=False)
    assert m["splits"]["train"]["images"] + m["splits"]["val"]["images"] == 199  # one photo has no boxes
    for split in ("train", "val"):
        ds = RecordFileDetection(str(tmp_path / "data" / f"{split}.rec"))
        expected = json_boxes(SHARED, m, split)
        for i in range(len(ds)):
            _, label = ds[i]
            assert flat(sorted(label.tolist())) == pytest.approx(flat(expected[i]), abs=0.02)


def test_file_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "labels"
    labeled_set(root, n=2)
    odd = os.fsdecode(os.fsencode(str(root)) + b"/caf\xe9 1.jpg")
    photo(odd)
    labelme_json(odd, [rect("fish", 10, 10, 90, 90)])
    m = pack_dataset([root], tmp_path / "data", CLASSES, val_fraction=0, progress=False)
    assert m["splits"]["train"]["images"] == 3
    assert "caf\\xe9 1.json" in [r["source"] for r in m["records"]["train"]]
    assert b"caf\xe9 1.jpg" in (tmp_path / "data" / "train.lst").read_bytes()
    assert len(RecordFileDetection(str(tmp_path / "data" / "train.rec"))) == 3


def test_empty_workspace_is_said_plainly(tmp_path):
    runner = CliRunner()
    runner.invoke(cli, ["init", str(tmp_path / "ws"), "--classes", "fish"])
    for args in (["check"], ["pack", "--out", str(tmp_path / "d")]):
        r = runner.invoke(cli, ["--project", str(tmp_path / "ws")] + args)
        assert r.exit_code == 1 and "Fix:" in r.output and "hack " in r.output, r.output
        assert "Traceback" not in r.output

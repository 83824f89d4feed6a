"""hack pack: real RecordIO read back by GluonCV and mxnet, boxes equal to labelme's, same bytes twice,
atomic when killed, and nothing written when the labels are wrong."""
import hashlib
import json
import os
import signal
import shutil
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
from hackathon.train.data import DataDir
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
    """The check before packing finds a half-copied photo from its missing end marker (issue 13.4),
    before any photo is decoded or any file written."""
    labeled_set(tmp_path / "labels", n=8, size=(1600, 1200))
    cut = tmp_path / "labels" / "img_05.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    r = CliRunner().invoke(cli, ["pack", str(tmp_path / "labels"), "--out", str(tmp_path / "data"),
                                 "--classes", "fish,shark", "--max-side", "400", "--workers", "2"])
    assert r.exit_code == 1, r.output
    assert "img_05" in r.output and "corrupt or truncated" in r.output and "Fix:" in r.output
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".data.packing-*"))
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


def _kill_mid_pack(tmp_path, out, split="train", seed=0):
    """SIGKILL a `hack pack` while it writes SPLIT.rec (in --out, or in the folder it builds beside)."""
    cmd = [sys.executable, "-m", "hackathon.cli", "pack", str(tmp_path / "labels"), "--out", str(out),
           "--classes", "fish,shark", "--workers", "1", "--seed", str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        partial = list(out.glob(f".{split}.rec.*.partial")) + list(tmp_path.glob(f".{out.name}.packing-*/.{split}.rec.*.partial"))
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


def test_a_pack_killed_while_writing_val_leaves_the_older_pack_whole(tmp_path):
    """train.* were the new dataset while val.*, manifest.json and classes.txt were the old one."""
    # 100 photos (20 in val): with 40, a fast machine wrote the 8 val photos between two polls
    labeled_set(tmp_path / "labels", n=100, size=(1600, 1200))
    out = tmp_path / "data"
    pack_dataset([tmp_path / "labels"], out, CLASSES, progress=False)
    before = {n: sha(out / n) for n in os.listdir(out)}
    assert _kill_mid_pack(tmp_path, out, split="val", seed=1), "the pack finished before it could be killed"
    assert {n: sha(out / n) for n in os.listdir(out)} == before
    from labeling.pack import verify_pack

    verify_pack(out)  # what every reader checks
    m = pack_dataset([tmp_path / "labels"], out, CLASSES, seed=1, progress=False)  # the next pack clears up
    assert sorted(os.listdir(out)) == sorted(before) and m["files"]["train.rec"] != before["train.rec"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".data.packing")] == []


def _mixed_pack(tmp_path):
    """A pack whose train.* come from another pack: what a killed pack used to leave."""
    labeled_set(tmp_path / "labels", n=8)
    for out, seed in (("data", 0), ("other", 1)):
        pack_dataset([tmp_path / "labels"], tmp_path / out, CLASSES, seed=seed, progress=False)
    for name in ("train.rec", "train.idx", "train.lst"):
        shutil.copyfile(tmp_path / "other" / name, tmp_path / "data" / name)
    return tmp_path / "data"


def test_every_reader_refuses_a_pack_that_does_not_match_its_manifest(tmp_path):
    data = _mixed_pack(tmp_path)
    runner = CliRunner()
    for args in (["train", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"],
                 ["show", str(data / "train.rec"), "--out", str(tmp_path / "g.png")],
                 ["eval", "--predictions", str(tmp_path / "p.json"), "--data", str(data / "val.rec"),
                  "--out", str(tmp_path / "report")]):
        (tmp_path / "p.json").write_text("[]")
        r = runner.invoke(cli, args)
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (args[0], r.output, r.exception)
        assert "does not match manifest.json" in r.output or "do not match manifest.json" in r.output, r.output
        assert "pack again" in r.output, r.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "g.png").exists()


def test_a_pack_with_no_manifest_is_refused_by_training_and_a_plain_rec_still_shows(tmp_path):
    labeled_set(tmp_path / "labels", n=4)
    pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, progress=False)
    (tmp_path / "data" / "manifest.json").unlink()  # as mxnet's im2rec leaves it
    with pytest.raises(KitError, match="no manifest.json"):
        DataDir(tmp_path / "data")
    r = CliRunner().invoke(cli, ["show", str(tmp_path / "data" / "train.rec"), "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output


def test_an_output_folder_inside_or_holding_an_input_is_refused(tmp_path):
    """`hack pack photos --out photos` was accepted; `hack check photos` then failed on manifest.json for good."""
    labeled_set(tmp_path / "photos", n=3)
    before = sorted(os.listdir(tmp_path / "photos"))
    for out, why in ((tmp_path / "photos", "inside the input folder"),
                     (tmp_path / "photos" / "data", "inside the input folder"), (tmp_path, "holds the input folder")):
        r = CliRunner().invoke(cli, ["pack", str(tmp_path / "photos"), "--out", str(out), "--classes", "fish,shark"])
        assert r.exit_code == 1 and why in r.output and "Fix:" in r.output, r.output
    assert sorted(os.listdir(tmp_path / "photos")) == before
    r = CliRunner().invoke(cli, ["check", str(tmp_path / "photos"), "--classes", "fish,shark"])
    assert r.exit_code == 0, r.output


def test_an_output_folder_with_other_files_is_refused_and_left_alone(tmp_path):
    labeled_set(tmp_path / "labels", n=3)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["pack", str(tmp_path / "labels"), "--out", str(tmp_path / "data"), "--classes", "fish,shark"])
    assert r.exit_code == 1 and "notes.txt, which a pack did not write" in r.output
    assert os.listdir(tmp_path / "data") == ["notes.txt"] and (tmp_path / "data" / "notes.txt").read_text() == "mine"


def test_packing_again_replaces_an_older_pack_through_a_symlink(tmp_path):
    labeled_set(tmp_path / "labels", n=4)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for seed in (0, 1):
        pack_dataset([tmp_path / "labels"], tmp_path / "link", CLASSES, seed=seed, progress=False)
    from labeling.pack import verify_pack

    assert (tmp_path / "link").is_symlink()
    assert verify_pack(tmp_path / "real")["settings"]["seed"] == 1


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


def test_replacing_an_older_pack_without_renameat2(tmp_path, monkeypatch):
    """Where an atomic exchange is missing (macOS, old glibc), the older pack is moved aside first."""
    from labeling import pack

    monkeypatch.setattr(pack, "_exchange", lambda a, b: False)
    labeled_set(tmp_path / "labels", n=4)
    for seed in (0, 1):
        pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, seed=seed, progress=False)
    assert pack.verify_pack(tmp_path / "data")["settings"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.pack-lock", "data", "labels"]

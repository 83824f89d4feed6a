"""hack prefill and the loop around it: machine boxes written into labelme files (that labelme's own
reader opens), a person's boxes never lost or moved by a merge, thresholds chosen on val, bad
inputs named one by one while the other photos are done, and check / pack / label honouring the
`auto` and `reviewed` marks."""
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from hackathon.cli import cli
from hackathon.deploy.prefill import BACKUP_DIR, OFF, choose_thresholds, prefill_photos
from labeling.check import check_labels
from labeling.labelme_io import (AUTO_FLAG, PREFILL_KEY, REVIEWED_FLAG, box_iou, is_untouched, machine_shape,
                                 merge_machine_boxes, new_labelme_document)
from labeling.pack import pack_dataset
from labeling.workspace import init_workspace
from labelme_data import labelme_json, photo, rect
from test_predict import make_export

CLASSES = ["fish", "shark"]
OBJECT = (40, 50, 160, 150)  # where labelme_data.photo puts its object
STRAY = (200, 150, 300, 230)


class StubDetector:
    """Stands in for an exported SSD: the same rows on every photo (score-filtered as Detector does)."""

    def __init__(self, rows, classes=CLASSES):
        self.rows, self.classes = rows, list(classes)

    def detect(self, image, threshold=0.01):
        return [dict(r) for r in sorted(self.rows, key=lambda r: -r["score"]) if r["score"] >= threshold]


def fish(score, box=OBJECT, label="fish"):
    return {"label": label, "score": score, "bbox": [float(v) for v in box]}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export") / "export")


def workspace_with(tmp_path, names=("a", "b", "c")):
    ws = init_workspace(tmp_path / "ws", CLASSES)
    return ws, [photo(ws.photos_dir / "tank" / f"{n}.jpg") for n in names]


def random_box(rng, w=320, h=240):
    x1, y1 = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
    return [round(x1, 2), round(y1, 2), round(rng.uniform(x1 + 5, w), 2), round(rng.uniform(y1 + 5, h), 2)]


def test_a_merge_never_loses_or_moves_a_human_box():
    rng = random.Random(0)
    for trial in range(300):
        human = []
        for k in range(rng.randint(0, 6)):
            s = rect(rng.choice(CLASSES + ["eel"]), *random_box(rng))
            if rng.random() < 0.3:  # a machine box a person moved: theirs now, flag and all
                s = machine_shape(s["label"], 0.9, random_box(rng))
                s["points"][1][0] += 3
            human.append(s)
        doc = new_labelme_document("x.jpg", 320, 240)
        doc["shapes"] = [json.loads(json.dumps(s)) for s in human]
        preds = [fish(rng.random(), random_box(rng), rng.choice(CLASSES)) for _ in range(rng.randint(0, 8))]
        preds += [fish(0.8, [v + rng.uniform(-2, 2) for v in s["points"][0] + s["points"][1]], s["label"])
                  for s in human[:2]]  # the model finding a person's own boxes again
        merged, added, dropped = merge_machine_boxes(doc, preds, {"model": "m"})
        assert merged["shapes"][:len(human)] == human, f"trial {trial}: a person's box lost or moved"
        machine = merged["shapes"][len(human):]
        assert len(machine) == added and added + dropped == len(preds)
        for s in machine:
            assert s["flags"] == {AUTO_FLAG: True} and is_untouched(s)
            box = s["points"][0] + s["points"][1]
            assert not any(h["label"] == s["label"] and box_iou(box, h["points"][0] + h["points"][1]) >= 0.5
                           for h in human), "a prediction on a person's box of its class was added"
        assert merged["flags"][REVIEWED_FLAG] is False and merged[PREFILL_KEY] == {"model": "m"}


def test_a_second_prefill_replaces_only_untouched_machine_boxes():
    doc = new_labelme_document("x.jpg", 320, 240)
    first, _, _ = merge_machine_boxes(doc, [fish(0.9), fish(0.7, STRAY, "shark")], {"model": "m1"})
    first["shapes"][1]["points"][0][0] += 10  # a person fixed the shark box
    second, added, _ = merge_machine_boxes(first, [fish(0.6, (100, 100, 200, 200))], {"model": "m2"})
    assert second["shapes"][0] == first["shapes"][1]  # the fixed box stays, first
    assert [s["label"] for s in second["shapes"]] == ["shark", "fish"] and added == 1
    assert second["shapes"][1]["points"] == [[100.0, 100.0], [200.0, 200.0]]


def test_prefill_writes_labelme_files_labelme_opens(tmp_path, export_dir):
    ws, photos = workspace_with(tmp_path)
    labelme_json(photos[0], [rect("fish", *OBJECT)])
    before = photos[0].with_suffix(".json").read_bytes()
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "prefill", str(export_dir), "--threshold", "0.01"])
    assert result.exit_code == 0, result.output
    assert "2 photo(s): wrote 2 labelme file(s)" in result.output
    assert photos[0].with_suffix(".json").read_bytes() == before  # default: photos without labels only
    # a newer model: the default takes the pre-filled photos nobody reviewed again, not the labelled one
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "prefill", str(export_dir), "--threshold", "0.02"])
    assert result.exit_code == 0 and "2 photo(s): wrote 2 labelme file(s)" in result.output, result.output
    assert photos[0].with_suffix(".json").read_bytes() == before
    from labelme import LabelFile

    for p in photos[1:]:
        d = json.loads(p.with_suffix(".json").read_text())
        assert d["version"] == "5.11.4" and d["imagePath"] == p.name and d["imageData"] is None
        assert (d["imageWidth"], d["imageHeight"]) == (320, 240)
        assert d["flags"] == {REVIEWED_FLAG: False} and str(export_dir.resolve()) in d[PREFILL_KEY]["model"]
        assert d["shapes"] and all(s["flags"] == {AUTO_FLAG: True} and s["description"].startswith("score ")
                                   for s in d["shapes"])
        for s in d["shapes"]:
            (x1, y1), (x2, y2) = s["points"]
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        lf = LabelFile(str(p.with_suffix(".json")))  # labelme's own reader
        assert len(lf.shapes) == len(d["shapes"]) and lf.flags == {REVIEWED_FLAG: False}
        assert lf.otherData[PREFILL_KEY] == d[PREFILL_KEY]

    # check names them; pack leaves them out, says how many, and takes them with --include-unreviewed
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "check"])
    assert result.exit_code == 0, result.output
    assert "2 photo(s) pre-filled by a model and not reviewed" in result.output
    n_machine = sum(len(json.loads(p.with_suffix(".json").read_text())["shapes"]) for p in photos[1:])
    assert f"({n_machine} machine box(es), {n_machine} never touched)" in result.output
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "pack", "--out", str(tmp_path / "d"),
                                      "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert "2 pre-filled photo(s) not reviewed are left out" in result.output
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["splits"]["train"]["images"] == 1
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "pack", "--out", str(tmp_path / "d2"),
                                      "--val-fraction", "0", "--include-unreviewed"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d2" / "manifest.json").read_text())["splits"]["train"]["images"] == 3

    # ticked reviewed: packed by default, and a later prefill leaves the file alone
    for p in photos[1:]:
        d = json.loads(p.with_suffix(".json").read_text())
        d["flags"][REVIEWED_FLAG] = True
        p.with_suffix(".json").write_text(json.dumps(d))
    report = check_labels([ws.photos_dir], CLASSES)
    assert report.unreviewed == []
    assert pack_dataset([ws.photos_dir], tmp_path / "d3", CLASSES, val_fraction=0, progress=False,
                        workers=1)["splits"]["train"]["images"] == 3
    ticked = photos[1].with_suffix(".json").read_bytes()
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "prefill", str(export_dir), str(photos[1]),
                                      "--threshold", "0.01"])
    assert result.exit_code == 0 and "ticked reviewed" in result.output, result.output
    assert photos[1].with_suffix(".json").read_bytes() == ticked
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "prefill", str(export_dir)])
    assert result.exit_code == 1 and "every photo in" in result.output and "labelled or reviewed" in result.output


def test_merging_into_a_labelled_photo_keeps_its_boxes_and_a_backup(tmp_path):
    ws, photos = workspace_with(tmp_path, ["a"])
    mine = [rect("fish", 41, 51, 159, 149), rect("shark", *STRAY)]
    json_path = labelme_json(photos[0], mine)
    before = json_path.read_bytes()
    det = StubDetector([fish(0.9), fish(0.8, STRAY, "fish"), fish(0.7, (5, 5, 30, 30), "shark")])
    summary = prefill_photos(det, photos, {"fish": 0.5, "shark": 0.5}, "stub", progress=False, tiles=0)
    assert summary.written == [json_path] and summary.dropped == 1 and summary.boxes == {"fish": 1, "shark": 1}
    d = json.loads(json_path.read_text())
    assert d["shapes"][:2] == mine  # untouched, first
    assert [(s["label"], s["flags"]) for s in d["shapes"][2:]] == [("fish", {AUTO_FLAG: True}),
                                                                   ("shark", {AUTO_FLAG: True})]
    backups = list((json_path.parent / BACKUP_DIR).iterdir())
    assert len(backups) == 1 and backups[0].read_bytes() == before
    # the backup folder is hidden: check does not take it for a second label file
    assert [it.json_path for it in check_labels([ws.photos_dir], CLASSES).items] == [json_path]


def test_dry_run_writes_nothing(tmp_path, export_dir):
    ws, photos = workspace_with(tmp_path, ["a", "b"])
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "prefill", str(export_dir), "--threshold", "0.01",
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 photo(s): would write 2 labelme file(s)" in result.output
    assert sorted(p.name for p in (ws.photos_dir / "tank").iterdir()) == ["a.jpg", "b.jpg"]


def test_bad_photos_and_json_are_named_and_the_others_done(tmp_path, export_dir):
    ws, photos = workspace_with(tmp_path, ["a", "b"])
    broken = ws.photos_dir / "tank" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    not_labelme = photo(ws.photos_dir / "tank" / "c.jpg")
    not_labelme.with_suffix(".json").write_text('{"shapes": [{"label": "fish"}]}')
    junk = not_labelme.with_suffix(".json").read_bytes()
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "prefill", str(export_dir),
                                      str(ws.photos_dir), "--threshold", "0.01"])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.output
    assert any("broken.jpg" in e for e in errors) and any("c.json" in e and "not a labelme file" in e for e in errors)
    assert all(p.with_suffix(".json").is_file() for p in photos)
    assert not broken.with_suffix(".json").exists() and not_labelme.with_suffix(".json").read_bytes() == junk
    assert "2 failed" in result.output


def test_a_model_with_other_classes_is_refused(tmp_path):
    ws, photos = workspace_with(tmp_path, ["a"])
    other = make_export(tmp_path / "other", classes=["fish", "eel"])
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "prefill", str(other)])
    assert result.exit_code == 1
    assert "classes ['fish', 'eel'] differ from the workspace's ['fish', 'shark']" in result.output
    assert not photos[0].with_suffix(".json").exists()


def test_thresholds_save_the_most_actions_on_val(tmp_path):
    for i in range(6):
        labelme_json(photo(tmp_path / "val" / f"v{i}.jpg"), [rect("fish", *OBJECT)])
    pack_dataset([tmp_path / "val"], tmp_path / "data", CLASSES, val_fraction=0, progress=False, workers=1)
    rec = tmp_path / "data" / "train.rec"  # six fish, one per photo; no shark
    # on each photo: the true box at 0.6 (kept: +1), a loose one at 0.55 (IoU 0.6: a fix, 0), a stray
    # box at 0.5 (a delete: -1); the sums are 6, 6, 0 from the top: 0.6 (the first of the highest)
    loose = (40, 50, 160 + 60, 150)  # IoU 120/180 with the object
    det = StubDetector([fish(0.6), fish(0.55, loose), fish(0.5, STRAY), fish(0.2, STRAY, "shark")])
    thresholds, how = choose_thresholds(det, rec, tiles=0)
    assert thresholds == {"fish": 0.6, "shark": 0.6}  # no shark on val: all classes pooled
    assert how["fish"] == "saves 6 action(s) on 6 val boxes" and how["shark"] == "0 val box(es), all classes pooled"
    assert choose_thresholds(det, None)[0] == {"fish": 0.5, "shark": 0.5}
    # a stray box scoring above the true one: the best sum is 0 (-1 +1), so the class is off
    thresholds, _ = choose_thresholds(StubDetector([fish(0.7, STRAY), fish(0.4), fish(0.3, STRAY)]), rec, tiles=0)
    assert thresholds["fish"] == OFF
    # a model that finds no fish on val draws none: every box would be a delete
    blind = StubDetector([fish(0.9, STRAY), fish(0.8, STRAY, "shark")])
    thresholds, how = choose_thresholds(blind, rec, tiles=0)
    assert thresholds == {"fish": OFF, "shark": OFF}
    assert how["fish"] == "costs more actions than it saves on 6 val boxes"
    ws, photos = workspace_with(tmp_path, ["a", "b"])
    labelme_json(photos[0], [rect("fish", *OBJECT)])
    summary = prefill_photos(blind, photos, thresholds, "blind", progress=False, tiles=0)
    assert summary.boxes == {} and summary.skipped == [(photos[1], "no box above its class threshold")]
    assert not photos[1].with_suffix(".json").exists()  # still a photo to label, not an empty "pre-filled" one
    assert json.loads(photos[0].with_suffix(".json").read_text())[PREFILL_KEY]["thresholds"] == {"fish": None,
                                                                                                 "shark": None}


def test_label_order_typical_lists_varied_photos_still_to_label(tmp_path):
    ws = init_workspace(tmp_path / "ws", CLASSES)
    similar = [photo(ws.photos_dir / "t" / f"grey{i}.jpg", box=(40 + i, 50, 160, 150)) for i in range(4)]
    odd = photo(ws.photos_dir / "t" / "odd.jpg", box=(0, 0, 319, 239), color=(20, 200, 240))
    labelme_json(similar[0], [rect("fish", *OBJECT)])
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "label", "--order", "typical", "--batch", "2",
                                      "--print-command"])
    assert result.exit_code == 0, result.output
    order = (ws.state_dir / "label-order.txt").read_text().split()
    assert sorted(order) == ["t/grey1.jpg", "t/grey2.jpg", "t/grey3.jpg", "t/odd.jpg"]  # the labelled one left out
    assert order[0].startswith("t/grey") and order[1] == "t/odd.jpg"  # typical first, then what it misses
    import yaml

    config = yaml.safe_load((ws.state_dir / "labelme.yaml").read_text())
    assert config["flags"] == [REVIEWED_FLAG] and config["label_flags"] == {".*": [AUTO_FLAG]}
    import re

    listed = [p for p in ["t/grey0.jpg"] + order if re.search(config["file_search"], p)]
    assert sorted(listed) == sorted(order[:2])


def test_label_order_uncertain_needs_a_model_and_puts_doubtful_photos_first(tmp_path, export_dir):
    ws, photos = workspace_with(tmp_path, ["a", "b", "c"])
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "label", "--order", "uncertain", "--print-command"])
    assert result.exit_code == 1 and "--order uncertain needs the model" in result.output
    from hackathon.deploy.prefill import uncertainty_order

    det = StubDetector([fish(0.5), fish(0.95, STRAY)])
    sure = StubDetector([fish(0.99)])
    ranked = uncertainty_order(det, photos, {"fish": 0.5, "shark": 0.5}, progress=False, tiles=0)
    assert ranked[0][1] == pytest.approx(1 + (1 - 0.45 / 0.5))
    assert uncertainty_order(sure, photos[:1], {"fish": 0.5}, progress=False, tiles=0)[0][1] < ranked[0][1]
    result = CliRunner().invoke(cli, ["--project", str(ws.root), "label", "--order", "uncertain", "--model",
                                      str(export_dir), "--print-command"])
    assert result.exit_code == 0, result.output
    assert sorted((ws.state_dir / "label-order.txt").read_text().split()) == ["tank/a.jpg", "tank/b.jpg", "tank/c.jpg"]


def test_boxes_check_would_reject_are_not_written(tmp_path):
    ws, photos = workspace_with(tmp_path, ["a"])
    det = StubDetector([fish(0.9), fish(0.9, (10, 10, 10.5, 80)), fish(0.9, (10, 10, 80, 10.4), "shark")])
    summary = prefill_photos(det, photos, {"fish": 0.5, "shark": 0.5}, "stub", progress=False, tiles=0)
    assert summary.boxes == {"fish": 1}
    report = check_labels([ws.photos_dir], CLASSES)
    assert report.errors == [] and [len(it.boxes) for it in report.items] == [1]


class BrightObjectDetector:
    """A detector that really looks: in each image it is given (the photo, its mirror, a tile), every
    white blob at least `min_frac` of that image's width is a fish at score 0.8, boxed exactly."""
    classes = CLASSES

    def __init__(self, min_frac=0.0):
        self.min_frac = min_frac

    def detect(self, image, threshold=0.01):
        return self.detect_many([image], threshold)[0]

    def detect_many(self, images, threshold=0.01):
        import cv2

        out = []
        for im in images:
            mask = (np.asarray(im.convert("L")) > 200).astype(np.uint8)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
            out.append([fish(0.8, (x, y, x + w, y + h)) for x, y, w, h, _ in stats[1:n]
                        if w >= self.min_frac * im.size[0] and 0.8 >= threshold])
        return out


def blobs(boxes, size=(320, 240)):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, (40, 60, 90))
    for b in boxes:
        ImageDraw.Draw(im).rectangle([b[0], b[1], b[2] - 1, b[3] - 1], fill=(255, 255, 255))
    return im


def test_fused_views_box_each_object_once_where_it_is():
    from hackathon.deploy.prefill import detect_fused, tile_regions

    assert tile_regions(320, 240, 2) == [(0, 0, 192, 144), (128, 0, 320, 144), (0, 96, 192, 240), (128, 96, 320, 240)]
    # one object inside a tile, one across the line where the first tile is cut (x = 192), one on the border
    truth = [(20, 20, 60, 50), (150, 30, 250, 80), (270, 180, 320, 240)]
    found = detect_fused(BrightObjectDetector(), blobs(truth), tiles=2)
    assert sorted(tuple(r["bbox"]) for r in found) == sorted(truth)  # the mirror undone, the cut tile's half dropped
    assert all(r["score"] == pytest.approx(0.8) for r in found)  # every view that sees all of it found it
    assert detect_fused(BrightObjectDetector(), blobs(truth), tiles=0) == BrightObjectDetector().detect(blobs(truth))


def test_a_small_object_only_the_tiles_see_is_kept_at_a_discounted_score():
    from hackathon.deploy.prefill import detect_fused

    small = (30, 30, 70, 60)  # 40 px: 1/8 of the photo's width, 1/4.8 of a tile's
    det = BrightObjectDetector(min_frac=0.15)
    assert det.detect(blobs([small])) == []  # the photo seen once: missed
    found = detect_fused(det, blobs([small]), tiles=2)
    assert [tuple(r["bbox"]) for r in found] == [small]
    assert found[0]["score"] == pytest.approx(0.8 / 3, abs=1e-6)  # found by 1 of the 3 views that hold it (photo, mirror, tile)
    assert detect_fused(det, blobs([small]), threshold=0.3, tiles=2) == []

"""hack check: every kind of labeling mistake is named with its file and fix; valid files pass."""
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from labeling.check import check_labels
from labeling.workspace import read_classes
from labelme_data import labeled_set, labelme_json, photo, rect

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "labelme-examples"
CLASSES = ["fish", "shark"]


def one(tmp_path, shapes, size=(320, 240), **extra):
    p = photo(tmp_path / "a.jpg", size=size)
    labelme_json(p, shapes, **extra)
    return check_labels([tmp_path], CLASSES)


def mistakes(report):
    """The problems of the files themselves: not the warning that a class of the list has no box."""
    return [p for p in report.problems if p.kind != "unused-class"]


def messages(report, severity=None):
    return [p.message for p in report.problems if severity in (None, p.severity)]


def test_valid_file_gives_its_boxes(tmp_path):
    r = one(tmp_path, [rect("fish", 10, 20, 110, 120), rect("shark", 150, 100, 300, 200)])
    assert not r.problems
    assert r.items[0].boxes == [(0, 10, 20, 110, 120), (1, 150, 100, 300, 200)]
    assert (r.items[0].width, r.items[0].height) == (320, 240)


def test_reversed_corners_are_valid(tmp_path):
    r = one(tmp_path, [rect("fish", 110, 120, 10, 20)])
    assert not r.errors and r.items[0].boxes == [(0, 10, 20, 110, 120)]


def test_unknown_label_is_an_error_with_the_nearest_class(tmp_path):
    r = one(tmp_path, [rect("fsh", 10, 10, 50, 50)])
    assert len(r.errors) == 1 and not r.items
    msg = r.errors[0].message
    assert "unknown class 'fsh'" in msg and "did you mean 'fish'" in msg and "Fix:" in msg
    assert r.errors[0].file.endswith("a.json")


def test_case_and_stray_spaces_are_mended_with_a_warning(tmp_path):
    r = one(tmp_path, [rect("Fish ", 10, 10, 50, 50), rect(" shark", 60, 60, 120, 120)])
    assert not r.errors and len(r.warnings) == 2
    assert "taken as 'fish'" in r.warnings[0].message
    assert [b[0] for b in r.items[0].boxes] == [0, 1]


def test_polygon_gives_its_bounding_box_and_a_warning(tmp_path):
    poly = {"label": "fish", "points": [[10, 40], [60, 10], [90, 70], [30, 90]], "shape_type": "polygon"}
    r = one(tmp_path, [poly])
    assert not r.errors and "polygon" in r.warnings[0].message
    assert r.items[0].boxes == [(0, 10, 10, 90, 90)]


@pytest.mark.parametrize("kind,points", [("circle", [[50, 50], [60, 60]]), ("line", [[1, 1], [50, 50]]),
                                         ("point", [[5, 5]]), ("linestrip", [[1, 1], [9, 9], [20, 3]])])
def test_non_box_shapes_are_rejected(tmp_path, kind, points):
    r = one(tmp_path, [{"label": "fish", "points": points, "shape_type": kind}])
    assert len(r.errors) == 1 and "not a box" in r.errors[0].message and not r.items


def test_degenerate_and_outside_boxes(tmp_path):
    r = one(tmp_path, [rect("fish", 10, 10, 10.5, 80)])
    assert "too thin" in r.errors[0].message
    r = one(tmp_path, [rect("fish", 400, 300, 500, 400)])
    assert "outside the 320x240 photo" in r.errors[0].message


def test_box_partly_off_the_photo_is_clipped_with_a_warning(tmp_path):
    r = one(tmp_path, [rect("fish", -10, 150, 100, 250)])  # 18% of it off the photo: a slight overrun
    assert not r.errors and "clipped" in r.warnings[0].message
    assert r.items[0].boxes == [(0, 0.0, 150.0, 100.0, 240.0)]
    r = one(tmp_path, [rect("fish", -0.5, 0, 100, 240.4)])  # labelme's own sub-pixel overshoot: silent
    assert not mistakes(r)


def test_json_size_differs_from_the_photo(tmp_path):
    r = one(tmp_path, [rect("fish", 1, 1, 50, 50)], size=(320, 240))
    p = labelme_json(tmp_path / "a.jpg", [rect("fish", 1, 1, 50, 50)], size=(640, 480))
    r = check_labels([p], CLASSES)
    assert "says 640x480 but the upright photo is 320x240" in r.errors[0].message
    p = labelme_json(tmp_path / "a.jpg", [rect("fish", 1, 1, 50, 50)], size=(240, 320))
    r = check_labels([p], CLASSES)
    assert "sideways" in r.errors[0].message


def test_missing_image_and_photo_without_json(tmp_path):
    p = photo(tmp_path / "a.jpg")
    j = labelme_json(p, [rect("fish", 1, 1, 50, 50)])
    p.unlink()
    photo(tmp_path / "b.jpg")
    r = check_labels([tmp_path], CLASSES)
    assert "photo is missing" in r.errors[0].message and r.errors[0].file == str(j)
    assert any("have no labels yet" in w.message and "b.jpg" in w.file for w in r.warnings)


def test_image_found_beside_json_when_imagepath_is_stale(tmp_path):
    p = photo(tmp_path / "a.jpg")
    labelme_json(p, [rect("fish", 1, 1, 50, 50)], imagePath="..\\old folder\\a.jpg")
    r = check_labels([tmp_path], CLASSES)
    assert not r.errors and r.items[0].image_source == p


def test_duplicate_boxes_keep_one(tmp_path):
    r = one(tmp_path, [rect("fish", 10, 10, 100, 100), rect("fish", 11, 10, 100, 101), rect("shark", 10, 10, 100, 100)])
    assert not r.errors and "same object" in r.warnings[0].message
    assert [b[0] for b in r.items[0].boxes] == [0, 1]


@pytest.mark.parametrize("content,why", [(b"", "empty"), (b"{not json", "invalid JSON"),
                                         (b'{"annotations": []}', "no 'shapes'"), (b"\xff\xfe\x00garbage", "not")])
def test_files_that_are_not_labelme(tmp_path, content, why):
    labeled_set(tmp_path, n=2)
    (tmp_path / "zz.json").write_bytes(content)
    r = check_labels([tmp_path], CLASSES)
    assert len(r.errors) == 1 and why in r.errors[0].message and r.errors[0].file.endswith("zz.json")
    assert len(r.items) == 2, "one bad file must not hide the good ones"


def test_embedded_image_data_is_valid_without_the_photo(tmp_path):
    src = FIXTURES / "tutorial"
    if not src.is_dir():
        pytest.skip("../shared fixtures absent")
    shutil.copy(src / "apc2016_obj3.json", tmp_path)  # the JSON alone: the photo is inside it
    labels = sorted({s["label"] for s in json.loads((src / "apc2016_obj3.json").read_text())["shapes"]})
    r = check_labels([tmp_path], labels)
    assert not r.errors and len(r.items) == 1 and isinstance(r.items[0].image_source, bytes)
    assert len(r.items[0].boxes) == 4  # four polygons, each as its bounding box


def test_labelme4_files_match_labelmes_own_voc_export():
    if not FIXTURES.is_dir():
        pytest.skip("../shared fixtures absent")
    classes = read_classes(FIXTURES / "bbox_detection" / "labels.txt")
    assert "__ignore__" not in classes and "potted plant" in classes
    r = check_labels([FIXTURES / "bbox_detection" / "data_annotated"], classes)
    assert not mistakes(r) and len(r.items) == 3
    assert "have no box in any photo" in r.warnings[-1].message  # 3 photos of VOC's 20 classes
    for item in r.items:
        xml = FIXTURES / "bbox_detection" / "data_dataset_voc" / "Annotations" / (item.json_path.stem + ".xml")
        voc = [(classes.index(o.find("name").text),) + tuple(float(o.find("bndbox").find(k).text)
                                                            for k in ("xmin", "ymin", "xmax", "ymax"))
               for o in ET.parse(xml).getroot().iter("object")]
        assert [v for b in sorted(item.boxes) for v in b] == pytest.approx([v for b in sorted(voc) for v in b])


def test_every_shape_type_of_labelme(tmp_path):
    if not FIXTURES.is_dir():
        pytest.skip("../shared fixtures absent")
    src = FIXTURES / "primitives"
    classes = sorted({s["label"] for s in json.loads((src / "primitives.json").read_text())["shapes"]})
    r = check_labels([src], classes)
    rejected = " ".join(e.message for e in r.errors)
    for kind in ("a circle", "a line ", "a point", "a line strip", "a mask"):
        assert kind in rejected
    assert any("polygon" in w.message for w in r.warnings)


def test_scenes_and_count_table(tmp_path):
    labeled_set(tmp_path, n=4, scene="tank-a")
    labeled_set(tmp_path, n=2, scene="tank-b")
    r = check_labels([tmp_path], CLASSES)
    boxes, images = r.counts()
    assert images == {"tank-a": 4, "tank-b": 2}
    assert boxes["tank-a"]["fish"] == 2 and boxes["tank-b"]["shark"] == 1
    table = r.table()
    assert "tank-a" in table and "tank-b" in table and "(images)" in table


def test_cli_exit_codes(tmp_path):
    labeled_set(tmp_path / "good", n=2)
    runner = CliRunner()
    ok = runner.invoke(cli, ["check", str(tmp_path / "good"), "--classes", "fish,shark"])
    assert ok.exit_code == 0, ok.output
    labelme_json(photo(tmp_path / "good" / "c.jpg"), [rect("Fish", 1, 1, 40, 40)])
    warned = runner.invoke(cli, ["check", str(tmp_path / "good"), "--classes", "fish,shark"])
    assert warned.exit_code == 0 and "warning:" in warned.output
    labelme_json(photo(tmp_path / "good" / "d.jpg"), [rect("whale", 1, 1, 40, 40)])
    bad = runner.invoke(cli, ["check", str(tmp_path / "good"), "--classes", "fish,shark"])
    assert bad.exit_code == 1 and "unknown class 'whale'" in bad.output and "d.json" in bad.output


def test_cli_without_a_class_list_says_how(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["check", str(tmp_path)])
    assert r.exit_code == 1 and "--classes" in r.output and "Traceback" not in r.output


def test_real_sample_checks_clean(tmp_path):
    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "aquarium-scene-a"
    if not src.is_dir():
        pytest.skip("../shared data absent")
    r = check_labels([src], read_classes(src / "labels.txt"))
    assert not r.errors
    assert sum(len(i.boxes) for i in r.items) == 1362 - sum(1 for w in r.warnings if "same object" in w.message)


def test_photo_sizes_from_header_only(tmp_path, monkeypatch):
    # a 12 MP photo is checked from its header: check must not decode pixels
    p = tmp_path / "big.jpg"
    Image.new("RGB", (4032, 3024), (9, 9, 9)).save(p, quality=50)
    labelme_json(p, [rect("fish", 100, 100, 900, 900)])

    def no_decoding(*args, **kwargs):
        raise AssertionError("hack check decoded a photo's pixels")

    from PIL import ImageFile
    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", no_decoding)
        m.setattr(Image.Image, "load", no_decoding)
        r = check_labels([tmp_path], CLASSES)
    assert not mistakes(r) and r.items[0].width == 4032


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e300, -5000.0])
def test_non_finite_or_absurd_coordinates_are_errors(tmp_path, bad):
    """json.dump writes NaN and Infinity; min/max of a NaN gave a full-width box with no word."""
    p = photo(tmp_path / "a.jpg", size=(384, 512))
    labelme_json(p, [rect("fish", bad, 223.5, 100, 298.5), rect("shark", 10, 10, 60, 60)])
    r = check_labels([tmp_path], CLASSES)
    assert len(r.errors) == 1 and not r.items, "nothing of a file with a broken point is packed"
    assert "shape 1 ('fish')" in r.errors[0].message and "draw it again" in r.errors[0].message
    result = CliRunner().invoke(cli, ["pack", str(tmp_path), "--out", str(tmp_path / "data"), "--classes", "fish,shark"])
    assert result.exit_code == 1 and not (tmp_path / "data" / "train.rec").exists()


def test_a_point_less_than_a_photo_size_off_is_still_clipped(tmp_path):
    r = one(tmp_path, [rect("fish", -100, 10, 300, 230)])  # 320x240: a point 100 px out, a quarter of the box
    assert not r.errors and any("clipped" in w.message for w in r.warnings)


@pytest.mark.parametrize("file_form,label_form", [("NFC", "NFD"), ("NFD", "NFC")])
def test_a_label_typed_in_another_unicode_form_is_its_class(tmp_path, file_form, label_form):
    """A Mac types 'é' as e + combining accent (NFD): it used to be "unknown class 'poisson-épée';
    did you mean 'poisson-épée'?"."""
    import unicodedata

    name = "poisson-épée"
    (tmp_path / "classes.txt").write_text(unicodedata.normalize(file_form, f"fish\n{name}\n"), encoding="utf-8")
    p = photo(tmp_path / "photos" / "a.jpg")
    labelme_json(p, [rect(unicodedata.normalize(label_form, name), 10, 10, 100, 100)])
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "photos"), "--labels", str(tmp_path / "classes.txt")])
    assert result.exit_code == 0 and "0 error(s)" in result.output and "unknown class" not in result.output, result.output
    r = check_labels([tmp_path / "photos"], read_classes(tmp_path / "classes.txt"))
    assert r.items[0].boxes[0][0] == 1


def test_a_json_nested_too_deep_is_one_error_and_the_rest_is_checked(tmp_path):
    """It was a RecursionError traceback, and the files after it were never checked."""
    labeled_set(tmp_path, n=3)
    (tmp_path / "aa.json").write_text("[" * 100_000 + "]" * 100_000)
    result = CliRunner().invoke(cli, ["check", str(tmp_path), "--classes", "fish,shark"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "aa.json: not a labelme file (JSON nested too deeply to read)" in result.output
    assert "3 photo(s) with boxes" in result.output and "1 error(s)" in result.output


def test_labelme_labels_txt_beside_the_data_is_the_class_list(tmp_path, monkeypatch):
    """Issue 13.1: a labelme folder's own labels.txt (with __ignore__, _background_) is found and named."""
    monkeypatch.chdir(tmp_path)  # not a workspace
    labeled_set(tmp_path / "set", n=4)
    (tmp_path / "set" / "labels.txt").write_text("__ignore__\n_background_\nfish\nshark\n")
    runner = CliRunner()
    r = runner.invoke(cli, ["check", str(tmp_path / "set")])
    assert r.exit_code == 0, r.output
    assert f"class list: {tmp_path / 'set' / 'labels.txt'} (2 classes: fish, shark)" in r.output
    assert "unknown class" not in r.output
    r = runner.invoke(cli, ["check", str(tmp_path / "set"), "--classes", "fish"])  # the flag still wins
    assert r.exit_code == 1 and "unknown class 'shark'" in r.output and "class list:" not in r.output
    r = runner.invoke(cli, ["pack", str(tmp_path / "set"), "--out", str(tmp_path / "data")])
    assert r.exit_code == 0, r.output
    assert "labels.txt" in r.output and read_classes(tmp_path / "data" / "classes.txt") == ["fish", "shark"]
    (tmp_path / "set" / "classes.txt").write_text("shark\nfish\n")  # the kit's own name comes first
    r = runner.invoke(cli, ["check", str(tmp_path / "set")])
    assert r.exit_code == 0 and "classes.txt (2 classes: shark, fish)" in r.output


def test_a_box_mostly_off_the_photo_is_an_error_naming_its_size(tmp_path):
    """Issue 13.4: 98% of a box outside the photo means labels for another size or orientation."""
    r = one(tmp_path, [rect("fish", 300, 10, 400, 110)])  # 100x100, only 20x100 px on the 320x240 photo
    assert r.errors and not r.items and "80% of the box [300, 10, 400, 110] lies outside the 320x240 photo" \
        in r.errors[0].message and "Fix:" in r.errors[0].message
    r = one(tmp_path, [rect("fish", 318, 10, 418, 110)])  # 98% outside: no longer clipped to a 2 px sliver
    assert "98% of the box" in r.errors[0].message and not any("clipped" in w.message for w in r.warnings)
    r = one(tmp_path, [rect("fish", -30, 200, 100, 300)])  # 69% outside, past MOSTLY_OUTSIDE
    assert "69% of the box" in r.errors[0].message
    r = one(tmp_path, [rect("fish", 250, 10, 330, 110)])  # 12% outside: clipped with a warning
    assert not r.errors and r.items[0].boxes == [(0, 250.0, 10.0, 320.0, 110.0)]


def test_a_cut_photo_is_an_error_of_check_for_each_format(tmp_path, make_photo):
    """Issue 13.4: a photo cut mid-copy (JPEG, PNG, HEIC) is caught by check, without decoding it."""
    for suffix in (".jpg", ".png", ".heic"):
        folder = tmp_path / suffix[1:]
        p = folder / f"a{suffix}"
        make_photo(p, size=(320, 240))
        labelme_json(p, [rect("fish", 10, 10, 100, 100)], size=(320, 240))
        assert not mistakes(check_labels([folder], CLASSES)), suffix
        whole = p.read_bytes()
        p.write_bytes(whole[: len(whole) * 2 // 3])
        r = check_labels([folder], CLASSES)
        assert len(r.errors) == 1 and not r.items, suffix
        assert str(p) in r.errors[0].message and "cut short" in r.errors[0].message and "Fix:" in r.errors[0].message
        assert p.read_bytes() == whole[: len(whole) * 2 // 3]  # the user's file is left as it was
    # the CLI says it and exits 1
    r = CliRunner().invoke(cli, ["check", str(tmp_path / "jpg"), "--classes", "fish,shark"])
    assert r.exit_code == 1 and "a.jpg" in r.output and "no JPEG end-of-image marker" in r.output


def test_a_missing_photo_names_the_imagepath_and_where_it_was_looked_for(tmp_path):
    """Issue 13.4: which imagePath was looked for, and where."""
    p = photo(tmp_path / "a.jpg")
    labelme_json(p, [rect("fish", 1, 1, 50, 50)], imagePath="../DCIM/IMG_0042.JPG")
    p.unlink()
    r = check_labels([tmp_path], CLASSES)
    msg = r.errors[0].message
    assert "imagePath '../DCIM/IMG_0042.JPG'" in msg and str(tmp_path.parent / "DCIM" / "IMG_0042.JPG") in msg
    assert str(tmp_path / "IMG_0042.JPG") in msg and "no photo a.* (" in msg and "Fix:" in msg


def test_a_class_with_no_box_anywhere_is_warned_by_check_and_named_by_pack(tmp_path):
    """Issue 13.8: the class list names 'ray', no photo has one."""
    labeled_set(tmp_path / "set", n=4)
    runner = CliRunner()
    r = runner.invoke(cli, ["check", str(tmp_path / "set"), "--classes", "fish,ray,shark"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "class(es) ray of the class list have no box in any photo" in r.output
    r = runner.invoke(cli, ["check", str(tmp_path / "set"), "--classes", "fish,shark"])
    assert "no box in any photo" not in r.output
    r = runner.invoke(cli, ["pack", str(tmp_path / "set"), "--out", str(tmp_path / "data"), "--classes", "fish,ray,shark"])
    assert r.exit_code == 0, r.output
    assert "class(es) ray have no box in train" in r.output
    # a class whose every box is in the held-out scene is named too
    labeled_set(tmp_path / "ws", n=4, classes=("fish",), scene="tank-a")
    labeled_set(tmp_path / "ws", n=2, classes=("shark",), scene="tank-b")
    r = runner.invoke(cli, ["pack", str(tmp_path / "ws"), "--out", str(tmp_path / "d2"), "--classes", "fish,shark",
                            "--val-scene", "tank-b"])
    assert r.exit_code == 0 and "class(es) shark have no box in train" in r.output

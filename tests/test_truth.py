"""read_truth on real labelme folders and real packed RecordIO made in tmp_path: names as `hack
predict` gives them, upright pixels, empty images kept, unlabeled photos left out and listed,
difficult flags, and one clear error for broken labels."""
import json

import numpy as np
import pytest

from hackathon.evaluate.truth import Truth, read_truth
from hackathon.core.errors import KitError
from labeling.pack import pack_dataset
from labelme_data import labeled_set, labelme_json, photo, rect


def test_labelme_folder_names_boxes_sizes_and_classes_txt(tmp_path):
    made = labeled_set(tmp_path / "test" / "scene-b", n=4, size=(320, 240))
    (tmp_path / "test" / "classes.txt").write_text("fish\nshark\nray\n")
    t = read_truth(tmp_path / "test")
    assert t.classes == ["fish", "shark", "ray"]
    assert t.images == [f"scene-b/img_{i:02d}.jpg" for i in range(4)]
    assert t.root == tmp_path / "test" and t.unlabeled == []
    d = json.loads(made[1].with_suffix(".json").read_text())
    np.testing.assert_allclose(t.boxes["scene-b/img_01.jpg"], [sum(d["shapes"][0]["points"], [])])
    assert t.labels["scene-b/img_01.jpg"].tolist() == [1] and t.sizes["scene-b/img_01.jpg"] == (320, 240)
    assert t.open_image("scene-b/img_01.jpg").size == (320, 240)


def test_empty_labelme_file_is_an_image_with_nothing_and_unlabeled_photos_are_listed(tmp_path):
    labeled_set(tmp_path / "t", n=2)
    labelme_json(photo(tmp_path / "t" / "empty.jpg"), [])  # saved in labelme with no shapes: nothing on it
    photo(tmp_path / "t" / "nobody_looked.jpg")
    t = read_truth(tmp_path / "t", classes=["fish", "shark"])
    assert "empty.jpg" in t.images and len(t.boxes["empty.jpg"]) == 0
    assert "nobody_looked.jpg" not in t.images and t.unlabeled == ["nobody_looked.jpg"]


def test_classes_default_to_the_labels_used(tmp_path):
    labeled_set(tmp_path / "t", n=3, classes=("shark", "fish"))
    assert read_truth(tmp_path / "t").classes == ["fish", "shark"]


def test_difficult_flag_and_exif_rotated_photo(tmp_path, make_photo):
    make_photo(tmp_path / "t" / "turned.jpg", size=(120, 80), orientation=6)  # stored 80x120, upright 120x80
    s1, s2 = rect("fish", 10, 10, 50, 40), rect("fish", 60, 20, 110, 70)
    s2["flags"] = {"difficult": True}
    labelme_json(tmp_path / "t" / "turned.jpg", [s1, s2], size=(120, 80))
    t = read_truth(tmp_path / "t", classes=["fish"])
    assert t.sizes["turned.jpg"] == (120, 80) and t.open_image("turned.jpg").size == (120, 80)
    assert t.difficult["turned.jpg"].tolist() == [False, True]


def test_broken_labels_stop_with_every_error_and_the_fix(tmp_path):
    labeled_set(tmp_path / "t", n=2)
    labelme_json(photo(tmp_path / "t" / "bad.jpg"), [rect("whale", 1, 1, 30, 30)])
    with pytest.raises(KitError, match=r"1 error\(s\) in the test labels:\n.*bad.json.*unknown class 'whale'.*Fix"):
        read_truth(tmp_path / "t", classes=["fish", "shark"])
    with pytest.raises(KitError, match="no such folder"):
        read_truth(tmp_path / "nothing")
    (tmp_path / "nolabels").mkdir()
    with pytest.raises(KitError, match="no labelme files"):
        read_truth(tmp_path / "nolabels")


def test_packed_rec_names_and_boxes_equal_the_labelme_folder(tmp_path):
    labeled_set(tmp_path / "labels" / "scene-a", n=5, size=(320, 240))
    pack_dataset([tmp_path / "labels"], tmp_path / "data", ["fish", "shark"], val_fraction=0.4, seed=0,
                 progress=False, workers=1)
    folder = read_truth(tmp_path / "labels", classes=["fish", "shark"])
    rec = read_truth(tmp_path / "data" / "val.rec")
    assert rec.classes == ["fish", "shark"] and rec.root is None and len(rec.images) == 2
    for name in rec.images:
        assert name in folder.images
        np.testing.assert_allclose(rec.boxes[name], folder.boxes[name], atol=1e-3)
        assert rec.labels[name].tolist() == folder.labels[name].tolist()
        assert rec.sizes[name] == (320, 240) and rec.open_image(name).size == (320, 240)


def test_truth_from_arrays_checks_lengths():
    with pytest.raises(ValueError):
        Truth(["a"], ["x"], {"x": [[0, 0, 1, 1]]}, {"x": [0, 0]}, {"x": (2, 2)}, {})


def test_labelme_examples_equal_labelme_s_own_voc_export(shared_dir):
    """labelme's example folder (older labelme JSON, labels.txt one folder up) against the VOC XML
    labelme itself exported from the same files: an independent answer for every box."""
    import xml.etree.ElementTree as ET

    root = shared_dir / "fixtures" / "labelme-examples" / "bbox_detection"
    t = read_truth(root / "data_annotated")
    assert "person" in t.classes and "__ignore__" not in t.classes
    xmls = sorted((root / "data_dataset_voc" / "Annotations").glob("*.xml"))
    assert t.images == [x.stem + ".jpg" for x in xmls]
    for x in xmls:
        objs = ET.parse(x).getroot().findall("object")
        expected = sorted((o.findtext("name"), *(float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")))
                          for o in objs)
        name = x.stem + ".jpg"
        got = sorted((t.classes[c], *b) for c, b in zip(t.labels[name], t.boxes[name].tolist()))
        assert [g[0] for g in got] == [e[0] for e in expected]
        np.testing.assert_allclose([g[1:] for g in got], [e[1:] for e in expected], atol=1e-6)


def test_real_aquarium_scene(shared_dir):
    t = read_truth(shared_dir / "data" / "aquarium-scene-a")
    assert len(t.images) == 200 and t.n_boxes == 1362 and len(t.classes) == 7 and not t.unlabeled
    assert all(0 <= b[0] < b[2] <= t.sizes[n][0] and 0 <= b[1] < b[3] <= t.sizes[n][1]
               for n in t.images for b in t.boxes[n])

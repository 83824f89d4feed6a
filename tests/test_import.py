"""hack import: originals untouched; stored photos upright, right-sized and metadata-free; duplicates
skipped and counted; any file name; a bad file named while the good ones still come in; labels
carried along. Also the workspace's class list, which `hack init` reads."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import heic_can_encode, mean_abs_diff, run_at_once
from hackathon.cli import cli
from hackathon.core.errors import KitError
from labeling.importing import import_photos, safe_stem
from labeling.workspace import parse_classes, read_classes
from labelme_data import labelme_json, rect

RED = (255, 0, 0)


def run(ws, *args):
    return CliRunner().invoke(cli, ["--project", str(ws.root), "import", *map(str, args)])


def index(ws):
    return json.loads(ws.index_file.read_text("utf-8"))["photos"]


def stored(ws, scene="default"):
    return sorted(p.name for p in (ws.photos_dir / scene).glob("*.jpg"))


def test_originals_are_byte_identical_and_keep_their_times(ws, tmp_path, make_photo):
    src = tmp_path / "phone"
    make_photo(src / "a.jpg", size=(800, 600), orientation=6)
    make_photo(src / "b.png", size=(300, 200), seed=1)
    labelme_json(src / "a.jpg", [rect("fish", 10, 10, 100, 100)], size=(800, 600))
    os.utime(src / "a.jpg", ns=(1_000_000_000, 1_500_000_000_000_000_000))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in src.iterdir()}
    summary = import_photos(ws, [src], max_side=256, progress=False)
    assert len(summary.imported) == 2 and not summary.failed
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in src.iterdir()} == before
    assert sorted(p.name for p in src.iterdir()) == ["a.jpg", "a.json", "b.png"]


def test_stored_photo_has_no_exif_no_gps_no_xmp(ws, tmp_path, make_photo):
    exif = Image.Exif()
    exif[0x010F] = "Apple"  # Make
    exif[0x0110] = "iPhone 15"  # Model
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.5N"/>'
           b"</rdf:RDF></x:xmpmeta>")
    for seed, (name, orientation, max_side) in enumerate((("as-is.jpg", None, 1024), ("turned.jpg", 6, 1024),
                                                          ("big.jpg", None, 128))):
        make_photo(tmp_path / name, size=(320, 240), orientation=orientation, exif=exif, xmp=xmp, seed=seed)
        with Image.open(tmp_path / name) as src:  # the source really carries them
            assert src.getexif().get_ifd(0x8825) and "xmp" in src.info
        [rel] = import_photos(ws, [tmp_path / name], max_side=max_side, progress=False).imported
        data = (ws.photos_dir / rel).read_bytes()
        with Image.open(ws.photos_dir / rel) as out:
            assert dict(out.getexif()) == {}
            assert not {"exif", "xmp", "XML:com.adobe.xmp"} & set(out.info)
        for marker in (b"Exif\0\0", b"iPhone", b"Apple", b"xmpmeta", b"GPS"):
            assert marker not in data, (name, marker)


def test_stored_photo_is_upright_and_at_most_max_side(ws, tmp_path, make_photo):
    upright = make_photo(tmp_path / "side.jpg", size=(1200, 900), orientation=6)
    with Image.open(tmp_path / "side.jpg") as raw:
        assert raw.size == (900, 1200)  # stored sideways
    [rel] = import_photos(ws, [tmp_path / "side.jpg"], max_side=400, progress=False).imported
    with Image.open(ws.photos_dir / rel) as out:
        assert out.size == (400, 300) and out.format == "JPEG" and out.mode == "RGB"
        assert mean_abs_diff(out, upright.resize((400, 300), Image.LANCZOS)) < 6
        assert index(ws)[rel]["width"] == 400 and index(ws)[rel]["height"] == 300


def test_a_huge_phone_photo_is_shrunk(ws, tmp_path, make_photo):
    big = Image.new("RGB", (6000, 4500), (90, 120, 150))  # 27 MP, past a 12 MP phone photo
    big.paste(RED, (0, 0, 1200, 900))
    make_photo(tmp_path / "huge.jpg", image=big, orientation=6, quality=80)
    [rel] = import_photos(ws, [tmp_path / "huge.jpg"], max_side=1024, progress=False).imported
    with Image.open(ws.photos_dir / rel) as out:
        assert out.size == (1024, 768)
        assert np.abs(np.asarray(out)[10, 10].astype(int) - RED).max() < 30  # upright: red stays top-left


@pytest.mark.parametrize("mode,suffix", [("L", ".jpg"), ("CMYK", ".jpg"), ("I;16", ".png"), ("RGBA", ".png"),
                                         ("LA", ".png"), ("P", ".png"), ("1", ".png")])
def test_any_pixel_format_is_stored_as_rgb_jpeg(ws, tmp_path, make_photo, mode, suffix):
    make_photo(tmp_path / f"p{suffix}", size=(320, 240), mode=mode)
    s = import_photos(ws, [tmp_path / f"p{suffix}"], progress=False)
    assert s.imported == ["default/p.jpg"] and not s.failed
    with Image.open(ws.photos_dir / "default" / "p.jpg") as out:
        assert out.format == "JPEG" and out.mode == "RGB" and out.size == (320, 240)


def test_small_photo_is_not_enlarged(ws, tmp_path, make_photo):
    make_photo(tmp_path / "small.png", size=(200, 150))
    [rel] = import_photos(ws, [tmp_path / "small.png"], max_side=1024, progress=False).imported
    assert rel == "default/small.jpg" and Image.open(ws.photos_dir / rel).size == (200, 150)


def test_exact_duplicates_are_skipped_and_counted(ws, tmp_path, make_photo):
    make_photo(tmp_path / "a.jpg", size=(320, 240))
    (tmp_path / "copy of a.jpg").write_bytes((tmp_path / "a.jpg").read_bytes())
    make_photo(tmp_path / "b.jpg", size=(320, 240), seed=7)
    s = import_photos(ws, [tmp_path / "a.jpg", tmp_path / "copy of a.jpg", tmp_path / "a.jpg", tmp_path / "b.jpg"],
                      progress=False)
    assert sorted(s.imported) == ["default/a.jpg", "default/b.jpg"]
    assert [d[1] for d in s.exact_duplicates] == ["default/a.jpg", "default/a.jpg"]
    assert "2 exact duplicate(s) skipped" in s.line()
    assert stored(ws) == ["a.jpg", "b.jpg"]


def test_near_duplicates_are_skipped_and_a_distinct_photo_is_not(ws, tmp_path, make_photo):
    original = make_photo(tmp_path / "shot.jpg", size=(1024, 768), seed=3)
    original.resize((512, 384), Image.BILINEAR).save(tmp_path / "sent by chat.jpg", quality=40)  # re-sent smaller
    make_photo(tmp_path / "other.jpg", size=(1024, 768), seed=4)
    first = import_photos(ws, [tmp_path / "shot.jpg"], scene="tank-a", progress=False)
    s = import_photos(ws, [tmp_path / "sent by chat.jpg", tmp_path / "other.jpg"], scene="tank-b", progress=False)
    assert first.imported == ["tank-a/shot.jpg"]
    assert s.near_duplicates == [(str(tmp_path / "sent by chat.jpg"), "tank-a/shot.jpg")]
    assert s.imported == ["tank-b/other.jpg"] and not s.exact_duplicates
    assert "1 near duplicate(s) skipped" in s.line()


def test_the_same_picture_stored_sideways_is_a_near_duplicate(ws, tmp_path, make_photo):
    make_photo(tmp_path / "upright.jpg", size=(640, 480), seed=5)
    make_photo(tmp_path / "sideways.jpg", size=(640, 480), seed=5, orientation=8)  # other bytes, same picture
    s = import_photos(ws, [tmp_path / "upright.jpg", tmp_path / "sideways.jpg"], progress=False)
    assert s.imported == ["default/upright.jpg"] and len(s.near_duplicates) == 1


def test_scene_is_the_folder_and_in_the_index(ws, tmp_path, make_photo):
    make_photo(tmp_path / "in" / "a.jpg", size=(300, 200), seed=1)
    make_photo(tmp_path / "in" / "deeper" / "b.heic.png", size=(300, 200), seed=2)
    (tmp_path / "in" / "notes.txt").write_text("not a photo")
    r = run(ws, tmp_path / "in", "--scene", "tank-a", "--max-side", "256")
    assert r.exit_code == 0, r.output
    assert "imported 2 photo(s)" in r.output
    assert "import: 100%" in r.output and "photo/s" in r.output  # the progress bar, with its rate
    assert stored(ws, "tank-a") == ["a.jpg", "b.heic.jpg"]
    entries = index(ws)
    assert set(entries) == {"tank-a/a.jpg", "tank-a/b.heic.jpg"}
    assert {e["scene"] for e in entries.values()} == {"tank-a"}
    assert entries["tank-a/a.jpg"]["source"] == "a.jpg" and len(entries["tank-a/a.jpg"]["source_sha256"]) == 64
    for scene in ("tank a/../x", "tank-b\n"):  # a trailing newline would make a folder name nobody can type
        bad = run(ws, tmp_path / "in", "--scene", scene)
        assert bad.exit_code == 1 and "scene name" in bad.output, scene


def test_any_file_name_gets_a_safe_stored_name(ws, tmp_path, make_photo):
    src = tmp_path / "phone"
    make_photo(src / "my fish (1).jpg", size=(200, 150), seed=1)
    make_photo(src / "鱼 1.jpg", size=(200, 150), seed=2)
    latin1 = os.path.join(os.fsencode(src), b"caf\xe9.jpg")  # a name from an old Windows zip
    try:
        fd = os.open(latin1, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    os.close(fd)
    make_photo(os.fsdecode(latin1), size=(200, 150), seed=3)
    r = run(ws, src)
    assert r.exit_code == 0, r.output
    names = stored(ws)
    assert names == sorted(["my_fish_1.jpg", "鱼_1.jpg", "caf.jpg"])
    for n in names:
        n.encode("utf-8")  # no lone surrogates: valid UTF-8 everywhere
        assert " " not in n and "/" not in n
    sources = {e["source"] for e in index(ws).values()}
    assert "鱼 1.jpg" in sources and "caf\\xe9.jpg" in sources


def test_safe_stem_keeps_letters_of_any_script():
    assert safe_stem("IMG 0042 (edited).HEIC") == "IMG_0042_edited"
    assert safe_stem("Fisch_Müller.jpg") == "Fisch_Müller"
    assert safe_stem("..jpg") == "photo"
    assert safe_stem("a\u0308.jpg") == "\u00e4"  # macOS writes NFD; stored NFC


def test_same_stem_from_two_folders_gets_two_names(ws, tmp_path, make_photo):
    make_photo(tmp_path / "day1" / "IMG_0001.jpg", size=(200, 150), seed=1)
    make_photo(tmp_path / "day2" / "img_0001.jpg", size=(200, 150), seed=2)
    s = import_photos(ws, [tmp_path / "day1", tmp_path / "day2"], progress=False)
    assert s.imported == ["default/IMG_0001.jpg", "default/img_0001_2.jpg"]


def test_a_bad_file_is_named_and_the_good_ones_still_come_in(ws, tmp_path, make_photo):
    src = tmp_path / "phone"
    make_photo(src / "good 1.jpg", size=(300, 200), seed=1)
    make_photo(src / "good 2.png", size=(300, 200), seed=2)
    good = (src / "good 1.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(good[: len(good) // 2])
    (src / "empty.jpg").write_bytes(b"")
    r = run(ws, src)
    assert r.exit_code == 1
    assert stored(ws) == ["good_1.jpg", "good_2.jpg"]
    lines = r.output.splitlines()
    cut = [ln for ln in lines if "cut.jpg" in ln]
    empty = [ln for ln in lines if "empty.jpg" in ln]
    assert len(cut) == 1 and cut[0].startswith("error: ") and "Fix:" in cut[0]
    assert len(empty) == 1 and "empty" in empty[0] and "copy it again" in empty[0] and "labelme" not in empty[0]
    assert "imported 2 photo(s)" in r.output and "2 unreadable" in r.output
    assert "Traceback" not in r.output


def test_running_an_import_again_adds_nothing(ws, tmp_path, make_photo):
    for i in range(3):
        make_photo(tmp_path / "phone" / f"p{i}.jpg", size=(300, 200), seed=i)
    assert run(ws, tmp_path / "phone").exit_code == 0
    files = sorted(ws.photos_dir.rglob("*"))
    again = run(ws, tmp_path / "phone")
    assert again.exit_code == 0 and "imported 0 photo(s), 3 exact duplicate(s) skipped" in again.output
    assert sorted(ws.photos_dir.rglob("*")) == files
    ws.index_file.unlink()  # a killed import, or an index lost: rebuilt from the photos themselves
    third = import_photos(ws, [tmp_path / "phone"], progress=False)
    assert not third.imported and len(third.near_duplicates) == 3
    assert set(index(ws)) == {"default/p0.jpg", "default/p1.jpg", "default/p2.jpg"}


@pytest.mark.parametrize("damage", ['{"photos": []}', '{"photos": {"default/p0.jpg": "x"}}', "[1, 2]",
                                    '{"photos": {"default/p0.jpg": {"dhash": "not hex"}}}', "{not json"])
def test_a_damaged_index_is_rebuilt_from_the_photos(ws, tmp_path, make_photo, damage):
    make_photo(tmp_path / "p0.jpg", size=(300, 200), seed=1)
    import_photos(ws, [tmp_path / "p0.jpg"], progress=False)
    ws.index_file.write_text(damage)
    s = import_photos(ws, [tmp_path / "p0.jpg"], progress=False)
    assert not s.imported and not s.failed and len(s.near_duplicates) == 1
    assert set(index(ws)) == {"default/p0.jpg"}


def test_labelme_json_beside_a_photo_comes_along_scaled(ws, tmp_path, make_photo):
    make_photo(tmp_path / "a.jpg", size=(2000, 1500), orientation=6)  # labelme labels it upright
    labelme_json(tmp_path / "a.jpg", [rect("fish", 100, 200, 500, 700), rect("shark", 1000, 0, 2000, 1500)],
                 size=(2000, 1500), imageData="AAAA")
    s = import_photos(ws, [tmp_path / "a.jpg"], max_side=1000, progress=False)
    assert s.labels == ["default/a.jpg"] and not s.failed
    d = json.loads((ws.photos_dir / "default" / "a.json").read_text("utf-8"))
    assert (d["imageWidth"], d["imageHeight"]) == (1000, 750)
    assert d["imagePath"] == "a.jpg" and d["imageData"] is None
    assert [s["points"] for s in d["shapes"]] == [[[50, 100], [250, 350]], [[500, 0], [1000, 750]]]
    assert [s["label"] for s in d["shapes"]] == ["fish", "shark"]
    from labeling.check import check_labels

    report = check_labels([ws.photos_dir], ws.classes)  # the carried labels fit the stored photo
    assert not report.errors and len(report.items) == 1


def test_labels_that_do_not_fit_the_photo_stay_behind_and_are_named(ws, tmp_path, make_photo):
    make_photo(tmp_path / "sideways.jpg", size=(400, 300), orientation=6, seed=1)
    labelme_json(tmp_path / "sideways.jpg", [rect("fish", 1, 1, 50, 50)], size=(300, 400))  # raw, not upright
    make_photo(tmp_path / "other.jpg", size=(400, 300), seed=2)
    (tmp_path / "other.json").write_text('{"annotations": []}')  # some other tool's JSON
    r = run(ws, tmp_path / "sideways.jpg", tmp_path / "other.jpg")
    assert r.exit_code == 1
    assert stored(ws) == ["other.jpg", "sideways.jpg"]
    assert not list((ws.photos_dir / "default").glob("*.json"))
    assert "sideways.json" in r.output and "300x400" in r.output
    assert "other.json" in r.output and "not a readable labelme file" in r.output
    assert "imported 2 photo(s)" in r.output and "unreadable" not in r.output
    assert (tmp_path / "other.json").read_text() == '{"annotations": []}'


def test_labelme_json_named_on_the_command_line_is_not_a_photo(ws, tmp_path, make_photo):
    make_photo(tmp_path / "a.jpg", size=(300, 200))
    labelme_json(tmp_path / "a.jpg", [rect("fish", 1, 1, 50, 50)], size=(300, 200))
    r = run(ws, tmp_path / "a.jpg", tmp_path / "a.json")  # what `hack import phone/*` passes
    assert r.exit_code == 0, r.output
    assert "with their labelme labels" in r.output and "unreadable" not in r.output


def test_heic_is_imported_upright(ws, tmp_path, make_photo):
    if not heic_can_encode():
        pytest.skip("this pillow-heif build cannot encode HEIC")
    upright = make_photo(tmp_path / "IMG_0001.HEIC", size=(640, 480), orientation=6, quality=90)
    [rel] = import_photos(ws, [tmp_path / "IMG_0001.HEIC"], max_side=320, progress=False).imported
    assert rel == "default/IMG_0001.jpg"
    with Image.open(ws.photos_dir / rel) as out:
        assert out.size == (320, 240) and out.format == "JPEG" and not dict(out.getexif())
        assert mean_abs_diff(out, upright.resize((320, 240), Image.LANCZOS)) < 8


def test_a_folder_with_no_photos_is_a_clear_error(ws, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    r = run(ws, tmp_path / "empty")
    assert r.exit_code == 1 and "no photos found" in r.output and "Fix:" in r.output
    r = run(ws, tmp_path / "nowhere")
    assert r.exit_code == 1 and "nowhere" in r.output and "no such file or folder" in r.output
    assert not ws.index_file.exists()


def test_import_outside_a_workspace_says_how_to_make_one(tmp_path, monkeypatch, make_photo):
    make_photo(tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["import", "a.jpg"])
    assert r.exit_code == 1 and "not inside a workspace" in r.output and "hack init" in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output


def test_max_side_too_small_is_refused(ws, tmp_path, make_photo):
    make_photo(tmp_path / "a.jpg")
    with pytest.raises(KitError, match="--max-side 32"):
        import_photos(ws, [tmp_path / "a.jpg"], max_side=32, progress=False)


# --- the workspace's class list (labelme's labels file) ----------------------------------------------

def test_labels_file_skips_blank_lines_comments_and_labelme_pseudo_classes(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_bytes("\ufeff__ignore__\r\n_background_\r\nfish\r\n\r\n  jelly   fish \r\n# later: eel\r\nshark\r\n\r\n".encode())
    assert read_classes(f) == ["fish", "jelly fish", "shark"]


@pytest.mark.parametrize("text,line", [("fish\nshark\nfish\n", 3), ("fish\nshark\n\nFish\n", 4),
                                       ("fish\njelly fish\njelly  fish\n", 3)])
def test_labels_file_with_a_duplicate_names_the_line(tmp_path, text, line):
    f = tmp_path / "labels.txt"
    f.write_text(text)
    with pytest.raises(KitError, match=rf"labels\.txt: class .* on line {line} repeats .*Fix:"):
        read_classes(f)


def test_init_with_a_bad_labels_file_or_twice_is_an_error(tmp_path):
    runner = CliRunner()
    (tmp_path / "labels.txt").write_text("fish\nFISH\n")
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--labels", str(tmp_path / "labels.txt")])
    assert r.exit_code == 1 and "line 2" in r.output and not (tmp_path / "ws" / ".hack").exists()
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nfish\n\nshark\n")
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--labels", str(tmp_path / "labels.txt")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ws" / "classes.txt").read_text() == "fish\nshark\n"
    again = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--classes", "eel"])
    assert again.exit_code == 1 and "already a workspace" in again.output
    assert (tmp_path / "ws" / "classes.txt").read_text() == "fish\nshark\n"
    with pytest.raises(KitError, match="no class names"):
        parse_classes("\n__ignore__\n\n")


# --- real phone photos and labelme's own files, when ../shared is present --------------------------

def test_real_labeled_photos_come_in_with_their_boxes(ws, tmp_path, shared_dir):
    from labeling.check import check_labels

    scene = shared_dir / "data" / "aquarium-scene-a"
    photos = sorted(scene.glob("*.jpg"))[:6]
    s = import_photos(ws, photos, scene="aquarium-a", max_side=256, progress=False)
    assert len(s.imported) == len(photos) and len(s.labels) == len(photos) and not s.failed
    ws.classes_file.write_bytes((scene / "labels.txt").read_bytes())
    report = check_labels([ws.photos_dir], ws.classes)
    assert not report.errors, report.errors
    for src in photos:
        before = json.loads(src.with_suffix(".json").read_text("utf-8"))
        after = json.loads((ws.photos_dir / "aquarium-a" / src.with_suffix(".json").name).read_text("utf-8"))
        scale = after["imageWidth"] / before["imageWidth"]
        assert max(after["imageWidth"], after["imageHeight"]) == 256
        assert [sh["label"] for sh in after["shapes"]] == [sh["label"] for sh in before["shapes"]]
        for a, b in zip(after["shapes"], before["shapes"]):
            np.testing.assert_allclose(a["points"], np.array(b["points"]) * scale, atol=0.01)


# --- two processes on one workspace ------------------------------------------------------------------

def _import_after_barrier(root, src, how, barrier):
    from labeling.importing import import_file
    from labeling.workspace import Workspace

    ws = Workspace(root)
    barrier.wait()  # both start from the same empty workspace: every file name collides
    if how == "import":
        import_photos(ws, [src], scene="tank-a", progress=False)
    else:  # the capture station's path, one upload at a time
        for p in sorted(src.glob("*.jpg")):
            import_file(ws, p, scene="tank-a", name=p.name, stored_name=p.name)


@pytest.mark.parametrize("second", ["import", "capture"])
def test_two_processes_importing_at_once_lose_no_photo_and_no_index_entry(ws, tmp_path, make_photo, second):
    """A teammate runs `hack import` while phones upload through `hack capture` (or a second import):
    both phones name their photos IMG_0001.jpg...; none may be written over, none dropped from the index."""
    import hashlib

    sources = {}
    for k, phone in enumerate(("phone-a", "phone-b")):
        for i in range(12):
            path = tmp_path / phone / f"IMG_{i + 1:04d}.jpg"
            make_photo(path, size=(320, 240), seed=100 * k + i + 1)
            sources[hashlib.sha256(path.read_bytes()).hexdigest()] = path
    jobs = [(ws.root, tmp_path / phone, how) for phone, how in (("phone-a", "import"), ("phone-b", second))]
    assert run_at_once(_import_after_barrier, jobs, start="fork") == [0, 0]
    assert len(stored(ws, "tank-a")) == 24  # 12 + 12: nothing written over
    entries = index(ws)
    assert sorted(entries) == sorted(f"tank-a/{n}" for n in stored(ws, "tank-a"))
    assert {e["source_sha256"] for e in entries.values()} == set(sources)  # every photo, with its checksum
    # each stored photo is the one its entry names (a photo written over would show another picture)
    for rel, e in entries.items():
        with Image.open(sources[e["source_sha256"]]) as src, Image.open(ws.photos_dir / rel) as got:
            assert mean_abs_diff(got, src.convert("RGB")) < 4, rel


def test_a_lock_file_that_cannot_be_opened_is_one_clear_error(ws, tmp_path, make_photo):
    make_photo(tmp_path / "phone" / "a.jpg", size=(320, 240))
    before = (tmp_path / "phone" / "a.jpg").read_bytes()
    (ws.state_dir / "import.lock").mkdir()  # something in the way of the lock file
    r = run(ws, tmp_path / "phone")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "import.lock: cannot open the lock file" in r.output and "Fix:" in r.output
    assert (tmp_path / "phone" / "a.jpg").read_bytes() == before

"""hack show draws what is in the .rec; every command explains itself; the demo runs offline."""
import re

import pytest
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from hackathon.core.errors import KitError
from labeling.pack import pack_dataset
from labeling.show import PALETTE, show_grid
from labelme_data import labelme_json, photo, rect


def test_show_draws_the_packed_box_in_its_class_colour(tmp_path):
    p = photo(tmp_path / "l" / "a.jpg", size=(320, 240), box=(40, 50, 160, 150))
    labelme_json(p, [rect("shark", 40, 50, 160, 150)])
    pack_dataset([tmp_path / "l"], tmp_path / "d", ["fish", "shark"], val_fraction=0, progress=False)
    shown = show_grid(tmp_path / "d" / "train.rec", tmp_path / "g.png", n=4, tile=320)
    assert shown == [0]
    g = Image.open(tmp_path / "g.png").convert("RGB")
    assert g.size == (320, 320)
    # the outline runs along the box's left edge; the object's inside is untouched
    assert g.getpixel((40, 100)) == PALETTE[1]
    assert g.getpixel((100, 100))[0] > 150 and g.getpixel((100, 100))[1] < 80
    assert g.getpixel((250, 200)) == pytest.approx((128, 128, 128), abs=6)


def test_show_without_records_says_what_to_do(tmp_path):
    with pytest.raises(KitError, match="hack pack"):
        show_grid(tmp_path / "missing.rec", tmp_path / "g.png")


@pytest.mark.parametrize("command", ["init", "import", "label", "check", "pack", "show", "demo", "doctor"])
def test_every_command_explains_itself(command):
    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0
    if command != "doctor":
        assert "Example" in r.output and f"hack {command}" in r.output


def test_top_level_help_walks_the_evening():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    order = [r.output.index(f"hack {c}") for c in ("init", "import", "label", "check", "pack", "show")]
    assert order == sorted(order)


def test_init_and_a_workspace_found_from_a_subfolder(tmp_path, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--classes", "fish, shark,jelly fish"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ws" / "classes.txt").read_text() == "fish\nshark\njelly fish\n"
    again = runner.invoke(cli, ["init", str(tmp_path / "ws"), "--classes", "fish"])
    assert again.exit_code == 1 and "already a workspace" in again.output
    monkeypatch.chdir(tmp_path / "ws" / "photos")
    r = runner.invoke(cli, ["label", "--print-command"])
    assert r.exit_code == 1 and "no photos to label" in r.output


def test_label_command_uses_the_kit_config(tmp_path):
    runner = CliRunner()
    runner.invoke(cli, ["init", str(tmp_path / "ws"), "--classes", "fish,shark"])
    for i in range(5):
        photo(tmp_path / "ws" / "photos" / "tank" / f"p{i}.jpg")
    r = runner.invoke(cli, ["--project", str(tmp_path / "ws"), "label", "--member", "2/2", "--print-command"])
    assert r.exit_code == 0, r.output
    assert "--nodata" in r.output and "--autosave" in r.output
    config = re.search(r"--config (\S+)", r.output).group(1)
    text = open(config).read()
    assert "auto_save: true" in text and "store_data: false" in text and "- shark" in text
    assert "p1" in text and "p3" in text and "p0" not in text  # share 2 of 2: the 2nd and 4th photos
    bad = runner.invoke(cli, ["--project", str(tmp_path / "ws"), "label", "--member", "3/2"])
    assert bad.exit_code == 1 and "1 <= K <= N" in bad.output


def test_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path):
    r = CliRunner().invoke(cli, ["show", str(tmp_path / "x.rec")])
    assert r.exit_code == 1 and r.output.startswith("error: ") and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["--verbose", "show", str(tmp_path / "x.rec")])
    assert r.exit_code == 1 and "Traceback" in r.output


def test_demo_runs_every_step_on_the_bundled_sample(tmp_path):
    """The whole evening on 20 sample photos with a seconds-long training budget: each step's
    result is where the output says, the simulated scene is said to be simulated, and the
    leaderboard ranks both teams."""
    out = tmp_path / "demo"
    r = CliRunner().invoke(cli, ["demo", "--out", str(out), "--minutes", "0.05", "--photos", "20"])
    assert r.exit_code == 0, r.output
    assert "20 photo(s)" in r.output and "0 error(s)" in r.output
    assert "SIMULATED scene change" in r.output
    assert Image.open(out / "train-grid.png").size[0] > 600
    assert (out / "data" / "train.rec").stat().st_size > 50_000
    assert (out / "run" / "curves.png").is_file() and (out / "export" / "model-symbol.json").is_file()
    assert (out / "eval" / "report.html").is_file()
    assert (out / "shift-report" / "shift.json").is_file() and (out / "predictions" / "predictions.json").is_file()
    # the simulated scene: the same val photos, other pixels and framing, boxes moved into the new frame
    val, other = sorted((out / "scenes" / "val").glob("*.jpg")), sorted((out / "scenes" / "other-camera").glob("*.jpg"))
    assert [p.name for p in val] == [p.name for p in other] and len(val) == 4
    a, b = Image.open(val[0]), Image.open(other[0])
    assert b.size[0] < a.size[0] or b.size[1] < a.size[1]
    assert sum(b.convert("L").resize((32, 32)).getdata()) < sum(a.convert("L").resize((32, 32)).getdata())
    board = (out / "board" / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 3 and {row.split(",")[1] for row in board[1:]} == {"demo-team", "baseline"}
    for result in ("train-grid.png", "run/curves.png", "eval/report.html", "shift-report/shift.md",
                   "board/leaderboard.html"):
        assert str(out / result) in r.output, result


def test_other_camera_moves_the_boxes_with_the_crop(tmp_path):
    from hackathon.demo import other_camera
    from labeling.check import check_labels

    p = photo(tmp_path / "val" / "a.jpg", size=(400, 300), box=(100, 80, 200, 180))
    labelme_json(p, [rect("shark", 100, 80, 200, 180), rect("fish", 0, 0, 6, 6)])
    other_camera(tmp_path / "val", tmp_path / "other", crop=0.12, seed=0)
    report = check_labels([tmp_path / "other"], ["fish", "shark"])
    assert not report.errors, report.problems
    (item,) = report.items
    # the corner box is cut off (less than half of it left); the shark box moved by the crop offset
    assert [b[0] for b in item.boxes] == [1]
    dx, dy = 400 - item.width, 300 - item.height
    _, x1, y1, x2, y2 = item.boxes[0]
    assert 0 < 100 - x1 <= dx and 0 < 80 - y1 <= dy and x2 - x1 == pytest.approx(100, abs=1)


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path):
    from labeling.workspace import init_workspace

    init_workspace(tmp_path / "team", ["fish"])
    (tmp_path / "team" / "photos" / "keep.jpg").write_bytes(b"a team's photo")
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "team"), "--minutes", "0.05"])
    assert r.exit_code == 1 and "not made by `hack demo`" in r.output
    assert (tmp_path / "team" / "photos" / "keep.jpg").read_bytes() == b"a team's photo"

"""hack show draws what is in the .rec; every command explains itself; the demo runs offline."""
import re

import pytest
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from labeling.errors import KitError
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


def test_demo_runs_on_the_bundled_sample(tmp_path):
    r = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    assert "60 photo(s)" in r.output and "0 error(s)" in r.output
    assert Image.open(tmp_path / "demo" / "train-grid.png").size[0] > 600
    assert (tmp_path / "demo" / "data" / "train.rec").stat().st_size > 100_000

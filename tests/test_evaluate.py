"""hack eval through the CLI on real labelme folders, real predictions files and a real exported SSD:
the numbers (perfect predictions give 1, half the detections give the known values, gap and
retention follow), the files (metrics.json's shape, a self-contained and escaped HTML page, PNGs),
the two ways of giving a detector agreeing, and clear errors for wrong flag combinations."""
import json
import shlex
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from hackathon.evaluate.metrics import METRICS
from hackathon.evaluate.truth import read_truth
from labeling.pack import pack_dataset
from labelme_data import labeled_set
from test_predict import make_export

CLASSES = ["fish", "a<b>&c"]  # a class name that HTML must escape


def make_set(root, n, scene):
    labeled_set(root, n=n, classes=CLASSES, scene=scene, size=(200, 150))
    (root / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    return root


def truth_rows(folder, keep=lambda i, name: True):
    t = read_truth(folder)
    return [{"image": n, "label": t.classes[c], "score": 0.9 - 0.01 * i, "bbox": b.tolist()}
            for i, n in enumerate(t.images) if keep(i, n) for b, c in zip(t.boxes[n], t.labels[n])]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def two_sets(tmp_path):
    a = make_set(tmp_path / "A", 6, "tank-a")
    b = make_set(tmp_path / "B", 4, "tank-b")
    (tmp_path / "a.json").write_text(json.dumps(truth_rows(a)))
    # the shift set: detections on its first two images only (one of each class): recall 1/2 per class
    (tmp_path / "b.json").write_text(json.dumps(truth_rows(b, lambda i, n: i < 2)))
    return tmp_path


def test_perfect_and_half_predictions_give_the_known_numbers(two_sets):
    t = two_sets
    r = invoke("eval", "--predictions", t / "a.json", "--data", t / "A", "--shift-predictions", t / "b.json",
               "--shift", t / "B", "--out", t / "report", "--bootstrap", "50")
    assert r.exit_code == 0, r.output
    m = json.loads((t / "report" / "metrics.json").read_text())
    half = {"voc07_map50": 6 / 11, "voc_map50": 0.5, "coco_map": 51 / 101, "coco_map50": 51 / 101}
    for metric in METRICS:
        assert m["in_scene"][metric] == pytest.approx(1.0)
        assert m["shift"][metric] == pytest.approx(half[metric])
        assert m["gap"][metric] == pytest.approx(1 - half[metric])
        assert m["retention"][metric] == pytest.approx(half[metric])
        lo, hi = m["gap_ci95"][metric]
        assert 0 <= lo <= hi <= 1 + 1e-9  # VOC07 sums 11 elevenths: 1.0000000000000002, as GluonCV
        assert set(m["in_scene"]["per_class"]) == set(CLASSES)
    assert m["in_scene"]["per_class"]["fish"]["n_truth"] == 3 and m["shift"]["n_images"] == 4
    assert m["shift"]["images"][0]["fn"] == 1 and m["shift"]["images"][-1]["f1"] == 1.0  # worst first
    assert m["per_class_drop"]["fish"]["voc07_map50"]["drop"] == pytest.approx(1 - 6 / 11)
    assert "VOC07 mAP@0.5" in r.output and "report.html" in r.output
    for png in ("pr_curves.png", "examples.png"):
        assert Image.open(t / "report" / png).format == "PNG"


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs, self.text = set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_is_self_contained_and_escaped(two_sets):
    t = two_sets
    invoke("eval", "--predictions", t / "a.json", "--data", t / "A", "--out", t / "report", "--bootstrap", "20")
    page = (t / "report" / "report.html").read_text()
    parser = Tags()
    parser.feed(page)
    assert parser.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr", "th", "td", "img"}
    assert parser.srcs and all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert "a<b>&c" in "".join(parser.text) and "&lt;b&gt;&amp;c" in page
    md = (t / "report" / "report.md").read_text()
    assert "| a<b>&c |" in md and "## Per class" in md and "![examples.png](examples.png)" in md


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export") / "export", classes=CLASSES)


def test_export_and_its_predictions_file_score_the_same(tmp_path, export):
    a = make_set(tmp_path / "A", 3, "tank-a")
    b = make_set(tmp_path / "B", 2, "tank-b")
    r = invoke("eval", export, "--data", a, "--shift", b, "--out", tmp_path / "r1", "--bootstrap", "20")
    assert r.exit_code == 0, r.output
    # not a terminal (a log file): no progress bar, one line a stage
    assert "\r" not in r.output and "detect A: 3 photo(s)" in r.output and "detect B: 2 photo(s)" in r.output
    for s in ("A", "B"):
        assert invoke("predict", export, tmp_path / s, "--out", tmp_path / f"p{s}").exit_code == 0
    r = invoke("eval", "--predictions", tmp_path / "pA" / "predictions.json", "--data", a, "--shift-predictions",
               tmp_path / "pB" / "predictions.csv", "--shift", b, "--out", tmp_path / "r2", "--bootstrap", "20")
    assert r.exit_code == 0, r.output
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("r1", "r2"))
    for key in ("in_scene", "shift"):
        assert {k: m1[key][k] for k in METRICS} == {k: m2[key][k] for k in METRICS}
        assert m1[key]["per_class"] == m2[key]["per_class"]
    assert m1["gap"] == m2["gap"]


def test_a_model_class_the_truth_lacks_is_named_and_left_out(tmp_path, export):
    labeled_set(tmp_path / "A", n=2, classes=("fish",), size=(200, 150))
    (tmp_path / "A" / "classes.txt").write_text("fish\n")
    r = CliRunner().invoke(cli, ["eval", str(export), "--data", str(tmp_path / "A"), "--out",
                                 str(tmp_path / "r"), "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    assert "the model's class(es) a<b>&c are not in the class list" in r.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["in_scene"]["per_class"]["a<b>&c"]["n_truth"] == 0 and m["in_scene"]["per_class"]["a<b>&c"]["coco_map"] is None


def test_packed_rec_as_the_data(tmp_path):
    labeled_set(tmp_path / "labels", n=5, classes=CLASSES, size=(200, 150))
    pack_dataset([tmp_path / "labels"], tmp_path / "data", CLASSES, val_fraction=0.4, seed=0, progress=False, workers=1)
    rows = truth_rows(tmp_path / "labels")
    val = read_truth(tmp_path / "data" / "val.rec")
    (tmp_path / "p.json").write_text(json.dumps([r for r in rows if r["image"] in val.index]))
    r = invoke("eval", "--predictions", tmp_path / "p.json", "--data", tmp_path / "data" / "val.rec",
               "--out", tmp_path / "r", "--bootstrap", "20")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["in_scene"]["n_images"] == 2 and m["in_scene"]["coco_map"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("args, message", [
    (["--data", "A"], "give an EXPORT folder or --predictions FILE"),
    (["--predictions", "a.json", "--data", "A", "--shift", "B"], "--shift SET needs --shift-predictions"),
    (["--predictions", "a.json", "--data", "A", "--shift-predictions", "b.json"], "--shift SET needs --shift-predictions"),
])
def test_wrong_flag_combinations(two_sets, monkeypatch, args, message):
    monkeypatch.chdir(two_sets)
    r = CliRunner().invoke(cli, ["eval"] + args + ["--out", "report"])
    assert r.exit_code == 1 and message in r.output


def test_bad_predictions_stop_with_file_and_row(two_sets):
    t = two_sets
    rows = json.loads((t / "a.json").read_text())
    rows[2]["bbox"][2] = float("nan")
    (t / "bad.json").write_text(json.dumps(rows))
    r = CliRunner().invoke(cli, ["eval", "--predictions", str(t / "bad.json"), "--data", str(t / "A"), "--out", str(t / "r")])
    assert r.exit_code == 1 and "bad.json: 1 bad row(s)" in r.output and "row 3:" in r.output
    assert not (t / "r" / "metrics.json").exists()


def test_examples_show_the_detections_there_are_when_none_reaches_the_threshold(tmp_path):
    import numpy as np

    from labeling.show import PALETTE

    a = make_set(tmp_path / "A", 4, "tank-a")
    rows = [dict(r, score=0.2 - 0.01 * i) for i, r in enumerate(truth_rows(a))]  # all below --threshold 0.3
    (tmp_path / "a.json").write_text(json.dumps(rows))
    r = invoke("eval", "--predictions", tmp_path / "a.json", "--data", a, "--out", tmp_path / "report",
               "--bootstrap", "20", "--threshold", "0.3")
    assert r.exit_code == 0, r.output
    assert "0 boxes >= 0.3; the top score was 0.20; try --threshold 0.17" in r.output  # 4 photos: the 4th best
    assert "drawn are those >= 0.17" in (tmp_path / "report" / "report.md").read_text()
    sheet = np.asarray(Image.open(tmp_path / "report" / "examples.png").convert("RGB"))
    # the class "a<b>&c" is drawn in PALETTE[1], a colour the photos do not have
    assert (sheet == PALETTE[1]).all(2).sum() > 100


def test_degenerate_truth_boxes_are_left_out_warned_and_in_the_report(tmp_path):
    """Issue 13.2: `hack eval` on a truth holding 0x0 boxes scores it, names each, says so in the report."""
    a = make_set(tmp_path / "A", 4, "tank-a")
    (tmp_path / "a.json").write_text(json.dumps(truth_rows(a)))
    j = a / "tank-a" / "img_02.json"
    d = json.loads(j.read_text())
    d["shapes"].append(dict(d["shapes"][0], points=[[30, 30], [30, 30]]))
    j.write_text(json.dumps(d))
    r = invoke("eval", "--predictions", tmp_path / "a.json", "--data", a, "--out", tmp_path / "report", "--bootstrap", "20")
    assert r.exit_code == 0, r.output
    assert f"warning: {j}: shape 2 ('fish'): a 0.0x0.0 px box is no object" in r.output
    m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert m["in_scene"]["voc07_map50"] == pytest.approx(1.0) and m["in_scene"]["n_boxes"] == 4
    assert m["in_scene"]["dropped_boxes"][0]["file"] == str(j)
    for page in ("report.md", "report.html"):
        assert "1 degenerate box(es)" in (tmp_path / "report" / page).read_text(), page


def test_every_truth_set_is_checked_before_the_model_runs(tmp_path, export):
    """Issue 13.3: a bad --shift set stops `hack eval` before any detection on --data."""
    a = make_set(tmp_path / "A", 3, "tank-a")
    b = make_set(tmp_path / "B", 2, "tank-b")
    bad = b / "tank-b" / "img_01.json"
    d = json.loads(bad.read_text())
    d["shapes"][0]["label"] = "whale"
    bad.write_text(json.dumps(d))
    r = CliRunner().invoke(cli, ["eval", str(export), "--data", str(a), "--shift", str(b), "--out",
                                 str(tmp_path / "r"), "--bootstrap", "20"])
    assert r.exit_code == 1
    assert "unknown class 'whale'" in r.output and "img_01.json" in r.output
    assert "detect A" not in r.output  # no progress bar: not one photo of A was run through the model
    assert not (tmp_path / "r").exists()


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(start):
    """The first command of the README's evening block that starts with `start`, as argv (no comment)."""
    line = next(l for l in README.read_text().splitlines() if l.startswith(start))
    return shlex.split(line.split("#")[0])[1:]  # drop "hack"


def test_the_readme_eval_command_runs_as_written_in_its_workspace(tmp_path, export, monkeypatch):
    """Issue 13.10: the README's `hack eval export --data ... --shift ...` names sets a team has:
    the val set `hack pack` wrote and a second scene it labeled itself; --help says what each is."""
    from labeling.workspace import init_workspace

    ws = init_workspace(tmp_path / "fishy", CLASSES).root
    labeled_set(ws / "photos", n=6, classes=CLASSES, scene="tank-a", size=(200, 150))
    labeled_set(ws / "photos", n=3, classes=CLASSES, scene="tank-b", size=(200, 150))
    shutil.copytree(export, ws / "export")
    monkeypatch.chdir(ws)
    pack = readme_command("hack pack ")
    r = CliRunner().invoke(cli, pack, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    args = readme_command("hack eval export ")
    r = CliRunner().invoke(cli, args + ["--bootstrap", "20"], catch_exceptions=False)
    assert r.exit_code == 0, (args, r.output)
    m = json.loads((ws / args[args.index("--out") + 1] / "metrics.json").read_text())
    assert m["in_scene"]["n_images"] >= 1 and m["shift"]["n_images"] == 3  # the second scene, not packed
    help_text = " ".join(CliRunner().invoke(cli, ["eval", "--help"]).output.split())
    assert "data/val.rec from `hack pack`" in help_text and "labeled yourself" in help_text


def test_the_reliability_table_counts_right_and_wrong_detections_per_score_bin(tmp_path):
    a = make_set(tmp_path / "A", 6, "tank-a")
    rows = truth_rows(a)  # every truth box found, scores 0.9 - 0.01 i: all right, in the 0.8-0.9 bin
    for r in rows[:]:  # and beside each, a wrong box of the other class far away, at score 0.25
        other = CLASSES[1 - CLASSES.index(r["label"])]
        rows.append({"image": r["image"], "label": other, "score": 0.25, "bbox": [0, 0, 3, 3]})
    (tmp_path / "p.json").write_text(json.dumps(rows))
    r = invoke("eval", "--predictions", tmp_path / "p.json", "--data", a, "--out", tmp_path / "report",
               "--bootstrap", "20")
    assert r.exit_code == 0, r.output
    rel = json.loads((tmp_path / "report" / "metrics.json").read_text())["in_scene"]["reliability"]
    n = len(rows) // 2
    bins = {tuple(b["range"]): b for b in rel["bins"]}
    high = [bins[(0.8, 0.9)], bins[(0.9, 1.0)]]  # scores 0.85..0.9: the right ones
    assert sum(b["n"] for b in high) == n and all(b["precision"] == 1.0 for b in high if b["n"])
    assert bins[(0.2, 0.3)]["n"] == n and bins[(0.2, 0.3)]["precision"] == 0.0
    assert bins[(0.2, 0.3)]["mean_score"] == pytest.approx(0.25) and rel["n_detections"] == 2 * n
    assert sum(b["n"] for b in rel["bins"]) == 2 * n
    mean_right = sum(b["n"] * b["mean_score"] for b in high if b["n"]) / n
    assert rel["ece"] == pytest.approx(0.5 * (1 - mean_right) + 0.5 * 0.25)  # both halves off by their gap
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Do the scores mean something? (reliability)" in md and "| in_scene | 0.2-0.3 |" in md

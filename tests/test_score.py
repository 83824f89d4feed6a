"""`hack score` end to end on a small truth made here (labelme JSON + JPEGs): exact ranking, tie
breaks, invalid and hostile submissions (zip-slip, symlinks, bombs, pickles) refused while the
others are scored, idempotent history, two scorers at once, in-scene gap, exported models."""
import csv
import json
import os
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import run_at_once
from hackathon.cli import cli
from hackathon.judge.ranking import interval, paired_tie, rank
from hackathon.judge.score import score_submissions
from hackathon.judge.submissions import Limits, Submission, discover, open_submission
from labelme_data import labeled_set

CLASSES = ("fish", "shark")


def truth_boxes(n=6):
    """The boxes labeled_set draws: image i has one box of class i % 2."""
    out = []
    for i in range(n):
        x1, y1 = 20 + 7 * i, 30 + 5 * i
        out.append((f"img_{i:02d}.jpg", CLASSES[i % 2], [x1, y1, x1 + 90 + 3 * i, y1 + 70 + 2 * i]))
    return out


def make_truth(root, n=6):
    labeled_set(root, n=n, classes=CLASSES)
    (Path(root) / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return Path(root)


def preds(which=range(6), shift=0.0, label=None):
    return [{"image": img, "label": label or cls, "score": 0.9 - 0.01 * k,
             "bbox": [box[0] + shift, box[1], box[2] + shift, box[3]]}
            for k, (img, cls, box) in enumerate(truth_boxes()) if k in which]


def team_folder(inbox, team, rows, mtime=None, name="predictions.json", extra=None):
    d = Path(inbox) / team
    d.mkdir(parents=True)
    (d / name).write_text(json.dumps(rows))
    for fname, text in (extra or {}).items():
        (d / fname).write_text(text)
    if mtime:
        os.utime(d, (mtime, mtime))
    return d


def csv_text(rows):
    lines = ["image,label,score,xmin,ymin,xmax,ymax"]
    lines += [",".join([r["image"], r["label"], str(r["score"])] + [str(v) for v in r["bbox"]]) for r in rows]
    return "\n".join(lines) + "\n"


def lying_zip(path, name, data, declared):
    """A zip whose headers declare `declared` bytes for a member that inflates to len(data)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    raw = bytearray(Path(path).read_bytes())
    local = raw.index(b"PK\x03\x04")
    struct.pack_into("<I", raw, local + 22, declared)
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, declared)
    Path(path).write_bytes(bytes(raw))


def hostile_inbox(inbox):
    inbox.mkdir(parents=True, exist_ok=True)
    good = json.dumps(preds())
    with zipfile.ZipFile(inbox / "slip.zip", "w") as zf:
        zf.writestr("../predictions.json", good)
    with zipfile.ZipFile(inbox / "absolute.zip", "w") as zf:
        zf.writestr("/tmp/predictions.json", good)
    with zipfile.ZipFile(inbox / "link.zip", "w") as zf:
        info = zipfile.ZipInfo("predictions.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with zipfile.ZipFile(inbox / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("predictions.json", b" " * (3 * 2**20))  # 3 MB of spaces, a few KB zipped
    lying_zip(inbox / "liar.zip", "predictions.json", b" " * (3 * 2**20), declared=100)
    with zipfile.ZipFile(inbox / "crowd.zip", "w") as zf:
        for i in range(30):
            zf.writestr(f"f{i}.txt", "x")
    (inbox / "notes.txt").write_text("not a submission")
    (inbox / "pickled").mkdir()
    (inbox / "pickled" / "model.pkl").write_bytes(b"\x80\x04K\x01.")


LIMITS = Limits(max_file_mb=1, max_total_mb=2, max_members=20)
EXPECTED_INVALID = {
    "absolute": "outside the submission folder", "bomb": "past the cap of 1 MB", "crowd": "more than 20",
    "liar": "zip", "link": "symbolic link", "notes.txt": "neither a folder nor a .zip",
    "pickled": "never run code or load pickles", "slip": "outside the submission folder",
    "unknown-class": "whale"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One real scoring run over good and hostile submissions."""
    root = tmp_path_factory.mktemp("score")
    truth = make_truth(root / "test")
    inbox = root / "inbox"
    team_folder(inbox, "perfect", preds(), mtime=3000)
    team_folder(inbox, "early-bird", preds(shift=12), mtime=1000)
    team_folder(inbox, "a-late", preds(shift=12), mtime=2000)
    with zipfile.ZipFile(inbox / "half.zip", "w") as zf:  # zipped around its folder, CSV format
        zf.writestr("half/predictions.csv", csv_text(preds(which=range(3))))
        zf.writestr("__MACOSX/half/._predictions.csv", "junk")
    team_folder(inbox, "unknown-class", preds(label="whale"))
    hostile_inbox(inbox)
    out = root / "out"
    res = score_submissions(truth, inbox, out, n_boot=200, limits=LIMITS)
    return {"root": root, "truth": truth, "inbox": inbox, "out": out, "res": res}


def test_ranking_and_tie_breaks(scored):
    rows = scored["res"]["board"]["rows"]
    ok = [(r["rank"], r["team"]) for r in rows if r["status"] == "ok"]
    assert ok == [(1, "perfect"), (2, "early-bird"), (3, "a-late"), (4, "half")]
    by = {r["team"]: r for r in rows}
    assert by["perfect"]["score"] == pytest.approx(1.0) and by["perfect"]["coco"] == pytest.approx(1.0)
    assert by["early-bird"]["score"] == pytest.approx(1.0) and by["early-bird"]["coco"] < 1.0
    assert by["a-late"]["coco"] == by["early-bird"]["coco"]  # same file: the earlier one first
    assert by["half"]["score"] == pytest.approx((7 / 11 + 4 / 11) / 2)  # VOC07 11-point by hand
    assert by["a-late"]["tie_above"] and by["early-bird"]["tie_above"]  # identical / all-1.0 resamples
    assert not by["half"]["tie_above"]
    assert by["half"]["lo"] <= by["half"]["score"] <= by["half"]["hi"] and by["half"]["lo"] < by["half"]["hi"]


def test_coco_matches_pycocotools(scored):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    boxes = truth_boxes()
    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": 320, "height": 240} for i in range(6)],
                  "categories": [{"id": c, "name": n} for c, n in enumerate(CLASSES)],
                  "annotations": [{"id": i + 1, "image_id": i, "category_id": CLASSES.index(cls), "iscrowd": 0,
                                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])}
                                  for i, (_, cls, b) in enumerate(boxes)]}
    gt.createIndex()
    names = [b[0] for b in boxes]
    dt = gt.loadRes([{"image_id": names.index(r["image"]), "category_id": CLASSES.index(r["label"]),
                      "score": r["score"], "bbox": [r["bbox"][0], r["bbox"][1], r["bbox"][2] - r["bbox"][0],
                                                    r["bbox"][3] - r["bbox"][1]]} for r in preds(shift=12)])
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    by = {r["team"]: r for r in scored["res"]["board"]["rows"]}
    assert by["early-bird"]["coco"] == pytest.approx(ev.stats[0], abs=1e-6)


def test_bad_and_hostile_submissions_are_listed_with_a_reason(scored):
    by = {r["team"]: r for r in scored["res"]["board"]["rows"]}
    invalid = {t: r["message"] for t, r in by.items() if r["status"] != "ok"}
    assert set(invalid) == set(EXPECTED_INVALID)
    for team, words in EXPECTED_INVALID.items():
        assert words in invalid[team], (team, invalid[team])
        assert "hack-score-" not in invalid[team]  # names the team's file, not the scorer's temp folder
        assert by[team]["rank"] is None
    assert "predictions.json" in invalid["unknown-class"]
    # nothing escaped the temp folder, the inbox is untouched
    assert not (scored["root"] / "predictions.json").exists() and not Path("/tmp/predictions.json").exists()
    assert sorted(p.name for p in scored["inbox"].iterdir()) == sorted(
        ["perfect", "early-bird", "a-late", "half.zip", "unknown-class", "slip.zip", "absolute.zip", "link.zip",
         "bomb.zip", "liar.zip", "crowd.zip", "notes.txt", "pickled"])


def test_files_written(scored):
    out = scored["out"]
    rows = list(csv.DictReader((out / "leaderboard.csv").open(encoding="utf-8")))
    assert [r["team"] for r in rows][:4] == ["perfect", "early-bird", "a-late", "half"]
    assert rows[0]["rank"] == "1" and rows[0]["status"] == "ok" and float(rows[0]["score"]) == 1.0
    page = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert "<svg" in page and "early-bird" in page and "shark" in page  # chart, per-class table
    assert (out / "leaderboard.md").read_text(encoding="utf-8").count("\n|") == len(rows) + 2  # header, rule, one line a team
    assert (out / "leaderboard.db").is_file()


def test_scoring_again_changes_nothing(scored):
    import sqlite3

    db = scored["out"] / "leaderboard.db"

    def counts():
        con = sqlite3.connect(db)
        try:
            return {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                    for t in ("runs", "submissions", "results", "run_results")}
        finally:
            con.close()

    before, csv_before = counts(), (scored["out"] / "leaderboard.csv").read_text()
    res = score_submissions(scored["truth"], scored["inbox"], scored["out"], n_boot=200, limits=LIMITS)
    assert not res["new_run"] and res["run_id"] == scored["res"]["run_id"]
    assert counts() == before and before["runs"] == 1 and before["results"] == len(EXPECTED_INVALID) + 4
    assert (scored["out"] / "leaderboard.csv").read_text() == csv_before


def test_resubmission_keeps_history_and_ranks_latest_files(tmp_path):
    truth = make_truth(tmp_path / "test")
    inbox = tmp_path / "inbox"
    team_folder(inbox, "a", preds(which=range(2)))
    team_folder(inbox, "b", preds(which=range(4)))
    db = tmp_path / "h.db"
    first = score_submissions(truth, inbox, tmp_path / "o1", db_path=db, n_boot=100)
    (inbox / "a" / "predictions.json").write_text(json.dumps(preds()))  # team a improves
    second = score_submissions(truth, inbox, tmp_path / "o2", db_path=db, n_boot=100)
    assert [r["team"] for r in first["board"]["rows"]] == ["b", "a"]
    assert [r["team"] for r in second["board"]["rows"]] == ["a", "b"]
    import sqlite3

    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2
    assert con.execute("SELECT COUNT(*) FROM submissions WHERE team = ?", ("a",)).fetchone()[0] == 2
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 3  # b's result reused
    con.close()


def _score_proc(truth, inbox, out, db, barrier):
    barrier.wait()
    score_submissions(truth, inbox, out, db_path=db, n_boot=100)


def test_two_scorers_at_once(tmp_path):
    truth = make_truth(tmp_path / "test")
    inbox = tmp_path / "inbox"
    for k in range(4):
        team_folder(inbox, f"t{k}", preds(which=range(k + 2)))
    db = tmp_path / "shared.db"
    assert run_at_once(_score_proc, [(truth, inbox, tmp_path / f"out{i}", db) for i in (0, 1)], timeout=180) == [0, 0]
    import sqlite3

    con = sqlite3.connect(db)
    assert [con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "submissions", "results")] == [1, 4, 4]
    con.close()
    a, b = ((tmp_path / f"out{i}" / "leaderboard.csv").read_text() for i in (0, 1))
    assert a == b and a.splitlines()[1].startswith("1,t3,ok")


def test_in_scene_gap_and_retention(tmp_path):
    truth = make_truth(tmp_path / "test")
    in_scene = make_truth(tmp_path / "home", n=6)  # same drawing: the team's scene
    inbox = tmp_path / "inbox"
    team_folder(inbox, "shifty", preds(which=range(3)), extra={"predictions-in-scene.json": json.dumps(preds())})
    team_folder(inbox, "no-home", preds())
    res = score_submissions(truth, inbox, tmp_path / "out", n_boot=100, in_scene=in_scene)
    by = {r["team"]: r for r in res["board"]["rows"]}
    assert by["shifty"]["in_scene"] == pytest.approx(1.0)
    assert by["shifty"]["gap"] == pytest.approx(0.5) and by["shifty"]["retention"] == pytest.approx(0.5)
    assert by["no-home"]["gap"] is None and "predictions-in-scene" in by["no-home"]["message"]
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "retention" in page and "0.500" in page


def test_cli_score_and_bad_metric(tmp_path):
    truth = make_truth(tmp_path / "test")
    inbox = tmp_path / "inbox"
    team_folder(inbox, "=evil", preds())
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["score", "--truth", str(truth), "--submissions", str(inbox), "--out", str(out),
                                 "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    assert "1 of 1 submissions scored" in r.output
    assert (out / "leaderboard.csv").read_text().splitlines()[1].startswith("1,'=evil,ok")
    r = CliRunner().invoke(cli, ["score", "--truth", str(tmp_path / "inbox"), "--submissions", str(inbox)])
    assert r.exit_code == 1 and "error:" in r.output


# ---- submissions opened alone: discovery, folders, exported-model checks ----

def test_discover_duplicates_and_hidden(tmp_path):
    (tmp_path / "a").mkdir()
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("predictions.json", "[]")
    (tmp_path / ".DS_Store").write_text("")
    subs = discover(tmp_path)
    assert [s.team for s in subs] == ["a", "a"] and "two entries" in subs[1].error and not subs[0].error


def test_folder_with_symlink_is_refused(tmp_path):
    team = tmp_path / "inbox" / "t"
    team.mkdir(parents=True)
    (team / "predictions.json").symlink_to("/etc/passwd")
    sub = open_submission(discover(tmp_path / "inbox")[0], tmp_path / "work", Limits())
    assert "symbolic link" in sub.error and not (tmp_path / "work" / "predictions.json").exists()


def test_same_files_zipped_or_not_are_the_same_submission(tmp_path):
    (tmp_path / "in" / "t").mkdir(parents=True)
    (tmp_path / "in" / "t" / "predictions.json").write_text("[]")
    with zipfile.ZipFile(tmp_path / "t2.zip", "w") as zf:
        zf.writestr("t/predictions.json", "[]")
    a = open_submission(Submission("t", tmp_path / "in" / "t", 0), tmp_path / "w1", Limits())
    b = open_submission(Submission("t", tmp_path / "t2.zip", 0), tmp_path / "w2", Limits())
    assert a.sha256 == b.sha256 and a.kind == b.kind == "predictions" and not a.error


def fake_export(folder, params=None, graph=None, classes="fish\nshark\n", export_json=None):
    folder.mkdir(parents=True)
    graph = graph if graph is not None else {
        "nodes": [{"op": "null", "name": "data", "inputs": []}, {"op": "Activation", "name": "a", "inputs": [[0, 0, 0]]}],
        "arg_nodes": [0], "heads": [[1, 0, 0], [1, 0, 0], [1, 0, 0]]}
    (folder / "model-symbol.json").write_text(json.dumps(graph))
    (folder / "model-0000.params").write_bytes(params if params is not None else struct.pack("<QQ", 0x112, 0) + b"\0" * 8)
    (folder / "classes.txt").write_text(classes)
    if export_json is not None:
        (folder / "export.json").write_text(json.dumps(export_json))
    return folder


@pytest.mark.parametrize("kwargs, words", [
    ({}, None),
    ({"params": b"\x80\x04\x95" + b"\0" * 20}, "looks like a pickle"),
    ({"params": b"PK\x03\x04" + b"\0" * 20}, "zip/torch"),
    ({"graph": {"nodes": [{"op": "null", "name": "x", "inputs": []}], "heads": [[0, 0, 0]] * 3}}, "no input named 'data'"),
    ({"graph": {"nodes": [{"op": "null", "name": "data", "inputs": []}], "heads": [[0, 0, 0]]}}, "1 outputs"),
    ({"graph": {"nodes": [{"op": "null", "name": "data"}, {"op": "os.system", "name": "p"}], "heads": [[0, 0, 0]] * 3}},
     "operators MXNet 1.9.1 does not have"),
    ({"graph": "rm -rf /"}, "not an MXNet symbol graph"),
    ({"graph": {"nodes": [{"op": "null", "name": "data"}, {"op": "Custom", "name": "c", "attrs": {"op_type": "x"}}],
                "heads": [[1, 0, 0]] * 3}}, "calls Python code"),
    ({"classes": "fish\nfish\n"}, "twice"),
    ({"export_json": {"data_shape": [100000, 100000]}}, "32..2048"),
    ({"export_json": {"data_shape": [512, 512], "classes": ["cat"]}}, "differ from classes.txt"),
])
def test_exported_model_checked_without_running(tmp_path, kwargs, words):
    team = fake_export(tmp_path / "in" / "t", **kwargs)
    sub = open_submission(Submission("t", team, 0), tmp_path / "w", Limits())
    if words is None:
        assert sub.kind == "model" and not sub.error
    else:
        assert words in sub.error, sub.error


def test_encrypted_member_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("predictions.json", "[]")
    raw = bytearray((tmp_path / "t.zip").read_bytes())  # zipfile cannot encrypt: set the flag bit by hand
    raw[raw.index(b"PK\x03\x04") + 6] |= 0x1
    raw[raw.index(b"PK\x01\x02") + 8] |= 0x1
    (tmp_path / "t.zip").write_bytes(bytes(raw))
    sub = open_submission(Submission("t", tmp_path / "t.zip", 0), tmp_path / "w", Limits())
    assert "encrypted" in sub.error


def test_model_missing_a_file_or_mixed_with_predictions(tmp_path):
    team = fake_export(tmp_path / "in" / "t")
    (team / "classes.txt").unlink()
    sub = open_submission(Submission("t", team, 0), tmp_path / "w1", Limits())
    assert "lacks classes.txt" in sub.error
    (team / "classes.txt").write_text("fish\n")
    (team / "predictions.json").write_text("[]")
    sub = open_submission(Submission("t", team, 0), tmp_path / "w2", Limits())
    assert "keep the one you want scored" in sub.error


def test_interval_and_paired_tie_on_plain_arrays():
    rng = np.random.RandomState(0)
    common = rng.randn(1000)  # the shared resample effect: pairing removes it
    a = 0.60 + 0.05 * common
    b = 0.59 + 0.05 * common + 0.002 * rng.randn(1000)
    assert paired_tie(a, b) is False  # unpaired intervals overlap widely, the paired difference does not
    lo_a, hi_a = interval(a)
    assert lo_a < np.median(b) < hi_a
    c = 0.60 + 0.05 * common + 0.02 * rng.randn(1000)
    assert paired_tie(a, c) is True
    assert paired_tie(a, []) is False
    rows = rank([{"team": "x", "status": "ok", "score": 0.5, "coco": 0.2, "boot": a, "mtime": 5, "first_seen": 9},
                 {"team": "w", "status": "ok", "score": 0.5, "coco": 0.2, "boot": a, "mtime": 7, "first_seen": 9},
                 {"team": "v", "status": "invalid", "score": None, "coco": None},
                 {"team": "y", "status": "ok", "score": 0.5, "coco": 0.3, "boot": c, "mtime": 9, "first_seen": 9},
                 {"team": "z", "status": "ok", "score": 0.5, "coco": 0.2, "boot": a, "mtime": 1, "first_seen": 9,
                  "first_run": 2}])
    assert [(r["rank"], r["team"]) for r in rows] == [(1, "y"), (2, "x"), (3, "w"), (4, "z"), (None, "v")]
    assert [r["tie_above"] for r in rows] == [False, True, True, True, False]


# ---- exported models: run by the scorer in a child process ----

@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A real `net.export` of the kit's SSD (random weights, 300x300: fast), as hack export writes it."""
    import mxnet as mx

    from hackathon.train.models import build_ssd

    folder = tmp_path_factory.mktemp("export")
    net = build_ssd(list(CLASSES), data_shape=300, pretrained_base=False)
    net.hybridize()
    net(mx.nd.zeros((1, 3, 300, 300)))
    net.export(str(folder / "model"), epoch=0)
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (folder / "export.json").write_text(json.dumps({"kit_export": 1, "data_shape": [300, 300],
                                                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                                    "classes": list(CLASSES)}))
    return folder


def test_exported_model_is_run_and_scored_and_a_broken_one_is_invalid(tmp_path, tiny_export):
    from hackathon.evaluate.metrics import match
    from hackathon.deploy.predict import load_detector, predict_images
    from hackathon.deploy.predictions import Predictions
    from hackathon.evaluate.truth import read_truth

    truth = make_truth(tmp_path / "test", n=3)
    inbox = tmp_path / "inbox"
    with zipfile.ZipFile(inbox.mkdir() or inbox / "modelled.zip", "w") as zf:
        for f in tiny_export.iterdir():
            zf.write(f, f"export/{f.name}")
    broken = inbox / "truncated"
    shutil.copytree(tiny_export, broken)
    params = (broken / "model-0000.params").read_bytes()
    (broken / "model-0000.params").write_bytes(params[: len(params) // 3])  # right magic, cut short
    team_folder(inbox, "preds", preds(which=range(3)))
    res = score_submissions(truth, inbox, tmp_path / "out", n_boot=100, in_scene=truth)  # in-scene = test here
    by = {r["team"]: r for r in res["board"]["rows"]}
    assert by["modelled"]["status"] == "ok" and by["modelled"]["kind"] == "model", by["modelled"]["message"]
    assert by["modelled"]["in_scene"] == pytest.approx(by["modelled"]["score"]) and by["modelled"]["gap"] == 0
    # the score is what the kit's own predict gives on the same images
    t = read_truth(truth)
    det = load_detector(tiny_export)
    rows = predict_images(det, [truth / n for n in t.images], truth, progress=False)
    expected = match(t, Predictions.from_rows(rows, t)).summary()
    assert by["modelled"]["score"] == pytest.approx(expected["voc07_map50"], abs=1e-12)
    assert by["modelled"]["coco"] == pytest.approx(expected["coco_map"], abs=1e-12)
    assert by["truncated"]["status"] == "invalid" and "could not run" in by["truncated"]["message"]
    assert by["preds"]["status"] == "ok"


def test_a_model_past_its_time_limit_costs_only_its_team(tmp_path, tiny_export):
    truth = make_truth(tmp_path / "test", n=2)
    inbox = tmp_path / "inbox"
    shutil.copytree(tiny_export, inbox / "slow")
    team_folder(inbox, "quick", preds(which=range(2)))
    res = score_submissions(truth, inbox, tmp_path / "out", n_boot=50, model_timeout_s=0.5)
    by = {r["team"]: r for r in res["board"]["rows"]}
    assert by["slow"]["status"] == "invalid" and "longer than 0.5 s" in by["slow"]["message"]
    assert by["quick"]["status"] == "ok" and by["quick"]["rank"] == 1
    # A refusal that came from the judges' settings is looked at again, in the same result row.
    res = score_submissions(truth, inbox, tmp_path / "out", n_boot=50, model_timeout_s=300)
    assert {r["team"]: r["status"] for r in res["board"]["rows"]} == {"slow": "ok", "quick": "ok"}
    import sqlite3

    con = sqlite3.connect(tmp_path / "out" / "leaderboard.db")
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2
    con.close()


def test_judges_mistakes_are_one_clear_error(tmp_path):
    from hackathon.core.errors import KitError

    truth = make_truth(tmp_path / "test")
    inbox = tmp_path / "inbox"
    team_folder(inbox, "a", preds())
    with pytest.raises(KitError, match="inside --submissions"):
        score_submissions(truth, inbox, inbox / "board", n_boot=50)
    (tmp_path / "notes.db").write_text("not sqlite, just notes " * 100)
    with pytest.raises(KitError, match="not a leaderboard history"):
        score_submissions(truth, inbox, tmp_path / "out", db_path=tmp_path / "notes.db", n_boot=50)
    assert sorted(p.name for p in inbox.iterdir()) == ["a"]


def test_control_characters_in_a_team_name_are_spelled_out(tmp_path):
    truth = make_truth(tmp_path / "test")
    inbox = tmp_path / "inbox"
    team_folder(inbox, "red\x1b[31mteam", preds())
    res = score_submissions(truth, inbox, tmp_path / "out", n_boot=50)
    assert res["board"]["rows"][0]["team"] == "red\\x1b[31mteam"
    assert "\x1b" not in (tmp_path / "out" / "leaderboard.csv").read_text()

"""The leaderboard's history (real SQLite files, two processes at once), its files (CSV formulas,
Markdown, HTML escaping) and the projector page in a real headless Chromium."""
import csv
import html.parser
import io
import json
import re
import shutil
import sqlite3
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import headless_chromium, run_at_once

from hackathon.judge import history
from hackathon.judge.board import to_csv, to_html, to_markdown, write_board
from hackathon.judge.serve import make_server

XSS = "<img src=x onerror=alert(1)>"
CLASSES = ["fish", "shark"]


def run_row(key="run-a", **kw):
    run = {"run_key": key, "config": "cfg", "truth": "test", "truth_sha256": "t" * 64, "in_scene": None,
           "in_scene_sha256": "", "metric": "voc07_map50", "n_boot": 200, "seed": 0, "n_images": 10,
           "classes": CLASSES}
    run.update(kw)
    return run


def result(score, coco=0.3, spread=0.01, seed=0, **kw):
    boot = score + spread * np.random.RandomState(seed).randn(200)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    r = {"status": "ok", "score": score, "lo": float(lo), "hi": float(hi), "coco": coco, "boot": boot,
         "summary": {"per_class": {"fish": {"voc07_map50": score + 0.1}, "shark": {"voc07_map50": float("nan")}}}}
    r.update(kw)
    return r


def fill(db, run_id, entries):
    """entries: (team, sha, result dict)."""
    for team, sha, res in entries:
        sid = history.add_submission(db, run_id, team, sha, "predictions", f"{team}.zip", 1000.0)
        history.add_result(db, run_id, sid, "cfg", res)


def test_history_ranks_and_is_idempotent(tmp_path):
    path = tmp_path / "lb.db"
    entries = [("b", "sha-b", result(0.60, seed=1)), ("a", "sha-a", result(0.80, seed=2)),
               ("bad", "invalid:x", {"status": "invalid", "message": "no predictions file"})]
    with history.connect(path) as db:
        run_id, new = history.start_run(db, run_row())
        assert new
        fill(db, run_id, entries)
        history.finish_run(db, run_id)
        first = history.board(db, run_id)
        dump = "\n".join(db.iterdump())
    assert [(r["rank"], r["team"], r["status"]) for r in first["rows"]] == [(1, "a", "ok"), (2, "b", "ok"),
                                                                             (None, "bad", "invalid")]
    assert first["rows"][0]["boot"].shape == (200,)
    with history.connect(path) as db:  # the same files again: the same run, submissions and results
        run_id2, new2 = history.start_run(db, run_row())
        fill(db, run_id2, entries)
        history.finish_run(db, run_id2)
        again = history.board(db, run_id2)
        counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("runs", "submissions", "results", "run_results")}
        times = db.execute("SELECT times_scored FROM runs").fetchone()[0]
        dump2 = "\n".join(db.iterdump())
    assert (run_id2, new2) == (run_id, False)
    assert counts == {"runs": 1, "submissions": 3, "results": 3, "run_results": 3}
    assert times == 2
    assert [r["team"] for r in again["rows"]] == ["a", "b", "bad"]
    # Only the look-up bookkeeping of the run moved.
    diff = set(dump2.splitlines()) ^ set(dump.splitlines())
    assert all(line.startswith('INSERT INTO "runs"') for line in diff), diff


def test_database_is_wal_and_sql_takes_hostile_names_as_data(tmp_path):
    path = tmp_path / "lb.db"
    evil = "x'); DROP TABLE results; --"
    with history.connect(path) as db:
        run_id, _ = history.start_run(db, run_row())
        fill(db, run_id, [(evil, "s1", result(0.5))])
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert history.board(db, run_id)["rows"][0]["team"] == evil


def _writer(path, prefix, n, barrier):
    barrier.wait()
    with history.connect(path) as db:
        run_id, _ = history.start_run(db, run_row(key="shared"))
        for i in range(n):
            sid = history.add_submission(db, run_id, f"{prefix}{i}", f"sha{i}", "predictions", "x", 0.0)
            history.add_result(db, run_id, sid, "cfg", result(0.5 + i / 100, seed=i))
            # the same team from the other process too: one row, whoever comes first
            sid = history.add_submission(db, run_id, f"both{i}", f"sha{i}", "predictions", "x", 0.0)
            history.add_result(db, run_id, sid, "cfg", result(0.1, seed=i))


def test_two_processes_write_at_once(tmp_path):
    path = tmp_path / "lb.db"
    assert run_at_once(_writer, [(path, p, 25) for p in ("p", "q")]) == [0, 0]
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 75
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 75
    assert db.execute("SELECT COUNT(*) FROM run_results").fetchone()[0] == 75
    db.close()


def board_with(teams, shift=False):
    rows = []
    for i, team in enumerate(teams):
        r = {"rank": i + 1, "team": team, "status": "ok", "kind": "predictions", "sha256": "ab" * 32,
             "score": 0.9 - i / 10, "lo": 0.85 - i / 10, "hi": 0.95 - i / 10, "coco": 0.4, "tie_above": i == 1,
             "tie_below": i == 0, "message": f"note {team}", "in_scene": None, "gap": None, "retention": None,
             "summary": {"per_class": {"fish": {"voc07_map50": 0.5}, "shark": {"voc07_map50": 0.25}}}}
        if shift:
            r.update(in_scene=0.95, gap=0.05 + i / 10, retention=0.9)
        rows.append(r)
    rows.append({"rank": None, "team": "=cmd|' /C calc'!A0", "status": "invalid", "kind": None, "sha256": "",
                 "score": None, "lo": None, "hi": None, "coco": None, "tie_above": False, "tie_below": False,
                 "message": "+bad | *zip* <b>x</b>", "in_scene": None, "gap": None, "retention": None, "summary": None})
    run = dict(run_row(), id=1, last_scored_at=0.0, started_at=0.0, finished_at=1.0)
    return {"run": run, "rows": rows}


def test_csv_neutralizes_formulas_and_keeps_numbers():
    text = to_csv(board_with(["-2+3", "@SUM(A1)", "\tx", "plain"], shift=True))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:4] == ["rank", "team", "status", "score"]
    assert [r["team"] for r in rows] == ["'-2+3", "'@SUM(A1)", "'\tx", "plain", "'=cmd|' /C calc'!A0"]
    assert rows[-1]["message"] == "'+bad | *zip* <b>x</b>"
    assert rows[0]["score"] == "0.9000" and rows[0]["score_lo"] == "0.8500" and rows[1]["tie_with_above"] == "yes"
    assert float(rows[1]["gap"]) == pytest.approx(0.15)
    assert rows[-1]["rank"] == "" and rows[-1]["status"] == "invalid"


def test_markdown_escapes_pipes_and_markup():
    md = to_markdown(board_with(["a|b", XSS, "*bold*"]))
    table = [line for line in md.splitlines() if line.startswith("|")]
    columns = {len(_split_md_row(line)) for line in table}
    assert len(columns) == 1, table  # a pipe in a name never adds a column
    assert "a\\|b" in md and "\\<img src=x onerror=alert(1)\\>" in md and "\\*bold\\*" in md
    assert not re.search(r"(?<!\\)[<>*`]", md.split("\n", 1)[1].replace("\\\\", "")), md  # no unescaped markup


def _split_md_row(line):
    cells, cur, i = [], "", 1
    while i < len(line) - 1:
        if line[i] == "\\":
            cur += line[i:i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(cur)
            cur = ""
        else:
            cur += line[i]
        i += 1
    return cells + [cur]


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_escaped(tmp_path):
    paths = write_board(board_with([XSS, "b&b"], shift=True), tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(page)
    text = "".join(parser.text)
    assert "img" not in parser.tags and "script" not in parser.tags and "b" not in parser.tags
    assert XSS in text and "b&b" in text and "+bad | *zip* <b>x</b>" in text
    assert "svg" in parser.tags and parser.tags.count("rect") == 2  # a bar for each scored team
    assert "retention" in text and "0.900" in text  # the shift columns
    assert "src=" not in page.replace(XSS.replace("<", "&lt;").replace(">", "&gt;"), "")  # nothing loaded
    assert not list(tmp_path.glob(".*partial"))


def test_html_without_shift_has_no_shift_columns():
    parser = Tags()
    parser.feed(to_html(board_with(["a", "b"])))
    assert "retention" not in "".join(parser.text)


@pytest.fixture
def server(tmp_path):
    srv = make_server(tmp_path / "lb.db", port=0, refresh_s=0.3)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, tmp_path / "lb.db", f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers, r.read().decode("utf-8")


def test_server_json_localhost_and_empty_history(server):
    srv, db_path, base = server
    assert srv.server_address[0] == "127.0.0.1"
    assert json.loads(get(base + "/api/board")[2]) == {"run": None, "rows": []}
    with history.connect(db_path) as db:
        run_id, _ = history.start_run(db, run_row())
        fill(db, run_id, [("b", "s1", result(0.4, seed=1)), (XSS, "s2", result(0.7, seed=2))])
    status, headers, body = get(base + "/api/board")
    data = json.loads(body)
    assert [(r["rank"], r["team"]) for r in data["rows"]] == [(1, XSS), (2, "b")]
    assert data["rows"][0]["per_class"] == {"fish": pytest.approx(0.8), "shark": None}  # NaN shown empty
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    page = get(base + "/")[2]
    assert XSS not in page and "<script src=\"/app.js\">" in page
    with pytest.raises(urllib.error.HTTPError) as e:
        get(base + "/../etc/passwd")
    assert e.value.code == 404


def browser(tmp_path):
    return headless_chromium(tmp_path)


def test_page_in_chromium_escapes_and_updates_live(server, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    srv, db_path, base = server
    with history.connect(db_path) as db:
        run_id, _ = history.start_run(db, run_row())
        fill(db, run_id, [("plain team", "s1", result(0.60, seed=1)), (XSS, "s2", result(0.75, seed=2)),
                          ("late", "s0", {"status": "invalid", "message": "<b>no predictions</b>"})])
    driver = browser(tmp_path)
    try:
        driver.set_page_load_timeout(30)
        driver.get(base + "/")
        wait = WebDriverWait(driver, 15)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#board tbody tr")) == 3)

        def teams():  # read in one script: the page rebuilds its rows on each poll (stale elements)
            return driver.execute_script(
                "return [...document.querySelectorAll('#board tbody td.team')].map(td => td.innerText)")

        assert teams() == [XSS, "plain team", "late"]
        assert driver.find_elements(By.TAG_NAME, "img") == [] and driver.find_elements(By.TAG_NAME, "b") == []
        assert "<b>no predictions</b>" in driver.execute_script(
            "return document.querySelector('#board tbody tr.invalid').innerText")
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text
        # A score lands after the page loaded: a new run with one more team, on top.
        with history.connect(db_path) as db:
            run2, _ = history.start_run(db, run_row(key="run-b"))
            fill(db, run2, [("plain team", "s1", result(0.60, seed=1)), (XSS, "s2", result(0.75, seed=2)),
                            ("newcomer", "s3", result(0.90, seed=3))])
        wait.until(lambda d: teams()[:1] == ["newcomer"])
        assert teams() == ["newcomer", XSS, "plain team"]
        assert driver.find_elements(By.TAG_NAME, "img") == []
        assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1  # no reload
        assert "3 teams scored" in driver.execute_script("return document.getElementById('status').innerText")
    finally:
        driver.quit()


def test_cli_serve_binds_localhost_and_answers(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port, released for the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with history.connect(tmp_path / "lb.db") as db:
        run_id, _ = history.start_run(db, run_row())
        fill(db, run_id, [("solo", "s1", result(0.5))])
    proc = subprocess.Popen([sys.executable, "-m", "hackathon.cli", "leaderboard", "serve", "--db",
                             str(tmp_path / "lb.db"), "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        data = json.loads(get(f"http://127.0.0.1:{port}/api/board")[2])
        assert [r["team"] for r in data["rows"]] == ["solo"]
        if shutil.which("ss"):  # iproute2: what the kernel says is listening on the port
            listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
            assert listening and all("127.0.0.1:" in line for line in listening.splitlines()), listening
    finally:
        proc.terminate()
        proc.wait(10)

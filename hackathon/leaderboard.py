"""The scoring history in SQLite: every run, every submission (team + sha256), every result.

One file, stdlib sqlite3, WAL mode, so the projector page reads while a scorer writes and two
scorers can run at once. Writes are short transactions (never held while a model runs) with a
busy timeout; every statement is parameterized.

Idempotent by construction: a submission is (team, sha256) and a result is (submission, config),
both UNIQUE and inserted with INSERT OR IGNORE; a run is keyed by its config and the set of
submissions it saw, so scoring the same files again adds no row and changes no ranking (it only
bumps the run's ``times_scored`` and ``last_scored_at``, the history of when it was looked at).

Tables
------
runs          id, run_key, config, truth, truth_sha256, in_scene, in_scene_sha256, metric, n_boot,
              seed, n_images, classes (JSON), started_at, finished_at, last_scored_at, times_scored
submissions   id, team, sha256, kind, source, mtime, first_seen, first_run
results       id, submission_id, config, status, score, lo, hi, coco, in_scene, gap, retention,
              message, summary (JSON), boot (float64 bytes), scored_at
run_results   run_id, result_id (which results a run ranked)

Example
-------
>>> with connect("out/leaderboard.db") as db:
...     board = latest_board(db)
"""
import contextlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np

from hackathon.judge.ranking import rank
from hackathon.core.errors import KitError
from hackathon.core.fileutil import display

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, run_key TEXT NOT NULL UNIQUE, config TEXT NOT NULL,
    truth TEXT, truth_sha256 TEXT NOT NULL, in_scene TEXT, in_scene_sha256 TEXT NOT NULL,
    metric TEXT NOT NULL, n_boot INTEGER NOT NULL, seed INTEGER NOT NULL, n_images INTEGER NOT NULL,
    classes TEXT NOT NULL, started_at REAL NOT NULL, finished_at REAL, last_scored_at REAL NOT NULL,
    times_scored INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY, team TEXT NOT NULL, sha256 TEXT NOT NULL, kind TEXT, source TEXT,
    mtime REAL, first_seen REAL NOT NULL, first_run INTEGER NOT NULL, UNIQUE (team, sha256));
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, submission_id INTEGER NOT NULL REFERENCES submissions (id),
    config TEXT NOT NULL, status TEXT NOT NULL, score REAL, lo REAL, hi REAL, coco REAL,
    in_scene REAL, gap REAL, retention REAL, message TEXT NOT NULL DEFAULT '', summary TEXT,
    boot BLOB, scored_at REAL NOT NULL, UNIQUE (submission_id, config));
CREATE TABLE IF NOT EXISTS run_results (
    run_id INTEGER NOT NULL REFERENCES runs (id), result_id INTEGER NOT NULL REFERENCES results (id),
    PRIMARY KEY (run_id, result_id));
"""


@contextlib.contextmanager
def connect(path, readonly=False):
    """A connection in autocommit mode (transactions are explicit), WAL, with a busy timeout.

    ``readonly`` opens an existing file without creating or changing anything (the server).
    """
    path = Path(path)
    if readonly:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                             isolation_level=None, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        try:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not readonly:
                _wal(db)
                db.execute("PRAGMA foreign_keys = ON")
                with transaction(db):  # executescript would commit early: one statement at a time
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                               (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and readonly:
                raise
            raise KitError(f"{display(path)}: not a leaderboard history ({e}). Fix: pass --db a new file name, "
                           "or the leaderboard.db `hack score` wrote.") from None
        yield db
    finally:
        db.close()


def _wal(db):
    """Switch to WAL. The switch needs the file to itself and SQLite does not wait for that with
    the busy timeout (two scorers creating one new file at once), so wait here."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"{BUSY_TIMEOUT_S:g} s waiting to switch the history to WAL")
        time.sleep(0.05)


def _has_schema(db):
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'run_results'").fetchone()


@contextlib.contextmanager
def transaction(db):
    """BEGIN IMMEDIATE: take the write lock up front, so two scorers queue instead of deadlocking."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def start_run(db, run):
    """Insert the run (or find it when these exact files were scored before); return (id, new).

    ``run`` holds the columns of ``runs`` except the id and times.
    """
    now = time.time()
    with transaction(db):
        cur = db.execute(
            "INSERT OR IGNORE INTO runs (run_key, config, truth, truth_sha256, in_scene, in_scene_sha256, metric,"
            " n_boot, seed, n_images, classes, started_at, last_scored_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run["run_key"], run["config"], run["truth"], run["truth_sha256"], run["in_scene"],
             run["in_scene_sha256"], run["metric"], run["n_boot"], run["seed"], run["n_images"],
             json.dumps(run["classes"]), now, now))
        new = cur.rowcount == 1
        row = db.execute("SELECT id FROM runs WHERE run_key = ?", (run["run_key"],)).fetchone()
        if not new:
            db.execute("UPDATE runs SET times_scored = times_scored + 1, last_scored_at = ? WHERE id = ?",
                       (now, row["id"]))
    return row["id"], new


def add_submission(db, run_id, team, sha256, kind, source, mtime):
    """The submission's id; first sight records its time and the run it was first seen in."""
    with transaction(db):
        db.execute("INSERT OR IGNORE INTO submissions (team, sha256, kind, source, mtime, first_seen, first_run)"
                   " VALUES (?,?,?,?,?,?,?)", (team, sha256, kind, source, mtime, time.time(), run_id))
        return db.execute("SELECT id FROM submissions WHERE team = ? AND sha256 = ?", (team, sha256)).fetchone()["id"]


def find_result(db, submission_id, config, scored_only=False):
    """The stored result's id. ``scored_only``: only a result with a score counts, since a refusal
    may depend on the scorer's settings (a time limit) or a scorer bug, and is looked at again."""
    row = db.execute("SELECT id, status FROM results WHERE submission_id = ? AND config = ?",
                     (submission_id, config)).fetchone()
    return row["id"] if row and (row["status"] == "ok" or not scored_only) else None


RESULT_FIELDS = ("status", "score", "lo", "hi", "coco", "in_scene", "gap", "retention", "message")


def add_result(db, run_id, submission_id, config, result):
    """Store a result and attach it to the run, in one transaction so a reader never sees half.

    A stored score is never replaced (two scorers computing the same one: the first wins); a
    stored refusal is replaced only by a different outcome, so the same verdict again changes nothing.
    """
    boot = result.get("boot")
    values = [result.get(k) for k in RESULT_FIELDS]
    values[RESULT_FIELDS.index("message")] = result.get("message") or ""
    columns = RESULT_FIELDS + ("summary", "boot", "scored_at")
    with transaction(db):
        db.execute(
            f"INSERT INTO results (submission_id, config, {', '.join(columns)}) VALUES ({', '.join('?' * (len(columns) + 2))})"
            f" ON CONFLICT (submission_id, config) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}"
            " WHERE results.status <> 'ok' AND (results.status <> excluded.status OR results.message <> excluded.message)",
            (submission_id, config, *values, json.dumps(result.get("summary")) if result.get("summary") else None,
             None if boot is None else np.asarray(boot, dtype="<f8").tobytes(), time.time()))
        result_id = find_result(db, submission_id, config)
        attach(db, run_id, result_id)
    return result_id


def attach(db, run_id, result_id):
    db.execute("INSERT OR IGNORE INTO run_results (run_id, result_id) VALUES (?, ?)", (run_id, result_id))


def finish_run(db, run_id):
    with transaction(db):
        db.execute("UPDATE runs SET finished_at = ? WHERE id = ? AND finished_at IS NULL", (time.time(), run_id))


def latest_run_id(db):
    """The run last scored (a run in progress included), or None on an empty history."""
    if not _has_schema(db):
        return None
    row = db.execute("SELECT id FROM runs ORDER BY last_scored_at DESC, id DESC LIMIT 1").fetchone()
    return row["id"] if row else None


def board(db, run_id):
    """The ranked board of one run: {"run": {...}, "rows": [ranked dicts]} (see ranking.rank)."""
    run = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    if run is None:
        return {"run": None, "rows": []}
    rows = []
    for r in db.execute(
            "SELECT s.team, s.sha256, s.kind, s.mtime, s.first_seen, s.first_run, r.* FROM run_results AS rr"
            " JOIN results AS r ON r.id = rr.result_id JOIN submissions AS s ON s.id = r.submission_id"
            " WHERE rr.run_id = ?", (run_id,)):
        row = dict(r)
        row["summary"] = json.loads(row["summary"]) if row["summary"] else None
        row["boot"] = np.frombuffer(row["boot"], dtype="<f8") if row["boot"] else np.zeros(0)
        rows.append(row)
    run = dict(run)
    run["classes"] = json.loads(run["classes"])
    return {"run": run, "rows": rank(rows)}


def latest_board(db):
    run_id = latest_run_id(db)
    return board(db, run_id) if run_id is not None else {"run": None, "rows": []}


def _finite(x):
    """JSON for a browser has no NaN: an undefined AP (a class with no boxes) is shown empty."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def public(board_):
    """The board as plain JSON for the page: no bootstrap arrays, numbers rounded for display."""
    run = board_["run"]
    out = {"run": None if run is None else {k: run[k] for k in (
        "id", "truth", "metric", "n_images", "n_boot", "classes", "started_at", "finished_at", "last_scored_at")},
        "rows": []}
    for r in board_["rows"]:
        per_class = ((r.get("summary") or {}).get("per_class") or {})
        metric = run["metric"] if run else "voc07_map50"
        out["rows"].append({
            "rank": r["rank"], "team": r["team"], "status": r["status"], "kind": r["kind"],
            "score": r["score"], "lo": r["lo"], "hi": r["hi"], "coco": r["coco"], "in_scene": r["in_scene"],
            "gap": r["gap"], "retention": r["retention"], "tie_above": r["tie_above"],
            "tie_below": r["tie_below"], "message": r["message"], "sha256": r["sha256"],
            "per_class": {c: v.get(metric) for c, v in per_class.items()}})
    return _finite(out)

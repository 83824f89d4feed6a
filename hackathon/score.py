"""`hack score`: every team's submission scored on the hidden test set, ranked, and remembered.

One run, top to bottom (:func:`score_submissions`):

1. read the truth (and the in-scene truth with ``--in-scene``);
2. open every submission into a private temp folder (hackathon/judge/submissions.py: zip safety, size
   caps, model files checked without running them) and hash it;
3. record the run in the SQLite history (hackathon/judge/history.py); a submission already scored
   under the same config is not scored again;
4. score the rest: predictions files are read and validated (hackathon/deploy/predictions.py), exported
   models run in a child process (hackathon/judge/sandbox.py), then metrics.match once per team, the
   primary metric and COCO AP from its summary, and bootstrap scores on the *same* resample
   weights for every team (so neighbours can be compared pairwise, hackathon/judge/ranking.py);
5. rank from the history and write leaderboard.csv/.md/.html (hackathon/judge/board.py).

A bad submission is listed as invalid with its message; the others are still scored. A submission
that breaks the scorer itself (a bug) is listed as ``error`` with the exception, and the
traceback goes to stderr: one hostile file never stops the judging.

In-scene (``--in-scene SET``): SET is a labelme folder (or .rec) of the scene the teams trained
in. Each predictions submission may carry ``predictions-in-scene.json`` (or .csv), its detections
on SET, named relative to SET; a model submission is run on SET by the scorer. Columns:
in-scene score, gap = in-scene − test, retention = test ÷ in-scene.
"""
import hashlib
import json
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hackathon.judge import history
from hackathon.judge.board import write_board
from hackathon.judge.ranking import interval
from hackathon.judge.submissions import Limits, Refused, discover, open_submission
from hackathon.core.errors import KitError
from hackathon.core.fileutil import display

DEFAULT_BOOT = 1000  # resamples: the 2.5% tails rest on 25 draws each


def score_submissions(truth_path, submissions_dir, out, db_path=None, metric="voc07_map50", in_scene=None,
                      n_boot=DEFAULT_BOOT, seed=0, limits=None, model_timeout_s=1800.0, echo=None, progress=False):
    """Score every submission in ``submissions_dir`` and write the board into ``out``.

    Returns {"run_id", "board", "paths", "db", "new_run"}; see the module docstring for the steps.
    """
    from hackathon.evaluate.truth import read_truth

    submissions_dir, out = Path(submissions_dir), Path(out)
    db_path = Path(db_path) if db_path else out / "leaderboard.db"
    _check_arguments(submissions_dir, out, db_path, metric)
    truth = read_truth(truth_path)
    if not truth.n_boxes:
        raise KitError(f"{display(truth_path)}: the test set has no labeled boxes, so nothing can be scored. "
                       "Fix: label it in labelme first (hack check to see).")
    in_truth = read_truth(in_scene) if in_scene else None
    subs = discover(submissions_dir)
    if not subs:
        raise KitError(f"{display(submissions_dir)}: no submissions in it. Fix: one folder or .zip a team.")
    with tempfile.TemporaryDirectory(prefix="hack-score-") as tmp:
        for i, sub in enumerate(subs):
            open_submission(sub, Path(tmp) / f"{i:04d}", limits or Limits())
        run = run_record(truth_path, truth, in_scene, in_truth, metric, n_boot, seed, subs)
        ctx = {"truth": truth, "truth_path": Path(truth_path).resolve(), "in_truth": in_truth,
               "in_path": Path(in_scene).resolve() if in_scene else None, "metric": metric,
               "weights": None, "n_boot": n_boot, "seed": seed, "timeout": model_timeout_s, "tmp": Path(tmp)}
        run_id, new, board = _score_run(db_path, run, subs, ctx, echo or (lambda *a: None), progress)
    paths = write_board(board, out)
    return {"run_id": run_id, "board": board, "paths": paths, "db": db_path, "new_run": new}


def _check_arguments(submissions_dir, out, db_path, metric):
    from hackathon.evaluate.metrics import METRICS

    if metric not in METRICS:
        raise KitError(f"--metric {metric}: unknown. Fix: one of {', '.join(METRICS)}.")
    if not submissions_dir.is_dir():
        raise KitError(f"{display(submissions_dir)}: no such folder. Fix: give the folder with one folder or .zip a team.")
    for flag, path in (("--out", out), ("--db", db_path.parent)):
        if submissions_dir.resolve() in (path.resolve(), *path.resolve().parents):
            raise KitError(f"{flag} {display(path)} is inside --submissions, where it would be read as a team. "
                           "Fix: write the leaderboard somewhere else.")


def _score_run(db_path, run, subs, ctx, echo, progress):
    """Record the run, score what the history does not have yet, and read the ranked board back."""
    from hackathon.evaluate.metrics import bootstrap_weights

    with history.connect(db_path) as db:
        run_id, new = history.start_run(db, run)
        for i, sub in enumerate(tqdm(subs, desc="scoring", unit="team", disable=not progress)):
            sid = history.add_submission(db, run_id, sub.team, _db_sha(sub), sub.kind or None,
                                         display(sub.source.name), sub.mtime)
            rid = history.find_result(db, sid, run["config"], scored_only=True)
            if rid is not None:  # scored before under the same config: same row, nothing recomputed
                with history.transaction(db):
                    history.attach(db, run_id, rid)
                continue
            if ctx["weights"] is None and not sub.error:
                ctx["weights"] = bootstrap_weights(run["n_images"], n=ctx["n_boot"], seed=ctx["seed"])
            result = evaluate(sub, ctx, ctx["tmp"] / f"{i:04d}")
            if result["status"] != "ok":
                with tqdm.external_write_mode(file=sys.stderr):  # a line above the bar, not through it
                    echo(f"{sub.team}: {result['status']}: {result['message']}")
            history.add_result(db, run_id, sid, run["config"], result)
        history.finish_run(db, run_id)
        return run_id, new, history.board(db, run_id)


def evaluate(sub, ctx, workdir):
    """One submission's result dict (status ok / invalid / error, scores, message, summary, boot)."""
    if sub.error:
        return {"status": "invalid", "message": sub.error}
    try:
        preds, notes = _test_predictions(sub, ctx, workdir)
        result = _scores(preds, ctx)
        if ctx["in_truth"] is not None:
            notes += _in_scene(sub, ctx, workdir, result)
        result["message"] = " ".join(notes)
        return result
    except (KitError, Refused) as e:
        return {"status": "invalid", "message": _clean(str(e), workdir, sub)}
    except Exception as e:  # a bug or an input nobody foresaw: this team only, the traceback for the judges
        traceback.print_exc(file=sys.stderr)
        return {"status": "error", "message": f"the scorer failed on this submission ({type(e).__name__}: "
                                              f"{_clean(str(e), workdir, sub)[:200]}); the judges have the details."}


def _test_predictions(sub, ctx, workdir):
    from hackathon.deploy.predictions import read_predictions
    from hackathon.judge.sandbox import run_model

    if sub.kind == "model":
        path, dropped = run_model(sub.path, ctx["truth_path"], workdir / "scored-test.json", ctx["timeout"])
        notes = [f"{dropped} detections of classes not in the test set were ignored."] if dropped else []
        return read_predictions(path, ctx["truth"]), notes
    return read_predictions(sub.path, ctx["truth"]), []


def _scores(preds, ctx):
    from hackathon.evaluate.metrics import match

    matches = match(ctx["truth"], preds)
    summary = matches.summary()
    boot = matches.score_many(ctx["metric"], ctx["weights"])  # every resample at once
    lo, hi = interval(boot)
    return {"status": "ok", "score": float(summary[ctx["metric"]]), "lo": lo, "hi": hi,
            "coco": float(summary["coco_map"]), "summary": _plain(summary), "boot": boot}


def _in_scene(sub, ctx, workdir, result):
    """Fill in_scene/gap/retention in ``result``; problems become notes (the test score stands)."""
    from hackathon.evaluate.metrics import match
    from hackathon.deploy.predictions import read_predictions
    from hackathon.judge.sandbox import run_model

    try:
        if sub.kind == "model":
            path, _ = run_model(sub.path, ctx["in_path"], workdir / "scored-in-scene.json", ctx["timeout"])
        elif sub.in_scene_path is not None:
            path = sub.in_scene_path
        else:
            return ["no predictions-in-scene.json, so no gap or retention."]
        in_score = float(match(ctx["in_truth"], read_predictions(path, ctx["in_truth"])).summary()[ctx["metric"]])
    except (KitError, Refused) as e:
        return [f"in-scene not scored: {_clean(str(e), workdir, sub)}"]
    result["in_scene"] = in_score
    result["gap"] = in_score - result["score"]
    result["retention"] = result["score"] / in_score if in_score > 0 else None
    return []


def run_record(truth_path, truth, in_scene, in_truth, metric, n_boot, seed, subs):
    """The run's row: its config (what a result depends on) and its key (config + the files seen)."""
    truth_sha = truth_digest(truth)
    in_sha = truth_digest(in_truth) if in_truth is not None else ""
    config = _digest({"truth": truth_sha, "in_scene": in_sha, "metric": metric, "n_boot": n_boot, "seed": seed})
    seen = sorted((s.team, _db_sha(s)) for s in subs)
    return {"run_key": _digest({"config": config, "submissions": seen}), "config": config,
            "truth": display(truth_path), "truth_sha256": truth_sha, "in_scene": display(in_scene) if in_scene else None,
            "in_scene_sha256": in_sha, "metric": metric, "n_boot": n_boot, "seed": seed,
            "n_images": len(truth.images), "classes": list(truth.classes)}


def truth_digest(truth):
    """sha256 of what scoring depends on: classes, image names, sizes, boxes, labels, difficult flags."""
    h = hashlib.sha256(json.dumps(list(truth.classes)).encode())
    for name in truth.images:
        h.update(json.dumps([name, list(truth.sizes.get(name, ()))]).encode())
        for arr in (truth.boxes[name], truth.labels[name], truth.difficult[name]):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _db_sha(sub):
    """The submission's identity in the history: its content hash; for a refused one, the hash
    with the refusal, so the same files judged under other caps are looked at again."""
    if not sub.error:
        return sub.sha256
    return "invalid:" + hashlib.sha256((sub.sha256 + "\0" + sub.error).encode()).hexdigest()


def _clean(message, workdir, sub):
    """Messages name the team's own file, not the scorer's temp folder."""
    return message.replace(str(workdir), display(sub.source.name))


def _plain(obj):
    """numpy numbers in the metrics summary as plain floats, for JSON."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj

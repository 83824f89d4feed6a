"""Order the teams, and say where the order means nothing: plain numpy on bootstrap scores.

Each team's bootstrap scores come from the *same* resample weights (metrics.bootstrap_weights on
the one test set), so two teams' arrays are paired: row k of both is the score on the same
resampled test set. Two neighbours are a statistical tie when the 95% interval of their paired
difference contains 0.

Example
-------
>>> rows = rank([{"team": "a", "status": "ok", "score": .61, "coco": .30, "boot": boot_a, ...}, ...])
>>> [(r["rank"], r["team"], r["tie_above"]) for r in rows]
"""
import numpy as np

from hackathon.evaluate.metrics import CI_LEVEL, percentile_interval

def paired_tie(boot_a, boot_b, level=CI_LEVEL):
    """True when the ``level`` interval of the paired difference a - b contains 0.

    Without bootstrap scores for both (or of different lengths) nothing can be said: False.
    """
    a, b = np.asarray(boot_a, dtype=np.float64), np.asarray(boot_b, dtype=np.float64)
    if a.size == 0 or a.shape != b.shape:
        return False
    lo, hi = percentile_interval(a - b, level)
    return lo <= 0.0 <= hi


def order_key(row):
    """Higher score first, then higher COCO AP, then the earlier submission, then the name.

    "Earlier" is first the scoring run the submission was first seen in (the history cannot be
    back-dated by a team), then its file time, capped at first sight (a file time is only as
    honest as the copy that carried it).
    """
    submitted = min(row.get("mtime") or float("inf"), row.get("first_seen") or float("inf"))
    return (-_num(row.get("score")), -_num(row.get("coco")), row.get("first_run") or 0, submitted, row["team"])


def rank(rows):
    """Scored rows ranked 1..n in order, with ``tie_above``/``tie_below`` (paired-bootstrap ties
    with the neighbour), then the rest (invalid, errors) unranked, by team name.

    Each row is a dict with at least team, status ("ok" when scored), score, coco, and boot (an
    array); mtime, first_seen and first_run are used for the tie-break when present. Returns new
    dicts; the input is not changed.
    """
    scored = sorted((dict(r) for r in rows if r.get("status") == "ok"), key=order_key)
    rest = sorted((dict(r) for r in rows if r.get("status") != "ok"), key=lambda r: r["team"])
    for i, row in enumerate(scored):
        row["rank"] = i + 1
        row["tie_above"] = i > 0 and paired_tie(scored[i - 1].get("boot", ()), row.get("boot", ()))
        row["tie_below"] = False
        if row["tie_above"]:
            scored[i - 1]["tie_below"] = True
    for row in rest:
        row["rank"], row["tie_above"], row["tie_below"] = None, False, False
    return scored + rest


def _num(x):
    return float("-inf") if x is None else float(x)

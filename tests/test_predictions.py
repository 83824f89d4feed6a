"""The predictions file: JSON and CSV round trips, and every kind of bad row rejected with the file,
the row and the fix (never counted, never dropped silently)."""
import json

import numpy as np
import pytest

from hackathon.deploy.predictions import Predictions, read_predictions, write_predictions
from hackathon.evaluate.truth import Truth
from hackathon.core.errors import KitError

TRUTH = Truth(["fish", "shark"], ["a/1.jpg", "a/2.jpg", "b/3.jpg"], {}, {}, {n: (100, 80) for n in ["a/1.jpg", "a/2.jpg", "b/3.jpg"]},
              {}, unlabeled=["b/unlabeled.jpg"], source="test-set")
ROWS = [{"image": "a/1.jpg", "label": "fish", "score": 0.9, "bbox": [1.5, 2.0, 30.25, 40.0]},
        {"image": "b/3.jpg", "label": "shark", "score": 0.125, "bbox": [10, 10, 20, 20]},
        {"image": "a/1.jpg", "label": "fish", "score": 1, "bbox": [0, 0, 100, 80]}]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_round_trip(tmp_path, suffix):
    path = write_predictions(ROWS, tmp_path / f"p{suffix}")
    p = read_predictions(path, TRUTH)
    assert p.image.tolist() == [0, 2, 0] and p.label.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(p.score, [0.9, 0.125, 1.0])
    np.testing.assert_array_equal(p.boxes, [r["bbox"] for r in ROWS])
    assert p.rows() == [dict(r, score=float(r["score"]), bbox=[float(v) for v in r["bbox"]]) for r in ROWS]
    assert [f.name for f in tmp_path.iterdir()] == [f"p{suffix}"]  # no temporary file left


def test_csv_header_is_the_contract(tmp_path):
    write_predictions(ROWS, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "image,label,score,xmin,ymin,xmax,ymax"


def bad(tmp_path, row, suffix=".json"):
    path = tmp_path / f"bad{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(ROWS[:1] + [row]))
    else:
        path.write_text("image,label,score,xmin,ymin,xmax,ymax\na/1.jpg,fish,0.5,1,1,5,5\n" + row + "\n")
    before = path.read_bytes()
    with pytest.raises(KitError) as e:
        read_predictions(path, TRUTH)
    assert path.read_bytes() == before
    msg = str(e.value)
    assert msg.startswith(str(path)) and "Fix:" in msg and "none is scored" in msg
    return msg


@pytest.mark.parametrize("row, expected", [
    ({"image": "a/1.jpg", "label": "fish", "score": float("nan"), "bbox": [1, 1, 5, 5]}, "row 2: .*NaN or infinity"),
    ({"image": "a/1.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, float("inf"), 5]}, "row 2: .*NaN or infinity"),
    ({"image": "a/1.jpg", "label": "fish", "score": 0.5, "bbox": [10, 1, 10, 5]}, "row 2: .*width 0 .*positive.*corners"),
    ({"image": "a/1.jpg", "label": "fish", "score": 0.5, "bbox": [10, 10, 30, -5]}, "row 2: .*height -15"),
    ({"image": "a/9.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, 5, 5]}, "row 2: image 'a/9.jpg' is not in the truth"),
    ({"image": "a\\2.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, 5, 5]}, "written 'a/2.jpg'.*forward slashes"),
    ({"image": "3.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, 5, 5]}, "'b/3.jpg' is.*relative to the test folder"),
    ({"image": "b/unlabeled.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, 5, 5]}, "has no labelme file"),
    ({"image": "a/1.jpg", "label": "fsh", "score": 0.5, "bbox": [1, 1, 5, 5]}, "unknown class 'fsh'; did you mean 'fish'"),
    ({"image": "a/1.jpg", "label": "fish", "score": "0.5", "bbox": [1, 1, 5, 5]}, "score '0.5' is not a number"),
    ({"image": "a/1.jpg", "label": "fish", "score": True, "bbox": [1, 1, 5, 5]}, "score True is not a number"),
    ({"image": "a/1.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, 5]}, "not 4 numbers"),
    ({"image": "a/1.jpg", "label": "fish", "score": 0.5, "bbox": [1, 1, "5", 5]}, "not a number"),
    ({"image": "a/1.jpg", "label": "fish", "bbox": [1, 1, 5, 5]}, "missing score"),
    (["a/1.jpg", "fish", 0.5], "a list, not an object"),
])
def test_bad_json_rows_are_rejected_with_row_and_fix(tmp_path, row, expected):
    assert __import__("re").search(expected, bad(tmp_path, row))


@pytest.mark.parametrize("line, expected", [
    ("a/1.jpg,fish,nan,1,1,5,5", "line 3: .*NaN"),
    ("a/1.jpg,fish,0.5,1,1,inf,5", "line 3: .*NaN or infinity"),
    ("a/1.jpg,fish,high,1,1,5,5", "line 3: score 'high' is not a number"),
    ("a/1.jpg,fish,0.5,1,1", "line 3: missing"),
    ("a/1.jpg,whale,0.5,1,1,5,5", "line 3: unknown class 'whale'"),
])
def test_bad_csv_rows_name_their_line(tmp_path, line, expected):
    assert __import__("re").search(expected, bad(tmp_path, line, ".csv"))


def test_many_bad_rows_are_counted_and_the_first_shown(tmp_path):
    rows = [dict(ROWS[0], score=float("nan")) for _ in range(30)]
    with pytest.raises(KitError, match=r"30 bad row\(s\) of 30.*\n  row 1:.*\n(.*\n){4}  \.\.\. 25 more"):
        Predictions.from_rows(rows, TRUTH, source="x.json")


def test_file_level_problems(tmp_path):
    (tmp_path / "d.json").write_text('{"image": "a/1.jpg"}')
    with pytest.raises(KitError, match="not a list"):
        read_predictions(tmp_path / "d.json", TRUTH)
    (tmp_path / "e.json").write_text('[{"image": ')
    with pytest.raises(KitError, match="not valid JSON"):
        read_predictions(tmp_path / "e.json", TRUTH)
    (tmp_path / "h.csv").write_text("image,label,score,x,y,w,h\n")
    with pytest.raises(KitError, match="line 1: the header lacks xmin, ymin, xmax, ymax"):
        read_predictions(tmp_path / "h.csv", TRUTH)
    with pytest.raises(KitError, match="no such predictions file"):
        read_predictions(tmp_path / "none.json", TRUTH)
    with pytest.raises(KitError, match=r"\.json or \.csv"):
        write_predictions(ROWS, tmp_path / "p.txt")


def test_numpy_numbers_from_a_detector_are_fine_and_empty_is_fine():
    rows = [{"image": "a/2.jpg", "label": "shark", "score": np.float32(0.5), "bbox": np.array([1, 2, 3, 4], np.float32)}]
    p = Predictions.from_rows(rows, TRUTH)
    assert p.score.tolist() == [0.5] and p.boxes.tolist() == [[1, 2, 3, 4]]
    assert len(Predictions.from_rows([], TRUTH)) == 0

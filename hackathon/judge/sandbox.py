"""Run one team's exported model on the judges' images, in a child process with a time limit.

The model is only data (a symbol graph and an NDArray file, checked by submissions.check_export
first), but MXNet's C++ loader is not hardened against hostile bytes: a crash, a hang or a huge
allocation there must cost one team its score, not the judges their evening. So it runs here, in
``python -m hackathon.judge.sandbox``, and only the predictions file it writes comes back (read and
validated like any team's). Rows of classes the test set does not have are dropped and counted.
"""
import json
import subprocess
import sys
from pathlib import Path

from hackathon.core.constants import KEEP_SCORE
from hackathon.core.errors import Refused


def run_model(export_dir, truth_path, out_json, timeout_s=1800.0, threshold=KEEP_SCORE):
    """Predict on every image of the truth at ``truth_path``; return (out_json, dropped rows, the graph
    that ran: "int8" where the export has one and this machine runs it, else fp32)."""
    cmd = [sys.executable, "-m", "hackathon.judge.sandbox", str(export_dir), str(truth_path), str(out_json), str(threshold)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              cwd=str(export_dir), errors="replace")
    except subprocess.TimeoutExpired:
        raise Refused(f"the model took longer than {timeout_s:g} s on the test images; export a smaller model.") from None
    if proc.returncode != 0:
        said = [line[len("error: "):] for line in proc.stderr.splitlines() if line.startswith("error: ")]
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise Refused(f"the exported model could not run: {(said or tail)[-1][:300]}. Fix: check it with "
                      "`hack predict EXPORT IMAGES` before submitting.")
    try:
        said = json.loads(proc.stdout.strip().splitlines()[-1])
        return Path(out_json), int(said["dropped"]), str(said.get("graph", "fp32"))
    except (IndexError, ValueError, KeyError, TypeError):
        raise Refused("the model run ended without its predictions; check it with `hack predict`.") from None


def _predict(export_dir, truth_path, out_json, threshold):
    from hackathon.deploy.predict import load_detector, predict_images
    from hackathon.deploy.predictions import write_predictions
    from hackathon.evaluate.truth import read_truth

    truth = read_truth(truth_path)
    detector = load_detector(export_dir)
    if truth.root is not None:
        rows = predict_images(detector, [Path(truth.root) / n for n in truth.images], truth.root,
                              threshold=threshold, progress=False)
    else:  # a packed .rec: its pixels come from the record
        from hackathon.deploy.predict import PREDICT_BATCH

        rows, names = [], list(truth.images)
        for first in range(0, len(names), PREDICT_BATCH):
            chunk = names[first:first + PREDICT_BATCH]
            found = detector.detect_many([truth.open_image(n) for n in chunk], threshold=threshold)
            rows += [dict(r, image=n) for n, f in zip(chunk, found) for r in f]
    known = set(truth.classes)
    kept = [r for r in rows if r["label"] in known]
    write_predictions(kept, out_json)
    return len(rows) - len(kept), detector.precision


def main(argv):
    from hackathon.core.errors import KitError

    export_dir, truth_path, out_json, threshold = argv
    try:
        dropped, graph = _predict(Path(export_dir), Path(truth_path), Path(out_json), float(threshold))
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"dropped": dropped, "graph": graph}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

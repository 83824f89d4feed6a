"""`hack demo`: the kit's main job on its bundled sample, start to finish, offline.

import -> check -> pack -> show for now; each later stage (train, export, eval, score) joins the
chain as it lands. Every step calls the same functions as its `hack` command.
"""
import shutil
from pathlib import Path

from labeling.check import check_labels
from labeling.errors import KitError
from labeling.importing import import_photos
from labeling.pack import pack_dataset
from labeling.show import show_grid
from labeling.workspace import init_workspace, read_classes

SAMPLE = Path(__file__).resolve().parent.parent / "labeling" / "sample"


def run_demo(out, echo=print, fresh=True):
    """Run the demo into `out` (a new workspace); returns {step: path of its result}."""
    out = Path(out)
    if out.exists():
        if not fresh or not (out / ".hack" / "workspace.json").exists():
            raise KitError(f"{out} exists and is not a demo workspace. Fix: pass another --out, or remove it.")
        shutil.rmtree(out)
    classes = read_classes(SAMPLE / "labels.txt")
    ws = init_workspace(out, classes)
    echo(f"1/4 workspace {ws.root} with {len(classes)} classes")
    summary = import_photos(ws, [SAMPLE / "aquarium-a"], scene="aquarium-a", max_side=1024)
    echo(f"2/4 {summary.line()} -> {ws.photos_dir}")
    report = check_labels([ws.photos_dir], classes)
    echo(f"3/4 check: {report.summary()}")
    echo(report.table())
    data = out / "data"
    manifest = pack_dataset([ws.photos_dir], data, classes, val_fraction=0.2, seed=0, report=report)
    s = manifest["splits"]
    echo(f"    pack: {s['train']['images']} train / {s['val']['images']} val photos -> {data}")
    grid = out / "train-grid.png"
    show_grid(data / "train.rec", grid, n=16)
    echo(f"4/4 show: {grid}")
    return {"workspace": ws.root, "data": data, "grid": grid}

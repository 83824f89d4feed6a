"""`hack export`: a run's best weights as a deployable, scoreable model folder.

EXPORT/model-symbol.json + model-0000.params (``HybridBlock.export`` of the detector in inference
mode), classes.txt (one class a line, in id order) and export.json (input size, normalization,
classes). Load it with ``mx.gluon.SymbolBlock.imports`` (no kit code needed) or
``hackathon.deploy.predict.load_detector``; the judges' scorer runs it the same way. Input: float32
(B, 3, H, W), RGB resized to H x W, /255, minus mean, over std. Outputs: class ids, scores, boxes
(corners in input pixels), id -1 where there is no detection.

Example
-------
>>> export_run("run", "export")          # run/best.params -> export/
>>> net = mx.gluon.SymbolBlock.imports("export/model-symbol.json", ["data"], "export/model-0000.params")
"""
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from hackathon.core.constants import IMAGENET_MEAN, IMAGENET_STD
from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_json_atomic, write_text_atomic
from hackathon.train.rundir import RunDir

# The export contract, owned here: the files `hack export` writes, and what every reader of an
# export (hack predict, hack eval, the judges' scorer and model check) may expect of them.
SYMBOL, PARAMS, CLASSES, META = "model-symbol.json", "model-0000.params", "classes.txt", "export.json"
INT8_SYMBOL, INT8_PARAMS = "model-int8-symbol.json", "model-int8-0000.params"  # `--int8`, named in META
REQUIRED_FILES = (SYMBOL, PARAMS, CLASSES)
OPTIONAL_FILES = (META, INT8_SYMBOL, INT8_PARAMS)  # without META (GluonCV by hand): the defaults below
EXPORT_FORMAT = 1
DEFAULT_SHAPE = [512, 512]  # GluonCV's SSD-512, for an export without export.json
STRICT_SIDE = (32, 2048)  # the input sides the judges accept from a team's export.json
NMS_THRESH, NMS_TOPK, POST_NMS = 0.45, 400, 100


def check_meta(meta, classes, strict=False):
    """export.json's content checked against the contract; returns it with the defaults filled in.

    Lenient (a team's own predict/eval): any positive input size. Strict (the judges, on files a
    team sent): sides within STRICT_SIDE and bounded numbers. Raises ValueError with what is wrong;
    each caller adds the file and the fix its user needs.
    """
    def numbers(v, n):
        return isinstance(v, list) and len(v) == n and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and (abs(x) < 1e6 or not strict) for x in v)

    if not isinstance(meta, dict):
        raise ValueError("export.json is not a JSON object")
    meta = {"data_shape": DEFAULT_SHAPE, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "classes": classes,
            **meta}
    shape, lo_hi = meta["data_shape"], STRICT_SIDE if strict else (1, float("inf"))
    if not (numbers(shape, 2) and all(isinstance(x, int) and lo_hi[0] <= x <= lo_hi[1] for x in shape)):
        sides = f"{lo_hi[0]}..{lo_hi[1]} pixels" if strict else "a positive whole number of pixels"
        raise ValueError(f"data_shape must be [H, W] with {sides} each, not {str(shape)[:40]}")
    for key in ("mean", "std"):
        if not numbers(meta[key], 3):
            raise ValueError(f"{key} must be three numbers (RGB)")
    if any(x <= 0 for x in meta["std"]):
        raise ValueError("std must be positive")
    if meta["classes"] != classes:
        raise ValueError(f"its classes {str(meta['classes'])[:200]} differ from classes.txt {str(classes)[:200]}")
    return meta


def export_run(run_path, out, weights="best"):
    """Export `run_path`'s best (or last) weights to the folder `out`; returns `out` as a Path.
    The raw scores: `hack export` calibrates them afterwards (deploy.calibration.export_calibrated)."""
    import mxnet as mx

    from hackathon.train.loop import TrainConfig
    from hackathon.train.models import build_net

    run = RunDir.open(run_path)
    config = run.read_config()
    params = run.best if weights == "best" else run.last
    if not params.is_file():
        raise KitError(f"{display(params)}: missing; the run has not finished an epoch. Fix: train at least one "
                       "epoch, or export --weights last.")
    cfg = TrainConfig.saved(config["train"], pretrained=False)
    classes = list(config["classes"])
    net = build_net(cfg, classes, mx.cpu())
    try:
        net.load_parameters(str(params), ctx=mx.cpu())
    except Exception as e:  # a truncated or foreign file: name it
        raise KitError(f"{display(params)}: cannot load ({e}). Fix: export --weights last, or train again.") from None
    net.set_nms(nms_thresh=NMS_THRESH, nms_topk=NMS_TOPK, post_nms=POST_NMS)
    net.hybridize(static_alloc=True, static_shape=True)
    size = int(cfg.data_shape)
    probe = mx.nd.array(np.random.RandomState(0).uniform(-2, 2, (1, 3, size, size)))
    want = [o.asnumpy() for o in net(probe)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"kit_export": EXPORT_FORMAT, "data_shape": [size, size], "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "classes": classes, "model": cfg.model, "weights": params.name,
            "run": str(run.path), "nms": {"thresh": NMS_THRESH, "topk": NMS_TOPK, "post_nms": POST_NMS}}
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp)
        net.export(str(tmp / "model"), epoch=0)
        _check_roundtrip(str(tmp), probe, want)
        write_text_atomic(tmp / CLASSES, "".join(c + "\n" for c in classes))
        write_json_atomic(tmp / META, meta)
        for name in (SYMBOL, PARAMS, CLASSES, META):
            os.replace(tmp / name, out / name)
    return out


def _check_roundtrip(folder, probe, want):
    """The exported files must give the trained net's detections: a bad export is caught here,
    not by the judges."""
    import mxnet as mx

    with warnings.catch_warnings():  # MXNet's note that the input's dtype is unknown until data comes
        warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
        net = mx.gluon.SymbolBlock.imports(os.path.join(folder, SYMBOL), ["data"], os.path.join(folder, PARAMS),
                                           ctx=mx.cpu())
    got = [o.asnumpy() for o in net(probe)]
    for g, w in zip(got, want):
        if g.shape != w.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-3):
            raise RuntimeError("the exported model does not reproduce the trained one's outputs")

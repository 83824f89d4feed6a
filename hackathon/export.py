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
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_json_atomic, write_text_atomic
from hackathon.train.rundir import RunDir
from hackathon.train.weights import MEAN_RGB, STD_RGB

EXPORT_FORMAT = 1
NMS_THRESH, NMS_TOPK, POST_NMS = 0.45, 400, 100


def export_run(run_path, out, weights="best"):
    """Export `run_path`'s best (or last) weights to the folder `out`; returns `out` as a Path."""
    import mxnet as mx

    from hackathon.train.loop import TrainConfig, build_net

    run = RunDir.open(run_path)
    config = run.read_config()
    params = run.best if weights == "best" else run.last
    if not params.is_file():
        raise KitError(f"{display(params)}: missing; the run has not finished an epoch. Fix: train at least one "
                       "epoch, or export --weights last.")
    cfg = TrainConfig(**{**config["train"], "pretrained": False})
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
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        net.export(os.path.join(tmp, "model"), epoch=0)
        _check_roundtrip(tmp, probe, want)
        for name in ("model-symbol.json", "model-0000.params"):
            os.replace(os.path.join(tmp, name), out / name)
    write_text_atomic(out / "classes.txt", "".join(c + "\n" for c in classes))
    write_json_atomic(out / "export.json", {
        "kit_export": EXPORT_FORMAT, "data_shape": [size, size], "mean": list(MEAN_RGB), "std": list(STD_RGB),
        "classes": classes, "model": cfg.model, "weights": params.name, "run": str(run.path),
        "nms": {"thresh": NMS_THRESH, "topk": NMS_TOPK, "post_nms": POST_NMS}})
    return out


def _check_roundtrip(folder, probe, want):
    """The exported files must give the trained net's detections: a bad export is caught here,
    not by the judges."""
    import mxnet as mx

    net = mx.gluon.SymbolBlock.imports(os.path.join(folder, "model-symbol.json"), ["data"],
                                       os.path.join(folder, "model-0000.params"), ctx=mx.cpu())
    got = [o.asnumpy() for o in net(probe)]
    for g, w in zip(got, want):
        if g.shape != w.shape or not np.allclose(g, w, rtol=1e-3, atol=1e-3):
            raise RuntimeError("the exported model does not reproduce the trained one's outputs")

"""INT8: an export's graph quantized with MXNet's oneDNN path, kept only if it keeps its accuracy.

`hack export RUN --out EXPORT --int8` writes, beside the fp32 graph, ``model-int8-symbol.json`` +
``model-int8-0000.params``: ``mxnet.contrib.quantization.quantize_net_v2`` on the exported net,
calibrated on photos (the run's own training photos by default), the layers GluonCV leaves in
fp32 for its SSDs (the head's ``flatten``/``concat``, and everything after them: box decoding and
NMS) left out. The INT8 graph is then scored against the fp32 one on the run's validation photos
(VOC07 mAP@0.5, as training validates); it is kept only within ``TOLERANCE``, otherwise removed,
and the caller says by how much it fell short. ``export.json``'s ``int8`` entry records the files,
the calibration (mode, photos), which operators run in INT8 and which stay fp32, and both mAPs.

oneDNN's INT8 kernels are in MXNet's Linux wheels only (``mx.runtime.Features()``); elsewhere the
readers of an export run its fp32 graph and say why.

Example
-------
>>> report = quantize_export("export", calib=train_images, val=val_images)   # Int8Report
>>> report.kept, report.map_fp32, report.map_int8
"""
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import write_json_atomic

from hackathon.deploy.export import INT8_PARAMS as PARAMS, INT8_SYMBOL as SYMBOL
TOLERANCE = 0.01  # mAP@0.5 the INT8 graph may lose against fp32 on the validation photos
# GluonCV's SSD quantization leaves these fp32: their outputs feed box decoding and NMS directly.
EXCLUDE_MATCH = ("flatten", "concat")
CALIB_MODES = ("naive", "entropy")
DEFAULT_CALIB = 64  # photos; GluonCV's scripts calibrate on a few batches too
MIN_CALIB = 8  # one batch


@dataclass
class Int8Report:
    """What quantizing an export did: kept or not, the two mAPs, the calibration and the layers."""
    kept: bool
    map_fp32: float
    map_int8: float
    calib_mode: str
    calib_images: int
    val_images: int
    int8_ops: dict = field(default_factory=dict)  # quantized operator -> count in the INT8 graph
    fp32_ops: dict = field(default_factory=dict)  # operators left in fp32 -> count

    @property
    def shortfall(self):
        return self.map_fp32 - self.map_int8 - TOLERANCE


def quantize_export(export_dir, calib, val, calib_mode="naive", progress=False, calib_source=""):
    """Quantize EXPORT's graph to INT8; keep it (files + export.json's ``int8`` entry) only if its
    VOC07 mAP@0.5 on `val` stays within TOLERANCE of fp32. `calib`: upright RGB PIL images; `val`:
    a list of (upright RGB PIL image, boxes (n, 4) in its pixels, class ids (n,)). Returns an
    Int8Report."""
    import mxnet as mx
    from mxnet.contrib.quantization import quantize_net_v2

    from hackathon.deploy.predict import int8_supported, load_detector

    if calib_mode not in CALIB_MODES:
        raise KitError(f"--calib-mode {calib_mode}: takes {' or '.join(CALIB_MODES)}.")
    ok, why = int8_supported()
    if not ok:
        raise KitError(f"--int8: {why}. Fix: export without --int8 (the fp32 graph runs everywhere), or export on Linux.")
    export_dir = Path(export_dir)
    detector = load_detector(export_dir, precision="fp32")
    batch = _calibration_batch(detector, calib)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
        qnet = quantize_net_v2(detector.net, quantized_dtype="auto", exclude_layers_match=list(EXCLUDE_MATCH),
                               calib_data=mx.io.NDArrayIter(batch, batch_size=8), calib_mode=calib_mode,
                               num_calib_examples=len(batch), ctx=mx.cpu(), logger=None)
    tmp = export_dir / ".int8-tmp"
    tmp.mkdir(exist_ok=True)
    try:
        qnet.hybridize(static_alloc=True)
        qnet(batch[:1])  # export writes the graph traced by a forward pass (and its params)
        qnet.export(str(tmp / "model-int8"), epoch=0)
        int8 = load_detector(export_dir, precision="int8", files=(tmp / SYMBOL, tmp / PARAMS))
        map_fp32, map_int8 = voc07_map(detector, val, progress), voc07_map(int8, val, progress)
        int8_ops, fp32_ops = _operators(tmp / SYMBOL)
        report = Int8Report(map_int8 >= map_fp32 - TOLERANCE, map_fp32, map_int8, calib_mode, len(batch), len(val),
                            int8_ops, fp32_ops)
        meta_path = export_dir / "export.json"
        meta = json.loads(meta_path.read_text("utf-8"))
        meta.pop("int8", None)
        if report.kept:
            for name in (SYMBOL, PARAMS):
                os.replace(tmp / name, export_dir / name)
            meta["int8"] = {"symbol": SYMBOL, "params": PARAMS, "tolerance": TOLERANCE, "calib_source": calib_source,
                            **asdict(report)}
        else:
            for name in (SYMBOL, PARAMS):
                (export_dir / name).unlink(missing_ok=True)  # an older INT8 graph is not this export's
        write_json_atomic(meta_path, meta)
    finally:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
    return report


def voc07_map(detector, val, progress=False):
    """VOC07 11-point mAP@0.5 of `detector` on `val` (GluonCV's VOC07MApMetric, as training validates)."""
    import mxnet as mx
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric
    from tqdm import tqdm

    metric = VOC07MApMetric(iou_thresh=0.5, class_names=list(detector.classes))
    for image, boxes, ids in tqdm(val, desc=f"val mAP ({detector.precision})", unit="img", disable=not progress):
        rows = detector.detect(image)
        det_boxes = np.array([r["bbox"] for r in rows], np.float32).reshape(1, -1, 4)
        det_ids = np.array([detector.classes.index(r["label"]) for r in rows], np.float32).reshape(1, -1, 1)
        det_scores = np.array([r["score"] for r in rows], np.float32).reshape(1, -1, 1)
        metric.update(mx.nd.array(det_boxes), mx.nd.array(det_ids), mx.nd.array(det_scores),
                      mx.nd.array(np.asarray(boxes, np.float32).reshape(1, -1, 4)),
                      mx.nd.array(np.asarray(ids, np.float32).reshape(1, -1, 1)))
    return float(metric.get()[1][-1])


def _calibration_batch(detector, images, limit=DEFAULT_CALIB):
    """The first `limit` images, preprocessed as the detector's input, as one batch."""
    import mxnet as mx

    if len(images) < MIN_CALIB:
        raise KitError(f"--int8: {len(images)} readable calibration photo(s); calibrating needs at least {MIN_CALIB}. "
                       "Fix: --calib DIR with more photos of the scene.")
    return mx.nd.concat(*(detector.preprocess(im) for im in images[:limit]), dim=0)


def _operators(symbol_file):
    """(INT8 operators, fp32 operators) of a quantized graph, each with its count."""
    nodes = json.loads(Path(symbol_file).read_text("utf-8"))["nodes"]
    int8, fp32 = {}, {}
    for n in nodes:
        op = n["op"]
        if op == "null":
            continue
        quantized = "quantiz" in op or n.get("attrs", {}).get("quantized") == "true"
        target = int8 if quantized else fp32
        target[op] = target.get(op, 0) + 1
    return int8, fp32


def describe(report):
    """One line for the terminal."""
    ops = sum(report.int8_ops.values())
    if report.kept:
        return (f"INT8 kept: val mAP@0.5 {report.map_int8:.3f} vs fp32 {report.map_fp32:.3f} on {report.val_images} "
                f"photo(s) (within {TOLERANCE}); {ops} INT8 operator(s), calibrated ({report.calib_mode}) on "
                f"{report.calib_images} photo(s)")
    return (f"INT8 not kept: val mAP@0.5 {report.map_int8:.3f} vs fp32 {report.map_fp32:.3f}, "
            f"{report.shortfall:.3f} short of the {TOLERANCE} allowed; the export keeps its fp32 graph only. "
            "Fix: try --calib-mode entropy, or more calibration photos with --calib DIR")



def quantize_run_export(export_dir, calib_dir=None, calib_mode="naive", progress=True):
    """`hack export --int8`: calibrate on `calib_dir`'s photos (default: the run's training photos,
    read from its pack) and check on the run's validation photos. Returns an Int8Report."""
    from PIL import Image

    from hackathon.train.data import DataDir, DetectionRecords
    from hackathon.train.rundir import RunDir

    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "export.json").read_text("utf-8"))
    run = RunDir.open(meta["run"])
    data = DataDir(run.data_path())
    if calib_dir is not None:
        from labeling.photos import is_image_name, open_upright

        paths = sorted(p for p in Path(calib_dir).rglob("*") if p.is_file() and is_image_name(p.name))
        if not paths:
            raise KitError(f"--calib {calib_dir}: no photos in it or below it. Fix: give a folder of photos of the scene.")
        calib, source = _readable(paths, open_upright), str(calib_dir)
    else:
        records = DetectionRecords(data.rec("train"))
        calib = [Image.fromarray(records.read(i)[0]) for i in range(min(DEFAULT_CALIB, len(records.keys)))]
        source = str(data.rec("train"))
    records = DetectionRecords(data.rec("val"))
    val = []
    for i in range(len(records.keys)):
        image, boxes, ids = records.read(i)
        val.append((Image.fromarray(image), boxes, ids))
    if not val:
        raise KitError(f"{data.rec('val')}: no validation photos to check INT8 against. Fix: pack with --val-fraction 0.2.")
    return quantize_export(export_dir, calib, val, calib_mode=calib_mode, progress=progress, calib_source=source)


def _readable(paths, open_upright):
    images = []
    for p in paths[:DEFAULT_CALIB]:
        try:
            images.append(open_upright(p))
        except KitError:
            continue  # counted by the caller's minimum
    return images

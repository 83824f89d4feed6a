"""`hack predict`: an exported detector run on photos, written as the predictions file and as drawn images.

The export (`hack export`, or a GluonCV SSD exported by hand) is read as symbol JSON + params with
``SymbolBlock.imports`` (no pickle is ever loaded). Photos are read upright (EXIF orientation
applied, `labeling.photos.open_upright`), preprocessed as GluonCV's ``SSDDefaultValTransform``
(resize to the export's W x H ignoring aspect, /255, ImageNet mean/std), and the boxes are mapped
back to the photo's pixels and clipped to it.

Example::

    >>> det = load_detector("export")
    >>> rows = det.detect(open_upright("tank.jpg"))          # [{"label", "score", "bbox"}, ...]
    >>> rows = predict_images(det, sorted(Path("test").rglob("*.jpg")), root="test")
"""
import io
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic

from hackathon.core.constants import KEEP_SCORE


@dataclass
class Detector:
    """An exported detector: ``detect(pil_image)`` gives rows in the image's pixels."""
    net: object
    classes: list
    data_shape: tuple  # (H, W)
    mean: tuple
    std: tuple
    ctx: object
    source: str = ""
    precision: str = "fp32"  # the graph that runs: "int8", "fp32 (oneDNN fused)" or "fp32"

    def preprocess(self, image):
        """An upright RGB PIL image as the net's (1, 3, H, W) input: exactly SSDDefaultValTransform."""
        import mxnet as mx
        from mxnet.image.image import _get_interp_method  # what gluoncv's timage.imresize calls

        H, W = self.data_shape
        w, h = image.size
        # interp 9 = area when shrinking, cubic when enlarging
        x = mx.nd.array(np.asarray(image.convert("RGB")), dtype="uint8")
        x = mx.image.imresize(x, W, H, interp=_get_interp_method(9, (h, w, H, W)))
        x = mx.nd.image.normalize(mx.nd.image.to_tensor(x), mean=tuple(self.mean), std=tuple(self.std))
        return x.expand_dims(0).as_in_context(self.ctx)

    def detect(self, image, threshold=KEEP_SCORE):
        """Detections with score >= `threshold` on an upright RGB PIL image, best first:
        [{"label", "score", "bbox": [xmin, ymin, xmax, ymax]}] in the image's pixels."""
        return self.detect_many([image], threshold)[0]

    def detect_many(self, images, threshold=KEEP_SCORE):
        """`detect` for several images in one forward pass (one batch: on a CPU, 8 photos at once cost
        far less than 8 passes); a list of row lists, in order."""
        import mxnet as mx

        x = self.preprocess(images[0]) if len(images) == 1 else \
            mx.nd.concat(*[self.preprocess(im) for im in images], dim=0)
        outs = [o.asnumpy() for o in self.net(x)]
        return [self._rows(im, *(o[k] for o in outs), threshold) for k, im in enumerate(images)]

    def _rows(self, image, ids, scores, boxes, threshold):
        H, W = self.data_shape
        w, h = image.size
        ids, scores = ids.reshape(-1), scores.reshape(-1).astype(np.float64)
        boxes = boxes.reshape(-1, 4).astype(np.float64) * [w / W, h / H, w / W, h / H]
        # rounded before judging, so a box that rounding makes empty is dropped here, not rejected later
        boxes, scores = np.round(np.clip(boxes, 0, [w, h, w, h]), 2), np.round(scores, 6)
        keep = (ids >= 0) & (ids < len(self.classes)) & (scores >= threshold) & np.isfinite(scores) \
            & np.isfinite(boxes).all(1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        order = np.argsort(-scores[keep], kind="stable")
        return [{"label": self.classes[int(c)], "score": float(s), "bbox": [float(v) for v in b]}
                for c, s, b in zip(ids[keep][order], scores[keep][order], boxes[keep][order])]


PRECISIONS = ("auto", "int8", "fp32")
# Photos per forward pass in predict, eval and the scorer: on 2 CPU cores the INT8 graph of a
# 30-minute export runs 160 images/s at batch 8 against 110 at batch 1 (bench/RESULTS.md, "infer").
PREDICT_BATCH = 8


def load_detector(export_dir, ctx=None, precision="auto", files=None, fuse=True) -> Detector:
    """Read EXPORT/ (model-symbol.json, model-0000.params, classes.txt, export.json when present).

    `precision`: "auto" runs the export's INT8 graph where it has one and this MXNet can run it
    (oneDNN), else fp32; "int8" insists on it; "fp32" never uses it. On a CPU with oneDNN the fp32
    graph is fused (conv + batchnorm + relu as one operator; the same numbers). `files` (symbol,
    params) replaces the graph (the INT8 check of `hack export --int8`). `Detector.precision` says
    which ran."""
    import mxnet as mx

    from labeling.workspace import read_classes

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise KitError(f"{display(export_dir)}: no such export folder. Fix: give the folder `hack export` wrote.")
    from hackathon.deploy.export import CLASSES, META, PARAMS, REQUIRED_FILES, SYMBOL

    symbol, params = export_dir / SYMBOL, export_dir / PARAMS
    for f in (export_dir / name for name in REQUIRED_FILES):
        if not f.is_file():
            raise KitError(f"{display(f)}: missing from the export. Fix: run `hack export` again "
                           f"(it writes {', '.join(REQUIRED_FILES)}).")
    classes = read_classes(export_dir / CLASSES)
    meta = _read_export_json(export_dir / META, classes)
    ctx = ctx or mx.cpu()
    graph = _choose_graph(export_dir, meta, precision, ctx) if files is None else "int8"
    if graph == "int8" and files is None:
        symbol, params = export_dir / meta["int8"]["symbol"], export_dir / meta["int8"]["params"]
    elif files is not None:
        symbol, params = files
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
            net = mx.gluon.SymbolBlock.imports(str(symbol), ["data"], str(params), ctx=ctx)
    except (mx.base.MXNetError, ValueError, AssertionError, OSError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise KitError(f"{display(export_dir)}: {symbol.name} / {params.name} cannot be loaded ({first}). "
                       "Fix: export again with `hack export`; both files must come from the same export.") from None
    # static_shape too: without it MXNet's cached graph makes its oneDNN operators anew on every
    # call, and each quantized convolution re-quantizes its weights (bench/RESULTS.md, "infer": INT8
    # 28.8 -> 7.3 ms at batch 1, fused fp32 29.5 -> 16.1). A new batch size re-plans the graph once.
    if graph == "fp32" and fuse and fusable(ctx):
        net.optimize_for(mx.nd.zeros((1, 3, *meta["data_shape"]), ctx=ctx), backend="MKLDNN",
                         static_alloc=True, static_shape=True)
        graph = "fp32 (oneDNN fused)"
    elif graph == "int8":
        net.hybridize(static_alloc=True, static_shape=True)
    else:
        net.hybridize(static_alloc=True)
    return Detector(net=net, classes=classes, data_shape=tuple(meta["data_shape"]),
                    mean=tuple(map(float, meta["mean"])), std=tuple(map(float, meta["std"])),
                    ctx=ctx, source=display(export_dir), precision=graph)


def fusable(ctx):
    import mxnet as mx

    return ctx.device_type == "cpu" and mx.runtime.Features().is_enabled("MKLDNN")


def seconds_per_batch(detector, batch, repeat=10):
    """Median seconds of the net alone on a fixed (batch, 3, H, W) input, after two warm-up passes."""
    import time

    import mxnet as mx

    x = mx.nd.random.uniform(-2, 2, (batch, 3, *detector.data_shape), ctx=detector.ctx)
    times = []
    for i in range(repeat + 2):
        t = time.perf_counter()
        for o in detector.net(x):
            o.wait_to_read()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def benchmark(export_dir, batches=(1, 8), repeat=10):
    """Speed of each graph the export has here: [{"graph", "batch", "ms_per_image", "images_per_s"}].

    The net alone on a fixed input (no photo decoding): :func:`seconds_per_batch`."""
    import mxnet as mx

    graphs = [("fp32", dict(precision="fp32", fuse=False))]
    if fusable(mx.cpu()):
        graphs.append(("fp32 (oneDNN fused)", dict(precision="fp32")))
    meta = json.loads((Path(export_dir) / "export.json").read_text("utf-8")) if (Path(export_dir) / "export.json").is_file() else {}
    if meta.get("int8"):
        graphs.append(("int8", dict(precision="int8")))
    rows = []
    for name, how in graphs:
        det = load_detector(export_dir, **how)
        for b in batches:
            per = seconds_per_batch(det, b, repeat) / b
            rows.append({"graph": name, "batch": b, "ms_per_image": 1000 * per, "images_per_s": 1 / per})
    return rows


def int8_supported():
    """(True, "") where this MXNet has oneDNN (Linux wheels), else (False, why)."""
    import mxnet as mx

    if not sys.platform.startswith("linux"):
        return False, f"this MXNet build on {sys.platform} has no oneDNN INT8 kernels"
    if not mx.runtime.Features().is_enabled("MKLDNN"):
        return False, "this MXNet build has no oneDNN (MKLDNN) INT8 kernels"
    return True, ""


def _choose_graph(export_dir, meta, precision, ctx):
    """"int8" or "fp32" for `precision`, saying why when an INT8 graph is there but cannot run."""
    if precision not in PRECISIONS:
        raise KitError(f"--precision {precision}: takes {', '.join(PRECISIONS)}.")
    if precision == "fp32":
        return "fp32"
    entry = meta.get("int8")
    if not entry:
        if precision == "int8":
            raise KitError(f"{display(export_dir)}: has no INT8 graph. Fix: `hack export RUN --out "
                           f"{display(export_dir)} --int8`, or drop --precision int8.")
        return "fp32"
    ok, why = int8_supported()
    if ctx.device_type != "cpu":
        ok, why = False, "INT8 runs on the CPU only"
    if not ok:
        if precision == "int8":
            raise KitError(f"{display(export_dir)}: its INT8 graph cannot run here: {why}. Fix: --precision fp32.")
        warnings.warn(f"{display(export_dir)}: running the fp32 graph, not INT8: {why}.", RuntimeWarning, stacklevel=3)
        return "fp32"
    for name in (entry.get("symbol"), entry.get("params")):
        if not isinstance(name, str) or "/" in name or "\\" in name or not (export_dir / name).is_file():
            raise KitError(f"{display(export_dir)}: export.json names an INT8 graph file {str(name)[:60]!r} that is "
                           "not in the folder. Fix: export again with `hack export --int8`, or --precision fp32.")
    return "int8"


def _read_export_json(path, classes):
    """export.json read leniently (any input size): a team's own export, or none (GluonCV's defaults)."""
    from hackathon.deploy.export import check_meta

    try:
        meta = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise KitError(f"{display(path)}: not valid JSON ({str(e)[:100]}). Fix: export again with `hack export`.") from None
    try:
        return check_meta(meta, classes, strict=False)
    except ValueError as e:
        raise KitError(f"{display(path)}: {e}. Fix: export again with `hack export` (classes.txt must list the "
                       "model's classes in its order).") from None


def collect_images(sources):
    """(image paths, root): the photos in `sources` (files and folders, folders searched below, hidden
    skipped) and the folder their names are relative to (a single folder: itself)."""
    from labeling.photos import is_image_name

    paths = []
    for s in map(Path, sources):
        if s.is_dir():
            for folder, dirs, files in os.walk(s):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                paths += [Path(folder) / f for f in sorted(files) if is_image_name(f) and not f.startswith(".")]
        elif s.exists() or is_image_name(s):
            paths.append(s)  # a missing file is reported by predict_images, named
        else:
            raise KitError(f"{display(s)}: no such file or folder. Fix: give photos or folders of photos.")
    if not paths:
        raise KitError(f"no photos in {', '.join(map(display, sources))}. Fix: give JPEG/PNG/HEIC photos or their folders.")
    dirs = [os.path.abspath(s) if Path(s).is_dir() else os.path.dirname(os.path.abspath(s)) for s in sources]
    return paths, Path(os.path.commonpath(dirs))


def image_name(path, root) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def predict_images(detector, image_paths, root, threshold=KEEP_SCORE, progress=True, failed=None, on_image=None):
    """Rows ({"image", "label", "score", "bbox"}) for every photo, named relative to `root`.

    An unreadable photo raises KitError, or, when a `failed` list is given, is appended to it as
    (path, message) and the others are still done. `on_image(name, image, rows)` sees each photo
    (e.g. to draw it)."""
    from tqdm import tqdm

    from labeling.photos import open_upright

    rows, batch = [], []

    def flush():
        for (name, image), found in zip(batch, detector.detect_many([im for _, im in batch], threshold)):
            rows.extend({"image": name, **r} for r in found)
            if on_image:
                on_image(name, image, found)
        batch.clear()

    for path in tqdm(list(image_paths), desc="predict", unit="img", disable=None if progress else True):
        try:
            image = open_upright(path)
        except KitError as e:
            if failed is None:
                raise
            failed.append((path, str(e)))
            continue
        batch.append((image_name(path, root), image))
        if len(batch) == PREDICT_BATCH:
            flush()
    if batch:
        flush()
    return rows


def draw(image, rows, classes, threshold=0.0, max_side=None):
    """A copy of `image` with the rows (score >= threshold) drawn: box, class name and score."""
    from labeling.show import PALETTE, drawable, label_font

    im = image.convert("RGB")
    s = 1.0
    if max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
    d = ImageDraw.Draw(im)
    font = label_font()
    line = max(2, round(max(im.size) / 300))
    for r in sorted((r for r in rows if r["score"] >= threshold), key=lambda r: r["score"]):
        x1, y1, x2, y2 = (v * s for v in r["bbox"])
        color = PALETTE[classes.index(r["label"]) % len(PALETTE)] if r["label"] in classes else (255, 255, 255)
        d.rectangle([x1, y1, x2, y2], outline=color, width=line)
        text = f"{drawable(r['label'])} {r['score']:.2f}"
        tx, ty = x1 + line, max(0, y1 - 12)
        d.rectangle(d.textbbox((tx, ty), text, font=font), fill=color)
        d.text((tx, ty), text, fill=(0, 0, 0), font=font)
    return im


def suggest_threshold(scores, n_images):
    """A drawing threshold that shows about one box a photo: the `n_images`-th best score, rounded
    down to two significant digits (None without scores)."""
    import math

    scores = sorted(scores, reverse=True)
    if not scores:
        return None
    s = scores[min(max(n_images, 1), len(scores)) - 1]
    if s <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(s)) - 1)
    return round(math.floor(s / step + 1e-9) * step, 12)


def threshold_hint(scores, threshold, n_images, keep=KEEP_SCORE):
    """One line when no score reaches `threshold` (every drawing would be empty), else None: the top
    score and a --threshold that draws about one box a photo."""
    scores = list(scores)
    if any(s >= threshold for s in scores):
        return None
    if not scores:
        return (f"0 boxes >= {threshold:g}, and no detection scored even {keep:g}: the model finds nothing on "
                "these photos. Fix: train longer (`hack train --max-minutes`), check the labels with `hack show`.")
    top = max(scores)
    top = f"{top:.2f}" if round(top, 2) < threshold else f"{top:.6g}"  # 0.2999 is not "0.30"
    return f"0 boxes >= {threshold:g}; the top score was {top}; try --threshold {suggest_threshold(scores, n_images):g}"


def save_image(im, path):
    """PNG for .png names, else JPEG; atomic."""
    buf = io.BytesIO()
    if Path(path).suffix.lower() == ".png":
        im.save(buf, format="PNG")
    else:
        im.save(buf, format="JPEG", quality=90)
    write_bytes_atomic(path, buf.getvalue())


def run_predict(export_dir, sources, out, threshold=0.3, keep=KEEP_SCORE, progress=True, precision="auto", echo=None):
    """`hack predict`: out/predictions.json + .csv (scores >= keep) and out/images/NAME drawn (>= threshold).
    Returns (rows, failed [(path, message)], drawn image count)."""
    from hackathon.deploy.predictions import write_predictions

    out = Path(out)
    detector = load_detector(export_dir, precision=precision)
    if echo:
        echo(f"running the {detector.precision} graph of {detector.source}")
    paths, root = collect_images(sources)
    failed, drawn = [], []

    def on_image(name, image, found):
        target = out / "images" / name
        target = target if target.suffix.lower() in (".jpg", ".jpeg", ".png") else target.with_suffix(".jpg")
        save_image(draw(image, found, detector.classes, threshold, max_side=1600), target)
        drawn.append(target)

    rows = predict_images(detector, paths, root, threshold=min(keep, threshold), progress=progress,
                          failed=failed, on_image=on_image)
    rows = [r for r in rows if r["score"] >= keep]
    write_predictions(rows, out / "predictions.json")
    write_predictions(rows, out / "predictions.csv")
    return rows, failed, len(drawn)

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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic

DEFAULT_SHAPE = [512, 512]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
KEEP = 0.01  # lowest score written to the predictions file: mAP needs the low-score tail (GluonCV, COCO)


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

    def detect(self, image, threshold=KEEP):
        """Detections with score >= `threshold` on an upright RGB PIL image, best first:
        [{"label", "score", "bbox": [xmin, ymin, xmax, ymax]}] in the image's pixels."""
        import mxnet as mx
        from mxnet.image.image import _get_interp_method  # what gluoncv's timage.imresize calls

        H, W = self.data_shape
        w, h = image.size
        # exactly SSDDefaultValTransform: interp 9 = area when shrinking, cubic when enlarging
        x = mx.nd.array(np.asarray(image.convert("RGB")), dtype="uint8")
        x = mx.image.imresize(x, W, H, interp=_get_interp_method(9, (h, w, H, W)))
        x = mx.nd.image.normalize(mx.nd.image.to_tensor(x), mean=tuple(self.mean), std=tuple(self.std))
        x = x.expand_dims(0).as_in_context(self.ctx)
        ids, scores, boxes = (o[0].asnumpy() for o in self.net(x))
        ids, scores = ids.reshape(-1), scores.reshape(-1).astype(np.float64)
        boxes = boxes.reshape(-1, 4).astype(np.float64) * [w / W, h / H, w / W, h / H]
        # rounded before judging, so a box that rounding makes empty is dropped here, not rejected later
        boxes, scores = np.round(np.clip(boxes, 0, [w, h, w, h]), 2), np.round(scores, 6)
        keep = (ids >= 0) & (ids < len(self.classes)) & (scores >= threshold) & np.isfinite(scores) \
            & np.isfinite(boxes).all(1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        order = np.argsort(-scores[keep], kind="stable")
        return [{"label": self.classes[int(c)], "score": float(s), "bbox": [float(v) for v in b]}
                for c, s, b in zip(ids[keep][order], scores[keep][order], boxes[keep][order])]


def load_detector(export_dir, ctx=None) -> Detector:
    """Read EXPORT/ (model-symbol.json, model-0000.params, classes.txt, export.json when present)."""
    import mxnet as mx

    from labeling.workspace import read_classes

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise KitError(f"{display(export_dir)}: no such export folder. Fix: give the folder `hack export` wrote.")
    symbol, params = export_dir / "model-symbol.json", export_dir / "model-0000.params"
    for f in (symbol, params, export_dir / "classes.txt"):
        if not f.is_file():
            raise KitError(f"{display(f)}: missing from the export. Fix: run `hack export` again "
                           "(it writes model-symbol.json, model-0000.params and classes.txt).")
    classes = read_classes(export_dir / "classes.txt")
    meta = _read_export_json(export_dir / "export.json", classes)
    ctx = ctx or mx.cpu()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
            net = mx.gluon.SymbolBlock.imports(str(symbol), ["data"], str(params), ctx=ctx)
    except (mx.base.MXNetError, ValueError, AssertionError, OSError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise KitError(f"{display(export_dir)}: model-symbol.json / model-0000.params cannot be loaded ({first}). "
                       "Fix: export again with `hack export`; both files must come from the same export.") from None
    return Detector(net=net, classes=classes, data_shape=tuple(meta["data_shape"]),
                    mean=tuple(map(float, meta["mean"])), std=tuple(map(float, meta["std"])),
                    ctx=ctx, source=display(export_dir))


def _read_export_json(path, classes):
    meta = {"data_shape": DEFAULT_SHAPE, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "classes": classes}
    if not path.is_file():
        return meta  # exported by hand from GluonCV: its defaults
    try:
        meta.update(json.loads(path.read_text("utf-8")))
    except (ValueError, UnicodeDecodeError) as e:
        raise KitError(f"{display(path)}: not valid JSON ({e}). Fix: export again with `hack export`.") from None
    shape, mean, std = meta["data_shape"], meta["mean"], meta["std"]
    ok = (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v > 0 for v in shape)
          and all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v) for v in (mean, std))
          and all(x > 0 for x in std))
    if not ok:
        raise KitError(f"{display(path)}: data_shape must be [H, W] and mean/std three numbers each. "
                       "Fix: export again with `hack export`.")
    if meta["classes"] != classes:
        raise KitError(f"{display(path)}: its classes {meta['classes']} differ from classes.txt {classes}. "
                       "Fix: export again, or make classes.txt list the classes in the model's order.")
    return meta


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


def predict_images(detector, image_paths, root, threshold=KEEP, progress=True, failed=None, on_image=None):
    """Rows ({"image", "label", "score", "bbox"}) for every photo, named relative to `root`.

    An unreadable photo raises KitError, or, when a `failed` list is given, is appended to it as
    (path, message) and the others are still done. `on_image(name, image, rows)` sees each photo
    (e.g. to draw it)."""
    from tqdm import tqdm

    from labeling.photos import open_upright

    rows = []
    for path in tqdm(list(image_paths), desc="predict", unit="img", disable=not progress):
        name = image_name(path, root)
        try:
            image = open_upright(path)
        except KitError as e:
            if failed is None:
                raise
            failed.append((path, str(e)))
            continue
        found = detector.detect(image, threshold)
        rows += [{"image": name, **r} for r in found]
        if on_image:
            on_image(name, image, found)
    return rows


def draw(image, rows, classes, threshold=0.0, max_side=None):
    """A copy of `image` with the rows (score >= threshold) drawn: box, class name and score."""
    from labeling.show import PALETTE

    im = image.convert("RGB")
    s = 1.0
    if max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
    d = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    line = max(2, round(max(im.size) / 300))
    for r in sorted((r for r in rows if r["score"] >= threshold), key=lambda r: r["score"]):
        x1, y1, x2, y2 = (v * s for v in r["bbox"])
        color = PALETTE[classes.index(r["label"]) % len(PALETTE)] if r["label"] in classes else (255, 255, 255)
        d.rectangle([x1, y1, x2, y2], outline=color, width=line)
        text = f"{r['label']} {r['score']:.2f}"
        tx, ty = x1 + line, max(0, y1 - 12)
        d.rectangle(d.textbbox((tx, ty), text, font=font), fill=color)
        d.text((tx, ty), text, fill=(0, 0, 0), font=font)
    return im


def save_image(im, path):
    """PNG for .png names, else JPEG; atomic."""
    buf = io.BytesIO()
    if Path(path).suffix.lower() == ".png":
        im.save(buf, format="PNG")
    else:
        im.save(buf, format="JPEG", quality=90)
    write_bytes_atomic(path, buf.getvalue())


def run_predict(export_dir, sources, out, threshold=0.3, keep=KEEP, progress=True):
    """`hack predict`: out/predictions.json + .csv (scores >= keep) and out/images/NAME drawn (>= threshold).
    Returns (rows, failed [(path, message)], drawn image count)."""
    from hackathon.deploy.predictions import write_predictions

    out = Path(out)
    detector = load_detector(export_dir)
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

"""`hack show`: a grid of packed samples with their boxes and class names, read from the RecordIO itself.

What is drawn is what training will see: the decoded record and its label, not the labelme files.
"""
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def read_records(rec_path, indices=None):
    """Yield (index, PIL image, label rows [[cls, xmin, ymin, xmax, ymax] in pixels]) from a packed .rec."""
    import mxnet as mx

    rec_path = Path(rec_path)
    idx_path = rec_path.with_suffix(".idx")
    if not rec_path.is_file() or not idx_path.is_file():
        raise KitError(f"{display(rec_path)}: needs the .rec and its .idx beside it. Fix: run `hack pack` first.")
    reader = mx.recordio.MXIndexedRecordIO(str(idx_path), str(rec_path), "r")
    try:
        keys = sorted(reader.keys) if indices is None else indices
        for k in keys:
            header, payload = mx.recordio.unpack(reader.read_idx(k))
            label = np.asarray(header.label, dtype=np.float64).ravel()
            if label.size < 4 or int(label[0]) < 2 or int(label[1]) < 5:
                raise KitError(f"{display(rec_path)}: record {k} is not in the detection layout [4, 5, w, h, ...]. "
                               "Fix: pack it with `hack pack`.")
            hl, width = int(label[0]), int(label[1])
            im = Image.open(io.BytesIO(payload)).convert("RGB")
            rows = label[hl:].reshape(-1, width)[:, :5].copy()
            rows[:, (1, 3)] *= im.width
            rows[:, (2, 4)] *= im.height
            yield k, im, rows
    finally:
        reader.close()


def read_classes_beside(rec_path):
    path = Path(rec_path).parent / "classes.txt"
    return [c for c in path.read_text("utf-8").splitlines() if c.strip()] if path.exists() else None


def show_grid(rec_path, out, n=16, seed=0, tile=320, classes=None):
    """Write a PNG grid of `n` records (a seeded sample) with boxes and names; returns the indices shown."""
    import mxnet as mx

    classes = classes or read_classes_beside(rec_path) or []
    reader = mx.recordio.MXIndexedRecordIO(str(Path(rec_path).with_suffix(".idx")), str(rec_path), "r") \
        if Path(rec_path).with_suffix(".idx").is_file() else None
    keys = sorted(reader.keys) if reader else []
    if reader:
        reader.close()
    if not keys:
        raise KitError(f"{display(rec_path)}: no records to show. Fix: pack labeled photos first (`hack pack`).")
    rng = np.random.RandomState(seed)
    chosen = sorted(rng.choice(keys, size=min(n, len(keys)), replace=False).tolist())
    cols = int(np.ceil(np.sqrt(len(chosen))))
    rows = int(np.ceil(len(chosen) / cols))
    sheet = Image.new("RGB", (cols * tile, rows * tile), (24, 24, 24))
    font = ImageFont.load_default()
    for slot, (k, im, boxes) in enumerate(read_records(rec_path, chosen)):
        s = min(tile / im.width, tile / im.height)
        thumb = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
        draw = ImageDraw.Draw(thumb)
        for cls, x1, y1, x2, y2 in boxes:
            c = int(cls)
            color = PALETTE[c % len(PALETTE)]
            draw.rectangle([x1 * s, y1 * s, x2 * s, y2 * s], outline=color, width=2)
            name = classes[c] if 0 <= c < len(classes) else str(c)
            tx, ty = x1 * s + 2, max(0, y1 * s - 12)
            draw.rectangle(draw.textbbox((tx, ty), name, font=font), fill=color)
            draw.text((tx, ty), name, fill=(0, 0, 0), font=font)
        draw.text((4, thumb.height - 12), f"#{k}", fill=(255, 255, 255), font=font)
        sheet.paste(thumb, ((slot % cols) * tile, (slot // cols) * tile))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())
    return chosen

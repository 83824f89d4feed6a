"""`hack show`: a grid of packed samples with their boxes and class names, read from the RecordIO itself.

What is drawn is what training will see: the decoded record and its label, not the labelme files.
Each tile is captioned with the labelme file it came from (manifest.json beside the .rec), so a
bad box leads straight to its JSON.

Also the lettering of every picture the kit draws (`label_font`, `drawable`): a font with CJK
glyphs when one is installed (the Makefile's fonts-wqy-zenhei), so a Chinese file or class name
is drawn as itself; without one, matplotlib's DejaVu Sans, and characters it cannot draw become
ASCII (é -> e) or "?" instead of empty boxes.
"""
import functools
import io
import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display, write_bytes_atomic
from labeling.recordio import parse_detection_label

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]

# Fonts with CJK glyphs where Debian/Ubuntu (fonts-wqy-zenhei, fonts-wqy-microhei, fonts-noto-cjk),
# macOS and Windows keep them; fontconfig (fc-list) is asked after these.
CJK_FONT_FILES = ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
                  "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
                  "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
                  "/System/Library/Fonts/PingFang.ttc", "/System/Library/Fonts/STHeiti Light.ttc",
                  "C:/Windows/Fonts/msyh.ttc")


def _fontconfig_cjk():
    """Font files fontconfig lists with Chinese glyphs, sorted; [] without fontconfig."""
    if not shutil.which("fc-list"):
        return []
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())


def find_cjk_font():
    """The first installed font file with CJK glyphs (a known path, else fontconfig's), or None."""
    return next((p for p in list(CJK_FONT_FILES) + _fontconfig_cjk() if os.path.isfile(p)), None)


@functools.lru_cache(maxsize=None)
def _lettering():
    """The font file names are drawn in (None: PIL's own), looked up once."""
    def dejavu():  # only when needed: importing matplotlib takes most of a second
        try:
            from matplotlib import font_manager

            return font_manager.findfont("DejaVu Sans", fallback_to_default=False)
        except (ImportError, ValueError):
            return None

    for path in filter(None, (f() for f in (find_cjk_font, dejavu))):
        try:
            ImageFont.truetype(path, 11)
            return path
        except OSError:  # an unreadable font file: try the next one
            continue
    return None


@functools.lru_cache(maxsize=None)
def label_font(size=11):
    """The font names are drawn in: one with CJK glyphs when installed, else DejaVu Sans, else PIL's own."""
    path = _lettering()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


_NO_GLYPH = "\U0010FFFD"  # a private-use code point no font has: what a missing glyph looks like


@functools.lru_cache(maxsize=8192)
def _has_glyph(ch):
    if ch.isspace():
        return ch == " "
    return _ink(ch) != _ink(_NO_GLYPH)


def _ink(ch):
    im = Image.new("L", (64, 32), 0)
    ImageDraw.Draw(im).text((4, 4), ch, fill=255, font=label_font())
    return im.tobytes()


def drawable(text):
    """`text` as `label_font` can draw it: a character it has no glyph for becomes its ASCII letter
    (é -> e) or "?", never an empty box."""
    out = []
    for ch in str(text):
        if _has_glyph(ch):
            out.append(ch)
            continue
        plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
        out.append(plain if plain and all(map(_has_glyph, plain)) else "?")
    return "".join(out)


def fit_text(draw, text, font, width):
    """`text` (made drawable) shortened from the left with "…" until it fits in `width` pixels."""
    text, ellipsis = drawable(text), drawable("…")
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(ellipsis + text, font=font) > width:
        text = text[1:]
    return ellipsis + text


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
            try:
                _, _, _, rows = parse_detection_label(header.label)
            except ValueError as e:
                raise KitError(f"{display(rec_path)}: record {k} is {e}. Fix: pack it with `hack pack`.") from None
            im = Image.open(io.BytesIO(payload)).convert("RGB")
            rows = rows[:, :5].copy()
            rows[:, (1, 3)] *= im.width
            rows[:, (2, 4)] *= im.height
            yield k, im, rows
    finally:
        reader.close()


def read_classes_beside(rec_path):
    """The pack's classes.txt beside `rec_path` (read as every class file is), or None."""
    from labeling.workspace import read_classes

    path = Path(rec_path).parent / "classes.txt"
    return read_classes(path) if path.is_file() else None


def record_sources(rec_path):
    """{record index: the labelme file it was packed from}, read from manifest.json beside the .rec
    (`hack pack` writes it); {} when there is none."""
    try:
        records = json.loads(Path(rec_path).with_name("manifest.json").read_text("utf-8"))["records"]
        return {int(r["index"]): str(r["source"]) for r in records[Path(rec_path).stem]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def show_grid(rec_path, out, n=16, seed=0, tile=320, classes=None):
    """Write a PNG grid of `n` records (a seeded sample) with boxes and names; returns the indices shown."""
    import mxnet as mx

    from labeling.pack import verify_pack

    if Path(rec_path).is_file():
        verify_pack(Path(rec_path).parent, required=False)  # a .rec of mxnet's im2rec has no manifest
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
    font = label_font()
    sources = record_sources(rec_path)
    for slot, (k, im, boxes) in enumerate(read_records(rec_path, chosen)):
        s = min(tile / im.width, tile / im.height)
        thumb = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
        draw = ImageDraw.Draw(thumb)
        for cls, x1, y1, x2, y2 in boxes:
            c = int(cls)
            color = PALETTE[c % len(PALETTE)]
            draw.rectangle([x1 * s, y1 * s, x2 * s, y2 * s], outline=color, width=2)
            name = drawable(classes[c] if 0 <= c < len(classes) else str(c))
            tx, ty = x1 * s + 2, max(0, y1 * s - 12)
            draw.rectangle(draw.textbbox((tx, ty), name, font=font), fill=color)
            draw.text((tx, ty), name, fill=(0, 0, 0), font=font)
        caption = fit_text(draw, sources.get(k, f"record #{k}"), font, thumb.width - 8)
        draw.rectangle(draw.textbbox((4, thumb.height - 14), caption, font=font), fill=(0, 0, 0))
        draw.text((4, thumb.height - 14), caption, fill=(255, 255, 255), font=font)
        sheet.paste(thumb, ((slot % cols) * tile, (slot // cols) * tile))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    write_bytes_atomic(out, buf.getvalue())
    return chosen

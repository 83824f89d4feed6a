"""Small labelme data made on the spot: photos with a known object, and labelme JSON as labelme writes it."""
import json
from pathlib import Path

from PIL import Image, ImageDraw


def photo(path, size=(320, 240), box=(40, 50, 160, 150), color=(220, 30, 30), background=(128, 128, 128)):
    """A JPEG with one solid object at `box` (pixels), so tests can see where a box landed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, background)
    ImageDraw.Draw(im).rectangle(box, fill=color)
    im.save(path, quality=95)
    return path


def rect(label, x1, y1, x2, y2, shape_type="rectangle"):
    return {"label": label, "points": [[x1, y1], [x2, y2]], "group_id": None, "description": "",
            "shape_type": shape_type, "flags": {}, "mask": None}


def labelme_json(image_path, shapes, size=None, version="5.11.4", **extra):
    """Write IMG.json beside `image_path` the way labelme 5 saves it (imageData null)."""
    image_path = Path(image_path)
    if size is None:
        with Image.open(image_path) as im:
            size = im.size
    d = {"version": version, "flags": {}, "shapes": shapes, "imagePath": image_path.name, "imageData": None,
         "imageHeight": size[1], "imageWidth": size[0]}
    d.update(extra)
    out = image_path.with_suffix(".json")
    out.write_text(json.dumps(d, indent=2), encoding="utf-8")
    return out


def labeled_set(root, n=6, classes=("fish", "shark"), size=(320, 240), scene=None):
    """`n` photos, each with one object of a class (alternating) and its labelme JSON."""
    root = Path(root) / scene if scene else Path(root)
    made = []
    for i in range(n):
        x1, y1 = 20 + 7 * i, 30 + 5 * i
        box = (x1, y1, x1 + 90 + 3 * i, y1 + 70 + 2 * i)
        p = photo(root / f"img_{i:02d}.jpg", size=size, box=box, color=(200, 40 + 20 * i, 40))
        labelme_json(p, [rect(classes[i % len(classes)], *box)])
        made.append(p)
    return made

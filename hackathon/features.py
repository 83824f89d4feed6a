"""What the pretrained backbone sees in a photo: one 1280-d vector, for comparing scenes.

Each photo is read upright (:func:`labeling.photos.open_upright`), resized whole to 224x224
ignoring its aspect ratio (as the detector resizes to 512x512: nothing at the edges is cropped
away), scaled to 0..1, normalized with ImageNet's mean/std, and run through ``mobilenetv2_1.0``'s
``features`` with torchvision's ImageNet weights. The output is the globally average-pooled last
layer (after its ReLU6): 1280 non-negative numbers a photo.

Vectors are cached per file content (sha256) in ``features-cache.npz`` in the report folder, so a
second run on the same photos (another test set, more permutations) skips the network.

Example
-------
>>> paths = list_images("photos/tank-a")
>>> feats = extract_features(paths)
>>> feats.vectors.shape, feats.skipped        # (len(kept), 1280), [(path, message), ...]
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import atomic_path, display
from labeling.pack import sha256_file
from labeling.photos import is_image_name, open_upright

INPUT_SIZE = 224  # the resolution torchvision's ImageNet weights were trained at
DIM = 1280
CACHE_NAME = "features-cache.npz"
# Changes whenever preprocessing or weights change, so a stale cache is never read.
CACHE_KEY = f"mobilenetv2_1.0-torchvision-b0353104/whole-{INPUT_SIZE}x{INPUT_SIZE}-bilinear/v1"
# libjpeg decodes straight to about twice the input size (see labeling.photos.DRAFT_SLACK).
DECODE_MAX_SIDE = 2 * INPUT_SIZE


def list_images(folder):
    """Image files below `folder` (recursively, sorted, hidden folders skipped); other files ignored."""
    folder = Path(folder)
    if not folder.exists():
        raise KitError(f"{display(folder)}: no such folder. Fix: check the path.")
    if folder.is_file():
        if is_image_name(folder):
            return [folder]
        raise KitError(f"{display(folder)}: not a folder of photos. Fix: give the folder that holds the photos.")
    return sorted(p for p in folder.rglob("*")
                  if is_image_name(p) and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def preprocess(image):
    """An upright RGB PIL image -> float32 (3, 224, 224), ImageNet-normalized."""
    from PIL import Image

    from hackathon.train.weights import MEAN_RGB, STD_RGB

    im = image.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR, reducing_gap=2.0)
    x = np.asarray(im, dtype=np.float32) / 255.0
    x = (x - np.asarray(MEAN_RGB, np.float32)) / np.asarray(STD_RGB, np.float32)
    return x.transpose(2, 0, 1)


@dataclass
class Features:
    """Backbone vectors of the photos that could be read, in the order given."""

    paths: list
    vectors: np.ndarray  # (len(paths), 1280) float32
    skipped: list = field(default_factory=list)  # [(path, message)] of unreadable photos


class FeatureCache:
    """sha256 of a file -> its vector, stored as one .npz (read once, written atomically once)."""

    def __init__(self, path):
        self.path = Path(path) if path else None
        self.vectors, self.dirty = {}, False
        if self.path and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if str(z["key"]) == CACHE_KEY:
                        self.vectors = dict(zip((str(s) for s in z["sha256"]), z["vectors"]))
            except (OSError, ValueError, KeyError):
                self.vectors = {}  # a damaged cache is only slower: it is rebuilt

    def save(self):
        if not (self.path and self.dirty):
            return
        keys = sorted(self.vectors)
        vectors = np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, DIM), np.float32)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, key=np.array(CACHE_KEY), sha256=np.array(keys), vectors=vectors)


def load_backbone(ctx=None, cache_dir=None):
    """``mobilenetv2_1.0.features`` with torchvision's weights, hybridized for inference."""
    from hackathon.train.models import build_backbone

    net = build_backbone(pretrained=True, ctx=ctx, cache_dir=cache_dir).features
    net.hybridize(static_alloc=True)
    return net


def extract_features(paths, cache_path=None, batch_size=16, progress=True, net=None):
    """Pooled backbone features of `paths`; unreadable photos are skipped and listed, not fatal.

    Parameters
    ----------
    paths : list of Path
    cache_path : Path, optional
        A ``features-cache.npz`` to read and update (vectors keyed by file sha256).
    batch_size : int
        Photos per forward pass.
    progress : bool
        Show a tqdm bar over the photos the network has to see.
    net : HybridBlock, optional
        The feature network (default :func:`load_backbone`, built only when a photo is not cached).
    """
    import mxnet as mx
    from tqdm import tqdm

    cache = FeatureCache(cache_path)
    kept, sums, skipped, todo, failed = [], [], [], [], {}
    for path in paths:
        try:
            digest = sha256_file(path)
        except OSError as e:
            skipped.append((path, f"{display(path)}: cannot read it ({e.strerror}). Fix: check the file."))
            continue
        kept.append(path)
        sums.append(digest)
        if digest not in cache.vectors:
            todo.append((path, digest))
    unique = {}
    for path, digest in todo:  # identical files go through the net once, as the first of them
        unique.setdefault(digest, (path, digest))
    todo = list(unique.values())
    if todo:
        net = net or load_backbone()
        bar = tqdm(total=len(todo), desc="backbone features", unit="photo", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch, digests = [], []
            for path, digest in todo[start:start + batch_size]:
                try:
                    batch.append(preprocess(open_upright(path, max_side=DECODE_MAX_SIDE)))
                    digests.append(digest)
                except KitError as e:
                    failed[digest] = str(e)
            if batch:
                out = net(mx.nd.array(np.stack(batch))).asnumpy().reshape(len(batch), -1)
                cache.vectors.update(zip(digests, out.astype(np.float32)))
                cache.dirty = True
            bar.update(len(todo[start:start + batch_size]))
        bar.close()
        cache.save()
    first = {}
    for path, digest in zip(kept, sums):
        if digest in failed:  # a copy of an unreadable file is unreadable too: name each one
            message = failed[digest] if digest not in first else \
                f"{display(path)}: the same bytes as {display(first[digest])}, unreadable too. Fix: remove both."
            first.setdefault(digest, path)
            skipped.append((path, message))
    pairs = [(p, d) for p, d in zip(kept, sums) if d not in failed]
    vectors = np.stack([cache.vectors[d] for _, d in pairs]) if pairs else np.zeros((0, DIM), np.float32)
    return Features([p for p, _ in pairs], vectors, skipped)

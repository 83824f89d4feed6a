"""What the pretrained backbone sees in a photo: one 1280-d vector, for comparing scenes.

Each photo is read upright (:func:`labeling.photos.open_upright`), resized whole to 224x224
ignoring its aspect ratio (as the detector resizes to its square input: nothing at the edges is
cropped away), scaled to 0..1, normalized with ImageNet's mean/std, and run through ``mobilenetv2_1.0``'s
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
import warnings
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

    from hackathon.core.constants import IMAGENET_MEAN, IMAGENET_STD

    im = image.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR, reducing_gap=2.0)
    x = np.asarray(im, dtype=np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return x.transpose(2, 0, 1)


@dataclass
class Features:
    """Backbone vectors of the photos that could be read, in the order given."""

    paths: list
    vectors: np.ndarray  # (len(paths), 1280) float32
    skipped: list = field(default_factory=list)  # [(path, message)] of unreadable photos


class FeatureCache:
    """sha256 of a file -> its vector, stored as one .npz (read once, written atomically once)."""

    def __init__(self, path, key=CACHE_KEY):
        self.path = Path(path) if path else None
        self.key = key
        self.vectors, self.dirty = {}, False
        if self.path and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    if str(z["key"]) == key:
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
                np.savez(f, key=np.array(self.key), sha256=np.array(keys), vectors=vectors)


def load_backbone(ctx=None, cache_dir=None):
    """``mobilenetv2_1.0.features`` with torchvision's weights, hybridized for inference."""
    from hackathon.train.models import build_backbone

    net = build_backbone(pretrained=True, ctx=ctx, cache_dir=cache_dir).features
    return for_inference(net, ctx)


def for_inference(net, ctx=None, batch_size=16):
    """`net` hybridized for inference: on a CPU with oneDNN (Linux wheels) as its fused graph (conv +
    batchnorm + relu one operator, static shapes: the same numbers, ~2x faster a batch), elsewhere
    as a plain hybridized graph."""
    import mxnet as mx

    from hackathon.deploy.predict import fusable

    ctx = ctx or mx.cpu()
    if fusable(ctx):
        net.optimize_for(mx.nd.zeros((batch_size, 3, INPUT_SIZE, INPUT_SIZE), ctx=ctx), backend="MKLDNN",
                         static_alloc=True, static_shape=True)
    else:
        net.hybridize(static_alloc=True)
    return net


# The backbone's last layer inside a kit export (hack train's ssd_mobilenetv2), pooled like ImageNet's.
EXPORT_LAYER = "mobilenetv2_features_relu61_relu6_output"


def export_backbone(export_dir):
    """(net, cache key): the pooled last backbone layer of a kit export, e.g. to compare scenes as an
    adapted detector sees them (`hack shift --model`). Same preprocessing as the ImageNet backbone."""
    import mxnet as mx

    from hackathon.deploy.export import PARAMS, SYMBOL

    export_dir = Path(export_dir)
    symbol, params = export_dir / SYMBOL, export_dir / PARAMS
    if not (symbol.is_file() and params.is_file()):
        raise KitError(f"--model {display(export_dir)}: not an export ({SYMBOL}, {PARAMS}). Fix: give the folder "
                       "`hack export` or `hack adapt` wrote.")
    internals = mx.sym.load(str(symbol)).get_internals()
    if EXPORT_LAYER not in internals.list_outputs():
        raise KitError(f"--model {display(export_dir)}: its graph has no {EXPORT_LAYER} (not the kit's "
                       "ssd_mobilenetv2). Fix: drop --model (ImageNet's backbone), or give a kit export.")
    pooled = mx.sym.mean(internals[EXPORT_LAYER], axis=(2, 3))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
        net = mx.gluon.SymbolBlock(pooled, [mx.sym.var("data")])
        net.collect_params().load(str(params), ctx=mx.cpu(), ignore_extra=True, cast_dtype=True, dtype_source="saved")
    return for_inference(net), f"{CACHE_KEY}/export-{sha256_file(params)[:16]}"


def extract_features(paths, cache_path=None, batch_size=16, progress=True, net=None, key=CACHE_KEY):
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
    key : str
        The cache's key for `net` (:func:`export_backbone` gives one per export).
    """
    import mxnet as mx
    from tqdm import tqdm

    cache = FeatureCache(cache_path, key)
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
        bar = tqdm(total=len(todo), desc="backbone features", unit="photo", disable=None if progress else True)
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


def typical_order(features: Features, first=200) -> list:
    """The photos in the order to label them when nothing is labelled yet: the most typical first,
    then each next one the photo that best covers what the chosen ones do not (greedy facility
    location on the cosine similarity of the backbone features), so the first few are both
    typical of the set and different from each other. Past the `first` picks (each costs a pass over
    the n x n similarities), the rest follow by what they would still add."""
    v = features.vectors.astype(np.float64)
    if not len(v):
        return []
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sim = np.clip(v @ v.T, 0.0, None)
    covered = np.zeros(len(v))
    order, left = [], list(range(len(v)))
    while left and len(order) < first:
        gains = np.maximum(sim[left] - covered, 0.0).sum(axis=1)
        k = left.pop(int(np.argmax(gains)))
        order.append(features.paths[k])
        covered = np.maximum(covered, sim[k])
    if left:
        gains = np.maximum(sim[left] - covered, 0.0).sum(axis=1)
        order += [features.paths[left[i]] for i in np.argsort(-gains, kind="stable")]
    return order

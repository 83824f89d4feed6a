"""Training augmentation that fights a change of scene, in numpy and OpenCV.

The organizers' test scene has another background, light, angle and camera. So on top of the SSD
recipe's zoom-out, IoU-constrained crop and flip (GluonCV's ``SSDDefaultTrainTransform``), each
training image gets a colour cast (a white balance the team's phone did not pick), brightness,
contrast, saturation and hue jitter, gamma, and sometimes blur (another lens, focus or motion).

Zoom-out, crop, resize and flip are one affine warp of the decoded photo (GluonCV builds a canvas
up to 16 times the photo's area, copies, crops, then resizes); the photometric steps are lookup
tables and one HSV pass on the small output. Every random draw comes from a generator seeded by
``(seed, epoch, index)``, so a sample is the same whichever worker makes it and a resumed run sees
exactly the batches of an uninterrupted one.

Example
-------
>>> aug = SceneShiftAugment(300)
>>> img, boxes, ids = aug(rgb_uint8, boxes_px, ids, np.random.default_rng([0, 0, 7]))
>>> img.shape, img.dtype          # ((3, 300, 300), float32), normalized with ImageNet mean/std
"""
import cv2
import numpy as np

from hackathon.train.weights import MEAN_RGB, STD_RGB

_MEAN255 = np.array(MEAN_RGB, np.float32) * 255
_SCALE = 1.0 / (np.array(STD_RGB, np.float32) * 255)
# SSD's crop sampler (Liu et al. 2016, as GluonCV): a crop must overlap some object by at least
# one of these IoUs (None: any crop), with scale in [0.3, 1] and aspect ratio in [0.5, 2].
_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)
_CROP_TRIALS = 50


def normalize(img_uint8):
    """HWC RGB uint8 -> CHW float32 with ImageNet mean/std (as ``mx.nd.image.normalize``)."""
    # transpose the bytes first, then work in place: 12x faster than float HWC math + transpose
    x = np.ascontiguousarray(img_uint8.transpose(2, 0, 1)).astype(np.float32)
    x -= _MEAN255[:, None, None]
    x *= _SCALE[:, None, None]
    return x


def box_iou(a, b):
    """IoU of every box in a (n, 4) against every box in b (m, 4), corners, no +1."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def sample_crop(boxes, width, height, rng):
    """An SSD crop (x0, y0, w, h) of a width x height view; the whole view when no trial fits.
    The trials of one IoU threshold are drawn and tested together (numpy, not a Python loop)."""
    for k in rng.permutation(len(_MIN_IOUS)):
        min_iou = _MIN_IOUS[k]
        if min_iou is None:
            break
        scale = rng.uniform(0.3, 1.0, _CROP_TRIALS)
        lo, hi = np.maximum(0.5, scale * scale), np.minimum(2.0, 1.0 / (scale * scale))
        aspect = lo + (hi - lo) * rng.uniform(size=_CROP_TRIALS)
        w, h = width * scale * np.sqrt(aspect), height * scale / np.sqrt(aspect)
        x0, y0 = rng.uniform(size=_CROP_TRIALS) * (width - w), rng.uniform(size=_CROP_TRIALS) * (height - h)
        fits = (w <= width) & (h <= height)
        if len(boxes):
            fits &= box_iou(np.stack([x0, y0, x0 + w, y0 + h], axis=1), boxes).max(axis=1) >= min_iou
        if fits.any():
            i = int(np.argmax(fits))
            return float(x0[i]), float(y0[i]), float(w[i]), float(h[i])
    return 0.0, 0.0, float(width), float(height)


def keep_boxes_in_crop(boxes, ids, crop):
    """Boxes whose centre lies in the crop, clipped to it and shifted to its origin."""
    x0, y0, w, h = crop
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (centers[:, 0] > x0) & (centers[:, 0] < x0 + w) & (centers[:, 1] > y0) & (centers[:, 1] < y0 + h)
    out = boxes[inside] - np.array([x0, y0, x0, y0])
    out = np.clip(out, 0, [w, h, w, h])
    return out, ids[inside]


class SceneShiftAugment:
    """Random zoom-out, SSD crop, resize to ``size``, flip and colour changes; boxes follow.

    Parameters
    ----------
    size : int
        Square output side (the detector's ``data_shape``).
    max_expand : float
        Largest zoom-out (the photo shrinks to 1/max_expand of the view, the rest is mean colour).
    color : bool
        Colour cast, brightness, contrast, saturation, hue and gamma jitter.
    blur : float
        Probability of a Gaussian blur.
    """

    def __init__(self, size, max_expand=3.0, color=True, blur=0.2):
        self.size, self.max_expand, self.color, self.blur = int(size), float(max_expand), color, float(blur)

    def __call__(self, img, boxes, ids, rng):
        """img: HWC RGB uint8; boxes: (n, 4) corners in its pixels; ids: (n,). Returns
        (CHW float32 normalized, boxes (k, 4) in output pixels, ids (k,)); k may be 0."""
        h, w = img.shape[:2]
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = np.asarray(ids).reshape(-1)
        # The view: the photo, or (half the time) a larger canvas with the photo somewhere in it.
        vx, vy, vw, vh = 0.0, 0.0, float(w), float(h)
        if self.max_expand > 1 and rng.uniform() < 0.5:
            r = rng.uniform(1, self.max_expand)
            vw, vh = w * r, h * r
            vx, vy = -rng.uniform(0, vw - w), -rng.uniform(0, vh - h)
        view_boxes = boxes - np.array([vx, vy, vx, vy])
        crop = sample_crop(view_boxes, vw, vh, rng)
        boxes, ids = keep_boxes_in_crop(view_boxes, ids, crop)
        x0, y0 = crop[0] + vx, crop[1] + vy  # crop origin in photo pixels
        sx, sy = self.size / crop[2], self.size / crop[3]
        flip = rng.uniform() < 0.5
        # One affine map photo -> output (with the flip folded in), so the photo is sampled once.
        m = np.array([[-sx if flip else sx, 0, (x0 * sx + self.size) if flip else -x0 * sx],
                      [0, sy, -y0 * sy]], np.float64)
        if min(sx, sy) < 0.5:
            # warpAffine's bilinear filter aliases past 2x shrinking: area-shrink first to 2x the
            # output scale, and map from the smaller image instead.
            fx, fy = min(1.0, 2 * sx), min(1.0, 2 * sy)
            small = cv2.resize(img, (max(1, round(w * fx)), max(1, round(h * fy))), interpolation=cv2.INTER_AREA)
            m = m @ np.diag([w / small.shape[1], h / small.shape[0], 1.0])
            img = small
        out = cv2.warpAffine(img, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in _MEAN255))
        boxes = boxes * np.array([sx, sy, sx, sy])
        if flip:
            boxes = np.stack([self.size - boxes[:, 2], boxes[:, 1], self.size - boxes[:, 0], boxes[:, 3]], axis=1)
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        if self.color:
            out = color_jitter(out, rng)
        if self.blur and rng.uniform() < self.blur:
            sigma = rng.uniform(0.5, 1.5)
            out = cv2.GaussianBlur(out, (0, 0), sigma)
        return normalize(out), boxes[keep].astype(np.float32), ids[keep]


def color_jitter(img, rng):
    """Colour cast, brightness, contrast, gamma (one lookup table per channel), then saturation and
    hue (one HSV pass), each drawn from rng. img: HWC RGB uint8, returned as a new array."""
    levels = np.arange(256, dtype=np.float32) / 255
    gamma = np.exp(rng.uniform(-0.3, 0.3))
    contrast = rng.uniform(0.6, 1.4)
    brightness = rng.uniform(-0.15, 0.15)
    cast = np.exp(rng.normal(0, 0.12, size=3))  # per-channel gain: a white balance shift
    luts = []
    for c in range(3):
        v = levels ** gamma
        v = (v - 0.5) * contrast + 0.5 + brightness
        luts.append(np.clip(v * cast[c] * 255 + 0.5, 0, 255).astype(np.uint8))
    img = cv2.merge([cv2.LUT(img[:, :, c], luts[c]) for c in range(3)])
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    sat = rng.uniform(0.6, 1.4)
    hue = int(round(rng.uniform(-8, 8)))  # OpenCV's hue runs 0..179
    hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int16) + hue) % 180).astype(np.uint8)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1].astype(np.float32) * sat, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

"""Detection metrics, each defined here and nowhere else.

All four are mean average precision over the classes that have at least one (non-difficult) truth
box; a class absent from the truth has no AP and is left out of the mean (its per-class value is
None), a class with truth and no detections scores 0.

``voc07_map50`` -- PASCAL VOC 2007, 11-point interpolated AP at IoU >= 0.5, exactly GluonCV's
    ``VOC07MApMetric`` (the original event's metric).
``voc_map50`` -- PASCAL VOC 2010+, area under the interpolated precision/recall curve at IoU >= 0.5,
    exactly GluonCV's ``VOCMApMetric``.
``coco_map`` -- COCO AP@[.5:.95]: 101-point interpolated AP averaged over IoU 0.50:0.05:0.95, the top
    100 detections per image and class, area range "all": pycocotools' ``stats[0]``.
``coco_map50`` -- the same at IoU 0.5 only: pycocotools' ``stats[1]``.

Matching, as the references do it
---------------------------------
VOC (the devkit's ``VOCevaldet`` and GluonCV): per image and class, detections in descending score;
each is matched to the truth box of largest IoU (first on ties); IoU >= 0.5 and that box not yet
taken: a true positive; taken already: a false positive (a duplicate); a difficult box: ignored
(neither). **IoU uses the +1 pixel convention** (width = x2 - x1 + 1), as the devkit and GluonCV do
for integer pixel boxes; it makes small boxes overlap a little more. COCO metrics use the plain
continuous IoU (width = x2 - x1), as pycocotools does. So each metric equals its reference to
floating point, which the tests check (GluonCV and pycocotools as oracles).
COCO (pycocotools' ``evaluateImg``): each detection takes the *still free* truth box of largest IoU
above the threshold (last on ties, as pycocotools), preferring non-ignored boxes. A difficult box is
given to COCO as ``iscrowd`` (pycocotools' only way to ignore a box): IoU with it is intersection
over the detection's area, it can absorb any number of detections, which are then ignored.

Order: detections are ranked by score, ties broken by image, then box corners (then nothing, for
identical rows), so a result never depends on the order of the rows.

Speed: matching is done once in numpy. VOC needs no state (every detection takes its best-IoU box;
the first detection per box wins), COCO's greedy state is advanced one score rank at a time for all
(image, class) groups together: at most 100 steps, whatever the number of images.

Example::

    >>> m = match(read_truth("test-scene"), read_predictions("predictions.json", truth))
    >>> m.summary()["voc07_map50"], m.score("coco_map", weights=bootstrap_weights(len(truth.images))[0])
"""

import warnings

import numpy as np

METRICS = ("voc07_map50", "voc_map50", "coco_map", "coco_map50")
# How each metric is named to people: reports, the board, the live page.
METRIC_NAMES = {"voc07_map50": "VOC07 mAP@0.5", "voc_map50": "VOC mAP@0.5 (area)", "coco_map": "COCO AP@[.5:.95]",
                "coco_map50": "COCO AP50"}
VOC_IOU = 0.5
CI_LEVEL = 0.95  # every interval the kit reports: eval, the board, ties


def percentile_interval(values, level=CI_LEVEL):
    """The central `level` percentile interval of bootstrap values (non-finite ones left out), or
    (None, None) when none is finite."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return None, None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)


VOC07_RECALLS = np.arange(0.0, 1.1, 0.1)  # GluonCV's 11 points, float error included
COCO_IOUS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
COCO_RECALLS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)
COCO_MAX_DETS = 100
_CELLS = 4_000_000  # IoU entries computed at once (memory, not speed)


def bootstrap_weights(n_images, n=1000, seed=0):
    """(n, n_images) int counts: row k says how often each image is drawn in resample k (with
    replacement, n_images draws). The same array applied to two Matches on one truth is a paired bootstrap."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n, n_images)) if n_images else np.zeros((n, 0), np.int64)
    return np.stack([np.bincount(d, minlength=n_images) for d in draws]) if n_images else draws


class Matches:
    """Every detection's fate under each metric, decided once; `score` and `summary` only count.

    Attributes (detections in ranking order: class, then score descending, then the tie keys):
    ``det_image``, ``det_class``, ``det_score``, ``det_box``, ``voc`` (1 true positive, 0 false
    positive, -1 ignored), ``coco_tp`` / ``coco_fp`` (10, n) bool per IoU threshold (both False:
    ignored or beyond the top 100), ``n_pos`` (images, classes) non-difficult truth counts,
    ``gt_found`` (one per truth box in ``truth.images`` order: the index of the detection that
    found it under VOC, else -1).
    """

    def __init__(self, truth, **arrays):
        self.truth = truth
        self.__dict__.update(arrays)
        bounds = np.searchsorted(self.det_class, np.arange(len(truth.classes) + 1))
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def score(self, metric="voc07_map50", weights=None) -> float:
        """The mean over classes of `metric`; `weights` counts each truth image that many times
        (its truth and its detections), one per image in ``truth.images`` order; None = once each."""
        aps = self.per_class(metric, weights)
        if np.isnan(aps).all():
            return float("nan")
        return float(np.nanmean(aps))

    def per_class(self, metric="voc07_map50", weights=None) -> np.ndarray:
        """AP per class (NaN for a class without truth)."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
        w = self._weights(weights)
        n_pos = w @ self.n_pos
        dw = w[self.det_image]
        out = np.full(len(self.truth.classes), np.nan)
        for c, sl in enumerate(self._slices):
            if n_pos[c] > 0:
                if metric.startswith("voc"):
                    out[c] = _voc_ap(self.voc[sl], dw[sl], n_pos[c], metric == "voc07_map50")
                else:
                    out[c] = _coco_ap(self.coco_tp[:, sl], self.coco_fp[:, sl], dw[sl], n_pos[c],
                                      metric == "coco_map50")
        return out

    def per_class_many(self, metric="voc07_map50", weights=None) -> np.ndarray:
        """`per_class` for each row of `weights` (B, images) at once: (B, classes), equal to the
        row-by-row values (the bootstrap's cost: VOC metrics are done for all rows together, COCO's
        row by row)."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; one of {METRICS}")
        W = np.asarray(weights, dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != len(self.truth.images):
            raise ValueError(f"weights has shape {W.shape}; (resamples, {len(self.truth.images)} truth images) is needed")
        if not metric.startswith("voc"):
            return np.array([self.per_class(metric, w) for w in W]).reshape(len(W), len(self.truth.classes))
        n_pos = W @ self.n_pos  # (B, classes)
        counts = np.asarray(weights)
        if counts.dtype.kind in "iu" and W.size and 0 <= counts.min() and counts.max() < 2 ** 31 // max(len(self.det_image), 1):
            W = counts.astype(np.int32)  # bootstrap counts: exact int32 sums (see _voc_ap_many)
        out = np.full((len(W), len(self.truth.classes)), np.nan)
        for c, sl in enumerate(self._slices):
            rows = np.flatnonzero(n_pos[:, c] > 0)
            status = self.voc[sl]
            counted = np.flatnonzero(status >= 0)
            step = max(1, _CELLS // max(len(counted), 1))
            for a in range(0, len(rows), step):
                r = rows[a:a + step]
                dw = W[np.ix_(r, self.det_image[sl][counted])]
                out[r, c] = _voc_ap_many(status[counted].astype(W.dtype), dw, n_pos[r, c], metric == "voc07_map50")
        return out

    def score_many(self, metric="voc07_map50", weights=None) -> np.ndarray:
        """`score` for each row of `weights` (B, images): (B,), NaN where no class has truth."""
        aps = self.per_class_many(metric, weights)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row without any truth: NaN, as `score`
            return np.nanmean(aps, axis=1)

    def summary(self) -> dict:
        """{metric: mean, ..., "per_class": {class: {metric: AP or None, "n_truth": boxes}}}."""
        table = {m: self.per_class(m) for m in METRICS}
        out = {m: _plain(self.score(m)) for m in METRICS}
        n_truth = self.n_pos.sum(0)
        out["per_class"] = {c: {**{m: _plain(table[m][k]) for m in METRICS}, "n_truth": int(n_truth[k])}
                            for k, c in enumerate(self.truth.classes)}
        return out

    def pr_curve(self, cls: int):
        """(recall, precision) of class `cls` under VOC matching, in ranking order."""
        sl = self._slices[cls]
        s = self.voc[sl][self.voc[sl] >= 0]
        tp, fp = np.cumsum(s == 1), np.cumsum(s == 0)
        n = self.n_pos[:, cls].sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            return (tp / n if n else np.zeros(len(s))), np.nan_to_num(tp / (tp + fp))

    def _weights(self, weights):
        if weights is None:
            return np.ones(len(self.truth.images))
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (len(self.truth.images),):
            raise ValueError(f"weights has shape {w.shape}; one per truth image ({len(self.truth.images)},) is needed")
        return w


def _plain(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _voc_ap(status, w, n_pos, eleven_point):
    """GluonCV's VOC AP (11-point or area) from the ranked statuses of one class; weights count copies."""
    keep = (status >= 0) & (w > 0)  # ignored rows repeat the previous point: no effect on the AP
    s, w = status[keep], w[keep]
    tp, fp = np.cumsum(w * (s == 1)), np.cumsum(w * (s == 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.nan_to_num(tp / (fp + tp))
    rec = tp / n_pos
    if eleven_point:
        # max precision at recall >= t, t = 0, 0.1, ..., 1 (0 where never reached)
        env = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
        first = np.searchsorted(rec, VOC07_RECALLS, side="left")  # rec is non-decreasing
        return float(sum(env[i] / 11.0 if i < len(env) else 0.0 for i in first))
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.maximum.accumulate(np.concatenate(([0.0], prec, [0.0]))[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _voc_ap_many(status, w, n_pos, eleven_point):
    """_voc_ap for many weight rows at once: status (n,) of the counted detections of one class in
    ranking order, w (B, n), n_pos (B,) -> (B,). A row's zero-weight detections only repeat its
    previous precision/recall point (or add (0, 0) before the first), which changes no AP, so every
    row keeps all n columns and equals _voc_ap to the last bit. Integer weights (bootstrap counts)
    are summed as int32, 2-3x faster than floats and exact."""
    tp = np.cumsum(w * (status == 1), axis=1)
    fp = np.cumsum(w * (status == 0), axis=1)
    total = fp + tp
    prec = np.divide(tp, total, out=np.zeros(tp.shape), where=total > 0)  # _voc_ap's nan_to_num
    rec = tp / n_pos[:, None]
    B, n = prec.shape
    if eleven_point:
        if not n:
            return np.zeros(B)
        env = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
        # as _voc_ap: the first point with recall >= t (recall never falls along a row)
        first = np.array([np.searchsorted(r, VOC07_RECALLS, side="left") for r in rec])  # (B, 11)
        hit = first < n
        rows = np.broadcast_to(np.arange(B)[:, None], first.shape)
        vals = np.where(hit, env[rows, np.minimum(first, n - 1)] / 11.0, 0.0)
        ap = np.zeros(B)
        for k in range(len(VOC07_RECALLS)):  # summed in _voc_ap's order, t = 0, 0.1, ..., 1
            ap += vals[:, k]
        return ap
    mrec = np.concatenate((np.zeros((B, 1)), rec, np.ones((B, 1))), axis=1)
    mpre = np.concatenate((np.zeros((B, 1)), prec, np.zeros((B, 1))), axis=1)
    mpre = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
    step = mrec[:, 1:] != mrec[:, :-1]
    return np.array([np.sum((mrec[b, 1:][step[b]] - mrec[b, :-1][step[b]]) * mpre[b, 1:][step[b]]) for b in range(B)])


def _coco_ap(tp, fp, w, n_pos, at50):
    """pycocotools' accumulate() for one class: 101-point AP per IoU threshold, averaged."""
    keep = w > 0
    rows = slice(0, 1) if at50 else slice(None)
    tp, fp, w = tp[rows][:, keep], fp[rows][:, keep], w[keep]
    tps, fps = np.cumsum(tp * w, axis=1), np.cumsum(fp * w, axis=1)
    rc = tps / n_pos
    pr = tps / (fps + tps + np.spacing(1))
    q = np.zeros((len(tp), len(COCO_RECALLS)))
    if pr.shape[1]:
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        for t in range(len(tp)):
            inds = np.searchsorted(rc[t], COCO_RECALLS, side="left")
            ok = inds < pr.shape[1]
            q[t, ok] = pr[t, inds[ok]]
    return float(q.mean())


# ---- matching ----

def match(truth, predictions) -> Matches:
    """Decide every detection's fate under VOC and COCO rules (see the module docstring)."""
    if predictions.truth is not truth and (predictions.truth.images != truth.images
                                           or predictions.truth.classes != truth.classes):
        raise ValueError("predictions were validated against another truth; read them with this one")
    n_img, n_cls = len(truth.images), len(truth.classes)
    g_img = np.concatenate([np.full(len(truth.labels[n]), i) for i, n in enumerate(truth.images)] + [np.zeros(0, int)])
    g_cls = np.concatenate([truth.labels[n] for n in truth.images] + [np.zeros(0, int)]).astype(np.int64)
    g_box = np.concatenate([truth.boxes[n] for n in truth.images] + [np.zeros((0, 4))])
    g_diff = np.concatenate([truth.difficult[n] for n in truth.images] + [np.zeros(0, bool)])
    n_pos = np.zeros((n_img, n_cls))
    np.add.at(n_pos, (g_img[~g_diff], g_cls[~g_diff]), 1)

    p = predictions
    # ranking within each (image, class) group: score descending, then the corners (row order never counts)
    b = p.boxes
    d_group = p.image * n_cls + p.label
    order = np.lexsort((-p.score, d_group))
    if np.any((np.diff(d_group[order]) == 0) & (np.diff(p.score[order]) == 0)):  # ties: the corners decide
        order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], -p.score, d_group))
    d_group, d_box = d_group[order], b[order]
    g_group = g_img * n_cls + g_cls
    g_order = np.argsort(g_group, kind="stable")  # truth order kept inside a group (first/last on ties)
    g_group_s, g_box_s, g_diff_s = g_group[g_order], g_box[g_order], g_diff[g_order]

    groups, d_start, d_count = np.unique(d_group, return_index=True, return_counts=True)
    g_start = np.searchsorted(g_group_s, groups, side="left")
    g_count = np.searchsorted(g_group_s, groups, side="right") - g_start
    rank = np.arange(len(d_group)) - np.repeat(d_start, d_count)

    voc = np.zeros(len(d_group), np.int8)
    voc_gt = np.full(len(d_group), -1)  # sorted-truth index each VOC true positive takes
    coco_tp = np.zeros((len(COCO_IOUS), len(d_group)), bool)
    coco_fp = np.zeros_like(coco_tp)
    coco_fp[:, rank < COCO_MAX_DETS] = True  # groups without truth: every kept detection is a false positive
    # groups are bucketed by their truth count (padded to a power of two) so the padding stays small
    width = np.where(g_count > 0, 1 << np.ceil(np.log2(np.maximum(g_count, 1))).astype(int), 0)
    for T in np.unique(width[width > 0]):
        sel = np.flatnonzero(width == T)
        gt = _padded(g_start[sel], g_count[sel], T, g_box_s, g_diff_s)
        _match_voc(sel, d_start, d_count, d_box, gt, voc, voc_gt)
        _match_coco(sel, d_start, d_count, d_box, gt, coco_tp, coco_fp)

    # ranking for accumulation: class, score descending, image (pycocotools: image order, stable), then
    # the rank inside the image (lexsort is stable and the rows are in rank order already)
    acc = np.lexsort((d_group // n_cls, -p.score[order], d_group % n_cls))
    gt_found = np.full(len(g_box), -1)
    inv = np.empty_like(acc)
    inv[acc] = np.arange(len(acc))
    tp_rows = np.flatnonzero(voc_gt >= 0)
    gt_found[g_order[voc_gt[tp_rows]]] = inv[tp_rows]
    return Matches(truth, det_image=(d_group // n_cls)[acc], det_class=(d_group % n_cls)[acc],
                   det_score=p.score[order][acc], det_box=d_box[acc], voc=voc[acc], coco_tp=coco_tp[:, acc],
                   coco_fp=coco_fp[:, acc], n_pos=n_pos, gt_image=g_img, gt_class=g_cls, gt_box=g_box,
                   gt_difficult=g_diff, gt_found=gt_found)


def _padded(start, count, T, box, diff):
    """Truth of each group as (groups, T) tables: boxes, valid, difficult, sorted-truth index."""
    idx = start[:, None] + np.arange(T)[None, :]
    valid = np.arange(T)[None, :] < count[:, None]
    idx = np.where(valid, idx, 0) if len(box) else np.zeros_like(idx)
    bx = np.where(valid[..., None], box[idx] if len(box) else 0.0, np.array([0.0, 0.0, 1.0, 1.0]))
    return {"box": bx, "valid": valid, "difficult": valid & diff[idx] if len(diff) else valid & False, "index": idx}


def _det_rows(sel, d_start, d_count):
    """(detection indices, their row in the bucket) for all detections of the bucket's groups."""
    rows = np.repeat(np.arange(len(sel)), d_count[sel])
    dets = np.repeat(d_start[sel], d_count[sel]) + (np.arange(len(rows)) - np.repeat(
        np.cumsum(d_count[sel]) - d_count[sel], d_count[sel]))
    return dets, rows


def _voc_iou(d, g):
    """GluonCV's bbox_iou after its +1 on x2, y2: d (n, 4), g (n, T, 4) -> (n, T)."""
    d = d.copy()
    d[:, 2:] += 1
    g = g.copy()
    g[..., 2:] += 1
    tl = np.maximum(d[:, None, :2], g[..., :2])
    br = np.minimum(d[:, None, 2:], g[..., 2:])
    wh = br - tl
    inter = wh[..., 0] * wh[..., 1] * (tl < br).all(-1)
    area_d = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
    area_g = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    return inter / (area_d[:, None] + area_g - inter)


def _match_voc(sel, d_start, d_count, d_box, gt, voc, voc_gt):
    dets, rows = _det_rows(sel, d_start, d_count)
    T = gt["box"].shape[1]
    step = max(1, _CELLS // T)
    for a in range(0, len(dets), step):
        d, r = dets[a:a + step], rows[a:a + step]
        iou = np.where(gt["valid"][r], _voc_iou(d_box[d], gt["box"][r]), -1.0)
        best = iou.argmax(1)
        hit = iou[np.arange(len(d)), best] >= VOC_IOU
        diff = gt["difficult"][r, best]
        voc[d[hit & diff]] = -1
        voc_gt[d[hit & ~diff]] = gt["index"][r, best][hit & ~diff]
    # the first detection (in rank order) on a truth box is the true positive, later ones duplicates
    cand = dets[voc_gt[dets] >= 0]
    _, first = np.unique(voc_gt[cand], return_index=True)
    tp = np.zeros(len(voc), bool)
    tp[cand[first]] = True
    voc[cand[first]] = 1
    dup = cand[~tp[cand]]
    voc_gt[dup] = -1


def _coco_iou(d, g, crowd):
    """pycocotools' bbIou on the same floats: d (n, 4), g (n, T, 4) corners -> (n, T)."""
    dw, dh = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    gw, gh = g[..., 2] - g[..., 0], g[..., 3] - g[..., 1]
    w = np.minimum((d[:, 0] + dw)[:, None], g[..., 0] + gw) - np.maximum(d[:, None, 0], g[..., 0])
    h = np.minimum((d[:, 1] + dh)[:, None], g[..., 1] + gh) - np.maximum(d[:, None, 1], g[..., 1])
    inter = w * h
    da = (dw * dh)[:, None]
    union = np.where(crowd, da, da + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), inter / union, 0.0)


def _last_argmax(v):
    """Index of the maximum along the last axis, the last one on ties (pycocotools' `<` test)."""
    return v.shape[-1] - 1 - v[..., ::-1].argmax(-1)


def _match_coco(sel, d_start, d_count, d_box, gt, coco_tp, coco_fp):
    """pycocotools' evaluateImg for every group of the bucket at once, one score rank per step."""
    n_keep = np.minimum(d_count[sel], COCO_MAX_DETS)
    by_size = np.argsort(-n_keep, kind="stable")  # groups still holding a detection at rank r: a prefix
    sel, n_keep = sel[by_size], n_keep[by_size]
    box, valid, crowd = gt["box"][by_size], gt["valid"][by_size], gt["difficult"][by_size]
    thr = np.minimum(COCO_IOUS, 1 - 1e-10)[:, None, None]
    taken = np.zeros((len(COCO_IOUS),) + valid.shape, bool)
    for r in range(int(n_keep.max(initial=0))):
        na = int(np.searchsorted(-n_keep, -r, side="left"))  # groups with more than r detections
        d = d_start[sel[:na]] + r
        iou = _coco_iou(d_box[d], box[:na], crowd[:na])
        cand = valid[:na] & (crowd[:na] | ~taken[:, :na]) & (iou >= thr)
        plain, ign = cand & ~crowd[:na], cand & crowd[:na]
        has_plain, has_ign = plain.any(-1), ign.any(-1)
        m_plain = _last_argmax(np.where(plain, iou, -1.0))
        t_idx, g_idx = np.nonzero(has_plain)
        taken[t_idx, g_idx, m_plain[t_idx, g_idx]] = True
        coco_tp[:, d] = has_plain
        coco_fp[:, d] = ~has_plain & ~has_ign

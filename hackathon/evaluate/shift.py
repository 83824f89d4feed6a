"""How different are two scenes, before any detector is trained: ``hack shift TRAIN TEST --out REPORT``.

A team photographs objects in its own scene; the organizers test in another. On the pretrained
backbone's pooled features of every photo (:mod:`hackathon.evaluate.features`) this module measures:

Domain classifier
    L2-regularized logistic regression telling "test scene" (1) from "train scene" (0), scored by
    stratified k-fold cross-validation: each photo's logit comes from a model that never saw it,
    and ROC-AUC is computed on those out-of-fold logits. AUC 0.5: the backbone cannot tell the
    scenes apart; 1.0: every photo's scene is obvious. The p-value is a permutation test: the domain
    labels are shuffled and the whole cross-validation re-run ``permutations`` times;
    ``p = (1 + #{AUC_perm >= AUC}) / (1 + permutations)``.
KID
    Kernel inception distance (Bińkowski et al. 2018) on the same features: the unbiased MMD² with
    the kernel ``k(x, y) = (x·y / d + 1)³``, averaged over random subsets of ``m`` photos a side
    (``m = min(1000, min(n_train, n_test) // 2)``), with its standard deviation over the subsets.
    0 in expectation when both scenes come from one distribution (it can then be slightly negative).
Importance weights
    How much each training photo would count towards the test scene:
    ``β_i = min(exp(h_i) · n_train / n_test, c)`` with ``h_i = a·logit_i + b``, the photo's
    out-of-fold logit Platt-calibrated (:func:`calibrate`: one 1-d logistic fit of all out-of-fold
    logits against the labels, ``a >= 0``). That is the odds ``p(test|x)/p(train|x)`` corrected for
    the two folders' sizes, an estimate of the density ratio ``p_test(x)/p_train(x)``, clipped at
    ``c`` (``--clip``). Their effective sample size ``ESS = (Σβ)² / Σβ²`` says how many
    equally weighted training photos they are worth; ``ESS / n_train`` near 1 means no shift.

The classifier's features are standardized over both folders together (mean and std do not use
the labels), scaled by ``1/√d``, and projected onto their principal axes. With all axes kept (as
long as there are at most ``MAX_DIMS``) this is exact, not an approximation: an L2-penalized linear
model's weights lie in the span of the training rows, and a rotation changes neither the penalty
nor the predictions; it turns a 1280-d fit into one of at most n dimensions, which makes the
permutation test affordable.

:func:`measure_shift` runs it all on two folders; :mod:`hackathon.evaluate.shift_report` writes the report.

Example
-------
>>> result = measure_shift("photos/tank-a", "organizers/test", "shift-report")
>>> result.auc, result.p_value, result.kid, result.ess_fraction
>>> result.verdict()
'the scenes are easy to tell apart (AUC 0.97, p<0.01): ...'
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import display

MIN_IMAGES = 4  # a side; fewer and a stratified cross-validation has nothing to hold out
FOLDS = 5
PERMUTATIONS = 200  # p-values down to 1/201
CLIP = 20.0
# L2 strength on the mean log-loss, for feature vectors of unit length on average. On
# aquarium-scene-a (bench/RESULTS.md) 1e-3 to 1e-1 gave AUCs within 0.04 of each other; the
# p-value is exact for any value (the permutations refit with the same one).
L2 = 1e-2
CALIBRATION_L2 = 1e-3  # only keeps Platt's slope finite when the scenes separate perfectly
MAX_DIMS = 256  # principal axes kept; beyond this the smallest ones are dropped (ridge shrinks them most)


# ---- statistics: plain functions on arrays ----

def roc_auc(scores, labels):
    """ROC-AUC of `scores` for binary `labels` (1 = positive): the Mann-Whitney U statistic over
    n1·n0, the chance a random positive scores above a random negative, ties counted as one half."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("ROC-AUC needs both classes")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # 1-based ranks, ties get their average
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_curve(scores, labels):
    """(false positive rates, true positive rates) at every distinct threshold, from (0, 0) to (1, 1)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each run of equal scores
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def classifier_inputs(X, max_dims=MAX_DIMS):
    """Standardize the columns of X (label-free), scale by 1/√d and rotate onto the principal axes.

    Returns (n, r) coordinates, r <= min(n, max_dims); columns that never vary are dropped."""
    X = np.asarray(X, np.float64)
    sd = X.std(axis=0)
    varying = sd > 1e-8 * max(float(sd.max(initial=0.0)), 1e-30)
    Z = (X[:, varying] - X[:, varying].mean(axis=0)) / sd[varying] / np.sqrt(max(int(varying.sum()), 1))
    U, S, _ = np.linalg.svd(Z, full_matrices=False)
    keep = S > 1e-9 * max(float(S.max(initial=0.0)), 1e-30)
    keep[max_dims:] = False
    return U[:, keep] * S[keep]


def fit_logistic(Z, y, l2=L2, max_iter=50, tol=1e-10):
    """Newton's method for ``mean(log-loss) + l2/2·||w||²`` with an unpenalized intercept.

    Returns the weights with the intercept last (score = Z @ w[:-1] + w[-1])."""
    n = len(y)
    A = np.hstack([Z, np.ones((n, 1))])
    penalty = np.full(A.shape[1], l2 * n)
    penalty[-1] = 1e-9 * n  # the intercept: practically free, but keeps the Hessian invertible

    def objective(w):
        h = A @ w
        return np.logaddexp(0.0, h).sum() - h @ y + 0.5 * (penalty * w * w).sum()

    w, value = np.zeros(A.shape[1]), objective(np.zeros(A.shape[1]))
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(A @ w)))
        grad = A.T @ (p - y) + penalty * w
        hess = (A.T * (p * (1.0 - p))) @ A + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:  # damped: a full Newton step can overshoot while the logits are large
            new = objective(w - t * step)
            if new <= value + 1e-12 * abs(value):
                break
            t /= 2.0
        w, value = w - t * step, new
        if np.abs(t * step).max() < tol:
            break
    return w


def stratified_folds(y, k, rng):
    """A fold number 0..k-1 for each sample; each class spread evenly and at random over the folds."""
    folds = np.empty(len(y), dtype=int)
    offset = 0
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        folds[idx] = (np.arange(len(idx)) + offset) % k  # continue where the other class stopped
        offset += len(idx)
    return folds


def out_of_fold_logits(Z, y, folds, l2=L2):
    """Each sample's logit from the model fit on the other folds."""
    h = np.empty(len(y))
    for f in np.unique(folds):
        held = folds == f
        w = fit_logistic(Z[~held], y[~held], l2)
        h[held] = Z[held] @ w[:-1] + w[-1]
    return h


def domain_classifier(X_train, X_test, folds=FOLDS, permutations=PERMUTATIONS, l2=L2, seed=0, progress=False):
    """Cross-validated ROC-AUC of telling test photos (1) from train photos (0), with its
    permutation p-value. Returns dict(auc, p_value, logits (out-of-fold, train rows first),
    labels, null_aucs, folds)."""
    from tqdm import tqdm

    n_train, n_test = len(X_train), len(X_test)
    y = np.r_[np.zeros(n_train), np.ones(n_test)]
    k = min(folds, n_train, n_test)
    Z = classifier_inputs(np.vstack([X_train, X_test]))
    rng = np.random.default_rng(seed)
    logits = out_of_fold_logits(Z, y, stratified_folds(y, k, rng), l2)
    auc = roc_auc(logits, y)
    null = np.empty(permutations)
    for b in tqdm(range(permutations), desc="permutation test", unit="perm", disable=None if progress else True):
        y_perm = rng.permutation(y)
        null[b] = roc_auc(out_of_fold_logits(Z, y_perm, stratified_folds(y_perm, k, rng), l2), y_perm)
    p_value = (1.0 + np.count_nonzero(null >= auc - 1e-12)) / (1.0 + permutations)
    return dict(auc=auc, p_value=float(p_value), logits=logits, labels=y, null_aucs=null, folds=k)


def kid(X, Y, subsets=100, subset_size=None, seed=0):
    """Kernel inception distance between feature sets X and Y: (mean, std) over `subsets` of the
    unbiased MMD² with the cubic polynomial kernel ``(x·y/d + 1)³``."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    d = X.shape[1]
    m = subset_size or kid_subset_size(len(X), len(Y))
    if m < 2 or m > min(len(X), len(Y)):
        raise ValueError(f"subsets of {m} need at least {max(m, 2)} samples a side")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        x = X[rng.choice(len(X), m, replace=False)]
        yy = Y[rng.choice(len(Y), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1.0) ** 3 for a, b in ((x, x), (yy, yy), (x, yy)))
        values[s] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2.0 * kxy.mean())
    return float(values.mean()), float(values.std(ddof=1) if subsets > 1 else 0.0)


def kid_subset_size(n_x, n_y):
    """Photos a side in each KID subset: 1000 as in the paper, or half the smaller folder, so that
    the subsets differ and their spread means something."""
    return min(1000, max(2, min(n_x, n_y) // 2))


def calibrate(logits, labels, l2=CALIBRATION_L2):
    """Platt scaling: (a, b) so that ``a·logit + b`` is a calibrated log-odds of "test scene".

    The strong L2 penalty of the domain classifier shrinks its logits towards 0, which would make
    every importance weight look alike. A two-parameter logistic fit of the out-of-fold logits
    against the labels undoes that shrinkage; it is monotone (a >= 0), so the AUC stays the same.
    With no signal (a fit with a <= 0) every photo gets the prior odds."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
    scale = logits.std() or 1.0
    a, b = fit_logistic((logits / scale)[:, None], labels, l2)
    if a <= 0:
        return 0.0, float(np.log(labels.mean() / (1.0 - labels.mean())))
    return float(a / scale), float(b)


def importance_weights(train_h, n_train, n_test, clip=CLIP):
    """β = min(exp(h) · n_train / n_test, clip) per training photo (h: its calibrated out-of-fold
    log-odds of "test scene"), and ESS = (Σβ)² / Σβ²."""
    beta = np.minimum(np.exp(np.minimum(train_h, 700.0)) * (n_train / n_test), clip)
    ess = float(beta.sum() ** 2 / (beta ** 2).sum())
    return beta, ess


# ---- the command: folders in, a report folder out ----

@dataclass
class ShiftResult:
    """Everything ``hack shift`` measured; arrays are in the order of `train_paths` / `test_paths`."""

    train_dir: Path
    test_dir: Path
    train_paths: list
    test_paths: list
    auc: float
    p_value: float
    permutations: int
    folds: int
    null_aucs: np.ndarray
    train_logits: np.ndarray  # out-of-fold, as the classifier gives them (the ROC curve's scores)
    test_logits: np.ndarray
    calibration: tuple  # (a, b): h = a·logit + b, the calibrated log-odds of "test scene"
    kid: float
    kid_std: float
    kid_subset_size: int
    beta: np.ndarray
    ess: float
    clip: float
    skipped: list = field(default_factory=list)  # [(path, message)]

    @property
    def n_train(self):
        return len(self.train_paths)

    @property
    def n_test(self):
        return len(self.test_paths)

    @property
    def ess_fraction(self):
        return self.ess / self.n_train

    def p_text(self):
        return "p<0.01" if self.p_value < 0.01 else f"p={self.p_value:.2g}"

    def verdict(self):
        """One plain-language line: how different the scenes are and what to shoot."""
        figures = f"AUC {self.auc:.2f}, {self.p_text()}"
        worth = (f"your {self.n_train} training photos count as about {self.ess:.0f} for the test scene "
                 f"(ESS {self.ess_fraction:.0%})")
        if self.p_value >= 0.05:
            return (f"the backbone cannot tell the scenes apart ({figures}): {worth}; "
                    "more photos like the ones you have are as good as any")
        how = ("differ a little" if self.auc < 0.7 else "differ clearly" if self.auc < 0.9
               else "are easy to tell apart")
        adapt = ("; and adapt the trained detector to the test scene with `hack adapt MODEL --photos "
                 f"{display(self.test_dir)} --out EXPORT` (only photos the organizers allow)") if self.auc >= 0.7 else ""
        return (f"the scenes {how} ({figures}): shoot more photos like the ones in {MOST_LIKE}, "
                f"fewer like {LEAST_LIKE}; {worth}{adapt}")


MOST_LIKE, LEAST_LIKE, ROC_PNG = "most-like-test.png", "least-like-test.png", "roc.png"


def measure_shift(train_dir, test_dir, out, folds=FOLDS, permutations=PERMUTATIONS, clip=CLIP, l2=L2,
                  seed=0, progress=True, featurize=None, model=None):
    """Compare the photos below `train_dir` with those below `test_dir`; returns a ShiftResult.

    `out` is the report folder: photos inside it are never read as either scene's, and the
    features are cached there. The caller writes the report (:func:`shift_report.write_report`).

    `featurize(paths) -> hackathon.evaluate.features.Features` replaces the backbone (tests, other
    backbones); by default vectors are cached in ``out/features-cache.npz``. Unreadable photos are
    skipped and listed in ``result.skipped``; the rest are still measured. `permutations` should
    be at least 19 (p can reach 0.05); with 0 there is no test and p is reported as 1. `model` (an
    export folder) takes the features from that detector's backbone instead of ImageNet's (the scenes
    as a trained or adapted detector sees them).
    """
    from hackathon.evaluate.features import CACHE_NAME, extract_features, list_images

    out = Path(out)
    train_dir, test_dir = Path(train_dir), Path(test_dir)
    # A report folder inside a photo folder must not feed its own contact sheets back in.
    outside = lambda paths: [p for p in paths if not p.resolve().is_relative_to(out.resolve())]
    train_paths, test_paths = outside(list_images(train_dir)), outside(list_images(test_dir))
    for folder, paths in ((train_dir, train_paths), (test_dir, test_paths)):
        if not paths:
            raise KitError(f"{display(folder)}: no photos in it or below it (.jpg .png .heic ...). "
                           "Fix: give the folder that holds the photos.")
    both = set(p.resolve() for p in train_paths) & set(p.resolve() for p in test_paths)
    if both:
        raise KitError(f"{display(sorted(both)[0])} and {len(both) - 1} more photo(s) are in both folders. "
                       "Fix: give two separate folders (one inside the other counts twice).")
    if featurize is None and model is not None:
        from hackathon.evaluate.features import export_backbone

        net, key = export_backbone(model)
        featurize = lambda paths: extract_features(paths, cache_path=out / CACHE_NAME, progress=progress, net=net,
                                                   key=key)
    featurize = featurize or (lambda paths: extract_features(paths, cache_path=out / CACHE_NAME, progress=progress))
    feats = featurize(train_paths + test_paths)  # one pass: one bar, the network built once
    train_set = set(train_paths)
    is_train = np.array([p in train_set for p in feats.paths], dtype=bool)
    X_train, X_test = feats.vectors[is_train], feats.vectors[~is_train]
    kept_train = [p for p, t in zip(feats.paths, is_train) if t]
    kept_test = [p for p, t in zip(feats.paths, is_train) if not t]
    unreadable = f" ({len(feats.skipped)} unreadable: {feats.skipped[0][1]})" if feats.skipped else ""
    for folder, n in ((train_dir, len(kept_train)), (test_dir, len(kept_test))):
        if n < MIN_IMAGES:
            raise KitError(f"{display(folder)}: {n} readable photo(s){unreadable}; comparing scenes needs at least "
                           f"{MIN_IMAGES} a side to cross-validate. Fix: add photos (tens a side give a trustworthy "
                           "answer).")
    clf = domain_classifier(X_train, X_test, folds=folds, permutations=permutations, l2=l2, seed=seed,
                            progress=progress)
    kid_mean, kid_std = kid(X_train, X_test, seed=seed)
    train_logits, test_logits = clf["logits"][:len(X_train)], clf["logits"][len(X_train):]
    a, b = calibrate(clf["logits"], clf["labels"])
    beta, ess = importance_weights(a * train_logits + b, len(X_train), len(X_test), clip)
    result = ShiftResult(train_dir, test_dir, kept_train, kept_test, clf["auc"], clf["p_value"], permutations,
                         clf["folds"], clf["null_aucs"], train_logits, test_logits, (a, b), kid_mean, kid_std,
                         kid_subset_size(len(X_train), len(X_test)), beta, ess, clip, feats.skipped)
    return result


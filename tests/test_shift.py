"""hack shift: the statistics against independent oracles (pairwise Mann-Whitney, scipy's optimizer,
a loop-by-loop MMD), then whole runs on synthetic scenes through the real pretrained backbone:
a bluish scene against a reddish one must be told apart, two halves of one scene must not."""
import json

import numpy as np
import pytest

from conftest import installed_checkpoint
from click.testing import CliRunner
from PIL import Image

from hackathon.evaluate import shift
from hackathon.cli import cli
from hackathon.evaluate.features import CACHE_NAME, extract_features, list_images, load_backbone
from hackathon.evaluate.shift import (classifier_inputs, domain_classifier, fit_logistic, importance_weights, kid,
                             measure_shift, out_of_fold_logits, roc_auc, roc_curve, stratified_folds)
from hackathon.evaluate.shift_report import write_report
from hackathon.core.errors import KitError

# ---- statistics on arrays ----


def brute_force_auc(scores, labels):
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_is_the_mann_whitney_statistic_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    labels = rng.integers(0, 2, 40)
    assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)
    fpr, tpr = roc_curve(scores, labels)
    assert np.trapz(tpr, fpr) == pytest.approx(roc_auc(scores, labels), abs=1e-12)  # trapezoids: ties count half
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # the textbook example
    assert roc_auc([3, 2, 1], [1, 0, 0]) == 1.0 and roc_auc([3, 2, 1], [0, 0, 1]) == 0.0


def test_logistic_regression_is_the_penalized_optimum():
    minimize = pytest.importorskip("scipy.optimize").minimize  # the oracle (installed with gluoncv)

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(30, 6))
    y = (Z[:, 0] + 0.5 * rng.normal(size=30) > 0.3).astype(float)
    w = fit_logistic(Z, y, l2=0.05)

    def objective(v):  # mean log-loss + l2/2 |w|^2, intercept free
        h = Z @ v[:-1] + v[-1]
        return np.mean(np.logaddexp(0, h) - y * h) + 0.025 * (v[:-1] ** 2).sum()

    ref = minimize(objective, np.zeros(7), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(w, ref, atol=1e-4)
    assert objective(w) <= objective(ref) + 1e-12
    assert w[0] > 0.5  # it found the informative column


def test_principal_axes_give_the_same_held_out_logits_as_the_raw_features():
    """The module's claim: rotating onto the principal axes changes nothing, even with d > n."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(24, 60)) * rng.uniform(0.1, 3, 60) + 5
    y = np.r_[np.zeros(12), np.ones(12)]
    X[y == 1, :3] += 1.0
    folds = stratified_folds(y, 4, np.random.default_rng(0))
    sd = X.std(axis=0)
    raw = (X - X.mean(axis=0)) / sd / np.sqrt(X.shape[1])
    np.testing.assert_allclose(out_of_fold_logits(classifier_inputs(X), y, folds),
                               out_of_fold_logits(raw, y, folds), atol=1e-6)
    assert classifier_inputs(X).shape == (24, 23)  # centred: rank n - 1


def test_folds_are_stratified():
    y = np.r_[np.zeros(13), np.ones(7)]
    folds = stratified_folds(y, 5, np.random.default_rng(3))
    for c in (0, 1):
        counts = np.bincount(folds[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1


def test_domain_classifier_separates_shifted_features_and_not_identical_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 50)), rng.normal(size=(20, 50))
    same = domain_classifier(a, b, permutations=99, seed=0)
    assert 0.3 < same["auc"] < 0.7 and same["p_value"] > 0.05
    assert same["null_aucs"].shape == (99,)
    shifted = domain_classifier(a, b + 0.6, permutations=99, seed=0)  # backbone shifts are dense like this
    assert shifted["auc"] > 0.9 and shifted["p_value"] == pytest.approx(1 / 100)


def test_kid_is_the_unbiased_mmd_and_near_zero_within_one_distribution():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 4)) + 0.3

    def k(u, v):
        return (u @ v / 4 + 1) ** 3

    loop = (sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
            + sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / 30
            - 2 * sum(k(x[i], y[j]) for i in range(6) for j in range(6)) / 36)
    assert kid(x, y, subsets=1, subset_size=6)[0] == pytest.approx(loop, rel=1e-12)

    a, b = rng.normal(size=(200, 32)), rng.normal(size=(200, 32))
    same, same_std = kid(a, b)
    far, _ = kid(a, b + 0.5)
    assert abs(same) < 2 * same_std and far > 10 * abs(same) and far > 0


def test_importance_weights_formula_clip_and_ess():
    h = np.log(np.array([0.5, 1.0, 2.0, 1000.0]))
    beta, ess = importance_weights(h, n_train=4, n_test=2, clip=20)
    np.testing.assert_allclose(beta, [1.0, 2.0, 4.0, 20.0])
    assert ess == pytest.approx(27 ** 2 / (1 + 4 + 16 + 400))
    assert importance_weights(np.zeros(5), 5, 5)[1] == pytest.approx(5.0)  # no shift: every photo counts


# ---- whole runs on synthetic scenes, through the real backbone ----


def scene_photo(path, tint, seed, size=96):
    """A textured photo of a 'scene': smooth random blobs and stripes, washed in the scene's colour."""
    rng = np.random.default_rng(seed)
    texture = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC),
                         dtype=np.float64)
    stripes = 40 * np.sin(np.arange(size) / rng.uniform(2, 6))[None, :, None]
    im = np.clip(0.45 * texture + 0.55 * np.asarray(tint, np.float64) + stripes, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(im).save(path, quality=92)


BLUE, RED = (40, 90, 220), (220, 60, 40)


@pytest.fixture(scope="module")
def mxnet_home(tmp_path_factory):
    """An $MXNET_HOME holding the converted backbone (the test skips without the weights package)."""
    from hackathon.train.weights import mobilenetv2_params

    installed_checkpoint()
    home = tmp_path_factory.mktemp("mxnet-home")
    mobilenetv2_params(cache_dir=home / "models")
    return home


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    for i in range(24):
        scene_photo(root / "blue" / ("a" if i < 12 else "b") / f"blue{i:02d}.jpg", BLUE, seed=i)
    for i in range(12):
        scene_photo(root / "red" / f"red{i:02d}.jpg", RED, seed=100 + i)
    (root / "red" / "notes.txt").write_text("not a photo: ignored")
    return root


@pytest.fixture(scope="module")
def featurize(mxnet_home, scenes):
    net = load_backbone(cache_dir=mxnet_home / "models")
    cache = scenes.parent / f"{scenes.name}-{CACHE_NAME}"
    return lambda paths: extract_features(paths, cache_path=cache, progress=False, net=net)


def test_two_scenes_are_told_apart_and_two_halves_of_one_are_not(scenes, featurize, tmp_path):
    apart = measure_shift(scenes / "blue" / "a", scenes / "red", tmp_path / "apart", permutations=50,
                          progress=False, featurize=featurize)
    assert apart.n_train == apart.n_test == 12
    assert apart.auc > 0.95 and apart.p_value == pytest.approx(1 / 51)
    assert "easy to tell apart" in apart.verdict()
    assert "hack adapt MODEL --photos" in apart.verdict() and "organizers allow" in apart.verdict()

    halves = measure_shift(scenes / "blue" / "a", scenes / "blue" / "b", tmp_path / "halves", permutations=50,
                           progress=False, featurize=featurize)
    assert 0.2 < halves.auc < 0.8 and halves.p_value > 0.05
    assert "cannot tell the scenes apart" in halves.verdict() and "hack adapt" not in halves.verdict()
    assert halves.kid < apart.kid / 5 and apart.kid > 3 * apart.kid_std
    assert halves.ess_fraction > apart.ess_fraction


def test_cli_writes_the_report(scenes, mxnet_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(mxnet_home))
    out = tmp_path / "report"
    run = CliRunner().invoke(cli, ["shift", str(scenes / "blue"), str(scenes / "red"), "--out", str(out),
                                   "--permutations", "20", "--clip", "5"])
    assert run.exit_code == 0, run.output
    assert "easy to tell apart" in run.output and "shift.md" in run.output
    report = json.loads((out / "shift.json").read_text())
    assert (report["n_train"], report["n_test"], report["n_permutations"]) == (24, 12, 20)
    assert report["auc"] > 0.95 and report["auc_p_value"] == pytest.approx(1 / 21)
    beta = np.array([w["beta"] for w in report["weights"]])
    assert sorted(w["image"] for w in report["weights"])[:2] == ["a/blue00.jpg", "a/blue01.jpg"]
    assert beta.max() <= 5 and report["ess"] == pytest.approx(beta.sum() ** 2 / (beta ** 2).sum())
    assert report["ess_fraction"] == pytest.approx(report["ess"] / 24)
    slope, intercept = report["calibration"]["slope"], report["calibration"]["intercept"]
    logits = np.array([w["logit"] for w in report["weights"]])
    np.testing.assert_allclose(beta, np.minimum(np.exp(slope * logits + intercept) * 24 / 12, 5), rtol=1e-9)
    for name in ("shift.md", "most-like-test.png", "least-like-test.png", "roc.png", CACHE_NAME):
        assert (out / name).stat().st_size > 0, name
    with Image.open(out / "most-like-test.png") as sheet:
        assert sheet.width == 4 * 200 and 3 * 200 < sheet.height < 4 * 200  # 24 photos: 12 a sheet, 3 rows of 4
    top = max(report["weights"], key=lambda w: w["beta"])["image"]
    assert top in (out / "shift.md").read_text()
    assert not list(out.glob("*.partial"))


def test_unreadable_photo_is_named_skipped_and_exits_1(scenes, featurize, tmp_path, monkeypatch, mxnet_home):
    monkeypatch.setenv("MXNET_HOME", str(mxnet_home))
    train = tmp_path / "train"
    for i in range(5):
        scene_photo(train / f"ok{i}.jpg", BLUE, seed=200 + i)
    (train / "broken.jpg").write_bytes((train / "ok0.jpg").read_bytes()[:300])  # a half-copied photo
    out = tmp_path / "report"
    run = CliRunner().invoke(cli, ["shift", str(train), str(scenes / "red"), "--out", str(out), "--permutations", "19"])
    assert run.exit_code == 1
    assert "broken.jpg" in run.output and "truncated" in run.output
    report = json.loads((out / "shift.json").read_text())
    assert report["n_train"] == 5 and report["skipped"][0]["image"].endswith("broken.jpg")


def test_the_fused_backbone_gives_the_plain_backbones_features(scenes, mxnet_home):
    """hack shift's features run oneDNN's fused graph where MXNet has it: the same vectors as the
    plain hybridized backbone, whatever the batch sizes (16, then a last batch of 4)."""
    from hackathon.train.models import build_backbone

    paths = sorted((scenes / "blue").rglob("*.jpg"))[:20]
    fused = extract_features(paths, progress=False, net=load_backbone(cache_dir=mxnet_home / "models")).vectors
    plain_net = build_backbone(pretrained=True, cache_dir=mxnet_home / "models").features
    plain_net.hybridize(static_alloc=True)
    plain = extract_features(paths, progress=False, net=plain_net).vectors
    assert fused.shape == plain.shape == (20, 1280) and plain.max() > 0
    assert np.allclose(fused, plain, atol=1e-4 * plain.max())


def test_cached_features_skip_the_network(scenes, featurize):
    paths = list_images(scenes / "red")
    first = featurize(paths)

    class NoNetwork:
        def __call__(self, x):
            raise AssertionError("the network ran although every photo was cached")

    again = extract_features(paths, cache_path=scenes.parent / f"{scenes.name}-{CACHE_NAME}", progress=False,
                             net=NoNetwork())
    np.testing.assert_array_equal(first.vectors, again.vectors)
    assert first.vectors.shape == (12, 1280) and (first.vectors >= 0).all()


def fake_features(paths):  # mean colour: the statistics without the network
    from hackathon.evaluate.features import Features

    vectors = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).mean(axis=(0, 1)) for p in paths])
    return Features(list(paths), vectors)


def test_bad_inputs_get_one_clear_error(tmp_path, scenes):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    with pytest.raises(KitError, match="empty: no photos"):
        measure_shift(tmp_path / "empty", scenes / "red", tmp_path / "out", featurize=fake_features)
    with pytest.raises(KitError, match="no such folder"):
        measure_shift(tmp_path / "missing", scenes / "red", tmp_path / "out", featurize=fake_features)
    for i in range(3):
        scene_photo(tmp_path / "few" / f"f{i}.jpg", BLUE, seed=i)
    with pytest.raises(KitError, match="3 readable photo.*at least 4"):
        measure_shift(tmp_path / "few", scenes / "red", tmp_path / "out", featurize=fake_features)
    with pytest.raises(KitError, match="in both folders"):
        measure_shift(scenes / "blue", scenes / "blue" / "b", tmp_path / "out", featurize=fake_features)
    assert not (tmp_path / "out").exists()
    run = CliRunner().invoke(cli, ["shift", str(scenes / "blue"), str(scenes / "red"), "--out", str(tmp_path / "o"),
                                   "--permutations", "5"])
    assert run.exit_code == 2 and "--permutations" in run.output  # p could never reach 0.05

    run = CliRunner().invoke(cli, ["shift", str(tmp_path / "few"), str(scenes / "red"), "--out", str(tmp_path / "o")])
    assert run.exit_code == 1 and "at least 4" in run.output and "Traceback" not in run.output


def test_injected_features_run_the_whole_report_without_the_network(scenes, tmp_path):
    result = measure_shift(scenes / "blue" / "a", scenes / "red", tmp_path / "r", permutations=20,
                           progress=False, featurize=fake_features)
    assert not (tmp_path / "r" / "shift.md").exists()  # a value: the caller writes the report
    write_report(result, tmp_path / "r")
    assert result.auc == 1.0  # mean colour alone separates blue from red
    assert (tmp_path / "r" / "roc.png").is_file() and not (tmp_path / "r" / CACHE_NAME).exists()
    assert shift.MOST_LIKE in result.verdict()


def test_a_report_inside_the_train_folder_is_not_read_back_as_photos(scenes, tmp_path):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(scenes / "blue" / "a", train)
    for _ in range(2):  # the second run finds the first run's PNGs below train/report
        result = measure_shift(train, scenes / "red", train / "report", permutations=20, progress=False,
                               featurize=fake_features)
        write_report(result, train / "report")
        assert result.n_train == 12
    assert (train / "report" / shift.MOST_LIKE).is_file()


def test_calibration_undoes_shrinkage_and_gives_prior_odds_without_signal():
    from hackathon.evaluate.shift import calibrate

    rng = np.random.default_rng(0)
    true = rng.normal(0, 2, 5000)
    labels = (rng.uniform(size=5000) < 1 / (1 + np.exp(-true))).astype(float)
    a, b = calibrate(0.2 * true - 0.1, labels)  # a shrunk, shifted logit
    assert a == pytest.approx(5, rel=0.1) and b == pytest.approx(0.5, abs=0.15)
    a, b = calibrate(-true, labels)  # anti-correlated: no usable signal, every photo gets the prior odds
    assert a == 0 and b == pytest.approx(np.log(labels.mean() / (1 - labels.mean())))


def test_real_aquarium_photos_shot_early_and_late_differ_and_a_random_split_does_not(shared_dir, featurize, tmp_path):
    """aquarium-scene-a's file numbers follow the visit: the first photos are jellyfish tanks, the
    last ones the penguin pool (bench/RESULTS.md, "shift sanity")."""
    photos = sorted((shared_dir / "data" / "aquarium-scene-a").glob("*.jpg"))
    if len(photos) < 60:
        pytest.skip("aquarium-scene-a has fewer than 60 photos")

    def folder(name, chosen):
        for p in chosen:
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / p.name).symlink_to(p.resolve())
        return tmp_path / name

    early_late = measure_shift(folder("early", photos[:30]), folder("late", photos[-30:]), tmp_path / "r1",
                               permutations=50, progress=False, featurize=featurize)
    assert early_late.auc > 0.7 and early_late.p_value < 0.05
    mixed = photos[:30] + photos[-30:]
    order = np.random.default_rng(0).permutation(60)
    halves = measure_shift(folder("a", [mixed[i] for i in order[:30]]), folder("b", [mixed[i] for i in order[30:]]),
                           tmp_path / "r2", permutations=50, progress=False, featurize=featurize)
    assert halves.p_value > 0.05 and halves.ess_fraction > early_late.ess_fraction


def test_contact_sheet_draws_chinese_file_names_in_their_own_glyphs(tmp_path):
    from hackathon.evaluate.shift_report import contact_sheet
    from labeling.show import find_cjk_font

    if find_cjk_font() is None:
        pytest.skip("no font with CJK glyphs installed (the Makefile's system-deps installs fonts-wqy-zenhei)")
    sheets = []
    for name in ("鲨鱼.jpg", "鲸鱼.jpg"):
        scene_photo(tmp_path / name, BLUE, seed=0)
        contact_sheet([tmp_path / name], [1.0], "most like the test scene", tmp_path / f"{name}.png")
        sheets.append(np.asarray(Image.open(tmp_path / f"{name}.png")))
    assert (sheets[0] != sheets[1]).any()  # two "missing glyph" boxes would look alike


def test_shift_md_does_not_send_readers_looking_for_torch(scenes, tmp_path):
    result = measure_shift(scenes / "blue" / "a", scenes / "red", tmp_path / "r", permutations=20, progress=False,
                           featurize=fake_features)
    write_report(result, tmp_path / "r")
    text = (tmp_path / "r" / "shift.md").read_text()
    assert "torchvision" not in text and "without torch" in text

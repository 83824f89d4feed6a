"""`hack adapt`: BatchNorm statistics re-estimated on test-scene photos (AdaBN), written as a normal
export; hostile inputs refused before anything is written."""
import json
import shutil

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from hackathon.core.errors import KitError
from hackathon.deploy.predict import load_detector
from hackathon.evaluate import adapt as adapt_mod
from hackathon.evaluate.adapt import adapt, batchnorm_layers
from labeling.pack import sha256_file
from test_predict import CLASSES, make_export


def scene_photos(folder, n, seed=0, tint=(1.0, 0.8, 0.6)):
    """n different photos of a 'scene': noise with a colour cast, saved as JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        pixels = rng.randint(0, 256, (90, 120, 3)) * np.array(tint)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"p{i:02d}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("adapt") / "export", shape=300)


def meta_of(export_dir):
    return json.loads((export_dir / "export.json").read_text())


def bn_inputs(export_dir, photos):
    """Each BatchNorm layer's input on `photos` in inference mode (one batch), and its running stats."""
    det = load_detector(export_dir, precision="fp32", fuse=False)
    x = mx.nd.concat(*[det.preprocess(Image.open(p).convert("RGB")) for p in photos], dim=0)
    layers = batchnorm_layers(json.loads((export_dir / "model-symbol.json").read_text()))
    internals = mx.sym.load(str(export_dir / "model-symbol.json")).get_internals()
    block = mx.gluon.SymbolBlock(mx.sym.Group([internals[out] for _, out, _, _ in layers]), [mx.sym.var("data")])
    block.collect_params().load(str(export_dir / "model-0000.params"), ignore_extra=True)
    params = mx.nd.load(str(export_dir / "model-0000.params"))
    return [(o.asnumpy(), params[f"aux:{m}"].asnumpy(), params[f"aux:{v}"].asnumpy())
            for o, (_, _, m, v) in zip(block(x), layers)]


def test_every_layer_then_sees_inputs_with_exactly_the_new_statistics(export, tmp_path):
    # With all photos in one batch, the adapted net in inference mode reproduces AdaBN's train-mode
    # pass: each BatchNorm's input then has, per channel, the mean and variance it now stores.
    photos = scene_photos(tmp_path / "scene", adapt_mod.BATCH)
    result = adapt(export, tmp_path / "scene", tmp_path / "adapted", keep=0.0, progress=False)
    assert len(result.changes) == result.bn_total == 60 and len(result.photos) == adapt_mod.BATCH
    # (float32 drift grows with depth: 1e-7 of a std at the first layer, ~1% at the last 1x1 maps)
    for x, mean, var in bn_inputs(tmp_path / "adapted", photos):
        assert (np.abs(x.mean(axis=(0, 2, 3)) - mean) <= 0.02 * np.sqrt(var) + 1e-5).all()
        assert np.allclose(x.var(axis=(0, 2, 3)), var, rtol=5e-2, atol=1e-5)
    first = bn_inputs(tmp_path / "adapted", photos)[0]
    assert np.allclose(first[0].mean(axis=(0, 2, 3)), first[1], rtol=1e-4, atol=1e-6)  # exact where no drift
    before = bn_inputs(export, photos)  # the unadapted export's statistics are far from the scene's
    assert sum(not np.allclose(x.var(axis=(0, 2, 3)), var, rtol=0.5) for x, _, var in before) > 50


def test_keep_mixes_old_and_new_statistics_and_layers_limits_what_changes(export, tmp_path):
    scene_photos(tmp_path / "scene", 10, seed=3)
    adapt(export, tmp_path / "scene", tmp_path / "new", keep=0.0, progress=False)
    adapt(export, tmp_path / "scene", tmp_path / "half", keep=0.5, layers="5", progress=False)
    old, new, half = (mx.nd.load(str(p / "model-0000.params")) for p in (export, tmp_path / "new", tmp_path / "half"))
    layers = batchnorm_layers(json.loads((export / "model-symbol.json").read_text()))
    for k, (_, _, m, v) in enumerate(layers):
        for name in (m, v):
            a, b, c = (d[f"aux:{name}"].asnumpy() for d in (old, new, half))
            if k < 5:  # measured in train mode (batch statistics upstream), whatever is kept: half of each
                assert np.allclose(c, (a + b) / 2, rtol=1e-4, atol=1e-6)
            else:
                assert np.array_equal(c, a)
    assert all(np.array_equal(old[k].asnumpy(), half[k].asnumpy()) for k in old if k.startswith("arg:"))
    meta = json.loads((tmp_path / "half" / "export.json").read_text())["adapted"]
    assert meta["keep"] == 0.5 and meta["layers_adapted"] == 5 and meta["batchnorm_layers"] == 60


def test_hack_adapt_writes_an_export_predict_runs_and_records_the_photos(export, tmp_path):
    photos = scene_photos(tmp_path / "scene", 9)
    shutil.copyfile(photos[0], tmp_path / "scene" / "zz-again.jpg")  # the same bytes: counted once
    (tmp_path / "scene" / "broken.jpg").write_bytes(b"not a jpeg")
    r = CliRunner().invoke(cli, ["adapt", str(export), "--photos", str(tmp_path / "scene"), "--out",
                                 str(tmp_path / "adapted")])
    assert r.exit_code == 0, r.output
    assert "adapted 60 of 60 BatchNorm layers" in r.output and "on 9 photo(s), 1 duplicate(s) counted once" in r.output
    assert "broken.jpg" in r.output and "zz-again.jpg" not in json.dumps(meta_of(tmp_path / "adapted")) and "statistics moved: mean shift median" in r.output
    meta = json.loads((tmp_path / "adapted" / "export.json").read_text())
    assert meta["classes"] == CLASSES and meta["data_shape"] == [300, 300]
    assert meta["adapted"]["photo_sha256"] == {p.name: sha256_file(p) for p in photos}
    assert len(meta["adapted"]["per_layer"]) == 60 and meta["adapted"]["unreadable"] == 1
    r = CliRunner().invoke(cli, ["predict", str(tmp_path / "adapted"), str(photos[0]), "--out", str(tmp_path / "pred")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pred" / "predictions.json").is_file()


def test_the_model_and_the_photos_are_left_as_they_were(export, tmp_path):
    scene_photos(tmp_path / "scene", 8)
    before = {p: sha256_file(p) for p in list(export.iterdir()) + list((tmp_path / "scene").iterdir())}
    adapt(export, tmp_path / "scene", tmp_path / "adapted", progress=False)
    assert {p: sha256_file(p) for p in before} == before
    assert sha256_file(tmp_path / "adapted" / "model-0000.params") != before[export / "model-0000.params"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_train import one_epoch_run

    return one_epoch_run(tmp_path_factory.mktemp("adapt-run"), n=6, val_fraction=0.34)


def test_a_run_folder_is_exported_then_adapted(run, tmp_path):
    scene_photos(tmp_path / "scene", 8)
    result = adapt(run, tmp_path / "scene", tmp_path / "adapted", progress=False)
    assert result.source.startswith("run ") and load_detector(tmp_path / "adapted").classes == ["red", "blue"]
    meta = json.loads((tmp_path / "adapted" / "export.json").read_text())
    assert meta["weights"] == "best.params" and meta["adapted"]["from"].startswith("run ")


def test_self_training_fine_tunes_on_pseudo_labels_a_team_can_open(run, tmp_path):
    from labeling.labelme_io import AUTO_FLAG, REVIEWED_FLAG, read_labelme

    photos = scene_photos(tmp_path / "scene", 8)
    before = {p: sha256_file(p) for p in photos}
    r = CliRunner().invoke(cli, ["adapt", str(run), "--photos", str(tmp_path / "scene"), "--out", str(tmp_path / "a"),
                                 "--self-train-minutes", "0.3", "--confidence", "0.02"])  # a weak run: a low bar
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "a" / "export.json").read_text())["adapted"]
    st = meta["self_train"]
    assert st["epochs"] >= 1 and st["confidence"] == 0.02 and st["files"] == 8 and "self-trained" in r.output
    assert "after self-training" in meta["method"] and len(meta["per_layer"]) == 60
    files = sorted((tmp_path / "a" / "pseudo-labels").glob("*.json"))
    assert [f.stem for f in files] == [p.stem for p in photos]
    lf = read_labelme(files[0])  # the kit's labelme reader: the file labelme opens
    assert lf.flags[REVIEWED_FLAG] is False and lf.shapes and all(s.flags[AUTO_FLAG] for s in lf.shapes)
    doc = json.loads(files[0].read_text())
    assert (files[0].parent / doc["imagePath"]).resolve() == photos[0].resolve()
    assert st["pseudo_boxes"] == sum(len(json.loads(f.read_text())["shapes"]) for f in files) > 0
    assert {p: sha256_file(p) for p in photos} == before
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "a"), "--data", str(run.parent / "data" / "val.rec"), "--out",
                                 str(tmp_path / "rep"), "--bootstrap", "10"])
    assert r.exit_code == 0, r.output


def test_self_training_needs_a_run_and_says_so(export, tmp_path):
    scene_photos(tmp_path / "scene", 8)
    with pytest.raises(KitError, match="--self-train-minutes: .* is not a run folder"):
        adapt(export, tmp_path / "scene", tmp_path / "a", self_train_minutes=1, progress=False)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("case", ["json", "few", "duplicates", "same_folder", "not_empty"])
def test_hostile_inputs_are_refused_with_the_fix_and_nothing_is_written(export, tmp_path, case):
    photos = tmp_path / "scene"
    out = tmp_path / "adapted"
    if case == "json":
        scene_photos(photos, 10)
        (photos / "p00.json").write_text('{"shapes": []}')
        match = "holds 1 JSON file.*none is read.*labels of the test scene"
    elif case == "few":
        scene_photos(photos, adapt_mod.MIN_PHOTOS - 1)
        (photos / "bad.png").write_bytes(b"\x89PNG broken")
        match = f"{adapt_mod.MIN_PHOTOS - 1} distinct readable.*1 unreadable.*needs at least {adapt_mod.MIN_PHOTOS}"
    elif case == "duplicates":
        first = scene_photos(photos, 1)[0]
        for i in range(12):
            shutil.copyfile(first, photos / f"copy{i}.jpg")
        match = "1 distinct readable photo.*13 file.*12 of them repeating another's bytes"
    elif case == "same_folder":
        scene_photos(photos, 10)
        out = export
        match = "is the model's own folder"
    else:
        scene_photos(photos, 10)
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        match = "holds something other than an earlier"
    before = {p: p.read_bytes() for p in list(photos.iterdir()) + list(export.iterdir())}
    with pytest.raises(KitError, match=match):
        adapt(export, photos, out, progress=False)
    assert {p: p.read_bytes() for p in before} == before  # nothing of the user's changed
    if case in ("json", "few", "duplicates"):
        assert not out.exists()  # no half-written or empty export left behind


def test_a_model_without_batchnorm_is_refused(tmp_path):
    out = tmp_path / "plain"
    out.mkdir()
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Conv2D(4, 3, padding=1))
    net.initialize()
    net.hybridize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    net.export(str(out / "model"), 0)
    (out / "classes.txt").write_text("fish\n")
    (out / "export.json").write_text(json.dumps({"data_shape": [32, 32], "classes": ["fish"]}))
    scene_photos(tmp_path / "scene", 10)
    with pytest.raises(KitError, match="no BatchNorm layer.*Fix: adapt a model with BatchNorm"):
        adapt(out, tmp_path / "scene", tmp_path / "adapted", progress=False)


@pytest.mark.parametrize("flags, match", [(["--keep", "1"], "--keep 1.0: takes a fraction in"),
                                          (["--layers", "some"], "--layers some: takes all, backbone, or")])
def test_bad_flags_name_the_flag_and_what_it_takes(export, tmp_path, flags, match):
    scene_photos(tmp_path / "scene", 10)
    r = CliRunner().invoke(cli, ["adapt", str(export), "--photos", str(tmp_path / "scene"), "--out",
                                 str(tmp_path / "a")] + flags)
    assert r.exit_code != 0 and match in r.output, r.output


def test_shift_can_compare_the_scenes_with_an_adapted_backbone(export, tmp_path):
    from hackathon.evaluate.features import export_backbone, extract_features

    photos = scene_photos(tmp_path / "scene", 8)
    adapt(export, tmp_path / "scene", tmp_path / "adapted", progress=False)
    (net_a, key_a), (net_b, key_b) = export_backbone(export), export_backbone(tmp_path / "adapted")
    assert key_a != key_b  # one cache never mixes two networks' vectors
    fa = extract_features(photos, cache_path=tmp_path / "cache.npz", net=net_a, key=key_a, progress=False)
    fb = extract_features(photos, cache_path=tmp_path / "cache.npz", net=net_b, key=key_b, progress=False)
    assert fa.vectors.shape == fb.vectors.shape == (8, 1280) and not np.allclose(fa.vectors, fb.vectors)
    with pytest.raises(KitError, match="--model .*not an export"):
        export_backbone(tmp_path / "scene")

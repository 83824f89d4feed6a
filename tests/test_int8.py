"""INT8 exports: quantized with MXNet's oneDNN path, kept only within the tolerance of fp32, run by
predict, eval and the judges where the machine can, and checked by the judges as data first."""
import json
import shutil
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from hackathon.core.errors import KitError, Refused
from hackathon.deploy import int8 as int8_mod
from hackathon.deploy import predict as predict_mod
from hackathon.deploy.predict import load_detector
from hackathon.judge.model_check import check_export
from test_predict import CLASSES, make_export

pytestmark = pytest.mark.skipif(not predict_mod.int8_supported()[0], reason="this MXNet has no oneDNN INT8")


def photos(n, seed=0):
    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 256, (120, 160, 3)).astype(np.uint8)) for _ in range(n)]


def val_set(n=6):
    return [(im, np.array([[10, 10, 80, 90]], np.float32), np.array([0])) for im in photos(n, seed=1)]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    mx.random.seed(0)  # the random model's val mAP (both ~0) must not depend on the tests run before
    export = make_export(tmp_path_factory.mktemp("int8") / "export", shape=300)
    report = int8_mod.quantize_export(export, photos(8), val_set(), calib_mode="naive")
    return export, report


def test_the_int8_graph_is_written_with_what_runs_in_int8_and_what_stays_fp32(quantized):
    export, report = quantized
    assert report.kept and (export / "model-int8-symbol.json").is_file() and (export / "model-int8-0000.params").is_file()
    meta = json.loads((export / "export.json").read_text())["int8"]
    assert meta["symbol"] == "model-int8-symbol.json" and meta["calib_images"] == 8 and meta["val_images"] == 6
    assert meta["int8_ops"].get("_sg_mkldnn_conv", 0) > 10 and "_contrib_quantize_v2" in meta["int8_ops"]
    # GluonCV's exclusions: the head's flatten/concat, then decoding and NMS stay fp32
    assert {"Flatten", "Concat", "_contrib_box_nms"} <= set(meta["fp32_ops"])
    assert abs(meta["map_int8"] - meta["map_fp32"]) <= int8_mod.TOLERANCE


def test_predict_runs_int8_by_default_and_fp32_when_asked_with_close_detections(quantized):
    export, _ = quantized
    image = photos(1, seed=5)[0]
    fast, exact = load_detector(export), load_detector(export, precision="fp32")
    assert fast.precision == "int8" and exact.precision == "fp32 (oneDNN fused)"
    plain = load_detector(export, precision="fp32", fuse=False)
    assert plain.precision == "fp32"
    x = exact.preprocess(image)
    want = [o.asnumpy() for o in plain.net(x)]
    got = [o.asnumpy() for o in exact.net(x)]  # fusing changes the graph, not the numbers
    assert np.allclose(want[1], got[1], atol=1e-4)
    assert [o.shape for o in fast.net(fast.preprocess(image))] == [w.shape for w in want]  # same outputs


def test_static_shape_graphs_give_the_same_detections_whatever_the_batch_sizes(quantized):
    """The INT8 and fused graphs are planned for one input shape and re-planned when the batch size
    changes (predict's last batch is smaller): every photo gets the detections it gets alone, and
    the fused graph's are the plain graph's."""
    export, _ = quantized
    images = photos(12, seed=7)
    scores = lambda rows: np.sort([r["score"] for r in rows])[::-1]
    plain = load_detector(export, precision="fp32", fuse=False)
    for precision in ("int8", "fp32"):
        det = load_detector(export, precision=precision)
        assert det.precision in ("int8", "fp32 (oneDNN fused)")
        alone = [det.detect(im, threshold=0.0) for im in images]
        batched = []
        for chunk in (images[:8], images[8:11], images[11:], images[:8]):  # 8, 3, 1, then 8 again
            batched += det.detect_many(chunk, threshold=0.0)
        for a, b in zip(alone + alone[:8], batched):
            assert len(a) == len(b) > 0 and np.allclose(scores(a), scores(b), atol=1e-3)
        if precision == "fp32":
            for im, a in zip(images[:3], alone):
                assert np.allclose(scores(plain.detect(im, threshold=0.0)), scores(a), atol=1e-4)


def test_without_onednn_auto_falls_back_to_fp32_and_says_why(quantized, monkeypatch):
    export, _ = quantized
    monkeypatch.setattr(predict_mod, "int8_supported", lambda: (False, "this MXNet build has no oneDNN"))
    with pytest.warns(RuntimeWarning, match="running the fp32 graph, not INT8: this MXNet build has no oneDNN"):
        det = load_detector(export)
    assert det.precision.startswith("fp32")
    with pytest.raises(KitError, match="cannot run here.*--precision fp32"):
        load_detector(export, precision="int8")


def test_an_int8_graph_that_falls_short_is_not_kept_and_the_shortfall_is_said(tmp_path, monkeypatch):
    export = make_export(tmp_path / "export", shape=300)
    monkeypatch.setattr(int8_mod, "TOLERANCE", -1.0)  # nothing can be within -1 mAP of fp32
    report = int8_mod.quantize_export(export, photos(8), val_set(), calib_mode="naive")
    assert not report.kept and not (export / "model-int8-symbol.json").exists()
    assert "int8" not in json.loads((export / "export.json").read_text())
    assert "not kept" in int8_mod.describe(report) and "short" in int8_mod.describe(report)
    assert load_detector(export).precision.startswith("fp32")
    with pytest.raises(KitError, match="no INT8 graph"):
        load_detector(export, precision="int8")


def test_too_few_calibration_photos_and_a_bad_mode_are_one_clear_error(tmp_path):
    export = make_export(tmp_path / "export", shape=300)
    with pytest.raises(KitError, match="2 readable calibration photo.*at least 8"):
        int8_mod.quantize_export(export, photos(2), val_set())
    with pytest.raises(KitError, match="--calib-mode minmax: takes naive or entropy"):
        int8_mod.quantize_export(export, photos(8), val_set(), calib_mode="minmax")


def test_the_judges_check_the_int8_graph_as_data(quantized, tmp_path):
    export, _ = quantized
    files = {p.name: p for p in export.iterdir() if p.is_file()}
    assert check_export(files) == CLASSES  # MXNet's own quantized operators pass
    bad = tmp_path / "bad"
    shutil.copytree(export, bad)
    graph = json.loads((bad / "model-int8-symbol.json").read_text())
    graph["nodes"][3]["op"] = "Custom"
    (bad / "model-int8-symbol.json").write_text(json.dumps(graph))
    with pytest.raises(Refused, match="model-int8-symbol.json calls Python code"):
        check_export({p.name: p for p in bad.iterdir()})
    (bad / "model-int8-symbol.json").unlink()
    with pytest.raises(Refused, match="send all three or none"):
        check_export({p.name: p for p in bad.iterdir()})


def test_predict_benchmark_times_each_graph(quantized):
    export, _ = quantized
    run = CliRunner().invoke(cli, ["predict", str(export), "--benchmark"])
    assert run.exit_code == 0, run.output
    graphs = [line.split(" batch ")[0].strip() for line in run.output.splitlines() if " batch " in line]
    assert graphs == ["fp32"] * 2 + ["fp32 (oneDNN fused)"] * 2 + ["int8"] * 2  # batch 1 and 8 each
    assert "ms/image" in run.output and "images/s" in run.output
    run = CliRunner().invoke(cli, ["predict", str(export)])
    assert run.exit_code == 2 and "IMAGES and --out" in run.output


def test_hack_export_int8_on_a_run_calibrates_checks_on_val_and_says_so(tmp_path):
    from conftest import installed_checkpoint
    from labeling.pack import pack_dataset
    from test_train import CLASSES as TRAIN_CLASSES, make_scene, train_args

    installed_checkpoint()
    photos = make_scene(tmp_path / "photos" / "a", n=8)
    pack_dataset([photos], tmp_path / "data", TRAIN_CLASSES, val_fraction=0.25, seed=0, progress=False)
    run = CliRunner().invoke(cli, train_args(tmp_path / "data", tmp_path / "run")[:-4] + ["--epochs", "1", "--patience", "0"])
    assert run.exit_code == 0, run.output
    # the run's 6 training photos are too few to calibrate on: the fp32 export stands, the exit says so
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "e"), "--int8"])
    assert result.exit_code == 1 and "6 readable calibration photo(s)" in result.output
    assert (tmp_path / "e" / "model-symbol.json").is_file() and not (tmp_path / "e" / "model-int8-symbol.json").exists()
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "e"), "--int8",
                                      "--calib", str(photos)])
    # a one-epoch detector: INT8 may or may not stay within 0.01 of it on the 2 val photos; either
    # way the outcome, the exit code, the files and export.json agree
    meta = json.loads((tmp_path / "e" / "export.json").read_text()).get("int8")
    if "INT8 kept" in result.output:
        assert result.exit_code == 0 and meta["calib_source"] == str(photos) and meta["calib_images"] == 8
        assert "on 2 photo(s)" in result.output and (tmp_path / "e" / "model-int8-symbol.json").is_file()
    else:
        assert result.exit_code == 1 and "INT8 not kept" in result.output and "short of the 0.01" in result.output
        assert meta is None and not (tmp_path / "e" / "model-int8-symbol.json").exists()
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "e2"), "--calib", str(photos)])
    assert result.exit_code == 1 and "go with --int8" in result.output

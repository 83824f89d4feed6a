"""hack train / hack export: a real SSD trained for real on small packed data made here.

Each run is tiny (a few synthetic photos, 300x300, 1-2 epochs), so these check behaviour, not
accuracy: the run folder, the multi-device path on several CPU contexts, exact resume after a
SIGKILL, MXNet's parameter server with two local workers, NaN and bad-input handling, the export.
"""
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from conftest import installed_checkpoint
import yaml
from click.testing import CliRunner
from PIL import Image

from hackathon.cli import cli
from labeling.pack import pack_dataset

CLASSES = ["red", "blue"]
ROOT = Path(__file__).resolve().parents[1]
HACK = [sys.executable, "-m", "hackathon.cli"]


def make_scene(folder, n=8, seed=0, size=(160, 120)):
    """n photos of coloured blocks on a noisy background, with their labelme JSON beside them."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = size
        px = rng.randint(60, 140, (h, w, 3)).astype(np.uint8)
        shapes = []
        for k in range(1 + i % 2):
            cls = (i + k) % 2
            bw, bh = rng.randint(30, 60), rng.randint(25, 50)
            x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
            px[y0:y0 + bh, x0:x0 + bw] = (220, 30, 30) if cls == 0 else (30, 30, 220)
            shapes.append({"label": CLASSES[cls], "points": [[x0, y0], [x0 + bw, y0 + bh]], "group_id": None,
                           "description": "", "shape_type": "rectangle", "flags": {}, "mask": None})
        Image.fromarray(px).save(folder / f"p{i}.jpg", quality=95)
        (folder / f"p{i}.json").write_text(json.dumps({
            "version": "5.11.4", "flags": {}, "shapes": shapes, "imagePath": f"p{i}.jpg", "imageData": None,
            "imageHeight": h, "imageWidth": w}))
    return folder


def one_epoch_run(root, n, val_fraction):
    """A run folder trained one epoch from scratch on n photos of make_scene (for tests of what follows training)."""
    photos = make_scene(root / "photos", n=n)
    pack_dataset([photos], root / "data", CLASSES, val_fraction=val_fraction, seed=0, progress=False)
    r = CliRunner().invoke(cli, ["train", str(root / "data"), "--out", str(root / "run"), "--batch-size", "2",
                                 "--epochs", "1", "--workers", "0", "--no-pretrained"])
    assert r.exit_code == 0, r.output
    return root / "run"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    photos = make_scene(root / "photos" / "scene-a", n=8)
    pack_dataset([photos], root / "data", CLASSES, val_fraction=0.25, seed=0, progress=False)
    return root / "data"


@pytest.fixture(scope="module")
def have_weights():
    installed_checkpoint()


def train_args(data, out, *extra):
    return ["train", str(data), "--out", str(out), "--batch-size", "2", "--epochs", "2", "--workers", "0",
            "--patience", "0", *extra]


def test_two_cpu_contexts_train_a_run_folder_that_exports_and_reloads(data, tmp_path, have_weights):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(data, run, "--cpus", "2"))
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["classes"] == CLASSES and config["devices"] == ["cpu(0)", "cpu(1)"]
    assert config["versions"]["mxnet"] == mx.__version__ and config["train"]["batch_size"] == 2
    assert config["versions"]["gluoncv"] == importlib.metadata.version("gluoncv")  # 0.10.5.post0, not 0.11.0
    rows = (run / "results.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,cls_loss,box_loss,val_map50") and len(rows) == 3
    assert all(float(r.split(",")[2]) > 0 for r in rows[1:])  # a real, finite class loss each epoch
    for name in ("best.params", "last.params", "last.states", "curves.png", "state.json"):
        assert (run / name).stat().st_size > 0, name
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 2

    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "classes.txt").read_text().split() == CLASSES
    meta = json.loads((out / "export.json").read_text())
    assert meta["data_shape"] == [300, 300] and meta["classes"] == CLASSES
    net = mx.gluon.SymbolBlock.imports(str(out / "model-symbol.json"), ["data"], str(out / "model-0000.params"))
    ids, scores, boxes = net(mx.nd.zeros((2, 3, 300, 300)))
    assert ids.shape == (2, 100, 1) and boxes.shape == (2, 100, 4)
    assert set(np.unique(ids.asnumpy())) <= {-1.0, 0.0, 1.0}


def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(data, tmp_path, have_weights):
    args = ["--batch-size", "2", "--epochs", "3", "--workers", "0", "--patience", "0"]
    whole = tmp_path / "whole"
    subprocess.run(HACK + ["train", str(data), "--out", str(whole)] + args, check=True, capture_output=True, cwd=ROOT)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(HACK + ["train", str(data), "--out", str(killed)] + args, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "state.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "state.json").read_text())
    assert state["epochs_done"] < 3
    for name in ("last.params", "best.params"):  # a half-written file never has a final name
        mx.nd.load(str(killed / name))  # loads whole

    done = subprocess.run(HACK + ["train", str(data), "--resume", str(killed)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert f"resuming after epoch {state['epochs_done']}" in done.stdout
    a, b = mx.nd.load(str(whole / "last.params")), mx.nd.load(str(killed / "last.params"))
    assert a.keys() == b.keys()
    # Same batches, same augmentation, same optimizer state: equal up to float reordering in the kernels.
    worst = max(float(np.abs(a[k].asnumpy() - b[k].asnumpy()).max()) for k in a)
    assert worst < 1e-3, worst
    ra = (whole / "results.csv").read_text().splitlines()
    rb = (killed / "results.csv").read_text().splitlines()
    assert len(ra) == len(rb) == 4
    for x, y in zip(ra[1:], rb[1:]):  # lr and losses; the val mAP where both validated (--val-every 0 decides)
        np.testing.assert_allclose([float(v) for v in x.split(",")[1:4]], [float(v) for v in y.split(",")[1:4]],
                                   rtol=1e-3, atol=1e-4)
        if x.split(",")[4] and y.split(",")[4]:
            assert float(x.split(",")[4]) == pytest.approx(float(y.split(",")[4]), abs=1e-4)
    assert ra[-1].split(",")[4] and rb[-1].split(",")[4]  # the last epoch is always validated
    assert not list(killed.glob(".last*"))  # no checkpoint left waiting beside its name


def test_dist_sync_parameter_server_two_workers_end_with_identical_weights(data, tmp_path, have_weights):
    run = tmp_path / "dist"
    # mxnet's tools/launch.py through the kit's Python 3.11 shim; scheduler, server, workers on loopback
    cmd = [sys.executable, "-m", "hackathon.train.launch", "-n", "2", "-s", "1", "--launcher", "local",
           " ".join(HACK + ["train", str(data), "--out", str(run), "--kvstore", "dist_sync", "--batch-size", "2",
                            "--epochs", "2", "--workers", "0", "--patience", "0"])]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "machine 1/2" in result.stdout and "machine 2/2" in result.stdout
    rank0, rank1 = mx.nd.load(str(run / "last.params")), mx.nd.load(str(run / "workers" / "rank-1-last.params"))
    assert rank0.keys() == rank1.keys()
    for k in rank0:  # gradients through the parameter server, BatchNorm statistics averaged by the kit
        np.testing.assert_array_equal(rank0[k].asnumpy(), rank1[k].asnumpy(), err_msg=k)
    rows = (run / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(np.isfinite(float(r.split(",")[2])) for r in rows)
    assert yaml.safe_load((run / "config.yaml").read_text())["machines"] == 2


def test_nan_loss_stops_with_the_batch_and_keeps_the_last_good_checkpoint(data, tmp_path, have_weights):
    from hackathon.train.loop import NaNLoss, TrainConfig, train

    run = tmp_path / "run"
    cfg = TrainConfig(data=str(data), out=str(run), epochs=1, batch_size=2, workers=0, patience=0)
    train(cfg, progress=False, echo=lambda *_: None)
    good = mx.nd.load(str(run / "last.params"))
    with pytest.raises(NaNLoss, match=r"epoch 2, batch \d+.*last.params holds epoch 1.*--lr"):
        train(cfg, resume_run=run, overrides={"epochs": 2, "lr": 1e30}, progress=False, echo=lambda *_: None)
    after = mx.nd.load(str(run / "last.params"))
    for k in good:
        np.testing.assert_array_equal(good[k].asnumpy(), after[k].asnumpy())
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 1


@pytest.mark.parametrize("extra, message", [
    (["--gpus", "0"], "mxnet sees no GPU"),
    (["--amp"], "--amp needs GPUs"),
    (["--model", "ssd_512_mobilenet1.0_custom"], "not in .*GluonCV's download hosts are gone"),
    (["--model", "yolo3"], "--model yolo3: unknown"),
    (["--batch-size", "0"], "--batch-size 0: takes 1 or more"),
    (["--lr", "-1"], "--lr -1.0: takes a positive rate"),
    (["--freeze-blocks", "40"], "--freeze-blocks 40: takes 0 to 17"),
    (["--kvstore", "dist_sync"], "Fix: python -m hackathon.train.launch -n 2"),  # mxnet's own launcher dies on 3.11
])
def test_impossible_requests_are_one_clear_line(data, tmp_path, monkeypatch, extra, message):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet-home"))
    monkeypatch.delenv("MXNET_GLUON_REPO", raising=False)
    monkeypatch.delenv("DMLC_PS_ROOT_URI", raising=False)
    result = CliRunner().invoke(cli, train_args(data, tmp_path / "run", *extra))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    import re
    assert re.search(message, result.output), result.output


def test_bad_data_and_a_resume_with_other_classes_are_refused(data, tmp_path, have_weights):
    result = CliRunner().invoke(cli, train_args(tmp_path / "nothing", tmp_path / "run"))
    assert result.exit_code == 1 and "no such folder" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, train_args(empty, tmp_path / "run"))
    assert result.exit_code == 1 and "missing train.rec" in result.output

    run = tmp_path / "run"
    assert CliRunner().invoke(cli, train_args(data, run, "--epochs", "1")).exit_code == 0
    other = tmp_path / "other"
    pack_dataset([data.parent / "photos"], other, ["blue", "red"], val_fraction=0.25, progress=False)
    result = CliRunner().invoke(cli, ["train", str(other), "--resume", str(run)])
    assert result.exit_code == 1 and "trained on classes ['red', 'blue']" in result.output
    result = CliRunner().invoke(cli, train_args(data, run))
    assert result.exit_code == 1 and "already holds a training run" in result.output


def test_a_failed_save_never_leaves_a_truncated_checkpoint(tmp_path):
    from hackathon.train.rundir import save_params

    class DiskFull:
        def save_parameters(self, path):
            with open(path, "wb") as f:
                f.write(b"half a file")
            raise OSError(28, "No space left on device")

    best = tmp_path / "best.params"
    best.write_bytes(b"the good weights")
    with pytest.raises(OSError):
        save_params(DiskFull(), best)
    assert best.read_bytes() == b"the good weights"
    assert [p.name for p in tmp_path.iterdir()] == ["best.params"]


def test_a_gluoncv_preset_trains_from_scratch_and_exports(data, tmp_path):
    run = tmp_path / "preset"
    result = CliRunner().invoke(cli, train_args(data, run, "--model", "ssd_300_mobilenet0.25_custom",
                                                "--no-pretrained", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["model"] == "ssd_300_mobilenet0.25_custom"
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    net = mx.gluon.SymbolBlock.imports(str(tmp_path / "export" / "model-symbol.json"), ["data"],
                                       str(tmp_path / "export" / "model-0000.params"))
    assert net(mx.nd.zeros((1, 3, 300, 300)))[2].shape == (1, 100, 4)


def test_early_stopping_after_patience_epochs_without_a_better_map(data, tmp_path, monkeypatch, have_weights):
    import hackathon.train.loop as t

    scores = iter([0.10, 0.20, 0.15, 0.19, 0.30, 0.40])  # validation mAP per epoch, scripted
    monkeypatch.setattr(t, "validate", lambda *a, **k: next(scores))
    lines = []
    cfg = t.TrainConfig(data=str(data), out=str(tmp_path / "run"), epochs=6, batch_size=2, workers=0, patience=2,
                        val_every=1)
    summary = t.train(cfg, progress=False, echo=lines.append)
    assert summary["epochs_done"] == 4 and summary["best_epoch"] == 2 and summary["best_map50"] == 0.20
    assert "stopped early: no better val mAP for 2 epochs; the best was 0.2000 at epoch 2" in lines[-1]
    assert len((tmp_path / "run" / "results.csv").read_text().splitlines()) == 5


# ---- stale strings (issue 13, item 12) ----

def test_train_help_points_to_the_kits_launcher_not_mxnets():
    r = CliRunner().invoke(cli, ["train", "--help"])
    assert r.exit_code == 0
    assert "python -m hackathon.train.launch -n 2 -s 1" in r.output and "tools/launch.py" not in r.output  # --kvstore too


def test_versions_are_the_installed_distributions():
    from hackathon.train.rundir import versions

    got = versions()
    for name in ("mxnet", "gluoncv", "numpy"):
        assert got[name] == importlib.metadata.version(name), name  # gluoncv: 0.10.5.post0, as pinned


def test_export_prints_no_mxnet_warning(tmp_path):
    """A run folder as `hack train` leaves it (random weights, no training), exported by the CLI."""
    from dataclasses import asdict

    from hackathon.train.rundir import RunDir, save_params
    from hackathon.train.loop import TrainConfig, build_net

    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), pretrained=False)
    run = RunDir.create(tmp_path / "run")
    net = build_net(cfg, CLASSES, mx.cpu())
    net.initialize()
    net(mx.nd.zeros((1, 3, 300, 300)))
    save_params(net, run.best)
    run.write_config({"train": asdict(cfg), "classes": CLASSES})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's defaults, as a user has them
    done = subprocess.run(HACK + ["export", str(run.path), "--out", str(tmp_path / "export")], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "export" / "model-symbol.json").is_file()
    assert "UserWarning" not in done.stderr and "Cannot decide type" not in done.stderr, done.stderr


def test_resume_honours_every_flag_it_can_and_names_each_it_cannot(data, tmp_path, have_weights):
    from hackathon.train.data import EpochBatches
    from hackathon.train.loop import TrainConfig, lr_at

    run = tmp_path / "run"
    assert CliRunner().invoke(cli, train_args(data, run, "--epochs", "1")).exit_code == 0
    result = CliRunner().invoke(cli, ["train", str(data), "--resume", str(run), "--epochs", "2", "--lr", "0.01",
                                      "--batch-size", "4", "--cpus", "2", "--freeze-blocks", "0", "--seed", "3",
                                      "--data-shape", "300"])  # the same size as the run's: not a change
    assert result.exit_code == 0, result.output
    assert "changed for this resume: --epochs 2 (was 1), --lr 0.01 (was 0.001)" in result.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert {k: config["train"][k] for k in ("lr", "batch_size", "cpus", "freeze_blocks", "seed")} == \
        {"lr": 0.01, "batch_size": 4, "cpus": 2, "freeze_blocks": 0, "seed": 3}
    assert config["devices"] == ["cpu(0)", "cpu(1)"] and config["frozen_params"] == 0
    rows = RunDirRows(run)
    steps = len(EpochBatches(6, 4 * 2))  # the new batch: 4 images on each of 2 devices
    want = lr_at(TrainConfig(**config["train"]), steps + steps - 1, steps)
    assert rows[-1]["epoch"] == 2 and rows[-1]["lr"] == pytest.approx(want, rel=1e-4)

    before = (run / "state.json").read_text()
    result = CliRunner().invoke(cli, ["train", str(data), "--resume", str(run), "--epochs", "3", "--data-shape", "512",
                                      "--model", "ssd_300_mobilenet0.25_custom", "--optimizer", "sgd",
                                      "--no-pretrained", "--first-stride", "16"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    for said in ("--data-shape 512: the run was trained at 300x300", "--model ssd_300_mobilenet0.25_custom: the run "
                 "is a ssd_mobilenetv2", "--optimizer sgd: the run's saved optimizer state is adam's",
                 "--no-pretrained: the run continues from its own trained weights",
                 "--first-stride 16: the run's weights are for a first feature map of stride 8",
                 "Fix: drop --data-shape, --model, --optimizer, --no-pretrained, --first-stride"):
        assert said in result.output, said
    assert (run / "state.json").read_text() == before


def test_a_run_made_before_first_stride_existed_exports_and_resumes_with_its_own_layout(data, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(data, run, "--epochs", "1", "--first-stride", "16", "--no-pretrained"))
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["first_stride"] == 16
    del config["train"]["first_stride"]  # config.yaml as the kit wrote it before the stride-8 map
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output  # stride-8 weights would not load: the run's own layout is used
    result = CliRunner().invoke(cli, ["train", str(data), "--resume", str(run), "--epochs", "2", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["first_stride"] == 16

    config["train"]["first_stride"] = 4  # a config key edited by hand: one line naming the flag
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["train", str(data), "--resume", str(run), "--epochs", "3", "--workers", "0"])
    assert result.exit_code == 1 and "--first-stride 4: takes 8 or 16" in result.output, result.output


def RunDirRows(run):
    from hackathon.train.rundir import RunDir

    return RunDir(run).read_results()


def test_the_nan_advice_is_a_command_that_works(data, tmp_path, have_weights):
    import shlex

    run = tmp_path / "run"
    assert CliRunner().invoke(cli, train_args(data, run, "--epochs", "1")).exit_code == 0
    result = CliRunner().invoke(cli, ["train", str(data), "--resume", str(run), "--epochs", "2", "--lr", "1e30"])
    assert result.exit_code == 1 and "the loss became" in result.output
    command = result.output.split("(now 1e+30): ")[1].split(", or start anew")[0]
    assert command == f"hack train {shlex.quote(str(data))} --resume {shlex.quote(str(run))} --lr 1e+29"
    again = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 1e29
    assert again.exit_code == 0 or "(now 1e+29)" in again.output, again.output  # the advised rate was used


class FakeClock:
    """time.time() that moves only as training does: 10 s a batch, 5 s a validation (no timed tests)."""

    def __init__(self, monkeypatch, val_seconds=5, scores=None):
        import hackathon.train.loop as t

        self.now = 1000.0
        monkeypatch.setattr(time, "time", lambda: self.now)
        real_loader = t.train_loader

        clock = self

        class Loader:  # a DataLoader each epoch iterates anew
            def __init__(self, *args, **kwargs):
                self.real = real_loader(*args, **kwargs)

            def __iter__(self):
                for batch in self.real:
                    clock.now += 10
                    yield batch

        scores = iter(scores) if scores is not None else None

        def validate(*args, **kwargs):
            self.now += val_seconds
            self.validations += 1
            # default: never better after epoch 1, so the default patience would stop a run at epoch 11
            return 0.1 if scores is None else next(scores)

        self.validations = 0

        monkeypatch.setattr(t, "train_loader", Loader)
        monkeypatch.setattr(t, "validate", validate)


def read_state(run):
    return json.loads((run / "state.json").read_text())


def test_val_every_0_validates_once_training_outweighs_a_validation_five_to_one(data, tmp_path, monkeypatch,
                                                                                have_weights):
    """3 batches of 10 s an epoch, 20 s a validation: the first epoch, then every 4th (120 s >= 5 x 20 s), and the
    last whatever its turn; the epochs between keep last.params and their row, with an empty val mAP."""
    clock = FakeClock(monkeypatch, val_seconds=20)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(data, run, "--epochs", "6"))
    assert result.exit_code == 0, result.output
    rows = RunDirRows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["val_map50"] is not None for r in rows] == [True, False, False, False, True, True]
    assert clock.validations == 3 and "validated epoch 6 (the last): val mAP@0.5 0.1000" in result.output
    line = next(l for l in result.output.splitlines() if l.startswith("epoch 2/6: loss"))
    assert "val mAP" not in line
    assert ",,"  in (run / "results.csv").read_text().splitlines()[2]  # epoch 2: no val mAP, not a zero
    assert read_state(run)["epochs_done"] == 6 and (run / "curves.png").stat().st_size > 0
    assert not list(run.glob(".last*"))  # every checkpoint in place


def test_val_every_n_and_patience_counts_the_epochs_between_validations(data, tmp_path, monkeypatch, have_weights):
    FakeClock(monkeypatch, scores=[0.2, 0.1, 0.3])
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, train_args(data, run, "--epochs", "10", "--val-every", "2", "--patience", "2"))
    assert result.exit_code == 0, result.output
    assert [r["val_map50"] for r in RunDirRows(run)] == [None, 0.2, None, 0.1]
    state = read_state(run)
    assert state["best_epoch"] == 2 and state["bad_epochs"] == 2 and state["stopped_by"] == "early stop"
    assert "no better val mAP for 2 epochs; the best was 0.2000 at epoch 2" in result.output

    result = CliRunner().invoke(cli, train_args(data, tmp_path / "bad", "--val-every", "-1"))
    assert result.exit_code == 2 and "--val-every" in result.output and "Traceback" not in result.output


def test_a_checkpoint_waiting_beside_its_name_goes_into_place_only_with_its_state(tmp_path):
    """A kill between an epoch's last.params and its state.json: the next read keeps weights and state at one epoch."""
    from hackathon.train.rundir import RunDir

    run = RunDir(tmp_path)
    (tmp_path / "last.params").write_bytes(b"epoch 1")
    (tmp_path / "last.states").write_bytes(b"opt 1")
    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 1}))
    (tmp_path / ".last.params.epoch-2").write_bytes(b"epoch 2")  # killed before state.json said 2
    assert run.read_state()["epochs_done"] == 1
    assert (tmp_path / "last.params").read_bytes() == b"epoch 1" and not list(tmp_path.glob(".last*"))

    (tmp_path / ".last.params.epoch-2").write_bytes(b"epoch 2")  # killed after state.json said 2, before the rename
    (tmp_path / ".last.states.epoch-2").write_bytes(b"opt 2")
    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 2}))
    assert run.read_state()["epochs_done"] == 2
    assert (tmp_path / "last.params").read_bytes() == b"epoch 2" and (tmp_path / "last.states").read_bytes() == b"opt 2"
    assert not list(tmp_path.glob(".last*"))


def test_the_budget_wins_holds_the_last_validation_and_says_what_limited_the_run(data, tmp_path, monkeypatch,
                                                                                 have_weights):
    """6 photos, batch 2: 3 batches (30 s) and a validation (5 s) an epoch; 2 minutes hold 3 whole epochs."""
    FakeClock(monkeypatch)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(data), "--out", str(run), "--batch-size", "2", "--workers", "0",
                                      "--max-minutes", "2"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert config["epochs"] == 0 and config["patience"] == 0  # no epoch limit, no early stop: the budget wins
    assert [r["epoch"] for r in RunDirRows(run)] == [1, 2, 3]
    state = read_state(run)
    assert state["budget_seconds"] <= 120 and state["stopped_by"] == "time budget"
    assert "stopped by the time budget (2 min) after epoch 3: another epoch needs ~44 s, 15 s are left" in result.output
    assert "limited by time budget" in result.output.splitlines()[-1]

    # --max-minutes 1 on resume: one more minute (one more whole epoch), never a scrap of one recorded as an epoch
    result = CliRunner().invoke(cli, ["train", str(data), "--resume", str(run), "--max-minutes", "1"])
    assert result.exit_code == 0, result.output
    assert "the time budget: 1.0 more min" in result.output and "stretched" in result.output
    assert [r["epoch"] for r in RunDirRows(run)] == [1, 2, 3, 4]
    assert read_state(run)["budget_seconds"] <= 180 and read_state(run)["epochs_done"] == 4

    # an explicit --epochs still caps a budget, and the last line says so
    other = tmp_path / "capped"
    result = CliRunner().invoke(cli, train_args(data, other, "--max-minutes", "10"))
    assert result.exit_code == 0, result.output
    assert "stopped after epoch 2 (--epochs 2), with 8.8 of its 10 budget minutes left" in result.output
    assert "limited by epochs" in result.output.splitlines()[-1] and read_state(other)["stopped_by"] == "epochs"


def test_a_budget_too_small_for_one_epoch_validates_and_saves_what_it_has(data, tmp_path, monkeypatch, have_weights):
    FakeClock(monkeypatch)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(data), "--out", str(run), "--batch-size", "2", "--workers", "0",
                                      "--max-minutes", "0.25"])
    assert result.exit_code == 0, result.output
    assert ("the time budget (0.25 min) ended inside epoch 1, after 1 of 3 batches: validated and saved what it has "
            "(best.params; epoch 0.333 in results.csv). A whole epoch takes ~0.5 min here.") in result.output
    assert [r["epoch"] for r in RunDirRows(run)] == [0.333]
    assert (run / "best.params").is_file() and not (run / "last.params").exists()
    assert read_state(run)["epochs_done"] == 0 and read_state(run)["budget_seconds"] <= 15
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    # nothing left: a resume says which flag gives more, and trains nothing
    result = CliRunner().invoke(cli, ["train", str(data), "--resume", str(run)])
    assert result.exit_code == 1 and "has used its time budget" in result.output and "--max-minutes N" in result.output


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "--epochs 0: takes 1 or more (0, no epoch limit, only with --max-minutes"),
    (["--max-minutes", "-1"], "--max-minutes -1.0: takes 0 (no budget) or more minutes"),
    (["--max-minutes", "inf"], "--max-minutes inf: takes 0 (no budget) or more minutes"),
])
def test_a_bad_limit_is_one_line_naming_the_flag(data, tmp_path, extra, message):
    result = CliRunner().invoke(cli, train_args(data, tmp_path / "run", *extra))
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_a_bad_class_balance_names_the_flag_and_what_it_takes(data, tmp_path):
    result = CliRunner().invoke(cli, train_args(data, tmp_path / "run", "--class-balance", "1.5"))
    assert result.exit_code == 2 and "'--class-balance'" in result.output and "0<=x<=1" in result.output
    assert not (tmp_path / "run").exists()


def test_class_balance_repeats_the_rarer_class_in_a_real_training(data, tmp_path, have_weights):
    from hackathon.train.data import DetectionRecords, EpochBatches, repeat_factors

    recs = DetectionRecords(data / "train.rec", len(CLASSES))
    r = repeat_factors(recs, 1.0)  # both classes are on half the photos or more: lifted only at T = 1
    assert r.min() >= 1 and r.max() > 1
    assert len(EpochBatches(len(recs), 2, repeats=r)) > len(EpochBatches(len(recs), 2))
    run = tmp_path / "run"  # extra copies (epoch, i, k) go through a loader worker process
    result = CliRunner().invoke(cli, train_args(data, run, "--class-balance", "1", "--epochs", "1", "--workers", "1"))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["class_balance"] == 1.0


def test_a_log_file_gets_one_line_an_epoch_and_a_terminal_gets_the_bars(data, tmp_path, have_weights):
    import fcntl
    import os
    import pty
    import struct
    import termios

    log = tmp_path / "train.log"
    with open(log, "w") as f:  # hack train ... > train.log 2>&1
        subprocess.run(HACK + train_args(data, tmp_path / "logged"), stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                       check=True)
    text = log.read_text()
    assert "\r" not in text, text[:500]
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]

    master, slave = pty.openpty()  # a terminal (100 columns: tqdm draws nothing in 0): the bars are still drawn
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(HACK + train_args(data, tmp_path / "terminal", "--epochs", "1"), stdout=slave,
                            stderr=slave, cwd=ROOT)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait() == 0, out.decode(errors="replace")[-2000:]
    assert b"epoch 1/1:   0%|" in out and b"0/3 [" in out and b"batch" in out, out.decode(errors="replace")[-2000:]

"""Every stage runs MXNet on all the cores it may use, unless the user said otherwise.

mxnet 1.9.1 alone runs one OpenMP thread on a 2-core x86 machine, and libgomp reads
OMP_NUM_THREADS only when ``import mxnet`` loads it: so each check is a fresh interpreter, and
what it measures is the thread count of the loaded libgomp and the threads a convolution starts.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hackathon
from hackathon.core.cores import KIT_DEFAULT, USER_ENV, default_workers, usable_cores, use_cores

ROOT = Path(__file__).resolve().parents[1]
HACK = [sys.executable, "-m", "hackathon.cli"]
THREAD_VARS = ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "HACKATHON_OMP_DEFAULT")

needs_cores = pytest.mark.skipif(usable_cores() < 2 or not Path("/proc/self/maps").exists(),
                                 reason="needs 2 or more usable cores and Linux's /proc")

# Measures, without the kit's help: libgomp's thread count (the library mxnet loaded, found in
# /proc/self/maps) and how many threads the process has after a convolution.
PROBE = """
import ctypes, json, os, sys
{first}
import mxnet as mx
x = mx.nd.ones((2, 16, 64, 64)); w = mx.nd.ones((16, 16, 3, 3))
mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=16, no_bias=True).wait_to_read()
lib = next(l.split()[-1] for l in open("/proc/self/maps") if "libgomp" in l)
print(json.dumps({{"omp": ctypes.CDLL(lib).omp_get_max_threads(), "tasks": len(os.listdir("/proc/self/task")),
                  "env": os.environ.get("OMP_NUM_THREADS")}}))
"""


def clean_env(**extra):
    """This environment without any thread setting (pytest's own `import hackathon` set one)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def probe(first, **env):
    out = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], capture_output=True, text=True,
                         env=clean_env(**env), cwd=ROOT, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@needs_cores
@pytest.mark.parametrize("stage", ["hackathon.deploy.predict", "hackathon.evaluate.features", "hackathon.judge.sandbox",
                                   "hackathon.train.loop", "hackathon.cli"])
def test_each_stage_runs_mxnet_with_one_openmp_thread_per_core(stage):
    plain = probe("")  # mxnet's own default, for comparison
    kit = probe(f"import {stage}")
    assert kit["omp"] == usable_cores(), kit
    assert kit["env"] == str(usable_cores())  # what the stage's child processes (the scorer's sandbox) inherit
    assert kit["tasks"] > plain["tasks"], (plain, kit)  # the convolution really ran on more threads
    assert plain["omp"] < usable_cores()  # if mxnet used every core alone, this test would prove nothing


@needs_cores
def test_the_users_omp_num_threads_wins():
    mine = probe("import hackathon.deploy.predict", OMP_NUM_THREADS="1")
    assert mine["omp"] == 1 and mine["env"] == "1"


def test_use_cores_sets_only_what_the_user_left_unset(monkeypatch):
    monkeypatch.setitem(sys.modules, "mxnet", object())  # mxnet already loaded: too late for this process
    env = {}
    assert use_cores(env).startswith("mxnet's default") and env["OMP_NUM_THREADS"] == str(usable_cores())
    monkeypatch.delitem(sys.modules, "mxnet")  # as in a fresh `hack` process
    env = {}
    assert use_cores(env) == KIT_DEFAULT and env["OMP_NUM_THREADS"] == str(usable_cores())
    child = dict(env)  # a process started by a kit process inherits the kit's choice, still the kit's
    assert use_cores(child) == KIT_DEFAULT and child == env
    for user in ({"OMP_NUM_THREADS": "3"}, {"MXNET_OMP_MAX_THREADS": "3"}, dict(env, OMP_NUM_THREADS="3")):
        before = dict(user)
        assert use_cores(user) == USER_ENV and user == before


def test_the_doctor_says_how_many_threads_mxnet_runs(tmp_path):
    out = subprocess.run(HACK + ["doctor"], capture_output=True, text=True, env=clean_env(OMP_NUM_THREADS="1"),
                         cwd=tmp_path).stdout
    line = next(l for l in out.splitlines() if "threads:" in l)
    assert line.split()[0] == "warn" and f"1 OpenMP thread(s) on {usable_cores()} usable core(s)" in line, line
    assert "(your environment)" in line


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from labeling.pack import pack_dataset
    from conftest import installed_checkpoint
    from test_train import CLASSES, make_scene

    installed_checkpoint()
    root = tmp_path_factory.mktemp("cores")
    pack_dataset([make_scene(root / "photos", n=6)], root / "data", CLASSES, val_fraction=0.34, seed=0,
                 progress=False, workers=1)
    return root / "data"


def train(data, run, env, *extra):
    done = subprocess.run(HACK + ["train", str(data), "--out", str(run), "--epochs", "1", "--batch-size", "2",
                                  "--patience", "0", *extra], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, yaml.safe_load((run / "config.yaml").read_text())["cpu"]


@needs_cores
def test_train_records_and_prints_its_threads_and_workers(data, tmp_path):
    out, cpu = train(data, tmp_path / "kit", clean_env())
    n = usable_cores()
    assert cpu == {"cores": n, "omp_threads": n, "omp_threads_from": KIT_DEFAULT,
                   "data_workers": default_workers(), "data_workers_from": KIT_DEFAULT}
    assert f"{n} OpenMP thread(s) on {n} core(s) (kit default), {default_workers()} data worker(s) (kit default)" in out

    out, cpu = train(data, tmp_path / "mine", clean_env(OMP_NUM_THREADS="1"), "--workers", "0")
    assert cpu == {"cores": n, "omp_threads": 1, "omp_threads_from": USER_ENV,
                   "data_workers": 0, "data_workers_from": "--workers"}
    assert "1 OpenMP thread(s)" in out and "0 data worker(s) (--workers)" in out


def test_processes_started_together_on_one_machine_share_the_kits_threads(monkeypatch):
    monkeypatch.delitem(sys.modules, "mxnet", raising=False)
    env = {}
    use_cores(env)
    hackathon.core.cores.share_cores(2, env)  # what `python -m hackathon.train.launch -n 2 --launcher local` does
    assert env["OMP_NUM_THREADS"] == str(max(1, usable_cores() // 2))
    assert use_cores(dict(env)) == KIT_DEFAULT  # each worker still reports the kit's default
    mine = {"OMP_NUM_THREADS": "2"}
    hackathon.core.cores.share_cores(2, mine)
    assert mine == {"OMP_NUM_THREADS": "2"}

"""`hack doctor` on this machine (set up by `make setup`: every check passes) and on the broken set-ups
its lines name: a numpy that breaks mxnet, torch 2 beside gluoncv, a module that cannot import,
labelme's window missing a system library."""
import os
import sys

from click.testing import CliRunner

from hackathon import doctor
from hackathon.cli import cli


def test_a_set_up_kit_passes_every_check_and_exits_0():
    run = CliRunner().invoke(cli, ["doctor"])
    lines = run.output.splitlines()
    assert run.exit_code == 0, run.output
    seen = {line.split()[1].rstrip(":") for line in lines}
    assert {"python", "numpy", "torch", "mxnet", "gluoncv", "pillow_heif", "gpus", "opencv", "labelme",
            "screen"} <= seen
    assert not [line for line in lines if line.lstrip().startswith("FAIL")]


def test_a_numpy_that_breaks_mxnet_and_torch_2_fail_with_their_fix(monkeypatch):
    installed = {"numpy": "1.26.4", "torch": "2.1.0"}
    monkeypatch.setattr(doctor, "_version", installed.get)
    status, _, detail = doctor.check_numpy()
    assert status == "FAIL" and "pip install numpy==1.23.5" in detail
    status, _, detail = doctor.check_torch()
    assert status == "FAIL" and "pip uninstall torch" in detail
    installed.update(numpy="1.23.5", torch="1.13.1")
    assert doctor.check_numpy()[0] == doctor.check_torch()[0] == "ok"


def test_a_module_that_cannot_import_is_a_finding_not_a_crash(tmp_path, monkeypatch):
    (tmp_path / "broken_dep.py").write_text("raise ImportError('libfoo.so.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    status, what, detail = doctor.check_import("broken_dep", "broken-dep", "pip install broken-dep")
    assert (status, what) == ("FAIL", "broken_dep") and "libfoo.so.1" in detail and "Fix: pip install broken-dep" in detail


def test_labelme_window_missing_a_system_library_names_the_apt_packages(tmp_path, monkeypatch):
    # An interpreter whose Qt cannot load libGL, as on a server without the desktop libraries.
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ImportError: libGL.so.1: cannot open shared object file' >&2\nexit 1\n")
    os.chmod(fake, 0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    status, _, detail = doctor.check_labelme_starts()
    assert status == "FAIL" and "libGL.so.1" in detail and "apt-get install libgl1" in detail


def test_the_cli_exits_1_when_a_check_fails(monkeypatch):
    monkeypatch.setattr(doctor, "_version", {"numpy": "1.26.4"}.get)
    run = CliRunner().invoke(cli, ["doctor"])
    assert run.exit_code == 1 and "numpy >= 1.24 breaks" in run.output

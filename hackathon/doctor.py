"""`hack doctor`: what is installed and what is wrong, each finding with its fix.

Each check returns (status, what, detail) with status "ok", "warn" (works, with a caveat) or
"FAIL" (a stage of the kit will not work until it is fixed).
"""
import importlib.metadata as md
import os
import shutil
import subprocess
import sys


def _version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_python():
    v = sys.version_info
    if (v.major, v.minor) == (3, 11):
        return "ok", "python", sys.version.split()[0]
    return "FAIL", "python", (f"{sys.version.split()[0]}: the kit needs 3.11 (numpy 1.23, which mxnet needs, has no "
                              "wheel past 3.11). Fix: python3.11 -m venv .venv && make setup")


def check_numpy():
    v = _version("numpy")
    if v is None:
        return "FAIL", "numpy", "not installed. Fix: make setup"
    major, minor = (int(x) for x in v.split(".")[:2])
    if (major, minor) >= (1, 24):
        return "FAIL", "numpy", f"{v}: numpy >= 1.24 breaks `import mxnet` (np.bool). Fix: pip install numpy==1.23.5"
    return "ok", "numpy", v


def check_torch():
    v = _version("torch")
    if v and int(v.split(".")[0]) >= 2:
        return "FAIL", "torch", f"{v} is installed beside gluoncv, which then fails to import. Fix: pip uninstall torch"
    return "ok", "torch", f"{v} (fine with gluoncv)" if v else "not installed (good: gluoncv does not need it)"


def check_import(module, dist, fix):
    try:
        __import__(module)
    except Exception as e:  # any import failure is the finding
        return "FAIL", module, f"cannot import ({type(e).__name__}: {e}). Fix: {fix}"
    return "ok", module, _version(dist) or "installed"


def check_gpus():
    try:
        import mxnet as mx

        n = mx.context.num_gpus()
    except Exception as e:
        return "warn", "gpus", f"cannot ask mxnet ({e})"
    build = next((d for d in ("mxnet-cu112", "mxnet-cu110", "mxnet-cu102", "mxnet-cu101") if _version(d)), None)
    if n:
        return "ok", "gpus", f"{n} GPU(s) seen by mxnet: hack train --gpus {','.join(map(str, range(n)))}"
    if shutil.which("nvidia-smi") and not build:
        return "warn", "gpus", ("an NVIDIA driver is here but this mxnet is the CPU build. Fix: pip uninstall -y mxnet "
                                "&& pip install mxnet-cu112==1.9.1 (README: GPUs)")
    return "ok", "gpus", "none (training runs on the CPU; --cpus N for several CPU contexts)"


def check_threads():
    """The OpenMP threads MXNet really runs with here (read from the loaded libgomp), and the data workers."""
    from hackathon.core.cores import cpu_settings

    cpu = cpu_settings()
    line = (f"{cpu['omp_threads']} OpenMP thread(s) on {cpu['cores']} usable core(s) ({cpu['omp_threads_from']}); "
            f"hack train: {cpu['data_workers']} data worker(s) ({cpu['data_workers_from']})")
    if isinstance(cpu["omp_threads"], int) and cpu["omp_threads"] < cpu["cores"]:
        return "warn", "threads", line + f". Fix: unset OMP_NUM_THREADS (or set it to {cpu['cores']}) to use every core"
    return "ok", "threads", line


def check_opencv_qt():
    from labeling.label import qt_conflict

    problem = qt_conflict()
    return ("FAIL", "opencv", problem) if problem else ("ok", "opencv", "headless (no Qt clash with labelme)")


def check_screen():
    if not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return "ok", "screen", os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform
    xvfb = shutil.which("Xvfb")
    return "warn", "screen", ("no DISPLAY: `hack label` needs a desktop session" +
                              ("; Xvfb is installed for tests" if xvfb else ". Fix: run it on your desktop, or apt-get install xvfb for tests"))


def check_labelme_starts():
    """labelme's window module imports and its Qt platform loads (offscreen, so no screen is needed)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
    code = ("import sys; from PyQt5 import QtWidgets; app = QtWidgets.QApplication(sys.argv); "
            "import labelme.app; print(__import__('labelme').__version__)")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        return "FAIL", "labelme", "starting its window timed out. Fix: pip install labelme==5.11.4"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        fix = ("apt-get install libgl1 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libdbus-1-3 libfontconfig1"
               if "lib" in last and ".so" in last else "pip install labelme==5.11.4 PyQt5")
        return "FAIL", "labelme", f"cannot start ({last}). Fix: {fix}"
    return "ok", "labelme", f"{r.stdout.strip()} (its window can start)"


def run_checks():
    checks = [check_python, check_numpy, check_torch,
              lambda: check_import("mxnet", "mxnet", "pip install mxnet==1.9.1 numpy==1.23.5"),
              lambda: check_import("gluoncv", "gluoncv", "pip install gluoncv==0.10.5.post0 (and no torch >= 2)"),
              lambda: check_import("pillow_heif", "pillow-heif", "pip install pillow-heif (HEIC photos from iPhones)"),
              check_gpus, check_threads, check_opencv_qt, check_labelme_starts, check_screen]
    results = []
    for check in checks:
        try:
            results.append(check())
        except Exception as e:  # a check that breaks is itself a finding, never a crash of the doctor
            results.append(("FAIL", getattr(check, "__name__", "check"), f"{type(e).__name__}: {e}"))
    return results

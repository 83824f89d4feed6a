"""MXNet's CPU threads and the data workers, chosen for the cores this process may use.

Imported by ``hackathon/__init__.py``, so it runs before any stage imports mxnet: mxnet 1.9.1 left
alone runs half the cores on x86 (it assumes hyper-threading), one OpenMP thread on a 2-core
laptop, and libgomp reads OMP_NUM_THREADS only once, when ``import mxnet`` loads it.
:func:`cpu_settings` says what a process got and where it came from.
"""
import os
import sys

# Names the value the kit chose, so a child process (the scorer's sandbox, a launcher's workers)
# that inherits OMP_NUM_THREADS still reports it as the kit's default and not as the user's.
_KIT_MARK = "HACKATHON_OMP_DEFAULT"
USER_ENV = "your environment"
KIT_DEFAULT = "kit default"


def usable_cores():
    """Cores this process may run on (its CPU affinity: a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(cores=None):
    """DataLoader processes for training: 2 from 2 cores on (on 2 cores 2/2 trained fastest, ahead of
    2 threads and 1 worker and of mxnet's 1/1: bench/RESULTS.md, "train: threads and data workers"),
    one per 4 cores from 8 (a guess beyond what was measured), 1 on a single core."""
    cores = usable_cores() if cores is None else cores
    return max(min(cores, 2), cores // 4)


def use_cores(environ=None):
    """Set OMP_NUM_THREADS to the usable cores unless the user set it (or MXNET_OMP_MAX_THREADS).
    Returns where this process's OpenMP setting comes from."""
    environ = os.environ if environ is None else environ
    omp = environ.get("OMP_NUM_THREADS")
    if omp is not None and omp == environ.get(_KIT_MARK):
        return KIT_DEFAULT  # inherited from a kit process
    if omp is not None or "MXNET_OMP_MAX_THREADS" in environ:
        return USER_ENV
    environ["OMP_NUM_THREADS"] = environ[_KIT_MARK] = str(usable_cores())
    if "mxnet" in sys.modules:  # libgomp has read its setting already; child processes still get ours
        return "mxnet's default (mxnet was imported before hackathon: import hackathon first)"
    return KIT_DEFAULT


_OMP_FROM = use_cores()


def share_cores(processes, environ=None):
    """Split the kit's threads among `processes` mxnet processes started on this machine (each
    with every core would oversubscribe them: OpenMP threads spin waiting for each other). A
    user's setting is left alone."""
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS") == environ.get(_KIT_MARK):
        environ["OMP_NUM_THREADS"] = environ[_KIT_MARK] = str(max(1, usable_cores() // max(1, processes)))


def omp_threads():
    """The OpenMP threads MXNet's operators run with in this process, read from the loaded OpenMP
    library (imports mxnet); None where it cannot be read (an mxnet built without OpenMP, macOS)."""
    import ctypes

    import mxnet  # noqa: F401  (loads libgomp, which reads OMP_NUM_THREADS then)

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if any(n in line for n in ("libgomp", "libiomp", "libomp"))})
        return int(ctypes.CDLL(libs[0]).omp_get_max_threads()) if libs else None
    except (OSError, IndexError, AttributeError):
        return None


def cpu_settings(workers=None):
    """What this process computes with, for config.yaml and the start line of `hack train`:
    usable cores, OpenMP threads and DataLoader workers, each with where it came from."""
    threads = omp_threads()
    return {"cores": usable_cores(),
            "omp_threads": threads if threads is not None else os.environ.get("OMP_NUM_THREADS"),
            "omp_threads_from": _OMP_FROM if threads is not None else f"{_OMP_FROM}; no OpenMP library seen",
            "data_workers": default_workers() if workers is None else workers,
            "data_workers_from": KIT_DEFAULT if workers is None else "--workers"}

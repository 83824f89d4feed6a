"""mxnet's own ``tools/launch.py``, made to run on Python 3.11: several machines, one `hack train`.

mxnet 1.9.1's launcher (dmlc_tracker) still calls ``Thread.isAlive``, which Python 3.9 removed: the
tracker dies right after starting the scheduler, and the workers wait forever. This module runs
the launcher unchanged with ``isAlive`` restored. With ``--launcher local`` (every process on this
machine, for trying the set-up or for tests) it also keeps the scheduler, servers and workers on
the loopback address instead of the machine's network address, and splits the kit's OpenMP
threads among the workers (hackathon.core.cores.share_cores).

Usage (the arguments are launch.py's)::

    python -m hackathon.train.launch -n 2 -s 1 --launcher ssh -H hosts \\
        hack train data --out run --kvstore dist_sync
    python -m hackathon.train.launch -n 2 -s 1 --launcher local hack train data --out run --kvstore dist_sync
"""
import os
import runpy
import sys
import threading

LOOPBACK = "127.0.0.1"


def launcher_path():
    import mxnet

    return os.path.join(os.path.dirname(mxnet.__file__), "tools", "launch.py")


def _num_workers(argv):
    for flag in ("-n", "--num-workers"):
        if flag in argv[:-1]:
            try:
                return int(argv[argv.index(flag) + 1])
            except ValueError:
                return 1
    return 1


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not hasattr(threading.Thread, "isAlive"):
        threading.Thread.isAlive = threading.Thread.is_alive
    if "local" in argv[argv.index("--launcher") + 1:argv.index("--launcher") + 2] if "--launcher" in argv else []:
        import dmlc_tracker.tracker as tracker

        tracker.get_host_ip = lambda host_ip=None: LOOPBACK
        os.environ["DMLC_NODE_HOST"] = LOOPBACK  # what servers and workers bind to and announce
        from hackathon.core.cores import share_cores

        share_cores(_num_workers(argv))  # the workers share this machine's cores
    path = launcher_path()
    sys.argv = [path] + argv
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main()

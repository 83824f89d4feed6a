"""A training run's folder: everything a team needs to trust, resume, compare and export a run.

Layout::

    RUN/config.yaml      the resolved config, the class list, the package versions, the devices
    RUN/results.csv      one line per epoch: losses, learning rate, validation mAP (empty on an epoch
                         not validated: --val-every), images/s (an epoch the time budget cut short is
                         a fraction: 8.25 is the first quarter of epoch 9)
    RUN/curves.png       the same as pictures
    RUN/last.params      weights after the last finished epoch; RUN/last.states: the optimizer's
    RUN/best.params      weights of the epoch with the best validation mAP
    RUN/state.json       where to resume: epochs done, best mAP and epoch, epochs without gain, the
                         budget seconds used; and what stopped the run (stopped_by, stopped)

Every file is written beside its final name and renamed when whole, and ``state.json`` last; an
epoch's last.params/last.states wait beside their names (``.last.params.epoch-N``) until state.json
says epoch N is done, and go into place then (or on the next read of state.json). A run killed at
any instant resumes from a consistent last finished epoch: weights, optimizer and state.json agree.
"""
import csv
import io
import json
import os
import platform
from pathlib import Path

import yaml

from hackathon.core.errors import KitError
from hackathon.core.fileutil import atomic_path, display, write_json_atomic, write_text_atomic

RESULT_FIELDS = ["epoch", "lr", "cls_loss", "box_loss", "val_map50", "images_per_s", "seconds"]


def versions():
    """The installed distributions' versions, as pip names them: what reinstalls this run's set
    (GluonCV 0.10.5.post0's own ``__version__`` says 0.11.0). A GPU build names itself too."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    from hackathon import __version__

    providers = packages_distributions()  # import name -> distributions, e.g. mxnet -> [mxnet-cu112]

    def installed(module):
        name = (providers.get(module) or [module])[0]
        try:
            return version(name) + ("" if name == module else f" ({name})")
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "mxnet": installed("mxnet"), "gluoncv": installed("gluoncv"),
            "numpy": installed("numpy"), "kit": __version__}


class RunDir:
    """Paths and atomic reads/writes of one run folder."""

    def __init__(self, path):
        self.path = Path(path)

    def __getattr__(self, name):
        files = {"config": "config.yaml", "results": "results.csv", "curves": "curves.png", "last": "last.params",
                 "last_states": "last.states", "best": "best.params", "state": "state.json"}
        if name in files:
            return self.path / files[name]
        raise AttributeError(name)

    @classmethod
    def create(cls, path):
        """A new run folder; refuses one that already holds a run (that is --resume's job)."""
        run = cls(path)
        if run.path.exists() and (run.config.exists() or run.state.exists()):
            raise KitError(f"{display(run.path)} already holds a training run. Fix: `hack train DATA --resume "
                           f"{run.path}` to continue it, or pick another --out.")
        if run.path.exists() and not run.path.is_dir():
            raise KitError(f"{display(run.path)} is a file. Fix: pick another --out.")
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path):
        """An existing run to resume or export; KitError when the folder holds none."""
        run = cls(path)
        if not run.config.is_file():
            raise KitError(f"{display(run.path)}: no config.yaml, so no training run is there. "
                           "Fix: give the --out folder of a `hack train`.")
        return run

    def write_config(self, config: dict):
        write_text_atomic(self.config, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    def read_config(self) -> dict:
        try:
            config = yaml.safe_load(self.config.read_text("utf-8"))
        except yaml.YAMLError as e:
            raise KitError(f"{display(self.config)}: not readable YAML ({e}). Fix: restore it, or train anew.") from None
        if not isinstance(config, dict) or "classes" not in config:
            raise KitError(f"{display(self.config)}: not a kit run config. Fix: restore it, or train anew.")
        return config

    def data_path(self) -> Path:
        """The run's pack folder. config.yaml keeps it as typed to `hack train`, so a relative path is
        tried from here and then from the folder the run sits in (`hack train data --out run`)."""
        typed = Path(self.read_config()["train"]["data"])
        for candidate in (typed, self.path.parent / typed):
            if candidate.is_dir():
                return candidate
        raise KitError(f"{display(self.config)}: its training data {typed} is not here nor beside the run. Fix: run "
                       "from the folder `hack train` ran in.")

    def read_state(self):
        """The resume point, or None before the first epoch finished."""
        if not self.state.is_file():
            return None
        state = json.loads(self.state.read_text("utf-8"))
        self._settle(state["epochs_done"])  # a run killed between its checkpoint and state.json
        return state

    def save_epoch(self, net, trainer, state: dict, results: list, improved: bool, whole: bool = True,
                   plot: bool = True):
        """Checkpoint after an epoch: weights, optimizer, results, curves (`plot`: drawn after a
        validation only, they cost ~0.4 s), and state.json last. After an epoch the time budget cut
        short (not `whole`) last.params stays at the last whole epoch, where a resume starts;
        best.params takes it when it validated better."""
        if whole:  # beside their names until state.json says this epoch is done: a kill in between
            epoch = state["epochs_done"]  # leaves last.* and state.json at the same epoch (read_state)
            save_params(net, self._pending(self.last, epoch))
            with atomic_path(self._pending(self.last_states, epoch)) as tmp:
                trainer.save_states(str(tmp))
        if improved:
            save_params(net, self.best)
        self.write_results(results, plot=plot)
        write_json_atomic(self.state, state)
        if whole:
            self._settle(epoch)

    def _pending(self, final, epoch):
        return final.with_name(f".{final.name}.epoch-{epoch}")

    def _settle(self, epoch):
        """The checkpoint of `epoch` (state.json's) into place; any other pending one is dropped."""
        for final in (self.last, self.last_states):
            for pending in final.parent.glob(f".{final.name}.epoch-*"):
                if pending.name == self._pending(final, epoch).name:
                    os.replace(pending, final)
                else:
                    pending.unlink()

    def read_results(self) -> list:
        if not self.results.is_file():
            return []
        with open(self.results, newline="", encoding="utf-8") as f:
            # an epoch not validated (--val-every) has an empty val_map50: None
            return [{k: float(v) if v != "" else None for k, v in row.items()} for row in csv.DictReader(f)]

    def write_results(self, results: list, plot: bool = True):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=RESULT_FIELDS, lineterminator="\n")
        w.writeheader()
        for row in results:
            w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in RESULT_FIELDS})
        write_text_atomic(self.results, buf.getvalue())
        if plot:
            plot_curves(results, self.curves)


def save_params(net, path):
    import mxnet as mx

    # BatchNorm's running statistics, written in place by a static_alloc graph, can still be in flight:
    # saved right after the last training step (no validation between) they missed its update.
    mx.nd.waitall()
    with atomic_path(path) as tmp:
        net.save_parameters(str(tmp))


def plot_curves(results, path):
    """Losses, validation mAP and learning rate per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(epochs, [r["cls_loss"] for r in results], "o-", label="class (cross-entropy)")
    axes[0].plot(epochs, [r["box_loss"] for r in results], "o-", label="box (smooth L1)")
    axes[0].set_title("training loss")
    axes[0].legend()
    validated = [r for r in results if r["val_map50"] is not None]  # --val-every: not every epoch
    axes[1].plot([r["epoch"] for r in validated], [r["val_map50"] for r in validated], "o-", color="tab:green")
    axes[1].set_title("validation mAP@0.5 (VOC07)")
    axes[1].set_ylim(0, max(0.05, max((r["val_map50"] for r in validated), default=0) * 1.15))
    axes[2].plot(epochs, [r["lr"] for r in results], "o-", color="tab:gray")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)

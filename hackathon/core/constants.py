"""Numbers more than one stage relies on, defined once."""

# ImageNet's RGB statistics (on pixels / 255): the pretrained backbones' input normalization,
# used in training, written into every export and GluonCV's default for an export without it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The lowest score a predictions file keeps: mAP needs the low-score tail (GluonCV's and COCO's
# evaluations keep it too); drawing uses a higher threshold.
KEEP_SCORE = 0.01

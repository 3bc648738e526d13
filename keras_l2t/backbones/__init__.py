"""Backbones: classifiers that expose their feature maps (`Backbone`)."""

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.backbones.resnet import resnet18, resnet32, resnet34
from keras_l2t.backbones.vgg import vgg9_bn
from keras_l2t.errors import InputError

BACKBONES = {
    "resnet18": resnet18,
    "resnet32": resnet32,
    "resnet34": resnet34,
    "vgg9_bn": vgg9_bn,
}


def get_backbone(arch, **kwargs):
    """Builds a named backbone (`BACKBONES`), passing `num_classes`, `width`, `input_shape`."""
    if arch not in BACKBONES:
        raise InputError(f"Unknown backbone {arch!r}; choose one of {sorted(BACKBONES)}.")
    return BACKBONES[arch](**kwargs)

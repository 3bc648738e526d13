"""The authors' Tiny-ImageNet ResNet-32, ported into `backbones.resnet32`: the 32×32 setting's source.

The official code transfers every 32×32 experiment (CIFAR-100, STL-10) from a
ResNet-32 (`CResNet(n=4)`) trained on Tiny-ImageNet-200 (top-1 49.15 %). Its
state dict ships with this package (`keras_l2t/weights/`, MIT licence of the
authors' repository beside it), as NumPy arrays under PyTorch's key names and
layouts; `port_resnet32_state_dict` maps them onto our `resnet32`, whose
explicit symmetric padding and bias-carrying stem make it the same function
(docs/method.md §1.2). Inputs are ImageNet mean/std normalised RGB, as every
keras_l2t pipeline yields.
"""

import os

import numpy as np

from keras_l2t.backbones.resnet import resnet32

TINYIMAGENET_RESNET32 = "tinyimagenet_resnet32"
TINYIMAGENET_RESNET32_FILE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "weights", "tinyimagenet200_resnet32_state_dict.npz"
)
TINYIMAGENET_CLASSES = 200

# Official module prefix of each of our 15 blocks, in network order (stage s, block b → 5s + b).
_OFFICIAL_BLOCKS = (
    ["block1"] + [f"blocks2.{i}" for i in range(4)]
    + ["block3"] + [f"blocks4.{i}" for i in range(4)]
    + ["block5"] + [f"blocks6.{i}" for i in range(4)]
)


def _conv_kernel(oihw):
    """PyTorch OIHW conv weights as a Keras HWIO kernel."""
    return np.transpose(oihw, (2, 3, 1, 0))


def _batch_norm(state_dict, prefix):
    """[γ, β, moving mean, moving variance] of an official BN (its running_var is used as is)."""
    return [state_dict[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def _official_weights_by_layer(state_dict):
    """Our resnet32 layer name → its weights, from the official state dict."""
    weights = {
        "conv1": [_conv_kernel(state_dict["conv1.weight"]), state_dict["conv1.bias"]],
        "bn1": _batch_norm(state_dict, "bn1"),
        "fc": [state_dict["fc.weight"].T, state_dict["fc.bias"]],
    }
    for index, official in enumerate(_OFFICIAL_BLOCKS):
        ours = f"stage{index // 5 + 1}_{index % 5}"
        for i in (1, 2):
            weights[f"{ours}_conv{i}"] = [_conv_kernel(state_dict[f"{official}.conv{i}.weight"])]
            weights[f"{ours}_bn{i}"] = _batch_norm(state_dict, f"{official}.bn{i}")
        if f"{official}.downsample.0.weight" in state_dict:
            weights[f"{ours}_downsample_conv"] = [_conv_kernel(state_dict[f"{official}.downsample.0.weight"])]
            weights[f"{ours}_downsample_bn"] = _batch_norm(state_dict, f"{official}.downsample.1")
    return weights


def port_resnet32_state_dict(state_dict, image_size=32, name=TINYIMAGENET_RESNET32):
    """A `resnet32` Backbone (200 classes) holding the official ResNet-32 weights.

    Args:
        state_dict: Mapping from the official PyTorch key names to NumPy arrays
            (e.g. an `np.load`ed `.npz` of `model.state_dict()`).
        image_size: Input side (the network is fully convolutional; 32 officially).
        name: The Backbone's name.

    Raises:
        KeyError: the state dict lacks a key of the official model.
        ValueError: an array has the wrong shape, or a layer would keep its random weights.
    """
    backbone = resnet32(
        num_classes=int(np.shape(state_dict["fc.bias"])[0]), input_shape=(image_size, image_size, 3), name=name
    )
    network_layers = {layer.name: layer for layer in backbone.network.layers}
    ported = _official_weights_by_layer(state_dict)
    unported = sorted(n for n, layer in network_layers.items() if layer.weights and n not in ported)
    if unported:
        raise ValueError(f"The official state dict leaves these resnet32 layers without weights: {unported}.")
    for layer_name, arrays in ported.items():
        network_layers[layer_name].set_weights([np.asarray(a, np.float32) for a in arrays])
    return backbone


def tinyimagenet_resnet32(image_size=32):
    """The shipped official Tiny-ImageNet ResNet-32 as a `Backbone` (taps: 15 block outputs; pairs use 4, 9, 14)."""
    with np.load(TINYIMAGENET_RESNET32_FILE) as state_dict:
        return port_resnet32_state_dict(dict(state_dict), image_size=image_size)


NAMES = (TINYIMAGENET_RESNET32,)


def handles(spec):
    """Whether `spec` names the authors' shipped source."""
    return spec in NAMES


def load(spec, image_size):
    """The authors' shipped source `spec` (one of NAMES) at `image_size`."""
    del spec  # the only one
    return tinyimagenet_resnet32(image_size)

"""The PyTorch initialisations the official L2T-ww code relies on, as Keras initialisers."""

import math

import keras


def he_fan_out_normal():
    """N(0, sqrt(2 / (k·k·C_out))): torchvision ResNet / VGG conv init."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def torch_default_kernel():
    """U(±1/sqrt(fan_in)): PyTorch's default Linear / Conv2d weight init."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_default_bias(fan_in):
    """U(±1/sqrt(fan_in)): PyTorch's default Linear / Conv2d bias init."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)

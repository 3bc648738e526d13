"""ResNets of the official L2T-ww code: torchvision ResNet-18/34 and CIFAR ResNet-32.

Padding is explicit and symmetric (`ZeroPadding2D` + 'valid' for every strided
conv/pool) so that ported PyTorch weights give the same outputs; Keras 'same'
padding with stride 2 would pad bottom/right only. Convolutions have no bias
and use He fan-out normal init; BatchNorm is keras_l2t's second-order-exact
layer with PyTorch momentum/epsilon (docs/method.md §1, §4.7).
"""

from keras import layers

import keras

from keras_l2t import initializers
from keras_l2t.backbones.backbone import Backbone
from keras_l2t.layers.batch_normalization import BatchNormalization
from keras_l2t.layers.subsample import Subsample2D


def scaled_width(channels, width):
    """Channels of a layer in a network narrowed (or widened) by `width`."""
    return max(1, int(round(channels * width)))


def _conv(filters, kernel_size, strides, name, use_bias=False):
    """A bias-free conv, He fan-out init; strided ones expect explicit padding."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        use_bias=use_bias,
        kernel_initializer=initializers.he_fan_out_normal(),
        name=name,
    )


def _strided_conv(x, filters, kernel_size, strides, name):
    """A conv with PyTorch's symmetric padding `kernel_size // 2`."""
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
    return _conv(filters, kernel_size, strides, name)(x)


def basic_block(x, filters, strides, name):
    """torchvision BasicBlock: 3×3 conv-BN-ReLU, 3×3 conv-BN, shortcut, add, ReLU.

    The projection shortcut's strided 1×1 conv is written as `Subsample2D` +
    1×1 conv (same function and weights; see `Subsample2D` for why).
    """
    shortcut = x
    y = _strided_conv(x, filters, 3, strides, f"{name}_conv1")
    y = BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    y = BatchNormalization(name=f"{name}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        if strides > 1:
            shortcut = Subsample2D(strides, name=f"{name}_downsample_subsample")(shortcut)
        shortcut = _conv(filters, 1, 1, f"{name}_downsample_conv")(shortcut)
        shortcut = BatchNormalization(name=f"{name}_downsample_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _classifier(x, num_classes, fan_in):
    """torchvision's fc: PyTorch default Linear init, U(±1/sqrt(fan_in))."""
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    return layers.Dense(
        num_classes,
        kernel_initializer=initializers.torch_default_kernel(),
        bias_initializer=initializers.torch_default_bias(fan_in),
        name="fc",
    )(x)


def _imagenet_resnet(name, blocks_per_stage, num_classes, width, input_shape):
    inputs = keras.Input(shape=input_shape, name="images")
    x = _strided_conv(inputs, scaled_width(64, width), 7, 2, "conv1")
    x = BatchNormalization(name="bn1")(x)
    stem = layers.ReLU(name="relu1")(x)
    taps = [stem]
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(stem)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (blocks, filters) in enumerate(zip(blocks_per_stage, (64, 128, 256, 512))):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, scaled_width(filters, width), strides, f"layer{stage + 1}_{block}")
        taps.append(x)
    logits = _classifier(x, num_classes, x.shape[-1])
    network = keras.Model(inputs, [logits] + taps, name=f"{name}_network")
    # The official pairs use the four stage outputs, never the stem (docs/method.md §1.1).
    return Backbone(network, transfer_taps=(1, 2, 3, 4), name=name)


def resnet18(num_classes=1000, width=1.0, input_shape=(224, 224, 3), name="resnet18"):
    """torchvision ResNet-18 (v1). Taps: stem (before the max-pool), layer1..layer4.

    At 224×224 and width 1 the taps are 112²×64, 56²×64, 28²×128, 14²×256, 7²×512.
    `AvgPool2d(7)` is written as global average pooling (equal at 224; any
    input size works).
    """
    return _imagenet_resnet(name, (2, 2, 2, 2), num_classes, width, input_shape)


def resnet34(num_classes=1000, width=1.0, input_shape=(224, 224, 3), name="resnet34"):
    """torchvision ResNet-34 (v1): the 224 setting's source. Taps as `resnet18`."""
    return _imagenet_resnet(name, (3, 4, 6, 3), num_classes, width, input_shape)


def resnet32(num_classes=200, width=1.0, input_shape=(32, 32, 3), name="resnet32"):
    """CIFAR ResNet-32 of the official code (`CResNet(n=4)`): the 32 setting's source.

    Stem conv3×3 (with bias) → BN → ReLU, then 3 stages of 5 BasicBlocks (16,
    32, 64 channels; projection shortcuts at the stage changes), global average
    pooling and fc. Taps: all 15 block outputs, 32²×16 (0–4), 16²×32 (5–9),
    8²×64 (10–14) at 32×32 input.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(
        scaled_width(16, width),
        3,
        padding="same",
        kernel_initializer=initializers.he_fan_out_normal(),
        bias_initializer=initializers.torch_default_bias(3 * 3 * input_shape[-1]),
        name="conv1",
    )(inputs)
    x = BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    taps = []
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(5):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, scaled_width(filters, width), strides, f"stage{stage + 1}_{block}")
            taps.append(x)
    logits = _classifier(x, num_classes, x.shape[-1])
    network = keras.Model(inputs, [logits] + taps, name=f"{name}_network")
    # The official pairs use the last block of each stage (docs/method.md §1.2).
    return Backbone(network, transfer_taps=(4, 9, 14), name=name)

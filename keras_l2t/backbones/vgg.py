"""VGG-9-BN of the official L2T-ww code: the 32 setting's target.

`vgg9_bn` = `VGG_small(make_layers(cfg_small['B'], batch_norm=True))`: 8 × (3×3
conv with bias → BN → ReLU) and 5 2×2 max-pools, then global average pooling
and one Linear layer: 8 convs + 1 FC = 9 layers (docs/method.md §1.2; the
authors' cfg B lists 8 convs, and the official 9,277,284 parameters need 8). Taps
are the activations right before each max-pool.
"""

import keras
from keras import layers

from keras_l2t import initializers
from keras_l2t.backbones.backbone import Backbone
from keras_l2t.backbones.resnet import scaled_width
from keras_l2t.layers.batch_normalization import BatchNormalization

VGG9_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg9_bn(num_classes=100, width=1.0, input_shape=(32, 32, 3), name="vgg9_bn"):
    """VGG-9 with BatchNorm. Taps (32×32 input, width 1): 32²×64, 16²×128, 8²×256, 4²×512, 2²×512.

    Init as the official code: conv kaiming-normal (fan_out, relu) with bias 0,
    BN 1/0, Linear N(0, 0.01) with bias 0.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    taps = []
    conv_index = 0
    for entry in VGG9_CONFIG:
        if entry == "M":
            taps.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{len(taps)}")(x)
            continue
        conv_index += 1
        x = layers.Conv2D(
            scaled_width(entry, width),
            3,
            padding="same",
            kernel_initializer=initializers.he_fan_out_normal(),
            bias_initializer="zeros",
            name=f"conv{conv_index}",
        )(x)
        x = BatchNormalization(name=f"bn{conv_index}")(x)
        x = layers.ReLU(name=f"relu{conv_index}")(x)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros",
        name="classifier",
    )(x)
    network = keras.Model(inputs, [logits] + taps, name=f"{name}_network")
    return Backbone(network, name=name)

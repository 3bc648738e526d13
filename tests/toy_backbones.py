"""Tiny backbones (two taps) for fast, float64-capable tests of the transfer machinery."""

import keras

import keras_l2t
from keras_l2t.layers import BatchNormalization


def tiny_backbone(name, channels=(4, 5), num_classes=3, image_size=8, seed=0):
    """conv-BN-ReLU (tap 0) → max-pool → conv-BN-ReLU (tap 1) → GAP → dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(channels[0], 3, padding="same", name="conv1")(inputs)
    x = BatchNormalization(name="bn1")(x)
    tap0 = keras.layers.ReLU(name="tap0")(x)
    x = keras.layers.MaxPooling2D(name="pool")(tap0)
    x = keras.layers.Conv2D(channels[1], 3, padding="same", name="conv2")(x)
    x = BatchNormalization(name="bn2")(x)
    tap1 = keras.layers.ReLU(name="tap1")(x)
    outputs = keras.layers.Dense(num_classes, name="fc")(keras.layers.GlobalAveragePooling2D()(tap1))
    return keras_l2t.Backbone.from_keras_model(keras.Model(inputs, outputs, name=name), ["tap0", "tap1"])

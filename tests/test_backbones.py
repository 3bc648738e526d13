"""Backbones: tap shapes of method.md §1, official parameter counts, symmetric padding, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import backbones

RESNET_224_TAPS = [(112, 112, 64), (56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]


@pytest.mark.parametrize(
    "arch, num_classes, input_shape, taps, trainable_params",
    [
        # Parameter counts of torchvision / the official code (method.md §1).
        ("resnet18", 1000, (224, 224, 3), RESNET_224_TAPS, 11_689_512),
        ("resnet34", 1000, (224, 224, 3), RESNET_224_TAPS, 21_797_672),
        ("resnet32", 200, (32, 32, 3), [(32, 32, 16)] * 5 + [(16, 16, 32)] * 5 + [(8, 8, 64)] * 5, 479_272),
        ("vgg9_bn", 100, (32, 32, 3), [(32, 32, 64), (16, 16, 128), (8, 8, 256), (4, 4, 512), (2, 2, 512)], 9_277_284),
    ],
)
def test_taps_and_parameter_counts(arch, num_classes, input_shape, taps, trainable_params):
    model = backbones.get_backbone(arch, num_classes=num_classes, input_shape=input_shape)
    logits, features = model(np.zeros((1,) + input_shape, "float32"), return_features=True)
    assert tuple(logits.shape) == (1, num_classes)
    assert [tuple(f.shape[1:]) for f in features] == taps
    assert list(model.feature_shapes) == taps
    assert model.feature_channels == tuple(t[-1] for t in taps)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == trainable_params


def test_width_multiplier_narrows_every_tap():
    model = backbones.resnet18(num_classes=10, width=0.25, input_shape=(64, 64, 3))
    assert model.feature_channels == (16, 16, 32, 64, 128)
    assert [s[:2] for s in model.feature_shapes] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]


def test_strided_convs_pad_symmetrically_like_pytorch():
    model = backbones.resnet18(num_classes=10, width=0.125, input_shape=(32, 32, 3))
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    conv1 = model.network.get_layer("conv1")
    stem_conv = keras.Model(model.network.input, conv1.output)(x)
    reference = tf.nn.conv2d(x, conv1.kernel, strides=2, padding=[[0, 0], [3, 3], [3, 3], [0, 0]])
    np.testing.assert_allclose(stem_conv, reference, atol=1e-5)


def test_initialisers_follow_the_official_code():
    model = backbones.vgg9_bn(num_classes=10, input_shape=(32, 32, 3))
    kernel = model.network.get_layer("conv7").kernel.numpy()
    fan_out = 3 * 3 * kernel.shape[-1]
    assert abs(kernel.std() - np.sqrt(2.0 / fan_out)) < 0.05 * np.sqrt(2.0 / fan_out)
    assert np.all(model.network.get_layer("conv7").bias.numpy() == 0)
    assert abs(model.network.get_layer("classifier").kernel.numpy().std() - 0.01) < 0.002
    bn = model.network.get_layer("bn1")
    assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "arch, input_shape",
    [("resnet18", (64, 64, 3)), ("resnet32", (32, 32, 3)), ("vgg9_bn", (32, 32, 3))],
)
def test_keras_round_trip_gives_identical_outputs(tmp_path, arch, input_shape):
    model = backbones.get_backbone(arch, num_classes=7, width=0.25, input_shape=input_shape)
    model.compile(optimizer=keras_l2t.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).normal(size=(3,) + input_shape).astype("float32")
    # One training step moves the weights, BN statistics and optimizer slots.
    model.fit(x, np.arange(3) % 7, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, keras_l2t.Backbone)
    logits, features = model(x, return_features=True)
    restored_logits, restored_features = restored(x, return_features=True)
    np.testing.assert_array_equal(logits, restored_logits)
    for a, b in zip(features, restored_features):
        np.testing.assert_array_equal(a, b)
    assert isinstance(restored.optimizer, keras_l2t.optimizers.SGD)
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(a, b)


def test_any_keras_model_becomes_a_backbone_by_naming_taps(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b")(x)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    backbone = keras_l2t.Backbone.from_keras_model(keras.Model(inputs, outputs), ["a", "b"])
    assert backbone.feature_shapes == ((16, 16, 4), (8, 8, 8))
    path = os.path.join(tmp_path, "m.keras")
    backbone.save(path)
    x = np.ones((1, 16, 16, 3), "float32")
    np.testing.assert_array_equal(backbone(x), keras.saving.load_model(path)(x))
    with pytest.raises(ValueError, match="no layer"):
        keras_l2t.Backbone.from_keras_model(keras.Model(inputs, outputs), ["nope"])

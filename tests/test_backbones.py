"""Backbones: tap shapes of docs/method.md §1, official parameter counts, symmetric padding, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import backbones
from keras_l2t.errors import InputError

RESNET_224_TAPS = [(112, 112, 64), (56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]


@pytest.mark.parametrize(
    "arch, num_classes, input_shape, taps, trainable_params",
    [
        # Parameter counts of torchvision / the official code (docs/method.md §1).
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
    with pytest.raises(InputError, match="no layer"):
        keras_l2t.Backbone.from_keras_model(keras.Model(inputs, outputs), ["nope"])


def _small_classifier_layers(head_activation=None, final_layers=()):
    """conv "a" → GAP → Dense "fc" (3 classes, optional activation) → optional final layers."""
    return [
        keras.layers.Conv2D(4, 3, padding="same", name="a"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation=head_activation, name="fc"),
        *final_layers,
    ]


def _images(batch=2, size=8):
    return np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")


def test_sequential_model_with_input_becomes_a_backbone():
    model = keras.Sequential([keras.Input((8, 8, 3))] + _small_classifier_layers(), name="seq")
    backbone = keras_l2t.Backbone.from_keras_model(model, ["a"])
    assert backbone.name == "seq" and backbone.feature_shapes == ((8, 8, 4),) and backbone.num_classes == 3
    x = _images()
    logits, (tap,) = backbone(x, return_features=True)
    np.testing.assert_array_equal(logits, model(x))
    np.testing.assert_array_equal(tap, model.get_layer("a")(x))


def test_sequential_model_without_input_needs_an_input_shape():
    model = keras.Sequential(_small_classifier_layers())
    with pytest.raises(InputError, match=r"no input shape.*input_shape=\(H, W, C\)"):
        keras_l2t.Backbone.from_keras_model(model, ["a"])
    backbone = keras_l2t.Backbone.from_keras_model(model, ["a"], input_shape=(8, 8, 3))
    assert backbone.image_shape == (8, 8, 3) and backbone.feature_shapes == ((8, 8, 4),)
    np.testing.assert_array_equal(backbone(_images()), model(_images()))


@pytest.mark.parametrize(
    "head_activation, final_layers, probabilities",
    [
        ("softmax", (), keras.ops.softmax),  # the keras.applications default
        (None, ("Softmax",), keras.ops.softmax),
        (None, ("softmax",), keras.ops.softmax),
        ("sigmoid", (), keras.ops.sigmoid),
        (None, ("sigmoid",), keras.ops.sigmoid),
    ],
    ids=["dense_softmax", "softmax_layer", "softmax_activation_layer", "dense_sigmoid", "sigmoid_activation_layer"],
)
@pytest.mark.parametrize("sequential", [False, True], ids=["functional", "sequential"])
def test_probability_head_is_stripped_to_logits(caplog, head_activation, final_layers, probabilities, sequential):
    final_layers = [
        keras.layers.Softmax(name="probs") if kind == "Softmax" else keras.layers.Activation(kind, name="probs")
        for kind in final_layers
    ]
    layers = [keras.Input((8, 8, 3))] + _small_classifier_layers(head_activation, final_layers)
    if sequential:
        model = keras.Sequential(layers)
    else:
        x = layers[0]
        for layer in layers[1:]:
            x = layer(x)
        model = keras.Model(layers[0], x)
    with caplog.at_level("WARNING"):
        backbone = keras_l2t.Backbone.from_keras_model(model, ["a"])
    assert len(caplog.records) == 1 and "logits" in caplog.records[0].getMessage()
    x = _images(batch=4)
    logits = backbone(x)
    # The logits are those before the head's activation (not probabilities) ...
    pre_activation = keras.Model(model.inputs[0], model.get_layer("gap").output)(x) @ model.get_layer("fc").kernel
    np.testing.assert_allclose(logits, pre_activation + model.get_layer("fc").bias, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.sum(logits, axis=-1), 1.0)
    # ... so the model's own outputs are their softmax / sigmoid, and the user's model is unchanged.
    np.testing.assert_allclose(probabilities(logits), model(x), rtol=1e-5, atol=1e-6)
    assert model.get_layer("fc").activation.__name__ == (head_activation or "linear")


def test_logits_model_is_wrapped_untouched(caplog):
    model = keras.Sequential([keras.Input((8, 8, 3))] + _small_classifier_layers())
    with caplog.at_level("WARNING"):
        backbone = keras_l2t.Backbone.from_keras_model(model, ["a"])
    assert not caplog.records
    assert backbone.network.get_layer("fc") is model.get_layer("fc")  # shared, not copied
    np.testing.assert_array_equal(backbone(_images()), model(_images()))


def test_multi_output_model_is_refused():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="a")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, [keras.layers.Dense(3)(pooled), keras.layers.Dense(2)(pooled)])
    with pytest.raises(InputError, match="one input and one output"):
        keras_l2t.Backbone.from_keras_model(model, ["a"])

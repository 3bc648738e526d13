"""Every keras-hub vision family as a source (and as a target), offline: tiny random presets saved with keras-hub.

Each family's backbone is built small (`tests/hub_families.py`), written with
keras-hub's own `save_to_preset`, and loaded back through the path a user's
`--source=DIR` takes. What is checked: which maps are tapped, their shapes and
numbering, that transformer taps are the blocks' patch tokens, that sources
stay frozen, the preset's input scaling and size, and one-line errors.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import export, sources
from keras_l2t.backbones.hub import default_blocks, hub_target
from keras_l2t.errors import InputError
from keras_l2t.optimizers import SGD
from keras_l2t.sources import SourceStack
from tests import hub_families
from tests.finite_differences import assert_meta_gradient_matches

keras_hub = pytest.importorskip("keras_hub")


def _images(size=32, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def _pixels(images):
    """What a preset without an image converter gets: keras_l2t's normalised images as raw pixels (0–255)."""
    return (images * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406])) * 255.0


def _preset(tmp_path, family, converter=None):
    backbone = hub_families.FAMILIES[family]()
    directory = str(tmp_path / family)
    backbone.save_to_preset(directory)
    if converter is not None:
        converter.save_to_preset(directory)
    return backbone, directory


@pytest.mark.parametrize("family", sorted(hub_families.FAMILIES))
def test_every_family_is_a_source_tapped_at_its_stages_or_blocks(tmp_path, family):
    _, preset = _preset(tmp_path, family)
    source = sources.load_source(preset, 32)
    assert not source.trainable and not source.trainable_weights
    assert not source.has_classifier  # a backbone preset has no head
    assert [tuple(s) for s in source.feature_shapes] == hub_families.TAP_SHAPES[family]
    taps = len(hub_families.TAP_SHAPES[family])
    assert source.transfer_taps == hub_families.TRANSFER_TAPS.get(family, tuple(range(taps)))
    _, features = source(_images(), return_features=True)
    assert [tuple(f.shape[1:]) for f in features] == hub_families.TAP_SHAPES[family]
    assert all(np.all(np.isfinite(f)) for f in features)


def test_transformer_taps_are_the_blocks_patch_tokens(tmp_path):
    # ViT runs its blocks inside one encoder layer: the taps recompute them; the last block's tokens,
    # through the encoder's final norm, must be the backbone's own output without the class token.
    backbone, preset = _preset(tmp_path, "vit")
    source = sources.load_source(preset, 32)
    assert keras_l2t.callbacks.tap_layer_names(source) == ["block1", "block2", "block3", "block4"]
    images = _images()
    _, features = source(images, return_features=True)
    encoder = backbone.get_layer("vit_encoder")
    expected = np.asarray(backbone(_pixels(images)))[:, 1:].reshape(2, 8, 8, 16)
    np.testing.assert_allclose(np.asarray(encoder.layer_norm(features[-1])), expected, atol=1e-5)


def test_dinov2_taps_drop_the_class_and_register_tokens(tmp_path):
    backbone, preset = _preset(tmp_path, "dinov2")
    source = sources.load_source(preset, 28, blocks=(2, 5))
    assert keras_l2t.callbacks.tap_layer_names(source) == ["block2", "block5"]
    images = _images(28)
    _, features = source(images, return_features=True)
    tokens = keras.Model(backbone.inputs, backbone.pyramid_outputs["stage5"])(_pixels(images))
    expected = np.asarray(tokens)[:, 5:].reshape(2, 2, 2, 16)
    np.testing.assert_allclose(features[1], expected, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_a_source_without_a_head_serves_attention_transfer(tmp_path):
    _, preset = _preset(tmp_path, "dinov3")
    source = sources.load_source(preset, 32)
    target = keras_l2t.backbones.get_backbone("vgg9_bn", num_classes=3, width=0.125, input_shape=(32, 32, 3))
    model = keras_l2t.models.HandCraftedTransfer(source, target, method="at")
    model.compile(optimizer=SGD(0.05, momentum=0.9))
    logs = model.fit(_images(n=4), np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(logs["at"][-1]) and logs["at"][-1] > 0


def test_default_blocks_are_evenly_spaced_and_end_with_the_last():
    assert default_blocks(12) == (3, 6, 9, 12)
    assert default_blocks(24) == (6, 12, 18, 24)
    assert default_blocks(2) == (1, 2)


def test_a_transformer_source_gets_its_own_size_and_input_scaling(tmp_path):
    # The preset's converter: pixels·(1/127.5) − 1 at 56×56; DINOv2 can be rebuilt at that size.
    converter = keras_hub.layers.DINOV2ImageConverter(image_size=(56, 56), scale=1 / 127.5, offset=-1.0)
    backbone, preset = _preset(tmp_path, "dinov2", converter)
    source = sources.load_source(preset, 32)
    assert isinstance(source, SourceStack) and source.image_shape[:2] == (32, 32)
    assert source.feature_shapes[0][:2] == (4, 4)  # 56 / 14
    images = _images(32)
    _, features = source(images, return_features=True)
    pixels = _pixels(images)
    at_56 = keras_hub.models.Backbone.from_preset(preset, image_shape=(56, 56, 3))
    expected_tokens = keras.Model(at_56.inputs, at_56.pyramid_outputs["stage5"])(
        tf.image.resize(pixels / 127.5 - 1.0, (56, 56)))
    expected = np.asarray(expected_tokens)[:, 5:].reshape(2, 4, 4, 16)
    np.testing.assert_allclose(features[-1], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_a_classifier_preset_gives_a_source_with_its_logits(tmp_path):
    backbone = hub_families.vit(num_layers=2)
    classifier = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=5, activation="softmax")
    directory = str(tmp_path / "vit_classifier")
    classifier.save_to_preset(directory)
    source = sources.load_source(directory, 32)
    assert source.has_classifier and source.num_classes == 5
    images = _images()
    logits = np.asarray(source(images))
    np.testing.assert_allclose(keras.ops.softmax(logits), classifier(_pixels(images)), atol=1e-5)  # logits, not probabilities


def test_a_bad_block_choice_and_an_unsupported_network_are_one_line_errors(tmp_path):
    _, preset = _preset(tmp_path, "vit")
    with pytest.raises(InputError, match=r"Blocks \[7\] of .*: it has blocks 1\.\.4") as error:
        sources.load_source(preset, 32, blocks=(7,))
    assert "\n" not in str(error.value)
    text = keras_hub.models.BertBackbone(vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=4,
                                         intermediate_dim=8, max_sequence_length=4)
    directory = str(tmp_path / "bert")
    text.save_to_preset(directory)
    with pytest.raises(InputError, match="is not a keras-hub image backbone with feature maps to tap") as error:
        sources.load_source(directory, 32)
    assert "\n" not in str(error.value)


def test_the_meta_gradient_with_a_transformer_source_equals_finite_differences(float64):
    keras.utils.set_random_seed(0)  # the same networks whatever ran before (λ's ReLU6 has kinks to stay off)
    converter = keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0)
    source = keras_l2t.sources.hub.backbone_source(hub_families.vit(num_layers=2), image_size=32, converter=converter)
    target = keras_l2t.backbones.get_backbone("vgg9_bn", num_classes=3, width=0.125, input_shape=(32, 32, 3))
    model = keras_l2t.L2TWW(source, target, pairs="0-1,1-3")
    model.compile(optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3))
    rng = np.random.default_rng(3)
    for variable in model.meta_variables:  # off the symmetric start
        variable.assign(variable.numpy() + 0.3 * rng.normal(size=variable.shape))
    x, y = tf.constant(_images(n=4).astype("float64")), tf.constant([0, 1, 2, 0])
    assert all(float(np.abs(g).max()) > 1e-9 for g in model.meta_gradients(x, y))  # a gradient to check
    assert_meta_gradient_matches(model, x, y, rng, atol=1e-10)  # atol: the differences' round-off


def test_a_keras_hub_target_trains_with_exact_normalisation_and_exports_for_plain_keras(tmp_path):
    target = hub_target(hub_families.mobilenet(), num_classes=3, name="mobile_student")
    assert target.feature_shapes[-1] == (1, 1, 32)
    source = keras_l2t.backbones.get_backbone("resnet32", num_classes=5, width=0.25, input_shape=(32, 32, 3))
    model = keras_l2t.L2TWW(source, target, pairs="4-1,9-2")
    normalizations = [layer for layer in target._flatten_layers() if "Normalization" in type(layer).__name__]
    assert normalizations and all(type(layer).__module__.startswith("keras_l2t") for layer in normalizations)
    model.compile(optimizer=SGD(0.05, momentum=0.9))
    images, labels = _images(n=4), np.array([0, 1, 2, 0])
    before = [v.numpy().copy() for v in target.trainable_variables]
    logs = model.fit(images, labels, epochs=2, batch_size=4, verbose=0).history
    assert np.isfinite(logs["meta_loss"][-1])
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, target.trainable_variables))
    path = str(tmp_path / export.INFERENCE_FILE)
    export.save_inference_model(target, path, outputs="logits")
    np.save(tmp_path / "images.npy", images)
    expected = np.asarray(target(images, training=False))
    np.save(tmp_path / "expected.npy", expected)
    code = (
        "import sys, numpy as np, keras, keras_hub\n"
        f"model = keras.saving.load_model({path!r})\n"
        "images = np.load('images.npy')\n"
        "pixels = (images * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406])) * 255.0\n"
        "np.testing.assert_allclose(model.predict(pixels, verbose=0), np.load('expected.npy'), atol=1e-4)\n"
        "assert not [m for m in sys.modules if m.startswith('keras_l2t')], 'keras_l2t was imported'\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_keras_hub_target_from_a_preset_config_has_fresh_weights(tmp_path):
    backbone, preset = _preset(tmp_path, "cspnet")
    target = hub_target(preset, num_classes=4)
    assert target.num_classes == 4
    assert [tuple(s) for s in target.feature_shapes] == hub_families.TAP_SHAPES["cspnet"]
    trained = {w.path.split("/", 1)[-1]: w.numpy() for w in backbone.weights}
    fresh = [w for w in target.weights if w.path.split("/", 1)[-1] in trained and "kernel" in w.path]
    assert fresh and not all(np.array_equal(trained[w.path.split("/", 1)[-1]], w.numpy()) for w in fresh)

"""keras-hub sources, offline: a local preset in timm's format loads as the same network as our resnet34.

The paper's 224 source is torchvision's ImageNet ResNet-34 (timm's
`resnet34.tv_in1k`). Here a directory in that checkpoint's format
(`tests/timm_presets.py`) holds the random weights of our own `resnet34`;
keras-hub converts it on loading, and the features must agree with ours, tap
for tap: the official code's numbering (models/resnet_ilsvrc.py,
`forward_with_features`: [r1, layer1, ..., layer4]) is 0 = the stem before the
max-pool, 1–4 = the stage outputs, for either source.
"""

import time

import numpy as np
import pytest

from keras_l2t import backbones, sources
from keras_l2t.sources import hub as hub_sources
from keras_l2t.errors import InputError
from keras_l2t.pairs import parse_pairs
from tests import timm_presets

IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def resnet34_and_preset(tmp_path_factory):
    rng = np.random.default_rng(0)
    ours = backbones.resnet34(num_classes=10, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    for layer in ours.network.layers:  # non-trivial BN statistics, so that a BN mix-up shows
        if "bn" in layer.name:
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma * rng.uniform(0.5, 1.5, gamma.shape), beta + rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, gamma.shape), rng.uniform(0.5, 2.0, gamma.shape)])
    directory = str(tmp_path_factory.mktemp("resnet34_timm"))
    timm_presets.write_timm_preset(ours, directory)
    return ours, directory


def test_a_timm_resnet34_preset_computes_our_resnet34(resnet34_and_preset):
    ours, preset = resnet34_and_preset
    source = sources.load_source(preset, IMAGE_SIZE)
    assert not source.trainable
    images = np.random.default_rng(1).normal(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    logits, features = source(images, training=False, return_features=True)
    our_logits, our_features = ours(images, training=False, return_features=True)
    # Tap k is the same tensor for both: 0 the stem before the max-pool, 1–4 the stage outputs.
    assert source.feature_shapes == ours.feature_shapes
    assert source.transfer_taps == ours.transfer_taps == (1, 2, 3, 4)
    for theirs, mine in zip(features, our_features, strict=True):
        np.testing.assert_allclose(np.asarray(theirs), np.asarray(mine), rtol=0, atol=1e-5 * np.abs(mine).max())
    np.testing.assert_allclose(np.asarray(logits), np.asarray(our_logits), rtol=0, atol=1e-5 * np.abs(our_logits).max())


def test_a_pair_spec_means_the_same_layers_for_a_keras_hub_and_our_resnet34(resnet34_and_preset):
    ours, preset = resnet34_and_preset
    hub = sources.load_source(preset, IMAGE_SIZE)
    target = backbones.resnet18(num_classes=10, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    for spec in ("3-3,2-2,1-1", "all", "one_to_one", "single"):
        assert parse_pairs(spec, hub, target) == parse_pairs(spec, ours, target), spec
    # The official default (train_l2t_ww.py --pairs): all 16 pairs of stage outputs 1..4 x 1..4.
    assert set(parse_pairs("all", hub, target)) == {(m, n) for m in range(1, 5) for n in range(1, 5)}
    assert parse_pairs("one_to_one", hub, target) == ((1, 1), (2, 2), (3, 3), (4, 4))
    images = np.random.default_rng(3).normal(size=(1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    _, hub_features = hub(images, training=False, return_features=True)
    _, our_features = ours(images, training=False, return_features=True)
    for m, _ in parse_pairs("3-3,2-2,1-1", hub, target):
        mine = np.asarray(our_features[m])
        np.testing.assert_allclose(np.asarray(hub_features[m]), mine, rtol=0, atol=1e-5 * np.abs(mine).max())


def test_an_out_of_range_hub_tap_is_a_one_line_error(resnet34_and_preset):
    _, preset = resnet34_and_preset
    hub = sources.load_source(preset, IMAGE_SIZE)
    target = backbones.resnet18(num_classes=10, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    with pytest.raises(InputError, match=r"Source tap 5 out of range: .* has taps 0\.\.4") as error:
        parse_pairs("5-4", hub, target)
    assert "\n" not in str(error.value)


def _tiny_keras_hub_resnet_preset(directory, use_pre_activation=False):
    """A random ResNet-34-like keras-hub classifier (basic blocks, 4 stages, few channels) saved as a preset."""
    import keras_hub  # pylint: disable=import-outside-toplevel

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 24, 32],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=use_pre_activation,
    )
    keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=5).save_to_preset(directory)
    return backbone


@pytest.mark.parametrize("use_pre_activation", [False, True], ids=["v1", "v2"])
def test_a_keras_hub_resnet_is_tapped_at_the_stem_and_the_four_stages(tmp_path, use_pre_activation):
    preset = str(tmp_path / "tiny_resnet")
    _tiny_keras_hub_resnet_preset(preset, use_pre_activation)
    source = sources.load_source(preset, 224)
    # Taps 0..4, strides 2, 4, 8, 16, 32: the official forward_with_features' r1 (after the stem ReLU,
    # before the max-pool), layer1 .. layer4; pairs draw from 1..4 as for backbones.resnet34.
    assert source.feature_shapes == ((112, 112, 64), (56, 56, 64), (28, 28, 16), (14, 14, 24), (7, 7, 32))
    assert source.transfer_taps == (1, 2, 3, 4)
    assert source.network.output_names[1:] == ["stem", "P2", "P3", "P4", "P5"]
    # The values: tap 0 is the output of the stem's last layer before the max-pool (its ReLU; the conv
    # in a pre-activation ResNet), taps 1–4 are keras-hub's pyramid outputs P2–P5.
    import keras  # pylint: disable=import-outside-toplevel
    import keras_hub  # pylint: disable=import-outside-toplevel

    backbone = keras_hub.models.Backbone.from_preset(preset)
    stem_layer = "conv1_conv" if use_pre_activation else "conv1_relu"
    reference = keras.Model(backbone.inputs, [backbone.get_layer(stem_layer).output] + [
        backbone.pyramid_outputs[level] for level in ("P2", "P3", "P4", "P5")])
    images = np.random.default_rng(4).normal(size=(2, 224, 224, 3)).astype("float32")
    layer_names = [layer.name for layer in source.network.layers]
    preset_images = source.network.get_layer("preset_inputs")(images) if "preset_inputs" in layer_names else images
    _, features = source(images, training=False, return_features=True)
    expected = reference(preset_images, training=False)
    for name, feature, want in zip((stem_layer, "P2", "P3", "P4", "P5"), features, expected, strict=True):
        np.testing.assert_allclose(np.asarray(feature), np.asarray(want), rtol=0, atol=1e-6, err_msg=name)
    if not use_pre_activation:
        assert float(np.min(np.asarray(features[0]))) >= 0.0  # after the ReLU


def test_the_preset_input_mapping_is_applied(resnet34_and_preset):
    # A converter that expects pixels in [0, 1] needs x·std + mean; the identity mapping would be wrong.
    class Converter:  # pylint: disable=too-few-public-methods
        scale, offset = 1.0 / 255.0, None

    scale, offset = hub_sources._input_affine(Converter())  # pylint: disable=protected-access
    np.testing.assert_allclose(scale, [0.229, 0.224, 0.225], rtol=1e-6)
    np.testing.assert_allclose(offset, [0.485, 0.456, 0.406], rtol=1e-6)


def test_a_missing_hugging_face_preset_fails_within_seconds_naming_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(hub_sources, "reachable_endpoints", lambda endpoints: set())
    from huggingface_hub import constants  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.time()
    with pytest.raises(InputError, match="resnet34.tv_in1k") as error:
        sources.load_source("resnet34_imagenet", 224)
    assert time.time() - start < 10
    assert "hf download timm/resnet34.tv_in1k config.json model.safetensors" in str(error.value)


def test_hub_specs_are_told_apart_from_keras_files(resnet34_and_preset, tmp_path):
    _, preset = resnet34_and_preset
    assert hub_sources.is_hub_spec(preset)
    assert hub_sources.is_hub_spec("hf://timm/resnet34.tv_in1k")
    assert hub_sources.is_hub_spec("resnet34_imagenet")
    assert not hub_sources.is_hub_spec(str(tmp_path / "source.keras"))
    assert not hub_sources.is_hub_spec(str(tmp_path))  # a directory without config.json


def test_resnet34_imagenet_is_read_from_the_hugging_face_cache_without_the_network(
        resnet34_and_preset, monkeypatch, tmp_path):
    from huggingface_hub import constants  # pylint: disable=import-outside-toplevel

    ours, _ = resnet34_and_preset
    timm_presets.write_hugging_face_cache_entry(ours, str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    def no_network(endpoints):
        raise AssertionError(f"the network was probed for {endpoints} although the preset is cached")

    monkeypatch.setattr(hub_sources, "reachable_endpoints", no_network)
    source = sources.load_source("resnet34_imagenet", IMAGE_SIZE)
    images = np.random.default_rng(2).normal(size=(1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(source(images)), np.asarray(ours(images)), rtol=0, atol=1e-4)
    assert source.name == "resnet34_tv_in1k"

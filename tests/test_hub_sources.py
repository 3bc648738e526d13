"""keras-hub sources, offline: a local preset in timm's format loads as the same network as our resnet34.

The paper's 224 source is torchvision's ImageNet ResNet-34 (timm's
`resnet34.tv_in1k`). Here a directory in that checkpoint's format
(`tests/timm_presets.py`) holds the random weights of our own `resnet34`;
keras-hub converts it on loading, and the features must agree with ours.
"""

import time

import numpy as np
import pytest

from keras_l2t import backbones, hub_sources, source_models
from keras_l2t.errors import InputError
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
    source = source_models.load_source(preset, IMAGE_SIZE)
    assert not source.trainable
    images = np.random.default_rng(1).normal(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    logits, features = source(images, training=False, return_features=True)
    our_logits, our_features = ours(images, training=False, return_features=True)
    our_stages = our_features[1:]  # ours also taps the stem; the pyramid is the 4 stage outputs
    assert [f.shape for f in features] == [f.shape for f in our_stages]
    for theirs, mine in zip(features, our_stages):
        np.testing.assert_allclose(np.asarray(theirs), np.asarray(mine), rtol=0, atol=1e-5 * np.abs(mine).max())
    np.testing.assert_allclose(np.asarray(logits), np.asarray(our_logits), rtol=0, atol=1e-5 * np.abs(our_logits).max())


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
        source_models.load_source("resnet34_imagenet", 224)
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
    source = source_models.load_source("resnet34_imagenet", IMAGE_SIZE)
    images = np.random.default_rng(2).normal(size=(1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(source(images)), np.asarray(ours(images)), rtol=0, atol=1e-4)
    assert source.name == "resnet34_tv_in1k"

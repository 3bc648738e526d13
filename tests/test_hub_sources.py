"""keras-hub sources, offline: a local preset in timm's format loads as the same network as our resnet34.

The paper's 224 source is torchvision's ImageNet ResNet-34 (timm's
`resnet34.tv_in1k`). Here a directory in that checkpoint's format (timm's
`config.json` and `model.safetensors` with timm's key names) holds the random
weights of our own `resnet34`; keras-hub converts it on loading, and the
features must agree with ours.
"""

import json
import os
import time

import numpy as np
import pytest

pytest.importorskip("keras_hub")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from keras_l2t import backbones, hub_sources, source_models  # pylint: disable=wrong-import-position
from keras_l2t.errors import InputError  # pylint: disable=wrong-import-position

IMAGE_SIZE = 64


def _timm_state_dict(resnet):
    """Our resnet34's weights under timm's (torchvision's) key names and layouts."""
    layers = {layer.name: layer for layer in resnet.network.layers}
    state = {}

    def conv(ours, theirs):
        state[f"{theirs}.weight"] = np.transpose(layers[ours].get_weights()[0], (3, 2, 0, 1))

    def batch_norm(ours, theirs):
        gamma, beta, mean, variance = layers[ours].get_weights()
        state.update({f"{theirs}.weight": gamma, f"{theirs}.bias": beta,
                      f"{theirs}.running_mean": mean, f"{theirs}.running_var": variance})

    conv("conv1", "conv1")
    batch_norm("bn1", "bn1")
    for stage, blocks in enumerate((3, 4, 6, 3)):
        for block in range(blocks):
            ours, theirs = f"layer{stage + 1}_{block}", f"layer{stage + 1}.{block}"
            for i in (1, 2):
                conv(f"{ours}_conv{i}", f"{theirs}.conv{i}")
                batch_norm(f"{ours}_bn{i}", f"{theirs}.bn{i}")
            if f"{ours}_downsample_conv" in layers:
                conv(f"{ours}_downsample_conv", f"{theirs}.downsample.0")
                batch_norm(f"{ours}_downsample_bn", f"{theirs}.downsample.1")
    kernel, bias = layers["fc"].get_weights()
    state["fc.weight"], state["fc.bias"] = kernel.T, bias
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}


@pytest.fixture(scope="module")
def resnet34_and_preset(tmp_path_factory):
    rng = np.random.default_rng(0)
    ours = backbones.resnet34(num_classes=10, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3))
    for layer in ours.network.layers:  # non-trivial BN statistics, so that a BN mix-up shows
        if "bn" in layer.name:
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma * rng.uniform(0.5, 1.5, gamma.shape), beta + rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, gamma.shape), rng.uniform(0.5, 2.0, gamma.shape)])
    directory = tmp_path_factory.mktemp("resnet34_timm")
    safetensors_numpy.save_file(_timm_state_dict(ours), os.path.join(directory, "model.safetensors"))
    config = {
        "architecture": "resnet34", "num_classes": 10, "num_features": 512,
        "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bilinear",
                           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    return ours, str(directory)


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
    assert "huggingface-cli download timm/resnet34.tv_in1k" in str(error.value)


def test_hub_specs_are_told_apart_from_keras_files(resnet34_and_preset, tmp_path):
    _, preset = resnet34_and_preset
    assert hub_sources.is_hub_spec(preset)
    assert hub_sources.is_hub_spec("hf://timm/resnet34.tv_in1k")
    assert hub_sources.is_hub_spec("resnet34_imagenet")
    assert not hub_sources.is_hub_spec(str(tmp_path / "source.keras"))
    assert not hub_sources.is_hub_spec(str(tmp_path))  # a directory without config.json

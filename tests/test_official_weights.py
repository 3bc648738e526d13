"""The shipped official Tiny-ImageNet ResNet-32 computes what the authors' PyTorch model computes.

`tests/data/tinyimagenet200_resnet32_reference_outputs_subset.npz` is a subset
of the reference outputs converted from the authors' repository (MIT): the
official model in eval mode on 4 standard-normal NCHW images, its logits for
all 4 and its 15 block features for the first.
"""

import os

import numpy as np
import pytest

from keras_l2t.sources import official as official_weights

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "tinyimagenet200_resnet32_reference_outputs_subset.npz")


def _nhwc(array):
    return np.transpose(array, (0, 2, 3, 1))


def _assert_float32_round_off(actual, expected):
    # Relative to the tensor's scale: a wrong port (a transposed kernel, asymmetric padding, a missing
    # bias) is off by O(1) of that scale; float32 summation order differs by ~1e-6 of it.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-6 * float(np.abs(expected).max()))


@pytest.fixture(scope="module")
def source():
    return official_weights.tinyimagenet_resnet32()


def test_reproduces_the_official_logits_and_all_15_features(source):
    reference = np.load(REFERENCE)
    images = _nhwc(reference["input_nchw"])
    logits, features = source(images, training=False, return_features=True)
    _assert_float32_round_off(np.asarray(logits), reference["logits"])
    assert len(features) == 15
    for index, feature in enumerate(features):
        _assert_float32_round_off(np.asarray(feature)[:1], _nhwc(reference[f"feature_{index:02d}_nchw_image0"]))


def test_a_port_with_a_wrong_layout_is_caught(source):
    # The negative control: the same weights with the stem kernel's spatial axes flipped.
    with np.load(official_weights.TINYIMAGENET_RESNET32_FILE) as arrays:
        state_dict = dict(arrays)
    state_dict["conv1.weight"] = state_dict["conv1.weight"][:, :, ::-1, :]
    broken = official_weights.port_resnet32_state_dict(state_dict)
    reference = np.load(REFERENCE)
    logits = broken(_nhwc(reference["input_nchw"]), training=False)
    with pytest.raises(AssertionError):
        _assert_float32_round_off(np.asarray(logits), reference["logits"])


def test_taps_and_transfer_taps_are_the_official_ones(source):
    assert source.transfer_taps == (4, 9, 14)
    assert source.num_classes == official_weights.TINYIMAGENET_CLASSES
    assert source.image_shape == (32, 32, 3)


def test_a_state_dict_missing_a_layer_is_refused():
    with np.load(official_weights.TINYIMAGENET_RESNET32_FILE) as arrays:
        state_dict = dict(arrays)
    del state_dict["block3.downsample.0.weight"]
    with pytest.raises(ValueError, match="stage2_0_downsample_conv"):
        official_weights.port_resnet32_state_dict(state_dict)

"""The source-map resize of feature matching: PyTorch's bilinear rule, in the input's dtype."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_l2t.layers.feature_matching import bilinear_resize_matrix, resize_to


def _torch_bilinear_1d(values, size_out):
    """`F.interpolate(mode='linear', align_corners=False)` along axis 0, written out point by point."""
    size_in = values.shape[0]
    out = np.zeros((size_out,) + values.shape[1:])
    for o in range(size_out):
        source = (o + 0.5) * size_in / size_out - 0.5
        source = 0.0 if source < 0 else source
        low = int(np.floor(source))
        high = low + 1 if low < size_in - 1 else low
        weight = source - low
        out[o] = (1 - weight) * values[low] + weight * values[high]
    return out


@pytest.mark.parametrize("size_in,size_out", [(8, 32), (32, 8), (16, 4), (7, 3), (3, 7), (32, 2), (5, 5)])
def test_matrix_equals_the_torch_rule(size_in, size_out):
    values = np.random.default_rng(0).standard_normal((size_in, 3))
    np.testing.assert_allclose(bilinear_resize_matrix(size_in, size_out) @ values, _torch_bilinear_1d(values, size_out),
                               rtol=0, atol=1e-14)


def test_float64_stays_float64_and_is_exact():
    feature = np.random.default_rng(1).standard_normal((2, 8, 4, 3))
    resized = resize_to(tf.constant(feature), 32, 2)
    assert resized.dtype == tf.float64
    expected = _torch_bilinear_1d(feature.transpose(1, 0, 2, 3), 32).transpose(1, 0, 2, 3)  # rows, then columns
    expected = _torch_bilinear_1d(expected.transpose(2, 0, 1, 3), 2).transpose(1, 2, 0, 3)
    np.testing.assert_allclose(resized.numpy(), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape,size", [((2, 8, 8, 3), (32, 32)), ((2, 32, 32, 3), (4, 4)), ((1, 16, 16, 2), (8, 8))])
def test_float32_agrees_with_keras_resize(shape, size):
    # ops.image.resize (no antialias) is the same rule, computed in float32.
    feature = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    expected = ops.image.resize(feature, size, interpolation="bilinear", antialias=False)
    resized = resize_to(tf.constant(feature), *size)
    assert resized.dtype == tf.float32
    np.testing.assert_allclose(resized.numpy(), np.asarray(expected), rtol=0, atol=1e-5)

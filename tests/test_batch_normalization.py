"""keras_l2t BatchNormalization: exact second derivatives and PyTorch moving statistics."""

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.layers import BatchNormalization


def _second_order_quantity(layer, x, v):
    """h(x) = <∇_x sum(BN(x)^3 · r), v> and its gradient dh/dx by nested tapes."""
    r = tf.constant(np.linspace(-1, 1, int(np.prod(x.shape))).reshape(x.shape), tf.float64)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) ** 3 * r)
        h = tf.reduce_sum(inner.gradient(loss, x) * v)
    return h, outer.gradient(h, x)


def _finite_difference(layer, x, v, direction, eps=1e-5):
    plus, _ = _second_order_quantity(layer, x + eps * direction, v)
    minus, _ = _second_order_quantity(layer, x - eps * direction, v)
    return (plus - minus) / (2 * eps)


def test_second_derivative_matches_finite_differences_where_stock_bn_does_not():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(6, 3)), tf.float64)
    v = tf.constant(rng.normal(size=(6, 3)), tf.float64)
    direction = tf.constant(rng.normal(size=(6, 3)), tf.float64)
    errors = {}
    for name, layer in [
        ("ours", BatchNormalization(dtype="float64")),
        ("stock", keras.layers.BatchNormalization(epsilon=1e-5, dtype="float64")),
    ]:
        layer.build((None, 3))
        _, grad = _second_order_quantity(layer, x, v)
        analytic = float(tf.reduce_sum(grad * direction))
        numeric = float(_finite_difference(layer, x, v, direction))
        errors[name] = abs(analytic - numeric) / abs(numeric)
    assert errors["ours"] < 1e-6, errors
    # The reason this layer exists: stock Keras BN drops a second-order term.
    assert errors["stock"] > 1e-3, errors


def test_moving_statistics_follow_pytorch():
    layer = BatchNormalization()
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(8, 4, 4, 5)).astype("float32")
    layer(x, training=True)
    flat = x.reshape(-1, 5)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * flat.mean(0), rtol=1e-5)
    # PyTorch: unbiased batch variance, momentum 0.1.
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    # Training-mode output uses the biased batch variance and epsilon 1e-5.
    out = layer(x, training=True).numpy().reshape(-1, 5)
    expected = (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_stateless_call_returns_updated_statistics_without_assigning():
    layer = BatchNormalization()
    layer.build((None, 3))
    x = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    _, new_non_trainable = layer.stateless_call(
        [tf.convert_to_tensor(v) for v in layer.trainable_variables],
        [tf.convert_to_tensor(v) for v in layer.non_trainable_variables],
        x,
        training=True,
    )
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(3))
    assert not np.allclose(new_non_trainable[0], 0.0)

"""PyTorch-semantics SGD (pure rule and Keras optimizer) and the official cosine schedule."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_l2t import optimizers


def _torch_sgd_reference(theta, grads_per_step, lrs, momentum, weight_decay):
    """torch.optim.SGD (dampening 0, no Nesterov), written out in NumPy."""
    theta = np.array(theta, dtype=np.float64)
    buffer = None
    for grad, lr in zip(grads_per_step, lrs):
        d = np.asarray(grad, dtype=np.float64) + weight_decay * theta
        buffer = d.copy() if buffer is None else momentum * buffer + d
        theta = theta - lr * buffer
    return theta, buffer


def test_pure_rule_by_hand():
    # θ=1, g=0.5, wd=0.1, μ=0.9, lr=0.1: d=0.6, v=0.6, θ=0.94.
    # Second step, g=None (a parameter without gradient): d=0.094, v=0.634, θ=0.8766.
    params, buffers = [tf.constant(1.0, tf.float64)], [tf.constant(0.0, tf.float64)]
    params, buffers = optimizers.sgd_momentum_step(params, [tf.constant(0.5, tf.float64)], buffers, 0.1, 0.9, 0.1)
    assert float(params[0]) == pytest.approx(0.94) and float(buffers[0]) == pytest.approx(0.6)
    params, buffers = optimizers.sgd_momentum_step(params, [None], buffers, 0.1, 0.9, 0.1)
    assert float(buffers[0]) == pytest.approx(0.634)
    assert float(params[0]) == pytest.approx(0.8766)


def test_keras_optimizer_matches_torch_with_changing_learning_rate():
    theta0 = np.array([0.5, -1.0, 2.0])
    grads = [np.array([0.1, 0.2, -0.3]), np.zeros(3), np.array([-1.0, 0.5, 0.25])]
    lrs = [0.5, 0.25, 0.125]  # exact in float32: the schedule runs in float32
    var = keras.Variable(theta0, dtype="float64")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0, 1], lrs)
    optimizer = optimizers.SGD(schedule, momentum=0.9, weight_decay=1e-2)
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), var)])
    expected_theta, expected_buffer = _torch_sgd_reference(theta0, grads, lrs, 0.9, 1e-2)
    np.testing.assert_allclose(var.numpy(), expected_theta, rtol=1e-12)
    np.testing.assert_allclose(optimizer.momentum_buffers[0].numpy(), expected_buffer, rtol=1e-12)


def test_optimizer_config_round_trip():
    optimizer = optimizers.SGD(
        optimizers.EpochCosineDecay(0.1, epochs=5, steps_per_epoch=3), momentum=0.8, weight_decay=5e-4
    )
    restored = optimizers.SGD.from_config(optimizer.get_config())
    assert restored.momentum == 0.8 and restored.coupled_weight_decay == 5e-4
    assert restored.weight_decay is None  # no decoupled Keras decay on top
    with pytest.raises(ValueError):
        optimizers.SGD(0.1, weight_decay=-1.0)


def test_official_schedule_values():
    schedule = optimizers.EpochCosineDecay(0.1, epochs=200, steps_per_epoch=169)
    # docs/method.md §4.3: 0.099994 at epoch 0, 0.05 at epoch 99, 0 at epoch 199.
    assert float(schedule(0)) == pytest.approx(0.05 * (1 + math.cos(math.pi / 200)), rel=1e-6)
    assert float(schedule(168)) == float(schedule(0))
    assert float(schedule(99 * 169)) == pytest.approx(0.05, abs=1e-7)
    assert float(schedule(199 * 169 + 5)) == pytest.approx(0.0, abs=1e-7)
    plain = optimizers.EpochCosineDecay(0.1, epochs=200, steps_per_epoch=169, offset=0)
    assert float(plain(0)) == pytest.approx(0.1)


def test_auto_meta_learning_rate_keeps_the_official_rate_for_paper_length_runs():
    # Every paper setting makes >= 7,000 meta-steps (STL-10: 35 steps x 200 epochs); shorter runs keep lr x steps.
    assert optimizers.auto_meta_learning_rate(7_000) == optimizers.auto_meta_learning_rate(70_200) == 1e-4
    assert optimizers.auto_meta_learning_rate(700) == pytest.approx(1e-3)
    assert optimizers.auto_meta_learning_rate(300) * 300 == pytest.approx(1e-4 * 7_000)
    assert optimizers.auto_meta_learning_rate(60) == optimizers.auto_meta_learning_rate(1) == 1e-2  # the cap
    with pytest.raises(ValueError):
        optimizers.auto_meta_learning_rate(0)


def _torch_adam_reference(theta, grads_per_step, lr, weight_decay, beta_1=0.9, beta_2=0.999, eps=1e-8, amsgrad=False):
    """torch.optim.Adam (coupled weight decay, foreach=False), written out in NumPy float64."""
    theta = np.array(theta, dtype=np.float64)
    m, v, v_max = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
    for step, grad in enumerate(grads_per_step, 1):
        g = np.asarray(grad, dtype=np.float64) + weight_decay * theta
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        v_max = np.maximum(v_max, v)
        denominator = np.sqrt(v_max if amsgrad else v) / math.sqrt(1 - beta_2**step) + eps
        theta = theta - lr / (1 - beta_1**step) * m / denominator
    return theta


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_l2_is_torch_adam_in_float64(amsgrad):
    # Gradients from 1e-9 to 1: Keras' rule (eps before the bias correction) moves the
    # tiny ones about 30x less than torch at step 1; the torch rule must agree to round-off.
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(64)
    grads = [rng.standard_normal(64) * np.logspace(-9, 0, 64) for _ in range(5)]
    var = keras.Variable(theta0, dtype="float64")
    optimizer = optimizers.AdamL2(2.0**-7, weight_decay=1e-4, amsgrad=amsgrad)  # a float32 rate, exactly
    for grad in grads:
        optimizer.apply_gradients([(tf.constant(grad), var)])
    expected = _torch_adam_reference(theta0, grads, 2.0**-7, 1e-4, amsgrad=amsgrad)
    np.testing.assert_allclose(var.numpy() - theta0, expected - theta0, rtol=1e-12, atol=1e-16)


def test_adam_l2_is_torch_adam_in_float32():
    # float32 variables, but 1 - 0.999 and 0.999 ** t in float64 (torch computes them in Python).
    theta0 = np.zeros(6, np.float32)
    grad = np.array([1e-9, -5.7e-8, 1e-6, -1e-3, 0.5, -2.0], np.float32)
    var = keras.Variable(theta0, dtype="float32")
    optimizers.AdamL2(1e-2, weight_decay=0.0).apply_gradients([(tf.constant(grad), var)])
    expected = _torch_adam_reference(theta0, [grad.astype(np.float64)], 1e-2, 0.0)
    np.testing.assert_allclose(var.numpy(), expected, rtol=2e-7)
    assert abs(var.numpy()[1] - 8.5e-3) < 1e-5  # torch's 5.7/6.7 lr; Keras' rule gives 1.5e-3 for g = -5.7e-8


def test_adam_l2_config_round_trip():
    optimizer = optimizers.AdamL2(3e-4, weight_decay=2e-4, beta_2=0.99, epsilon=1e-6, amsgrad=True)
    restored = optimizers.AdamL2.from_config(optimizer.get_config())
    assert restored.coupled_weight_decay == 2e-4 and restored.weight_decay is None
    assert (restored.beta_2, restored.epsilon, restored.amsgrad) == (0.99, 1e-6, True)
    with pytest.raises(ValueError):
        optimizers.AdamL2(1e-4, weight_decay=-1.0)

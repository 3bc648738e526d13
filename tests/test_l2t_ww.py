"""L2TWW: exact meta-gradients, which variables each step changes, saving, tracing, pairs."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import backbones, pairs
from keras_l2t.optimizers import SGD, sgd_momentum_step
from tests.finite_differences import assert_meta_gradient_matches
from tests.toy_backbones import tiny_backbone


def _model(mode="l2t_ww", perturb=True, **kwargs):
    source = tiny_backbone("source", (4, 5), seed=1)
    target = tiny_backbone("target", (3, 4), seed=2)
    model = keras_l2t.L2TWW(source, target, pairs="all", mode=mode, **kwargs)
    model.compile(optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3))
    if perturb:  # move φ off its symmetric initialisation (zero what-nets)
        rng = np.random.default_rng(3)
        for v in model.meta_variables:
            v.assign(v.numpy() + 0.3 * rng.normal(size=v.shape))
    return model


def _batch(dtype="float64", n=6):
    rng = np.random.default_rng(0)
    return tf.constant(rng.normal(size=(n, 8, 8, 3)), dtype), tf.constant(rng.integers(0, 3, n))


def _adjoint_reference(model, x, y, hessian=True):
    """The official `MetaSGD.meta_backward` (docs/method.md §4.2): reverse adjoints with Hessian-vector products."""
    optimizer = model.optimizer
    lr, mu, wd = float(optimizer.learning_rate), optimizer.momentum, optimizer.coupled_weight_decay
    statistics = model._source_statistics(x)
    w, lam = model._meta_outputs(statistics)
    theta, buffers, non_trainable = model._current_state()

    def step_loss(theta, t, w, lam):
        with_matching = t < model.inner_steps
        logits, matching, _ = model._forward(theta, non_trainable, x, statistics, w, lam, with_matching)
        return matching if with_matching else keras_l2t.losses.cross_entropy(y, logits)

    states = []
    for t in range(model.inner_steps + 1):  # forward, recording (θ_t, v_t)
        states.append((theta, buffers))
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss = step_loss(theta, t, w, lam)
        theta, buffers = sgd_momentum_step(theta, tape.gradient(loss, theta), buffers, lr, mu, wd)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        logits, _, _ = model._forward(theta, non_trainable, x, statistics, None, None, False)
        outer = keras_l2t.losses.cross_entropy(y, logits)
    a = [g if g is not None else tf.zeros_like(p) for g, p in zip(tape.gradient(outer, theta), theta)]
    c = [tf.zeros_like(p) for p in theta]
    meta_grads = [tf.zeros_like(v) for v in model.meta_variables]
    for t in reversed(range(model.inner_steps + 1)):
        theta_t, _ = states[t]
        adjoint = [-lr * ai + ci for ai, ci in zip(a, c)]
        with tf.GradientTape(persistent=True) as outer_tape:
            outer_tape.watch(theta_t)
            w, lam = model._meta_outputs(statistics)
            with tf.GradientTape() as inner:
                inner.watch(theta_t)
                loss = step_loss(theta_t, t, w, lam)
            g = inner.gradient(loss, theta_t)
            product = tf.add_n([tf.reduce_sum(gi * di) for gi, di in zip(g, adjoint) if gi is not None])
        hvp = outer_tape.gradient(product, theta_t)
        dphi = outer_tape.gradient(product, model.meta_variables)
        meta_grads = [m + (d if d is not None else 0.0) for m, d in zip(meta_grads, dphi)]
        new_a = []
        for ai, ci, hi, di in zip(a, c, hvp, adjoint):
            value = (1 - lr * wd) * ai + wd * ci
            if hessian and hi is not None:
                value += hi
            new_a.append(value)
        c = [mu * ci - lr * mu * ai for ai, ci in zip(a, c)]
        a = new_a
    return meta_grads


@pytest.mark.parametrize("recompute", [False, True])
def test_meta_gradient_equals_finite_differences(float64, recompute):
    model = _model(recompute_look_ahead=recompute)
    x, y = _batch()
    assert_meta_gradient_matches(model, x, y, np.random.default_rng(5))


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_the_official_adjoint_recursion(float64, first_order, recompute):
    model = _model(first_order=first_order, recompute_look_ahead=recompute)
    x, y = _batch()
    # A non-zero momentum state, as after some training.
    model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    expected = _adjoint_reference(model, x, y, hessian=not first_order)
    for got, want in zip(model.meta_gradients(x, y), expected):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)


def test_recomputed_meta_step_equals_the_recorded_one():
    # Compiled train steps (tf.function, as fit runs them), float32: same φ, θ and logs.
    x, y = _batch("float32")
    recorded, recomputed = _model(), _model(recompute_look_ahead=True)
    for _ in range(2):
        logs = recorded.train_on_batch(x, y, return_dict=True)
        recomputed_logs = recomputed.train_on_batch(x, y, return_dict=True)
    for a, b in zip(recorded.meta_variables + recorded.theta_variables,
                    recomputed.meta_variables + recomputed.theta_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["meta_gradient_norm"], recomputed_logs["meta_gradient_norm"], rtol=1e-4)
    config = recomputed.get_config()
    assert config["recompute_look_ahead"] is True
    assert keras_l2t.L2TWW.from_config(config).recompute_look_ahead


def test_tf_recompute_grad_cannot_be_differentiated_twice():
    # Why the meta step does not rematerialise layers with tf.recompute_grad (a memory lever of
    # docs/profile.md): its gradient has no gradient of its own, and the meta-gradient needs one
    # (H·v through every look-ahead step). If TensorFlow adds it, this fails: measure the lever then.
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 4, 4, 3)), tf.float32)
    kernel = tf.Variable(rng.normal(size=(3, 3, 3, 2)).astype("float32"))
    layer = tf.recompute_grad(lambda h: tf.nn.tanh(tf.nn.conv2d(h, kernel, 1, "SAME")))
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_sum(layer(x) ** 2)
        grad = inner.gradient(loss, kernel)
        assert grad is not None  # first order works
        grad_sum = tf.reduce_sum(grad)
    with pytest.raises(NotImplementedError, match="recompute_grad tried to transpose grad"):
        outer.gradient(grad_sum, kernel)


def test_first_order_differs_from_exact(float64):
    x, y = _batch()
    exact = _model().meta_gradients(x, y)
    approx = _model(first_order=True).meta_gradients(x, y)
    assert any(not np.allclose(a, b, rtol=1e-3) for a, b in zip(exact, approx))


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


@pytest.mark.parametrize("second_statistics_update", [True, False])
def test_one_step_changes_exactly_what_it_should(second_statistics_update):
    model = _model(second_statistics_update=second_statistics_update)
    x, y = _batch("float32")
    source_before = _values(model.source.variables)
    target_before = _values(model.target.trainable_variables)
    regressors_before = _values([v for m in model.matchers for v in m.trainable_variables])
    meta_before = _values(model.meta_variables)
    non_trainable = [tf.convert_to_tensor(v) for v in model.target.non_trainable_variables]
    _, expected_stats = model.target.stateless_call(
        [tf.convert_to_tensor(v) for v in model.target.trainable_variables], non_trainable, x, training=True
    )
    model.train_on_batch(x, y)
    assert not any(_changed(source_before, model.source.variables))
    assert all(_changed(target_before, model.target.trainable_variables))
    assert all(_changed(regressors_before, [v for m in model.matchers for v in m.trainable_variables]))
    assert all(_changed(meta_before, model.meta_variables))
    # BatchNorm statistics: those of the real step (the look-ahead's are dropped), then, as the
    # official meta_backward does, a second update from the same batch at the updated θ.
    if second_statistics_update:
        _, expected_stats = model.target.stateless_call(
            [tf.convert_to_tensor(v) for v in model.target.trainable_variables], expected_stats, x, training=True
        )
    for variable, expected in zip(model.target.non_trainable_variables, expected_stats):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)


def test_meta_every_skips_meta_updates_between():
    model = _model(meta_every=2)
    x, y = _batch("float32")
    before = _values(model.meta_variables)
    model.train_on_batch(x, y)  # step 0: meta update
    after_first = _values(model.meta_variables)
    assert all(_changed(before, model.meta_variables))
    model.train_on_batch(x, y)  # step 1: none
    assert not any(_changed(after_first, model.meta_variables))


@pytest.mark.parametrize("mode, meta_count", [("fm", 0), ("l2t_w", 2 * 4)])
def test_variants_have_their_meta_networks(mode, meta_count):
    model = _model(mode=mode, perturb=False)
    assert len(model.meta_variables) == meta_count
    x, y = _batch("float32")
    regressors_before = _values([v for m in model.matchers for v in m.trainable_variables])
    logs = model.train_on_batch(x, y, return_dict=True)
    assert all(_changed(regressors_before, [v for m in model.matchers for v in m.trainable_variables]))
    assert ("meta_loss" in logs) == (mode != "fm")
    assert not any(k.startswith("lambda_") for k in logs)


def test_frozen_meta_networks_train_theta_as_a_zero_meta_learning_rate(float64):
    # l2t_ww_frozen, the control for "learned": θ's trajectory equals L2T-ww's at meta lr 0, φ never moves.
    x, y = _batch()
    frozen = _model(learn_meta_networks=False)
    zero_lr = _model()
    zero_lr.compile(
        optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3), meta_optimizer=keras_l2t.optimizers.AdamL2(0.0)
    )
    learned = _model()
    meta_before = _values(frozen.meta_variables)
    for _ in range(3):
        frozen_logs = frozen.train_on_batch(x, y, return_dict=True)
        zero_lr.train_on_batch(x, y)
        learned.train_on_batch(x, y)
    assert not any(_changed(meta_before, frozen.meta_variables))
    for a, b in zip(frozen.variables, zero_lr.variables):  # θ and the BN statistics (updated twice in both)
        if a.path.startswith(("what_", "where_")):
            continue
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    # The control is not vacuous: a learned φ changes θ's trajectory.
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in zip(frozen.theta_variables, learned.theta_variables))
    assert "meta_loss" not in frozen_logs and "channel_weight_entropy" in frozen_logs and "lambda_0_1" in frozen_logs
    restored = keras_l2t.L2TWW.from_config(frozen.get_config())
    assert not restored.uses_meta_learning and restored.has_meta_networks


def test_meta_outputs_stay_in_range():
    model = _model()
    x, _ = _batch("float32")
    weights = model.transfer_weights(x)
    for w in weights["channel_weights"]:
        np.testing.assert_allclose(np.sum(w, axis=-1), 1.0, rtol=1e-5)
    for lam in weights["pair_weights"]:
        assert np.all((lam.numpy() >= 0) & (lam.numpy() <= 6))
    fresh = _model(perturb=False).transfer_weights(x)
    np.testing.assert_allclose(fresh["channel_weights"][0], 1.0 / 4)  # uniform at init


def test_logs_show_the_transfer():
    model = _model()
    x, y = _batch("float32")
    history = model.fit(x, y, batch_size=3, epochs=1, validation_data=(x, y), verbose=0).history
    for key in ["loss", "ce", "matching", "accuracy", "meta_loss", "channel_weight_entropy", "lambda_0_1", "val_accuracy"]:
        assert key in history, key
    assert "val_ce" not in history


def test_save_and_load_keeps_weights_and_both_optimizers(tmp_path):
    model = _model()
    x, y = _batch("float32")
    model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "l2t.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, keras_l2t.L2TWW) and restored.pairs == model.pairs
    np.testing.assert_array_equal(restored(x), model(x))
    for a, b in zip(model.meta_variables, restored.meta_variables):
        np.testing.assert_array_equal(a, b)
    for opt, restored_opt in [(model.optimizer, restored.optimizer), (model.meta_optimizer, restored.meta_optimizer)]:
        assert int(opt.iterations) == int(restored_opt.iterations) == 2
        for a, b in zip(opt.variables, restored_opt.variables):
            np.testing.assert_array_equal(a, b)
    # It keeps training from the restored state.
    restored.fit(x, y, batch_size=3, epochs=1, verbose=0)


def test_train_step_traces_once():
    traces = []

    class CountingL2TWW(keras_l2t.L2TWW):
        def train_step(self, data):
            traces.append(1)  # Python side effect: runs at tracing only
            return super().train_step(data)

    model = CountingL2TWW(tiny_backbone("s", seed=1), tiny_backbone("t", (3, 4), seed=2))
    model.compile()
    x, y = _batch("float32", n=12)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(3, drop_remainder=True), epochs=2, verbose=0)
    assert len(traces) == 1


def test_official_pair_specs():
    r34 = backbones.resnet34(num_classes=10, width=0.125, input_shape=(64, 64, 3))
    r18 = backbones.resnet18(num_classes=10, width=0.125, input_shape=(64, 64, 3))
    assert len(pairs.parse_pairs("all", r34, r18)) == 16
    assert pairs.parse_pairs("one_to_one", r34, r18) == ((1, 1), (2, 2), (3, 3), (4, 4))
    assert pairs.parse_pairs("single", r34, r18) == ((4, 4),)
    r32 = backbones.resnet32(width=0.25)
    vgg = backbones.vgg9_bn(width=0.125)
    assert pairs.parse_pairs("all", r32, vgg) == tuple((m, n) for m in (4, 9, 14) for n in range(5))
    assert pairs.parse_pairs("one_to_one", r32, vgg) == ((4, 0), (9, 1), (14, 2))
    assert pairs.parse_pairs("4-0, 14-4", r32, vgg) == ((4, 0), (14, 4))
    with pytest.raises(ValueError, match="Malformed"):
        pairs.parse_pairs("4:0", r32, vgg)
    with pytest.raises(ValueError, match="Target tap 7 out of range"):
        pairs.parse_pairs("4-7", r32, vgg)


def test_transfer_monitor_writes_the_pair_weight_image_and_histograms(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel

    model = _model()
    x, y = _batch("float32")
    log_dir = str(tmp_path / "transfer")
    monitor = keras_l2t.callbacks.TransferMonitor(x, log_dir, images_per_run=2)
    model.fit(x, y, batch_size=3, epochs=5, verbose=0, callbacks=[monitor])
    events = event_accumulator.EventAccumulator(log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert "transfer/pair_weights" in tags["tensors"] + tags["images"]
    image_steps = [e.step for e in events.Tensors("transfer/pair_weights")]
    assert image_steps == [1, 3, 5]  # the first, every ceil(5 / 2)-th and the last epoch
    assert any(t.startswith("transfer/channel_weights/") for t in tags["tensors"] + tags["histograms"])
    source_taps, target_taps, matrix = keras_l2t.callbacks.pair_weight_matrix(
        model.pairs, model.transfer_weights(x)["pair_weights"]
    )
    assert (source_taps, target_taps, matrix.shape) == ([0, 1], [0, 1], (2, 2))


def test_resnet50_source_taps_and_caffe_inputs():
    source = keras_l2t.sources.applications.resnet50_imagenet(image_size=64, weights=None)
    assert source.feature_channels == (256, 512, 1024, 2048)
    assert [s[0] for s in source.feature_shapes] == [16, 8, 4, 2]
    # The ImageNet-mean image (0 after normalisation) is 255·mean in BGR minus Keras' caffe BGR mean.
    normalised_mean = np.zeros((1, 4, 4, 3), "float32")
    expected = [0.406 * 255 - 103.939, 0.456 * 255 - 116.779, 0.485 * 255 - 123.68]
    np.testing.assert_allclose(keras_l2t.sources.applications.CaffeInputs()(normalised_mean)[0, 0, 0], expected, atol=1e-3)

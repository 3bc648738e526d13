"""The hand-crafted baselines: AT and LwF losses by hand, what each method trains, saving, wiring."""

import dataclasses
import math
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import experiment, losses
from keras_l2t.errors import InputError
from keras_l2t.models import HandCraftedTransfer
from tests.toy_backbones import tiny_backbone

# ------------------------------------------------------------------ losses


def _source_and_target_maps():
    """Two samples of 1×2 maps, 2 channels. Sample 0 by hand (NHWC):

    source: positions (√3, √3), (2, 2)   → mean_c x² = (3, 4) → Q = (0.6, 0.8)
    target: positions (2√2, 0), (√6, 0)  → mean_c x² = (4, 3) → Q = (0.8, 0.6)
    Sample 1 has equal source and target maps.
    """
    r3, r6, r8 = math.sqrt(3), math.sqrt(6), math.sqrt(8)
    source = np.array([[[[r3, r3], [2, 2]]], [[[1, 2], [0, 3]]]], "float32")
    target = np.array([[[[r8, 0], [r6, 0]]], [[[1, 2], [0, 3]]]], "float32")
    return source, target


def test_attention_map_by_hand():
    source, target = _source_and_target_maps()
    np.testing.assert_allclose(losses.attention_map(source)[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(losses.attention_map(target)[0], [0.8, 0.6], rtol=1e-6)
    # Normalised: invariant to the scale of the activations.
    np.testing.assert_allclose(losses.attention_map(7.0 * source), losses.attention_map(source), rtol=1e-6)
    # An all-zero (dead ReLU) map gives zeros, not NaN.
    np.testing.assert_array_equal(losses.attention_map(np.zeros((1, 2, 2, 3), "float32")), np.zeros((1, 4)))


def test_attention_transfer_loss_by_hand():
    source, target = _source_and_target_maps()
    # Mean over (2 samples × 2 positions) of squared differences: (0.2² + 0.2² + 0 + 0) / 4.
    np.testing.assert_allclose(float(losses.attention_transfer_loss(source, target)), 0.02, rtol=1e-5)
    assert float(losses.attention_transfer_loss(target, target)) == 0.0


def test_attention_transfer_resizes_the_source_features_bilinearly():
    # Source 2×4 (both rows 1, 3, 4, 4) to the target's 1×2: bilinear (half-pixel) halving averages
    # neighbours, (2, 4), so mean_c x² = (4, 16) and Q_s = (1, 4)/√17. Resizing the attention map
    # instead would give a different Q_s.
    source = np.array([[[1, 3, 4, 4], [1, 3, 4, 4]]], "float32")[..., None]
    target = np.array([[[2, 1]]], "float32")[..., None]  # x² = (4, 1): Q_t = (4, 1)/√17
    np.testing.assert_allclose(float(losses.attention_transfer_loss(source, target)), 9 / 17, rtol=1e-5)
    matching = 3.0 * np.array([[[1, 2]]], "float32")[..., None]  # Q = (1, 4)/√17 as well
    np.testing.assert_allclose(float(losses.attention_transfer_loss(source, matching)), 0.0, atol=1e-7)


def test_distillation_loss_by_hand():
    # Sample 0: softmax(teacher/2) = (3/4, 1/4), softmax(student/2) = (1/2, 1/2):
    # 2²·KL = 4·(3/4·ln(3/2) + 1/4·ln(1/2)) = ln(27/16). Sample 1: equal logits, 0.
    teacher = np.array([[2 * math.log(3), 0.0], [1.0, -1.0]], "float32")
    student = np.array([[0.0, 0.0], [1.0, -1.0]], "float32")
    value = float(losses.distillation_loss(student, teacher, temperature=2.0))
    np.testing.assert_allclose(value, math.log(27 / 16) / 2, rtol=1e-5)  # batch mean, not / K as kl_div 'mean'
    one = float(losses.distillation_loss(student[:1], teacher[:1] / 2, temperature=1.0))
    np.testing.assert_allclose(one, 0.75 * math.log(1.5) - 0.25 * math.log(2), rtol=1e-5)


def test_distillation_gradient_reaches_the_student_only():
    teacher = tf.constant([[2 * math.log(3), 0.0]])
    student = tf.constant([[0.0, 0.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([teacher, student])
        loss = losses.distillation_loss(student, teacher, temperature=2.0)
    # d/ds T²·KL = T·(p_s − p_t) = 2·((1/2, 1/2) − (3/4, 1/4)).
    np.testing.assert_allclose(tape.gradient(loss, student), [[-0.5, 0.5]], rtol=1e-5)
    assert tape.gradient(loss, teacher) is None


# ------------------------------------------------------------------ model


def _model(method, optimizer=None, **kwargs):
    model = HandCraftedTransfer(
        tiny_backbone("source", (4, 5), seed=1), tiny_backbone("target", (3, 4), seed=2), method=method, **kwargs
    )
    model.compile(optimizer=optimizer)
    return model


def _batch(n=6):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables)]


@pytest.mark.parametrize(
    "method, optimizer", [("at", None), ("lwf", None), ("lwf_at", lambda: keras.optimizers.Adam(1e-3))]
)
def test_training_changes_exactly_what_it_should(method, optimizer):
    model = _model(method, optimizer=optimizer() if optimizer else None)
    x, y = _batch()
    assert (model.lwf_head is not None) == (method != "at")
    assert model.pairs == (None if method == "lwf" else ((0, 0), (1, 1)))  # one_to_one: same-stage taps
    source_before = _values(model.source.variables)  # weights and BN statistics
    target_before = _values(model.target.variables)
    head = model.lwf_head.variables if model.lwf_head is not None else []
    head_before = _values(head)
    history = model.fit(x, y, batch_size=3, epochs=1, validation_data=(x, y), verbose=0).history
    assert not any(_changed(source_before, model.source.variables))
    assert all(_changed(target_before, model.target.variables))
    assert all(_changed(head_before, head))
    assert [v.path for v in model.trainable_variables] == [v.path for v in model.theta_variables]
    shown = {"at": "at" in method, "lwf": "lwf" in method, "ce": True}
    for key, active in shown.items():
        assert (key in history) == active, key
        assert "val_" + key not in history
    assert all(np.isfinite(history["loss"]))


@pytest.mark.parametrize("term", ["at", "lwf"])
def test_transfer_term_trains_the_features_not_the_target_classifier(term):
    """AT reaches every layer up to the taps, LwF also its own head; neither reaches the target's `fc`."""
    model = _model(term)
    x, _ = _batch()
    with tf.GradientTape() as tape:
        _, features = model.target(x, training=True, return_features=True)
        value = model.transfer_losses(x, features)[term]
    gradients = dict(zip([v.path for v in model.theta_variables], tape.gradient(value, model.theta_variables)))
    assert any(path.startswith("lwf_head/") for path in gradients) == (term == "lwf")
    for path, grad in gradients.items():
        if path.startswith("fc/"):
            assert grad is None, path
        else:
            assert grad is not None and np.any(grad.numpy() != 0), path


def test_zero_weights_leave_plain_cross_entropy():
    x, y = _batch()
    model = _model("lwf_at", at_weight=0.0, lwf_weight=0.0)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["at"] == logs["lwf"] == 0.0 and logs["loss"] == logs["ce"]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="method must be one of"):
        _model("fm")
    with pytest.raises(ValueError, match="temperature > 0"):
        _model("lwf", temperature=0.0)


def test_save_and_load_round_trip(tmp_path):
    model = _model("lwf_at", pairs="1-1", temperature=3.0)
    x, y = _batch()
    model.fit(x, y, batch_size=3, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "hand_crafted.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, HandCraftedTransfer)
    assert (restored.method, restored.pairs, restored.temperature) == ("lwf_at", ((1, 1),), 3.0)
    np.testing.assert_array_equal(restored(x), model(x))
    for a, b in zip(model.lwf_head.variables, restored.lwf_head.variables):
        np.testing.assert_array_equal(a, b)
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for a, b in zip(model.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    restored.fit(x, y, batch_size=3, epochs=1, verbose=0)  # keeps training


def test_best_validation_checkpoint_holds_the_target_alone(tmp_path):
    model = _model("lwf_at")
    x, y = _batch()
    path = str(tmp_path / "best_target.keras")
    tracker = keras_l2t.callbacks.BestValidationTracker(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(3), checkpoint_path=path
    )
    model.fit(x, y, batch_size=3, epochs=1, validation_data=(x, y), callbacks=[tracker], verbose=0)
    saved = keras.saving.load_model(path)
    assert isinstance(saved, keras_l2t.Backbone) and saved.name == "target"
    np.testing.assert_allclose(saved(x), model(x), rtol=1e-6)


# ------------------------------------------------------------------ wiring


@pytest.fixture(scope="module")
def saved_source(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("source") / "source.keras")
    tiny_backbone("source", (4, 5), num_classes=7, image_size=32, seed=1).save(path)
    return path


@pytest.mark.parametrize(
    "method, pairs, kind, expected_pairs",
    [
        ("scratch", None, keras_l2t.Backbone, None),
        ("lwf", None, HandCraftedTransfer, None),
        ("at", None, HandCraftedTransfer, ((0, 0), (1, 1))),
        ("lwf_at", None, HandCraftedTransfer, ((0, 0), (1, 1))),
        ("fm", "single", keras_l2t.L2TWW, ((1, 1),)),
        ("fm", "one_to_one", keras_l2t.L2TWW, ((0, 0), (1, 1))),
        ("l2t_w", "single", keras_l2t.L2TWW, ((1, 1),)),
        ("l2t_w", "one_to_one", keras_l2t.L2TWW, ((0, 0), (1, 1))),
        ("l2t_ww", None, keras_l2t.L2TWW, tuple((m, n) for m in (0, 1) for n in range(5))),
    ],
)
def test_every_method_builds_through_the_experiment(saved_source, tmp_path, method, pairs, kind, expected_pairs):
    base = experiment.ExperimentConfig(
        model_dir=str(tmp_path), target="vgg9_bn", width=0.125, source=saved_source, pairs=pairs, lwf_temperature=4.0
    )
    config = dataclasses.replace(base, method=method)
    splits = types.SimpleNamespace(image_size=32, num_classes=3)
    model = experiment.build_model(config, splits, steps_per_epoch=5)
    assert type(model) is kind  # pylint: disable=unidiomatic-typecheck
    assert getattr(model, "pairs", None) == expected_pairs
    if kind is keras_l2t.L2TWW:
        assert model.mode == method
    if kind is HandCraftedTransfer:
        assert (model.method, model.temperature, model.at_weight) == (method, 4.0, 1e3)
        if model.lwf_head is not None:
            assert model.lwf_head.units == 7  # the source's classes
    assert isinstance(model.optimizer, keras_l2t.optimizers.SGD)


def test_meta_warmup_and_where_net_bias_reach_the_built_model(saved_source, tmp_path):
    base = experiment.ExperimentConfig(
        model_dir=str(tmp_path), target="vgg9_bn", width=0.125, source=saved_source, method="l2t_ww", meta_lr=1e-2
    )
    splits = types.SimpleNamespace(image_size=32, num_classes=3)
    plain = experiment.build_model(base, splits, steps_per_epoch=5)
    assert plain.meta_optimizer.get_config()["learning_rate"] == pytest.approx(1e-2)  # no schedule
    assert all(float(net.dense.bias.numpy()[0]) == 1.0 for net in plain.pair_weight_nets)

    # 2 epochs of 5 steps, a meta step every 2nd: a warm-up over 5 meta-steps.
    config = dataclasses.replace(base, meta_warmup_epochs=2, meta_every=2, pair_weight_init=0.25)
    model = experiment.build_model(config, splits, steps_per_epoch=5)
    schedule = model.meta_optimizer._learning_rate  # pylint: disable=protected-access
    rates = [float(schedule(step)) for step in (0, 2, 5, 6, 1000)]
    assert rates == pytest.approx([0.0, 4e-3, 1e-2, 1e-2, 1e-2])
    assert all(np.all(net.dense.bias.numpy() == 0.25) for net in model.pair_weight_nets)
    assert len(model.pair_weight_nets) == len(model.pairs)
    with pytest.raises(InputError, match="meta_warmup_epochs and pair_weight_init"):
        dataclasses.replace(base, meta_warmup_epochs=-1)
    with pytest.raises(InputError, match="longer than the run"):
        dataclasses.replace(base, meta_warmup_epochs=base.epochs + 1)
    with pytest.raises(InputError, match="ReLU6 has no gradient"):
        dataclasses.replace(base, pair_weight_init=6.0)


def test_config_resolves_pairs_per_method_and_validates_weights(tmp_path):
    base = experiment.ExperimentConfig(model_dir=str(tmp_path), source="s.keras")
    assert base.pairs is None  # scratch has none
    assert dataclasses.replace(base, method="at").pairs == "one_to_one"
    assert dataclasses.replace(base, method="l2t_ww").pairs == "all"
    assert dataclasses.replace(base, method="lwf").pairs is None
    assert dataclasses.replace(base, pairs="single", method="at").pairs == "single"
    with pytest.raises(ValueError, match="lwf_temperature"):
        dataclasses.replace(base, method="lwf", lwf_temperature=0.0)
    with pytest.raises(ValueError, match="at_weight"):
        dataclasses.replace(base, method="at", at_weight=-1.0)
    with pytest.raises(ValueError, match="needs a source"):
        experiment.ExperimentConfig(model_dir=str(tmp_path), method="lwf")


def test_flags_reach_the_config():
    from absl import flags  # pylint: disable=import-outside-toplevel

    from train import flags as train_flags  # pylint: disable=import-outside-toplevel

    if "lwf_temperature" not in flags.FLAGS:
        train_flags.define_flags()
    try:
        flags.FLAGS(["main", "--method=at,lwf", "--source=s.keras", "--at_weight=10", "--lwf_temperature=3"])
        methods, base, _ = train_flags.plan_from_flags(flags.FLAGS)
    finally:
        flags.FLAGS.unparse_flags()
    assert methods == ["at", "lwf"]
    assert (base.at_weight, base.lwf_weight, base.lwf_temperature) == (10.0, 1.0, 3.0)
    assert dataclasses.replace(base, method="at").pairs == "one_to_one"

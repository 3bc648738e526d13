"""Several sources in one run: a `SourceStack` transfers exactly as its members would, pairs and logs name sources."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import callbacks as callbacks_lib
from keras_l2t.errors import InputError
from keras_l2t.optimizers import SGD
from keras_l2t.pairs import format_pairs, parse_pairs
from keras_l2t.sources import SourceStack
from tests.toy_backbones import tiny_backbone


def _sources():
    return tiny_backbone("alpha", (4, 5), seed=1), tiny_backbone("beta", (6, 2), seed=3)


def _batch(n=6, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(size=(n, 8, 8, 3)), dtype), tf.constant(rng.integers(0, 3, n))


def test_a_stack_puts_the_members_taps_side_by_side():
    alpha, beta = _sources()
    stack = SourceStack.of([alpha, beta], image_size=8)
    assert stack.member_names == ("alpha", "beta")
    assert stack.feature_channels == (4, 5, 6, 2)
    assert stack.transfer_taps == (0, 1, 2, 3)
    assert [stack.member_tap(t) for t in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    x, _ = _batch()
    logits, features = stack(x, return_features=True)
    alpha_logits, alpha_features = alpha(x, return_features=True)
    _, beta_features = beta(x, return_features=True)
    np.testing.assert_array_equal(logits, alpha_logits)  # the first classifier's
    for mine, theirs in zip(features, alpha_features + beta_features, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert callbacks_lib.tap_layer_names(stack) == ["alpha/tap0", "alpha/tap1", "beta/tap0", "beta/tap1"]


def test_a_member_of_another_input_size_sees_the_images_resized():
    alpha = tiny_backbone("alpha", (4, 5), seed=1, image_size=16)
    stack = SourceStack.of([alpha], image_size=8)
    assert stack.image_shape[:2] == (8, 8)
    assert stack.feature_shapes[0][:2] == (16, 16)
    x, _ = _batch()
    _, features = stack(x, return_features=True)
    _, expected = alpha(keras.layers.Resizing(16, 16)(x), return_features=True)
    np.testing.assert_allclose(features[1], expected[1], rtol=0, atol=1e-6)


def test_pairs_name_their_source():
    stack = SourceStack.of(_sources(), image_size=8)
    target = tiny_backbone("target", (3, 4), seed=2)
    assert parse_pairs("all", stack, target) == tuple((m, n) for m in range(4) for n in range(2))
    assert parse_pairs("1:0-1,0:1-0", stack, target) == ((2, 1), (1, 0))
    assert format_pairs(((2, 1), (1, 0)), stack) == "1:0-1,0:1-0"
    assert len(parse_pairs("single", stack, target)) == 2  # the deepest one-to-one pair of each source
    for spec, message in [
        ("0-1", r"does not say which source: with 2 sources write 'k:m-n'.*0: alpha, 1: beta"),
        ("2:0-1", r"Source 2 out of range: the run has sources 0\.\.1"),
        ("1:2-0", r"Source tap 1:2 out of range: beta has taps 0\.\.1"),
        ("1:a-0", r"Malformed pair '1:a-0'"),
    ]:
        with pytest.raises(InputError, match=message) as error:
            parse_pairs(spec, stack, target)
        assert "\n" not in str(error.value)


def _copy_state(model, reference):
    """Gives `model` the θ and φ of `reference` (same pairs, same order)."""
    for mine, theirs in zip(model.theta_variables + model.meta_variables,
                            reference.theta_variables + reference.meta_variables, strict=True):
        mine.assign(theirs)


def test_two_sources_with_one_sources_pairs_removed_train_as_that_source_alone():
    alpha, beta = _sources()
    target = tiny_backbone("target", (3, 4), seed=2)
    alone = keras_l2t.L2TWW(alpha, target, pairs="0-0,1-1,1-0")
    alone.compile(optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3))
    other_target = tiny_backbone("target", (3, 4), seed=2)
    both = keras_l2t.L2TWW(sources=[alpha, beta], target=other_target, pairs="0:0-0,0:1-1,0:1-0")
    both.compile(optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3))
    _copy_state(both, alone)
    for step in range(3):
        x, y = _batch(seed=step)
        logs_alone = alone.train_on_batch(x, y, return_dict=True)
        logs_both = both.train_on_batch(x, y, return_dict=True)
    for mine, theirs in zip(both.theta_variables + both.meta_variables + both.target.non_trainable_variables,
                            alone.theta_variables + alone.meta_variables + alone.target.non_trainable_variables,
                            strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert logs_both["meta_loss"] == pytest.approx(logs_alone["meta_loss"], rel=1e-5)
    assert "lambda_alpha_1_0" in logs_both and "lambda_1_0" in logs_alone


def test_no_gradient_reaches_a_source_and_each_pair_sees_its_own_source():
    alpha, beta = _sources()
    model = keras_l2t.L2TWW(sources=[alpha, beta], target=tiny_backbone("target", (3, 4), seed=2), pairs="all")
    model.compile(optimizer=SGD(0.1, momentum=0.9))
    before = [v.numpy().copy() for v in alpha.weights + beta.weights]
    source_ids = {id(v) for v in alpha.weights + beta.weights}
    assert not source_ids & {id(v) for v in model.theta_variables + model.meta_variables}
    x, y = _batch()
    with tf.GradientTape() as tape:
        tape.watch(model.source.trainable_weights)
        loss = model.meta_objective(x, y)
    assert all(g is None for g in tape.gradient(loss, alpha.weights + beta.weights))
    for _ in range(2):
        model.train_on_batch(x, y)
    for value, variable in zip(before, alpha.weights + beta.weights, strict=True):
        np.testing.assert_array_equal(value, variable.numpy())
    # The what-net of a pair from beta's tap 0 takes beta's 6 channels, alpha's tap 0 its 4.
    widths = [net.trainable_variables[0].shape[0] for net in model.channel_weight_nets]
    assert widths == [4, 4, 5, 5, 6, 6, 2, 2]


def test_logs_results_and_the_lambda_image_are_per_source(tmp_path):
    model = keras_l2t.L2TWW(sources=list(_sources()), target=tiny_backbone("target", (3, 4), seed=2))
    model.compile(optimizer=SGD(0.1, momentum=0.9))
    x, y = _batch()
    movement = callbacks_lib.MetaNetworkMovement(x, str(tmp_path / "phi0.npz"))
    monitor = callbacks_lib.TransferMonitor(x, str(tmp_path / "tb"))
    history = model.fit(x, y, epochs=1, batch_size=6, verbose=0, callbacks=[movement, monitor])
    logs = {k: v[-1] for k, v in history.history.items()}
    assert {"lambda_alpha_0_0", "lambda_beta_1_1", "lambda_mean_of_alpha", "lambda_mean_of_beta"} <= set(logs)
    alpha_pairs = [v for k, v in logs.items() if k.startswith("lambda_alpha_")]
    summary = movement.summary
    assert summary["pair_sources"] == ["alpha"] * 4 + ["beta"] * 4
    assert summary["lambda_per_source"]["alpha"] == pytest.approx(np.mean(summary["lambda"][:4]))
    assert len(alpha_pairs) == 4
    line = callbacks_lib.MetaNetworkMovement.line(logs)
    assert "mean λ per source: alpha " in line and ", beta " in line
    panels = callbacks_lib.pair_weight_panels(model.source, model.pairs, [np.ones(2)] * 8, "λ")
    assert [panel[0] for panel in panels] == ["alpha: λ", "beta: λ"]
    assert [panel[2] for panel in panels] == [["0", "1"], ["0", "1"]]  # each source's own tap numbers


def test_a_two_source_model_saves_and_loads(tmp_path):
    model = keras_l2t.L2TWW(sources=list(_sources()), target=tiny_backbone("target", (3, 4), seed=2),
                            pairs="0:1-1,1:0-0")
    model.compile(optimizer=SGD(0.1, momentum=0.9))
    x, y = _batch()
    model.train_on_batch(x, y)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.source, SourceStack) and loaded.source.member_names == ("alpha", "beta")
    assert loaded.pairs == model.pairs
    np.testing.assert_allclose(loaded(x), model(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.meta_objective(x, y), model.meta_objective(x, y), rtol=1e-5)


def test_lwf_refuses_several_sources_in_one_line():
    with pytest.raises(InputError, match="lwf distils the source's class predictions.*stacks several") as error:
        keras_l2t.models.HandCraftedTransfer(sources=list(_sources()), target=tiny_backbone("target", (3, 4), seed=2),
                                             method="lwf")
    assert "\n" not in str(error.value)


def test_a_random_source_takes_its_batch_statistics_from_images_not_its_weights():
    source = keras_l2t.sources.load_source("random:resnet32:0.25", 32)
    assert source.name == "random_resnet32" and not source.has_classifier and not source.trainable
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(8, 32, 32, 3)).astype("float32") for _ in range(10)]
    kernels = {w.path: w.numpy().copy() for w in source.weights if "kernel" in w.path}

    def deepest_rms():
        _, features = source(batches[0], return_features=True)
        return float(np.sqrt(np.mean(np.square(features[source.transfer_taps[-1]]))))

    before = deepest_rms()
    keras_l2t.sources.random_init.calibrate_statistics(source, batches)
    assert deepest_rms() < before / 3  # at initial statistics the deep features blow up
    assert not source.trainable
    for w in source.weights:
        if w.path in kernels:
            np.testing.assert_array_equal(w.numpy(), kernels[w.path])

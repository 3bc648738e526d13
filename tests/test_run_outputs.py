"""What a run shows and writes: the short progress bar, 1-based epochs, TensorBoard runs and groups."""

import contextlib
import csv
import io
import os
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import callbacks as callbacks_lib
from keras_l2t import checkpointing
from keras_l2t.experiment import ExperimentConfig, run_experiment
from keras_l2t.optimizers import SGD
from tests.toy_backbones import tiny_backbone

SHORT_L2T_WW_FIGURES = {"loss", "ce", "matching", "meta_loss", "accuracy", "val_accuracy"}
NUM_VAL = 9


def _figures_per_line(text):
    """For each printed bar line (split at redraws), the names of the `name: number` figures it shows."""
    lines = re.split(r"[\r\n\x08]+", text)
    return [re.findall(r"(\w+): -?[\d.]+(?:e[-+]?\d+)?", line) for line in lines if "loss: " in line]


def _tensorboard(log_dir, run):
    from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=import-outside-toplevel

    events = event_accumulator.EventAccumulator(os.path.join(log_dir, run), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [e.step for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}


@pytest.fixture(scope="module")
def l2t_ww_fit(tmp_path_factory):
    """A tiny L2T-ww fitted 2 epochs with run_experiment's loggers (verbose=2), then 1 epoch more twice
    (verbose=1 with the short bar, verbose=2 with Keras' own), recording what each printed."""
    root = str(tmp_path_factory.mktemp("l2t_ww_fit"))
    source = tiny_backbone("source", (4, 5), seed=1)
    target = tiny_backbone("target", (3, 4), seed=2)
    model = keras_l2t.L2TWW(source, target, pairs="all", mode="l2t_ww")
    model.compile(optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 12).astype("int32")
    reads = []  # one entry per validation example read before the cache

    def count(image):
        reads.append(1)
        return image

    def counted(image, label):
        image = tf.py_function(count, [image], tf.float32)
        return tf.ensure_shape(image, (8, 8, 3)), label

    val = tf.data.Dataset.from_tensor_slices((x[:NUM_VAL], y[:NUM_VAL])).map(counted).cache().batch(4)
    test = tf.data.Dataset.from_tensor_slices((x[:6], y[:6])).batch(6)
    log_dir = os.path.join(root, "tensorboard")
    history = os.path.join(root, "history.csv")
    logging_callbacks = [
        callbacks_lib.BestValidationTracker(test),
        callbacks_lib.ResumableCSVLogger(history),
        callbacks_lib.GroupedTensorBoard(log_dir),
        callbacks_lib.TransferMonitor(val, os.path.join(log_dir, "transfer")),
    ]
    printed = {}
    for name, verbose, epochs, bar in (
        ("logged", 2, 2, [*logging_callbacks, callbacks_lib.ShortProgbarLogger()]),
        ("short_bar", 1, 3, [callbacks_lib.ShortProgbarLogger()]),
        ("keras_bar", 2, 4, []),
    ):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            model.fit(
                x, y, batch_size=6, epochs=epochs, initial_epoch=epochs - (2 if name == "logged" else 1),
                validation_data=val, callbacks=bar, verbose=verbose,
            )
        printed[name] = stdout.getvalue()
        if name == "logged":
            printed["reads_after_logged_fit"] = len(reads)
    return {"printed": printed, "history": history, "log_dir": log_dir, "model": model}


def test_progress_bar_shows_six_figures_in_both_verbose_modes(l2t_ww_fit):
    printed = l2t_ww_fit["printed"]
    for name in ("logged", "short_bar"):
        lines = _figures_per_line(printed[name])
        assert lines, printed[name]
        assert all(len(figures) <= 6 and set(figures) <= SHORT_L2T_WW_FIGURES for figures in lines), lines
        assert set(lines[-1]) == SHORT_L2T_WW_FIGURES  # an epoch's last line ends with val_accuracy
    assert len(_figures_per_line(printed["logged"])) == 2  # verbose=2: one line per epoch
    # Keras' own bar, for contrast: also every λ, the entropy and the meta-gradient norm.
    keras_figures = set(_figures_per_line(printed["keras_bar"])[-1])
    pairs = l2t_ww_fit["model"].pairs
    assert {f"lambda_{m}_{n}" for m, n in pairs} | {"channel_weight_entropy", "meta_gradient_norm"} <= keras_figures


def _short_bar_lines(meta_every, strategy=None):
    """A tiny L2T-ww fitted 2 epochs of 2 steps with the short bar (verbose=2): its lines' figures and history."""
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = keras_l2t.L2TWW(tiny_backbone("source", (4, 5), seed=1), tiny_backbone("target", (3, 4), seed=2),
                                pairs="all", mode="l2t_ww", meta_every=meta_every)
        model.compile(optimizer=SGD(0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 12).astype("int32")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        history = model.fit(x[:8], y[:8], batch_size=4, epochs=2, shuffle=False, verbose=2,
                            validation_data=(x[8:], y[8:]), callbacks=[callbacks_lib.ShortProgbarLogger()])
    return _figures_per_line(stdout.getvalue()), history.history


def test_progress_bar_leaves_out_the_meta_loss_of_an_epoch_without_a_meta_step():
    # meta_every=4 with 2 steps per epoch: a meta step at step 1 (epoch 1), none in epoch 2 (steps 3, 4).
    lines, history = _short_bar_lines(meta_every=4)
    assert len(lines) == 2 and "meta_loss" in lines[0] and "meta_loss" not in lines[1], lines
    assert "val_accuracy" in lines[1]
    assert history["meta_loss"][0] > 0 and history["meta_loss"][1] == 0.0  # the log keeps it


def test_progress_bar_reads_the_meta_steps_under_a_strategy():
    # Under tf.distribute the trackers are sync-on-read variables (float() refuses them).
    lines, _ = _short_bar_lines(meta_every=1, strategy=tf.distribute.MirroredStrategy(["/cpu:0"]))
    assert len(lines) == 2 and all("meta_loss" in figures for figures in lines), lines


def test_history_keeps_every_figure_with_epochs_from_1(l2t_ww_fit):
    with open(l2t_ww_fit["history"], encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    pairs = l2t_ww_fit["model"].pairs
    expected = {f"lambda_{m}_{n}" for m, n in pairs} | {"channel_weight_entropy", "meta_gradient_norm"}
    expected |= SHORT_L2T_WW_FIGURES | {"test_accuracy", "val_loss"}
    assert expected <= set(rows[0])
    assert 0.0 <= float(rows[0]["test_accuracy"]) <= 1.0  # filled at epoch 1, which always improves on "no best"


def test_tensorboard_runs_steps_and_transfer_group(l2t_ww_fit):
    log_dir = l2t_ww_fit["log_dir"]
    assert sorted(os.listdir(log_dir)) == ["test", "train", "transfer", "validation"]
    train, validation, test = (_tensorboard(log_dir, run) for run in ("train", "validation", "test"))
    assert train["epoch_accuracy"] == validation["epoch_accuracy"] == [1, 2]
    assert test["epoch_accuracy"][0] == 1 and set(test) == {"epoch_accuracy"}
    assert not any("test" in tag for tag in train)
    transfer_scalars = {tag for tag in train if tag.startswith("transfer/")}
    pairs = l2t_ww_fit["model"].pairs
    expected = {f"transfer/lambda_{m}_{n}" for m, n in pairs}
    expected |= {"transfer/channel_weight_entropy", "transfer/meta_gradient_norm"}
    assert transfer_scalars == expected
    assert not any(tag.startswith("epoch_lambda") or "entropy" in tag for tag in train if tag not in expected)
    images = _tensorboard(log_dir, "transfer")
    assert images["transfer/pair_weights"] == [1, 2]
    assert images["transfer/taps"] == [1]


def test_tap_names_label_the_lambda_matrix(l2t_ww_fit):
    model = l2t_ww_fit["model"]
    assert callbacks_lib.tap_layer_names(model.source) == ["tap0", "tap1"]
    table = callbacks_lib.tap_table(model.pairs, ["tap0", "tap1"], ["tap0", "tap1"])
    assert "| source | 1 | tap1 |" in table and "| target | 0 | tap0 |" in table


def test_transfer_monitor_reads_the_cached_validation_set_once(l2t_ww_fit):
    # A partial read before validation fills the cache would discard it (tf.data's
    # "did not fully read the dataset being cached" warning) and read examples twice.
    assert l2t_ww_fit["printed"]["reads_after_logged_fit"] == NUM_VAL


def test_run_numbers_epochs_from_1_warns_not_and_leaves_no_lock(tmp_path):
    config = ExperimentConfig(
        model_dir=str(tmp_path / "run"), method="scratch", dataset="digits", target="vgg9_bn", width=0.125,
        epochs=2, batch_size=25, steps_per_epoch=2, classes=(5, 6, 7, 8, 9), train_examples_per_class=10,
        verbose=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run_experiment(config)
    assert not [w for w in caught if "shuffle" in str(w.message)], [str(w.message) for w in caught]
    with open(os.path.join(config.model_dir, "history.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    best = rows[results["best_epoch"] - 1]
    assert float(best["val_accuracy"]) == pytest.approx(results["best_val_accuracy"])
    assert float(best["test_accuracy"]) == pytest.approx(results["test_accuracy_at_best_val"])
    assert not os.path.exists(os.path.join(config.model_dir, checkpointing.LOCK_FILE))


def _fit_with_movement(tmp_path, meta_lr, epochs=3):
    source = tiny_backbone("source", (4, 5), seed=1)
    target = tiny_backbone("target", (3, 4), seed=2)
    model = keras_l2t.L2TWW(source, target, pairs="all", mode="l2t_ww")
    model.compile(optimizer=SGD(0.1, momentum=0.9), meta_optimizer=keras_l2t.optimizers.AdamL2(meta_lr))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 12).astype("int32")
    movement = callbacks_lib.MetaNetworkMovement(x[:4], str(tmp_path / "phi0.npz"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        history = model.fit(x, y, batch_size=6, epochs=epochs, shuffle=False, verbose=2,
                            callbacks=[movement, callbacks_lib.ShortProgbarLogger(epoch_lines=[movement.line])])
    return model, movement, history.history, stdout.getvalue()


def test_meta_network_movement_is_logged_printed_and_summarised(tmp_path):
    model, movement, logs, printed = _fit_with_movement(tmp_path, meta_lr=1e-1)
    assert logs["lambda_change_max"][0] == 0.0  # epoch 1 is the reference
    assert logs["lambda_change_max"][-1] > 1e-3 and logs["phi_distance"][-1] > 1e-3
    assert 0.0 < logs["channel_weight_entropy_min"][-1] <= logs["channel_weight_entropy"][-1] + 1e-3
    assert printed.count("meta-networks: w entropy mean") == 3 and "max |Δλ| since epoch 1" in printed
    summary = movement.summary
    assert summary["epoch"] == 3 and len(summary["pairs"]) == len(model.pairs) == len(summary["lambda"])
    assert all(0.0 <= e <= 1.0 for e in summary["channel_weight_entropy"])
    # A resumed run measures from the saved φ₀, not from where it resumes.
    resumed = callbacks_lib.MetaNetworkMovement(None, str(tmp_path / "phi0.npz"))
    resumed.set_model(model)
    resumed.on_train_begin()
    assert resumed._phi_distance() == pytest.approx(summary["phi_distance"])  # pylint: disable=protected-access


def test_frozen_meta_networks_show_no_movement(tmp_path):
    _, _, logs, _ = _fit_with_movement(tmp_path, meta_lr=0.0, epochs=2)
    assert logs["phi_distance"] == [0.0, 0.0] and logs["lambda_change_max"] == [0.0, 0.0]


def test_auto_meta_learning_rate_moves_the_meta_networks_of_a_short_run_and_the_official_does_not(tmp_path):
    # The demo's length: 2 steps per epoch for 30 epochs, 60 meta-steps. `--meta_lr=auto` (ExperimentConfig's
    # default) gives 1e-2 there; the official 1e-4 leaves w uniform and λ where it started (issue #10).
    from keras_l2t.experiment import meta_learning_rate  # pylint: disable=import-outside-toplevel

    config = ExperimentConfig(model_dir="", method="l2t_ww", source="source.keras", epochs=30)
    auto = meta_learning_rate(config, steps_per_epoch=2)
    assert auto == pytest.approx(1e-2)
    (tmp_path / "auto").mkdir()
    (tmp_path / "official").mkdir()
    _, _, moved, _ = _fit_with_movement(tmp_path / "auto", meta_lr=auto, epochs=30)
    _, _, official, _ = _fit_with_movement(tmp_path / "official", meta_lr=1e-4, epochs=30)
    # Measured: auto 0.9893 and 0.62; official 0.999999 and 0.006.
    assert moved["channel_weight_entropy_min"][-1] < 0.995 and max(moved["lambda_change_max"]) > 0.2
    assert official["channel_weight_entropy_min"][-1] > 0.9999 and max(official["lambda_change_max"]) < 0.02


def test_initial_weights_do_not_depend_on_what_loading_the_data_drew_from_the_global_generators(tmp_path, monkeypatch):
    # tfds preparing a dataset for the first time draws from TF's global generator: a source pretrained in that
    # process got other initial weights than its rerun (issue #10's probe). The run seeds again after loading.
    import random  # pylint: disable=import-outside-toplevel

    import keras  # pylint: disable=import-outside-toplevel

    from keras_l2t import experiment  # pylint: disable=import-outside-toplevel

    def run(name):
        config = ExperimentConfig(model_dir=str(tmp_path / name), method="scratch", epochs=1, steps_per_epoch=1,
                                  width=0.25, classes=(5, 6, 7, 8, 9), train_examples_per_class=10, batch_size=25)
        run_experiment(config)
        model = keras.saving.load_model(os.path.join(config.model_dir, "best_target.keras"), compile=False)
        return [w.numpy() for w in model.weights]

    plain = run("plain")
    load_dataset = experiment.data_lib.load_dataset

    def drawing_load_dataset(*args, **kwargs):
        tf.random.uniform([3])
        np.random.rand(3)
        random.random()
        keras.random.uniform([3])
        return load_dataset(*args, **kwargs)

    monkeypatch.setattr(experiment.data_lib, "load_dataset", drawing_load_dataset)
    drawn = run("drawn")
    assert len(plain) == len(drawn)
    for a, b in zip(plain, drawn):
        np.testing.assert_array_equal(a, b)

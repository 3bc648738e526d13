"""Two logical CPUs vs one device: run by tests/test_distribute.py in a subprocess.

TensorFlow fixes its logical devices when its runtime starts, and the pytest
process has started it long before; so each case runs here, in a fresh
process that splits the CPU in two first, and prints one JSON line of
measured differences for the test to assert on.

    python -m tests.distribute_cases CASE [MODEL_DIR]
"""

import os
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=wrong-import-position

# Before anything else touches the runtime. (Not in the worker processes of
# tests/multi_worker_cases.py, which reuse `compare` with one CPU per worker.)
if "TF_CONFIG" not in os.environ:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )

import hashlib  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position

import keras  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

import keras_l2t  # pylint: disable=wrong-import-position
from keras_l2t import distribute  # pylint: disable=wrong-import-position
from keras_l2t.optimizers import SGD, AdamL2  # pylint: disable=wrong-import-position
from tests.toy_backbones import tiny_backbone  # pylint: disable=wrong-import-position

GLOBAL_BATCH = 6  # 3 per replica
STEPS = 2  # the second step's look-ahead starts from non-zero momentum


def _build(method, meta_every=1, recompute_look_ahead=False):
    source = tiny_backbone("source", (4, 5), seed=1)
    target = tiny_backbone("target", (3, 4), seed=2)
    if method == "scratch":  # as keras_l2t.experiment.build_model does
        target.compile(
            optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        target.optimizer.build(target.trainable_variables)  # its slots exist before the first step
        return target
    model = keras_l2t.L2TWW(
        source, target, pairs="all", mode=method, meta_every=meta_every, recompute_look_ahead=recompute_look_ahead
    )
    # A large meta learning rate, so that φ's update is far above rounding.
    model.compile(optimizer=SGD(0.1, momentum=0.9, weight_decay=1e-3), meta_optimizer=AdamL2(1e-2))
    rng = np.random.default_rng(3)  # φ off its symmetric (zero) initialisation
    for v in model.meta_variables:
        v.assign(v.numpy() + 0.3 * rng.normal(size=v.shape))
    return model


def _groups(model):
    """Named variable groups whose one-step updates are compared."""
    if isinstance(model, keras_l2t.L2TWW):
        groups = {
            "target": model.target.trainable_variables,
            "regressors": [v for m in model.matchers for v in m.trainable_variables],
            "batch_norm_statistics": model.target.non_trainable_variables,
            "source": model.source.variables,
            "theta_optimizer": model.theta_optimizer.variables,
        }
        if model.uses_meta_learning:
            groups["meta"] = model.meta_variables
            groups["meta_optimizer"] = model.meta_optimizer.variables
        return groups
    return {
        "target": model.trainable_variables,
        "batch_norm_statistics": model.non_trainable_variables,
        "theta_optimizer": model.optimizer.variables,
    }


def _replica_values(variable):
    """Every replica's copy of a variable (one entry off a strategy)."""
    value = variable.value if hasattr(variable, "value") else variable
    return [np.asarray(tf.convert_to_tensor(v)) for v in getattr(value, "values", [value])]


def _max_abs(array):
    return float(np.max(np.abs(array))) if array.size else 0.0


def _relative(update, reference, group_scale, floor):
    """|update - reference| relative to the reference update.

    Floored at `floor` times the group's largest update: some updates are
    pure rounding noise (a conv bias before BatchNorm has zero gradient).
    """
    scale = max(_max_abs(reference), floor * group_scale)
    diff = _max_abs(update - reference)
    return diff / scale if scale > 0 else diff


def _train(model, x, y):
    before = {name: [_replica_values(v) for v in vs] for name, vs in _groups(model).items()}
    batch_logs = {}  # the last step's logs, as callbacks see them (under a strategy: reduced over the replicas)
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch_logs.update(logs))
    history = model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[record]
    ).history
    after = {name: [_replica_values(v) for v in vs] for name, vs in _groups(model).items()}
    assert all(len(after[name]) == len(before[name]) for name in before), "a group changed size"
    updates = {
        name: [[a - b[0] for a in values] for values, b in zip(after[name], before[name])] for name in before
    }
    logs = {k: float(v[-1]) for k, v in history.items()}
    logs.update({f"last_step/{k}": float(v) for k, v in batch_logs.items()})
    return updates, logs


def _digest(model):
    """A hash of this process's copy of every variable of `model` (equal across workers that agree)."""
    digest = hashlib.sha256()
    for variable in model.variables:
        for value in _replica_values(variable):
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def compare(
    method, meta_every=1, per_replica_look_ahead=False, policy="float64", recompute_look_ahead=False, strategy=None
):
    """Max relative difference of each group's update (and of each log) between one device and `strategy`.

    `strategy`: default mirrored over this process's two logical CPUs (2 replicas); the one-replica
    case passes a one-device mirrored strategy.
    """
    keras.config.set_floatx("float64" if policy == "float64" else "float32")
    floor = 1e-6 if policy == "float64" else 1e-2  # 16-bit rounding noise is far larger
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 8, 8, 3)).astype(keras.config.floatx())
    y = rng.integers(0, 3, STEPS * GLOBAL_BATCH)

    one = _build(method, meta_every, recompute_look_ahead)
    strategy = strategy or distribute.get_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    with strategy.scope():
        two = _build(method, meta_every, recompute_look_ahead)
    two.set_weights(one.get_weights())
    one_updates, one_logs = _train(one, x, y)
    if per_replica_look_ahead:  # negative control: each replica looks ahead on its half-batch
        distribute.all_reduce_mean = lambda tensors: list(tensors)
    two_updates, two_logs = _train(two, x, y)

    result = {"replicas": strategy.num_replicas_in_sync, "updates": {}, "logs": {}, "replicas_agree": True}
    if method != "scratch":
        result["theta_optimizer_class"] = [type(one.optimizer).__name__, type(two.optimizer).__name__]
    if method not in ("scratch", "fm"):
        result["meta_steps"] = [int(_replica_values(m.meta_optimizer.iterations)[0]) for m in (one, two)]
    for name, per_variable in one_updates.items():
        worst = 0.0
        group_scale = max([_max_abs(reference[0]) for reference in per_variable], default=0.0)
        for reference, copies in zip(per_variable, two_updates[name]):
            reference = reference[0]
            for copy in copies:
                worst = max(worst, _relative(copy, reference, group_scale, floor))
            if any(not np.array_equal(copies[0], c) for c in copies[1:]):
                result["replicas_agree"] = False
        result["updates"][name] = worst
    for key, value in one_logs.items():
        result["logs"][key] = abs(two_logs[key] - value) / max(abs(value), 1e-30)
    result["missing_logs"] = sorted(set(one_logs) ^ set(two_logs))
    result["variables_digest"] = _digest(two)
    return result


def jit_compile_is_refused():
    strategy = distribute.get_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = keras_l2t.L2TWW(tiny_backbone("source", seed=1), tiny_backbone("target", (3, 4), seed=2))
        try:
            model.compile(jit_compile=True)
        except ValueError as error:
            return {"refused": True, "message": str(error)}
    return {"refused": False}


def experiment_runs(model_dir):
    """`run_experiment` end to end on digits: L2T-ww, mirrored over 2 CPUs, mixed_bfloat16."""
    from keras_l2t import backbones, experiment  # pylint: disable=import-outside-toplevel

    source_path = os.path.join(model_dir, "source.keras")
    backbones.get_backbone("resnet32", num_classes=5, width=0.25, input_shape=(32, 32, 3)).save(source_path)
    config = experiment.ExperimentConfig(
        model_dir=os.path.join(model_dir, "run"), method="l2t_ww", source=source_path, width=0.125,
        classes=(5, 6, 7, 8, 9), train_examples_per_class=4, batch_size=10, epochs=1, steps_per_epoch=2,
        pairs="14-4", strategy="mirrored", devices=("/cpu:0", "/cpu:1"), mixed_precision="mixed_bfloat16",
        verbose=0,
    )
    built = {}
    build_model = experiment.build_model

    def recording_build_model(*args):
        built["model"] = build_model(*args)
        return built["model"]

    experiment.build_model = recording_build_model
    results = experiment.run_experiment(config)
    model = built["model"]
    return {
        "results_finite": all(np.isfinite(results[k]) for k in ("best_val_accuracy", "final_test_accuracy")),
        "replicas": model.distribute_strategy.num_replicas_in_sync,
        "target_policy": model.target.dtype_policy.name,
        "mirrored_variables": all(
            len(getattr(v.value, "values", ())) == 2 for v in model.theta_variables + model.meta_variables
        ),
        "global_policy_after": keras.config.dtype_policy().name,
    }


CASES = {
    "l2t_ww": lambda: compare("l2t_ww"),
    "l2t_ww_meta_every": lambda: compare("l2t_ww", meta_every=2),
    "l2t_ww_meta_every_one_device": lambda: compare(
        "l2t_ww", meta_every=2, strategy=distribute.get_strategy("mirrored", ["/cpu:0"])
    ),
    "l2t_ww_recompute": lambda: compare("l2t_ww", recompute_look_ahead=True),
    "l2t_ww_per_replica_look_ahead": lambda: compare("l2t_ww", per_replica_look_ahead=True),
    "fm": lambda: compare("fm"),
    "scratch": lambda: compare("scratch"),
    "l2t_ww_mixed_float16": lambda: compare("l2t_ww", policy="mixed_float16"),
    "jit_compile_refused": jit_compile_is_refused,
    "experiment": lambda: experiment_runs(sys.argv[2]),
}


if __name__ == "__main__":
    print(json.dumps(CASES[sys.argv[1]]()))

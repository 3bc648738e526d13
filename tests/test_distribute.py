"""tf.distribute: a step on 2 replicas equals the one-device step on the same global batch.

The 2-replica runs need two logical CPUs, which TensorFlow only allows before
its runtime starts; the pytest process started it long ago, so every case runs
in a fresh subprocess (tests/distribute_cases.py) that prints the measured
relative differences of each group's update, two training steps of a global
batch of 6 (3 per replica), float64 unless stated.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_l2t import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXACT = 1e-5  # the bound in float64; measured: ≤ 4e-10 (≤ 1e-14 outside pre-BN conv biases)


def _run_case(name, *args):
    process = subprocess.run(
        [sys.executable, "-m", "tests.distribute_cases", name, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def _assert_equal_to_one_device(result, tolerance, replicas=2):
    assert result["replicas"] == replicas
    assert result["replicas_agree"], "replicas hold different copies of a variable"
    assert not result["missing_logs"], result["missing_logs"]
    assert result["updates"].get("source", 0.0) == 0.0
    for group, difference in result["updates"].items():
        assert difference <= tolerance, (group, difference, result)
    for key, difference in result["logs"].items():
        assert difference <= tolerance, (key, difference, result)


@pytest.mark.parametrize("case", ["l2t_ww", "fm", "scratch"])
def test_two_replicas_equal_one_device(case):
    # Target, regressors, BN statistics, both optimizers' states (hence the
    # gradients), meta-networks and every logged metric.
    result = _run_case(case)
    _assert_equal_to_one_device(result, EXACT)
    if case == "l2t_ww":
        assert result["meta_steps"] == [2, 2]
        assert {"target", "regressors", "meta", "meta_optimizer", "batch_norm_statistics"} <= set(result["updates"])


@pytest.mark.large
def test_two_replicas_equal_one_device_with_meta_every():
    # meta_every=2 under replicas takes another code path (the condition in cross-replica context).
    result = _run_case("l2t_ww_meta_every")
    _assert_equal_to_one_device(result, EXACT)
    assert result["meta_steps"] == [1, 1]  # a meta step on step 0, none on step 1


def test_meta_every_under_a_one_device_mirrored_strategy():
    # `--strategy=mirrored --speed=fast` on one GPU: a single replica still
    # needs the cross-replica condition (a merge_call inside a tf.cond branch
    # raised a RuntimeError before), and gives the plain model's step.
    result = _run_case("l2t_ww_meta_every_one_device")
    _assert_equal_to_one_device(result, EXACT, replicas=1)
    assert result["meta_steps"] == [1, 1]


@pytest.mark.large
def test_two_replicas_equal_one_device_with_recomputed_look_ahead():
    # recompute_look_ahead's reverse adjoints differentiate through the inner all-reduces too.
    result = _run_case("l2t_ww_recompute")
    _assert_equal_to_one_device(result, EXACT)
    assert result["meta_steps"] == [2, 2]


def test_per_replica_look_ahead_is_a_different_estimator():
    # The negative control: without the all-reduce of the inner gradients,
    # each replica looks ahead on its half-batch and φ's update is far off.
    result = _run_case("l2t_ww_per_replica_look_ahead")
    assert result["updates"]["meta"] > 1e-2, result
    assert result["updates"]["meta_optimizer"] > 1e-2, result


@pytest.mark.large
def test_two_replicas_mixed_float16_close_to_one_device():
    # 16-bit convolutions on 3 vs 6 images round differently: a float32-level tolerance.
    result = _run_case("l2t_ww_mixed_float16")
    assert result["theta_optimizer_class"] == ["LossScaleOptimizer", "LossScaleOptimizer"]
    assert result["meta_steps"] == [2, 2]
    _assert_equal_to_one_device(result, 2e-2)


def test_jit_compile_is_refused_under_a_multi_replica_strategy():
    result = _run_case("jit_compile_refused")
    assert result["refused"], result
    assert "XLA" in result["message"]


@pytest.mark.large
def test_run_experiment_mirrored_and_mixed(tmp_path):
    # ~40 s: digits, L2T-ww, 2 replicas, mixed_bfloat16, with checkpoints and callbacks.
    result = _run_case("experiment", tmp_path)
    assert result == {
        "results_finite": True,
        "replicas": 2,
        "target_policy": "mixed_bfloat16",
        "mirrored_variables": True,
        "global_policy_after": "float32",
    }


def test_get_strategy():
    assert distribute.get_strategy() is tf.distribute.get_strategy()
    mirrored = distribute.get_strategy("mirrored", ["/cpu:0"])
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.get_strategy("tpu")
    with pytest.raises(ValueError, match="mirrored strategy only"):
        distribute.get_strategy("default", ["/cpu:0"])


def test_cross_replica_helpers_are_identities_on_one_replica():
    x = tf.constant([1.0, 2.0])
    assert distribute.num_replicas_in_sync() == 1
    assert distribute.replica_context() is None
    np.testing.assert_array_equal(distribute.scale_for_apply(x), x)
    reduced = distribute.all_reduce_mean([x, None])
    assert reduced[1] is None
    np.testing.assert_array_equal(reduced[0], x)

"""Several machines: Keras `fit` under `MultiWorkerMirroredStrategy`, for real, with two workers on localhost.

Each test starts two worker processes (one CPU each) whose `TF_CONFIG`, set in
their environment before TensorFlow starts, names two free local ports. Every
group of processes started together has a deadline, counted from its first
start: $KERAS_L2T_MULTI_WORKER_DEADLINE seconds, default 1200 (the slowest
group, the `runs` fixture, took 467 s alone on 2 cores, and ran out of the
former fixed 480 s on a busy machine). A hang fails the test with the
processes' output instead of blocking the suite, and processes still running
at the end are killed.

First, two tests of the workaround's hooks themselves (keras_l2t.multi_worker_fit):
they are private hooks of Keras' trainer, which have changed between versions.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.multi_worker_cases import tf_config
from tests.run_files import history as _history
from tests.run_files import read_json as _read_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXACT = 1e-5  # float64, as tests/test_distribute.py (measured: ≤ 2e-10, as on one machine's two CPUs)


def _deadline(default=1200.0):
    """Seconds any group of processes may run: $KERAS_L2T_MULTI_WORKER_DEADLINE, or `default`.

    The default is 2.5 times the slowest group alone on 2 cores (467 s; each start takes ~1 min on 2 busy
    cores). Once a group has hung, later ones get `AFTER_A_HANG` at most: a hang of every group (say, of
    the collectives) costs 20 + 4 × 5 minutes, within CI's 90 beside the rest of the suite (~21).
    """
    value = os.environ.get("KERAS_L2T_MULTI_WORKER_DEADLINE", "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"KERAS_L2T_MULTI_WORKER_DEADLINE must be a positive number of seconds, got {value!r}")
    return seconds


DEADLINE = _deadline()
AFTER_A_HANG = 300.0  # seconds: the deadline of the groups after one that ran out of its deadline
_hung = []  # the processes that ran out of their deadline, in this pytest session
# Results that a single-process run must match, and a resumed multi-worker run must match to the bit.
COMPARED = ("best_val_accuracy", "best_epoch", "test_accuracy_at_best_val", "final_test_accuracy", "epochs_completed")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class _Processes:
    """Processes started together, their output in files; `wait` enforces the deadline, exit kills leftovers."""

    def __init__(self, log_dir):
        self.log_dir = str(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        self.started = []  # (name, process)
        self.began = None  # time of the first start: the deadline counts from it

    def start(self, name, args, env_updates=()):
        self.began = self.began or time.time()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **dict(env_updates))
        with open(self.path(name, "out"), "w", encoding="utf-8") as out, \
                open(self.path(name, "err"), "w", encoding="utf-8") as err:
            process = subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=err, text=True
            )
        self.started.append((name, process))
        return process

    def start_workers(self, name, args, env_updates=(), worker_args=((), ())):
        """Two workers of one cluster on localhost: `name`0 (the chief) and `name`1, each with its `worker_args`."""
        ports = _free_ports(2)
        return [
            self.start(f"{name}{index}", [*args, *extra], {**dict(env_updates), "TF_CONFIG": tf_config(index, ports)})
            for index, extra in enumerate(worker_args)
        ]

    def path(self, name, kind):
        return os.path.join(self.log_dir, f"{name}.{kind}")

    def output(self, name, kind="out"):
        with open(self.path(name, kind), encoding="utf-8") as f:
            return f.read()

    @staticmethod
    def deadline(deadline=DEADLINE):
        """Seconds this group may run: `deadline`, or `AFTER_A_HANG` if shorter once a group has hung."""
        return min(deadline, AFTER_A_HANG) if _hung else deadline

    def end(self, deadline=DEADLINE):
        """When the deadline of this group runs out."""
        return (self.began or time.time()) + self.deadline(deadline)

    def timed_out(self, name, what, deadline=DEADLINE):
        """Fails, showing every process' output: `name` is `what` ("still running") when the deadline ran out."""
        shortened = f", {AFTER_A_HANG:g} s once {_hung[0]} had hung" if _hung else ""
        seconds = self.deadline(deadline)
        _hung.append(name)
        pytest.fail(
            f"{name} {what} after {seconds:g} s, its group's deadline (KERAS_L2T_MULTI_WORKER_DEADLINE="
            f"{DEADLINE:g}{shortened}):\n{self.tails()}"
        )

    def wait(self, deadline=DEADLINE, returncode=0):
        """Waits for every started process; fails (showing their output) on a timeout or another exit status."""
        end = self.end(deadline)
        for name, process in self.started:
            try:
                process.wait(timeout=max(1.0, end - time.time()))
            except subprocess.TimeoutExpired:
                self.timed_out(name, "still running", deadline)
            assert process.returncode == returncode, f"{name} exited with {process.returncode}:\n{self.tails()}"

    def tails(self):
        return "\n".join(
            f"--- {name}.{kind}:\n{self.output(name, kind)[-2500:]}"
            for name, _ in self.started
            for kind in ("out", "err")
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for _, process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


# ----------------------------------------------------------------------------------------- the workaround's hooks


def test_the_mixin_overrides_hooks_this_keras_has():
    # MultiWorkerFitMixin overrides private hooks of Keras' TensorFlow trainer, which have changed between
    # versions (keras_l2t/multi_worker_fit.py): before Keras 3.7 there was no `_make_function`, so its override
    # silently never ran. Each hook must exist with the parameters the mixin expects, and our models must
    # resolve it to the mixin's. (Importing the module raises otherwise; this says which hook differs.)
    # pylint: disable=import-outside-toplevel,protected-access
    import keras

    from keras_l2t import multi_worker_fit
    from keras_l2t.backbones import Backbone
    from keras_l2t.models import L2TWW
    from keras_l2t.models.source_target import SourceTargetModel

    assert multi_worker_fit.hook_mismatches() == [], (keras.__version__, multi_worker_fit.hook_mismatches())
    for model_class in (Backbone, SourceTargetModel, L2TWW):
        assert model_class.__mro__.index(multi_worker_fit.MultiWorkerFitMixin) < model_class.__mro__.index(keras.Model)
        for name in multi_worker_fit.HOOKS:
            mixin_hook = getattr(multi_worker_fit.MultiWorkerFitMixin, name)
            assert getattr(model_class, name) is mixin_hook, (model_class, name)

    class Keras36:  # the trainer of Keras 3.5 and 3.6
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            pass

    class OtherParameters:
        def _maybe_symbolic_build(self, epoch_iterator=None, data_batch=None):
            pass

        def _make_function(self, step_function, reduction):
            pass

    assert multi_worker_fit.hook_mismatches(Keras36) == ["no _make_function"]
    assert len(multi_worker_fit.hook_mismatches(OtherParameters)) == 2
    # The epoch iterator's items: (step, it) in Keras 3.7–3.10, (begin_step, end_step, it) since 3.11.
    batches = iter([None])
    assert multi_worker_fit._batches((0, batches)) is batches
    assert multi_worker_fit._batches((0, 1, batches)) is batches
    with pytest.raises(TypeError, match="epoch iterator yields"):
        multi_worker_fit._batches(batches)


def test_the_mixins_hooks_run_on_this_keras(tmp_path):
    # Would have caught the mixin doing nothing (Keras < 3.7) or raising (Keras 3.7–3.10's epoch iterator
    # yields pairs). One process, no cluster: a one-worker strategy told that it has several workers, so
    # that Keras takes its multi-worker branches (tests/multi_worker_cases.py, mixin_hooks). ~40 s.
    with _Processes(tmp_path) as processes:
        processes.start("hooks", ["-m", "tests.multi_worker_cases", "mixin_hooks"], {"TF_CONFIG": "{}"})
        processes.wait()
        result = json.loads(processes.output("hooks").splitlines()[-1])
    assert result["multi_worker_now"] and not result["multi_worker"], result
    # Keras' own fit fails there as on two workers: Keras took its multi-worker branch.
    error = result["plain_keras_error"]
    assert error and ("PerReplica" in error or "Invalid reduction dimension" in error), error
    # The mixin's hooks ran their multi-worker branch, for fit (with validation) and evaluate ...
    calls = result["hook_calls"]
    assert calls.get("_maybe_symbolic_build multi_worker=True", 0) >= 2, calls
    assert calls.get("_make_function multi_worker=True", 0) >= 2, calls  # the train and the test function
    # ... and gave one device's logs and weights (float64, one replica).
    assert not result["missing_logs"] and len(result["logs"]) == 6, result
    for name, difference in result["logs"].items():
        assert difference <= EXACT, (name, difference)
    assert result["weights"] <= 1e-10, result


# ----------------------------------------------------------------------------------------- one step


def test_a_step_on_two_workers_equals_the_one_device_step(tmp_path):
    # Each worker runs 2 steps of L2T-ww and of the scratch baseline (a plain target `Backbone`) on the
    # 2 workers' replicas, and the same steps on one device: target, regressors, BN statistics, both
    # optimizers' states, meta-networks and every logged figure, float64.
    with _Processes(tmp_path) as processes:
        processes.start_workers("worker", ["-m", "tests.multi_worker_cases", "l2t_ww,scratch,plain_keras"])
        processes.wait()
        results = [
            {r["case"]: r for r in map(json.loads, processes.output(f"worker{index}").splitlines())}
            for index in range(2)
        ]
    for index, worker in enumerate(results):
        for case in ("l2t_ww", "scratch"):
            result = worker[case]
            assert (result["replicas"], result["multi_worker"], result["chief"]) == (2, True, index == 0), result
            assert not result["missing_logs"], result
            assert result["updates"].get("source", 0.0) == 0.0
            for name, difference in {**result["updates"], **result["logs"]}.items():
                assert difference <= EXACT, (case, index, name, difference)
        assert worker["l2t_ww"]["meta_steps"] == [2, 2]
        assert {"target", "regressors", "meta", "meta_optimizer", "batch_norm_statistics"} <= set(
            worker["l2t_ww"]["updates"]
        )
        # The workaround is still needed (keras-team/keras#20585): once this fails, Keras' own `fit`
        # works on several workers and keras_l2t.multi_worker_fit.MultiWorkerFitMixin can go.
        error = worker["plain_keras"]["plain_keras_error"]
        assert error, "plain Keras fit works on several workers now"
        assert "PerReplica" in error or "Invalid reduction dimension" in error, error
    for case in ("l2t_ww", "scratch"):  # both workers hold the same variables, to the bit
        assert results[0][case]["variables_digest"] == results[1][case]["variables_digest"], case


# ----------------------------------------------------------------------------------------- train.main


def _repeats_flag():
    """`--repeats=1` where train.main has that flag (one run per method, in model_dir itself)."""
    from absl import flags  # pylint: disable=import-outside-toplevel

    from train import flags as train_flags  # pylint: disable=import-outside-toplevel

    return ["--repeats=1"] if "repeats" in train_flags.define_flags(flags.FlagValues()) else []


@pytest.fixture(scope="module")
def train_args(tmp_path_factory):
    """A tiny L2T-ww run of train.main on digits under --strategy=multi_worker, --deterministic.

    Its source: a ResNet-32 trained 3 steps on digits 0–4. (With an untrained one the matching loss is
    large, and with the larger auto meta_lr of short runs Adam turns rounding-level differences of the
    meta-gradients into full-size steps: the run is chaotic, and nothing can be compared but the bits.)
    """
    from keras_l2t.experiment import ExperimentConfig, pretrain_source  # pylint: disable=import-outside-toplevel

    source = pretrain_source(
        ExperimentConfig(
            model_dir=str(tmp_path_factory.mktemp("source")), target="resnet32", width=0.125, epochs=1,
            steps_per_epoch=3, batch_size=64, classes=(0, 1, 2, 3, 4), deterministic=True, verbose=0,
        )
    )
    return [
        "-m", "train.main", "--method=l2t_ww", f"--source={source}", "--width=0.125", "--epochs=3",
        "--steps_per_epoch=4", "--batch_size=8", "--train_examples_per_class=10", "--strategy=multi_worker",
        "--meta_lr=1e-4", "--deterministic", "--verbose=0", *_repeats_flag(),
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_args):
    """The train.main run on two workers and the same command in a single process, at the same time.

    Returns their model_dirs and the workers' temporary directory ($TMPDIR).
    """
    root = tmp_path_factory.mktemp("runs")
    dirs = {name: str(root / name / "run") for name in ("two_workers", "single_process")}
    worker_tmp = str(root / "worker_tmp")
    os.makedirs(worker_tmp)
    with _Processes(root / "logs") as processes:
        processes.start_workers(
            "worker", [*train_args, f"--model_dir={dirs['two_workers']}"], {"TMPDIR": worker_tmp}
        )
        processes.start("single", [*train_args, f"--model_dir={dirs['single_process']}"])
        processes.wait()
        dirs["logs"] = processes.tails()
    dirs["worker_tmp"] = worker_tmp
    return dirs


def test_b_train_main_on_two_workers_matches_one_process(runs):
    two, single = runs["two_workers"], runs["single_process"]
    # One run directory, the chief's; the other worker wrote to $TMPDIR and removed it.
    assert os.listdir(os.path.dirname(two)) == ["run"]
    assert not [n for n in os.listdir(runs["worker_tmp"]) if n.startswith("keras_l2t_worker_")]
    for name in ("flags.txt", "best_target.keras", "target_inference.keras", "tensorboard", "checkpoint.json"):
        assert os.path.exists(os.path.join(two, name)), name
    expected, got = _read_json(os.path.join(single, "results.json")), _read_json(os.path.join(two, "results.json"))
    assert got["epochs_completed"] == expected["epochs_completed"] == 3
    # Two workers add their float32 gradients in another order than one device: ~1e-7 relative per
    # step (in float64 the steps agree to 1e-10, test_a), grown by 12 steps of training to ≤ 1e-4 in the
    # losses (measured). Accuracies count whole examples: equal unless a prediction sits that close to
    # a tie. The meta-networks' figures (λ, w entropy, meta-gradient norm, how far φ and λ moved) are
    # second-order or differences of nearly equal numbers, hence more sensitive: measured ≤ 8e-3.
    assert {k: got[k] for k in COMPARED} == {k: expected[k] for k in COMPARED}
    history, reference = _history(two), _history(single)
    assert history[0] == reference[0] and len(history) == len(reference) == 4
    for row, expected_row in zip(history[1:], reference[1:]):
        for name, value, expected_value in zip(history[0], row, expected_row):
            if expected_value == "NA" or "accuracy" in name:
                assert value == expected_value, (name, value, expected_value)
            else:
                tolerance = 1e-3 if "loss" in name or name in ("ce", "matching") else 5e-2
                assert float(value) == pytest.approx(float(expected_value), rel=tolerance, abs=1e-6), name


def test_c_killed_worker_resumes_to_the_uninterrupted_results(tmp_path):
    # The scratch baseline (resuming restores every variable alike; L2T-ww's full state is resumed
    # bit-identically on one machine in tests/test_reliability.py). SIGKILL the second worker
    # mid-epoch; the chief's next collective then fails (or would wait: it is stopped after 60 s, as a
    # cluster would stop it). Restarting both with the same command resumes from the chief's last
    # checkpoint and ends bit-identical to an uninterrupted two-worker run (--deterministic).
    args = [
        "-m", "train.main", "--method=scratch", "--width=0.125", "--epochs=4", "--steps_per_epoch=20",
        "--batch_size=8", "--train_examples_per_class=10", "--strategy=multi_worker", "--deterministic",
        "--verbose=0", *_repeats_flag(),
    ]
    uninterrupted, model_dir = str(tmp_path / "uninterrupted" / "run"), str(tmp_path / "interrupted" / "run")
    pointer = os.path.join(model_dir, "checkpoint.json")
    with _Processes(tmp_path / "logs") as processes, _Processes(tmp_path / "logs_killed") as killed:
        processes.start_workers("uninterrupted", [*args, f"--model_dir={uninterrupted}"], {"TMPDIR": str(tmp_path)})
        chief, other = killed.start_workers("killed", [*args, f"--model_dir={model_dir}"], {"TMPDIR": str(tmp_path)})
        end = killed.end()
        while not (os.path.exists(pointer) and _read_json(pointer)["checkpoint"] >= "ckpt-00001"):
            assert chief.poll() is None and other.poll() is None, killed.tails()
            if time.time() >= end:
                killed.timed_out("killed0", "had written no checkpoint")
            time.sleep(0.05)
        time.sleep(0.3)  # into the next epoch
        other.send_signal(signal.SIGKILL)
        other.wait()
        try:
            chief.wait(timeout=60)
        except subprocess.TimeoutExpired:
            chief.kill()
            chief.wait()
        processes.wait()
    assert not os.path.exists(os.path.join(model_dir, "results.json"))
    killed_after = _read_json(os.path.join(model_dir, _read_json(pointer)["checkpoint"], "state.json"))[
        "epochs_completed"
    ]
    assert 1 <= killed_after < 4

    with _Processes(tmp_path / "logs_resumed") as processes:
        processes.start_workers("resumed", [*args, f"--model_dir={model_dir}"], {"TMPDIR": str(tmp_path)})
        processes.wait()
        for index in range(2):
            assert f"Resuming {model_dir} after epoch {killed_after} of 4" in processes.output(f"resumed{index}")
    assert os.listdir(os.path.dirname(model_dir)) == ["run"]
    expected = _read_json(os.path.join(uninterrupted, "results.json"))
    resumed = _read_json(os.path.join(model_dir, "results.json"))
    assert resumed["resumed_after_epoch"] == killed_after
    assert {k: resumed[k] for k in COMPARED} == {k: expected[k] for k in COMPARED}
    assert _history(model_dir) == _history(uninterrupted)  # every figure of every epoch, to the bit



def test_d_workers_with_different_flags_stop_with_one_line_instead_of_waiting(tmp_path):
    # Workers that disagree would wait for each other's collectives for ever; they check first.
    args = [
        "-m", "train.main", "--method=scratch", "--epochs=1", "--strategy=multi_worker",
        f"--model_dir={tmp_path / 'run'}", *_repeats_flag(),
    ]
    with _Processes(tmp_path / "logs") as processes:
        processes.start_workers("worker", args, {"TMPDIR": str(tmp_path)}, worker_args=([], ["--lr=0.05"]))
        processes.wait(returncode=2)
        for name, _ in processes.started:
            assert "every worker must run the same command" in processes.output(name, "err"), processes.tails()
    assert not os.path.exists(tmp_path / "run")

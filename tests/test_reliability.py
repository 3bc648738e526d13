"""Reliability of training runs: resume after SIGKILL, atomic checkpoints, one run per model_dir,
one-line errors for bad input with nothing written, and numerical faults that stop cleanly."""

import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from keras_l2t import checkpointing
from keras_l2t.experiment import ExperimentConfig, build_model, pretrain_source, run_experiment
from tests.run_files import history as _history
from tests.run_files import read_json as _read_json
from tests.toy_backbones import tiny_backbone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARED_RESULTS = (
    "best_val_accuracy", "best_epoch", "test_accuracy_at_best_val", "final_test_accuracy", "epochs_completed",
)


def _command(module, *args):
    return [sys.executable, "-m", module, *args]


def _run(module, *args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        _command(module, *args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _popen(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(  # pylint: disable=consider-using-with
        _command(module, *args), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(predicate, process, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    """A small ResNet-32 source pretrained briefly on digits 0–4, as .keras.

    (An untrained ResNet's inference-mode features grow to ~20 in the last
    stage; matching them makes the look-ahead diverge, which the NaN guard
    rightly stops.)
    """
    config = ExperimentConfig(
        model_dir=str(tmp_path_factory.mktemp("source")), target="resnet32", width=0.25, epochs=3,
        batch_size=64, classes=(0, 1, 2, 3, 4), verbose=0,
    )
    return pretrain_source(config)


# --------------------------------------------------------------------------- resume


def test_killed_run_resumes_to_bit_identical_results(tmp_path, source_path):
    args = [
        "--method=l2t_ww", f"--source={source_path}", "--epochs=4", "--steps_per_epoch=6", "--deterministic",
        "--verbosity=0",
    ]
    uninterrupted_dir, interrupted_dir = str(tmp_path / "uninterrupted"), str(tmp_path / "interrupted")
    run = _run("train.main", f"--model_dir={uninterrupted_dir}", *args)
    assert run.returncode == 0, run.stderr[-3000:]

    process = _popen("train.main", f"--model_dir={interrupted_dir}", *args)
    pointer = os.path.join(interrupted_dir, checkpointing.POINTER)
    _wait_for(lambda: os.path.exists(pointer) and _read_json(pointer)["checkpoint"] >= "ckpt-00002", process)
    time.sleep(0.3)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not os.path.exists(os.path.join(interrupted_dir, "results.json"))
    killed_after = checkpointing.latest_checkpoint(interrupted_dir)[1]["epochs_completed"]
    assert 2 <= killed_after < 4

    run = _run("train.main", f"--model_dir={interrupted_dir}", *args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Resuming {interrupted_dir} after epoch {killed_after} of 4" in run.stdout
    expected = _read_json(os.path.join(uninterrupted_dir, "results.json"))
    resumed = _read_json(os.path.join(interrupted_dir, "results.json"))
    assert resumed["resumed_after_epoch"] == killed_after
    assert {k: resumed[k] for k in COMPARED_RESULTS} == {k: expected[k] for k in COMPARED_RESULTS}
    # Every logged figure of every epoch, to the last bit (CSV holds float reprs).
    assert _history(interrupted_dir) == _history(uninterrupted_dir)
    a = keras.saving.load_model(os.path.join(uninterrupted_dir, "best_target.keras"), compile=False)
    b = keras.saving.load_model(os.path.join(interrupted_dir, "best_target.keras"), compile=False)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def _tiny_config(model_dir, **overrides):
    fields = dict(
        model_dir=str(model_dir), method="scratch", dataset="digits", target="vgg9_bn", width=0.125, epochs=2,
        batch_size=25, steps_per_epoch=2, classes=(5, 6, 7, 8, 9), train_examples_per_class=10, verbose=0,
    )
    fields.update(overrides)
    return ExperimentConfig(**fields)


def test_checkpoint_restores_every_state_and_survives_a_crash_while_saving(tmp_path, source_path, monkeypatch):
    config = _tiny_config(tmp_path / "run", method="l2t_ww", source=source_path, epochs=3)
    run_experiment(config)
    directory, state = checkpointing.latest_checkpoint(config.model_dir)
    assert state["epochs_completed"] == 3 and state["callbacks"]["BestValidationTracker"]["best_epoch"] >= 1
    assert sorted(n for n in os.listdir(config.model_dir) if n.startswith("ckpt-")) == ["ckpt-00003"]

    from keras_l2t.data import load_dataset  # pylint: disable=import-outside-toplevel

    splits = load_dataset("digits", batch_size=25, classes=config.classes, train_examples_per_class=10)
    fresh = build_model(config, splits, steps_per_epoch=2)
    restorer = checkpointing.TrainingCheckpoint(config.model_dir)
    restorer.set_model(fresh)
    assert restorer.restore() == 3
    assert int(fresh.optimizer.iterations.numpy()) == 6 and int(fresh.meta_optimizer.iterations.numpy()) == 6
    momentum = [fresh.optimizer.momentum_buffer(v).numpy() for v in fresh.theta_variables]
    assert all(np.any(m != 0) for m in momentum[:2])
    assert any(np.any(v.numpy() != 0) for v in fresh.meta_optimizer.variables[2:])  # Adam moments

    # A crash after the new checkpoint's directory is written but before it is published
    # leaves the previous one as the latest, loadable.
    def crash(path, payload):
        if path.endswith(checkpointing.POINTER):
            raise KeyboardInterrupt("killed while publishing")
        original_write_json(path, payload)

    original_write_json = checkpointing.write_json
    monkeypatch.setattr(checkpointing, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        restorer.save(4)
    monkeypatch.undo()
    assert checkpointing.latest_checkpoint(config.model_dir)[0] == directory
    assert restorer.restore() == 3


# ------------------------------------------------------------------ model_dir ownership


def test_second_run_in_the_same_model_dir_refuses_while_the_first_runs(tmp_path):
    model_dir = str(tmp_path / "busy")
    args = [f"--model_dir={model_dir}", "--method=scratch", "--epochs=1000", "--verbosity=0"]
    first = _popen("train.main", *args)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(model_dir, "flags.json")), first)
        second = _run("train.main", *args, timeout=300)
        assert second.returncode == 2
        assert "is in use by a running training (pid" in second.stderr, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.communicate()
    assert not os.path.exists(os.path.join(model_dir, "results.json"))


_HOLD_LOCK = """
import sys, time
from keras_l2t.checkpointing import RunDirectory
run_dir = RunDirectory(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_lock_refuses_at_once_survives_sigkill_and_leaves_no_file(tmp_path):
    model_dir = str(tmp_path / "run")
    lock_file = os.path.join(model_dir, checkpointing.LOCK_FILE)
    holder = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-c", _HOLD_LOCK, model_dir], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.time()
        message = re.escape(f"in use by a running training (pid {holder.pid})")
        with pytest.raises(checkpointing.RunDirectoryError, match=message):
            checkpointing.RunDirectory(model_dir).acquire()
        assert time.time() - start < 5  # refused, not waited for
    finally:
        holder.kill()  # SIGKILL: no cleanup runs; the OS drops the lock, the file stays
        holder.communicate()
    assert os.path.exists(lock_file)
    with checkpointing.RunDirectory(model_dir) as run_dir:  # the leftover file does not block
        assert os.path.exists(lock_file)
        with pytest.raises(checkpointing.RunDirectoryError, match="in use"):
            checkpointing.RunDirectory(model_dir).acquire()
        run_dir.clear()  # --overwrite keeps the lock
        assert os.path.exists(lock_file)
    assert not os.path.exists(lock_file)


def test_lock_file_is_removed_when_the_run_ends_by_an_exception(tmp_path):
    model_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        with checkpointing.RunDirectory(model_dir):
            raise KeyboardInterrupt
    assert os.listdir(model_dir) == []
    checkpointing.RunDirectory(model_dir).acquire().release()  # and the directory can be taken again
    assert os.listdir(model_dir) == []


# --------------------------------------------------------------------- in-process CLI


@pytest.fixture
def cli(capsys):
    """Runs train.main in this process: (exit code, stdout, stderr)."""
    from train import flags as train_flags  # pylint: disable=import-outside-toplevel
    from train import main as train_main  # pylint: disable=import-outside-toplevel
    from train.errors import run_reporting_errors  # pylint: disable=import-outside-toplevel

    if "model_dir" not in flags.FLAGS:
        train_flags.define_flags()

    def invoke(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train.main", "--verbosity=0", *args])
        capsys.readouterr()
        try:
            run_reporting_errors(lambda: train_main.run(flags.FLAGS), show_traceback=False)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        finally:
            flags.FLAGS.unparse_flags()
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_changed_flags_refuse_finished_runs_are_reused_and_overwrite_starts_over(tmp_path, cli):
    model_dir = str(tmp_path / "run")
    base = [f"--model_dir={model_dir}", "--method=scratch", "--epochs=1", "--steps_per_epoch=1", "--width=0.125"]
    assert cli(*base)[0] == 0
    first = _read_json(os.path.join(model_dir, "results.json"))
    before = {n: os.path.getmtime(os.path.join(model_dir, n)) for n in ("results.json", "flags.json")}

    code, _, err = cli(*base, "--lr=0.05")
    assert code == 2
    assert "holds a run with other flags (lr: saved 0.1, now 0.05)" in err and "--overwrite" in err
    assert "Leaving --model_dir out gives each configuration a run directory of its own" in err
    assert len([l for l in err.splitlines() if l.startswith("error: ")]) == 1 and "Traceback" not in err
    assert {n: os.path.getmtime(os.path.join(model_dir, n)) for n in before} == before

    code, out, _ = cli(*base)  # the same flags: the finished run is reported, not rerun
    assert code == 0 and f"= {first['test_accuracy_at_best_val']:.4f}" in out
    assert f"Finished run found in {model_dir}; showing its results (use --overwrite to retrain)." in out
    assert {n: os.path.getmtime(os.path.join(model_dir, n)) for n in before} == before

    code, _, _ = cli(*base, "--lr=0.05", "--overwrite")
    assert code == 0
    assert _read_json(os.path.join(model_dir, "flags.json"))["lr"] == 0.05


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, cli):
    model_dir = tmp_path / "mine"
    model_dir.mkdir()
    (model_dir / "notes.txt").write_text("my files")
    for extra in ([], ["--overwrite"]):  # never cleared, even when told to overwrite
        code, _, err = cli(f"--model_dir={model_dir}", "--method=scratch", "--epochs=1", *extra)
        assert code == 2 and "not a keras-l2t run directory" in err
        assert os.listdir(model_dir) == ["notes.txt"]


# ------------------------------------------------------------------------ bad input


def _png(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


def _image_folder(root, classes=("a", "b"), per_class=4):
    for split in ("train", "test"):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                _png(folder / f"{i}.png", hash((split, c, i)) % 1000)
    return root


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, source_path):
    root = tmp_path_factory.mktemp("bad_inputs")
    corrupt = root / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a keras archive")
    plain = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    plain.save(root / "plain.keras")
    empty_class = _image_folder(root / "empty_class")
    for f in (empty_class / "train" / "b").iterdir():
        f.unlink()
    bad_image = _image_folder(root / "bad_image")
    (bad_image / "train" / "a" / "broken.jpg").write_bytes(b"not an image at all")
    return {
        "src": source_path, "corrupt": str(corrupt), "plain": str(root / "plain.keras"),
        "empty_class": str(empty_class), "bad_image": str(bad_image),
        "empty": str(root / "no_data_here"),
    }


BAD_INPUTS = {
    "unknown dataset": (["--dataset=imagenet22k"], "Unknown dataset 'imagenet22k'"),
    "unknown method": (["--method=distill"], "Unknown method"),
    "malformed pairs": (["--method=fm", "--source={src}", "--pairs=1-x"], "Malformed pair '1-x'"),
    "tap out of range": (["--method=fm", "--source={src}", "--pairs=20-0"], "Source tap 20 out of range"),
    "target tap out of range": (["--method=fm", "--source={src}", "--pairs=0-9"], "Target tap 9 out of range"),
    "pair without its source": (
        ["--method=fm", "--source={src},{src}", "--pairs=0-0"], "does not say which source: with 2 sources"
    ),
    "unknown target": (["--target=vgg99"], "Target 'vgg99' is neither one of"),
    "two auto sources": (["--method=fm", "--source=auto,auto", "--source_classes=0"], "names auto twice"),
    "lwf from several sources": (["--method=lwf", "--source={src},{src}"], "stacks several sources"),
    "missing source": (["--method=fm", "--source=/nonexistent/source.keras"], "is neither a file"),
    "corrupt source": (["--method=fm", "--source={corrupt}"], "could not be loaded"),
    "incompatible source": (["--method=fm", "--source={plain}"], "not a keras_l2t Backbone"),
    "empty class folder": (
        ["--dataset=folder:{empty_class}", "--method=scratch", "--image_size=32", "--batch_size=2"],
        "train/b' has no readable image files",
    ),
    "unreadable image": (
        ["--dataset=folder:{bad_image}", "--method=scratch", "--image_size=32", "--batch_size=2"],
        "broken.jpg' is not a readable image",
    ),
    "absent dataset": (["--dataset=stanford_dogs", "--method=scratch", "--data_dir={empty}"], "not prepared"),
    "zero epochs": (["--epochs=0"], "epochs must be positive, got 0"),
    "zero batch size": (["--batch_size=0"], "batch_size must be positive, got 0"),
    "zero learning rate": (["--lr=0"], "lr and width must be positive"),
    "negative learning rate": (["--lr=-0.1"], "lr and width must be positive"),
    "zero width": (["--width=0"], "lr and width must be positive"),
    "zero image size": (["--image_size=0"], "image_size must be positive, got 0"),
    "zero examples per class": (["--train_examples_per_class=0"], "train_examples_per_class must be positive"),
    "zero steps per epoch": (["--steps_per_epoch=0"], "steps_per_epoch must be positive, got 0"),
    "negative momentum": (["--momentum=-0.5"], "momentum and weight_decay must be >= 0"),
    "negative inner steps": (["--inner_steps=-1"], "inner_steps must be >= 0"),
    "zero meta_every": (["--meta_every=0"], "meta_every must be >= 1, got 0"),
    "negative meta lr": (["--meta_lr=-1"], "meta_lr, meta_weight_decay, beta and inner_steps must be >= 0"),
    "zero source epochs": (["--source_epochs=0"], "epochs must be positive, got 0"),
    "overlapping source classes": (["--source_classes=5,6"], "overlap --classes"),
    "batch larger than the data": (["--method=scratch", "--batch_size=100"], "fewer than batch_size=100"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_line_exit_2_and_writes_nothing(tmp_path, cli, bad_files, case):
    args, message = BAD_INPUTS[case]
    args = [a.format(**bad_files) for a in args]
    model_dir = tmp_path / "run"
    start = time.time()
    code, _, err = cli(f"--model_dir={model_dir}", "--epochs=1", "--steps_per_epoch=1", *args)
    assert code == 2, err[-2000:]
    error_line = err.strip().splitlines()[-2]
    assert error_line.startswith("error: ") and message in error_line, err[-2000:]
    assert time.time() - start < 60
    assert not model_dir.exists()  # nothing a later run could mistake for results


def test_unreadable_images_are_skipped_when_asked(tmp_path, cli, bad_files):
    model_dir = tmp_path / "run"
    code, _, err = cli(
        f"--model_dir={model_dir}", f"--dataset=folder:{bad_files['bad_image']}", "--method=scratch",
        "--image_size=32", "--batch_size=2", "--target=vgg9_bn", "--width=0.125", "--epochs=1",
        "--skip_unreadable_images",
    )
    assert code == 0, err[-2000:]
    assert _read_json(model_dir / "results.json")["num_train"] + _read_json(model_dir / "results.json")[
        "num_val"
    ] == 8  # the 9th file, broken.jpg, was left out


@pytest.mark.parametrize(
    "args, message",
    [(["--epochs=0"], "epochs must be positive"), (["--arch=resnet99"], "resnet99")],
)
def test_pretrain_source_bad_input(tmp_path, args, message):
    model_dir = tmp_path / "source"
    run = _run("train.pretrain_source", f"--model_dir={model_dir}", *args, timeout=120)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert not model_dir.exists()


# --------------------------------------------------------------------- numerical faults


def test_absurd_learning_rate_stops_with_the_step_and_component(tmp_path):
    model_dir = str(tmp_path / "nan")
    run = _run(
        "train.main", f"--model_dir={model_dir}", "--method=scratch", "--lr=1e30", "--epochs=2",
        "--steps_per_epoch=5", "--verbosity=0", timeout=300,
    )
    assert run.returncode == 3, run.stderr[-3000:]
    line = [l for l in run.stderr.splitlines() if l.startswith("error: ")][0]
    assert "training stopped at step" in line and "non-finite loss=" in line
    assert "Last good checkpoint: none" in line
    assert not os.path.exists(os.path.join(model_dir, "results.json"))
    assert not os.path.exists(os.path.join(model_dir, checkpointing.POINTER))


class PoisonTargetAtEpoch(keras.callbacks.Callback):
    """Fault injection: writes NaN into the target's first kernel when `epoch` begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.target.trainable_variables[0]
            kernel.assign(np.full(kernel.shape, np.nan, kernel.dtype))


def test_nan_mid_run_stops_naming_step_component_and_a_loadable_last_checkpoint(tmp_path, source_path):
    config = _tiny_config(tmp_path / "run", method="l2t_ww", source=source_path, epochs=3)
    with pytest.raises(checkpointing.NonFiniteError) as error:
        run_experiment(config, callbacks=[PoisonTargetAtEpoch(1)])
    message = str(error.value)
    assert "training stopped at step 3 (batch 1 of this epoch)" in message
    assert "non-finite ce=" in message and "matching=nan" in message and "meta_loss=nan" in message
    assert f"{os.path.join(config.model_dir, 'ckpt-00001')} (after epoch 1)" in message
    assert not os.path.exists(os.path.join(config.model_dir, "results.json"))
    assert not os.path.exists(os.path.join(config.model_dir, "ckpt-00002"))

    from keras_l2t.data import load_dataset  # pylint: disable=import-outside-toplevel

    splits = load_dataset("digits", batch_size=25, classes=config.classes, train_examples_per_class=10)
    fresh = build_model(config, splits, steps_per_epoch=2)
    restorer = checkpointing.TrainingCheckpoint(config.model_dir)
    restorer.set_model(fresh)
    assert restorer.restore() == 1
    assert not checkpointing.non_finite_variables(fresh.variables)
    assert int(fresh.optimizer.iterations.numpy()) == 2


def test_checkpoint_refuses_non_finite_variables(tmp_path):
    model = tiny_backbone("net")
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    checkpoint = checkpointing.TrainingCheckpoint(str(tmp_path))
    checkpoint.set_model(model)
    model.trainable_variables[0].assign(np.full(model.trainable_variables[0].shape, np.inf, "float32"))
    with pytest.raises(checkpointing.NonFiniteError, match="non-finite variables"):
        checkpoint.on_epoch_end(0)
    assert checkpointing.latest_checkpoint(str(tmp_path)) is None

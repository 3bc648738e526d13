"""The command line: grouped --help, --print_config, run directories per configuration, flags.txt replay,
which exceptions become one-line errors, TensorFlow's start-up noise, and the console commands."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from keras_l2t import checkpointing
from keras_l2t.data.availability import DatasetNotFoundError
from keras_l2t.errors import InputError
from keras_l2t.errors import SourceUnavailableError
from train import cli_help
from train import flags as train_flags
from train import main as train_main
from train import presets
from train import pretrain_source as train_pretrain
from train import reproduce
from train import run_dirs
from train import startup
from train.errors import run_reporting_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ExperimentConfig fields added after run directories existed (the hash of a config at their defaults is the
# hash of one without them).
LATER_FIELDS = ("full_precision_look_ahead", "meta_warmup_epochs", "pair_weight_init", "second_statistics_update",
                "source_blocks")
TINY = ["--method=scratch", "--epochs=1", "--steps_per_epoch=1", "--width=0.125", "--verbose=0"]


def _parsed(define, *args):
    flag_values = flags.FlagValues()
    names = define(flag_values)
    flag_values(["prog", *args])
    return flag_values, names


def _help(define, groups, preset_names, *args):
    flag_values, names = _parsed(define, *args)
    return names, cli_help.render_help(flag_values, names, "DOC", groups, preset_names)


# ---------------------------------------------------------------------------------------------- --help


def _sections(text):
    """{heading: [flag names listed under it]} of a help text."""
    sections, heading = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":") and not line.startswith("Flags"):
            heading = line[:-1]
            sections[heading] = []
        elif line.startswith("  --") and heading is not None:
            sections[heading].append(line[4:].split(":", 1)[0].removeprefix("[no]"))
    return sections


@pytest.mark.parametrize("define, preset_names", [
    (train_flags.define_flags, presets.preset_names()),
    (train_flags.define_pretrain_flags, train_pretrain.PRESET_FLAGS),
])
def test_help_lists_every_flag_of_the_entry_point_under_its_heading(define, preset_names):
    names, text = _help(define, train_flags.HELP_GROUPS, preset_names)
    assert text.startswith("DOC\n")
    shown = _sections(text)
    assert list(shown) == [h for h, group in train_flags.HELP_GROUPS if set(group) & set(names)]  # no "Other"
    assert sorted(n for group in shown.values() for n in group) == sorted(names)  # each flag once
    for heading, group in train_flags.HELP_GROUPS:
        assert set(shown.get(heading, ())) == set(group) & set(names), heading
    assert "--[no]overwrite: " in text and "(default: 0.1)" in text  # booleans, plain defaults
    assert "--epochs: Training epochs. (default: per --dataset: digits 30; others 200)" in " ".join(text.split())


def test_help_shows_the_preset_value_of_the_dataset_given_before_it():
    _, text = _help(train_flags.define_flags, train_flags.HELP_GROUPS, presets.preset_names(), "--dataset=cifar100")
    text = " ".join(text.split())  # unwrapped
    assert "(default: 200 for --dataset=cifar100)" in text and "(default: vgg9_bn for --dataset=cifar100)" in text
    assert "per --dataset" not in text


def test_reproduce_help_works_from_any_directory(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "train.reproduce", "--help"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "\nStudy:\n" in run.stdout and "\nOptimisation:\n" in run.stdout
    for name in ("config", "methods", "seeds", "output_dir", "dry_run", "epochs", "lr", "source", "verbose"):
        assert f"--{name}:" in run.stdout or f"--[no]{name}:" in run.stdout, name
    assert "fashion_mnist_cpu" in run.stdout and "--model_dir:" not in run.stdout  # set per run
    assert not startup.STARTUP_NOISE.search(run.stderr), run.stderr[-3000:]
    assert os.listdir(tmp_path) == []


def test_reproduce_finds_its_shipped_configs_by_name_or_old_path():
    shipped = os.path.join(reproduce.CONFIGS_DIR, "fashion_mnist_cpu.cfg")
    assert os.path.isfile(shipped)
    assert reproduce.config_path("fashion_mnist_cpu") == shipped
    assert reproduce.config_path("configs/fashion_mnist_cpu.cfg") == shipped
    assert reproduce.config_path("/no/such.cfg") == "/no/such.cfg"  # absl then says it cannot read it


# ------------------------------------------------------------------------- configuration and run dirs


def test_print_config_prints_every_field_per_run_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flag_values, _ = _parsed(train_flags.define_flags, "--print_config", "--method=scratch,l2t_ww", "--lr=0.05")
    train_main.run(flag_values)
    printed = json.loads(capsys.readouterr().out)
    assert os.listdir(tmp_path) == []
    model_dir = printed["model_dir"]
    assert model_dir.startswith(os.path.join("runs", "digits-scratch_l2t_ww-"))
    scratch, l2t = printed["runs"]["scratch"], printed["runs"]["l2t_ww"]
    assert set(scratch) == {f.name for f in dataclasses.fields(train_flags.ExperimentConfig)}
    assert (scratch["epochs"], scratch["width"], scratch["lr"], scratch["classes"]) == (30, 0.25, 0.05, [5, 6, 7, 8, 9])
    assert (l2t["pairs"], l2t["model_dir"]) == ("all", os.path.join(model_dir, "l2t_ww"))
    assert l2t["source"] == os.path.join(model_dir, "source", "source.keras")
    source = printed["source_pretraining"]
    assert (source["target"], source["classes"], source["epochs"]) == ("resnet32", [0, 1, 2, 3, 4], 15)


def _write_pngs(folder, count, shape):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(np.full(shape, 10 * i, np.uint8)).numpy())


def test_a_folder_of_small_images_gets_the_32_pixel_setting_and_says_why(tmp_path):
    for name, shape in (("small", (40, 64, 3)), ("large", (120, 90, 3))):
        for split in ("train", "test"):
            for class_name in ("a", "b"):
                _write_pngs(tmp_path / name / split / class_name, 3, shape)
    small = _parsed(train_flags.define_flags, f"--dataset=folder:{tmp_path / 'small'}", "--method=l2t_ww")[0]
    _, base, _ = train_flags.plan_from_flags(small)
    assert (base.image_size, base.target, base.source, base.batch_size) == (
        32, "vgg9_bn", "tinyimagenet_resnet32", 128)
    key, reason = presets.folder_preset_key(f"folder:{tmp_path / 'small'}")
    assert key == "folder_small" and "64 px (<= 64)" in reason
    large = _parsed(train_flags.define_flags, f"--dataset=folder:{tmp_path / 'large'}", "--method=l2t_ww")[0]
    assert train_flags.plan_from_flags(large)[1].image_size == 224
    assert train_flags.plan_from_flags(large)[1].source == "resnet34_imagenet"
    # An explicit --image_size keeps the folder preset's networks and reads no image.
    forced = _parsed(train_flags.define_flags, "--dataset=folder:/nonexistent", "--image_size=64",
                     "--method=scratch")[0]
    assert (train_flags.plan_from_flags(forced)[1].image_size, train_flags.plan_from_flags(forced)[1].target) == (
        64, "resnet18")


def test_speed_fast_is_a_meta_step_every_fourth_step_and_refuses_a_contradicting_flag():
    def look_ahead(*args):
        base = train_flags.plan_from_flags(_parsed(train_flags.define_flags, "--method=l2t_ww", *args)[0])[1]
        return base.inner_steps, base.first_order, base.meta_every

    assert look_ahead() == (2, False, 1)
    assert look_ahead("--speed=fast") == (2, False, 4)
    assert look_ahead("--speed=fast", "--meta_every=4", "--inner_steps=1") == (1, False, 4)  # agreeing flags combine
    assert look_ahead("--meta_every=2") == (2, False, 2)
    with pytest.raises(InputError, match="--speed=fast sets --meta_every=4; drop --meta_every=2"):
        look_ahead("--speed=fast", "--meta_every=2")
    # A different look-ahead is a different configuration: its own run directory.
    assert _model_dir("--speed=fast") != _model_dir()


def test_a_16_bit_look_ahead_needs_mixed_precision_and_leaves_other_run_directories_alone():
    def base(*args):
        return train_flags.plan_from_flags(_parsed(train_flags.define_flags, "--method=l2t_ww", *args)[0])[1]

    assert base().full_precision_look_ahead is True
    assert base("--mixed_precision=mixed_bfloat16", "--nofull_precision_look_ahead").full_precision_look_ahead is False
    with pytest.raises(InputError, match="only applies under mixed precision"):
        base("--nofull_precision_look_ahead")
    # The field came after runs existed: at its default it is left out of the run directory's hash.
    default = base()
    assert run_dirs.config_hash(default) == run_dirs.config_hash(
        {k: v for k, v in dataclasses.asdict(default).items() if k not in LATER_FIELDS and k not in run_dirs.IGNORED_FIELDS})
    assert _model_dir("--method=l2t_ww", "--mixed_precision=mixed_bfloat16") != _model_dir(
        "--method=l2t_ww", "--mixed_precision=mixed_bfloat16", "--nofull_precision_look_ahead")


def test_meta_warmup_and_where_net_bias_flags_reach_the_config_and_the_run_directory():
    def base(*args):
        return train_flags.plan_from_flags(_parsed(train_flags.define_flags, "--method=l2t_ww", *args)[0])[1]

    assert (base().meta_warmup_epochs, base().pair_weight_init) == (0, 1.0)  # official: none, 1.0
    assert (base("--meta_warmup_epochs=3", "--pair_weight_init=0.5").meta_warmup_epochs,
            base("--pair_weight_init=0.5").pair_weight_init) == (3, 0.5)
    with pytest.raises(InputError, match="meta_warmup_epochs and pair_weight_init must be >= 0"):
        base("--pair_weight_init=-1")
    # Added after runs existed: at their defaults they leave the run directory's hash as it was.
    default = base()
    assert run_dirs.config_hash(default) == run_dirs.config_hash({
        k: v for k, v in dataclasses.asdict(default).items()
        if k not in LATER_FIELDS and k not in run_dirs.IGNORED_FIELDS
    })
    assert base().second_statistics_update and not base("--nosecond_statistics_update").second_statistics_update
    dirs = {_model_dir("--method=l2t_ww"), _model_dir("--method=l2t_ww", "--meta_warmup_epochs=2"),
            _model_dir("--method=l2t_ww", "--pair_weight_init=0.5"),
            _model_dir("--method=l2t_ww", "--nosecond_statistics_update")}
    assert len(dirs) == 4
    # Fixed references: the directories these configurations had before the fields existed (00425cf), so
    # that users' finished runs are found again after an upgrade.
    assert _model_dir("--method=l2t_ww") == os.path.join("runs", "digits-l2t_ww-38c88930")
    assert _model_dir() == os.path.join("runs", "digits-scratch_fm_l2t_ww_frozen_l2t_ww-097f1d42")


def _model_dir(*args):
    flag_values, _ = _parsed(train_flags.define_flags, *args)
    return train_flags.plan_from_flags(flag_values)[1].model_dir


def test_run_directories_differ_per_configuration_and_only_then():
    default = _model_dir()
    assert default.startswith(os.path.join("runs", "digits-scratch_fm_l2t_ww_frozen_l2t_ww-"))
    assert _model_dir() == default
    assert _model_dir("--verbose=2", "--data_dir=/elsewhere") == default  # may differ when resuming
    assert _model_dir("--epochs=30") == default  # the preset's value, spelled out
    others = {_model_dir("--epochs=2"), _model_dir("--lr=0.05"), _model_dir("--method=scratch"),
              _model_dir("--source_epochs=3"), _model_dir("--repeats=3")}
    assert len(others) == 5 and default not in others
    assert _model_dir("--repeats=1") == default
    assert _model_dir("--model_dir=mine") == "mine"
    assert os.path.basename(
        _model_dir("--dataset=folder:/data/My Photos/", "--method=scratch", "--image_size=224")
    ).startswith("My_Photos-scratch-")
    flag_values, _ = _parsed(train_flags.define_pretrain_flags, "--arch=resnet18")
    assert train_flags.pretrain_config_from_flags(flag_values).model_dir.startswith(
        os.path.join("runs", "digits-source_resnet18-"))


def test_a_finished_run_is_found_again_and_flags_txt_replays_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flag_values, _ = _parsed(train_flags.define_flags, *TINY)
    train_main.run(flag_values)
    out = capsys.readouterr().out
    [model_dir] = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Run directory: ")]
    assert model_dir.startswith(os.path.join("runs", "digits-scratch-")) and "Finished run found" not in out
    flagfile = os.path.join(model_dir, "flags.txt")
    assert f"--model_dir={model_dir}\n" in open(flagfile, encoding="utf-8").read()
    results = os.path.join(model_dir, "results.json")
    stamp = os.path.getmtime(results)

    replayed, _ = _parsed(train_flags.define_flags, f"--flagfile={flagfile}")
    train_main.run(replayed)
    out = capsys.readouterr().out
    assert (f"Finished run found in {model_dir}; showing its results (use --overwrite to retrain)." in out)
    assert os.path.getmtime(results) == stamp and os.listdir("runs") == [os.path.basename(model_dir)]

    other, _ = _parsed(train_flags.define_flags, f"--flagfile={flagfile}", "--lr=0.05")
    with pytest.raises(checkpointing.RunDirectoryError, match="Leaving --model_dir out gives each configuration"):
        train_main.run(other)


# ------------------------------------------------------------------------------------------ errors


def _exit_of(function, capsys, show_traceback=False):
    with pytest.raises(SystemExit) as exit_:
        run_reporting_errors(function, show_traceback)
    return exit_.value.code, capsys.readouterr().err


def _raise(error):
    def function():
        raise error

    return function


def test_only_input_errors_and_numerical_faults_become_one_line_exits(capsys):
    code, err = _exit_of(_raise(InputError("bad\nflag")), capsys)
    assert code == 2 and err.splitlines()[0] == "error: bad flag" and "Traceback" not in err
    code, err = _exit_of(_raise(checkpointing.NonFiniteError("loss is nan")), capsys)
    assert code == 3 and err.startswith("error: loss is nan")
    for library_error in (DatasetNotFoundError("no data"), SourceUnavailableError("no source"),
                          checkpointing.RunDirectoryError("busy")):
        assert _exit_of(_raise(library_error), capsys)[0] == 2
    assert isinstance(DatasetNotFoundError("x"), FileNotFoundError)  # what callers caught before
    for bug in (ValueError("shape mismatch"), TypeError("not callable"), FileNotFoundError("x"), KeyError("k")):
        with pytest.raises(type(bug)):
            run_reporting_errors(_raise(bug))
    with pytest.raises(InputError):
        run_reporting_errors(_raise(InputError("bad")), show_traceback=True)


def test_a_bug_inside_training_keeps_its_traceback(tmp_path, monkeypatch):
    from keras_l2t import data as data_lib  # pylint: disable=import-outside-toplevel

    def broken(*args, **kwargs):
        raise ValueError("an internal bug, not the user's input")

    monkeypatch.setattr(data_lib, "load_dataset", broken)
    flag_values, _ = _parsed(train_flags.define_flags, *TINY, f"--model_dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match="an internal bug"):
        run_reporting_errors(lambda: train_main.run(flag_values))


# ------------------------------------------------------------------------ start-up noise, console command


def test_tensorflow_start_up_notices_are_filtered_and_the_rest_kept(capfd):
    noise = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1.0 6174 port.cc:153] oneDNN custom operations are on. You may see ...\n"
        "I0000 00:00:1.0 6174 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
        "E0000 00:00:1.0 6174 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
        "E0000 00:00:1.0 6174 cuda_dnn.cc:8579] Unable to register cuDNN factory: Attempting to register\n"
    )
    with startup.filtered_stderr():
        os.write(2, noise.encode())
        os.write(2, b"E0000 00:00:1.0 6174 other.cc:1] a real error\nTraceback (most recent call last):\n")
    kept = "E0000 00:00:1.0 6174 other.cc:1] a real error\nTraceback (most recent call last):\n"
    assert capfd.readouterr().err == kept


def test_console_command_ignores_a_train_py_in_the_working_directory(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "l2t-train")
    if not os.path.exists(script):
        pytest.skip(f"{script} is not installed: run `pip install -e .` after setup.py changes")
    (tmp_path / "train.py").write_text("raise SystemExit('the user\\'s own train.py ran')\n", encoding="utf-8")
    run = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "l2t-train" in run.stdout and "\nRuntime and output:\n" in run.stdout and "own train.py" not in run.stderr


def _result(method, accuracy, transfer=None):
    return {"method": method, "test_accuracy_at_best_val": accuracy, "best_val_accuracy": accuracy,
            "best_epoch": 3, "wall_seconds": 5.0, "transfer": transfer}


def test_comparison_reports_the_seed_spread_and_claims_learned_transfer_only_beyond_both_controls():
    from train import main  # pylint: disable=import-outside-toplevel

    moved = {"channel_weight_entropy": [0.8, 0.9], "lambda": [0.1, 2.0], "lambda_change_max": 0.5}
    still = {"channel_weight_entropy": [1.0, 1.0], "lambda": [0.1, 2.0], "lambda_change_max": 0.0}

    def rows(l2t_ww_accuracies, frozen_accuracies):
        return ([_result("fm", a) for a in (0.85, 0.86, 0.84)]
                + [_result("l2t_ww_frozen", a, still) for a in frozen_accuracies]
                + [_result("l2t_ww", a, moved) for a in l2t_ww_accuracies])

    ahead = rows((0.93, 0.94, 0.95), (0.86, 0.87, 0.85))
    table = main.comparison_table(ahead)
    assert "| l2t_ww | 3 | 0.9400 ± 0.0100 | 0.9400 | 3,3,3 | 0.85000 | 0.10–2.00 | 0.500 | 5 |" in table
    assert "| fm | 3 | 0.8500 ± 0.0100 | 0.8500 | 3,3,3 | — | — | — | 5 |" in table
    text = main.interpretation(ahead)
    assert "meta-networks moved" in text and "ahead of l2t_ww_frozen (0.8600 ± 0.0100) by 0.0800" in text
    assert "learned what and where helped beyond the seed spread" in text
    # Ahead of FM but within the spread of the frozen control: no claim.
    close = main.interpretation(rows((0.93, 0.94, 0.95), (0.92, 0.95, 0.93)))
    assert "within the seed spread of l2t_ww_frozen" in close and "does not show that *learned*" in close
    assert "on one seed: with no seed spread" in main.interpretation([_result("l2t_ww", 0.9, moved)])
    assert "barely moved" in main.interpretation([_result("l2t_ww", 0.9, still)])
    assert main.interpretation([_result("fm", 0.9)]) is None

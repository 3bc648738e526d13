"""`python -m train.main` / `train.pretrain_source` end to end, as subprocesses, smoke-sized."""

import json
import os
import subprocess
import sys
import time

import pytest

from train.startup import STARTUP_NOISE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_KEYS = {
    "method", "dataset", "target", "source", "epochs_completed", "best_val_accuracy", "best_epoch",
    "test_accuracy_at_best_val", "final_test_accuracy", "seed", "wall_seconds", "versions",
}


def _run(module, *args, timeout=600, env=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    assert RESULT_KEYS <= set(results), RESULT_KEYS - set(results)
    assert 0.0 <= results["test_accuracy_at_best_val"] <= 1.0
    return results


def test_default_demo_runs_every_method_and_prints_the_table(tmp_path):
    # The demo's methods and its seeds (3 by default; 2 here, to save time), shortened.
    model_dir = str(tmp_path / "demo")
    run = _run("train.main", f"--model_dir={model_dir}", "--epochs=1", "--source_epochs=1", "--steps_per_epoch=2",
               "--repeats=2")
    assert run.returncode == 0, run.stderr[-3000:]
    for method in ("scratch", "fm", "l2t_ww_frozen", "l2t_ww"):
        assert f"| {method} | 2 | " in run.stdout  # one row per method: its seeds, mean ± std
    assert "Training l2t_ww (seed 1) → " in run.stdout and "meta_lr=auto: 0.01 for 2 meta-steps" in run.stdout
    assert "L2T-ww's meta-networks" in run.stdout and " over 2 seeds) is " in run.stdout  # the interpretation
    assert f"Run directory: {model_dir}\n" in run.stdout
    assert not STARTUP_NOISE.search(run.stderr), run.stderr[-3000:]  # no TF C++ start-up lines
    assert os.path.exists(os.path.join(model_dir, "source", "source.keras"))
    for method in ("scratch", "fm", "l2t_ww_frozen", "l2t_ww"):
        for seed in (0, 1):
            run_dir = os.path.join(model_dir, method, f"seed{seed}")
            results = _results(run_dir)
            assert (results["method"], results["seed"], results["epochs_completed"]) == (method, seed, 1)
            assert os.path.exists(os.path.join(run_dir, "best_target.keras"))
            assert os.path.isdir(os.path.join(run_dir, "tensorboard"))
    l2t_ww = _results(os.path.join(model_dir, "l2t_ww", "seed0"))
    assert l2t_ww["source"].endswith("source.keras") and l2t_ww["meta_lr"] == 1e-2
    assert (l2t_ww["meta_warmup_epochs"], l2t_ww["pair_weight_init"]) == (0, 1.0)  # the official behaviour
    assert len(l2t_ww["transfer"]["lambda"]) == len(l2t_ww["transfer"]["pairs"]) == 15  # 3 source x 5 target taps
    frozen = _results(os.path.join(model_dir, "l2t_ww_frozen", "seed0"))
    assert frozen["transfer"]["lambda_change_max"] == 0.0 and frozen["meta_lr"] is None
    assert (frozen["meta_warmup_epochs"], frozen["pair_weight_init"]) == (None, 1.0)  # where-nets, no meta step
    assert "meta-networks: w entropy mean" in run.stdout  # the line after each L2T-ww epoch
    with open(os.path.join(model_dir, "comparison.md"), encoding="utf-8") as f:
        assert "L2T-ww's meta-networks" in f.read()
    with open(os.path.join(model_dir, "l2t_ww", "seed1", "flags.json"), encoding="utf-8") as f:
        assert json.load(f)["method"] == "l2t_ww"
    with open(os.path.join(model_dir, "l2t_ww", "seed1", "flags.txt"), encoding="utf-8") as f:
        assert f"--model_dir={model_dir}\n" in f.read()  # the whole command, replayable with --flagfile


def test_stanford_dogs_scratch_from_the_real_tfds_builder(tmp_path, fake_dogs_data_dir):
    model_dir = str(tmp_path / "dogs")
    run = _run(
        "train.main", "--dataset=stanford_dogs", f"--data_dir={fake_dogs_data_dir}", f"--model_dir={model_dir}", "--split=seeded",
        "--method=scratch", "--width=0.125", "--image_size=64", "--batch_size=8", "--epochs=1",
        "--steps_per_epoch=2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(model_dir)
    assert (results["dataset"], results["target"]) == ("stanford_dogs", "resnet18")
    assert (results["num_train"], results["num_val"], results["num_test"]) == (270, 30, 6)


def test_stanford_dogs_l2t_ww_resnet34_to_resnet18(tmp_path, fake_dogs_data_dir):
    model_dir = str(tmp_path / "dogs_l2t")
    run = _run(
        "train.main", "--dataset=stanford_dogs", f"--data_dir={fake_dogs_data_dir}", f"--model_dir={model_dir}", "--split=seeded",
        "--method=l2t_ww", "--source=auto", "--source_arch=resnet34", "--source_width=0.125", "--source_classes=0",
        "--classes=1,2", "--width=0.125", "--image_size=64", "--batch_size=8", "--epochs=1", "--steps_per_epoch=1",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(model_dir)
    assert results["pairs"] == "all" and results["method"] == "l2t_ww"


def test_pretrain_source_then_transfer_from_its_file(tmp_path):
    source_dir = str(tmp_path / "source")
    run = _run(
        "train.pretrain_source", f"--model_dir={source_dir}", "--arch=resnet32", "--width=0.25",
        "--classes=0,1,2,3,4", "--epochs=1", "--steps_per_epoch=2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    source = os.path.join(source_dir, "source.keras")
    assert os.path.exists(source)
    model_dir = str(tmp_path / "l2t_w")
    run = _run(
        "train.main", f"--model_dir={model_dir}", f"--source={source}", "--method=l2t_w", "--pairs=one_to_one",
        "--epochs=1", "--steps_per_epoch=2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert _results(model_dir)["pairs"] == "one_to_one"


def test_stanford_dogs_with_no_other_flag_runs_the_papers_l2t_ww(tmp_path, fake_dogs_data_dir):
    """--dataset=stanford_dogs alone: L2T-ww from the ImageNet ResNet-34 (here: our resnet34's random weights in
    timm's format in a Hugging Face cache, read offline) to a ResNet-18. Only the size flags and --split=seeded
    are added: the fake Dogs has 3 of the 120 classes, which the official split's checks refuse (tested with the
    real builder in tests/test_data.py)."""
    from keras_l2t import backbones  # pylint: disable=import-outside-toplevel
    from tests import timm_presets  # pylint: disable=import-outside-toplevel

    cache = str(tmp_path / "hf_cache")
    timm_presets.write_hugging_face_cache_entry(backbones.resnet34(num_classes=1000, input_shape=(64, 64, 3)), cache)
    model_dir = str(tmp_path / "dogs_paper")
    run = _run(
        "train.main", "--dataset=stanford_dogs", f"--data_dir={fake_dogs_data_dir}", f"--model_dir={model_dir}", "--split=seeded",
        "--width=0.125", "--image_size=64", "--batch_size=8", "--epochs=1", "--steps_per_epoch=1",
        env={"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"},  # a cache miss must fail, never download
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(model_dir)
    assert (results["method"], results["source"], results["target"], results["pairs"]) == (
        "l2t_ww", "resnet34_imagenet", "resnet18", "all")
    assert (results["num_train"], results["num_val"]) == (270, 30)  # 10 % of each class's 100


def test_cifar100_transfers_from_the_shipped_tiny_imagenet_resnet32(tmp_path, fake_cifar100_data_dir):
    """--dataset=cifar100: L2T-ww from the shipped source to a VGG-9-BN. The fake data has 300 images, which the
    official split (45,000 / 5,000) cannot match, so --split=seeded; smoke-sized."""
    model_dir = str(tmp_path / "cifar100")
    run = _run(
        "train.main", "--dataset=cifar100", f"--data_dir={fake_cifar100_data_dir}", f"--model_dir={model_dir}",
        "--split=seeded", "--width=0.125", "--batch_size=8", "--epochs=1", "--steps_per_epoch=1",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(model_dir)
    assert (results["method"], results["source"], results["target"]) == ("l2t_ww", "tinyimagenet_resnet32", "vgg9_bn")
    assert len(results["transfer"]["pairs"]) == 15 and len(results["class_names"]) == 100
    official = _run("train.main", "--dataset=cifar100", f"--data_dir={fake_cifar100_data_dir}",
                    f"--model_dir={tmp_path / 'official'}", "--epochs=1", timeout=120)
    assert official.returncode == 2 and "official cifar100 split does not match" in official.stderr


def test_two_sources_from_the_command_line_name_each_pairs_source(tmp_path):
    model_dir = str(tmp_path / "two_sources")
    run = _run(
        "train.main", f"--model_dir={model_dir}", "--source=tinyimagenet_resnet32,random:resnet32:0.25",
        "--method=l2t_ww", "--pairs=0:14-4,0:9-3,1:14-4", "--width=0.25", "--epochs=2", "--steps_per_epoch=2",
        "--verbose=2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(model_dir)
    assert results["source"] == "tinyimagenet_resnet32,random:resnet32:0.25"
    transfer = results["transfer"]
    assert transfer["pair_sources"] == ["tinyimagenet_resnet32", "tinyimagenet_resnet32", "random_resnet32"]
    assert set(transfer["lambda_per_source"]) == {"tinyimagenet_resnet32", "random_resnet32"}
    assert "mean λ per source: tinyimagenet_resnet32 " in run.stdout
    with open(os.path.join(model_dir, "history.csv"), encoding="utf-8") as f:
        header = f.readline()
    assert "lambda_tinyimagenet_resnet32_14_4" in header and "lambda_mean_of_random_resnet32" in header


def test_dinov2_preset_into_a_keras_hub_mobilenet_from_the_command_line(tmp_path):
    """The README's "Transfer from DINOv2" flow offline: a local DINOv2 preset (tiny, random) as the source, a
    keras-hub MobileNet preset's architecture (random weights) as the target."""
    pytest.importorskip("keras_hub")
    from tests import hub_families  # pylint: disable=import-outside-toplevel

    dinov2, mobilenet = str(tmp_path / "dinov2"), str(tmp_path / "mobilenet")
    hub_families.dinov2().save_to_preset(dinov2)
    hub_families.mobilenet().save_to_preset(mobilenet)
    model_dir = str(tmp_path / "dinov2_to_mobilenet")
    run = _run(
        "train.main", f"--model_dir={model_dir}", f"--source={dinov2}", f"--target={mobilenet}", "--method=l2t_ww",
        "--source_blocks=2,5", "--epochs=1", "--steps_per_epoch=2",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(model_dir)
    assert results["target"] == mobilenet and len(results["transfer"]["pairs"]) == 2 * 5
    assert os.path.exists(os.path.join(model_dir, "target_inference.keras"))
    lwf = _run("train.main", f"--model_dir={tmp_path / 'lwf'}", f"--source={dinov2}", "--method=lwf", "--epochs=1",
               "--steps_per_epoch=1", timeout=300)
    assert lwf.returncode == 2 and "has none; use fm, at, l2t_w or l2t_ww" in lwf.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method=nope"], "Unknown method"),
        (["--method=l2t_ww", "--source=resnet50_imagenet"], "resnet50_imagenet"),
        (["--method=fm", "--source=/nonexistent.keras"], "neither a file"),
        (["--dataset=stanford_dogs", "--method=scratch", "--data_dir={tmp}"], "not prepared"),
    ],
)
def test_bad_input_fails_fast_with_a_message(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path / "empty")) for a in args]
    model_dir = str(tmp_path / "bad")
    start = time.time()
    run = _run("train.main", f"--model_dir={model_dir}", "--epochs=1", *args, timeout=120)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert time.time() - start < 60
    assert not os.path.exists(model_dir)  # nothing a later run could mistake for results

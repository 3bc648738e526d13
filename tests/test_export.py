"""The inference export: raw pixels in, the target's function out, loadable with plain Keras."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import backbones, export
from keras_l2t.data import preprocessing
from keras_l2t.errors import InputError
from keras_l2t.experiment import ExperimentConfig, run_experiment

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _trained_looking_target(arch, image_size=32, num_classes=5, seed=0):
    """A width-0.25 backbone whose BN statistics and affine weights are far from their initial values."""
    keras.utils.set_random_seed(seed)
    target = backbones.get_backbone(arch, num_classes=num_classes, width=0.25, input_shape=(image_size, image_size, 3))
    rng = np.random.default_rng(seed)
    for layer in target.network.layers:
        if isinstance(layer, keras_l2t.layers.BatchNormalization):
            size = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0.0, 0.5, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.1, size).astype("float32"))
    return target


def _raw_images(shape, seed=1):
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


def _reference_logits(target, images, transform):
    """The target on images prepared as the evaluation pipeline prepares them."""
    prepared = tf.stack([preprocessing.normalize(transform(tf.constant(image))) for image in images])
    return target(prepared, training=False).numpy()


def _assert_stock_keras_only(model):
    config = json.dumps(model.get_config())
    assert "keras_l2t" not in config and "Subsample2D" not in config


@pytest.mark.parametrize("arch", ["vgg9_bn", "resnet32", "resnet18"])
def test_export_computes_the_target_on_raw_pixels(arch):
    target = _trained_looking_target(arch)
    raw = _raw_images((4, 32, 32, 3))
    reference = _reference_logits(target, raw, lambda image: tf.cast(image, tf.float32))
    logits_model = export.inference_model(target, outputs="logits")
    _assert_stock_keras_only(logits_model)
    assert logits_model.output_names == ["logits"]
    np.testing.assert_allclose(logits_model.predict(raw, verbose=0), reference, rtol=0, atol=1e-5)
    probabilities = export.inference_model(target).predict(raw.astype("float32"), verbose=0)
    np.testing.assert_allclose(probabilities, keras.ops.softmax(reference), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "resize, shape, transform",
    [
        ("small", (45, 37, 3), lambda image: preprocessing.small_eval(image, 32)),
        ("small", (32, 32, 3), lambda image: preprocessing.small_eval(image, 32)),
        # Square images: exactly the pipeline's resize to 256/224 and centre crop.
        ("imagenet", (50, 50, 3), lambda image: preprocessing.imagenet_eval(image, 32)),
        ("imagenet", (32, 32, 3), lambda image: preprocessing.imagenet_eval(image, 32)),
    ],
)
def test_export_resizes_as_evaluation_does(resize, shape, transform):
    target = _trained_looking_target("vgg9_bn")
    raw = _raw_images((2,) + shape)
    model = export.inference_model(target, resize=resize, outputs="logits")
    np.testing.assert_allclose(model.predict(raw, verbose=0), _reference_logits(target, raw, transform), atol=1e-5)


def test_datasets_say_how_evaluation_resizes():
    assert keras_l2t.data.load_dataset("digits", batch_size=16).eval_resize == "small"
    assert keras_l2t.data.load_dataset("digits", batch_size=16, augmentation="imagenet").eval_resize == "imagenet"


def test_bad_arguments_are_input_errors():
    target = _trained_looking_target("vgg9_bn")
    with pytest.raises(InputError, match="resize"):
        export.inference_model(target, resize="bicubic")
    with pytest.raises(InputError, match="outputs"):
        export.inference_model(target, outputs="argmax")


def _readme_section_code(title):
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    section = readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_loads_the_export_with_plain_keras(tmp_path):
    """Runs README's "Use the trained model" code in a process that never imports keras_l2t."""
    target = _trained_looking_target("vgg9_bn", num_classes=3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    export.save_inference_model(target, str(run_dir / export.INFERENCE_FILE), resize="small")
    class_names = ["cat", "dog", "owl"]
    (run_dir / "results.json").write_text(json.dumps({"class_names": class_names}))
    image = _raw_images((27, 41, 3))
    keras.utils.save_img(str(tmp_path / "my_image.png"), image, scale=False)
    expected = keras.ops.softmax(_reference_logits(target, image[None], lambda x: preprocessing.small_eval(x, 32)))
    np.save(tmp_path / "expected.npy", np.asarray(expected)[0])

    code = _readme_section_code("Use the trained model")
    code, replaced = re.subn(r"^run_dir = .*$", f"run_dir = {str(run_dir)!r}", code, flags=re.M)
    assert replaced == 1, "the README example sets run_dir on one line"
    code += (
        "\nimport sys\n"
        "assert not [m for m in sys.modules if m.startswith('keras_l2t')], 'keras_l2t was imported'\n"
        "np.testing.assert_allclose(probabilities, np.load('expected.npy'), atol=1e-6)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed_name, printed_probability = result.stdout.split()[-2:]
    assert printed_name == class_names[int(np.argmax(expected))]
    assert float(printed_probability) == pytest.approx(float(np.max(expected)), abs=1e-5)


def test_run_experiment_writes_the_export_and_class_names(tmp_path):
    config = ExperimentConfig(
        model_dir=str(tmp_path / "run"), dataset="digits", target="vgg9_bn", width=0.25, epochs=1,
        steps_per_epoch=2, batch_size=16, classes=(3, 7, 1), verbose=0,
    )
    results = run_experiment(config)
    assert results["class_names"] == ["3", "7", "1"]
    assert results["inference_model"] == export.INFERENCE_FILE
    assert json.load(open(tmp_path / "run" / "results.json", encoding="utf-8"))["class_names"] == ["3", "7", "1"]
    exported = keras.saving.load_model(str(tmp_path / "run" / export.INFERENCE_FILE))
    _assert_stock_keras_only(exported)
    best = keras.saving.load_model(str(tmp_path / "run" / "best_target.keras"), compile=False)
    raw = _raw_images((3, 32, 32, 3))
    reference = _reference_logits(best, raw, lambda image: preprocessing.small_eval(image, 32))
    np.testing.assert_allclose(exported.predict(raw, verbose=0), keras.ops.softmax(reference), atol=1e-6)

"""An inference export of a trained target: raw pixels in, class probabilities out, plain Keras only.

A target as trained is a `Backbone` (it also returns its feature taps) built
from keras_l2t's own layers, and it expects ImageNet-normalised input, so
loading it needs `import keras_l2t` and the caller must know the pipeline.
`inference_model` turns it into a functional model of stock Keras layers
that takes raw images (uint8 or float, 0-255) and contains the evaluation
preprocessing: `keras.saving.load_model` reads the saved `.keras` file in
any process, with or without keras_l2t installed.

    model = keras_l2t.export.inference_model(model.target, resize=splits.eval_resize)
    model.save("target_inference.keras")

The inference function is unchanged: keras_l2t's `BatchNormalization` becomes
stock `keras.layers.BatchNormalization` (both compute
(x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta at
inference) and `Subsample2D(s)` becomes `MaxPooling2D(1, strides=s)` (the same
x[:, ::s, ::s, :]), with the trained weights copied.
"""

import logging
import os

import keras
import numpy as np

from keras_l2t.data import preprocessing
from keras_l2t.errors import InputError
from keras_l2t.layers.batch_normalization import BatchNormalization
from keras_l2t.layers.subsample import Subsample2D

# Written by `run_experiment` beside best_target.keras.
INFERENCE_FILE = "target_inference.keras"

# How the export resizes raw images, mirroring each pipeline's evaluation transform
# (keras_l2t/data/preprocessing.py):
#   "small": stretch to image_size x image_size (`small_eval`, the 32x32 datasets; the
#       pipeline also rounds the resized image to uint8, the export does not: at most half a level);
#   "imagenet": resize to 256/224 of image_size and centre-crop image_size (`imagenet_eval`);
#       for square images this is exactly the pipeline's transform; for others the
#       stock layers crop the central square first, which moves the crop by under a pixel;
#   None: no resizing; the input must already be image_size x image_size.
RESIZE_MODES = ("small", "imagenet", None)
OUTPUTS = ("probabilities", "logits")


def _stock_layer(layer, foreign):
    """A stock Keras layer computing what `layer` computes at inference (weights copied later), in float32."""
    config = layer.get_config()
    config["dtype"] = "float32"  # a mixed-precision target exports in full precision
    if isinstance(layer, BatchNormalization):
        config.pop("unbiased_moving_variance")  # only affects training updates
        return keras.layers.BatchNormalization.from_config(config)
    if isinstance(layer, Subsample2D):
        return keras.layers.MaxPooling2D(1, strides=layer.stride, padding="valid", name=layer.name, dtype="float32")
    if not type(layer).__module__.startswith("keras."):
        foreign.append(f"{layer.name} ({type(layer).__module__}.{type(layer).__name__})")
    return type(layer).from_config(config)


def _image_preprocessing(images, image_size, resize, mean, std):
    """Raw 0-255 pixels -> the target's normalised input, as the evaluation pipeline computes it."""
    x = images
    if resize == "small":
        x = keras.layers.Resizing(image_size, image_size, antialias=True, name="resize")(x)
    elif resize == "imagenet":
        short_side = round(image_size * 256 / 224)
        x = keras.layers.Resizing(short_side, short_side, crop_to_aspect_ratio=True, antialias=True, name="resize")(x)
        x = keras.layers.CenterCrop(image_size, image_size, name="center_crop")(x)
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(x)
    std = np.asarray(std, "float32")
    return keras.layers.Normalization(mean=list(mean), variance=list(std * std), name="normalize")(x)


def inference_model(
    target,
    *,
    resize=None,
    outputs="probabilities",
    mean=preprocessing.IMAGENET_MEAN,
    std=preprocessing.IMAGENET_STD,
    name=None,
):
    """A stock-Keras model: raw images (0-255) -> class probabilities (or logits) of `target`.

    Args:
        target: A trained `Backbone` (e.g. `model.target` after `fit`) or any
            functional Keras classifier that outputs logits first.
        resize: One of `RESIZE_MODES`: "small" or "imagenet" accept images of any
            size and resize them as the evaluation pipeline does (the dataset's
            `DatasetSplits.eval_resize`); None takes images of the target's input size.
        outputs: "probabilities" (softmax; output layer "probabilities") or
            "logits" (output layer "logits").
        mean, std: Per-channel statistics of [0, 1] pixels the target was
            trained with (default ImageNet's, as every keras_l2t pipeline uses).
        name: Model name; default `<target name>_inference`.

    Returns:
        A functional `keras.Model` with input "images" (N, H, W, 3), float32
        (uint8 arrays are cast); grey-scale images must be repeated to 3
        channels, as the pipeline does. The weights are copies of `target`'s.

    Raises:
        InputError: bad `resize` or `outputs`, or a `target` that is no functional model.
    """
    if resize not in RESIZE_MODES:
        raise InputError(f"resize must be one of {RESIZE_MODES}, got {resize!r}.")
    if outputs not in OUTPUTS:
        raise InputError(f"outputs must be one of {OUTPUTS}, got {outputs!r}.")
    network = getattr(target, "network", target)  # a Backbone's functional [logits, taps...] network
    if not isinstance(network, keras.Model) or not hasattr(network, "inputs") or len(network.inputs) != 1:
        raise InputError(f"Expected a Backbone or a single-input functional Keras model, got {type(target).__name__}.")
    height, width, channels = network.inputs[0].shape[1:]
    if height is None or height != width:
        raise InputError(f"The target's input must be square and of fixed size, got {network.inputs[0].shape}.")

    images = keras.Input(shape=(None, None, channels) if resize else (height, width, channels), name="images")
    normalized = _image_preprocessing(images, height, resize, mean, std)
    foreign = []
    clone = keras.models.clone_model(network, clone_function=lambda layer: _stock_layer(layer, foreign))
    clone.set_weights(network.get_weights())
    if foreign:
        logging.warning(
            "The inference export of %s keeps non-Keras layers; loading it needs their classes: %s",
            target.name,
            ", ".join(foreign),
        )
    classifier = keras.Model(clone.inputs, clone.outputs[0], name=f"{target.name}_classifier")
    logits = classifier(normalized)
    if outputs == "probabilities":
        result = keras.layers.Softmax(name="probabilities", dtype="float32")(logits)
    else:
        result = keras.layers.Identity(name="logits", dtype="float32")(logits)
    return keras.Model(images, result, name=name or f"{target.name}_inference")


def save_inference_model(target, path, **kwargs):
    """`inference_model(target, **kwargs)` written atomically to `path` (a `.keras` file)."""
    model = inference_model(target, **kwargs)
    tmp = f"{path[: -len('.keras')]}.tmp{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return model

"""`Backbone`: a classifier that also hands out its tapped feature maps.

Every network in keras_l2t (source or target) is a `Backbone`. It wraps a
functional Keras model whose outputs are `[logits, tap_0, tap_1, ...]` and
exposes them through one mechanism:

    logits = backbone(x)                                  # as any classifier
    logits, features = backbone(x, return_features=True)  # features: list of NHWC maps

Because the taps are `call` outputs (not side effects), they also come out of
`backbone.stateless_call(..., return_features=True)`, which the L2T-ww
look-ahead relies on. Any Keras model becomes a backbone by naming its tap
layers (`Backbone.from_keras_model`).
"""

import logging

import keras

from keras_l2t.errors import InputError
from keras_l2t.multi_worker_fit import MultiWorkerFitMixin

# Output activations that make a model return probabilities instead of logits.
_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


@keras.saving.register_keras_serializable(package="keras_l2t")
class Backbone(MultiWorkerFitMixin, keras.Model):
    """A classifier whose `call` can also return its tapped feature maps.

    Args:
        network: A functional `keras.Model` whose outputs are
            `[logits, tap_0, ..., tap_{n-1}]`, taps in network order.
        transfer_taps: Indices of the taps that pair specifications such as
            "all" draw from (e.g. the stage outputs); default: every tap.
        has_classifier: False for a network without a classification head
            (e.g. DINOv2): its first output is then a pooled embedding, not
            logits, and methods that need a source's logits (LwF) refuse it.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Call arguments:
        inputs: Images, NHWC.
        training: Training mode (BatchNorm batch statistics).
        return_features: If True, return `(logits, [tap_0, ...])`.

    Example:
    ```python
    target = keras_l2t.backbones.vgg9_bn(num_classes=100)
    logits, features = target(images, return_features=True)
    target.feature_channels  # (64, 128, 256, 512, 512)
    ```
    """

    def __init__(self, network, transfer_taps=None, has_classifier=True, **kwargs):
        super().__init__(**kwargs)
        self.has_classifier = bool(has_classifier)
        if len(network.outputs) < 2:
            raise InputError(
                "A Backbone network must output [logits, tap_0, ...]; got "
                f"{len(network.outputs)} output(s)."
            )
        self.network = network
        num_taps = len(network.outputs) - 1
        self.transfer_taps = tuple(range(num_taps)) if transfer_taps is None else tuple(int(t) for t in transfer_taps)
        if not self.transfer_taps or any(t < 0 or t >= num_taps for t in self.transfer_taps):
            raise InputError(f"transfer_taps {self.transfer_taps} must be non-empty indices below {num_taps}.")
        self.built = True  # the functional network is built already

    @classmethod
    def from_keras_model(cls, model, tap_layers, name=None, input_shape=None):
        """Wraps any single-output Keras classifier, tapping the named layers' outputs.

        Functional and `keras.Sequential` models work. A Sequential model
        without `keras.Input` has no input shape yet: pass `input_shape`
        (H, W, C) to build it. A softmax or sigmoid head (the
        `keras.applications` default) is stripped to logits, as every
        keras_l2t loss expects: a final `Softmax`/`Activation` layer is left
        out, a final layer with such an activation (e.g. Dense) is replaced
        by a linear copy with the same weights; one line is logged.

        Example: `Backbone.from_keras_model(keras.applications.ResNet50(),
        ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
        "conv5_block3_out"])`.

        Raises:
            InputError: a tap layer is missing, the model has no input shape,
                or it has several inputs or outputs.
        """
        model = _built(model, input_shape)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise InputError(
                f"Model {model.name!r} must have one input and one output (the logits), "
                f"got {len(model.inputs)} and {len(model.outputs)}."
            )
        layer_names = {layer.name for layer in model.layers}
        missing = [n for n in tap_layers if n not in layer_names]
        if missing:
            raise InputError(f"Model {model.name!r} has no layer(s) named {missing} (see model.summary()).")
        outputs = [_logits(model)] + [model.get_layer(n).output for n in tap_layers]
        network = keras.Model(model.inputs[0], outputs, name=f"{model.name}_tapped")
        return cls(network, name=name or model.name)

    def call(self, inputs, training=None, return_features=False):
        outputs = self.network(inputs, training=training)
        logits, features = outputs[0], list(outputs[1:])
        if return_features:
            return logits, features
        return logits

    @property
    def image_shape(self):
        """(H, W, C) of the input images."""
        return tuple(self.network.inputs[0].shape[1:])

    @property
    def num_classes(self):
        return int(self.network.outputs[0].shape[-1])

    @property
    def feature_shapes(self):
        """Per tap, the (H, W, C) shape of its feature map."""
        return tuple(tuple(t.shape[1:]) for t in self.network.outputs[1:])

    @property
    def feature_channels(self):
        """Per tap, its number of channels."""
        return tuple(int(shape[-1]) for shape in self.feature_shapes)

    def get_config(self):
        config = super().get_config()
        config["network"] = keras.saving.serialize_keras_object(self.network)
        config["transfer_taps"] = list(self.transfer_taps)
        config["has_classifier"] = self.has_classifier
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)


def _built(model, input_shape):
    """`model` with a symbolic input: a Sequential without `keras.Input` is built on `input_shape`."""
    if isinstance(model, keras.Sequential) and not _has_inputs(model):
        if input_shape is None:
            raise InputError(
                f"Sequential model {model.name!r} has no input shape: start it with keras.Input(shape=(H, W, C)) "
                "or pass input_shape=(H, W, C) to Backbone.from_keras_model."
            )
        model.build((None,) + tuple(input_shape))
        if not _has_inputs(model):  # e.g. a layer that cannot run symbolically
            raise InputError(f"Sequential model {model.name!r} could not be built on input shape {tuple(input_shape)}.")
    elif not _has_inputs(model):
        raise InputError(
            f"Model {model.name!r} ({type(model).__name__}) is not a functional or Sequential model with an input: "
            "build it with keras.Input(shape=(H, W, C))."
        )
    return model


def _has_inputs(model):
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def _activation_name(activation):
    """The name of an activation function (e.g. "softmax" for `keras.activations.softmax`), or None."""
    return getattr(activation, "__name__", None)


def _logits(model):
    """The model's output with a softmax/sigmoid head stripped: the logits."""
    output = model.outputs[0]
    head = next((layer for layer in reversed(model.layers) if _single_output(layer) is output), None)
    if head is None:
        return output
    if isinstance(head, keras.layers.Softmax):
        activation = "softmax"
    else:
        activation = _activation_name(getattr(head, "activation", None))
    if activation not in _PROBABILITY_ACTIVATIONS:
        return output
    if isinstance(head, (keras.layers.Softmax, keras.layers.Activation)):
        logging.warning("Backbone %s: leaving out the final %s layer %r: training uses logits.", model.name,
                        activation, head.name)
        return head.input
    config = dict(head.get_config(), activation="linear")
    linear_head = type(head).from_config(config)
    logits = linear_head(head.input)
    linear_head.set_weights(head.get_weights())
    logging.warning("Backbone %s: layer %r ends in %s; using a linear copy of it (same weights): training uses logits.",
                    model.name, head.name, activation)
    return logits


def _single_output(layer):
    """The layer's output if it was called exactly once, else None."""
    try:
        return layer.output
    except (AttributeError, ValueError):
        return None

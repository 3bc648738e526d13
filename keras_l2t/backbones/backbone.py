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

import keras


@keras.saving.register_keras_serializable(package="keras_l2t")
class Backbone(keras.Model):
    """A classifier whose `call` can also return its tapped feature maps.

    Args:
        network: A functional `keras.Model` whose outputs are
            `[logits, tap_0, ..., tap_{n-1}]`, taps in network order.
        transfer_taps: Indices of the taps that pair specifications such as
            "all" draw from (e.g. the stage outputs); default: every tap.
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

    def __init__(self, network, transfer_taps=None, **kwargs):
        super().__init__(**kwargs)
        if len(network.outputs) < 2:
            raise ValueError(
                "A Backbone network must output [logits, tap_0, ...]; got "
                f"{len(network.outputs)} output(s)."
            )
        self.network = network
        num_taps = len(network.outputs) - 1
        self.transfer_taps = tuple(range(num_taps)) if transfer_taps is None else tuple(int(t) for t in transfer_taps)
        if not self.transfer_taps or any(t < 0 or t >= num_taps for t in self.transfer_taps):
            raise ValueError(f"transfer_taps {self.transfer_taps} must be non-empty indices below {num_taps}.")
        self.built = True  # the functional network is built already

    @classmethod
    def from_keras_model(cls, model, tap_layers, name=None):
        """Wraps any single-output Keras model, tapping the named layers' outputs.

        Example: `Backbone.from_keras_model(keras.applications.ResNet50(),
        ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
        "conv5_block3_out"])`.
        """
        missing = [n for n in tap_layers if n not in {layer.name for layer in model.layers}]
        if missing:
            raise ValueError(f"Model {model.name!r} has no layer(s) named {missing}.")
        outputs = [model.outputs[0]] + [model.get_layer(n).output for n in tap_layers]
        inputs = model.input if len(model.inputs) == 1 else model.inputs
        network = keras.Model(inputs, outputs, name=f"{model.name}_tapped")
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
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)

"""The L2T-ww meta-networks φ: *what* (channel weights) and *where* (pair weights).

Both read the global-average-pooled source feature GAP(S^m(x)), shape (B, C_m),
and exist once per (source layer m, target layer n) pair (docs/method.md §2).
"""

import keras
from keras import ops

from keras_l2t import initializers
from keras_l2t.losses import at_least_float32

PAIR_WEIGHT_ACTIVATIONS = ("relu6", "relu", "relu_avg")


@keras.saving.register_keras_serializable(package="keras_l2t")
class ChannelWeightNetwork(keras.layers.Layer):
    """*What* to transfer: w^{m,n}(x) = softmax_c(W·GAP(S^m(x)) + b), shape (B, C_m).

    W and b start at zero, so the weights start uniform (1/C_m), as in the
    official `WeightNetwork` ("provides uniform weights of channels at the
    beginning of training since we use softmax", alinlab/L2T-ww#7).

    Args:
        channels: C_m, the source layer's channels.

    Call arguments:
        pooled_source: (B, C_m) globally average-pooled source feature.
    """

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.dense = keras.layers.Dense(
            self.channels, kernel_initializer="zeros", bias_initializer="zeros", dtype=self.dtype_policy,
            name="dense",
        )

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, pooled_source):
        return ops.softmax(at_least_float32(self.dense(pooled_source)), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.channels)

    def get_config(self):
        config = super().get_config()
        config["channels"] = self.channels
        return config


@keras.saving.register_keras_serializable(package="keras_l2t")
class PairWeightNetwork(keras.layers.Layer):
    """*Where* to transfer: λ^{m,n}(x) = ReLU6(v·GAP(S^m(x)) + b) ∈ [0, 6], shape (B,).

    As the official `LossWeightNetwork`: v has PyTorch's default Linear init
    U(±1/sqrt(C_m)) and b starts at `bias_init` (1.0), so λ starts near 1.

    Args:
        channels: C_m, the source layer's channels.
        activation: "relu6" (official default), "relu", or "relu_avg" (ReLU of
            the input divided by C_m, the official `relu-avg`).
        bias_init: Initial bias (`--loss-weight-init`, 1.0).

    Call arguments:
        pooled_source: (B, C_m) globally average-pooled source feature.
    """

    def __init__(self, channels, activation="relu6", bias_init=1.0, **kwargs):
        super().__init__(**kwargs)
        if activation not in PAIR_WEIGHT_ACTIVATIONS:
            raise ValueError(f"activation must be one of {PAIR_WEIGHT_ACTIVATIONS}, got {activation!r}.")
        self.channels = int(channels)
        self.activation = activation
        self.bias_init = float(bias_init)
        self.dense = keras.layers.Dense(
            1,
            kernel_initializer=initializers.torch_default_kernel(),
            bias_initializer=keras.initializers.Constant(self.bias_init),
            dtype=self.dtype_policy,
            name="dense",
        )

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, pooled_source):
        if self.activation == "relu_avg":
            pooled_source = pooled_source / float(self.channels)
        logits = at_least_float32(self.dense(pooled_source)[:, 0])
        if self.activation == "relu6":
            return ops.relu6(logits)
        return ops.relu(logits)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update({"channels": self.channels, "activation": self.activation, "bias_init": self.bias_init})
        return config

"""LayerNormalization whose moments keep their second derivative (as keras_l2t's BatchNormalization).

Keras' LayerNormalization takes its variance from `tf.nn.moments`, which
centres on `stop_gradient(mean)`: exact first derivatives, but a term of the
second derivative is lost, and with it part of L2T-ww's meta-gradient through
a transformer target. This layer computes the same forward pass with every
gradient kept.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_l2t")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` with exact second derivatives (RMS scaling is left to Keras)."""

    def call(self, inputs):
        if self.rms_scaling:
            return super().call(inputs)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        rank = len(x.shape)
        axes = sorted(a % rank for a in ([self.axis] if isinstance(self.axis, int) else self.axis))
        mean = ops.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        variance = ops.mean(ops.square(centred), axis=axes, keepdims=True)
        outputs = centred * ops.rsqrt(variance + self.epsilon)
        shape = [x.shape[a] if a in axes else 1 for a in range(rank)]
        if self.gamma is not None:
            outputs = outputs * ops.reshape(ops.cast(self.gamma, compute_dtype), shape)
        if self.beta is not None:
            outputs = outputs + ops.reshape(ops.cast(self.beta, compute_dtype), shape)
        return ops.cast(outputs, self.compute_dtype)

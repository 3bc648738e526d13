"""BatchNormalization whose batch moments keep their second derivative.

Stock Keras BN computes the batch variance with `stop_gradient(mean)`. That is
harmless for first derivatives but drops a term of the second derivative, so
meta-gradients taken through a look-ahead of BN networks are silently wrong
(docs/method.md §4.8: 7e-4 to 6e-2 relative error against finite differences). This
layer computes `mean(x)` and `mean(square(x - mean))` with every gradient kept.

It also follows PyTorch for the moving statistics: the moving variance is
updated with the *unbiased* batch variance (n / (n - 1) correction), and the
defaults are `momentum=0.9`, `epsilon=1e-5` (PyTorch's momentum 0.1, eps 1e-5).

Under a `tf.distribute` strategy with more than one replica, the moments are
all-reduced across replicas (synchronized BN) so that a global batch split over
devices normalises exactly as on one device.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_l2t import distribute


@keras.saving.register_keras_serializable(package="keras_l2t")
class BatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation with exact second derivatives and PyTorch statistics.

    Args:
        momentum: Moving-average momentum (Keras convention: 0.9 equals
            PyTorch's 0.1).
        epsilon: Added to the variance; PyTorch's default 1e-5.
        unbiased_moving_variance: Update the moving variance with the unbiased
            batch variance, as PyTorch does.
        **kwargs: Passed to `keras.layers.BatchNormalization` (renorm and masks
            are not supported).
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, unbiased_moving_variance=True, **kwargs):
        if kwargs.get("renorm"):
            raise ValueError("keras_l2t BatchNormalization does not support renorm.")
        super().__init__(momentum=momentum, epsilon=epsilon, **kwargs)
        self.unbiased_moving_variance = unbiased_moving_variance

    def _moments_and_count(self, inputs):
        """Batch mean and (biased) variance per channel, and the count behind them."""
        rank = len(inputs.shape)
        channel_axis = self.axis % rank
        axes = [i for i in range(rank) if i != channel_axis]
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), inputs.dtype)
        total = tf.reduce_sum(inputs, axis=axes)
        count, total = distribute.all_reduce_sum([count, total])
        mean = total / count
        broadcast_shape = [1] * rank
        broadcast_shape[channel_axis] = -1
        squared = tf.reduce_sum(tf.square(inputs - tf.reshape(mean, broadcast_shape)), axis=axes)
        (squared,) = distribute.all_reduce_sum([squared])
        return mean, squared / count, count

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError("keras_l2t BatchNormalization does not support masks.")
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        inputs = ops.cast(inputs, compute_dtype)
        gamma = ops.cast(self.gamma, compute_dtype) if self.scale else None
        beta = ops.cast(self.beta, compute_dtype) if self.center else None
        if training and self.trainable:
            mean, variance, count = self._moments_and_count(inputs)
            moving_variance_update = variance
            if self.unbiased_moving_variance:
                moving_variance_update = variance * count / tf.maximum(count - 1.0, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(
                ops.cast(self.moving_mean, compute_dtype) * momentum
                + tf.stop_gradient(mean) * (1.0 - momentum)
            )
            self.moving_variance.assign(
                ops.cast(self.moving_variance, compute_dtype) * momentum
                + tf.stop_gradient(moving_variance_update) * (1.0 - momentum)
            )
        else:
            mean = ops.cast(self.moving_mean, compute_dtype)
            variance = ops.cast(self.moving_variance, compute_dtype)
        outputs = ops.batch_normalization(
            x=inputs,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=beta,
            scale=gamma,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["unbiased_moving_variance"] = self.unbiased_moving_variance
        return config

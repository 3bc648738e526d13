"""Feature matching between one source layer and one target layer (docs/method.md §3)."""

import keras
import numpy as np
from keras import ops

from keras_l2t import initializers
from keras_l2t.losses import at_least_float32


def bilinear_resize_matrix(size_in, size_out):
    """(size_out, size_in) NumPy matrix of a 1-D bilinear resize, PyTorch's `align_corners=False` rule.

    Output o samples the input at s = (o + ½)·size_in/size_out − ½, clamped to
    [0, size_in − 1], weighting floor(s) and floor(s) + 1 linearly; no
    antialiasing when shrinking (as `F.interpolate(mode='bilinear')`).
    """
    matrix = np.zeros((size_out, size_in))
    scale = size_in / size_out
    for out in range(size_out):
        position = max((out + 0.5) * scale - 0.5, 0.0)
        low = min(int(position), size_in - 1)
        high = min(low + 1, size_in - 1)
        fraction = position - low
        matrix[out, low] += 1.0 - fraction
        matrix[out, high] += fraction
    return matrix


def resize_to(feature, height, width):
    """Bilinearly resizes an NHWC map to (height, width) in its own dtype (PyTorch align_corners=False).

    No-op when the size already matches. Written as two small matrix products
    instead of `ops.image.resize`, which TensorFlow computes in float32 whatever
    the input: a float64 run stays float64 end to end (docs/method.md §4.8).
    """
    if tuple(feature.shape[1:3]) == (height, width):
        return feature
    rows = ops.convert_to_tensor(bilinear_resize_matrix(int(feature.shape[1]), height), feature.dtype)
    columns = ops.convert_to_tensor(bilinear_resize_matrix(int(feature.shape[2]), width), feature.dtype)
    feature = ops.einsum("oh,bhwc->bowc", rows, feature)
    return ops.einsum("ow,bhwc->bhoc", columns, feature)


@keras.saving.register_keras_serializable(package="keras_l2t")
class FeatureMatching(keras.layers.Layer):
    """Per-channel squared error between a source map and the regressed target map.

    The regressor r_θ is a 1×1 conv (with bias, PyTorch default init) from the
    target's channels to the source's; it is part of θ and trains with the
    target. The source map is bilinearly resized to the target map's size (the
    target is never resized). Returns diff_{b,c} = mean_{h,w}(S − r_θ(T))²,
    shape (B, C_m); weighting and β are applied by the caller.

    Args:
        source_channels: C_m.
        target_channels: C_n.

    Call arguments:
        source_feature: (B, H_m, W_m, C_m) source map (any size).
        target_feature: (B, H_n, W_n, C_n) target map.
    """

    def __init__(self, source_channels, target_channels, **kwargs):
        super().__init__(**kwargs)
        self.source_channels = int(source_channels)
        self.target_channels = int(target_channels)
        self.regressor = keras.layers.Conv2D(
            self.source_channels,
            1,
            use_bias=True,
            kernel_initializer=initializers.torch_default_kernel(),
            bias_initializer=initializers.torch_default_bias(self.target_channels),
            dtype=self.dtype_policy,
            name="regressor",
        )

    def build(self, source_shape=None, target_shape=None):
        self.regressor.build((None, None, None, self.target_channels))

    def call(self, source_feature, target_feature):
        height, width = target_feature.shape[1], target_feature.shape[2]
        source_feature = resize_to(source_feature, height, width)
        regressed = self.regressor(target_feature)
        squared = ops.square(at_least_float32(source_feature) - at_least_float32(regressed))
        return ops.mean(squared, axis=(1, 2))

    def get_config(self):
        config = super().get_config()
        config.update({"source_channels": self.source_channels, "target_channels": self.target_channels})
        return config

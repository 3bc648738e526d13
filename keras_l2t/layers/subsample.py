"""`Subsample2D`: keep every `stride`-th row and column (a strided 1×1 conv's sampling)."""

import keras


@keras.saving.register_keras_serializable(package="keras_l2t")
class Subsample2D(keras.layers.Layer):
    """Spatial subsampling `x[:, ::stride, ::stride, :]` of NHWC maps.

    A 1×1 convolution with stride s equals `Subsample2D(s)` followed by a 1×1
    convolution with stride 1. ResNet shortcuts are written that way because
    TensorFlow 2.21's oneDNN kernel for the gradient of a strided 1×1
    convolution corrupts memory for some shapes (e.g. batch 3, 4 channels:
    "malloc(): unaligned tcache chunk detected"); the slice also costs less.

    Args:
        stride: The step between kept rows/columns.
    """

    def __init__(self, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, inputs):
        return inputs[:, :: self.stride, :: self.stride, :]

    def compute_output_shape(self, input_shape):
        def reduced(size):
            return None if size is None else (size + self.stride - 1) // self.stride

        return (input_shape[0], reduced(input_shape[1]), reduced(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["stride"] = self.stride
        return config

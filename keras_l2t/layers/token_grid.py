"""`TokenGrid`: a vision transformer's patch tokens as an NHWC feature map."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_l2t")
class TokenGrid(keras.layers.Layer):
    """(B, prefix + H·W, D) tokens → (B, H, W, D): drops the class/register tokens, lays the patches out row by row.

    Transformer taps are matched against CNN maps, resized and pooled as any
    other tap. The grid comes from the image and patch sizes, not from the
    tokens' static shape (keras-hub's SigLIP reports one token too many).

    Args:
        prefix_tokens: Tokens before the patches (class, distillation, registers).
        height: Patch rows.
        width: Patch columns.
    """

    def __init__(self, prefix_tokens, height, width, **kwargs):
        super().__init__(**kwargs)
        self.prefix_tokens = int(prefix_tokens)
        self.height = int(height)
        self.width = int(width)

    def call(self, tokens):
        patches = tokens[:, self.prefix_tokens : self.prefix_tokens + self.height * self.width]
        return ops.reshape(patches, (-1, self.height, self.width, tokens.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "prefix_tokens": self.prefix_tokens, "height": self.height,
                "width": self.width}

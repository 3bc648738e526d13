"""Adam with L2 weight decay added to the gradient: the official meta-optimizer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_l2t")
class AdamL2(keras.optimizers.Adam):
    """`torch.optim.Adam(weight_decay=wd)`: g ← g + wd·φ before the Adam moments.

    Keras Adam's `weight_decay` is decoupled (AdamW); the official code
    (`--meta-wd 1e-4`) couples it, so the gradient is modified here instead.
    Keras puts epsilon on the un-bias-corrected denominator (PyTorch after the
    correction); at eps=1e-8 the difference is negligible.

    Args:
        learning_rate: Meta learning rate (official 1e-4).
        weight_decay: Coupled L2 coefficient (official 1e-4).
        **kwargs: Other `keras.optimizers.Adam` arguments (beta_1, beta_2, epsilon).
    """

    def __init__(self, learning_rate=1e-4, weight_decay=1e-4, epsilon=1e-8, name="adam_l2", **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, name=name, weight_decay=None, **kwargs)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.coupled_weight_decay = weight_decay

    def update_step(self, gradient, variable, learning_rate):
        decay = ops.convert_to_tensor(self.coupled_weight_decay, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype) + decay * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.coupled_weight_decay
        return config

"""Adam with L2 weight decay added to the gradient: the official meta-optimizer, by torch's rule."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_l2t")
class AdamL2(keras.optimizers.Adam):
    """`torch.optim.Adam(weight_decay=wd)`, step for step, in float32 and float64.

    With g ← g + wd·φ (coupled L2, the official `--meta-wd 1e-4`; Keras'
    `weight_decay` is decoupled, AdamW), t the step count:

        m ← β₁m + (1−β₁)g;   v ← β₂v + (1−β₂)g²
        φ ← φ − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)

    Two things differ from Keras' `Adam`, and both matter for L2T-ww: Keras
    adds ε to the uncorrected √v (an effective ε/√(1−β₂ᵗ), 3.2e-7 at step 1),
    which stalls meta-gradient components of |g| ≲ 1e-6, and it casts β₁, β₂
    to the variable dtype before 1 − β and the bias corrections (0.999 becomes
    0.99900001287 in float32). Here ε follows the correction, and 1 − β and
    βᵗ are computed in float64, as torch does in Python (docs/method.md §4.3).
    `amsgrad=True` follows torch's AMSGrad (the maximum of v, then corrected).

    Args:
        learning_rate: Meta learning rate (official 1e-4).
        weight_decay: Coupled L2 coefficient (official 1e-4).
        beta_1, beta_2, epsilon: As torch's `betas` and `eps` (0.9, 0.999, 1e-8).
        **kwargs: Other `keras.optimizers.Optimizer` arguments (amsgrad,
            loss_scale_factor, ...).
    """

    def __init__(
        self, learning_rate=1e-4, weight_decay=1e-4, beta_1=0.9, beta_2=0.999, epsilon=1e-8, name="adam_l2",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name,
            weight_decay=None, **kwargs,
        )
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.coupled_weight_decay = weight_decay

    def _bias_corrections(self, dtype):
        """(1−β₁ᵗ, √(1−β₂ᵗ)) for this step, computed in float64 then cast to `dtype`."""
        step = ops.cast(self.iterations + 1, "float64")
        correction_1 = 1.0 - ops.power(ops.convert_to_tensor(float(self.beta_1), "float64"), step)
        correction_2 = 1.0 - ops.power(ops.convert_to_tensor(float(self.beta_2), "float64"), step)
        return ops.cast(correction_1, dtype), ops.cast(ops.sqrt(correction_2), dtype)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype) + ops.convert_to_tensor(self.coupled_weight_decay, dtype) * variable
        beta_1, beta_2 = float(self.beta_1), float(self.beta_2)  # 1 − β in Python, as torch
        correction_1, correction_2_sqrt = self._bias_corrections(dtype)
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        self.assign(momentum, momentum * beta_1 + gradient * (1.0 - beta_1))
        self.assign(velocity, velocity * beta_2 + ops.square(gradient) * (1.0 - beta_2))
        second_moment = velocity
        if self.amsgrad:
            velocity_hat = self._velocity_hats[index]
            self.assign(velocity_hat, ops.maximum(velocity_hat, velocity))
            second_moment = velocity_hat
        denominator = ops.sqrt(second_moment) / correction_2_sqrt + ops.convert_to_tensor(self.epsilon, dtype)
        self.assign_sub(variable, (learning_rate / correction_1) * momentum / denominator)

    def get_config(self):
        config = super().get_config()
        config["weight_decay"] = self.coupled_weight_decay
        return config

"""SGD with PyTorch semantics, written once as a pure update rule.

PyTorch's `SGD(momentum, weight_decay)` (dampening 0, no Nesterov), which the
official L2T-ww code uses for the target, differs from Keras `SGD`: weight
decay is an L2 term *coupled* into the momentum, and the buffer holds raw
gradients (Keras scales its velocity by the learning rate, which diverges once
the rate changes). The rule, per parameter θ with gradient g and buffer v:

    d = g + wd·θ;   v ← μ·v + d;   θ ← θ − lr·v

A zero-initialised buffer reproduces PyTorch's first step (v = d). A parameter
without gradient (None) is treated as g = 0: it still decays and carries
momentum, as PyTorch 1.x does (docs/method.md §4.2). The L2T-ww look-ahead calls
`sgd_momentum_step` on tensors; `SGD` applies the same rule to variables.
"""

import keras
from keras import ops


def sgd_momentum_step(params, grads, buffers, learning_rate, momentum, weight_decay):
    """One PyTorch SGD-momentum step on lists of tensors; returns (params, buffers).

    Differentiable in every argument (no variable is touched), so a tape can
    take gradients through it.
    """
    new_params, new_buffers = [], []
    for param, grad, buffer in zip(params, grads, buffers):
        direction = param * weight_decay if grad is None else grad + weight_decay * param
        buffer = momentum * buffer + direction
        new_params.append(param - learning_rate * buffer)
        new_buffers.append(buffer)
    return new_params, new_buffers


@keras.saving.register_keras_serializable(package="keras_l2t")
class SGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled L2 weight decay, exactly as `torch.optim.SGD`.

    Args:
        learning_rate: Float or `LearningRateSchedule`.
        momentum: μ; PyTorch buffer semantics (not scaled by the learning rate).
        weight_decay: L2 coefficient added to the gradient before momentum
            (coupled, not Keras' decoupled decay).
        name: Optimizer name.
        **kwargs: Other `keras.optimizers.Optimizer` arguments (clipnorm, ...).

    Example:
    ```python
    model.compile(optimizer=keras_l2t.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4), ...)
    ```
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=1e-4, name="torch_sgd", **kwargs):
        kwargs.pop("use_ema", None)
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}.")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.momentum = momentum
        self.coupled_weight_decay = weight_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentum_buffers = [
            self.add_variable_from_reference(variable, "momentum_buffer") for variable in variables
        ]

    def momentum_buffer(self, variable):
        """The momentum buffer of `variable` (the optimizer must be built)."""
        return self.momentum_buffers[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        buffer = self.momentum_buffer(variable)
        dtype = variable.dtype
        (new_value,), (new_buffer,) = sgd_momentum_step(
            [ops.cast(variable, dtype)],
            [ops.cast(gradient, dtype)],
            [ops.cast(buffer, dtype)],
            ops.cast(learning_rate, dtype),
            ops.convert_to_tensor(self.momentum, dtype),
            ops.convert_to_tensor(self.coupled_weight_decay, dtype),
        )
        self.assign(buffer, new_buffer)
        self.assign(variable, new_value)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update({"momentum": self.momentum, "weight_decay": self.coupled_weight_decay})
        return config

"""Every gradient of a step is computed before any variable of that step changes.

Measured (TF 2.21 CPU, oneDNN on or off, `enable_op_determinism`): without this,
`Optimizer.apply` lets the update of a variable run as soon as *its* gradient
is ready, while gradients of earlier layers are still being computed from
values that the update can overwrite. Training a ResNet-32 then gave a
different first-layer kernel on every run after two steps (3 runs, 3 results),
and the gradient used was not the gradient at the step's weights. Holding all
updates behind all gradients made the same runs bit-identical.
"""

import tensorflow as tf


def after_all_gradients(grads):
    """`grads`, each released only once all of them are computed (a no-op in eager mode)."""
    ready = [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads if g is not None]
    with tf.control_dependencies(ready):
        return [_identity(g) for g in grads]


def _identity(grad):
    if grad is None:
        return None
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(tf.identity(grad.values), grad.indices, grad.dense_shape)
    return tf.identity(grad)


class AllGradientsFirst:
    """Optimizer mixin: `apply` updates nothing until every gradient of the step exists."""

    def apply(self, grads, trainable_variables=None):
        return super().apply(after_all_gradients(list(grads)), trainable_variables)

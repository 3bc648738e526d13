"""The memory-lean meta-gradient: reverse adjoints through the look-ahead, recomputing each step.

The default meta-gradient of `L2TWW` records the whole look-ahead (T matching
steps, one CE step, the outer forward) under one tape and differentiates it
once: every step's forward and backward tensors stay alive until the reverse
pass reaches them, so the peak memory grows with T.

This is the official `MetaSGD.meta_backward` instead (docs/method.md §4.2): the
forward pass keeps only each step's starting point θ_t, then the reverse pass
walks the steps backwards with adjoints a = dJ/dθ and c = dJ/dv (v the
momentum buffer), recomputing step t's gradient g_t under a tape and
differentiating ⟨g_t, u⟩, u = −η·a + c, once more:

    dJ/dφ += (∂g_t/∂φ)ᵀ u
    a ← (1 − η·wd)·a + wd·c + H_t u        (H_t u: a Hessian-vector product)
    c ← μ·c − η·μ·a

It is reverse-mode differentiation of the same computation, so the gradient
equals the recorded one (to rounding; tests/test_l2t_ww.py); it holds one
step's graph at a time and pays one extra forward + backward per step. With
`first_order`, H_t is dropped (θ_t constant in φ), and the CE step, which does
not depend on φ, needs no recomputation at all.

Measured (docs/profile.md, VGG-9-BN target, batch 64): the peak tensor memory
of an exact iteration is 21 % lower at T = 2 and 41 % lower at T = 4 (it stays
nearly flat in T), for 20-22 % more time. One step's second-order reverse alone
needs most of the T = 2 peak, so the gain grows with T. Each recomputation is
held back by a control dependency on the incoming adjoint: without it, the
recomputation cost no time and the memory rose above the recorded version's
(grappler evidently merged it with the forward pass).
"""

import tensorflow as tf

from keras_l2t.determinism import ordered_sum
from keras_l2t.optimizers.sgd import sgd_momentum_step


def adjoint_meta_gradient(
    step_gradient, outer_loss, theta, buffers, meta_outputs, num_steps, learning_rate, momentum, weight_decay,
    first_order=False, depends_on_meta=None,
):
    """The outer loss after `num_steps` SGD-momentum steps, and its gradient with respect to `meta_outputs`.

    Args:
        step_gradient: `(t, theta) -> list` of step t's gradient (None where a
            parameter has none); it reads `meta_outputs` itself, and must be
            differentiable in `theta` and in `meta_outputs`.
        outer_loss: `theta -> (objective, differentiated)`; the gradient is of
            `differentiated` (e.g. the objective scaled for the optimizer),
            `objective` is returned as is.
        theta, buffers: The starting parameters and momentum buffers (lists of tensors).
        meta_outputs: The tensors to differentiate with respect to (list).
        num_steps: Steps in the look-ahead (T + 1 in L2T-ww).
        learning_rate, momentum, weight_decay: The SGD rule
            (`keras_l2t.optimizers.sgd_momentum_step`).
        first_order: Treat each θ_t as constant in φ (no Hessian terms).
        depends_on_meta: `t -> bool`, whether step t reads `meta_outputs`
            (default: every step does).

    Returns:
        (objective, gradients): gradients has one tensor per `meta_outputs` entry.
    """
    depends_on_meta = depends_on_meta or (lambda t: True)
    # Forward: no tape above this, so each step's activations are freed once its gradient exists.
    starts = []
    for t in range(num_steps):
        starts.append(theta)
        grads = step_gradient(t, theta)
        theta, buffers = sgd_momentum_step(theta, grads, buffers, learning_rate, momentum, weight_decay)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        objective, differentiated = outer_loss(theta)
    a = tape.gradient(differentiated, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    c = [tf.zeros_like(p) for p in theta]
    meta_grads = [tf.zeros_like(m) for m in meta_outputs]

    for t in reversed(range(num_steps)):
        needs_meta = depends_on_meta(t)
        u = [c_i - learning_rate * a_i for a_i, c_i in zip(a, c)]
        hvp = None
        if needs_meta or not first_order:
            # The control dependency keeps the executor from recomputing this
            # step before the reverse pass reaches it (else all steps' tensors
            # could be alive at once again).
            with tf.control_dependencies(u):
                theta_t = [tf.identity(p) for p in starts[t]]
            sources = ([] if first_order else theta_t) + (list(meta_outputs) if needs_meta else [])
            with tf.GradientTape() as tape:
                tape.watch(sources)
                evaluated_at = [tf.stop_gradient(p) for p in theta_t] if first_order else theta_t
                grads = step_gradient(t, evaluated_at)
                product = ordered_sum([tf.reduce_sum(g * u_i) for g, u_i in zip(grads, u) if g is not None])
            result = tape.gradient(product, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if not first_order:
                hvp, result = result[: len(theta_t)], result[len(theta_t) :]
            if needs_meta:
                meta_grads = [m + r for m, r in zip(meta_grads, result)]
        new_a = [(1.0 - learning_rate * weight_decay) * a_i + weight_decay * c_i for a_i, c_i in zip(a, c)]
        if hvp is not None:
            new_a = [n + h for n, h in zip(new_a, hvp)]
        c = [momentum * c_i - learning_rate * momentum * a_i for a_i, c_i in zip(a, c)]
        a = new_a
    return objective, meta_grads

"""Bit-reproducible training on CPU: what TF's op determinism leaves out.

`tf.config.experimental.enable_op_determinism()` is not enough. TensorFlow's
`AddN` kernel sums its inputs starting from whichever input buffer it can
reuse for its output, and which one it can reuse depends on which other ops
still hold the inputs at that moment: thread timing. With three or more
inputs that changes the order of the floating-point additions, hence the last
bits of the result (with two, `a + b == b + a` exactly). Two places create
such `AddN`s:

- Grappler's arithmetic optimizer rewrites chains of `Add`s (for example the
  coupled weight decay `momentum * v + g + wd * θ` of `keras_l2t.optimizers.SGD`)
  into one `AddN`;
- `tf.GradientTape` sums the gradients of a tensor with three or more
  consumers with one `AddN` (a ResNet block output feeds the next block, its
  shortcut and a matching pair).

Measured on this project's 2-core CPU (TF 2.21, oneDNN on or off): 30 repeats
of 4 SGD steps of a ResNet-32 gave 11–15 different results out of 30, and 15
repeats of 3 L2T-ww steps with a ResNet-32 target 10–13 out of 15; with
`enable_determinism()` every repeat was bit-identical. Training VGG-9-BN
targets and Keras' own SGD happened to create no such `AddN`.
"""

import functools
import warnings

import tensorflow as tf


def enable_determinism():
    """Makes TensorFlow training bit-reproducible in this process (irreversible).

    Enables TF op determinism, turns off Grappler's arithmetic optimizer, and
    makes `tf.GradientTape` sum gradients two at a time in a fixed order. Call
    it before the first `tf.function` is traced; the seeds are separate
    (`keras.utils.set_random_seed`). Measured: no slowdown of `bench.meta_step`'s
    standard workload (docs/internals.md, "Measured figures").
    """
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})
    _register_ordered_gradient_aggregation()


def ordered_sum(tensors):
    """`tensors[0] + tensors[1] + ...`, added left to right (unlike `tf.add_n`, whose order varies)."""
    return functools.reduce(tf.add, tensors)


def _register_ordered_gradient_aggregation():
    # The tape's aggregation function lives in TensorFlow's private eager
    # "vector space", registered once at import; re-registering it with an
    # ordered sum is the only hook there is.
    try:
        from tensorflow.python import pywrap_tfe  # pylint: disable=import-outside-toplevel
        from tensorflow.python.eager import backprop  # pylint: disable=import-outside-toplevel

        default_aggregate = backprop._aggregate_grads  # pylint: disable=protected-access
        vspace = backprop._default_vspace  # pylint: disable=protected-access
    except (ImportError, AttributeError) as error:
        warnings.warn(
            f"keras_l2t.determinism: this TensorFlow ({tf.__version__}) has no hook for the gradient "
            f"tape's aggregation ({error}); networks whose tensors have 3 or more consumers may not be "
            "bit-reproducible.",
            RuntimeWarning,
            stacklevel=3,
        )
        return

    def aggregate(gradients):
        if len(gradients) > 2 and all(isinstance(g, tf.Tensor) for g in gradients):
            return ordered_sum(gradients)
        return default_aggregate(gradients)

    pywrap_tfe.TFE_Py_RegisterVSpace(vspace._replace(aggregate_fn=aggregate))

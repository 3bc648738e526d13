"""Mixed precision: choosing the global policy, and running chosen layers at full precision.

Under `mixed_float16` / `mixed_bfloat16` the real training step computes in
16 bits, but the L2T-ww look-ahead and meta-gradient stay at the variable
dtype (float32): a 16-bit look-ahead changes the meta-gradient by 6-15 %
(docs/method.md §4.8). `full_precision` switches layers to their variable dtype for
the duration of a block.
"""

import contextlib
import threading

import keras

MIXED_PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")

_lock = threading.Lock()
_switched = {}  # id(layer) -> [layer, original policy, depth]


@contextlib.contextmanager
def global_dtype_policy(name):
    """Sets Keras' global dtype policy inside the block (None: leave it), then restores it.

    Layers take the global policy when they are created, so building a model
    inside the block is what makes it mixed.
    """
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _is_mixed(layer):
    policy = layer.dtype_policy
    return policy.quantization_mode is None and policy.compute_dtype != policy.variable_dtype


@contextlib.contextmanager
def full_precision(layers):
    """Inside the block, `layers` compute in their variable dtype (no effect on non-mixed layers).

    Nested and concurrent entries are counted per layer and the original
    policy comes back when the last one leaves: `tf.distribute` traces each
    replica's step in its own thread, and those threads take turns inside the
    same block.
    """
    entered = []
    with _lock:
        for layer in layers:
            key = id(layer)
            if key in _switched:
                _switched[key][2] += 1
            elif _is_mixed(layer):
                _switched[key] = [layer, layer.dtype_policy, 1]
                layer.dtype_policy = layer.dtype_policy.variable_dtype
            else:
                continue
            entered.append(key)
    try:
        yield
    finally:
        with _lock:
            for key in entered:
                record = _switched[key]
                record[2] -= 1
                if record[2] == 0:
                    record[0].dtype_policy = record[1]
                    del _switched[key]

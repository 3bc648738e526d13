"""Keras 3's `fit` and `evaluate` on several machines: a workaround for keras-team/keras#20585.

Under `tf.distribute.MultiWorkerMirroredStrategy` with two or more workers,
Keras 3's TensorFlow trainer (keras/src/backend/tensorflow/trainer.py; broken
since TF 2.16 / Keras 3.0, still in Keras 3.15) fails twice before training:

1. `_maybe_symbolic_build` reduces the first per-replica batch with
   `strategy.reduce("MEAN", batch, axis=None)` in eager mode, which the
   multi-worker strategy refuses ("Attempt to convert a value (PerReplica...)
   to a Tensor").
2. The train and test functions reduce each step's logs with
   `strategy.reduce("MEAN", log, axis=0)`, which fails for scalar logs
   ("Invalid reduction dimension 0 for input with 0 dimensions").

`MultiWorkerFitMixin` overrides the two trainer hooks involved, and only
when Keras' own code would take its multi-worker branch
(`distribute.in_multi_worker_mode`): on one device, under `MirroredStrategy`,
or under a one-worker `MultiWorkerMirroredStrategy` it changes nothing.
Remove it once Keras fixes the issue (tests/test_multi_worker.py checks it).

The hooks are private, and they have changed (keras/src/backend/tensorflow/trainer.py):
- Keras 3.5–3.6: no `_make_function` (`make_train_function` and
  `make_test_function` each build their own step), so an override of it never
  runs; `_maybe_symbolic_build` reads `iterator.enumerate_epoch()` (the epoch
  iterator itself is not iterable).
- Keras 3.7–3.10: `_make_function(self, step_function)`; the epoch iterator
  yields `(step, iterator)`.
- Keras 3.11–3.15: the same `_make_function`; the epoch iterator yields
  `(begin_step, end_step, iterator)`.
The mixin is correct from Keras 3.7 (measured on 3.7, 3.10 and 3.15.1).
setup.py asks for 3.10: below it, Keras' own losses (3.7) and logs (3.8–3.9)
on several replicas differ from one device's. Importing this module checks
that `keras.Model` has both hooks with the parameters overridden here
(`hook_mismatches`) and raises one line if not; `_maybe_symbolic_build` takes
the batches' iterator last in either shape of item, and raises on any other.
tests/test_multi_worker.py checks that both hooks run.
"""

import collections.abc
import inspect

import keras
import tensorflow as tf
from keras import tree

from keras_l2t import distribute

KERAS_ISSUE = "https://github.com/keras-team/keras/issues/20585"
# The trainer hooks `MultiWorkerFitMixin` overrides, with their parameters (the same from Keras 3.7 to 3.15.1).
HOOKS = {"_maybe_symbolic_build": ("self", "iterator", "data_batch"), "_make_function": ("self", "step_function")}


def hook_mismatches(model_class=None):
    """What differs between the hooks `MultiWorkerFitMixin` overrides and `model_class`'s (default `keras.Model`).

    Returns one phrase per missing hook or hook with other parameters; an empty list when they fit.
    """
    model_class = keras.Model if model_class is None else model_class
    mismatches = []
    for name, parameters in HOOKS.items():
        hook = getattr(model_class, name, None)
        if hook is None:
            mismatches.append(f"no {name}")
        elif tuple(inspect.signature(hook).parameters) != parameters:
            mismatches.append(f"{name}{inspect.signature(hook)} instead of {name}({', '.join(parameters)})")
    return mismatches


def _check_keras():
    mismatches = hook_mismatches()
    if mismatches:
        raise ImportError(
            f"keras_l2t.multi_worker_fit overrides hooks of Keras' TensorFlow trainer, but Keras {keras.__version__} "
            f"(backend {keras.backend.backend()}) has {'; '.join(mismatches)}: install keras>=3.10 (setup.py) and "
            f"use the TensorFlow backend ({KERAS_ISSUE})."
        )


_check_keras()


def _batches(item):
    """The batches' iterator in an item of Keras' TF epoch iterator: (step, it) before 3.11, (begin, end, it) since."""
    batches = item[-1] if isinstance(item, tuple) and len(item) in (2, 3) else None
    if not isinstance(batches, collections.abc.Iterator):
        raise TypeError(
            f"keras_l2t.multi_worker_fit: Keras {keras.__version__}'s epoch iterator yields {type(item).__name__} "
            f"{item!r:.200}, not (step, iterator) or (begin_step, end_step, iterator) ({KERAS_ISSUE})."
        )
    return batches


class MultiWorkerFitMixin:
    """Makes Keras 3's `fit`/`evaluate` work under a multi-worker `MultiWorkerMirroredStrategy`.

    Mix it in before `keras.Model`. Upstream: https://github.com/keras-team/keras/issues/20585.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # https://github.com/keras-team/keras/issues/20585, failure 1: Keras MEAN-reduces the first
        # per-replica batch eagerly, which the multi-worker strategy cannot. The symbolic build needs
        # shapes and dtypes only, so this worker's first replica's share of that batch does.
        strategy = self._distribute_strategy
        if iterator is None or not distribute.in_multi_worker_mode(strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        for item in iterator:
            data_batch = tree.map_structure(
                lambda value: (
                    strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value
                ),
                next(_batches(item)),
            )
            break
        return super()._maybe_symbolic_build(data_batch=data_batch)

    def _make_function(self, step_function):
        # https://github.com/keras-team/keras/issues/20585, failure 2: Keras reduces every log of a
        # step with `strategy.reduce("MEAN", log, axis=0)`, which fails on scalars. Here each replica
        # packs its logs into one [1, n] float64 row: Keras' reduction over axis 0 is then the mean over
        # the replicas (what Keras computes for `MirroredStrategy`), in one all-reduce instead of one per
        # log, and a compiled function unpacks the row into the logs' structure and dtypes again.
        if not distribute.in_multi_worker_mode(self.distribute_strategy):
            return super()._make_function(step_function)
        layout = {}

        def step_with_packed_logs(data):
            logs = step_function(data)
            flat = [tf.convert_to_tensor(value) for value in tree.flatten(logs)]
            layout.update(structure=logs, specs=[(value.shape, value.dtype) for value in flat])
            if not flat:
                return tf.zeros([1, 0], tf.float64)
            return tf.concat([tf.reshape(tf.cast(value, tf.float64), [-1]) for value in flat], 0)[tf.newaxis]

        @tf.function
        def unpack(row):
            sizes = [shape.num_elements() for shape, _ in layout["specs"]]
            parts = tf.split(row, sizes) if sizes else []
            values = [tf.cast(tf.reshape(part, shape), dtype) for part, (shape, dtype) in zip(parts, layout["specs"])]
            return tree.pack_sequence_as(layout["structure"], values)

        packed_function = super()._make_function(step_with_packed_logs)

        def function(iterator):
            return unpack(packed_function(iterator))

        return function

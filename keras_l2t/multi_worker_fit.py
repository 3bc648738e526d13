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
"""

import tensorflow as tf
from keras.src import tree

from keras_l2t import distribute

KERAS_ISSUE = "https://github.com/keras-team/keras/issues/20585"


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
        for _, _, batches in iterator:
            data_batch = tree.map_structure(
                lambda value: (
                    strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value
                ),
                next(batches),
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

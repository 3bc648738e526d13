"""`tf.distribute` strategies, and the cross-replica arithmetic that keeps L2T-ww exact on them.

`get_strategy` picks one of: the default (one device), `mirrored` (all local
GPUs, or a list of devices) and `multi_worker` (`TF_CONFIG`-driven). Build and
compile the model under `strategy.scope()`; Keras' `fit` then splits every
global batch into per-replica batches itself. On several workers, `is_chief`
says which process writes the run's files, `shard_by_data` keeps the global
batches exact, and keras-l2t's models work around Keras' `fit` there
(`keras_l2t.multi_worker_fit`).

A step split over R replicas equals the one-device step on the global batch
only if (docs/method.md §4.8):
- losses whose gradients go to `optimizer.apply` are scaled by 1/R, because
  Keras sums gradients across replicas (`scale_for_apply`);
- the look-ahead's inner gradients are all-reduced (MEAN) before each inner
  SGD step (`all_reduce_mean`; differentiable, so the meta-gradient stays
  exact): a per-replica look-ahead is a different estimator;
- BatchNorm batch moments are all-reduced (`keras_l2t.layers.BatchNormalization`).
All three are exact for equal per-replica batches (the pipelines drop the last
partial batch).
"""

import tensorflow as tf
from keras_l2t.errors import InputError

STRATEGIES = ("default", "mirrored", "multi_worker")
_multi_worker = None


def get_strategy(name="default", devices=None):
    """The `tf.distribute.Strategy` called `name`.

    Args:
        name: "default" (the current strategy: one device unless a scope is
            open), "mirrored" (synchronous data parallelism on one machine) or
            "multi_worker" (synchronous data parallelism over the workers that
            the `TF_CONFIG` environment variable describes).
        devices: For "mirrored" only: device names such as
            `["/gpu:0", "/gpu:1"]`; default all local GPUs (or the CPU).

    Example:
    ```python
    strategy = keras_l2t.distribute.get_strategy("mirrored")
    with strategy.scope():
        model = keras_l2t.L2TWW(source, target)
        model.compile()
    model.fit(train_ds)  # train_ds yields global batches
    ```
    """
    if name not in STRATEGIES:
        raise InputError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    if devices and name != "mirrored":
        raise InputError(f"devices apply to the mirrored strategy only (got strategy {name!r}).")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        # One per process: TF configures its collectives once (create it before other TF work).
        global _multi_worker  # pylint: disable=global-statement
        if _multi_worker is None:
            _multi_worker = tf.distribute.MultiWorkerMirroredStrategy()
        return _multi_worker
    return tf.distribute.get_strategy()


def in_multi_worker_mode(strategy=None):
    """Whether `strategy` (default: the current one) is a `MultiWorkerMirroredStrategy` over two or more workers.

    The same test as Keras' trainer uses for its multi-worker code paths (a
    `MultiWorkerMirroredStrategy` without `TF_CONFIG` is one worker).
    """
    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()  # pylint: disable=protected-access
    )


def is_chief(strategy=None):
    """Whether this process writes the run's files: always, except on a non-chief multi-worker worker.

    TensorFlow's convention: the chief is the task of type "chief" if
    `TF_CONFIG`'s cluster has one, else worker 0.
    """
    strategy = tf.distribute.get_strategy() if strategy is None else strategy
    if not in_multi_worker_mode(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs
    )


def gather_from_workers(strategy, values):
    """Every worker's `values` (a list of numbers), one row per replica: a collective all workers must call."""
    values = tf.constant([float(v) for v in values], tf.float64)

    @tf.function
    def gather():
        per_replica = strategy.run(lambda: tf.identity(values)[tf.newaxis])
        return strategy.gather(per_replica, axis=0)

    return gather().numpy().tolist()


def shard_by_data(dataset):
    """`dataset` set to be split by data, not by file, over the workers of a multi-worker strategy.

    Every worker then reads all of it and keeps its replicas' share of each
    global batch: the global batches are those one device sees (so a step is
    exact), whatever files the data comes from. (TensorFlow's default, AUTO,
    gives each worker whole files where it can.) No effect on one worker.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def num_replicas_in_sync():
    """R: the replicas a step is split over (1 outside any strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_context():
    """The replica context while running in one of several replicas, else None."""
    context = strategy_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def strategy_replica_context():
    """The replica context of a `tf.distribute` strategy, even of one replica; None outside any strategy.

    Unlike `replica_context`, it includes a one-device `MirroredStrategy`:
    its `merge_call` (which `optimizer.apply` makes) still refuses to run
    inside a `tf.cond` branch, so code choosing whether to apply an optimizer
    must know it is inside a strategy whatever the replica count.
    """
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


def _all_reduce(reduce_op, tensors):
    tensors = list(tensors)
    context = replica_context()
    present = [i for i, t in enumerate(tensors) if t is not None]
    if context is None or not present:
        return tensors
    reduced = context.all_reduce(reduce_op, [tensors[i] for i in present])
    for i, value in zip(present, reduced):
        tensors[i] = value
    return tensors


def all_reduce_mean(tensors):
    """Each tensor averaged over the replicas (None kept); identity on one replica.

    Differentiable: its gradient is the MEAN all-reduce of the incoming
    gradients, so second-order meta-gradients pass through it.
    """
    return _all_reduce(tf.distribute.ReduceOp.MEAN, tensors)


def all_reduce_sum(tensors):
    """Each tensor summed over the replicas (None kept); identity on one replica. Differentiable."""
    return _all_reduce(tf.distribute.ReduceOp.SUM, tensors)


def scale_for_apply(loss):
    """`loss / R`: a per-replica mean loss whose gradients Keras will sum across the R replicas."""
    replicas = num_replicas_in_sync()
    return loss if replicas == 1 else loss * (1.0 / replicas)

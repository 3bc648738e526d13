"""One worker of a two-worker `MultiWorkerMirroredStrategy` on localhost: run by tests/test_multi_worker.py.

    TF_CONFIG=... python -m tests.multi_worker_cases CASE[,CASE...]

`TF_CONFIG` (see `tf_config`) is in the environment before TensorFlow starts;
the strategy is created before any other TensorFlow work; then the cases run
in order, printing one JSON line each.

The cases: a method of tests/distribute_cases.py's `compare` (two training
steps on the two workers' replicas against the same steps on one device, in
float64), or `plain_keras` (does Keras' own `fit` still fail here, i.e. is the
workaround still needed).

    TF_CONFIG={} python -m tests.multi_worker_cases mixin_hooks

`mixin_hooks` runs alone, in one process without a cluster: does
keras_l2t.multi_worker_fit's workaround run on the installed Keras at all
(its hooks are private and have changed between Keras versions).
"""

import collections
import json
import sys


def tf_config(index, ports):
    """`TF_CONFIG` of worker `index` in a cluster of workers on localhost at `ports`."""
    return json.dumps(
        {"cluster": {"worker": [f"localhost:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    )


COMPARED_METHODS = ("l2t_ww", "fm", "scratch")


def plain_keras_fit(strategy):
    """Fits a plain `keras.Model` (no workaround) one epoch; returns the error it fails with, or None."""
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    try:
        model.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    except Exception as error:  # pylint: disable=broad-except
        return f"{type(error).__name__}: {str(error)[:300]}"
    return None


def mixin_hooks(strategy):
    """Keras' `fit` and `evaluate` of a `Backbone` under a one-worker strategy told that it has several workers.

    Both Keras and `distribute.in_multi_worker_mode` ask `strategy.extended._in_multi_worker_mode()`; told
    yes, Keras takes its multi-worker branches on one process: plain Keras fails there (failure 2 of
    keras_l2t.multi_worker_fit, the negative control), and `MultiWorkerFitMixin`'s hooks must be called,
    take their multi-worker branch and give one device's logs and weights (float64, one replica). A mixin
    whose hooks this Keras never calls, or calls with other arguments, fails here.
    """
    # pylint: disable=import-outside-toplevel,protected-access
    import keras
    import numpy as np

    from keras_l2t import distribute
    from keras_l2t.multi_worker_fit import HOOKS, MultiWorkerFitMixin
    from keras_l2t.optimizers import SGD
    from tests.toy_backbones import tiny_backbone

    assert not distribute.in_multi_worker_mode(strategy), "run mixin_hooks without a cluster (TF_CONFIG={})"
    strategy.extended._in_multi_worker_mode = lambda: True
    calls = collections.Counter()  # (hook, whether it took its multi-worker branch) -> calls

    def counted(name, hook):
        def counting_hook(self, *args, **kwargs):
            calls[f"{name} multi_worker={distribute.in_multi_worker_mode(self.distribute_strategy)}"] += 1
            return hook(self, *args, **kwargs)

        return counting_hook

    for name in HOOKS:
        setattr(MultiWorkerFitMixin, name, counted(name, getattr(MultiWorkerFitMixin, name)))
    result = {"multi_worker_now": distribute.in_multi_worker_mode(strategy)}
    result["plain_keras_error"] = plain_keras_fit(strategy)

    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 8, 8, 3)), rng.integers(0, 3, 12)

    def build():
        model = tiny_backbone("target", (3, 4), seed=2)
        model.compile(
            optimizer=SGD(0.1, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        return model

    one = build()
    with strategy.scope():
        two = build()
    two.set_weights(one.get_weights())
    logs = []
    for model in (one, two):
        history = model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, validation_data=(x, y)).history
        logs.append({name: values[-1] for name, values in history.items()})
        evaluated = model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
        logs[-1].update({f"evaluate/{name}": value for name, value in evaluated.items()})
    result["logs"] = {k: abs(logs[1][k] - v) / max(abs(v), 1e-30) for k, v in logs[0].items() if k in logs[1]}
    result["missing_logs"] = sorted(set(logs[0]) ^ set(logs[1]))
    result["weights"] = max(float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights()))
    result["hook_calls"] = dict(calls)
    return result


def main(cases):
    # pylint: disable=import-outside-toplevel
    from keras_l2t import distribute
    from tests import distribute_cases

    strategy = distribute.get_strategy("multi_worker")  # before any other TensorFlow work
    worker = {"chief": distribute.is_chief(strategy), "multi_worker": distribute.in_multi_worker_mode(strategy)}
    for case in cases:
        if case == "plain_keras":
            result = {"plain_keras_error": plain_keras_fit(strategy)}
        elif case == "mixin_hooks":
            result = mixin_hooks(strategy)
        else:
            result = distribute_cases.compare(case, strategy=strategy)
        print(json.dumps({"case": case, **worker, **result}), flush=True)


if __name__ == "__main__":
    names = sys.argv[1].split(",")
    unknown = set(names) - set(COMPARED_METHODS) - {"plain_keras", "mixin_hooks"}
    if unknown:
        raise SystemExit(
            f"unknown cases {sorted(unknown)}: choose from {COMPARED_METHODS + ('plain_keras', 'mixin_hooks')}"
        )
    if "mixin_hooks" in names and names != ["mixin_hooks"]:
        raise SystemExit("mixin_hooks runs alone: TF_CONFIG={} python -m tests.multi_worker_cases mixin_hooks")
    main(names)

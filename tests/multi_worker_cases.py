"""One worker of a two-worker `MultiWorkerMirroredStrategy` on localhost: run by tests/test_multi_worker.py.

    TF_CONFIG=... python -m tests.multi_worker_cases CASE[,CASE...]

`TF_CONFIG` (see `tf_config`) is in the environment before TensorFlow starts;
the strategy is created before any other TensorFlow work; then the cases run
in order, printing one JSON line each.

The cases: a method of tests/distribute_cases.py's `compare` (two training
steps on the two workers' replicas against the same steps on one device, in
float64), or `plain_keras` (does Keras' own `fit` still fail here, i.e. is the
workaround still needed).
"""

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


def main(cases):
    # pylint: disable=import-outside-toplevel
    from keras_l2t import distribute
    from tests import distribute_cases

    strategy = distribute.get_strategy("multi_worker")  # before any other TensorFlow work
    worker = {"chief": distribute.is_chief(strategy), "multi_worker": distribute.in_multi_worker_mode(strategy)}
    for case in cases:
        if case == "plain_keras":
            result = {"plain_keras_error": plain_keras_fit(strategy)}
        else:
            result = distribute_cases.compare(case, strategy=strategy)
        print(json.dumps({"case": case, **worker, **result}), flush=True)


if __name__ == "__main__":
    names = sys.argv[1].split(",")
    unknown = set(names) - set(COMPARED_METHODS) - {"plain_keras"}
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}: choose from {COMPARED_METHODS + ('plain_keras',)}")
    main(names)

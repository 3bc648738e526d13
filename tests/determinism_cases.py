"""Repeats of the same short training in one fresh process: `python -m tests.determinism_cases CASE [--off]`.

Prints one JSON line: the number of repeats and the distinct digests of every
variable (model and optimizers) after them. Run by tests/test_determinism.py
in a subprocess because `enable_determinism` changes the whole process.
`--off` leaves determinism off (the negative control: measured 11-15 distinct
results out of 30 repeats for `resnet_sgd`, 10-13 of 15 for `l2t_ww_resnet_target`).
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

import keras_l2t  # pylint: disable=wrong-import-position
from keras_l2t import backbones, determinism, optimizers  # pylint: disable=wrong-import-position


def _resnet32(width):
    return backbones.get_backbone("resnet32", num_classes=5, width=width, input_shape=(32, 32, 3))


def resnet_sgd():
    """A ResNet-32 trained from scratch by our SGD (coupled weight decay): 4 steps of batch 128."""
    model = _resnet32(0.5)
    model.compile(
        optimizer=optimizers.SGD(0.1, 0.9, 1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, 4, 128


def l2t_ww_resnet_target():
    """L2T-ww, ResNet-32 source and ResNet-32 target (block outputs with 3 consumers): 3 steps of batch 32."""
    model = keras_l2t.L2TWW(_resnet32(0.5), _resnet32(0.5), pairs="all")
    model.compile(optimizer=optimizers.SGD(0.1, 0.9, 1e-4), meta_optimizer=optimizers.AdamL2(1e-3, weight_decay=1e-4))
    return model, 3, 32


CASES = {"resnet_sgd": resnet_sgd, "l2t_ww_resnet_target": l2t_ww_resnet_target}


def main(case, repeats=8, enable=True):
    if enable:
        determinism.enable_determinism()
    keras.utils.set_random_seed(0)
    model, steps, batch_size = CASES[case]()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 5, steps * batch_size)
    model.train_on_batch(x[:batch_size], y[:batch_size])  # builds every variable and traces the step
    variables = {id(v): v for v in model.variables + model.optimizer.variables}
    if getattr(model, "meta_optimizer", None) is not None:
        variables.update({id(v): v for v in model.meta_optimizer.variables})
    variables = list(variables.values())
    start = [v.numpy() for v in variables]
    digests = set()
    for _ in range(repeats):
        for variable, value in zip(variables, start):
            variable.assign(value)
        for s in range(steps):
            model.train_on_batch(x[s * batch_size : (s + 1) * batch_size], y[s * batch_size : (s + 1) * batch_size])
        digests.add(hashlib.sha1(b"".join(v.numpy().tobytes() for v in variables)).hexdigest())
    print(json.dumps({"case": case, "repeats": repeats, "determinism": enable, "distinct": sorted(digests)}))


if __name__ == "__main__":
    main(sys.argv[1], enable="--off" not in sys.argv[2:])

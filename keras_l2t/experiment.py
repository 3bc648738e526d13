"""One training run, from a frozen config to `results.json`.

`train.main` turns its flags into an `ExperimentConfig` and calls
`run_experiment`; Python users can do the same. The library never reads flags.
"""

import dataclasses
import json
import os
import platform
import time

import keras
import tensorflow as tf

from keras_l2t import backbones
from keras_l2t import data as data_lib
from keras_l2t import optimizers
from keras_l2t import source_models
from keras_l2t.callbacks import BestValidationTracker, TransferMonitor
from keras_l2t.models import L2TWW

TRANSFER_METHODS = ("fm", "l2t_w", "l2t_ww")
METHODS = ("scratch",) + TRANSFER_METHODS


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run depends on (written to `model_dir/flags.json`)."""

    model_dir: str
    method: str = "scratch"
    dataset: str = "digits"
    data_dir: str | None = None
    target: str = "vgg9_bn"
    width: float = 1.0
    image_size: int | None = None
    epochs: int = 200
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    steps_per_epoch: int | None = None
    classes: tuple[int, ...] | None = None
    train_examples_per_class: int | None = None
    # Transfer (methods fm, l2t_w, l2t_ww):
    source: str | None = None
    pairs: str = "all"
    beta: float = 0.5
    inner_steps: int = 2
    meta_lr: float = 1e-4
    meta_weight_decay: float = 1e-4
    first_order: bool = False
    meta_every: int = 1
    verbose: int | str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {METHODS}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("steps_per_epoch", "image_size", "train_examples_per_class"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}.")
        if self.lr <= 0 or self.width <= 0:
            raise ValueError("lr and width must be positive.")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0.")
        if self.method in TRANSFER_METHODS and not self.source:
            raise ValueError(f"method {self.method!r} needs a source network (source=PATH or a named source).")
        if self.meta_lr < 0 or self.meta_weight_decay < 0 or self.beta < 0 or self.inner_steps < 0:
            raise ValueError("meta_lr, meta_weight_decay, beta and inner_steps must be >= 0.")
        if self.meta_every < 1:
            raise ValueError(f"meta_every must be >= 1, got {self.meta_every}.")


def versions():
    """Library versions recorded with every result."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    from keras_l2t import __version__  # pylint: disable=import-outside-toplevel

    return {
        "keras_l2t": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_datasets": tfds.__version__,
        "python": platform.python_version(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }


def _write_json(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def target_optimizer(config, steps_per_epoch):
    """The official target optimizer: PyTorch SGD under the per-epoch cosine schedule."""
    schedule = optimizers.EpochCosineDecay(config.lr, config.epochs, steps_per_epoch)
    return optimizers.SGD(schedule, momentum=config.momentum, weight_decay=config.weight_decay)


def build_model(config, splits, steps_per_epoch):
    """The compiled model of `config.method`: the target alone, or an `L2TWW` around it."""
    image_size = splits.image_size
    target = backbones.get_backbone(
        config.target,
        num_classes=splits.num_classes,
        width=config.width,
        input_shape=(image_size, image_size, 3),
    )
    if config.method == "scratch":
        target.compile(
            optimizer=target_optimizer(config, steps_per_epoch),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        return target
    source = source_models.load_source(config.source, image_size)
    model = L2TWW(
        source,
        target,
        pairs=config.pairs,
        mode=config.method,
        beta=config.beta,
        inner_steps=config.inner_steps,
        first_order=config.first_order,
        meta_every=config.meta_every,
    )
    meta_optimizer = None
    if model.uses_meta_learning:
        meta_optimizer = optimizers.AdamL2(config.meta_lr, weight_decay=config.meta_weight_decay)
    model.compile(optimizer=target_optimizer(config, steps_per_epoch), meta_optimizer=meta_optimizer)
    return model


def run_experiment(config):
    """Trains per `config`; returns the results it also writes to `model_dir`.

    Writes flags.json (once data and model are built), history.csv, tensorboard/, best_target.keras
    (the target at the best validation epoch) and results.json (at the end).
    """
    start = time.time()
    keras.utils.set_random_seed(config.seed)

    splits = data_lib.load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        batch_size=config.batch_size,
        seed=config.seed,
        classes=config.classes,
        train_examples_per_class=config.train_examples_per_class,
    )
    train_data = splits.train
    steps_per_epoch = splits.num_train // config.batch_size
    if config.steps_per_epoch is not None:
        steps_per_epoch = config.steps_per_epoch
        train_data = train_data.repeat()

    model = build_model(config, splits, steps_per_epoch)
    # Only now, with data and model in hand, does the run leave files behind.
    os.makedirs(config.model_dir, exist_ok=True)
    _write_json(os.path.join(config.model_dir, "flags.json"), dataclasses.asdict(config))
    tracker = BestValidationTracker(
        splits.test, checkpoint_path=os.path.join(config.model_dir, "best_target.keras")
    )
    log_dir = os.path.join(config.model_dir, "tensorboard")
    callbacks = [
        tracker,  # first: adds test_accuracy to the logs the others record
        keras.callbacks.CSVLogger(os.path.join(config.model_dir, "history.csv")),
        keras.callbacks.TensorBoard(log_dir, update_freq="epoch"),
    ]
    if isinstance(model, L2TWW) and model.uses_meta_learning:
        callbacks.append(TransferMonitor(next(iter(splits.val))[0], os.path.join(log_dir, "transfer")))
    model.fit(
        train_data,
        validation_data=splits.val,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    final_test = model.evaluate(splits.test, verbose=0, return_dict=True)["accuracy"]
    results = {
        "method": config.method,
        "dataset": config.dataset,
        "target": config.target,
        "source": config.source if config.method in TRANSFER_METHODS else None,
        "pairs": config.pairs if config.method in TRANSFER_METHODS else None,
        "width": config.width,
        "image_size": splits.image_size,
        "num_train": splits.num_train,
        "num_val": splits.num_val,
        "num_test": splits.num_test,
        "epochs_completed": tracker.epochs_completed,
        "best_val_accuracy": tracker.best_val_accuracy,
        "best_epoch": tracker.best_epoch,
        "test_accuracy_at_best_val": tracker.test_accuracy_at_best_val,
        "final_test_accuracy": float(final_test),
        "seed": config.seed,
        "wall_seconds": round(time.time() - start, 2),
        "versions": versions(),
    }
    _write_json(os.path.join(config.model_dir, "results.json"), results)
    return results


def pretrain_source(config):
    """Trains a source backbone from scratch per `config` (method "scratch"); returns its .keras path.

    The best-validation network is copied to `model_dir/source.keras`. If that
    file exists already, it is reused without training.
    """
    path = os.path.join(config.model_dir, "source.keras")
    if os.path.exists(path):
        return path
    run_experiment(dataclasses.replace(config, method="scratch"))
    os.replace(os.path.join(config.model_dir, "best_target.keras"), path)
    return path

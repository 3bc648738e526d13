"""One training run, from a frozen config to `results.json`.

`train.main` turns its flags into an `ExperimentConfig` and calls
`run_experiment`; Python users can do the same. The library never reads flags.
"""

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time

from absl import logging
import keras
import tensorflow as tf

from keras_l2t import backbones
from keras_l2t import checkpointing
from keras_l2t import data as data_lib
from keras_l2t import determinism, distribute, export, precision
from keras_l2t import optimizers
from keras_l2t import sources
from keras_l2t.backbones.hub import hub_target
from keras_l2t.time_estimate import RunTimeEstimate
from keras_l2t.callbacks import (
    BestValidationTracker,
    GroupedTensorBoard,
    MetaNetworkMovement,
    NonFiniteGuard,
    ResumableCSVLogger,
    ShortProgbarLogger,
    TransferMonitor,
)
from keras_l2t.errors import InputError
from keras_l2t.models import L2TWW, HandCraftedTransfer
from keras_l2t.models.hand_crafted import HAND_CRAFTED_METHODS

# l2t_ww_frozen: L2T-ww's meta-networks left at initialisation (no meta step), the control for "learned".
L2T_METHODS = ("fm", "l2t_w", "l2t_ww", "l2t_ww_frozen")
# The methods that need a source network (the rows of docs/method.md §5 after scratch).
TRANSFER_METHODS = HAND_CRAFTED_METHODS + L2T_METHODS
METHODS = ("scratch",) + TRANSFER_METHODS
# Pairs where `pairs` is left None: all-to-all for matching, same-stage for attention transfer.
DEFAULT_PAIRS = {
    "fm": "all", "l2t_w": "all", "l2t_ww": "all", "l2t_ww_frozen": "all", "at": "one_to_one", "lwf_at": "one_to_one",
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run depends on (written to `model_dir/flags.json`)."""

    model_dir: str
    method: str = "scratch"
    dataset: str = "digits"
    data_dir: str | None = None
    target: str = "vgg9_bn"  # backbones.BACKBONES, or a keras-hub preset (built at random weights, its config only)
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
    skip_unreadable_images: bool = False
    split: str | None = None  # data.SPLITS: "official" or "seeded"; None: data.default_split (official where matchable)
    augmentation: str | None = None  # data.AUGMENTATIONS; None: the dataset's own (folders: from image size)
    # Transfer (every method but scratch):
    source: str | None = None  # one spec, or several joined by commas (a multi-source run)
    source_blocks: tuple[int, ...] | None = None  # vision transformer sources: blocks tapped (1-based); None: 4 spaced
    pairs: str | None = None  # None: DEFAULT_PAIRS of the method
    beta: float = 0.5
    inner_steps: int = 2
    meta_lr: float | None = None  # None: auto, optimizers.auto_meta_learning_rate of the run's meta-steps
    meta_weight_decay: float = 1e-4
    meta_warmup_epochs: int = 0  # the meta learning rate rises linearly from 0 over these epochs' meta-steps
    pair_weight_init: float = 1.0  # the where-nets' initial bias (official --loss-weight-init): λ starts near it
    second_statistics_update: bool = True  # BN statistics also from a forward after the meta step (official)
    first_order: bool = False
    meta_every: int = 1
    recompute_look_ahead: bool = False
    full_precision_look_ahead: bool = True  # False: under mixed precision, a 16-bit look-ahead too (approximate)
    # Hand-crafted baselines (at, lwf, lwf_at), the values of the papers that introduced them:
    at_weight: float = 1e3  # β of attention transfer (Zagoruyko & Komodakis, 2017)
    lwf_weight: float = 1.0  # λ_o of LwF (Li & Hoiem, 2016)
    lwf_temperature: float = 2.0  # T of LwF
    deterministic: bool = False  # determinism.enable_determinism(): bit-identical reruns and resumptions
    # Devices and precision (docs/internals.md, "Several devices, mixed precision, XLA"); batch_size stays the global batch:
    strategy: str = "default"  # distribute.STRATEGIES: default (one device), mirrored, multi_worker
    devices: tuple[str, ...] | None = None  # mirrored only: e.g. ("/gpu:0", "/gpu:1"); default all GPUs
    mixed_precision: str | None = None  # precision.MIXED_PRECISION_POLICIES, or None (float32)
    jit_compile: bool = False  # XLA for the training step (not with a multi-replica strategy)
    verbose: int | str = "auto"

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"Unknown method {self.method!r}; choose one of {METHODS}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}.")
        for name in ("steps_per_epoch", "image_size", "train_examples_per_class"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"{name} must be positive, got {value}.")
        if self.lr <= 0 or self.width <= 0:
            raise InputError("lr and width must be positive.")
        if self.momentum < 0 or self.weight_decay < 0:
            raise InputError("momentum and weight_decay must be >= 0.")
        if self.method in TRANSFER_METHODS and not self.source:
            raise InputError(f"method {self.method!r} needs a source network (source=PATH or a named source).")
        if min(self.meta_lr or 0.0, self.meta_weight_decay, self.beta, self.inner_steps) < 0:
            raise InputError("meta_lr, meta_weight_decay, beta and inner_steps must be >= 0.")
        if self.meta_warmup_epochs < 0 or self.pair_weight_init < 0:
            raise InputError("meta_warmup_epochs and pair_weight_init must be >= 0.")
        if self.meta_warmup_epochs > self.epochs:
            raise InputError(f"meta_warmup_epochs ({self.meta_warmup_epochs}) is longer than the run ({self.epochs} epochs).")
        if self.pair_weight_init >= 6:
            raise InputError(
                f"pair_weight_init must be below 6, got {self.pair_weight_init}: the where-nets' ReLU6 has no "
                "gradient there, so λ could never move."
            )
        if self.meta_every < 1:
            raise InputError(f"meta_every must be >= 1, got {self.meta_every}.")
        if self.at_weight < 0 or self.lwf_weight < 0 or self.lwf_temperature <= 0:
            raise InputError("at_weight and lwf_weight must be >= 0, lwf_temperature > 0.")
        if self.strategy not in distribute.STRATEGIES:
            raise InputError(f"strategy must be one of {distribute.STRATEGIES}, got {self.strategy!r}.")
        if self.devices and self.strategy != "mirrored":
            raise InputError("devices apply to strategy='mirrored' only.")
        if self.mixed_precision not in (None,) + precision.MIXED_PRECISION_POLICIES:
            raise InputError(
                f"mixed_precision must be one of {precision.MIXED_PRECISION_POLICIES} or None, "
                f"got {self.mixed_precision!r}."
            )
        if not self.full_precision_look_ahead and self.mixed_precision is None:
            raise InputError(
                "full_precision_look_ahead=False only applies under mixed precision (the look-ahead is float32 "
                "anyway): set mixed_precision too, or drop it."
            )
        if self.jit_compile and self.strategy != "default":
            raise InputError(
                "jit_compile does not work with a multi-device strategy (XLA cannot compile its all-reduces)."
            )
        if self.split is None:  # resolved, so that flags.json (and a resumption) records which split it is
            object.__setattr__(self, "split", data_lib.default_split(self.dataset))
        if self.pairs is None and self.method in DEFAULT_PAIRS:
            object.__setattr__(self, "pairs", DEFAULT_PAIRS[self.method])


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


def meta_steps(config, steps_per_epoch, epochs=None):
    """How many meta-updates the run (or its first `epochs` epochs) makes: every `meta_every`-th step."""
    epochs = config.epochs if epochs is None else epochs
    return -(-steps_per_epoch * epochs // config.meta_every)


def meta_learning_rate(config, steps_per_epoch):
    """`config.meta_lr`, or where it is None (auto) the rate for the run's number of meta-steps."""
    if config.meta_lr is not None:
        return config.meta_lr
    return optimizers.auto_meta_learning_rate(meta_steps(config, steps_per_epoch))


def meta_optimizer(config, steps_per_epoch):
    """Adam with coupled L2 (the official meta optimizer), after an optional linear warm-up of its rate.

    The warm-up counts meta-steps (the meta optimizer's own iterations): over
    the first W = `meta_warmup_epochs` epochs' meta-updates, update k (from 0)
    runs at k/W of `meta_learning_rate` (so update 0 only feeds Adam's
    moments), then the rate stays there. `auto` does not compensate: the
    warm-up shortens the meta-networks' travel by about W/2 steps.
    """
    learning_rate = meta_learning_rate(config, steps_per_epoch)
    warmup_steps = meta_steps(config, steps_per_epoch, epochs=config.meta_warmup_epochs)
    if warmup_steps > 0:
        # CosineDecay's warm-up, then a cosine with alpha = 1, which is constant.
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=learning_rate, warmup_steps=warmup_steps
        )
    return optimizers.AdamL2(learning_rate, weight_decay=config.meta_weight_decay)


def target_optimizer(config, steps_per_epoch):
    """The official target optimizer: PyTorch SGD under the per-epoch cosine schedule."""
    schedule = optimizers.EpochCosineDecay(config.lr, config.epochs, steps_per_epoch)
    return optimizers.SGD(schedule, momentum=config.momentum, weight_decay=config.weight_decay)


def build_model(config, splits, steps_per_epoch):
    """The compiled model of `config.method`: the target alone, or a `HandCraftedTransfer` or `L2TWW` around it.

    Built, compiled and its optimizer's slots created under `config.strategy`'s
    scope and `config.mixed_precision`'s dtype policy; Keras' `fit` then splits
    each global batch of `config.batch_size` over the replicas.
    """
    strategy = distribute.get_strategy(config.strategy, config.devices)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise InputError(
            f"batch_size {config.batch_size} (the global batch) must be a multiple of the "
            f"{strategy.num_replicas_in_sync} replicas: unequal per-replica batches are not exact."
        )
    with strategy.scope(), precision.global_dtype_policy(config.mixed_precision):
        model = _build_model(config, splits, steps_per_epoch)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its slots, under the strategy's scope
    return model


def check_target(target):
    """Raises unless `target` is a keras_l2t architecture or a keras-hub preset."""
    if target not in backbones.BACKBONES and not sources.hub.is_hub_spec(target):
        raise InputError(
            f"Target {target!r} is neither one of {sorted(backbones.BACKBONES)} nor a keras-hub preset "
            "(a preset name, hf:// or kaggle:// handle, or a directory with config.json)."
        )


def target_backbone(target, num_classes, width, image_size):
    """The target `Backbone`: a keras_l2t architecture (`backbones.BACKBONES`, at `width`), or a keras-hub preset's
    architecture at random weights (`backbones.hub.hub_target`; its own width)."""
    if target in backbones.BACKBONES:
        return backbones.get_backbone(
            target, num_classes=num_classes, width=width, input_shape=(image_size, image_size, 3)
        )
    check_target(target)
    return hub_target(sources.hub.local_preset(target), num_classes, image_size=image_size)


def _calibration_images(splits):
    """Batches of training images (labels dropped) that set a random source's BatchNorm statistics.

    Training's own stream (`splits.train_epochs`) is stateless, keyed by epoch,
    so reading it here does not change what training reads.
    """
    batches = splits.train_epochs(0, 1, sources.random_init.CALIBRATION_BATCHES)
    return batches.map(lambda images, _: images)  # a dataset: every random source of a run reads it whole


def _build_model(config, splits, steps_per_epoch):
    image_size = splits.image_size
    target = target_backbone(config.target, splits.num_classes, config.width, image_size)
    if config.method == "scratch":
        target.compile(
            optimizer=target_optimizer(config, steps_per_epoch),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=config.jit_compile,
        )
        return target
    random_source = any(sources.random_init.handles(spec) for spec in sources.source_entries(config.source))
    source = sources.load_sources(
        config.source, image_size, blocks=config.source_blocks,
        calibration_images=_calibration_images(splits) if random_source else None,
    )
    if config.method in HAND_CRAFTED_METHODS:
        model = HandCraftedTransfer(
            source,
            target,
            method=config.method,
            pairs=config.pairs,  # None for lwf, which has no pairs
            at_weight=config.at_weight,
            lwf_weight=config.lwf_weight,
            temperature=config.lwf_temperature,
        )
        model.compile(optimizer=target_optimizer(config, steps_per_epoch), jit_compile=config.jit_compile)
        return model
    model = L2TWW(
        source,
        target,
        pairs=config.pairs,
        mode="l2t_ww" if config.method == "l2t_ww_frozen" else config.method,
        learn_meta_networks=config.method != "l2t_ww_frozen",
        beta=config.beta,
        inner_steps=config.inner_steps,
        first_order=config.first_order,
        meta_every=config.meta_every,
        recompute_look_ahead=config.recompute_look_ahead,
        full_precision_look_ahead=config.full_precision_look_ahead,
        pair_weight_init=config.pair_weight_init,
        second_statistics_update=config.second_statistics_update,
    )
    model.compile(
        optimizer=target_optimizer(config, steps_per_epoch),
        meta_optimizer=meta_optimizer(config, steps_per_epoch) if model.uses_meta_learning else None,
        jit_compile=config.jit_compile,
    )
    return model


def _export_inference_model(run_dir, splits):
    """Writes export.INFERENCE_FILE from best_target.keras (raw pixels in, probabilities out); returns its name.

    A failed export costs the run its inference file, never its results: it is
    logged and None is returned.
    """
    try:
        best = keras.saving.load_model(run_dir.file("best_target.keras"), compile=False)
        export.save_inference_model(best, run_dir.file(export.INFERENCE_FILE), resize=splits.eval_resize)
    except Exception as error:  # pylint: disable=broad-except
        logging.warning("No %s was written: %s: %s", export.INFERENCE_FILE, type(error).__name__, error)
        return None
    return export.INFERENCE_FILE


def writes_run_directory(config):
    """Whether this process writes `config.model_dir`: all but the non-chief workers of a multi-worker run."""
    if config.strategy != "multi_worker":
        return True
    return distribute.is_chief(distribute.get_strategy("multi_worker"))


def _flags_digest(config):
    """A 48-bit number (exact in float64) identifying the run's flags, less those a worker may set its own way."""
    ignored = set(checkpointing.RunDirectory("").ignored_flags) | {"model_dir"}
    flags = {k: v for k, v in dataclasses.asdict(config).items() if k not in ignored}
    return int(hashlib.sha256(json.dumps(flags, sort_keys=True, default=str).encode()).hexdigest()[:12], 16)


def _check_workers_agree(strategy, config, finished, overwrite):
    """Raises unless every worker runs the same flags and sees the same state of model_dir.

    A collective, so also a barrier: no worker starts (or returns a finished
    run) before all have read model_dir. Workers that disagreed would wait for
    each other's collectives for ever instead.
    """
    found = None if overwrite else checkpointing.latest_checkpoint(config.model_dir)
    mine = [_flags_digest(config), float(finished), found[1]["epochs_completed"] if found else -1.0]
    views = distribute.gather_from_workers(strategy, mine)
    if all(view == views[0] for view in views):
        return
    if any(view[0] != views[0][0] for view in views):
        problem = "they run different flags: every worker must run the same command"
    else:
        problem = (
            f"they see different states of --model_dir {config.model_dir} (finished, last checkpoint's epoch: "
            f"{sorted({(bool(v[1]), int(v[2])) for v in views})}): it must be on storage that every worker "
            "shares (the chief writes it, all read its checkpoints to resume)"
        )
    raise InputError(f"The {len(views)} workers of this multi-worker run disagree: {problem}.")


def _sharded_by_data(splits):
    """`splits` with every dataset split over the workers by data (`distribute.shard_by_data`)."""
    train_epochs = splits.train_epochs
    return dataclasses.replace(
        splits,
        train=distribute.shard_by_data(splits.train),
        val=distribute.shard_by_data(splits.val),
        test=distribute.shard_by_data(splits.test),
        train_epochs=lambda *args, **kwargs: distribute.shard_by_data(train_epochs(*args, **kwargs)),
    )


def _copy_if_exists(source, destination):
    if os.path.exists(source):
        shutil.copyfile(source, destination)


def _describe_checkpoint(model_dir):
    found = checkpointing.latest_checkpoint(model_dir)
    if found is None:
        return "none (no epoch had finished, so nothing was saved)"
    directory, state = found
    return f"{directory} (after epoch {state['epochs_completed']})"


def long_run_advice(config):
    """What to say when a run's estimate is long on a machine without a GPU (None with a GPU)."""
    if tf.config.list_physical_devices("GPU"):
        return None
    levers = []
    if config.method in ("l2t_w", "l2t_ww") and config.meta_every == 1:
        levers.append(
            "--speed=fast (a meta step on every 4th step: 0.38x the cost of an exact step, within one seed-std of "
            "exact on the Fashion-MNIST N = 50 study, docs/results/fast_meta_steps.md)"
        )
    levers += ["fewer --epochs", "a smaller --image_size", "a GPU (BUILD.md)",
               "--strategy=multi_worker over several machines (BUILD.md)"]
    return "That is long for a CPU; levers: " + ", ".join(levers) + "."


def run_experiment(config, *, overwrite=False, callbacks=()):
    """Trains per `config`, resuming from `model_dir` if it holds the same run; returns the results.

    Writes flags.json (once data and model are built), history.csv,
    tensorboard/, best_target.keras (the target at the best validation epoch),
    target_inference.keras (that target for inference with plain Keras: raw
    pixels in, probabilities out; see `keras_l2t.export`),
    ckpt-*/ + checkpoint.json (the full state after the last epoch) and
    results.json (at the end). Rerunning after an interruption continues from
    the last checkpoint; rerunning a finished run returns its results.

    With `strategy="multi_worker"` every worker calls it with the same config:
    only the chief writes model_dir; the others write to a temporary directory
    (deleted at the end) and resume from the chief's checkpoint, so model_dir
    must be on storage that every worker reads.

    Args:
        config: The `ExperimentConfig`.
        overwrite: Start over even if model_dir holds a run (with other flags).
        callbacks: Extra Keras callbacks (run before the checkpoint is written).

    Raises:
        checkpointing.RunDirectoryError: model_dir is in use, or holds a run with
            other flags (and not `overwrite`), or is not a run directory.
        checkpointing.NonFiniteError: a loss, meta-gradient or variable became
            non-finite; the last good checkpoint is kept.
        InputError: the workers of a multi-worker run have different flags or
            see different states of model_dir.
    """
    start = time.time()
    run_dir = checkpointing.RunDirectory(config.model_dir)
    defaults = dataclasses.asdict(ExperimentConfig(model_dir=config.model_dir))
    run_dir.check_flags(dataclasses.asdict(config), defaults, overwrite)
    finished = run_dir.finished and not overwrite
    chief = True
    if config.strategy == "multi_worker":
        # First TF work of the run: a multi-worker strategy must exist before any other.
        strategy = distribute.get_strategy(config.strategy)
        chief = distribute.is_chief(strategy)
        if distribute.in_multi_worker_mode(strategy):
            _check_workers_agree(strategy, config, finished, overwrite)
    if finished:
        return checkpointing.read_json(run_dir.file(checkpointing.RESULTS_FILE))
    strategy = distribute.get_strategy(config.strategy, config.devices)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        determinism.enable_determinism()

    splits = data_lib.load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        batch_size=config.batch_size,
        seed=config.seed,
        classes=config.classes,
        train_examples_per_class=config.train_examples_per_class,
        skip_unreadable_images=config.skip_unreadable_images,
        split=config.split,
        augmentation=config.augmentation,
    )
    if distribute.in_multi_worker_mode(strategy):
        splits = _sharded_by_data(splits)
    # Seeded again: loading may have drawn from the global generators (tfds preparing a dataset the first
    # time does), and the initial weights must not depend on whether it did.
    keras.utils.set_random_seed(config.seed)
    steps_per_epoch = config.steps_per_epoch or splits.num_train // config.batch_size
    model = build_model(config, splits, steps_per_epoch)
    if isinstance(model, L2TWW) and model.uses_meta_learning and config.meta_lr is None and not finished:
        print(f"meta_lr=auto: {meta_learning_rate(config, steps_per_epoch):.3g} for "
              f"{meta_steps(config, steps_per_epoch)} meta-steps (docs/method.md §4.3).")
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # so that a checkpoint restores its slots

    # Only now, with data and model in hand, does the run leave files behind. On several workers only
    # the chief's are kept: the others write theirs to a temporary directory (see TemporaryRunDirectory).
    if not chief:
        run_dir = checkpointing.TemporaryRunDirectory()
    with run_dir:
        run_dir.check_flags(dataclasses.asdict(config), defaults, overwrite)  # again, under the lock
        if overwrite:
            run_dir.clear()
        checkpointing.write_json(run_dir.file(checkpointing.FLAGS_FILE), dataclasses.asdict(config))
        tracker = BestValidationTracker(splits.test, checkpoint_path=run_dir.file("best_target.keras"))
        history = ResumableCSVLogger(run_dir.file("history.csv"))
        movement = None
        if isinstance(model, L2TWW) and model.has_meta_networks:
            movement = MetaNetworkMovement(splits.val, run_dir.file("meta_networks_initial.npz"))
            if not chief:  # φ₀ of a resumed run: the chief's
                _copy_if_exists(os.path.join(config.model_dir, "meta_networks_initial.npz"), movement.initial_path)
        checkpoint = checkpointing.TrainingCheckpoint(
            run_dir.path,
            stateful_callbacks=[tracker] + ([movement] if movement else []),
            linked_files=["best_target.keras"],
            restore_dir=config.model_dir,  # on every worker, the chief's checkpoint
        )
        checkpoint.set_model(model)
        # With overwrite the chief has cleared model_dir (maybe after another worker looked at it).
        initial_epoch = checkpoint.restore() if chief or not overwrite else 0
        history.truncate(initial_epoch)
        if initial_epoch:
            print(f"Resuming {config.model_dir} after epoch {initial_epoch} of {config.epochs}.")
        log_dir = run_dir.file("tensorboard")
        all_callbacks = [
            NonFiniteGuard(lambda: _describe_checkpoint(config.model_dir)),
            tracker,  # before the loggers: adds test_accuracy to the logs they record
            *([movement] if movement else []),  # likewise: entropy, λ and φ movement
            history,
            GroupedTensorBoard(log_dir, update_freq="epoch"),  # epoch e at step e; test/ and transfer/ apart
        ]
        if isinstance(model, L2TWW) and model.has_meta_networks:
            # The validation set's first batch, read once validation has filled its cache.
            all_callbacks.append(TransferMonitor(splits.val, os.path.join(log_dir, "transfer")))
        all_callbacks += [*callbacks, checkpoint]  # the checkpoint last: it saves what the others did
        estimate = RunTimeEstimate(
            start, config.epochs, steps_per_epoch, initial_epoch, long_run_advice(config),
            print_fn=print if chief else None,
        )
        all_callbacks.insert(0, estimate)
        # The bar: ~6 figures (and a line on the meta-networks after each epoch); the rest in TensorBoard, history.csv.
        all_callbacks.append(ShortProgbarLogger(epoch_lines=[MetaNetworkMovement.line] if movement else []))
        if initial_epoch < config.epochs:
            model.fit(
                splits.train_epochs(initial_epoch, config.epochs - initial_epoch, steps_per_epoch),
                validation_data=splits.val,
                initial_epoch=initial_epoch,
                epochs=config.epochs,
                steps_per_epoch=steps_per_epoch,
                callbacks=all_callbacks,
                verbose=config.verbose,
                shuffle=False,  # the training stream is shuffled (and keyed by epoch) in tf.data already
            )
        final_test = model.evaluate(splits.test, verbose=0, return_dict=True)["accuracy"]
        inference_model = _export_inference_model(run_dir, splits) if chief else None
        results = {
            "method": config.method,
            "dataset": config.dataset,
            "target": config.target,
            "source": config.source if config.method in TRANSFER_METHODS else None,
            "pairs": config.pairs if config.method in TRANSFER_METHODS else None,
            "width": config.width,
            "meta_lr": meta_learning_rate(config, steps_per_epoch) if config.method in ("l2t_w", "l2t_ww") else None,
            "meta_warmup_epochs": config.meta_warmup_epochs if config.method in ("l2t_w", "l2t_ww") else None,
            "pair_weight_init": config.pair_weight_init if config.method in ("l2t_ww", "l2t_ww_frozen") else None,
            "second_statistics_update": (
                config.second_statistics_update if config.method in ("l2t_w", "l2t_ww", "l2t_ww_frozen") else None
            ),
            "image_size": splits.image_size,
            "class_names": list(splits.class_names),  # of the outputs, in order (after `classes` relabelling)
            "inference_model": inference_model,
            "num_train": splits.num_train,
            "num_val": splits.num_val,
            "num_test": splits.num_test,
            "epochs_completed": tracker.epochs_completed,
            "best_val_accuracy": tracker.best_val_accuracy,
            "best_epoch": tracker.best_epoch,
            "test_accuracy_at_best_val": tracker.test_accuracy_at_best_val,
            "final_test_accuracy": float(final_test),
            "seed": config.seed,
            "resumed_after_epoch": initial_epoch,
            # L2T-ww's meta-networks after the last epoch: per pair λ and w entropy, and how far they moved.
            "transfer": movement.summary if movement else None,
            "estimated_seconds": None if estimate.estimated_seconds is None else round(estimate.estimated_seconds, 2),
            "wall_seconds": round(time.time() - start, 2),
            "versions": versions(),
        }
        checkpointing.write_json(run_dir.file(checkpointing.RESULTS_FILE), results)
    return results


def pretrain_source(config, *, overwrite=False):
    """Trains a source backbone from scratch per `config` (method "scratch"); returns its .keras path.

    The best-validation network is copied to `model_dir/source.keras`. A
    finished pretraining with the same flags is reused; an interrupted one resumes.
    """
    path = os.path.join(config.model_dir, "source.keras")
    run_experiment(dataclasses.replace(config, method="scratch"), overwrite=overwrite)
    if not os.path.exists(path) and writes_run_directory(config):
        tmp = f"{path[: -len('.keras')]}.tmp{os.getpid()}.keras"
        shutil.copyfile(os.path.join(config.model_dir, "best_target.keras"), tmp)
        os.replace(tmp, path)
    return path

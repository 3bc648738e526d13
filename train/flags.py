"""Command-line flags of the entry points, and their conversion to `ExperimentConfig`s."""

import dataclasses
import os

from absl import flags

from keras_l2t import backbones
from keras_l2t.distribute import STRATEGIES
from keras_l2t.experiment import METHODS, TRANSFER_METHODS, ExperimentConfig
from keras_l2t.precision import MIXED_PRECISION_POLICIES
from keras_l2t.source_models import NAMED_SOURCES
from train import presets

DATASET_HELP = (
    "digits (embedded, no download), stanford_dogs, caltech_birds2011, cifar10, cifar100, stl10, "
    "fashion_mnist, mnist, or folder:PATH (PATH/train/<class>/*, PATH/test/<class>/*)."
)


def define_common_flags():
    """Flags shared by `train.main` and `train.pretrain_source`."""
    flags.DEFINE_string("dataset", "digits", DATASET_HELP)
    flags.DEFINE_string("data_dir", None, "tfds data directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets).")
    flags.DEFINE_string("model_dir", "runs/default", "Where checkpoints, logs, TensorBoard and results go.")
    flags.DEFINE_integer("image_size", None, "Input size (default: per dataset).")
    flags.DEFINE_integer("epochs", None, "Training epochs (default: per dataset).")
    flags.DEFINE_integer("batch_size", None, "Batch size (default: per dataset).")
    flags.DEFINE_float("lr", 0.1, "Learning rate of the trained network (cosine-annealed per epoch).")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum (PyTorch semantics).")
    flags.DEFINE_float("weight_decay", 1e-4, "L2 weight decay, coupled into the momentum as in PyTorch.")
    flags.DEFINE_integer("seed", 0, "Random seed (weights, data order, validation split).")
    flags.DEFINE_integer("steps_per_epoch", None, "Limit steps per epoch (smoke runs).")
    flags.DEFINE_list("classes", None, "Keep only these class ids (relabelled 0..k-1 in this order).")
    flags.DEFINE_integer("train_examples_per_class", None, "Keep N training images per class (limited data).")
    flags.DEFINE_bool(
        "skip_unreadable_images", False,
        "Folder datasets: leave out files that are not images (each is logged) instead of stopping.",
    )
    flags.DEFINE_bool(
        "deterministic", False,
        "Bit-reproducible runs (and resumptions): keras_l2t.determinism.enable_determinism() (TF op determinism, "
        "no Grappler arithmetic rewrites, gradients summed in a fixed order) on top of the fixed seeds.",
    )
    flags.DEFINE_bool(
        "overwrite", False,
        "Start over in a --model_dir that holds a run (finished, interrupted, or with other flags).",
    )
    flags.DEFINE_bool("show_traceback", False, "On bad input, raise with the traceback instead of a short error.")
    flags.DEFINE_enum(
        "strategy", "default", list(STRATEGIES),
        "default: one device; mirrored: all local GPUs (or --devices); multi_worker: the workers of TF_CONFIG. "
        "--batch_size stays the global batch, split evenly over the replicas.",
    )
    flags.DEFINE_list("devices", None, "With --strategy=mirrored: devices to use, e.g. /gpu:0,/gpu:1.")
    flags.DEFINE_enum(
        "mixed_precision", None, list(MIXED_PRECISION_POLICIES),
        "16-bit compute for the networks' training step (losses, meta-networks, look-ahead stay float32).",
    )
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step (one device only; slower on CPU).")


def define_flags():
    """Defines the flags of `train.main` (call once, under `__main__`)."""
    define_common_flags()
    flags.DEFINE_list(
        "method", None,
        f"One or more of {list(METHODS)}, comma-separated; several print a comparison table "
        "(default: per dataset; l2t_ww, or scratch,fm,l2t_ww for digits).",
    )
    flags.DEFINE_enum("target", None, sorted(backbones.BACKBONES), "Target network (default: per dataset).")
    flags.DEFINE_float("width", None, "Channel-width multiplier of the target (default: per dataset).")
    flags.DEFINE_string(
        "source", None,
        f"Source network: PATH to a .keras Backbone, {'/'.join(NAMED_SOURCES)}, or auto (pretrain "
        "--source_arch on --source_classes of the same dataset first). Default: per dataset.",
    )
    flags.DEFINE_enum("source_arch", None, sorted(backbones.BACKBONES), "Architecture of an auto source.")
    flags.DEFINE_float("source_width", None, "Width multiplier of an auto source.")
    flags.DEFINE_list("source_classes", None, "Classes an auto source is pretrained on.")
    flags.DEFINE_integer("source_epochs", None, "Epochs of auto-source pretraining (default: --epochs).")
    flags.DEFINE_integer("source_batch_size", None, "Batch size of auto-source pretraining (default: --batch_size).")
    flags.DEFINE_string(
        "pairs", None,
        "Pairs source-target: all, one_to_one, single, or m-n,m-n,... (default: all for fm, l2t_w, "
        "l2t_ww; one_to_one for at, lwf_at).",
    )
    flags.DEFINE_integer("inner_steps", 2, "T: look-ahead matching steps of the meta step.")
    flags.DEFINE_float("beta", 0.5, "β: weight of the feature-matching loss.")
    flags.DEFINE_float("meta_lr", 1e-4, "Learning rate of the meta-networks (Adam).")
    flags.DEFINE_float("meta_weight_decay", 1e-4, "L2 weight decay of the meta-networks (coupled, as in PyTorch).")
    flags.DEFINE_bool("first_order", False, "Cheaper meta-gradient that drops the Hessian-in-θ terms.")
    flags.DEFINE_integer("meta_every", 1, "Meta-update every k-th step.")
    flags.DEFINE_bool(
        "recompute_look_ahead", False,
        "The same meta-gradient by reverse adjoints that recompute each look-ahead step (the official "
        "meta_backward): less memory for long look-aheads, ~20 % slower (docs/profile.md).",
    )
    flags.DEFINE_float("at_weight", 1e3, "β of attention transfer (at, lwf_at): the loss is β/2·Σ_pairs.")
    flags.DEFINE_float("lwf_weight", 1.0, "λ_o, weight of the LwF distillation term (lwf, lwf_at; Li & Hoiem).")
    flags.DEFINE_float("lwf_temperature", 2.0, "T, the LwF distillation temperature (lwf, lwf_at).")


def _int_list(values):
    return tuple(int(v) for v in values) if values else None


def _first_set(*values):
    """The first value that is not None (0 is a value: it must reach validation, not be skipped)."""
    return next((v for v in values if v is not None), None)


def _pick(flag_values, preset, name):
    """The flag's value, or the preset's where the flag was left unset."""
    value = getattr(flag_values, name)
    return preset.get(name) if value is None else value


def common_config_fields(flag_values, preset):
    """ExperimentConfig fields from the common flags, preset defaults filled in."""

    def pick(name):
        return _pick(flag_values, preset, name)

    classes = _int_list(flag_values.classes) or _int_list(preset.get("classes"))
    examples = _pick(flag_values, preset, "train_examples_per_class")
    return {
        "model_dir": flag_values.model_dir,
        "dataset": flag_values.dataset,
        "data_dir": flag_values.data_dir,
        "image_size": pick("image_size"),
        "epochs": pick("epochs"),
        "batch_size": pick("batch_size"),
        "lr": flag_values.lr,
        "momentum": flag_values.momentum,
        "weight_decay": flag_values.weight_decay,
        "seed": flag_values.seed,
        "steps_per_epoch": flag_values.steps_per_epoch,
        "classes": classes,
        "train_examples_per_class": examples,
        "skip_unreadable_images": flag_values.skip_unreadable_images,
        "deterministic": flag_values.deterministic,
        "strategy": flag_values.strategy,
        "devices": tuple(flag_values.devices) if flag_values.devices else None,
        "mixed_precision": flag_values.mixed_precision,
        "jit_compile": flag_values.jit_compile,
    }


def plan_from_flags(flag_values):
    """(methods, base target config, auto-source config or None) for `train.main`.

    The base config has `method="scratch"`; callers replace method, model_dir
    and source per run.
    """
    preset = presets.preset_for(flag_values.dataset)
    methods = list(flag_values.method or preset["method"])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(METHODS)}.")

    def pick(name):
        return _pick(flag_values, preset, name)

    base = ExperimentConfig(
        **common_config_fields(flag_values, preset),
        method="scratch",
        target=pick("target"),
        width=pick("width"),
        source=pick("source"),
        pairs=flag_values.pairs,
        beta=flag_values.beta,
        inner_steps=flag_values.inner_steps,
        meta_lr=flag_values.meta_lr,
        meta_weight_decay=flag_values.meta_weight_decay,
        first_order=flag_values.first_order,
        meta_every=flag_values.meta_every,
        recompute_look_ahead=flag_values.recompute_look_ahead,
        at_weight=flag_values.at_weight,
        lwf_weight=flag_values.lwf_weight,
        lwf_temperature=flag_values.lwf_temperature,
    )
    source_config = None
    if any(m in TRANSFER_METHODS for m in methods):
        if base.source is None:
            raise ValueError(
                f"Methods {methods} need --source (PATH to a .keras Backbone, "
                f"{'/'.join(NAMED_SOURCES)}, or auto with --source_classes)."
            )
        if base.source == "auto":
            source_classes = _int_list(flag_values.source_classes) or _int_list(preset.get("source_classes"))
            if not source_classes:
                raise ValueError("--source=auto pretrains on --source_classes of the same dataset: set them.")
            if base.classes and set(source_classes) & set(base.classes):
                raise ValueError(
                    f"--source_classes {list(source_classes)} overlap --classes {list(base.classes)}: "
                    "the source task must be disjoint from the target task."
                )
            source_config = dataclasses.replace(
                base,
                model_dir=os.path.join(base.model_dir, "source"),
                target=pick("source_arch"),
                width=pick("source_width"),
                classes=source_classes,
                train_examples_per_class=None,
                epochs=_first_set(flag_values.source_epochs, preset.get("source_epochs"), base.epochs),
                batch_size=_first_set(
                    flag_values.source_batch_size, preset.get("source_batch_size"), base.batch_size
                ),
                source=None,
            )
    return methods, base, source_config

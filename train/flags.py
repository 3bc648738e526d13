"""Command-line flags of the entry points, their `--help` groups, and their conversion to `ExperimentConfig`s.

Every `define_*` function takes the `FlagValues` to define into (absl's global
`FLAGS` by default; tests pass their own) and returns the names it defined, so
that `--help` (train.cli_help) and `flags.txt` list exactly the entry point's flags.
"""

import dataclasses
import os
import sys

from absl import flags

from keras_l2t import backbones
from keras_l2t.data.datasets import AUGMENTATIONS, SPLITS
from keras_l2t.distribute import STRATEGIES
from keras_l2t.errors import InputError
from keras_l2t.experiment import METHODS, TRANSFER_METHODS, ExperimentConfig, check_target
from keras_l2t.precision import MIXED_PRECISION_POLICIES
from keras_l2t.sources import AUTO_SOURCE, NAMED_SOURCES, source_entries, with_auto_source
from train import presets
from train import run_dirs

FLAGS = flags.FLAGS

DATASET_HELP = (
    "digits (embedded, no download), stanford_dogs, caltech_birds2011, cifar10, cifar100, stl10, "
    "fashion_mnist, mnist, or folder:PATH (PATH/train/<class>/*, PATH/test/<class>/*)."
)

# `--help` headings and their flags, in the order shown; a flag missing here is shown under "Other".
HELP_GROUPS = (
    ("Data", (
        "dataset", "data_dir", "split", "augmentation", "image_size", "classes", "train_examples_per_class",
        "skip_unreadable_images",
    )),
    ("Networks", (
        "target", "width", "arch", "source", "source_blocks", "source_arch", "source_width", "source_classes",
        "source_epochs", "source_batch_size",
    )),
    ("Optimisation", (
        "epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "repeats", "steps_per_epoch",
    )),
    ("Method, transfer and meta-learning", (
        "method", "pairs", "beta", "inner_steps", "meta_lr", "meta_weight_decay", "meta_warmup_epochs",
        "pair_weight_init", "second_statistics_update", "speed", "first_order",
        "meta_every", "recompute_look_ahead", "full_precision_look_ahead", "at_weight", "lwf_weight", "lwf_temperature",
    )),
    ("Runtime and output", (
        "model_dir", "overwrite", "print_config", "verbose", "show_traceback", "deterministic", "strategy",
        "devices", "mixed_precision", "jit_compile",
    )),
)
# --speed: named look-ahead settings, each measured against exact on the Fashion-MNIST N = 50 study
# (docs/results/fast_meta_steps.md); an explicit flag that contradicts the chosen one is an error.
SPEED_SETTINGS = {"exact": {}, "fast": {"meta_every": 4}}

# Flags that flags.txt leaves out: replaying a run must never start it over or only print it.
NOT_REPLAYED = ("overwrite", "print_config")


def _defined(define):
    """Runs `define(flag_values)` and returns the names of the flags it added."""

    def wrapper(flag_values=FLAGS):
        before = set(flag_values)
        define(flag_values)
        return sorted(set(flag_values) - before)

    wrapper.__doc__ = define.__doc__
    wrapper.__name__ = define.__name__
    return wrapper


def _common_flags(fv):
    flags.DEFINE_string("dataset", "digits", DATASET_HELP, flag_values=fv)
    flags.DEFINE_string(
        "data_dir", None, "tfds data directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets).", flag_values=fv
    )
    flags.DEFINE_string(
        "model_dir", None,
        "Where checkpoints, logs, TensorBoard and results go (default: runs/<dataset>-<methods>-<hash of the "
        "configuration>, a new directory for each configuration; printed at start).",
        flag_values=fv,
    )
    flags.DEFINE_integer("image_size", None, "Input size.", flag_values=fv)
    flags.DEFINE_integer("epochs", None, "Training epochs.", flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Batch size (the global batch over all replicas).", flag_values=fv)
    flags.DEFINE_float("lr", 0.1, "Learning rate of the trained network (cosine-annealed per epoch).", flag_values=fv)
    flags.DEFINE_float("momentum", 0.9, "SGD momentum (PyTorch semantics).", flag_values=fv)
    flags.DEFINE_float(
        "weight_decay", 1e-4, "L2 weight decay, coupled into the momentum as in PyTorch.", flag_values=fv
    )
    flags.DEFINE_integer("seed", 0, "Random seed (weights, data order, validation split).", flag_values=fv)
    flags.DEFINE_integer(
        "repeats", 1, "Runs of each method, with seeds --seed, --seed+1, ...; several print mean ± std.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "steps_per_epoch", None, "Limit steps per epoch, for smoke runs (default: the whole training set).",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "classes", None, "Keep only these class ids, relabelled 0..k-1 in this order (unset: all).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "train_examples_per_class", None, "Keep N training images per class, for limited data (unset: all).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "split", None, list(SPLITS),
        "official: the authors' train/val split (stanford_dogs, caltech_birds2011, cifar100; verified against the "
        "TFDS examples); seeded: a class-balanced tenth of each class drawn with --seed (unset: official where it "
        "can be matched, else seeded; stl10's cannot).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "augmentation", None, list(AUGMENTATIONS),
        "Training augmentation: imagenet (torchvision RandomResizedCrop 224 + flip; eval resize + centre crop), "
        "cifar (pad 4 + random crop + flip), pad_crop (no flip), none (resize only) (unset: per dataset; for a "
        "folder, cifar at 32 px when its images are at most 64 px, else imagenet).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "skip_unreadable_images", False,
        "Folder datasets: leave out files that are not images (each is logged) instead of stopping.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "deterministic", False,
        "Bit-reproducible runs (and resumptions): keras_l2t.determinism.enable_determinism() (TF op determinism, "
        "no Grappler arithmetic rewrites, gradients summed in a fixed order) on top of the fixed seeds.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "overwrite", False,
        "Start over in a --model_dir that holds a run (finished, interrupted, or with other flags).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "print_config", False,
        "Print the fully resolved configuration (presets applied; every run, the auto source, the run "
        "directory) as JSON and exit, without training or writing anything.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "verbose", "auto", ["auto", "0", "1", "2"],
        "Training output: 0 silent, 1 a progress bar, 2 one line per epoch (log files, batch jobs); auto: 1 on a "
        "terminal, 2 when the output goes to a file or pipe.",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "show_traceback", False, "On bad input, raise with the traceback instead of a one-line error.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "strategy", "default", list(STRATEGIES),
        "default: one device; mirrored: all local GPUs (or --devices); multi_worker: the workers of TF_CONFIG. "
        "--batch_size stays the global batch, split evenly over the replicas.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "devices", None, "With --strategy=mirrored: devices to use, e.g. /gpu:0,/gpu:1 (default: all GPUs).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "mixed_precision", None, list(MIXED_PRECISION_POLICIES),
        "16-bit compute for the networks' training step (losses, meta-networks, look-ahead stay float32; "
        "default: float32 throughout).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "jit_compile", False, "XLA-compile the training step (one device only; slower on CPU).", flag_values=fv
    )


@_defined
def define_pretrain_flags(fv):
    """Defines the flags of `train.pretrain_source`; returns their names."""
    _common_flags(fv)
    flags.DEFINE_string(
        "arch", "resnet32", f"Source architecture: one of {', '.join(sorted(backbones.BACKBONES))}.", flag_values=fv
    )
    flags.DEFINE_float("width", 1.0, "Channel-width multiplier of the source.", flag_values=fv)


@_defined
def define_flags(fv):
    """Defines the flags of `train.main`; returns their names."""
    _common_flags(fv)
    flags.DEFINE_list(
        "method", None,
        f"One or more of {list(METHODS)}, comma-separated; several print a comparison table.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "target", None,
        f"Target network: {'/'.join(sorted(backbones.BACKBONES))}, or a keras-hub vision backbone or classifier "
        "preset (a preset name, hf:// or kaggle:// handle, or a preset directory), built at random weights from its "
        "config (--width does not apply to it).",
        flag_values=fv,
    )
    flags.DEFINE_float("width", None, "Channel-width multiplier of the target.", flag_values=fv)
    flags.DEFINE_string(
        "source", None,
        f"Source network: {'/'.join(NAMED_SOURCES)}, a keras-hub vision backbone or image classifier (hf://ORG/NAME, "
        "kaggle://..., a preset name or a preset directory), random:ARCH[:WIDTH] (random weights, a control), PATH "
        "to a .keras Backbone, or auto (pretrain --source_arch on --source_classes of the same dataset first). "
        "Several, joined by commas (A,B), transfer from all of them at once; pairs then read k:m-n.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "source_blocks", None,
        "Blocks of a vision transformer source to tap, 1-based (default: 4 evenly spaced, the last included); "
        "other sources ignore it.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "source_arch", None, sorted(backbones.BACKBONES), "Architecture of an auto source.", flag_values=fv
    )
    flags.DEFINE_float("source_width", None, "Width multiplier of an auto source.", flag_values=fv)
    flags.DEFINE_list("source_classes", None, "Classes an auto source is pretrained on.", flag_values=fv)
    flags.DEFINE_integer(
        "source_epochs", None, "Epochs of auto-source pretraining (unset: --epochs).", flag_values=fv
    )
    flags.DEFINE_integer(
        "source_batch_size", None, "Batch size of auto-source pretraining (unset: --batch_size).", flag_values=fv
    )
    flags.DEFINE_string(
        "pairs", None,
        "Pairs source-target: all, one_to_one, single, or m-n,m-n,... (default: all for fm, l2t_w, "
        "l2t_ww, l2t_ww_frozen; one_to_one for at, lwf_at).",
        flag_values=fv,
    )
    flags.DEFINE_integer("inner_steps", 2, "T: look-ahead matching steps of the meta step.", flag_values=fv)
    flags.DEFINE_float("beta", 0.5, "β: weight of the feature-matching loss.", flag_values=fv)
    flags.DEFINE_string(
        "meta_lr", "auto",
        "Learning rate of the meta-networks (Adam): a number, or auto: the official 1e-4 for runs of at least "
        "7,000 meta-steps (every paper setting), 1e-4 x 7,000/steps for shorter ones, at most 1e-2 "
        "(docs/method.md §4.3).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "meta_weight_decay", 1e-4, "L2 weight decay of the meta-networks (coupled, as in PyTorch).", flag_values=fv
    )
    flags.DEFINE_integer(
        "meta_warmup_epochs", 0,
        "Epochs over which the meta learning rate rises linearly from 0 to --meta_lr (0: none, as official).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "pair_weight_init", 1.0,
        "Initial bias of the where-nets, so λ starts near it (official --loss-weight-init, 1.0).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "second_statistics_update", True,
        "Update BatchNorm statistics a second time after each meta step, from the same batch at the updated θ, as "
        "the official meta_backward does (--nosecond_statistics_update: once per step).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "first_order", False, "Cheaper meta-gradient that drops the Hessian-in-θ terms.", flag_values=fv
    )
    flags.DEFINE_integer("meta_every", 1, "Meta-update every k-th step.", flag_values=fv)
    flags.DEFINE_enum(
        "speed", "exact", list(SPEED_SETTINGS),
        "exact: a meta step on every step (official). fast: a meta step on every 4th step (--meta_every=4): "
        "0.38x the cost of an exact step on average, and within one seed-std of exact on the Fashion-MNIST "
        "N = 50 study (docs/results/fast_meta_steps.md).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "recompute_look_ahead", False,
        "The same meta-gradient by reverse adjoints that recompute each look-ahead step (the official "
        "meta_backward): less memory for long look-aheads, ~20 % slower (docs/internals.md).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "full_precision_look_ahead", True,
        "With --mixed_precision: the look-ahead and meta-gradient at float32 (exact). --nofull_precision_look_ahead "
        "runs the look-ahead in 16 bits too: faster on CPUs/GPUs with 16-bit units, an approximate meta-gradient "
        "(docs/method.md §4.8, docs/results/fast_meta_steps.md).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "at_weight", 1e3, "β of attention transfer (at, lwf_at): the loss is β/2·Σ_pairs.", flag_values=fv
    )
    flags.DEFINE_float(
        "lwf_weight", 1.0, "λ_o, weight of the LwF distillation term (lwf, lwf_at; Li & Hoiem).", flag_values=fv
    )
    flags.DEFINE_float("lwf_temperature", 2.0, "T, the LwF distillation temperature (lwf, lwf_at).", flag_values=fv)


def _int_list(values):
    if not values:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise InputError(f"Class ids must be integers, got {','.join(values)}.") from None


def meta_lr_value(text):
    """`--meta_lr` as `ExperimentConfig.meta_lr` takes it: a float, or None for auto."""
    if text is None or text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--meta_lr must be a number or auto, got {text!r}.") from None


def speed_settings(flag_values):
    """{flag: value} of the look-ahead settings, --speed applied; InputError if an explicit flag contradicts it."""
    settings = {name: getattr(flag_values, name) for name in ("inner_steps", "first_order", "meta_every")}
    for name, value in SPEED_SETTINGS[flag_values.speed].items():
        if flag_values[name].present and settings[name] != value:
            raise InputError(
                f"--speed={flag_values.speed} sets --{name}={value}; drop --{name}={settings[name]} or --speed."
            )
        settings[name] = value
    return settings


def _first_set(*values):
    """The first value that is not None (0 is a value: it must reach validation, not be skipped)."""
    return next((v for v in values if v is not None), None)


def _pick(flag_values, preset, name):
    """The flag's value, or the preset's where the flag was left unset."""
    value = getattr(flag_values, name)
    return preset.get(name) if value is None else value


def verbose_value(text):
    """`--verbose` as `fit(verbose=...)` takes it: 0, 1 or 2; "auto" is 1 on a terminal, else 2.

    A progress bar redraws only on a terminal; written to a file or pipe, every
    update of it stays in the log, so there one line per epoch is the default.
    """
    if text == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(text)


def common_config_fields(flag_values, preset):
    """ExperimentConfig fields from the common flags, preset defaults filled in (model_dir as given, or "")."""

    def pick(name):
        return _pick(flag_values, preset, name)

    classes = _int_list(flag_values.classes) or _int_list(preset.get("classes"))
    examples = _pick(flag_values, preset, "train_examples_per_class")
    return {
        "model_dir": flag_values.model_dir or "",
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
        "split": flag_values.split,
        "augmentation": flag_values.augmentation,
        "deterministic": flag_values.deterministic,
        "strategy": flag_values.strategy,
        "devices": tuple(flag_values.devices) if flag_values.devices else None,
        "mixed_precision": flag_values.mixed_precision,
        "jit_compile": flag_values.jit_compile,
        "verbose": verbose_value(flag_values.verbose),
    }


def _preset(flag_values):
    """The dataset's preset; a folder's follows the size of its images unless --image_size is set."""
    return presets.preset_for(
        flag_values.dataset, flag_values.augmentation, inspect_folder=flag_values.image_size is None,
        skip_unreadable=flag_values.skip_unreadable_images,
    )


def plan_from_flags(flag_values):
    """(methods, base target config, auto-source config or None) for `train.main`.

    The base config has `method="scratch"` and the run directory: --model_dir,
    or `run_dirs.default_model_dir` of the resolved configuration. Callers
    replace method, model_dir and source per run (`method_configs`).
    """
    preset = _preset(flag_values)
    methods = list(flag_values.method or preset["method"])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"Unknown method(s) {unknown}; choose from {list(METHODS)}.")

    def pick(name):
        return _pick(flag_values, preset, name)

    look_ahead = speed_settings(flag_values)
    base = ExperimentConfig(
        **common_config_fields(flag_values, preset),
        method="scratch",
        target=pick("target"),
        width=pick("width"),
        source=pick("source"),
        source_blocks=_int_list(flag_values.source_blocks),
        pairs=flag_values.pairs,
        beta=flag_values.beta,
        inner_steps=look_ahead["inner_steps"],
        meta_lr=meta_lr_value(flag_values.meta_lr),
        meta_weight_decay=flag_values.meta_weight_decay,
        meta_warmup_epochs=flag_values.meta_warmup_epochs,
        pair_weight_init=flag_values.pair_weight_init,
        second_statistics_update=flag_values.second_statistics_update,
        first_order=look_ahead["first_order"],
        meta_every=look_ahead["meta_every"],
        recompute_look_ahead=flag_values.recompute_look_ahead,
        full_precision_look_ahead=flag_values.full_precision_look_ahead,
        at_weight=flag_values.at_weight,
        lwf_weight=flag_values.lwf_weight,
        lwf_temperature=flag_values.lwf_temperature,
    )
    check_target(base.target)
    source_config = None
    if any(m in TRANSFER_METHODS for m in methods):
        if base.source is None:
            raise InputError(
                f"Methods {methods} need --source (PATH to a .keras Backbone, "
                f"{'/'.join(NAMED_SOURCES)}, or auto with --source_classes)."
            )
        entries = source_entries(base.source)
        if entries.count(AUTO_SOURCE) > 1:
            raise InputError(f"--source={base.source} names auto twice: one auto source per run.")
        if AUTO_SOURCE in entries:
            source_classes = _int_list(flag_values.source_classes) or _int_list(preset.get("source_classes"))
            if not source_classes:
                raise InputError("--source=auto pretrains on --source_classes of the same dataset: set them.")
            if base.classes and set(source_classes) & set(base.classes):
                raise InputError(
                    f"--source_classes {list(source_classes)} overlap --classes {list(base.classes)}: "
                    "the source task must be disjoint from the target task."
                )
            source_config = dataclasses.replace(
                base,
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
    repeats = repeats_from_flags(flag_values)
    model_dir = flag_values.model_dir or run_dirs.default_model_dir(
        base.dataset, "_".join(methods), methods, base, source_config, *([repeats] if repeats > 1 else [])
    )
    base = dataclasses.replace(base, model_dir=model_dir)
    if source_config is not None:
        source_config = dataclasses.replace(source_config, model_dir=os.path.join(model_dir, "source"))
    return methods, base, source_config


def repeats_from_flags(flag_values):
    """How many seeds each method runs with (--repeats)."""
    repeats = flag_values.repeats
    if repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {repeats}.")
    return repeats


def method_configs(methods, base, source_config, repeats=1):
    """The `ExperimentConfig` of each method and seed (seeds base.seed, base.seed + 1, ...; method-major).

    Each run has its own model_dir when there are several (`<method>/`, and
    `seed<k>/` inside it when repeats > 1); transferring methods get the source.
    """
    source = base.source
    if source_config is not None:
        source = with_auto_source(base.source, os.path.join(source_config.model_dir, "source.keras"))
    configs = []
    for method in methods:
        method_dir = os.path.join(base.model_dir, method) if len(methods) > 1 else base.model_dir
        for seed in range(base.seed, base.seed + repeats):
            configs.append(dataclasses.replace(
                base,
                method=method,
                seed=seed,
                source=source if method in TRANSFER_METHODS else None,
                model_dir=os.path.join(method_dir, f"seed{seed}") if repeats > 1 else method_dir,
            ))
    return configs


def pretrain_config_from_flags(flag_values):
    """The `ExperimentConfig` of `train.pretrain_source` (model_dir: --model_dir or a derived one)."""
    fields = common_config_fields(flag_values, _preset(flag_values))
    if flag_values.classes is None:  # a preset's target classes are not the source task
        fields["classes"] = None
    if flag_values.train_examples_per_class is None:
        fields["train_examples_per_class"] = None
    config = ExperimentConfig(**fields, method="scratch", target=flag_values.arch, width=flag_values.width)
    if not config.model_dir:
        config = dataclasses.replace(
            config, model_dir=run_dirs.default_model_dir(config.dataset, f"source_{config.target}", config)
        )
    return config


def resolved_configuration(configs, source_config=None):
    """What `--print_config` prints: every run's `ExperimentConfig` as a dict, and the auto source's."""
    repeated = len(configs) > len({c.method for c in configs})
    resolved = {
        "runs": {(f"{c.method} seed {c.seed}" if repeated else c.method): dataclasses.asdict(c) for c in configs}
    }
    if source_config is not None:
        resolved["source_pretraining"] = dataclasses.asdict(source_config)
    return resolved


def flagfile_text(flag_values, names, model_dir, command):
    """An absl flagfile that replays the command: its flags' values (unset ones re-resolve the same way).

    Args:
        flag_values: The parsed flags.
        names: The entry point's flag names (`define_flags()`'s result).
        model_dir: The resolved run directory, written explicitly.
        command: e.g. "python -m train.main", for the comment line.
    """
    lines = [f"# Replays this run (it resumes or finds it in {model_dir}): {command} --flagfile=THIS_FILE"]
    for name in sorted(names):
        if name in NOT_REPLAYED or name == "model_dir" or flag_values[name].value is None:
            continue
        lines.append(flag_values[name].serialize())
    lines.append(f"--model_dir={model_dir}")
    return "\n".join(lines) + "\n"

"""Per-dataset defaults that flags left unset fall back to (`--help` and docs/cli.md list them).

The 224 and 32 settings follow the official code (docs/method.md §4.3). `digits`
is the embedded demo, sized for a 2-core CPU: a ResNet-32 source pretrained on
digits 0–4 transfers to a VGG-9-BN target learning digits 5–9 from 10 labelled
images per class, and scratch, FM, L2T-ww with frozen meta-networks and
L2T-ww are compared.
"""

from keras_l2t.errors import InputError

# The paper's sources: torchvision's ImageNet ResNet-34 (through keras-hub's timm
# conversion) and the authors' Tiny-ImageNet ResNet-32 (shipped).
_OFFICIAL_224 = {
    "target": "resnet18", "width": 1.0, "image_size": 224, "epochs": 200, "batch_size": 64,
    "method": ["l2t_ww"], "source": "resnet34_imagenet",
}
_OFFICIAL_32 = {
    "target": "vgg9_bn", "width": 1.0, "image_size": 32, "epochs": 200, "batch_size": 128,
    "method": ["l2t_ww"], "source": "tinyimagenet_resnet32",
}

PRESETS = {
    "digits": {
        "target": "vgg9_bn", "width": 0.25, "image_size": 32, "epochs": 30, "batch_size": 25,
        "method": ["scratch", "fm", "l2t_ww_frozen", "l2t_ww"], "source": "auto",
        "classes": [5, 6, 7, 8, 9], "train_examples_per_class": 10,
        "source_arch": "resnet32", "source_width": 0.5, "source_classes": [0, 1, 2, 3, 4],
        "source_epochs": 15, "source_batch_size": 64,
    },
    "stanford_dogs": _OFFICIAL_224,
    "caltech_birds2011": _OFFICIAL_224,
    "folder": _OFFICIAL_224,
    "folder_small": _OFFICIAL_32,  # a folder of images of at most 64 px (data.folder_setting)
    "cifar10": _OFFICIAL_32,
    "cifar100": _OFFICIAL_32,
    "stl10": _OFFICIAL_32,
    "mnist": _OFFICIAL_32,
    "fashion_mnist": _OFFICIAL_32,
}

# Defaults for the auto-pretrained source when a preset does not set them.
SOURCE_DEFAULTS = {"source_arch": "resnet32", "source_width": 1.0, "source_classes": None}


def folder_preset_key(dataset, augmentation=None, skip_unreadable=False):
    """("folder" or "folder_small", why) for `folder:PATH`, from its images' size (or an explicit augmentation)."""
    from keras_l2t.data.datasets import folder_setting  # pylint: disable=import-outside-toplevel

    image_size, reason = folder_setting(dataset, augmentation, skip_unreadable)
    return ("folder_small" if image_size == 32 else "folder"), reason


def preset_for(dataset, augmentation=None, inspect_folder=False, skip_unreadable=False):
    """The defaults of `dataset`.

    `folder:PATH` uses the `folder` preset (the 224 setting), or with
    `inspect_folder` the one its images call for (`folder_preset_key`).
    """
    key = "folder" if dataset.startswith("folder:") else dataset
    if key not in PRESETS or key == "folder_small":
        names = sorted(k for k in PRESETS if not k.startswith("folder"))
        raise InputError(f"Unknown dataset {dataset!r}; choose one of {names} or folder:PATH.")
    if key == "folder" and inspect_folder:
        key, _ = folder_preset_key(dataset, augmentation, skip_unreadable)
    return {**SOURCE_DEFAULTS, **PRESETS[key]}


def preset_names():
    """The flag names some preset sets."""
    return {name for preset in (SOURCE_DEFAULTS, *PRESETS.values()) for name in preset}


def _format(value):
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def describe_default(name, dataset=None):
    """The preset default of flag `name`, for `--help`: per dataset, or for `dataset` when given.

    E.g. "per --dataset: digits 30; others 200" or "200 for --dataset=cifar100".
    """
    if dataset is not None:
        return f"{_format(preset_for(dataset).get(name))} for --dataset={dataset}"
    by_value = {}
    for key in (k for k in PRESETS if k != "folder_small"):
        by_value.setdefault(_format(preset_for(key).get(name)), []).append("folder:PATH (large images)" if key == "folder" else key)
    if len(by_value) == 1:
        return next(iter(by_value))
    groups = sorted(by_value.items(), key=lambda item: len(item[1]))
    *named, (last_value, last_datasets) = groups
    parts = [f"{', '.join(datasets)} {value}" for value, datasets in named]
    parts.append(f"others {last_value}" if len(last_datasets) > 3 else f"{', '.join(last_datasets)} {last_value}")
    return "per --dataset: " + "; ".join(parts)

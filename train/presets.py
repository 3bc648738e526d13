"""Per-dataset defaults that flags left unset fall back to (BUILD.md lists them).

The 224 and 32 settings follow the official code (method.md §4.3). `digits`
is the embedded demo, sized for a 2-core CPU: a ResNet-32 source pretrained on
digits 0–4 transfers to a VGG-9-BN target learning digits 5–9 from 10 labelled
images per class, and scratch, FM and L2T-ww are compared.
"""

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
        "method": ["scratch", "fm", "l2t_ww"], "source": "auto",
        "classes": [5, 6, 7, 8, 9], "train_examples_per_class": 10,
        "source_arch": "resnet32", "source_width": 0.5, "source_classes": [0, 1, 2, 3, 4],
        "source_epochs": 15, "source_batch_size": 64,
    },
    "stanford_dogs": _OFFICIAL_224,
    "caltech_birds2011": _OFFICIAL_224,
    "folder": _OFFICIAL_224,
    "cifar10": _OFFICIAL_32,
    "cifar100": _OFFICIAL_32,
    "stl10": _OFFICIAL_32,
    "mnist": _OFFICIAL_32,
    "fashion_mnist": _OFFICIAL_32,
}

# Defaults for the auto-pretrained source when a preset does not set them.
SOURCE_DEFAULTS = {"source_arch": "resnet32", "source_width": 1.0, "source_classes": None}


def preset_for(dataset):
    """The defaults of `dataset` (`folder:PATH` uses the `folder` preset)."""
    key = "folder" if dataset.startswith("folder:") else dataset
    if key not in PRESETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {sorted(PRESETS)} or folder:PATH.")
    return {**SOURCE_DEFAULTS, **PRESETS[key]}

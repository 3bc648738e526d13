"""The workloads of the meta-step benchmarks, as flags.

- `--workload=32` (issue #5, the default): ResNet-32 -> VGG-9-BN, 32x32, 100
  target classes, the README's CIFAR-100 setting.
- `--workload=224` (issue #27): the design card's Stanford Dogs setting,
  ImageNet ResNet-34 -> ResNet-18 at 224x224, 120 target classes. The source is
  keras-hub's ResNet-34 graph (what `resnet34_imagenet`, timm's
  `resnet34.tv_in1k`, loads into) at random weights, so nothing is downloaded.
- `--workload=224_vit` (issue #26): the same with a ViT-B/16 source (keras-hub's
  graph at random weights, no classification head; taps: blocks 3, 6, 9, 12 as
  14x14x768 maps), the cost of transferring from a vision transformer.

Both: batch 64, T = 2, all pairs (15 and 16), full width. Any flag given
explicitly overrides the workload's value.
"""

from absl import flags

# What keras-hub's timm converter builds for `resnet34` (keras_hub/src/utils/timm/convert_resnet.py),
# checked against it in tests/test_bench.py.
KERAS_HUB_RESNET34_ARGS = {
    "stackwise_num_filters": [64, 128, 256, 512], "stackwise_num_blocks": [3, 4, 6, 3],
    "stackwise_num_strides": [1, 2, 2, 2], "block_type": "basic_block", "use_pre_activation": False,
    "input_conv_filters": [64], "input_conv_kernel_sizes": [7],
}  # fmt: skip
KERAS_HUB_RESNET34 = "keras_hub_resnet34"
# ViT-B/16 at 224 (Dosovitskiy et al.; keras-hub's vit_base_patch16_224 presets).
KERAS_HUB_VIT_B16_ARGS = {
    "image_shape": (224, 224, 3), "patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768,
    "mlp_dim": 3072,
}  # fmt: skip
KERAS_HUB_VIT_B16 = "keras_hub_vit_b16"
KERAS_HUB_SOURCES = (KERAS_HUB_RESNET34, KERAS_HUB_VIT_B16)

WORKLOADS = {
    "32": {"source": "resnet32", "target": "vgg9_bn", "image_size": 32, "num_classes": 100, "source_classes": 200},
    "224": {
        "source": KERAS_HUB_RESNET34, "target": "resnet18", "image_size": 224, "num_classes": 120,
        "source_classes": 1000,
    },
    "224_vit": {
        "source": KERAS_HUB_VIT_B16, "target": "resnet18", "image_size": 224, "num_classes": 120,
        "source_classes": 1000,
    },
}  # fmt: skip


def define_workload_flags():
    """Defines the flags that set the benchmarked source, target and batch."""
    flags.DEFINE_enum(
        "workload", "32", list(WORKLOADS),
        "32: ResNet-32 -> VGG-9-BN; 224: ResNet-34 -> ResNet-18; 224_vit: ViT-B/16 -> ResNet-18.",
    )
    flags.DEFINE_string(
        "source", None,
        f"Source backbone (keras_l2t.backbones.BACKBONES, or {'/'.join(KERAS_HUB_SOURCES)}: keras-hub's graphs). "
        "Default: the workload's.",
    )
    flags.DEFINE_string("target", None, "Target backbone (keras_l2t.backbones.BACKBONES). Default: the workload's.")
    flags.DEFINE_float("source_width", 1.0, "Source channel-width multiplier (keras_l2t backbones only).")
    flags.DEFINE_float("target_width", 1.0, "Target channel-width multiplier.")
    flags.DEFINE_integer("image_size", None, "Input side (both networks). Default: the workload's.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_integer("inner_steps", 2, "T: look-ahead matching steps.")
    flags.DEFINE_string("pairs", "all", "Pair spec (keras_l2t.pairs.parse_pairs).")
    flags.DEFINE_integer("num_classes", None, "Target classes. Default: the workload's.")
    flags.DEFINE_integer("source_classes", None, "Source classes. Default: the workload's.")


def resolve(flag_values):
    """Sets every workload flag left at None to the chosen workload's value."""
    for name, value in WORKLOADS[flag_values.workload].items():
        if flag_values[name].value is None:
            flag_values[name].value = value


def source_backbone(flag_values):
    """The benchmarked source as a keras_l2t `Backbone` (random weights)."""
    from keras_l2t import backbones  # pylint: disable=import-outside-toplevel

    shape = (flag_values.image_size, flag_values.image_size, 3)
    if flag_values.source not in KERAS_HUB_SOURCES:
        return backbones.get_backbone(
            flag_values.source, num_classes=flag_values.source_classes, width=flag_values.source_width,
            input_shape=shape,
        )
    import keras_hub  # pylint: disable=import-outside-toplevel

    from keras_l2t.sources import hub as hub_sources  # pylint: disable=import-outside-toplevel

    if flag_values.source == KERAS_HUB_VIT_B16:
        converter = keras_hub.layers.ViTImageConverter(image_size=(224, 224), scale=1 / 127.5, offset=-1.0)
        return hub_sources.backbone_source(
            keras_hub.models.ViTBackbone(**KERAS_HUB_VIT_B16_ARGS), image_size=flag_values.image_size,
            name="vit_b16", converter=converter,
        )
    classifier = keras_hub.models.ResNetImageClassifier(
        backbone=keras_hub.models.ResNetBackbone(**KERAS_HUB_RESNET34_ARGS), num_classes=flag_values.source_classes
    )
    return hub_sources.classifier_source(classifier, image_size=flag_values.image_size, name="resnet34")


def target_backbone(flag_values):
    """The benchmarked target (random weights)."""
    from keras_l2t import backbones  # pylint: disable=import-outside-toplevel

    return backbones.get_backbone(
        flag_values.target, num_classes=flag_values.num_classes, width=flag_values.target_width,
        input_shape=(flag_values.image_size, flag_values.image_size, 3),
    )

"""The standard workload of the meta-step benchmarks, as flags (issue #5): ResNet-32 -> VGG-9-BN,
32x32, batch 64, T = 2, all (15) official pairs, full width."""

from absl import flags


def define_workload_flags():
    """Defines the flags that set the benchmarked source, target and batch."""
    flags.DEFINE_string("source", "resnet32", "Source backbone (keras_l2t.backbones.BACKBONES).")
    flags.DEFINE_string("target", "vgg9_bn", "Target backbone (keras_l2t.backbones.BACKBONES).")
    flags.DEFINE_float("source_width", 1.0, "Source channel-width multiplier.")
    flags.DEFINE_float("target_width", 1.0, "Target channel-width multiplier.")
    flags.DEFINE_integer("image_size", 32, "Input side (both networks).")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_integer("inner_steps", 2, "T: look-ahead matching steps.")
    flags.DEFINE_string("pairs", "all", "Pair spec (keras_l2t.pairs.parse_pairs).")
    flags.DEFINE_integer("num_classes", 100, "Target classes.")
    flags.DEFINE_integer("source_classes", 200, "Source classes.")

"""Trains a source network and saves it: `python -m train.pretrain_source --dataset=cifar100 --arch=resnet32`.

The best-validation network is written to `<model_dir>/source.keras`, ready
for `python -m train.main --source=<model_dir>/source.keras`.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from train.errors import run_reporting_errors  # pylint: disable=import-outside-toplevel

    run_reporting_errors(run, FLAGS.show_traceback)


def run():
    # pylint: disable=import-outside-toplevel
    from keras_l2t.experiment import ExperimentConfig, pretrain_source
    from train import presets
    from train.flags import common_config_fields

    preset = presets.preset_for(FLAGS.dataset)
    fields = common_config_fields(FLAGS, preset)
    if FLAGS.classes is None:  # a preset's target classes are not the source task
        fields["classes"] = None
    if FLAGS.train_examples_per_class is None:
        fields["train_examples_per_class"] = None
    config = ExperimentConfig(**fields, method="scratch", target=FLAGS.arch, width=FLAGS.width)
    path = pretrain_source(config, overwrite=FLAGS.overwrite)
    print(f"Source saved to {path}")


if __name__ == "__main__":
    from train.flags import define_common_flags  # pylint: disable=wrong-import-position

    define_common_flags()
    flags.DEFINE_string("arch", "resnet32", "Source architecture (resnet18, resnet32, resnet34, vgg9_bn).")
    flags.DEFINE_float("width", 1.0, "Channel-width multiplier.")
    app.run(main)

"""Trains a source network and saves it.

    python -m train.pretrain_source --dataset=cifar100 --arch=resnet32      (or: l2t-pretrain ...)

The best-validation network is written to `<model_dir>/source.keras`, ready
for `python -m train.main --source=<model_dir>/source.keras`. Without
--model_dir, each configuration gets its own directory (printed at start).
"""

import json

from absl import app
from absl import flags

FLAGS = flags.FLAGS
COMMAND = "python -m train.pretrain_source"
# The presets that apply to a source: its classes and examples are the whole dataset unless given.
PRESET_FLAGS = ("image_size", "epochs", "batch_size")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from train.errors import run_reporting_errors  # pylint: disable=import-outside-toplevel

    run_reporting_errors(lambda: run(FLAGS), FLAGS.show_traceback)


def run(flag_values):
    """Pretrains the source the flags describe (or finds it finished) and prints its path."""
    # pylint: disable=import-outside-toplevel
    import dataclasses

    from keras_l2t.experiment import pretrain_source
    from train import flags as train_flags
    from train import main as train_main

    config = train_flags.pretrain_config_from_flags(flag_values)
    if flag_values.print_config:
        print(json.dumps({"model_dir": config.model_dir, "source_pretraining": dataclasses.asdict(config)}, indent=2))
        return
    print(f"Run directory: {config.model_dir}")
    names = train_flags.define_pretrain_flags(flags.FlagValues())
    text = train_flags.flagfile_text(flag_values, names, config.model_dir, COMMAND)
    finished = train_main.finished_already(config, flag_values.overwrite)
    with train_main.suggesting_default_model_dir(flag_values["model_dir"].present):
        path = pretrain_source(config, overwrite=flag_values.overwrite)
    if finished:
        print(f"Finished run found in {config.model_dir}; showing its results (use --overwrite to retrain).")
    train_main.write_flagfile(config.model_dir, text)
    print(f"Source saved to {path}")


def console_main():
    """`l2t-pretrain` (and `python -m train.pretrain_source`): defines the flags, then runs `main` under absl."""
    from train import startup  # pylint: disable=import-outside-toplevel

    startup.start_tensorflow()
    # pylint: disable=import-outside-toplevel
    from train import cli_help
    from train import flags as train_flags

    names = train_flags.define_pretrain_flags()
    cli_help.install(__doc__, names, train_flags.HELP_GROUPS, PRESET_FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()

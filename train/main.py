"""Trains a target network, with or without transfer.

    python -m train.main --dataset=stanford_dogs      (or the installed command: l2t-train --dataset=...)

With no flags it runs the embedded demo on scikit-learn's digits (no
download): pretrain a ResNet-32 source on digits 0–4, then train a VGG-9-BN
target on digits 5–9 from 10 labels per class with scratch, FM and L2T-ww,
and print the comparison. Each configuration gets its own run directory
(printed at start) unless --model_dir is given; rerunning the same command
resumes an interrupted run or shows a finished one. --print_config shows the
resolved settings without training.
"""

import contextlib
import json
import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
COMMAND = "python -m train.main"
FLAGFILE = "flags.txt"


def _meta_movement(results):
    """(mean w entropy, max |Δλ| since epoch 1) of an L2T run's meta-networks, as table cells ("—" without)."""
    transfer = results.get("transfer") or {}
    entropies, change = transfer.get("channel_weight_entropy"), transfer.get("lambda_change_max")
    entropy = f"{sum(entropies) / len(entropies):.5f}" if entropies else "—"
    return entropy, (f"{change:.3f}" if change is not None else "—")


def comparison_table(rows):
    """A Markdown table of results.json dicts, with how far L2T-ww's meta-networks moved."""
    lines = [
        "| method | test acc. at best val | best val acc. | best epoch | final test acc. | w entropy | max Δλ "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        entropy, change = _meta_movement(r)
        lines.append(
            f"| {r['method']} | {r['test_accuracy_at_best_val']:.4f} | {r['best_val_accuracy']:.4f} | "
            f"{r['best_epoch']} | {r['final_test_accuracy']:.4f} | {entropy} | {change} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from train.errors import run_reporting_errors  # pylint: disable=import-outside-toplevel

    run_reporting_errors(lambda: run(FLAGS), FLAGS.show_traceback)


def write_flagfile(directory, text):
    """Writes `directory/flags.txt` atomically."""
    path = os.path.join(directory, FLAGFILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def flagfile_callback(directory, text):
    """A Keras callback that writes flags.txt when training starts (run_experiment has written flags.json)."""
    import keras  # pylint: disable=import-outside-toplevel

    class WriteFlagfile(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            write_flagfile(directory, text)

    return WriteFlagfile()


@contextlib.contextmanager
def suggesting_default_model_dir(explicit_model_dir):
    """Adds to a refused explicit --model_dir that leaving it out gives each configuration its own."""
    from keras_l2t.checkpointing import RunDirectoryError  # pylint: disable=import-outside-toplevel

    try:
        yield
    except RunDirectoryError as error:
        if not explicit_model_dir:
            raise
        raise RunDirectoryError(
            f"{error} Leaving --model_dir out gives each configuration a run directory of its own."
        ) from error


def finished_already(config, overwrite):
    """Whether run_experiment(config) will show a finished run rather than train."""
    from keras_l2t import checkpointing  # pylint: disable=import-outside-toplevel

    return not overwrite and checkpointing.RunDirectory(config.model_dir).finished


def run(flag_values):
    """Runs the methods the flags ask for (pretraining an auto source first) and prints the table."""
    # pylint: disable=import-outside-toplevel
    from keras_l2t.experiment import pretrain_source, run_experiment
    from train import flags as train_flags

    methods, base, source_config = train_flags.plan_from_flags(flag_values)
    configs = train_flags.method_configs(methods, base, source_config)
    if flag_values.print_config:
        resolved = train_flags.resolved_configuration(configs, source_config)
        print(json.dumps({"model_dir": base.model_dir, **resolved}, indent=2))
        return
    print(f"Run directory: {base.model_dir}")
    if base.dataset.startswith("folder:") and flag_values.image_size is None:
        from train import presets  # pylint: disable=import-outside-toplevel

        key, reason = presets.folder_preset_key(base.dataset, base.augmentation, base.skip_unreadable_images)
        setting = "32x32 (the CIFAR setting)" if key == "folder_small" else "224x224 (the ImageNet setting)"
        print(f"{base.dataset}: the {setting}, target {base.target}, because {reason}; set --image_size (and "
              "--target, --source, --augmentation) to choose otherwise.")
    names = train_flags.define_flags(flags.FlagValues())  # this entry point's flags, for flags.txt
    text = train_flags.flagfile_text(flag_values, names, base.model_dir, COMMAND)
    overwrite = flag_values.overwrite
    with suggesting_default_model_dir(flag_values["model_dir"].present):
        if source_config is not None:
            finished = finished_already(source_config, overwrite)
            if not finished:
                print(f"Pretraining the source ({source_config.target}) on classes "
                      f"{list(source_config.classes)} → {source_config.model_dir}")
            pretrain_source(source_config, overwrite=overwrite)
            if finished:
                print(f"Finished source pretraining found in {source_config.model_dir}; reusing it.")
        rows = []
        for config in configs:
            finished = finished_already(config, overwrite)
            if not finished:
                print(f"Training {config.method} → {config.model_dir}")
            results = run_experiment(
                config, overwrite=overwrite, callbacks=[flagfile_callback(config.model_dir, text)]
            )
            if finished:
                print(f"Finished run found in {config.model_dir}; showing its results (use --overwrite to retrain).")
            if not os.path.exists(os.path.join(config.model_dir, FLAGFILE)):  # finished before flags.txt existed
                write_flagfile(config.model_dir, text)
            rows.append(results)
            print(
                f"{config.method} on {results['dataset']}: test accuracy at best validation epoch "
                f"{results['best_epoch']} = {results['test_accuracy_at_best_val']:.4f}"
            )
    table = comparison_table(rows)
    if len(rows) > 1:
        with open(os.path.join(base.model_dir, "comparison.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        with open(os.path.join(base.model_dir, "comparison.json"), "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
        write_flagfile(base.model_dir, text)
    print("\n" + table)


def console_main():
    """`l2t-train` (and `python -m train.main`): defines the flags, then runs `main` under absl."""
    from train import startup  # pylint: disable=import-outside-toplevel

    startup.start_tensorflow()
    # pylint: disable=import-outside-toplevel
    from train import cli_help
    from train import flags as train_flags
    from train import presets

    names = train_flags.define_flags()
    cli_help.install(__doc__, names, train_flags.HELP_GROUPS, presets.preset_names())
    app.run(main)


if __name__ == "__main__":
    console_main()

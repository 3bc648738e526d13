"""Trains a target network, with or without transfer: `python -m train.main --dataset=stanford_dogs`.

With no flags it runs the embedded demo on scikit-learn's digits (no
download): pretrain a ResNet-32 source on digits 0–4, then train a VGG-9-BN
target on digits 5–9 from 10 labels per class with scratch, FM and L2T-ww,
and print the comparison. BUILD.md lists every flag and per-dataset setting.
"""

import os

# oneDNN halves CPU step time where TF leaves it off (method.md §4.8); it must
# be set before TensorFlow is first imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import dataclasses  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position

from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def comparison_table(rows):
    """A Markdown table of results.json dicts."""
    lines = [
        "| method | test acc. at best val | best val acc. | best epoch | final test acc. | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['test_accuracy_at_best_val']:.4f} | {r['best_val_accuracy']:.4f} | "
            f"{r['best_epoch']} | {r['final_test_accuracy']:.4f} | {r['wall_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from train.errors import run_reporting_errors  # pylint: disable=import-outside-toplevel

    run_reporting_errors(lambda: run(FLAGS), FLAGS.show_traceback)


def run(flag_values):
    """Runs the methods the flags ask for (pretraining an auto source first) and prints the table."""
    # pylint: disable=import-outside-toplevel
    from keras_l2t.experiment import TRANSFER_METHODS, pretrain_source, run_experiment
    from train.flags import plan_from_flags

    methods, base, source_config = plan_from_flags(flag_values)
    source = base.source
    if source_config is not None:
        print(f"Pretraining the source ({source_config.target}) on classes {list(source_config.classes)} ...")
        source = pretrain_source(source_config, overwrite=flag_values.overwrite)
    rows = []
    for method in methods:
        config = dataclasses.replace(
            base,
            method=method,
            source=source if method in TRANSFER_METHODS else None,
            model_dir=os.path.join(base.model_dir, method) if len(methods) > 1 else base.model_dir,
        )
        print(f"Training {method} → {config.model_dir}")
        results = run_experiment(config, overwrite=flag_values.overwrite)
        rows.append(results)
        print(
            f"{method} on {results['dataset']}: test accuracy at best validation epoch "
            f"{results['best_epoch']} = {results['test_accuracy_at_best_val']:.4f}"
        )
    table = comparison_table(rows)
    if len(rows) > 1:
        with open(os.path.join(base.model_dir, "comparison.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        with open(os.path.join(base.model_dir, "comparison.json"), "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    print("\n" + table)


if __name__ == "__main__":
    from train.flags import define_flags  # pylint: disable=wrong-import-position

    define_flags()
    app.run(main)

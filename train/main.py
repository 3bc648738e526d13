"""Trains a target network, with or without transfer.

    python -m train.main --dataset=stanford_dogs      (or the installed command: l2t-train --dataset=...)

With no flags it runs the embedded demo on scikit-learn's digits (no
download): pretrain a ResNet-32 source on digits 0–4, then train a VGG-9-BN
target on digits 5–9 from 10 labels per class with scratch, FM, L2T-ww with
frozen meta-networks (the control) and L2T-ww, and print the comparison
(--repeats=3: three seeds each, mean ± std). Each configuration gets its own run directory
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


# A meta-network "moved" when its mean w entropy fell below this, or a λ changed by more than LAMBDA_MOVED.
ENTROPY_MOVED = 0.99
LAMBDA_MOVED = 0.1


def _method_groups(rows):
    """{method: [results.json dicts]}, in order of first appearance."""
    groups = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    return groups


def _movement(group):
    """(mean w entropy, λ range (low, high), max |Δλ| since epoch 1) over a method's runs; None where absent."""
    from train.aggregate import meta_network_summary  # pylint: disable=import-outside-toplevel

    return meta_network_summary(group)


def _accuracy(group):
    from train.aggregate import mean_std  # pylint: disable=import-outside-toplevel

    return mean_std(r["test_accuracy_at_best_val"] for r in group)


def comparison_table(rows):
    """A Markdown table of results.json dicts, one row per method (mean ± std over its seeds).

    With how far L2T-ww's meta-networks moved: the mean normalised entropy of w
    (1 = uniform, where it starts), the range of λ and its largest change since epoch 1.
    """
    from train.aggregate import mean_std  # pylint: disable=import-outside-toplevel

    lines = [
        "| method | seeds | test acc. at best val | best val acc. | best epoch | w entropy | λ range | max Δλ "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, group in _method_groups(rows).items():
        mean, std = _accuracy(group)
        spread = f" ± {std:.4f}" if len(group) > 1 else ""
        entropy, lambda_range, change = _movement(group)
        epochs = sorted(r["best_epoch"] for r in group)
        best_val = mean_std(r["best_val_accuracy"] for r in group)[0]
        lines.append(
            f"| {method} | {len(group)} | {mean:.4f}{spread} | {best_val:.4f} | "
            f"{','.join(str(e) for e in epochs)} | {'—' if entropy is None else f'{entropy:.5f}'} | "
            f"{'—' if lambda_range is None else f'{lambda_range[0]:.2f}–{lambda_range[1]:.2f}'} | "
            f"{'—' if change is None else f'{change:.3f}'} | "
            f"{mean_std(r['wall_seconds'] for r in group)[0]:.0f} |"
        )
    return "\n".join(lines)


def _versus(group, other_name, other):
    """'ahead of X … by d', 'within the seed spread of X …' or 'behind X … by d' (spread: the larger std)."""
    (mean, std), (other_mean, other_std) = _accuracy(group), _accuracy(other)
    difference = mean - other_mean
    if abs(difference) <= max(std, other_std):
        return f"within the seed spread of {other_name} ({other_mean:.4f} ± {other_std:.4f})"
    where = "ahead of" if difference > 0 else "behind"
    return f"{where} {other_name} ({other_mean:.4f} ± {other_std:.4f}) by {abs(difference):.4f}"


def _beats(group, other):
    """Whether `group`'s mean accuracy is above `other`'s by more than the larger of their stds."""
    (mean, std), (other_mean, other_std) = _accuracy(group), _accuracy(other)
    return mean - other_mean > max(std, other_std)


def interpretation(rows):
    """A few sentences on what the comparison shows about L2T-ww, or None without an l2t_ww run.

    Whether the meta-networks moved, and L2T-ww against its controls (frozen
    meta-networks, plain feature matching, scratch) relative to the seed spread;
    "learned what and where helped" is said only when L2T-ww is ahead of both
    the frozen control and FM by more than the spread.
    """
    groups = _method_groups(rows)
    if "l2t_ww" not in groups:
        return None
    group = groups["l2t_ww"]
    sentences = []
    entropy, _, change = _movement(group)
    if entropy is not None and change is not None:
        moved = entropy < ENTROPY_MOVED or change > LAMBDA_MOVED
        sentences.append(
            f"L2T-ww's meta-networks {'moved' if moved else 'barely moved'} (mean w entropy {entropy:.3f}, "
            f"1 = uniform; λ changed by at most {change:.3f} since epoch 1)"
            + ("." if moved else ": L2T-ww here is feature matching with the meta-networks' initial, random weights.")
        )
    mean, std = _accuracy(group)
    if len(group) < 2:
        sentences.append(f"L2T-ww {mean:.4f} on one seed: with no seed spread to weigh the differences against, "
                         "this run supports no conclusion; --repeats=3 runs three seeds of each method.")
        return " ".join(sentences)
    controls = [(m, groups[m]) for m in ("l2t_ww_frozen", "fm", "scratch") if m in groups]
    if controls:
        sentences.append(f"L2T-ww ({mean:.4f} ± {std:.4f} over {len(group)} seeds) is "
                         + "; ".join(_versus(group, m, g) for m, g in controls) + ".")
    if "l2t_ww_frozen" in groups and "fm" in groups:
        if _beats(group, groups["l2t_ww_frozen"]) and _beats(group, groups["fm"]):
            sentences.append("On this run, learned what and where helped beyond the seed spread.")
        else:
            sentences.append("So this run does not show that *learned* what and where helps: that needs L2T-ww "
                             "ahead of both the frozen meta-networks and FM by more than the seed spread.")
    return " ".join(sentences)


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
    """A Keras callback that writes flags.txt when training starts (run_experiment has written flags.json).

    On a multi-worker run only the chief writes it.
    """
    import keras  # pylint: disable=import-outside-toplevel

    from keras_l2t import distribute  # pylint: disable=import-outside-toplevel

    class WriteFlagfile(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if distribute.is_chief(self.model.distribute_strategy):
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
    from keras_l2t.experiment import pretrain_source, run_experiment, writes_run_directory
    from train import flags as train_flags

    methods, base, source_config = train_flags.plan_from_flags(flag_values)
    repeats = train_flags.repeats_from_flags(flag_values)
    configs = train_flags.method_configs(methods, base, source_config, repeats)
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
            label = f"{config.method} (seed {config.seed})" if repeats > 1 else config.method
            if not finished:
                print(f"Training {label} → {config.model_dir}")
            results = run_experiment(
                config, overwrite=overwrite, callbacks=[flagfile_callback(config.model_dir, text)]
            )
            if finished:
                print(f"Finished run found in {config.model_dir}; showing its results (use --overwrite to retrain).")
            # Finished before flags.txt existed (on several workers, only the chief writes):
            if writes_run_directory(config) and not os.path.exists(os.path.join(config.model_dir, FLAGFILE)):
                write_flagfile(config.model_dir, text)
            rows.append(results)
            print(
                f"{label} on {results['dataset']}: test accuracy at best validation epoch "
                f"{results['best_epoch']} = {results['test_accuracy_at_best_val']:.4f}"
            )
    table = comparison_table(rows)
    summary = interpretation(rows)
    if summary:
        table += "\n\n" + summary
    if len(rows) > 1 and writes_run_directory(base):
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

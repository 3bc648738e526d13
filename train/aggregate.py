"""Collects the runs of `train.reproduce` into results.csv, results.md, results.png and cost.png.

Plain Python and matplotlib (no TensorFlow), so the table of a finished study can
be rebuilt, or tested on hand-made files, in a second. A run is a directory
holding `run.json` (written by the runner before training: `spec`, `label`,
`seed`, `args`, and `model_dir`, train.main's directory relative to the run's)
and, once finished, train.main's `results.json` in that model_dir.
"""

import csv
import json
import math
import os
import statistics

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
METRIC = "test_accuracy_at_best_val"

CSV_COLUMNS = (
    "label", "spec", "seed", "method", "pairs", METRIC, "best_val_accuracy", "best_epoch",
    "final_test_accuracy", "epochs_completed", "num_train", "meta_lr", "w_entropy", "lambda_min", "lambda_max",
    "lambda_change_max", "wall_seconds", "run_dir", "lambda_per_source",
)


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def find_runs(runs_dir):
    """(finished, unfinished): run dicts under `runs_dir`, each `run.json` merged with `results.json`.

    Finished runs are sorted by (spec, seed); an unfinished run is one whose
    `run.json` exists without `results.json` (crashed, interrupted or running).
    """
    finished, unfinished = [], []
    for root, dirs, files in os.walk(runs_dir):
        if RUN_FILE not in files:
            continue
        dirs[:] = []  # a run's own files are not searched
        run = {**_read_json(os.path.join(root, RUN_FILE)), "run_dir": os.path.relpath(root, runs_dir)}
        results_path = os.path.join(root, run.get("model_dir", "."), RESULTS_FILE)
        if os.path.exists(results_path):
            finished.append({**_read_json(results_path), **run})
        else:
            unfinished.append(run)
    key = lambda r: (r["spec"], r["seed"])  # noqa: E731
    return sorted(finished, key=key), sorted(unfinished, key=key)


def meta_network_figures(run):
    """An L2T run's meta-networks after training: mean w entropy, λ min and max over pairs, max |Δλ| since epoch 1.

    From results.json's `transfer`; a figure is None where the method has no such meta-network.
    """
    transfer = run.get("transfer") or {}
    entropies, lambdas = transfer.get("channel_weight_entropy"), transfer.get("lambda")
    return {
        "w_entropy": sum(entropies) / len(entropies) if entropies else None,
        "lambda_min": min(lambdas) if lambdas else None,
        "lambda_max": max(lambdas) if lambdas else None,
        "lambda_change_max": transfer.get("lambda_change_max"),
    }


def meta_network_summary(runs):
    """Over runs of one method: (mean w entropy, (λ min, λ max), max |Δλ|); each None where no run has it."""
    figures = [meta_network_figures(r) for r in runs]
    entropies = [f["w_entropy"] for f in figures if f["w_entropy"] is not None]
    lows = [f["lambda_min"] for f in figures if f["lambda_min"] is not None]
    highs = [f["lambda_max"] for f in figures if f["lambda_max"] is not None]
    changes = [f["lambda_change_max"] for f in figures if f["lambda_change_max"] is not None]
    return (
        sum(entropies) / len(entropies) if entropies else None,
        (min(lows), max(highs)) if lows else None,
        max(changes) if changes else None,
    )


def mean_std(values):
    """(mean, sample standard deviation with ddof=1; 0.0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std of no values.")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(runs, order=()):
    """One summary dict per method spec: label, n, mean ± std of the metric, means of the rest.

    Rows follow `order` (specs), then any other spec in order of appearance.
    """
    by_spec = {}
    for run in runs:
        by_spec.setdefault(run["spec"], []).append(run)
    specs = [s for s in order if s in by_spec] + [s for s in by_spec if s not in order]
    rows = []
    for spec in specs:
        group = sorted(by_spec[spec], key=lambda r: r["seed"])
        mean, std = mean_std(r[METRIC] for r in group)
        entropy, lambda_range, change = meta_network_summary(group)
        rows.append({
            "spec": spec,
            "label": group[0]["label"],
            "n": len(group),
            "seeds": [r["seed"] for r in group],
            "values": [r[METRIC] for r in group],
            "mean": mean,
            "std": std,
            "best_val_mean": mean_std(r["best_val_accuracy"] for r in group)[0],
            "wall_seconds_mean": mean_std(r["wall_seconds"] for r in group)[0],
            "wall_seconds_median": statistics.median(r["wall_seconds"] for r in group),
            "w_entropy_mean": entropy,
            "lambda_range": lambda_range,
            "lambda_change_max": change,
            "lambda_per_source": lambda_per_source(group),
        })
    return rows


def lambda_per_source(runs):
    """Over runs of one multi-source method: {source: (mean, std) over seeds of its pairs' mean λ at the end}, or None."""
    per_run = [(r.get("transfer") or {}).get("lambda_per_source") for r in runs]
    per_run = [p for p in per_run if p]
    if not per_run:
        return None
    return {name: mean_std(p[name] for p in per_run if name in p) for name in per_run[0]}


def write_csv(runs, path):
    """results.csv: one row per finished run."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for run in runs:
            row = {**run, **meta_network_figures(run)}
            per_source = (run.get("transfer") or {}).get("lambda_per_source")
            row["lambda_per_source"] = json.dumps(per_source) if per_source else None
            writer.writerow({column: row.get(column) for column in CSV_COLUMNS})


def markdown_table(rows):
    """The per-method table (accuracies in %); a column of mean λ per source where a row has several sources."""
    several = any(row.get("lambda_per_source") for row in rows)
    lines = [
        "| method | test acc. at best val (%) | seeds | best val acc. (%) | w entropy | λ range | max Δλ "
        + ("| mean λ per source (± std over seeds) " if several else "") + "| wall time (s, median) |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if several else ""),
    ]
    for row in rows:
        spread = f" ± {100 * row['std']:.2f}" if row["n"] > 1 else ""
        entropy = "—" if row.get("w_entropy_mean") is None else f"{row['w_entropy_mean']:.4f}"
        lambdas = "—" if row.get("lambda_range") is None else "{:.2f}–{:.2f}".format(*row["lambda_range"])
        change = "—" if row.get("lambda_change_max") is None else f"{row['lambda_change_max']:.3f}"
        per_source = ""
        if several:
            per_source = "; ".join(f"{name} {mean:.3f} ± {std:.3f}"
                                   for name, (mean, std) in (row.get("lambda_per_source") or {}).items()) or "—"
            per_source += " | "
        lines.append(
            f"| {row['label']} | {100 * row['mean']:.2f}{spread} | {row['n']} | "
            f"{100 * row['best_val_mean']:.2f} | {entropy} | {lambdas} | {change} | {per_source}"
            f"{row['wall_seconds_median']:.0f} |"
        )
    return "\n".join(lines)


def write_markdown(rows, path, title, settings=(), unfinished=()):
    """results.md: the table, how it was computed, the settings, and unfinished runs."""
    parts = [
        f"# {title}",
        "",
        markdown_table(rows),
        "",
        "Test accuracy at the epoch of best validation accuracy (the paper's protocol, docs/method.md §4.5): "
        "mean ± sample standard deviation (ddof 1) over the seeds; best val acc. is a mean, wall time per run a "
        "median (robust to one run slowed by other work on the machine). "
        "For L2T methods, where their meta-networks ended: w entropy is the mean normalised entropy of the "
        "channel weights (1 = uniform, where they start), λ range the pair weights' range over pairs and seeds, "
        "max Δλ the largest change of a pair weight since epoch 1.",
    ]
    if settings:
        parts += ["", "## Settings", "", *[f"- {line}" for line in settings]]
    if unfinished:
        parts += ["", "## Unfinished runs (not in the table)", ""]
        parts += [f"- {r['label']}, seed {r['seed']}: `{r['run_dir']}`" for r in unfinished]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def plot(rows, path, title):
    """results.png: bars of the mean metric with ± std error bars, and each seed as a dot."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 4.0))
    xs = range(len(rows))
    means = [100 * r["mean"] for r in rows]
    ax.bar(xs, means, yerr=[100 * r["std"] for r in rows], capsize=4, color="#8fb3d9", edgecolor="#2f5f8f")
    for x, row in zip(xs, rows):
        ax.plot([x] * row["n"], [100 * v for v in row["values"]], "o", color="#1f3b57", markersize=3)
    lows = [100 * min(r["values"]) for r in rows] + [m - 100 * r["std"] for m, r in zip(means, rows)]
    ax.set_ylim(max(0.0, min(lows, default=0.0) - 5.0), 100.0)
    ax.set_xticks(list(xs), [r["label"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test accuracy at best val (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_cost(rows, path, title):
    """cost.png: mean metric (± std) against each method's median wall time per run.

    The median, not the mean, so that one run slowed by other work on the
    machine does not move its method along the cost axis.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    # A colour and a legend entry per method: labels beside the points overlap when two cost the same.
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    colors = plt.get_cmap("tab10").colors
    for i, row in enumerate(rows):
        minutes, accuracy = row["wall_seconds_median"] / 60.0, 100 * row["mean"]
        ax.errorbar(minutes, accuracy, yerr=100 * row["std"], fmt="o", capsize=4, color=colors[i % len(colors)],
                    label=row["label"])
    ax.set_xlabel("wall time per run, median over seeds (min)")
    ax.set_ylabel("test accuracy at best val (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.15), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # grown to hold the legend below, whatever its labels' length
    plt.close(fig)


def find_study_runs(studies, runs_subdir="runs"):
    """(finished, unfinished) over several studies: `studies` is [(name, output_dir)], and each run's spec and
    label get ", <name>" (e.g. which sources), so that the same method from two studies makes two rows (scratch
    runs, which use no source, only from the second study on)."""
    finished, unfinished, sourceless = [], [], None
    for name, output_dir in studies:
        done, pending = find_runs(os.path.join(output_dir, runs_subdir))
        for run in done + pending:
            # Scratch uses no source: its row keeps its label, from the first study that has one.
            shared = run["spec"] == "scratch" and sourceless in (None, output_dir)
            sourceless = output_dir if shared else sourceless
            suffix = f", {name}" if name and not shared else ""
            run.update(spec=run["spec"] + suffix, label=run["label"] + suffix,
                       run_dir=os.path.join(output_dir, runs_subdir, run["run_dir"]))
        finished += done
        unfinished += pending
    return finished, unfinished


def write_results(finished, unfinished, results_dir, *, order=(), title="Results", settings=()):
    """Writes results.csv, results.md, results.png and cost.png of these runs; returns the summary rows."""
    rows = summarize(finished, order)
    write_csv(finished, os.path.join(results_dir, "results.csv"))
    write_markdown(rows, os.path.join(results_dir, "results.md"), title, settings, unfinished)
    for name, draw in (("results.png", plot), ("cost.png", plot_cost)):
        chart = os.path.join(results_dir, name)
        if rows:
            draw(rows, chart, title)
        elif os.path.exists(chart):
            os.remove(chart)  # no stale chart next to an empty table
    return rows


def aggregate(output_dir, *, results_dir=None, runs_subdir="runs", order=(), title="Results", settings=()):
    """Writes results.csv, results.md, results.png and cost.png; returns the summary rows.

    Args:
        output_dir: The study directory; runs are found under `output_dir/runs_subdir`.
        results_dir: Where the three files go (default: `output_dir`).
        order: Method specs in table order (others follow).
        title: Heading of results.md and the chart.
        settings: Lines listed under "Settings" in results.md.
    """
    finished, unfinished = find_runs(os.path.join(output_dir, runs_subdir))
    return write_results(finished, unfinished, results_dir or output_dir, order=order, title=title,
                         settings=settings)


def main(argv):
    """`python -m train.aggregate --study=NAME=DIR ... --results_dir=DIR`: one table from several studies."""
    from absl import flags  # pylint: disable=import-outside-toplevel

    del argv
    values = flags.FLAGS
    studies = []
    for item in values.study:
        name, equals, directory = item.rpartition("=")
        if not equals or not os.path.isdir(directory):
            raise SystemExit(f"error: --study={item}: expected NAME=DIR (or =DIR) with an existing study directory.")
        studies.append((name, directory))
    os.makedirs(values.results_dir, exist_ok=True)
    finished, unfinished = find_study_runs(studies)
    rows = write_results(finished, unfinished, values.results_dir, title=values.title,
                         settings=values.setting or ())  # rows: study by study, as given
    print(markdown_table(rows))
    print(f"\nWrote results.csv, results.md, results.png and cost.png to {values.results_dir}.")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_multi_string("study", None, "NAME=DIR: a train.reproduce output directory; its rows get ', NAME'. "
                              "Repeat for each study; rows follow this order (each study's own rows by method).", required=True)
    flags.DEFINE_string("results_dir", None, "Where results.csv, results.md and the charts go.", required=True)
    flags.DEFINE_string("title", "Results", "Heading of results.md and the charts.")
    flags.DEFINE_multi_string("setting", None, "A line under 'Settings' in results.md (repeatable).")
    app.run(main)

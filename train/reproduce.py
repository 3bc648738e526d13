"""Runs a study: every method × seed of a config, then the table and the chart.

    python -m train.reproduce --config=fashion_mnist_cpu --seeds=0,1 \\
        --output_dir=runs/fashion_mnist_n50 [--train_examples_per_class=50] [other train.main flags]
    (or the installed command: l2t-reproduce ...)

The config is an absl flagfile of `train.main`: a path, or the name of one
shipped in train/configs/ (fashion_mnist_cpu, cifar100, stl10, stanford_dogs,
caltech_birds2011, mit67, stanford40); train.main flags given here override
it. Each method spec × seed runs as its own `python -m train.main --verbose=2`
subprocess (memory is released; a crash is reported and the rest go on) in
`output_dir/runs/<spec>/seed<k>/`: `run.json` (spec, label, seed, train.main
arguments), `train.log`, and train.main's model_dir `model/`. A run whose
`model/results.json` exists is skipped, so an interrupted study is resumed by
running the same command again; a run directory holding other arguments is
reported, never silently reused. With `--source=auto`, the source is pretrained
once (`python -m train.pretrain_source`, into `--source_dir`) and shared by all
runs and seeds. At the end `train.aggregate` writes `results.csv` (one row per
run), `results.md` (mean ± std per method), `results.png` and `cost.png`
(accuracy against wall time) into `--results_dir` (default: output_dir).

Method specs are `method[:pairs][@flag=value...]`, pairs being `single`,
`one_to_one`, `all` or explicit `m-n` pairs joined by `+` (e.g. `fm:14-4+9-3`),
and `@flag=value` a train.main flag for that row only (e.g.
`l2t_ww:all@meta_lr=1e-2`, a row of a sweep). The default list is the
paper's table (docs/method.md §5): scratch, lwf, at, lwf_at, fm:single,
fm:one_to_one, l2t_w:single, l2t_w:one_to_one, l2t_ww:all.
"""

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

from train import aggregate

FLAGS = flags.FLAGS

# The shipped study configs (package data, so that they are found from any directory and after `pip install`).
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
DEFAULT_CONFIG = "fashion_mnist_cpu"
DEFAULT_METHODS = (
    "scratch", "lwf", "at", "lwf_at", "fm:single", "fm:one_to_one", "l2t_w:single", "l2t_w:one_to_one", "l2t_ww:all",
)
METHOD_NAMES = {
    "scratch": "Scratch", "lwf": "LwF", "at": "AT", "lwf_at": "LwF+AT", "fm": "FM", "l2t_w": "L2T-w",
    "l2t_ww": "L2T-ww", "l2t_ww_frozen": "L2T-ww, meta-networks frozen",
}
PAIR_NAMES = {"single": "single", "one_to_one": "one-to-one", "all": "all-to-all"}
# train.main flags the runner sets per run.
PER_RUN_FLAGS = ("method", "seed", "repeats", "model_dir")
# train.main flags that are the runner's own business, never passed to runs.
RUNNER_FLAGS = ("print_config",)
# Runs log to files: one line per epoch unless --verbose is given.
RUN_VERBOSE_DEFAULT = "--verbose=2"
STUDY_FLAGS = ("config", "methods", "seeds", "output_dir", "source_dir", "results_dir", "dry_run", "aggregate_only")
# train.main's flags, as train.reproduce defines them (set by `define_flags`).
TRAIN_MAIN_FLAGS = frozenset()
# train.main flags whose values are lists: in a method spec, "+" separates their items.
LIST_FLAGS = ("source", "source_blocks")
# train.main flags of an auto source, which the runner pretrains itself and passes to runs as --source=PATH.
AUTO_SOURCE_FLAGS = ("source", "source_arch", "source_width", "source_classes", "source_epochs", "source_batch_size")
MODEL_SUBDIR = "model"


def _path_safe(value):
    """A flag value as part of one directory name ("auto,random:resnet32" -> "auto+random_resnet32")."""
    return re.sub(r"[^\w.=+-]", "_", value.replace(",", "+"))


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One row of the table: a train.main method, optionally its pairs (`--pairs`) and other train.main flags."""

    method: str
    pairs: str | None = None
    settings: tuple[tuple[str, str], ...] = ()  # (flag, value): e.g. (("meta_lr", "1e-2"),)

    @property
    def spec(self):
        text = self.method if self.pairs is None else f"{self.method}:{self.pairs.replace(',', '+')}"
        return text + "".join(f"@{name}={value.replace(',', '+')}" for name, value in self.settings)

    @property
    def label(self):
        details = [] if self.pairs is None else [PAIR_NAMES.get(self.pairs, self.pairs)]
        details += [f"{name}={value}" for name, value in self.settings]
        name = METHOD_NAMES.get(self.method, self.method)
        return f"{name} ({', '.join(details)})" if details else name

    @property
    def dirname(self):
        text = self.method if self.pairs is None else f"{self.method}-{self.pairs.replace(',', '_')}"
        # A value may be a path or a list of sources ("auto,random:resnet32"): one directory name.
        return text + "".join(f"-{name}{_path_safe(value)}" for name, value in self.settings)

    @property
    def source(self):
        """The row's own `--source` (`@source=A+B`), or None for the study's."""
        return dict(self.settings).get("source")

    def train_args(self):
        args = [f"--method={self.method}"] + ([] if self.pairs is None else [f"--pairs={self.pairs}"])
        return args + [f"--{name}={value}" for name, value in self.settings]


def parse_method_spec(text, methods, methods_with_pairs, flag_names=None):
    """`method[:pairs][@flag=value...]` -> MethodSpec, checked against the known methods (and flags).

    Args:
        text: e.g. "scratch", "fm:single", "fm:14-4+9-3", "l2t_ww:all@meta_lr=1e-2@beta=1",
            "l2t_ww:all@source=auto+random:resnet32" (in pairs and in list flags such as
            `source`, "+" stands for the comma that separates the methods).
        methods: Valid method names.
        methods_with_pairs: Those that take pairs.
        flag_names: train.main flags a spec may set (None: any).
    """
    from keras_l2t.errors import InputError  # pylint: disable=import-outside-toplevel

    head, *assignments = text.strip().split("@")
    method, _, pairs = head.partition(":")
    if method not in methods:
        raise InputError(f"Unknown method {method!r} in {text!r}; choose from {list(methods)}.")
    settings = []
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        if not equals or not name or not value:
            raise InputError(f"Expected @flag=value in {text!r}, got @{assignment}.")
        if flag_names is not None and name not in flag_names:
            raise InputError(f"--{name} (in {text!r}) is not a train.main flag a method spec may set.")
        settings.append((name, value))
    if pairs and method not in methods_with_pairs:
        raise InputError(f"Method {method!r} takes no pairs (in {text!r}).")
    settings = [(name, value.replace("+", ",") if name in LIST_FLAGS else value) for name, value in settings]
    return MethodSpec(method, pairs.replace("+", ",") if pairs else None, tuple(settings))


@dataclasses.dataclass(frozen=True)
class Job:
    """One subprocess: `python -m <module> <args>`, logged to `run_dir/train.log`."""

    run_dir: str
    module: str
    args: tuple[str, ...]
    record: dict  # written, with the args, to run_dir/run.json
    results_path: str

    def command(self):
        return [sys.executable, "-m", self.module, *self.args]


def launch(job):
    """Runs a job's subprocess with its output appended to `train.log`; returns the exit code."""
    os.makedirs(job.run_dir, exist_ok=True)
    with open(os.path.join(job.run_dir, "train.log"), "a", encoding="utf-8") as log:
        log.write(f"\n$ {shlex.join(job.command())}\n")
        log.flush()
        # PYTHONSAFEPATH: `python -m` must not import a `train` package or train.py of the working directory.
        env = dict(os.environ, PYTHONSAFEPATH="1")
        return subprocess.run(job.command(), stdout=log, stderr=subprocess.STDOUT, check=False, env=env).returncode


def _log_tail(run_dir, lines=15):
    path = os.path.join(run_dir, "train.log")
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        tail = f.read().replace("\r", "\n").splitlines()
    return "\n".join("    " + line for line in [t for t in tail if t.strip()][-lines:])


def _saved_args(run_dir):
    path = os.path.join(run_dir, aggregate.RUN_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("args")


def _comparable(args):
    """Arguments that make runs differ (not how much they print)."""
    return [a for a in args if not a.startswith("--verbose=")]


def run_jobs(jobs, *, launcher=launch, log=print):
    """Runs the jobs in order, skipping finished ones; returns the list of failure messages.

    A job is finished when its results file exists and its run directory holds
    the same arguments. A run directory holding other arguments is a failure
    (never rerun or reused): delete it or choose another output directory.
    """
    failures = []
    for index, job in enumerate(jobs, 1):
        name = f"[{index}/{len(jobs)}] {job.record['label']}, seed {job.record['seed']}"
        saved = _saved_args(job.run_dir)
        if saved is not None and _comparable(saved) != _comparable(job.args):
            differ = sorted(set(saved) ^ set(job.args))
            failures.append(f"{job.run_dir} holds a run with other arguments ({', '.join(differ[:4])}); "
                            "delete it or use another --output_dir.")
            log(f"{name}: CONFLICT, {failures[-1]}")
            continue
        if os.path.exists(job.results_path):
            log(f"{name}: finished already, skipped ({job.run_dir})")
            continue
        os.makedirs(job.run_dir, exist_ok=True)
        with open(os.path.join(job.run_dir, aggregate.RUN_FILE), "w", encoding="utf-8") as f:
            json.dump({**job.record, "args": list(job.args)}, f, indent=2)
        log(f"{name}: running → {job.run_dir}")
        start = time.time()
        code = launcher(job)
        if code == 0 and os.path.exists(job.results_path):
            summary = ""
            if job.results_path.endswith(".json"):
                with open(job.results_path, encoding="utf-8") as f:
                    summary = f", {aggregate.METRIC} = {json.load(f).get(aggregate.METRIC)}"
            log(f"{name}: done in {time.time() - start:.0f} s{summary}")
        else:
            failures.append(f"{job.run_dir} failed (exit code {code}); see its train.log")
            log(f"{name}: FAILED (exit code {code}) after {time.time() - start:.0f} s:\n{_log_tail(job.run_dir)}")
    return failures


def study_jobs(specs, seeds, output_dir, train_args, source_spec=None, transfer_methods=(), auto_source_path=None):
    """The train.main jobs of specs × seeds (seed-major: all methods of seed 0 first).

    `source_spec`: the `--source` of the transferring runs where the runner
    pretrained an auto source (its path in place of `auto`). A row with its
    own source (`@source=...`) keeps it, with `auto_source_path` in place of
    its `auto` entry.
    """
    from keras_l2t.sources import with_auto_source  # pylint: disable=import-outside-toplevel

    jobs = []
    for seed in seeds:
        for spec in specs:
            run_dir = os.path.join(output_dir, "runs", spec.dirname, f"seed{seed}")
            model_dir = os.path.join(run_dir, MODEL_SUBDIR)
            spec_args = spec.train_args()
            if spec.source is not None and auto_source_path is not None:
                own = f"--source={spec.source}"
                spec_args = [f"--source={with_auto_source(spec.source, auto_source_path)}" if a == own else a
                             for a in spec_args]
            args = [*train_args, *spec_args, f"--seed={seed}", "--repeats=1", f"--model_dir={model_dir}"]
            if source_spec is not None and spec.method in transfer_methods and spec.source is None:
                args.append(f"--source={source_spec}")
            record = {"spec": spec.spec, "label": spec.label, "seed": seed, "model_dir": MODEL_SUBDIR}
            jobs.append(Job(run_dir, "train.main", tuple(args), record, os.path.join(model_dir, "results.json")))
    return jobs


def pretrain_source_args(config):
    """`train.pretrain_source` arguments that train the source an `ExperimentConfig` describes."""
    args = [
        f"--dataset={config.dataset}", f"--model_dir={config.model_dir}", f"--arch={config.target}",
        f"--width={config.width}", f"--epochs={config.epochs}", f"--batch_size={config.batch_size}",
        f"--lr={config.lr}", f"--momentum={config.momentum}", f"--weight_decay={config.weight_decay}",
        f"--seed={config.seed}", f"--classes={','.join(str(c) for c in config.classes)}",
    ]
    if config.data_dir:
        args.append(f"--data_dir={config.data_dir}")
    if config.image_size:
        args.append(f"--image_size={config.image_size}")
    if config.steps_per_epoch:
        args.append(f"--steps_per_epoch={config.steps_per_epoch}")
    if config.train_examples_per_class:
        args.append(f"--train_examples_per_class={config.train_examples_per_class}")
    if getattr(config, "deterministic", False):
        args.append("--deterministic")
    verbose_given = "verbose" in FLAGS and FLAGS["verbose"].present
    args.append(f"--verbose={config.verbose}" if verbose_given else RUN_VERBOSE_DEFAULT)  # a log file: a line per epoch
    return args


def _settings(config_path, train_args, seeds, source_job, source_path):
    lines = [f"config: `{config_path}`", f"seeds: {', '.join(str(s) for s in seeds)}"]
    lines.append(f"train.main flags (each run adds its method, pairs, seed and model_dir): "
                 f"`{shlex.join(_comparable(train_args))}`")
    if source_job is not None:
        lines.append(f"source: `{source_path}`, pretrained once by `python -m train.pretrain_source "
                     f"{shlex.join(source_job.args)}`")
        source_results = os.path.join(source_job.run_dir, MODEL_SUBDIR, aggregate.RESULTS_FILE)
        if os.path.exists(source_results):
            with open(source_results, encoding="utf-8") as f:
                source = json.load(f)
            lines.append(f"source accuracy on its own classes: test {100 * source[aggregate.METRIC]:.2f} %, "
                         f"best val {100 * source['best_val_accuracy']:.2f} % (epoch {source['best_epoch']})")
    lines.append(f"command: `python -m train.reproduce {shlex.join(sys.argv[1:])}`")
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # pylint: disable=import-outside-toplevel
    from keras_l2t.experiment import DEFAULT_PAIRS, METHODS, TRANSFER_METHODS
    from train.flags import plan_from_flags, with_auto_source

    given = [name for name in PER_RUN_FLAGS if FLAGS[name].present]
    if given:
        raise app.UsageError(f"--{', --'.join(given)}: the runner sets these per run; use --methods, --seeds "
                             "and --output_dir.")
    try:
        spec_flags = TRAIN_MAIN_FLAGS - set(PER_RUN_FLAGS + RUNNER_FLAGS + ("pairs",))
        specs = [parse_method_spec(s, METHODS, tuple(DEFAULT_PAIRS), spec_flags) for s in FLAGS.methods]
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    config_stem = os.path.splitext(os.path.basename(FLAGS.config))[0]
    output_dir = FLAGS.output_dir or os.path.join("runs", "reproduce", config_stem)
    train_args = [FLAGS[name].serialize() for name in sorted(TRAIN_MAIN_FLAGS - set(PER_RUN_FLAGS + RUNNER_FLAGS))
                  if FLAGS[name].present]
    if not FLAGS["verbose"].present:
        train_args.append(RUN_VERBOSE_DEFAULT)

    FLAGS.method = [s.method for s in specs]  # what plan_from_flags checks and plans the source for
    FLAGS.model_dir = output_dir
    try:
        _, _, source_config = plan_from_flags(FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    source_job = source_path = source_spec = None
    if source_config is not None:  # --source=auto: pretrain once, share between runs and seeds
        source_dir = FLAGS.source_dir or os.path.join(output_dir, "source")
        source_config = dataclasses.replace(source_config, model_dir=os.path.join(source_dir, MODEL_SUBDIR))
        source_path = os.path.join(source_config.model_dir, "source.keras")
        source_spec = with_auto_source(FLAGS.source, source_path)
        source_record = {"spec": "source", "label": "source pretraining", "seed": source_config.seed,
                         "model_dir": MODEL_SUBDIR}
        source_job = Job(source_dir, "train.pretrain_source", tuple(pretrain_source_args(source_config)),
                         source_record, source_path)
        train_args = [a for a in train_args if a.split("=", 1)[0].lstrip("-") not in AUTO_SOURCE_FLAGS]
    jobs = study_jobs(specs, seeds, output_dir, train_args, source_spec, TRANSFER_METHODS, source_path)

    if FLAGS.print_config:
        resolved = {"output_dir": output_dir, "config": FLAGS.config, "train_main_args": train_args,
                    "methods": [s.spec for s in specs], "seeds": seeds}
        if source_config is not None:
            resolved["source_pretraining"] = dataclasses.asdict(source_config)
        print(json.dumps(resolved, indent=2))
        return
    if FLAGS.dry_run:
        for job in ([source_job] if source_job else []) + jobs:
            print(shlex.join(job.command()))
        return
    failures = []
    if not FLAGS.aggregate_only:
        if source_job is not None:
            failures = run_jobs([source_job])
        if failures:
            print("The source could not be pretrained; no run started.")
        else:
            failures = run_jobs(jobs)
    results_dir = FLAGS.results_dir or output_dir
    os.makedirs(results_dir, exist_ok=True)
    title = f"{config_stem}" + (f", {FLAGS.train_examples_per_class} images per class"
                                if FLAGS.train_examples_per_class else "")
    rows = aggregate.aggregate(
        output_dir, results_dir=results_dir, title=title,
        order=[s.spec for s in specs] + [d for d in DEFAULT_METHODS if d not in {s.spec for s in specs}],
        settings=_settings(FLAGS.config, train_args, seeds, source_job, source_path),
    )
    print("\n" + aggregate.markdown_table(rows))
    print(f"\nWrote results.csv, results.md, results.png and cost.png to {results_dir}.")
    if failures:
        print(f"{len(failures)} run(s) failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)


def config_path(config):
    """The flagfile of `--config`: an existing path, else a config shipped in train/configs/ (name or file name)."""
    if os.path.isfile(config):
        return config
    name = os.path.basename(config)
    shipped = os.path.join(CONFIGS_DIR, name if name.endswith(".cfg") else f"{name}.cfg")
    return shipped if os.path.isfile(shipped) else config


def _with_config_first(argv):
    """argv with `--flagfile=CONFIG` first, so that the flags after it override the config."""
    config = DEFAULT_CONFIG
    if any(arg in ("--help", "-?", "--helpshort", "--helpfull", "--helpxml") for arg in argv[1:]):
        return argv  # help needs no config (and must not fail on one)
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
    return [argv[0], f"--flagfile={config_path(config)}", *argv[1:]]


def define_flags():
    """Defines train.main's flags and the study's; returns the names `--help` lists."""
    from train import flags as train_flags  # pylint: disable=import-outside-toplevel

    global TRAIN_MAIN_FLAGS  # pylint: disable=global-statement
    TRAIN_MAIN_FLAGS = frozenset(train_flags.define_flags())
    flags.DEFINE_string(
        "config", DEFAULT_CONFIG,
        "train.main flagfile of the study, read before the other flags: a path, or the name of a config shipped "
        f"in train/configs/ ({', '.join(sorted(n[:-4] for n in os.listdir(CONFIGS_DIR) if n.endswith('.cfg')))}).",
    )
    flags.DEFINE_list(
        "methods", list(DEFAULT_METHODS),
        "Method specs method[:pairs][@flag=value...] (pairs m-n joined by +; @flag=value: a train.main flag for "
        "that row, e.g. l2t_ww:all@meta_lr=1e-2).",
    )
    flags.DEFINE_list("seeds", ["0", "1"], "Seeds; each method runs once per seed.")
    flags.DEFINE_string("output_dir", None, "Study directory (default: runs/reproduce/<config name>).")
    flags.DEFINE_string("source_dir", None, "Where an auto source is pretrained (default: <output_dir>/source); "
                        "studies with the same source settings can share it.")
    flags.DEFINE_string("results_dir", None, "Where results.csv/.md/.png go (default: output_dir).")
    flags.DEFINE_bool("dry_run", False, "Print the commands and exit.")
    flags.DEFINE_bool("aggregate_only", False, "Only rebuild the table and chart from the finished runs.")
    return sorted((TRAIN_MAIN_FLAGS - set(PER_RUN_FLAGS)) | set(STUDY_FLAGS))


def console_main():
    """`l2t-reproduce` (and `python -m train.reproduce`): defines the flags, then runs `main` under absl."""
    from train import startup  # pylint: disable=import-outside-toplevel

    startup.start_tensorflow()
    # pylint: disable=import-outside-toplevel
    from train import cli_help
    from train import flags as train_flags
    from train import presets

    names = define_flags()
    doc = __doc__ + (
        "\nEvery train.main flag below is passed to each run (--method, --seed and --model_dir are set per run);"
        " --print_config prints the study's resolved settings."
    )
    groups = (("Study", STUDY_FLAGS), *train_flags.HELP_GROUPS)
    cli_help.install(doc, names, groups, presets.preset_names())
    app.run(main, argv=_with_config_first(sys.argv))


if __name__ == "__main__":
    console_main()

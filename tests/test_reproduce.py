"""`train.reproduce` (the study runner), `train.aggregate` (its table and chart) and `train/configs/`."""

import csv
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from absl import flags

from train import aggregate
from train import reproduce

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = reproduce.CONFIGS_DIR


def _write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f)


def _fake_run(runs_dir, spec, label, seed, accuracy=None, best_val=0.5, wall=10.0, transfer=None):
    run_dir = os.path.join(runs_dir, spec.replace(":", "-"), f"seed{seed}")
    _write_json(os.path.join(run_dir, "run.json"),
                {"spec": spec, "label": label, "seed": seed, "model_dir": "model", "args": []})
    if accuracy is not None:
        _write_json(os.path.join(run_dir, "model", "results.json"), {
            "method": spec.split(":")[0], "pairs": None, "test_accuracy_at_best_val": accuracy,
            "best_val_accuracy": best_val, "best_epoch": 3, "final_test_accuracy": accuracy,
            "epochs_completed": 5, "num_train": 50, "wall_seconds": wall, "transfer": transfer,
        })


def test_method_specs_labels_and_directories():
    methods, with_pairs = ("scratch", "lwf", "fm", "l2t_ww"), ("fm", "l2t_ww")
    parse = lambda text: reproduce.parse_method_spec(text, methods, with_pairs)  # noqa: E731
    assert (parse("scratch").label, parse("scratch").train_args()) == ("Scratch", ["--method=scratch"])
    spec = parse("fm:single")
    assert (spec.label, spec.dirname, spec.spec) == ("FM (single)", "fm-single", "fm:single")
    assert spec.train_args() == ["--method=fm", "--pairs=single"]
    assert parse("l2t_ww:all").label == "L2T-ww (all-to-all)"
    explicit = parse("fm:14-4+9-3")
    assert (explicit.pairs, explicit.dirname, explicit.spec) == ("14-4,9-3", "fm-14-4_9-3", "fm:14-4+9-3")
    with pytest.raises(ValueError, match="Unknown method"):
        parse("fmm:single")
    with pytest.raises(ValueError, match="takes no pairs"):
        parse("lwf:single")
    swept = reproduce.parse_method_spec("l2t_ww:all@meta_lr=1e-2@beta=1", methods, with_pairs, {"meta_lr", "beta"})
    assert (swept.spec, swept.label, swept.dirname) == (
        "l2t_ww:all@meta_lr=1e-2@beta=1", "L2T-ww (all-to-all, meta_lr=1e-2, beta=1)", "l2t_ww-all-meta_lr1e-2-beta1")
    assert swept.train_args() == ["--method=l2t_ww", "--pairs=all", "--meta_lr=1e-2", "--beta=1"]
    assert parse("scratch@epochs=3").train_args() == ["--method=scratch", "--epochs=3"]
    with pytest.raises(ValueError, match="not a train.main flag"):
        reproduce.parse_method_spec("l2t_ww@seed=3", methods, with_pairs, {"meta_lr"})
    with pytest.raises(ValueError, match="Expected @flag=value"):
        parse("l2t_ww@meta_lr")


def test_a_row_with_its_own_sources_gets_them_with_the_pretrained_auto_source():
    methods, with_pairs = ("scratch", "fm", "l2t_ww"), ("fm", "l2t_ww")
    specs = [reproduce.parse_method_spec(text, methods, with_pairs) for text in (
        "scratch", "l2t_ww:all", "l2t_ww:all@source=auto+random:resnet32:0.5", "fm:all@source=tinyimagenet_resnet32")]
    row = specs[2]
    assert row.source == "auto,random:resnet32:0.5" and row.spec == "l2t_ww:all@source=auto+random:resnet32:0.5"
    assert (row.label, row.dirname) == (
        "L2T-ww (all-to-all, source=auto,random:resnet32:0.5)", "l2t_ww-all-sourceauto+random_resnet32_0.5")
    jobs = reproduce.study_jobs(specs, [0], "out", ["--epochs=3"], source_spec="src.keras",
                                transfer_methods=("fm", "l2t_ww"), auto_source_path="src.keras")
    sources = [[a for a in job.args if a.startswith("--source")] for job in jobs]
    assert sources == [[], ["--source=src.keras"], ["--source=src.keras,random:resnet32:0.5"],
                       ["--source=tinyimagenet_resnet32"]]


def test_aggregation_mean_std_table_csv_and_chart(tmp_path):
    runs = str(tmp_path / "runs")
    for seed, accuracy in enumerate([0.5, 0.6, 0.7]):
        _fake_run(runs, "fm:single", "FM (single)", seed, accuracy, best_val=0.4 + 0.1 * seed, wall=10 * (seed + 1))
    _fake_run(runs, "scratch", "Scratch", 0, 0.8125, wall=90.0)
    _fake_run(runs, "scratch", "Scratch", 1)  # unfinished
    for seed, (entropy, change) in enumerate([(0.75, 0.5), (0.85, 1.25)]):
        transfer = {"channel_weight_entropy": [entropy, entropy - 0.5], "lambda": [0.25, 2.0 + seed],
                    "lambda_change_max": change}
        _fake_run(runs, "l2t_ww:all", "L2T-ww (all-to-all)", seed, 0.9, transfer=transfer)
    rows = aggregate.aggregate(str(tmp_path), order=["scratch", "fm:single"], title="t", settings=["seeds: 0, 1, 2"])

    assert [r["label"] for r in rows] == ["Scratch", "FM (single)", "L2T-ww (all-to-all)"]
    scratch, fm, l2t_ww = rows
    assert l2t_ww["w_entropy_mean"] == pytest.approx(0.55) and l2t_ww["lambda_range"] == (0.25, 3.0)
    assert l2t_ww["lambda_change_max"] == 1.25 and fm["w_entropy_mean"] is None
    assert (scratch["n"], scratch["mean"], scratch["std"]) == (1, 0.8125, 0.0)
    assert fm["n"] == 3 and fm["seeds"] == [0, 1, 2]
    assert fm["mean"] == pytest.approx(0.6) and fm["std"] == pytest.approx(0.1)  # sample std, ddof 1
    assert fm["best_val_mean"] == pytest.approx(0.5) and fm["wall_seconds_mean"] == pytest.approx(20.0)
    assert fm["wall_seconds_median"] == 20.0 and scratch["wall_seconds_median"] == 90.0
    assert aggregate.mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, 1.2909944487358056))

    with open(tmp_path / "results.csv", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert sorted((r["spec"], r["seed"]) for r in table) == [("fm:single", "0"), ("fm:single", "1"),
                                                             ("fm:single", "2"), ("l2t_ww:all", "0"),
                                                             ("l2t_ww:all", "1"), ("scratch", "0")]
    assert [r["w_entropy"] for r in table if r["spec"] == "l2t_ww:all"] == ["0.5", "0.6"]
    markdown = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "| FM (single) | 60.00 ± 10.00 | 3 | 50.00 | — | — | — | 20 |" in markdown
    assert "| Scratch | 81.25 | 1 | 50.00 | — | — | — | 90 |" in markdown
    assert "| L2T-ww (all-to-all) | 90.00 ± 0.00 | 2 | 50.00 | 0.5500 | 0.25–3.00 | 1.250 | 10 |" in markdown
    assert markdown.index("| Scratch |") < markdown.index("| FM (single) |")
    assert "- seeds: 0, 1, 2" in markdown
    assert "Unfinished runs" in markdown and "Scratch, seed 1" in markdown
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_studies_combine_into_one_table_with_the_mean_lambda_of_each_source(tmp_path):
    one, two = str(tmp_path / "a"), str(tmp_path / "a_c")
    _fake_run(os.path.join(one, "runs"), "scratch", "Scratch", 0, 0.5)
    _fake_run(os.path.join(one, "runs"), "l2t_ww:all", "L2T-ww (all-to-all)", 0, 0.7)
    _fake_run(os.path.join(two, "runs"), "scratch", "Scratch", 0, 0.5)
    for seed, (useful, useless) in enumerate([(1.0, 0.5), (1.5, 0.25)]):
        transfer = {"lambda": [useful, useless], "lambda_per_source": {"trained": useful, "random": useless}}
        _fake_run(os.path.join(two, "runs"), "l2t_ww:all", "L2T-ww (all-to-all)", seed, 0.8, transfer=transfer)
    finished, _ = aggregate.find_study_runs([("(a)", one), ("(a+c)", two)])
    rows = aggregate.write_results(finished, [], str(tmp_path), title="combined")
    assert [r["label"] for r in rows] == [
        "L2T-ww (all-to-all), (a)", "Scratch", "L2T-ww (all-to-all), (a+c)", "Scratch, (a+c)"]
    per_source = rows[2]["lambda_per_source"]
    assert per_source["trained"] == pytest.approx((1.25, 0.3535533905932738))
    assert per_source["random"][0] == pytest.approx(0.375) and rows[0]["lambda_per_source"] is None
    table = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "| mean λ per source (± std over seeds) |" in table and "trained 1.250 ± 0.354; random 0.375" in table
    with open(tmp_path / "results.csv", encoding="utf-8") as f:
        csv_rows = {(r["spec"], r["seed"]): r for r in csv.DictReader(f)}
    assert json.loads(csv_rows[("l2t_ww:all, (a+c)", "1")]["lambda_per_source"]) == {"trained": 1.5, "random": 0.25}
    assert csv_rows[("scratch", "0")]["lambda_per_source"] == ""


def test_cost_chart_places_each_method_at_its_median_wall_time(tmp_path, monkeypatch):
    from matplotlib import axes  # pylint: disable=import-outside-toplevel

    runs = str(tmp_path / "runs")
    for seed, (accuracy, wall) in enumerate([(0.8, 60.0), (0.9, 600.0), (0.85, 120.0)]):  # seed 1 ran slowed
        _fake_run(runs, "l2t_ww:all", "L2T-ww", seed, accuracy, wall=wall)
    _fake_run(runs, "fm:all", "FM", 0, 0.7, wall=30.0)
    drawn, original = {}, axes.Axes.errorbar

    def record(self, x, y, *args, **kwargs):
        if kwargs.get("fmt") == "o":  # the cost chart's points (results.png's bars call errorbar too)
            drawn[round(x, 6)] = (round(y, 6), round(kwargs["yerr"], 6))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(axes.Axes, "errorbar", record)
    aggregate.aggregate(str(tmp_path), title="cost")
    assert drawn == {2.0: (85.0, 5.0), 0.5: (70.0, 0.0)}  # minutes: the median 120 s, not the mean 260 s
    assert (tmp_path / "cost.png").exists()
    shutil.rmtree(runs)
    aggregate.aggregate(str(tmp_path), title="empty")
    assert not (tmp_path / "cost.png").exists() and not (tmp_path / "results.png").exists()


def test_runner_skips_finished_runs_and_refuses_runs_with_other_arguments(tmp_path):
    specs = [reproduce.MethodSpec("scratch"), reproduce.MethodSpec("fm", "single")]
    out = str(tmp_path)
    jobs = reproduce.study_jobs(specs, [0, 1], out, ["--epochs=3"], source_spec="src.keras",
                                transfer_methods=("fm",))
    assert [(j.record["spec"], j.record["seed"]) for j in jobs] == [
        ("scratch", 0), ("fm:single", 0), ("scratch", 1), ("fm:single", 1)]
    assert "--source=src.keras" in jobs[1].args and not any(a.startswith("--source") for a in jobs[0].args)
    # scratch, seed 0 finished in an earlier invocation:
    _write_json(os.path.join(jobs[0].run_dir, "run.json"), {**jobs[0].record, "args": list(jobs[0].args)})
    _write_json(jobs[0].results_path, {"test_accuracy_at_best_val": 0.5})
    launched = []

    def launcher(job):
        launched.append((job.record["spec"], job.record["seed"]))
        if job.record["spec"] == "scratch":  # a crash: reported, the others still run
            return 1
        _write_json(job.results_path, {"test_accuracy_at_best_val": 0.7})
        return 0

    failures = reproduce.run_jobs(jobs, launcher=launcher, log=lambda *_: None)
    assert launched == [("fm:single", 0), ("scratch", 1), ("fm:single", 1)]
    assert len(failures) == 1 and "seed1" in failures[0]
    with open(os.path.join(jobs[1].run_dir, "run.json"), encoding="utf-8") as f:
        assert json.load(f)["args"] == list(jobs[1].args)

    launched.clear()  # the same study again: only the crashed run is retried
    assert len(reproduce.run_jobs(jobs, launcher=launcher, log=lambda *_: None)) == 1
    assert launched == [("scratch", 1)]

    launched.clear()  # other arguments in the same output_dir: refused, nothing reruns
    other = reproduce.study_jobs(specs, [0, 1], out, ["--epochs=4"], source_spec="src.keras",
                                 transfer_methods=("fm",))
    failures = reproduce.run_jobs(other, launcher=launcher, log=lambda *_: None)
    assert launched == [] and len(failures) == 4 and all("other arguments" in f for f in failures)


def _parse_config(path, *extra):
    from train import flags as train_flags  # pylint: disable=import-outside-toplevel

    if "lwf_temperature" not in flags.FLAGS:
        train_flags.define_flags()
    try:
        flags.FLAGS(["main", f"--flagfile={path}", *extra])
        present = {name for name in flags.FLAGS if flags.FLAGS[name].present}
        return present, train_flags.plan_from_flags(flags.FLAGS)
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("name,dataset,target,image_size,batch_size,epochs,meta_lr,source", [
    ("cifar100", "cifar100", "vgg9_bn", 32, 128, 200, 1e-4, "tinyimagenet_resnet32"),
    ("stl10", "stl10", "vgg9_bn", 32, 128, 200, 1e-4, "tinyimagenet_resnet32"),
    ("stanford_dogs", "stanford_dogs", "resnet18", 224, 64, 200, 1e-4, "resnet34_imagenet"),
    ("caltech_birds2011", "caltech_birds2011", "resnet18", 224, 64, 200, 1e-4, "resnet34_imagenet"),
    ("mit67", "folder:data/mit67", "resnet18", 224, 64, 200, 1e-4, "resnet34_imagenet"),
    ("stanford40", "folder:data/stanford40", "resnet18", 224, 64, 200, 1e-3, "resnet34_imagenet"),
])
def test_official_configs_carry_the_official_settings(name, dataset, target, image_size, batch_size, epochs,
                                                       meta_lr, source):
    present, (methods, base, source_config) = _parse_config(os.path.join(CONFIGS, f"{name}.cfg"))
    assert not present & {"method", "seed", "model_dir", "pairs"}  # the runner's, per run
    assert methods == ["l2t_ww"] and source_config is None and base.source == source
    assert (base.dataset, base.target, base.width, base.image_size) == (dataset, target, 1.0, image_size)
    assert (base.batch_size, base.epochs, base.lr, base.momentum, base.weight_decay) == (
        batch_size, epochs, 0.1, 0.9, 1e-4)
    assert (base.beta, base.inner_steps, base.meta_lr, base.meta_weight_decay) == (0.5, 2, meta_lr, 1e-4)
    assert dataclasses.replace(base, method="l2t_ww").pairs == "all"
    assert base.train_examples_per_class is None and base.classes is None


def test_fashion_mnist_cpu_config_transfers_from_disjoint_classes():
    present, (_, base, source_config) = _parse_config(
        os.path.join(CONFIGS, "fashion_mnist_cpu.cfg"), "--method=scratch,l2t_ww", "--train_examples_per_class=10")
    assert not present & {"seed", "model_dir", "pairs"}
    assert (base.dataset, base.target, base.source, base.train_examples_per_class) == (
        "fashion_mnist", "vgg9_bn", "auto", 10)
    assert base.classes == (5, 6, 7, 8, 9) and source_config.classes == (0, 1, 2, 3, 4)
    assert (source_config.target, source_config.train_examples_per_class) == ("resnet32", None)
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIGS, "*.cfg"))) == sorted(
        ["cifar100.cfg", "stl10.cfg", "stanford_dogs.cfg", "caltech_birds2011.cfg", "mit67.cfg",
         "stanford40.cfg", "fashion_mnist_cpu.cfg"])


TINY_CONFIG = """# A smoke-sized digits study.
--dataset=digits
--classes=5,6,7,8,9
--train_examples_per_class=10
--target=vgg9_bn
--width=0.125
--batch_size=25
--source=auto
--source_arch=resnet32
--source_width=0.125
--source_classes=0,1,2,3,4
--source_batch_size=32
--source_epochs=2
--epochs=3
"""


def test_a_tiny_study_writes_the_table_and_chart_and_resumes(tmp_path):
    config = tmp_path / "tiny.cfg"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    out = str(tmp_path / "study")
    command = [sys.executable, "-m", "train.reproduce", f"--config={config}", "--methods=scratch,fm:single",
               "--seeds=0,1", f"--output_dir={out}", "--epochs=2", "--steps_per_epoch=1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    with open(os.path.join(out, "results.csv"), encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert sorted((r["label"], r["seed"]) for r in table) == [
        ("FM (single)", "0"), ("FM (single)", "1"), ("Scratch", "0"), ("Scratch", "1")]
    assert all(0.0 <= float(r["test_accuracy_at_best_val"]) <= 1.0 for r in table)
    assert {r["epochs_completed"] for r in table} == {"2"}  # the command line overrides the config
    markdown = open(os.path.join(out, "results.md"), encoding="utf-8").read()
    assert "| Scratch | " in markdown and "| FM (single) | " in markdown and "Unfinished" not in markdown
    assert open(os.path.join(out, "results.png"), "rb").read(4) == b"\x89PNG"

    # One source, pretrained once, as train.main --source=auto would have (2 epochs on classes 0-4).
    source = os.path.join(out, "source", "model", "source.keras")
    with open(os.path.join(out, "source", "model", "flags.json"), encoding="utf-8") as f:
        source_flags = json.load(f)
    assert (source_flags["target"], source_flags["width"], source_flags["classes"]) == ("resnet32", 0.125,
                                                                                        [0, 1, 2, 3, 4])
    assert (source_flags["epochs"], source_flags["batch_size"], source_flags["train_examples_per_class"]) == (
        2, 32, None)
    for seed in (0, 1):
        with open(os.path.join(out, "runs", "fm-single", f"seed{seed}", "model", "flags.json"),
                  encoding="utf-8") as f:
            run_flags = json.load(f)
        assert (run_flags["source"], run_flags["pairs"], run_flags["seed"]) == (source, "single", seed)

    results = glob.glob(os.path.join(out, "runs", "*", "seed*", "model", "results.json"))
    stamps = {p: os.path.getmtime(p) for p in results}
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("finished already, skipped") == 5 and "running" not in again.stdout
    assert {p: os.path.getmtime(p) for p in results} == stamps

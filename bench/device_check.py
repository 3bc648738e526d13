"""One check for a machine with a GPU: its device paths tested, both workloads timed, a short real run.

    python -m bench.device_check                 # on a GPU machine (meant for <= 8 minutes; not yet run on one)
    python -m bench.device_check --tiny          # the same paths at toy sizes, on a CPU (CI; 5 min on 2 idle cores)

Three parts, each in its own process, so one failing does not hide the others:

1. `tests`: the tests of the paths that differ on a device: mixed_float16 loss
   scaling through the meta step, determinism, XLA compilation of the meta
   step, and MirroredStrategy (`DEVICE_TESTS`; `--tiny`: `TINY_DEVICE_TESTS`).
2. `workloads`: `bench.meta_step` on both workloads (32 and 224) in float32,
   mixed_bfloat16 and mixed_float16, each without and with XLA: per-step time
   of a plain and an exact L2T-ww step, and the allocator's peak tensor memory
   on the device (`tf.config.experimental.get_memory_info`). `--tiny` shrinks
   the networks, images and batch, and times `TINY_WORKLOADS` only.
3. `train_main`: a few real steps of `python -m train.main` at the 224 setting
   (keras-hub's ResNet-34 graph at random weights, saved as a local preset ->
   ResNet-18, L2T-ww over all pairs) on generated images in class folders,
   under `--strategy=mirrored` over the visible GPUs, with mixed_float16 on a
   GPU (float32 on a CPU, where 16-bit kernels are slow or missing).

Writes `--output` (JSON: every figure, each part's status and output tail) and
prints a short table. Exits non-zero when any part failed.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_TESTS = (
    "tests/test_mixed_precision.py::test_loss_scaling_is_divided_out_of_the_real_step",
    "tests/test_mixed_precision.py::test_a_loss_scaled_meta_optimizer_gives_the_same_meta_update",
    "tests/test_mixed_precision.py::test_mixed_meta_gradient_is_close_to_float32",
    "tests/test_mixed_precision.py::test_jit_compile_gives_the_same_update",
    "tests/test_determinism.py",
    "tests/test_distribute.py::test_two_replicas_equal_one_device",
    "tests/test_distribute.py::test_two_replicas_mixed_float16_close_to_one_device",
)
TINY_DEVICE_TESTS = (
    "tests/test_mixed_precision.py::test_loss_scaling_is_divided_out_of_the_real_step",
    "tests/test_determinism.py::test_tape_sums_gradients_in_a_fixed_order_only_when_enabled",
)
# --tiny: both workloads and a 16-bit policy. Each costs a trace of the meta step (60-100 s on 2 busy cores);
# XLA is left to the full run, where it compiles in seconds on a GPU and takes minutes on a CPU.
TINY_WORKLOADS = (("32", "float32", False), ("32", "mixed_float16", False), ("224", "float32", False))
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

FLAGS = flags.FLAGS
flags.DEFINE_boolean("tiny", False, "Toy sizes, for a CPU (CI): the same paths, fewer configurations.")
flags.DEFINE_string("output", "device_check.json", "Where the JSON goes.")
flags.DEFINE_list("parts", ["tests", "workloads", "train_main"], "Parts to run.")
flags.DEFINE_integer("batch_size", 64, "Batch of the workloads (not with --tiny).")
flags.DEFINE_integer("train_main_steps", 4, "Steps of the train.main run.")


def _run(command, timeout):
    """(exit code, seconds, output tail) of a subprocess in the repository root."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as error:
        code, output = "timeout", f"{error.stdout or ''}{error.stderr or ''}"
        output = output if isinstance(output, str) else output.decode(errors="replace")
    return code, round(time.perf_counter() - start, 1), output[-3000:]


def run_tests():
    tests = TINY_DEVICE_TESTS if FLAGS.tiny else DEVICE_TESTS
    code, seconds, output = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], 600)
    summary = [line for line in output.splitlines() if " passed" in line or " failed" in line or " error" in line]
    return {"ok": code == 0, "exit": code, "seconds": seconds, "tests": list(tests),
            "summary": summary[-1] if summary else None, "output_tail": output}


def _workload_configs():
    """(workload, precision, xla, bench.meta_step flags) of every configuration timed."""
    if FLAGS.tiny:
        sizes = {"32": ["--source_width=0.125", "--target_width=0.125", "--batch_size=4"],
                 "224": ["--image_size=32", "--target_width=0.125", "--batch_size=2"]}
        repeats = ["--repeats=1", "--warmup=1"]
    else:
        sizes = {w: [f"--batch_size={FLAGS.batch_size}"] for w in ("32", "224")}
        repeats = ["--repeats=3", "--warmup=1"]
    configs = TINY_WORKLOADS if FLAGS.tiny else [
        (workload, precision, xla) for workload in ("32", "224") for precision in PRECISIONS for xla in (False, True)
    ]
    for workload, precision, xla in configs:
        flag_list = [f"--workload={workload}", "--modes=plain,meta", *sizes[workload], *repeats,
                     "--jit_compile" if xla else "--nojit_compile"]
        if precision != "float32":
            flag_list.append(f"--mixed_precision={precision}")
        yield workload, precision, xla, flag_list


def run_workloads():
    rows, ok = [], True
    for workload, precision, xla, flag_list in _workload_configs():
        code, seconds, output = _run([sys.executable, "-m", "bench.meta_step", "--json_only", "--details", *flag_list],
                                     600)
        lines = [line for line in output.splitlines() if line.startswith("{")]
        row = {"workload": workload, "precision": precision, "xla": xla, "ok": code == 0 and bool(lines),
               "seconds": seconds, "flags": flag_list}
        if row["ok"]:
            result = json.loads(lines[-1])
            by_mode = result["by_mode"]
            row.update(plain_ms=result["plain_ms"], meta_ms=result["meta_ms"], ratio=result["ratio"],
                       plain_tensor_peak_mib=by_mode["plain"]["tensor_peak_mib"],
                       meta_tensor_peak_mib=result["tensor_peak_mib"], net_peak_rss_mib=result["net_peak_rss_mib"])
        else:
            row["output_tail"] = output
        ok = ok and row["ok"]
        rows.append(row)
    return {"ok": ok, "rows": rows}


def _generated_folders(root, classes, train_per_class, test_per_class, side):
    """Random RGB PNGs in root/{train,test}/<class>/: a dataset for a smoke run, never for a result."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            directory = os.path.join(root, split, f"class{c}")
            os.makedirs(directory, exist_ok=True)
            for i in range(count):
                image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                tf.io.write_file(os.path.join(directory, f"{i}.png"), tf.io.encode_png(image))


def _random_resnet34_preset(directory):
    """keras-hub's ResNet-34 graph (bench.workload) at random weights, saved as a local preset."""
    import keras_hub  # pylint: disable=import-outside-toplevel

    from bench import workload  # pylint: disable=import-outside-toplevel

    backbone = keras_hub.models.ResNetBackbone(**workload.KERAS_HUB_RESNET34_ARGS)
    keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=1000).save_to_preset(directory)


def run_train_main():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    work = tempfile.mkdtemp(prefix="device_check_")
    image_size, batch = (32, 4) if FLAGS.tiny else (224, 16)
    _generated_folders(os.path.join(work, "images"), classes=3, train_per_class=8 if FLAGS.tiny else 40,
                       test_per_class=2 if FLAGS.tiny else 8, side=image_size + image_size // 7)
    preset = os.path.join(work, "resnet34_preset")
    _random_resnet34_preset(preset)
    gpus = tf.config.list_physical_devices("GPU")
    command = [
        sys.executable, "-m", "train.main", f"--dataset=folder:{os.path.join(work, 'images')}", f"--source={preset}",
        "--target=resnet18", "--method=l2t_ww", "--pairs=all", f"--image_size={image_size}",
        f"--batch_size={batch}", "--epochs=1", f"--steps_per_epoch={FLAGS.train_main_steps}", "--split=seeded",
        f"--model_dir={os.path.join(work, 'run')}", "--strategy=mirrored", "--verbose=2",
    ] + (["--mixed_precision=mixed_float16"] if gpus else [])
    code, seconds, output = _run(command, 600)
    result = {"ok": code == 0, "exit": code, "seconds": seconds, "command": command[2:], "gpus": len(gpus),
              "output_tail": output}
    results_path = os.path.join(work, "run", "results.json")
    if os.path.isfile(results_path):
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
        result["estimated_seconds"] = results.get("estimated_seconds")
        result["wall_seconds"] = results.get("wall_seconds")
    estimate = [line for line in output.splitlines() if line.startswith("Estimated time:")]
    result["estimate_line"] = estimate[0] if estimate else None
    result["ok"] = result["ok"] and os.path.isfile(results_path)
    return result


def _device():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU only ({os.cpu_count()} cores)"
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    return f"{len(gpus)} GPU(s): {', '.join(names)}"


def _print_table(report):
    print(f"\nbench.device_check{' --tiny' if report['tiny'] else ''} on {report['device']}: "
          f"{report['seconds']:.0f} s, {'all passed' if report['ok'] else 'FAILED'}")
    if "tests" in report["parts"]:
        part = report["parts"]["tests"]
        print(f"  tests      {'ok' if part['ok'] else 'FAILED'}  {part['summary']}  ({part['seconds']} s)")
    if "workloads" in report["parts"]:
        print("  workload precision       XLA   plain ms   meta ms  ratio  tensors MiB (plain / meta)")
        for row in report["parts"]["workloads"]["rows"]:
            if row["ok"]:
                print(f"  {row['workload']:>8} {row['precision']:<15} {'yes' if row['xla'] else 'no':<4}"
                      f"{row['plain_ms']:>9.1f} {row['meta_ms']:>9.1f} {row['ratio']:>6.2f}  "
                      f"{row['plain_tensor_peak_mib']} / {row['meta_tensor_peak_mib']}")
            else:
                print(f"  {row['workload']:>8} {row['precision']:<15} {'yes' if row['xla'] else 'no':<4} FAILED")
    if "train_main" in report["parts"]:
        part = report["parts"]["train_main"]
        print(f"  train.main {'ok' if part['ok'] else 'FAILED'}  {part['seconds']} s"
              + (f"; {part['estimate_line']}" if part["estimate_line"] else ""))


def main(argv):
    del argv
    runners = {"tests": run_tests, "workloads": run_workloads, "train_main": run_train_main}
    unknown = sorted(set(FLAGS.parts) - set(runners))
    if unknown:
        raise app.UsageError(f"--parts must be among {list(runners)}; got {unknown}.")
    start = time.perf_counter()
    report = {"tiny": FLAGS.tiny, "device": _device(), "parts": {}}
    for name in FLAGS.parts:
        print(f"[{name}] ...", flush=True)
        report["parts"][name] = runners[name]()
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["ok"] = all(part["ok"] for part in report["parts"].values())
    with open(FLAGS.output, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    _print_table(report)
    print(f"wrote {FLAGS.output}")
    if not report["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)

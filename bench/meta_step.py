"""Cost of one L2T-ww training step against one plain supervised step (time and peak memory).

An `L2TWW.train_step` is a real SGD step plus a second-order meta step through
a T-step look-ahead (method.md §4.1, §4.7–4.8), so it costs several plain steps.
This measures, on random images of a fixed seed, `train_on_batch` (the same
compiled `tf.function` that `fit` runs) for three models built in one setting:

- plain: the target backbone alone, `keras_l2t.optimizers.SGD(0.1, 0.9, 1e-4)`,
  sparse CE from logits and accuracy (what `L2TWW.compile` tracks too);
- meta: `L2TWW(source, target, pairs, inner_steps=T)` with default compile;
- first_order: the same with `first_order=True`.

Tracing is excluded (`--warmup` untimed steps); each step is timed to the host
(`train_on_batch` returns numpy logs, so it waits for the step) and the median
over `--repeats` is reported. Peak memory is `ru_maxrss` (the process peak).

Two designs, chosen by `--isolate_memory`:
- true (default): the parent re-runs this module once per mode in a fresh
  subprocess (`--modes=<mode> --isolate_memory=false --json_only=true`), one after
  the other; each reports its mode's median time and its own peak RSS, so
  `peak_rss_mib_by_mode` is per mode. Modes are then timed in separate processes,
  not alternated: compare `times_ms` if the machine's load may have changed.
- false: all modes in this process, timed alternately (for r in repeats: plain,
  meta, first_order), robust to load drift; peak RSS is the process's peak,
  recorded cumulatively after each mode's warm-up (plain, first_order, meta).

Standard workload (defaults): ResNet-32 source -> VGG-9-BN target, 32x32,
batch 64, T=2, the 15 official pairs, full width, no XLA (slow on CPU, §4.8).
`TF_ENABLE_ONEDNN_OPTS` defaults to 1 (off by default on AMD CPUs, halves the
step time, §4.8) and is recorded. Prints a summary, then one JSON line last:

    python -m bench.meta_step
    python -m bench.meta_step --source_width=0.25 --target_width=0.25 --batch_size=8 --repeats=2 --warmup=1
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

MODES = ("plain", "meta", "first_order")

FLAGS = flags.FLAGS
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
flags.DEFINE_integer("warmup", 2, "Untimed steps per mode (the first one traces).")
flags.DEFINE_integer("repeats", 5, "Timed steps per mode; the median is reported.")
flags.DEFINE_boolean("jit_compile", False, "XLA for all models' train steps.")
flags.DEFINE_list("modes", list(MODES), f"Modes to time, among {MODES}.")
flags.DEFINE_boolean("isolate_memory", True, "Run each mode in its own subprocess (per-mode peak RSS).")
flags.DEFINE_boolean("json_only", False, "Print only the JSON line (used by the subprocesses).")
flags.DEFINE_integer("seed", 0, "Seed for the data and the weights.")

_PASSED_FLAGS = (
    "source", "target", "source_width", "target_width", "image_size", "batch_size", "inner_steps",
    "pairs", "num_classes", "source_classes", "warmup", "repeats", "jit_compile", "seed",
)  # fmt: skip


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _settings():
    return {name: FLAGS[name].value for name in _PASSED_FLAGS}


def _build_models(modes):
    """{mode: compiled model}, plus the resolved pairs."""
    import keras

    import keras_l2t
    from keras_l2t import backbones
    from keras_l2t.pairs import format_pairs

    shape = (FLAGS.image_size, FLAGS.image_size, 3)

    def target():
        return backbones.get_backbone(
            FLAGS.target, num_classes=FLAGS.num_classes, width=FLAGS.target_width, input_shape=shape
        )

    def source():
        return backbones.get_backbone(
            FLAGS.source, num_classes=FLAGS.source_classes, width=FLAGS.source_width, input_shape=shape
        )

    models, pairs = {}, None
    for mode in modes:
        if mode == "plain":
            model = target()
            model.compile(
                optimizer=keras_l2t.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                jit_compile=FLAGS.jit_compile,
            )
        else:
            model = keras_l2t.L2TWW(
                source(),
                target(),
                pairs=FLAGS.pairs,
                inner_steps=FLAGS.inner_steps,
                first_order=(mode == "first_order"),
            )
            model.compile(jit_compile=FLAGS.jit_compile)
            pairs = format_pairs(model.pairs)
        models[mode] = model
    return models, pairs


def _time_step(model, x, y):
    start = time.perf_counter()
    model.train_on_batch(x, y)  # returns numpy logs: waits for the step to finish
    return (time.perf_counter() - start) * 1000.0


def run_in_process(modes):
    """Builds every mode here, warms each up, then times them alternately."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    x = tf.constant(rng.standard_normal((FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3), np.float32))
    y = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), tf.int32)
    models, pairs = _build_models(modes)

    # Warm-up, cheapest first, so the cumulative process peak after each mode is telling.
    warm_order = [m for m in ("plain", "first_order", "meta") if m in modes]
    trace_s, peak_after_warmup = {}, {}
    for mode in warm_order:
        start = time.perf_counter()
        for _ in range(FLAGS.warmup):
            models[mode].train_on_batch(x, y)
        trace_s[mode] = round(time.perf_counter() - start, 2)
        peak_after_warmup[mode] = round(_peak_rss_mib(), 1)

    times = {mode: [] for mode in modes}
    for _ in range(FLAGS.repeats):
        for mode in modes:
            times[mode].append(_time_step(models[mode], x, y))
    peak = round(_peak_rss_mib(), 1)
    return {
        mode: {
            "ms": round(statistics.median(times[mode]), 1),
            "times_ms": [round(t, 1) for t in times[mode]],
            "warmup_s": trace_s[mode],
            # One process: the peak after this mode's warm-up (cumulative); the
            # last one warmed up gets the final process peak.
            "peak_rss_mib": peak if mode == warm_order[-1] else peak_after_warmup[mode],
        }
        for mode in modes
    }, pairs


def run_isolated(modes):
    """Runs each mode in a fresh subprocess of this module; returns the same structure."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results, pairs = {}, None
    for mode in modes:
        command = [sys.executable, "-m", "bench.meta_step", f"--modes={mode}", "--isolate_memory=false", "--json_only"]
        for name in _PASSED_FLAGS:
            value = FLAGS[name].value
            command.append(f"--{name}={str(value).lower() if isinstance(value, bool) else value}")
        if not FLAGS.json_only:
            print(f"[{mode}] running in a subprocess ...", flush=True)
        done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, env=os.environ.copy())
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            sys.stderr.write(done.stdout + done.stderr)
            raise RuntimeError(f"Subprocess for mode {mode!r} failed (exit {done.returncode}).")
        child = json.loads(lines[-1])
        results[mode] = child["by_mode"][mode]
        pairs = pairs or child["settings"].get("pairs_resolved")
    return results, pairs


def main(argv):
    del argv
    modes = [m.strip() for m in FLAGS.modes if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise app.UsageError(f"--modes must be a non-empty subset of {MODES}; got {FLAGS.modes}.")
    if FLAGS.repeats < 1 or FLAGS.warmup < 1:
        raise app.UsageError("--repeats and --warmup must be >= 1 (the first warm-up step traces).")

    wall_start = time.perf_counter()
    isolated = FLAGS.isolate_memory
    by_mode, pairs = (run_isolated if isolated else run_in_process)(modes)
    wall_s = round(time.perf_counter() - wall_start, 1)

    import keras
    import tensorflow as tf

    def ms(mode):
        return by_mode[mode]["ms"] if mode in by_mode else None

    def ratio(mode):
        return round(ms(mode) / ms("plain"), 2) if mode in by_mode and "plain" in by_mode else None

    settings = _settings()
    settings["pairs_resolved"] = pairs
    settings["num_pairs"] = len(pairs.split(",")) if pairs else None
    settings["modes"] = modes
    settings["isolate_memory"] = isolated
    result = {
        "benchmark": "meta_step",
        "plain_ms": ms("plain"),
        "meta_ms": ms("meta"),
        "first_order_ms": ms("first_order"),
        "ratio": ratio("meta"),
        "first_order_ratio": ratio("first_order"),
        "images_per_s": round(FLAGS.batch_size / (ms("meta") / 1000.0), 2) if ms("meta") else None,
        "peak_rss_mib": by_mode["meta"]["peak_rss_mib"] if "meta" in by_mode else None,
        "peak_rss_mib_by_mode": {mode: r["peak_rss_mib"] for mode, r in by_mode.items()},
        "peak_rss_scope": "per-mode subprocess" if isolated else "this process, cumulative after each warm-up",
        "timing": "each mode in its own subprocess" if isolated else "alternating in one process",
        "by_mode": by_mode,
        "wall_s": wall_s,
        "settings": settings,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "cpu_count": os.cpu_count(),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }

    if not FLAGS.json_only:
        print(
            f"\nL2T-ww step cost: {FLAGS.source} (x{FLAGS.source_width}) -> {FLAGS.target} (x{FLAGS.target_width}), "
            f"{FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size}, T={FLAGS.inner_steps}, "
            f"{settings['num_pairs']} pairs, jit_compile={FLAGS.jit_compile}, "
            f"TF_ENABLE_ONEDNN_OPTS={result['tf_enable_onednn_opts']}, {os.cpu_count()} CPUs"
        )
        print(f"timing: {result['timing']}; median of {FLAGS.repeats} after {FLAGS.warmup} warm-up step(s)")
        for mode, r in by_mode.items():
            rel = f"  ({r['ms'] / by_mode['plain']['ms']:.2f}x plain)" if "plain" in by_mode else ""
            print(
                f"  {mode:<12} {r['ms']:>9.1f} ms{rel}   peak RSS {r['peak_rss_mib']:.0f} MiB   "
                f"warm-up {r['warmup_s']:.1f} s   steps {r['times_ms']}"
            )
        if result["images_per_s"]:
            print(f"  meta throughput: {result['images_per_s']} images/s   wall {wall_s} s")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

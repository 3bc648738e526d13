"""Cost of one L2T-ww iteration against one plain supervised step of the target (time and peak memory).

An `L2TWW.train_step` is a real SGD step plus a second-order meta step through
a T-step look-ahead (docs/method.md §4.1, §4.7–4.8), so it costs several plain steps
(docs/profile.md derives how many). This times `train_on_batch` (the same
compiled `tf.function` that `fit` runs) on random images of a fixed seed, for
models built in one setting:

- plain: the target backbone alone, `keras_l2t.optimizers.SGD(0.1, 0.9, 1e-4)`,
  sparse CE from logits and accuracy (what `L2TWW.compile` tracks too);
- meta: `L2TWW(source, target, pairs, inner_steps=T)` with default compile;
- first_order: the same with `first_order=True`;
- meta_recompute / first_order_recompute (opt-in, for the lever table): the
  same with `recompute_look_ahead=True` (one look-ahead step's graph in memory
  at a time, keras_l2t/models/recompute.py);
- fast: train.main's `--speed=fast`, a meta step on every 4th step; its cost
  per step is the mean of `times_ms` over whole 4-step cycles, not the median;
- meta_16bit_look_ahead (opt-in, with --mixed_precision): meta with
  `full_precision_look_ahead=False`, the look-ahead in the 16-bit compute dtype.

By default all modes live in one process: each is warmed up (`--warmup`
untimed steps; the first traces), then the modes are timed alternately,
`--repeats` rounds with the order rotated every round, so load drift on a
shared machine hits every mode alike; the median per mode is reported. Each
step is timed to the host (`train_on_batch` returns numpy logs, so it waits).
`peak_rss_mib` is then the process peak (`ru_maxrss`) over everything.
`--isolate_memory` instead runs each mode in a fresh subprocess of this module
(one after the other, not alternated) and adds `peak_rss_mib_by_mode`; the
reported `peak_rss_mib` is then the meta mode's own.

Workloads (bench/workload.py): `--workload=32` (the default, issue #5), ResNet-32
source -> VGG-9-BN target, 32x32, the 15 official pairs; `--workload=224` (issue
#27), keras-hub's ResNet-34 graph at random weights -> ResNet-18, 224x224, the 16
pairs of the design card's Stanford Dogs run. Both batch 64, T=2, full width, no
XLA, float32.
`TF_ENABLE_ONEDNN_OPTS` defaults to 1 (off by default on AMD CPUs, halves the
step time, docs/method.md §4.8) and is recorded. Prints a summary, then one JSON line
last with `plain_ms`, `meta_ms`, `ratio`, `first_order_ratio`, `images_per_s`
(meta iterations), `peak_rss_mib`, `net_peak_rss_mib` (the peak less the RSS right
after importing TensorFlow, Keras and keras_l2t, before building anything: the
fair measure against the authors', whose torch runtime costs less to import),
`tensor_peak_mib` (the meta step's most tensor
memory in use, from TensorFlow's allocator statistics: what a device would need
for tensors), `settings` and `versions` (`--details` adds
every mode's timings under `by_mode`):

    python -m bench.meta_step
    python -m bench.meta_step --workload=224 --batch_size=16 --repeats=4 --warmup=1
    python -m bench.meta_step --jit_compile --mixed_precision=mixed_bfloat16
    python -m bench.meta_step --modes=plain,meta,meta_recompute --details
    python -m bench.meta_step --deterministic        # the cost of train.main's --deterministic
    python -m bench.meta_step --noconstant_folding --isolate_memory   # the memory lever of docs/profile.md
    python -m bench.meta_step --source_width=0.25 --target_width=0.25 --batch_size=8 --repeats=2 --warmup=1
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from bench import process_memory, workload  # noqa: E402

# mode -> L2TWW options (None: the plain target).
MODES = {
    "plain": None,
    "meta": {"first_order": False},
    "first_order": {"first_order": True},
    "meta_recompute": {"first_order": False, "recompute_look_ahead": True},
    "first_order_recompute": {"first_order": True, "recompute_look_ahead": True},
    # train.main's --speed=fast: a meta step on every 4th step only. Its cost per step is the mean of
    # `times_ms` over a whole number of 4-step cycles (the median would be a step without one).
    "fast": {"first_order": False, "meta_every": 4},
    # With --mixed_precision: the look-ahead in the 16-bit compute dtype too (otherwise the same as meta).
    "meta_16bit_look_ahead": {"first_order": False, "full_precision_look_ahead": False},
}
DEFAULT_MODES = ("plain", "meta", "first_order", "fast")

FLAGS = flags.FLAGS
workload.define_workload_flags()
flags.adopt_module_key_flags(workload)
flags.DEFINE_integer("warmup", 2, "Untimed steps per mode (the first one traces).")
flags.DEFINE_integer("repeats", 5, "Timed rounds (one step of every mode each); the median is reported.")
flags.DEFINE_boolean("jit_compile", False, "XLA for every model's train step (slow to compile on CPU).")
flags.DEFINE_boolean("deterministic", False, "keras_l2t.determinism.enable_determinism() first (train.main's --deterministic).")
flags.DEFINE_boolean(
    "constant_folding", True,
    "Grappler's constant folding (TensorFlow's default). False keeps the traced step from storing folded "
    "constants such as ReluGradGrad's zeros: less memory at the same speed (docs/profile.md).",
)
flags.DEFINE_enum(
    "mixed_precision", None, ["mixed_float16", "mixed_bfloat16"],
    "Build every model under this dtype policy (the L2T-ww look-ahead stays float32, except in mode meta_16bit_look_ahead).",
)
flags.DEFINE_list("modes", list(DEFAULT_MODES), f"Modes to time, among {list(MODES)}.")
flags.DEFINE_boolean("isolate_memory", False, "Run each mode in its own subprocess (adds per-mode peak RSS).")
flags.DEFINE_boolean("details", False, "Add every mode's timings (`by_mode`) to the JSON line.")
flags.DEFINE_boolean("json_only", False, "Print only the JSON line (used by the subprocesses).")
flags.DEFINE_integer("seed", 0, "Seed for the data and the weights.")

_PASSED_FLAGS = (
    "workload", "source", "target", "source_width", "target_width", "image_size", "batch_size", "inner_steps",
    "pairs", "num_classes", "source_classes", "warmup", "repeats", "jit_compile", "mixed_precision", "seed",
    "deterministic", "constant_folding",
)  # fmt: skip


def import_baseline_rss_mib():
    """RSS right after importing what the benchmark runs on, before building anything (MiB).

    The fair memory measure of issue #27 is the peak minus this: each framework's
    own runtime (TensorFlow and Keras here, torch on the authors' side) is then
    left out on both sides.
    """
    import keras  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    import keras_l2t  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    if FLAGS.source in workload.KERAS_HUB_SOURCES:
        import keras_hub  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return process_memory.current_rss_mib()


def cycle(mode):
    """Steps per meta step of `mode` (1 unless it takes a meta step every k-th step)."""
    return (MODES[mode] or {}).get("meta_every", 1)


def step_cost_ms(mode, times_ms):
    """A mode's cost per step: the median, or for a k-step cycle the mean over whole cycles."""
    k = cycle(mode)
    if k == 1:
        return statistics.median(times_ms)
    whole = len(times_ms) - len(times_ms) % k
    return statistics.fmean(times_ms[:whole])


def _build_models(modes):
    """{mode: compiled model}, plus the resolved pairs."""
    import keras

    import keras_l2t
    from keras_l2t import determinism, precision
    from keras_l2t.pairs import format_pairs

    if FLAGS.deterministic:
        determinism.enable_determinism()
    if not FLAGS.constant_folding:
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"constant_folding": False})

    models, pairs, source = {}, None, None
    with precision.global_dtype_policy(FLAGS.mixed_precision):
        for mode in modes:
            options = MODES[mode]
            if options is None:
                model = workload.target_backbone(FLAGS)
                model.compile(
                    optimizer=keras_l2t.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                    jit_compile=FLAGS.jit_compile,
                )
            else:
                source = source or workload.source_backbone(FLAGS)  # frozen: one for every mode
                model = keras_l2t.L2TWW(
                    source, workload.target_backbone(FLAGS), pairs=FLAGS.pairs, inner_steps=FLAGS.inner_steps,
                    **options,
                )
                model.compile(jit_compile=FLAGS.jit_compile)
                pairs = format_pairs(model.pairs)
            models[mode] = model
    return models, pairs


def _rss_breakdown_mib():
    """This process's resident memory now, by kind (Linux /proc/self/smaps), or None elsewhere.

    `libraries`: file-backed pages (TensorFlow's shared objects, mostly);
    `heap`: the brk heap (small allocations: traced graphs, Python objects);
    `anonymous`: other anonymous mappings (the tensor allocator's pools, thread stacks).
    """
    try:
        with open("/proc/self/smaps", encoding="utf-8") as f:
            lines = f.readlines()
    except OSError:
        return None
    totals, kind = {"libraries": 0.0, "heap": 0.0, "anonymous": 0.0}, None
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0]:  # a mapping's header: address range, perms, ..., [path]
            path = fields[5] if len(fields) > 5 else ""
            kind = "heap" if path == "[heap]" else "libraries" if path.startswith("/") else "anonymous"
        elif fields[0] == "Rss:":
            totals[kind] += int(fields[1]) / 1024.0
    return {name: round(value, 1) for name, value in totals.items()}


def _tensor_peak_mib(reset=False):
    """TensorFlow's allocator on the device the steps run on (GPU:0 where there is one, else the CPU).

    The most tensor memory in use since the last reset (MiB), or None where the
    allocator keeps no statistics (e.g. TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1);
    `reset=True` starts a new window instead.
    """
    import tensorflow as tf

    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    try:
        if reset:
            tf.config.experimental.reset_memory_stats(device)
            return None
        return round(tf.config.experimental.get_memory_info(device)["peak"] / 2**20, 1)
    except (ValueError, RuntimeError):
        return None


def _time_step(model, x, y):
    start = time.perf_counter()
    model.train_on_batch(x, y)  # returns numpy logs: waits for the step to finish
    return (time.perf_counter() - start) * 1000.0


def run_in_process(modes):
    """Builds every mode here, warms each up, then times them alternately; ({mode: result}, pairs)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    x = tf.constant(rng.standard_normal((FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3), np.float32))
    y = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), tf.int32)
    models, pairs = _build_models(modes)

    warmup_s, peak_after_warmup = {}, {}
    for mode in modes:
        start = time.perf_counter()
        for _ in range(FLAGS.warmup):
            models[mode].train_on_batch(x, y)
        warmup_s[mode] = round(time.perf_counter() - start, 2)
        peak_after_warmup[mode] = round(process_memory.peak_rss_mib(), 1)

    times, tensor_peaks = {mode: [] for mode in modes}, {mode: [] for mode in modes}
    for r in range(FLAGS.repeats):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:  # rotated: no mode always first
            _tensor_peak_mib(reset=True)
            times[mode].append(_time_step(models[mode], x, y))
            tensor_peaks[mode].append(_tensor_peak_mib())
    breakdown = _rss_breakdown_mib()
    return {
        mode: {
            "ms": round(step_cost_ms(mode, times[mode]), 1),
            "times_ms": [round(t, 1) for t in times[mode]],
            "warmup_s": warmup_s[mode],
            # Cumulative: the process peak once this mode and those before it had warmed up.
            "peak_rss_mib_after_warmup": peak_after_warmup[mode],
            # Tensors alone (allocator statistics), the most over this mode's timed steps.
            "tensor_peak_mib": None if None in tensor_peaks[mode] else max(tensor_peaks[mode]),
            # Resident memory by kind at the end (cumulative over the modes of this process, like the RSS peak).
            "rss_breakdown_mib": breakdown,
        }
        for mode in modes
    }, pairs


def run_isolated(modes):
    """Runs each mode in a fresh subprocess of this module; the same structure, each with its own peak."""
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results, pairs = {}, None
    for mode in modes:
        command = [sys.executable, "-m", "bench.meta_step", f"--modes={mode}", "--noisolate_memory", "--json_only",
                   "--details"]
        for name in _PASSED_FLAGS:
            value = FLAGS[name].value
            if isinstance(value, bool):
                command.append(f"--{'' if value else 'no'}{name}")
            elif value is not None:
                command.append(f"--{name}={value}")
        if not FLAGS.json_only:
            print(f"[{mode}] running in a subprocess ...", flush=True)
        done = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, env=os.environ.copy())
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            sys.stderr.write(done.stdout + done.stderr)
            raise RuntimeError(f"Subprocess for mode {mode!r} failed (exit {done.returncode}).")
        child = json.loads(lines[-1])
        results[mode] = dict(
            child["by_mode"][mode], peak_rss_mib=child["peak_rss_mib"],
            import_baseline_rss_mib=child["import_baseline_rss_mib"],
        )
        pairs = pairs or child["settings"]["pairs"]
    return results, pairs


def main(argv):
    del argv
    modes = list(dict.fromkeys(m.strip() for m in FLAGS.modes if m.strip()))
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise app.UsageError(f"--modes must be a non-empty subset of {list(MODES)}; got {FLAGS.modes}.")
    if FLAGS.repeats < 1 or FLAGS.warmup < 1:
        raise app.UsageError("--repeats and --warmup must be >= 1 (the first warm-up step traces).")
    longest = max(modes, key=cycle)
    if FLAGS.repeats < cycle(longest):
        raise app.UsageError(f"Mode {longest} takes a meta step every {cycle(longest)} steps: --repeats >= {cycle(longest)}.")
    workload.resolve(FLAGS)

    load_before = os.getloadavg()
    isolated = FLAGS.isolate_memory
    baseline = None if isolated else import_baseline_rss_mib()
    wall_start = time.perf_counter()
    by_mode, pairs = (run_isolated if isolated else run_in_process)(modes)
    wall_s = round(time.perf_counter() - wall_start, 1)

    import keras
    import tensorflow as tf

    def ms(mode):
        return by_mode[mode]["ms"] if mode in by_mode else None

    for mode, r in by_mode.items():
        r["ratio"] = round(r["ms"] / ms("plain"), 2) if "plain" in by_mode else None
        r["images_per_s"] = round(FLAGS.batch_size / (r["ms"] / 1000.0), 2)

    settings = {name: FLAGS[name].value for name in _PASSED_FLAGS}
    settings.update(
        {
            "pairs": pairs,
            "pairs_spec": FLAGS.pairs,
            "num_pairs": len(pairs.split(",")) if pairs else None,
            "modes": modes,
            "timing": (
                "each mode in its own subprocess, one after the other" if isolated
                else "alternating in one process (rotated order), median per mode"
            ),
            "peak_rss_scope": (
                "the subprocess of the meta mode (or else the first L2T-ww mode)" if isolated
                else "this process, all modes"
            ),
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "wall_s": wall_s,
        }
    )
    if isolated:  # the meta mode's own process, or else the first L2T-ww mode's
        own = by_mode[next((m for m in ("meta", *modes) if m in by_mode and MODES[m] is not None), modes[0])]
        peak, baseline = own["peak_rss_mib"], own["import_baseline_rss_mib"]
    else:
        peak = round(process_memory.peak_rss_mib(), 1)
    result = {
        "plain_ms": ms("plain"),
        "meta_ms": ms("meta"),
        "ratio": by_mode["meta"]["ratio"] if "meta" in by_mode else None,
        "first_order_ratio": by_mode["first_order"]["ratio"] if "first_order" in by_mode else None,
        "images_per_s": by_mode["meta"]["images_per_s"] if "meta" in by_mode else None,
        "fast_ratio": by_mode["fast"]["ratio"] if "fast" in by_mode else None,
        "peak_rss_mib": peak,
        # The fair measure (issue #27): the peak less the RSS right after the imports, before building.
        "import_baseline_rss_mib": None if baseline is None else round(baseline, 1),
        "net_peak_rss_mib": None if peak is None or baseline is None else round(peak - baseline, 1),
        "tensor_peak_mib": by_mode["meta"]["tensor_peak_mib"] if "meta" in by_mode else None,
        "settings": settings,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }
    if isolated:
        result["peak_rss_mib_by_mode"] = {mode: r["peak_rss_mib"] for mode, r in by_mode.items()}
    if FLAGS.details:
        result["by_mode"] = by_mode

    if not FLAGS.json_only:
        print(
            f"\nL2T-ww step cost: {FLAGS.source} (x{FLAGS.source_width}) -> {FLAGS.target} (x{FLAGS.target_width}), "
            f"{FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size}, T={FLAGS.inner_steps}, "
            f"{settings['num_pairs']} pairs, jit_compile={FLAGS.jit_compile}, "
            f"mixed_precision={FLAGS.mixed_precision}, constant_folding={FLAGS.constant_folding}, "
            f"TF_ENABLE_ONEDNN_OPTS={settings['tf_enable_onednn_opts']}, "
            f"{os.cpu_count()} CPUs, load {settings['load_average_before'][0]} -> {settings['load_average_after'][0]}"
        )
        print(f"timing: {settings['timing']}; {FLAGS.repeats} rounds after {FLAGS.warmup} warm-up step(s)")
        for mode, r in by_mode.items():
            rel = f"  ({r['ratio']:.2f}x plain)" if r["ratio"] is not None else ""
            memory = f"peak RSS {r['peak_rss_mib']:.0f} MiB" if isolated else (
                f"peak RSS after warm-up {r['peak_rss_mib_after_warmup']:.0f} MiB")
            if r["tensor_peak_mib"] is not None:
                memory += f", tensors {r['tensor_peak_mib']:.0f} MiB"
            if isolated and r.get("rss_breakdown_mib"):
                memory += " (RSS at the end: " + ", ".join(
                    f"{name} {value:.0f}" for name, value in r["rss_breakdown_mib"].items()) + ")"
            print(
                f"  {mode:<22} {r['ms']:>9.1f} ms{rel}   {memory}   warm-up {r['warmup_s']:.1f} s   "
                f"steps {r['times_ms']}"
            )
        print(
            f"  meta: {result['images_per_s']} images/s; process peak RSS {peak} MiB, "
            f"{result['net_peak_rss_mib']} MiB above the RSS after the imports ({result['import_baseline_rss_mib']} MiB); "
            f"wall {wall_s} s"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

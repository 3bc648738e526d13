"""Where the time and memory of one L2T-ww iteration go (the table in docs/profile.md).

Times, on the standard workload of `bench.meta_step` (ResNet-32 -> VGG-9-BN,
32x32, batch 64, T=2, 15 pairs, full width), the phases of one iteration, each
as its own `tf.function`, alternately in one process (median of `--repeats`):

- `target_forward` F: the target's training-mode forward (the unit of the table);
- `target_grad`: forward + backward of CE (what a plain step costs without the update);
- `plain_step`: a plain supervised step (`train_on_batch`, as `bench.meta_step`);
- `source_statistics`: source forward, per-pair resize and pooling (once per batch);
- `real_step`: `L2TWW.train_step` with the meta step skipped (source, w/λ, real step, metrics);
- `matching_step` / `ce_step`: one look-ahead step's forward + gradient;
- `matching_step_vjp` / `ce_step_vjp`: that step recomputed and differentiated
  once more (the exact second-order reverse of one step: Hessian-vector product
  and, for matching steps, the mixed φ term);
- `matching_step_mixed`: the mixed φ term alone (what `first_order` needs);
- `look_ahead`: the T+1 look-ahead steps and the outer forward, no meta tape;
  (the step phases and `look_ahead` take the source statistics and w/λ as constants);
- `meta_gradient`: `L2TWW.meta_gradients` (source statistics, w/λ, look-ahead
  and the reverse pass to φ);
- `train_step`: one full `L2TWW.train_step` (`train_on_batch`);
- `meta_gradient_recompute` / `train_step_recompute`: the same with
  `recompute_look_ahead=True` (reverse adjoints, each step recomputed).

Memory: TensorFlow's CPU allocator (oneDNN's, a BFC pool) keeps statistics;
`tf.config.experimental.get_memory_info("CPU:0")` is reset before each call,
and `peak_mib` is the most tensor memory in use during the call (max over the
calls), `transient_mib` that peak less what was in use before it (model
variables, optimizer slots, the batch). The resident set of the process is
reported after building and after each phase's warm-up (tracing included).
`--trace_dir` also writes a TF profiler trace of `--trace_phase` and prints the
time per op type and per differentiation order.

    python -m bench.profile_meta_step
    python -m bench.profile_meta_step --source_width=0.25 --target_width=0.25 --batch_size=8 --repeats=1
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import collections  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from bench import process_memory, workload  # noqa: E402

FLAGS = flags.FLAGS
workload.define_workload_flags()
flags.adopt_module_key_flags(workload)
flags.DEFINE_integer("repeats", 5, "Timed calls per phase (median).")
flags.DEFINE_list("phases", [], "Phases to run (default: all).")
flags.DEFINE_string("trace_dir", None, "If set, write a TF profiler trace of --trace_phase here and print op types.")
flags.DEFINE_string("trace_phase", "train_step", "The phase to trace.")
flags.DEFINE_integer("seed", 0, "Seed.")



def _tensor_memory_mib():
    """(in use, peak since the last reset) of TensorFlow's CPU allocator, MiB."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    info = tf.config.experimental.get_memory_info("CPU:0")
    return info["current"] / 2**20, info["peak"] / 2**20


def build_phases():
    """{name: zero-argument callable that runs the phase to completion}."""
    import keras
    import tensorflow as tf

    import keras_l2t
    from keras_l2t import losses

    keras.utils.set_random_seed(FLAGS.seed)
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    rng = np.random.default_rng(FLAGS.seed)
    x = tf.constant(rng.standard_normal((FLAGS.batch_size, *shape), np.float32))
    y = tf.constant(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size), tf.int32)

    def target():
        return workload.target_backbone(FLAGS)

    source = workload.source_backbone(FLAGS)
    model = keras_l2t.L2TWW(source, target(), pairs=FLAGS.pairs, inner_steps=FLAGS.inner_steps)
    model.compile()
    # The same networks, meta step skipped after the first call (a warm-up call): the real step alone.
    real_only = keras_l2t.L2TWW(source, model.target, pairs=FLAGS.pairs, inner_steps=FLAGS.inner_steps,
                                meta_every=10**9)
    real_only.compile()
    # The same networks, meta-gradient by recomputing reverse adjoints (keras_l2t.models.recompute).
    recomputing = keras_l2t.L2TWW(source, model.target, pairs=FLAGS.pairs, inner_steps=FLAGS.inner_steps,
                                  recompute_look_ahead=True)
    recomputing.compile()
    plain = target()
    plain.compile(
        optimizer=keras_l2t.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    lr = tf.constant(0.1, tf.float32)
    # Per-batch constants of the step phases (computed once, captured).
    source_stats = model._source_statistics(x)  # pylint: disable=protected-access
    meta_outputs = model._meta_outputs(source_stats)  # pylint: disable=protected-access
    num_target = len(model.target.trainable_variables)

    def state():
        theta, buffers, non_trainable = model._current_state()  # pylint: disable=protected-access
        return theta, buffers, non_trainable

    def flat(meta_outputs):
        return [t for group in meta_outputs if group is not None for t in group]

    def step_loss(theta, non_trainable, with_matching):
        logits, matching, _ = model._forward(  # pylint: disable=protected-access
            theta, non_trainable, x, source_stats, *meta_outputs, with_matching
        )
        return matching if with_matching else losses.cross_entropy(y, logits)

    def step_grad(with_matching):
        @tf.function
        def fn():
            theta, _, non_trainable = state()
            with tf.GradientTape() as tape:
                tape.watch(theta)
                loss = step_loss(theta, non_trainable, with_matching)
            return tf.linalg.global_norm(tape.gradient(loss, theta))

        return fn

    def step_vjp(with_matching, wrt_theta):
        """The reverse of one recorded step: d<g(θ, w, λ), u>/d(θ and/or w, λ) for a fixed u."""

        @tf.function
        def fn():
            outputs = flat(meta_outputs)
            theta, _, non_trainable = state()
            u = [0.01 * t for t in theta]
            with tf.GradientTape() as outer:
                outer.watch(theta + outputs)
                evaluated_at = theta if wrt_theta else [tf.stop_gradient(t) for t in theta]
                with tf.GradientTape() as inner:
                    inner.watch(evaluated_at)
                    loss = step_loss(evaluated_at, non_trainable, with_matching)
                grads = inner.gradient(loss, evaluated_at)
                product = tf.add_n([tf.reduce_sum(g * d) for g, d in zip(grads, u) if g is not None])
            sources = (theta if wrt_theta else []) + (outputs if with_matching else [])
            result = outer.gradient(product, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return tf.linalg.global_norm(result)

        return fn

    @tf.function
    def target_forward():
        theta, _, non_trainable = state()
        logits, _ = model.target.stateless_call(theta[:num_target], non_trainable, x, training=True)
        return tf.reduce_sum(logits)

    @tf.function
    def target_grad():
        theta, _, non_trainable = state()
        theta = theta[:num_target]
        with tf.GradientTape() as tape:
            tape.watch(theta)
            logits, _ = model.target.stateless_call(theta, non_trainable, x, training=True)
            loss = losses.cross_entropy(y, logits)
        return tf.linalg.global_norm(tape.gradient(loss, theta))

    @tf.function
    def source_statistics():
        stats = model._source_statistics(x)  # pylint: disable=protected-access
        return tf.add_n([tf.reduce_sum(m) for m in stats["maps"]])

    @tf.function
    def look_ahead():
        theta, buffers, non_trainable = state()
        return model._look_ahead_objective(  # pylint: disable=protected-access
            x, y, source_stats, meta_outputs, theta, buffers, non_trainable, lr
        )

    @tf.function
    def meta_gradient():
        return tf.linalg.global_norm(model.meta_gradients(x, y))

    @tf.function
    def meta_gradient_recompute():
        return tf.linalg.global_norm(recomputing.meta_gradients(x, y))

    def run(fn):
        return lambda: np.asarray(fn())

    return {
        "target_forward": run(target_forward),
        "target_grad": run(target_grad),
        "plain_step": lambda: plain.train_on_batch(x, y),
        "source_statistics": run(source_statistics),
        "real_step": lambda: real_only.train_on_batch(x, y),
        "matching_step": run(step_grad(True)),
        "ce_step": run(step_grad(False)),
        "matching_step_vjp": run(step_vjp(True, wrt_theta=True)),
        "ce_step_vjp": run(step_vjp(False, wrt_theta=True)),
        "matching_step_mixed": run(step_vjp(True, wrt_theta=False)),
        "look_ahead": run(look_ahead),
        "meta_gradient": run(meta_gradient),
        "train_step": lambda: model.train_on_batch(x, y),
        "meta_gradient_recompute": run(meta_gradient_recompute),
        "train_step_recompute": lambda: recomputing.train_on_batch(x, y),
    }


def op_tables(trace_dir, top=25):
    """Op time of the newest xplane.pb under trace_dir: by op type, and by differentiation order.

    Returns ({op type: (ms, calls)} of the `top` types, {order: ms}, total ms,
    path). TF op events are named "op_name:OpType"; an op's order is how many
    "gradient_tape/" prefixes its name has: 0 forward ops, 1 backward ops (and
    the reverse of forward ops in the meta-gradient), 2 the reverse of
    backward ops (the second-order part).
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel

    path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    by_type, calls, by_order = collections.Counter(), collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                metadata = plane.event_metadata[event.metadata_id]
                if ":" not in metadata.name or "::" in metadata.name:
                    continue
                op_type = (metadata.display_name or metadata.name.rsplit(":", 1)[1]).strip()
                if op_type.startswith("__"):  # a function call: its ops are counted themselves
                    continue
                ms = event.duration_ps / 1e9
                by_type[op_type] += ms
                calls[op_type] += 1
                by_order[min(metadata.name.count("gradient_tape/"), 2)] += ms
    types = {op: (round(ms, 1), calls[op]) for op, ms in by_type.most_common(top)}
    return types, {order: round(ms, 1) for order, ms in sorted(by_order.items())}, round(sum(by_type.values()), 1), path


def main(argv):
    del argv
    import tensorflow as tf

    workload.resolve(FLAGS)
    phases = build_phases()
    names = [p.strip() for p in FLAGS.phases if p.strip()] or list(phases)
    unknown = sorted(set(names) - set(phases))
    if unknown:
        raise app.UsageError(f"Unknown phases {unknown}; known: {list(phases)}.")
    rss_start = process_memory.current_rss_mib()
    warmup_s, rss_after_warmup = {}, {}
    for name in names:  # traces; the real_only model takes its one meta step here
        start = time.perf_counter()
        phases[name]()
        phases[name]()
        warmup_s[name] = round(time.perf_counter() - start, 1)
        rss_after_warmup[name] = round(process_memory.current_rss_mib(), 1)
    times = {name: [] for name in names}
    peak = {name: 0.0 for name in names}
    transient = {name: 0.0 for name in names}
    for r in range(FLAGS.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotated order
            tf.config.experimental.reset_memory_stats("CPU:0")
            in_use, _ = _tensor_memory_mib()
            start = time.perf_counter()
            phases[name]()
            times[name].append((time.perf_counter() - start) * 1000.0)
            _, call_peak = _tensor_memory_mib()
            peak[name] = max(peak[name], call_peak)
            transient[name] = max(transient[name], call_peak - in_use)
    unit = statistics.median(times["target_forward"]) if "target_forward" in times else None
    plain = statistics.median(times["plain_step"]) if "plain_step" in times else None
    rows = []
    print(f"\n{'phase':<24}{'median ms':>10}{'x F':>7}{'x plain':>8}{'peak MiB':>10}{'transient':>10}{'RSS MiB':>9}"
          "   calls (ms)")
    for name in names:
        ms = statistics.median(times[name])
        rows.append({
            "phase": name, "ms": round(ms, 1), "forward_equivalents": round(ms / unit, 2) if unit else None,
            "plain_steps": round(ms / plain, 2) if plain else None,
            "peak_mib": round(peak[name], 1), "transient_mib": round(transient[name], 1),
            "times_ms": [round(t, 1) for t in times[name]], "warmup_s": warmup_s[name],
            "rss_after_warmup_mib": rss_after_warmup[name],
        })
        print(f"{name:<24}{ms:>10.1f}{(ms / unit if unit else float('nan')):>7.2f}"
              f"{(ms / plain if plain else float('nan')):>8.2f}{peak[name]:>10.0f}"
              f"{transient[name]:>10.0f}{rss_after_warmup[name]:>9.0f}   {[round(t) for t in times[name]]}")
    result = {
        "benchmark": "profile_meta_step",
        "phases": rows,
        "rss_after_build_mib": round(rss_start, 1),
        "peak_rss_mib": round(process_memory.peak_rss_mib(), 1),
        "settings": {k: FLAGS[k].value for k in (
            "workload", "source", "target", "source_width", "target_width", "image_size", "batch_size", "inner_steps",
            "pairs", "num_classes", "repeats")},
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "tensorflow": tf.__version__,
        "load_average": os.getloadavg(),
    }
    if FLAGS.trace_dir:
        phase = phases[FLAGS.trace_phase]
        tf.profiler.experimental.start(FLAGS.trace_dir)
        start = time.perf_counter()
        phase()
        traced_ms = (time.perf_counter() - start) * 1000.0
        tf.profiler.experimental.stop()
        types, orders, total, path = op_tables(FLAGS.trace_dir)
        print(f"\nops in one traced {FLAGS.trace_phase}: {traced_ms:.0f} ms wall, {total:.0f} ms of op time "
              f"({os.cpu_count()} CPUs) in {path}")
        print(f"  by 'gradient_tape/' depth (0 forward, 1 backward, 2 reverse of backward): {orders}")
        for op, (ms, count) in types.items():
            print(f"  {op:<40}{ms:>10.1f} ms {100 * ms / total:>5.1f} %{count:>7} calls")
        result["trace"] = {"phase": FLAGS.trace_phase, "wall_ms": round(traced_ms, 1), "op_ms": total,
                           "op_ms_by_order": orders, "op_types": types}
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)

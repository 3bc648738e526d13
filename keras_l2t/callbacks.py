"""Callbacks: the paper's model-selection protocol, a guard against numerical faults, a
resumable CSV history, a short progress bar, and TensorBoard views of what is transferred.

Epochs are numbered from 1 everywhere a run writes them: history.csv's `epoch`
column, TensorBoard steps (scalars, images, histograms) and results.json's
`best_epoch`.
"""

import csv
import io
import math
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from keras_l2t.checkpointing import NonFiniteError
from keras_l2t.models import SourceTargetModel
from keras_l2t.backbones.backbone import Backbone
from keras_l2t.sources.stack import SourceStack, pair_sources


class BestValidationTracker(keras.callbacks.Callback):
    """Tracks the best-validation epoch and the test accuracy at that epoch.

    The paper (and the official code) reports *test accuracy at the epoch of
    the strictly best validation accuracy*. After each epoch whose validation
    accuracy beats every earlier one, this callback evaluates the test set,
    saves the model to `checkpoint_path` (if given), and adds `test_accuracy`
    to the epoch's logs (so CSVLogger records it and `GroupedTensorBoard` writes
    it to its `test` run; epochs that do not improve show no test figure).

    Args:
        test_data: A `tf.data.Dataset` of (images, labels) batches.
        checkpoint_path: Where to save the best target network (`.keras`; for
            a `SourceTargetModel` such as `L2TWW`, its `target`), or None.
        monitor: The validation metric to maximise.

    Attributes after `fit`: `best_val_accuracy`, `best_epoch` (1-based),
    `test_accuracy_at_best_val`, `epochs_completed`; `get_state`/`set_state`
    carry them across a resumed run. The checkpoint is written atomically.
    """

    def __init__(self, test_data, checkpoint_path=None, monitor="val_accuracy"):
        super().__init__()
        self.test_data = test_data
        self.checkpoint_path = checkpoint_path
        self.monitor = monitor
        self.best_val_accuracy = None
        self.best_epoch = None
        self.test_accuracy_at_best_val = None
        self.epochs_completed = 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self.epochs_completed = epoch + 1
        if self.monitor not in logs:
            raise KeyError(
                f"BestValidationTracker needs {self.monitor!r} in the epoch logs "
                "(pass validation_data to fit)."
            )
        value = float(logs[self.monitor])
        if self.best_val_accuracy is not None and value <= self.best_val_accuracy:
            return
        self.best_val_accuracy = value
        self.best_epoch = epoch + 1
        test_logs = self.model.evaluate(self.test_data, verbose=0, return_dict=True)
        self.test_accuracy_at_best_val = float(test_logs["accuracy"])
        logs["test_accuracy"] = self.test_accuracy_at_best_val
        if self.checkpoint_path:
            wrapped = isinstance(self.model, SourceTargetModel)
            target = self.model.target if wrapped else self.model
            tmp = f"{self.checkpoint_path[: -len('.keras')]}.tmp{os.getpid()}.keras"
            target.save(tmp)
            os.replace(tmp, self.checkpoint_path)

    def get_state(self):
        names = ("best_val_accuracy", "best_epoch", "test_accuracy_at_best_val", "epochs_completed")
        return {name: getattr(self, name) for name in names}

    def set_state(self, state):
        for name, value in state.items():
            setattr(self, name, value)


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first step whose loss components are not finite.

    After every batch it checks the logged losses (for an `L2TWW`: `ce`,
    `matching`, `meta_loss` and `meta_gradient_norm`, else `loss`) and raises
    `NonFiniteError` naming the step, the non-finite components and the last good
    checkpoint, before any later callback could save the broken state.

    Args:
        describe_checkpoint: Callable returning a description of the last good
            checkpoint for the message (e.g. its path and epoch).
    """

    COMPONENTS = ("ce", "matching", "meta_loss", "meta_gradient_norm", "at", "lwf", "loss")

    def __init__(self, describe_checkpoint=lambda: "none"):
        super().__init__()
        self.describe_checkpoint = describe_checkpoint

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        bad = [
            f"{name}={float(logs[name])}"
            for name in self.COMPONENTS
            if name in logs and not math.isfinite(float(logs[name]))
        ]
        if not bad:
            return
        step = int(self.model.optimizer.iterations.numpy())
        raise NonFiniteError(
            f"training stopped at step {step} (batch {batch + 1} of this epoch): non-finite "
            f"{', '.join(bad)}. Last good checkpoint: {self.describe_checkpoint()}. Try a lower --lr "
            "(or --meta_lr, --beta)."
        )


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """`CSVLogger` that, appending to an existing history, keeps that file's columns.

    Keras picks the columns from the first epoch a process logs; a resumed run
    whose first epoch lacks a key (e.g. `test_accuracy`, logged only on
    improvement) would otherwise append rows that do not match the header.
    `truncate(epochs)` drops rows of epochs that a resumed run will redo. The
    `epoch` column counts from 1 (Keras' `CSVLogger` writes 0-based indices).
    """

    def __init__(self, filename, separator=","):
        super().__init__(filename, separator=separator, append=True)

    def truncate(self, epochs):
        if not os.path.exists(self.filename):
            return
        with open(self.filename, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter=self.sep))
        with open(self.filename, "w", encoding="utf-8", newline="") as f:
            csv.writer(f, delimiter=self.sep).writerows(rows[: 1 + epochs])

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if os.path.exists(self.filename):
            with open(self.filename, encoding="utf-8", newline="") as f:
                header = next(csv.reader(f, delimiter=self.sep), None)
            if header:
                self.keys = [k for k in header if k != "epoch"]

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


# What the progress bar shows: the loss, its components, accuracy and validation accuracy.
PROGRESS_BAR_METRICS = ("loss", "ce", "matching", "at", "lwf", "meta_loss", "accuracy", "val_accuracy")


class ShortProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' progress bar showing only the few figures a person follows live.

    An `L2TWW` logs over twenty figures per step (one λ per pair, entropies,
    norms); printed in full, a bar line wraps over many rows and cannot redraw.
    This bar shows the names in `shown` (present in the logs; in that order) and
    nothing else, leaving out `meta_loss` while no meta step has been made in the
    epoch (`meta_every > 1`); TensorBoard and history.csv still record every figure. Passed
    in `fit`'s callbacks, it replaces Keras' own bar and follows `fit`'s
    `verbose` (0 silent, 1 bar, 2 one line per epoch).

    Args:
        shown: Log names to display (default `PROGRESS_BAR_METRICS`).
        epoch_lines: Callables `f(logs) -> str or None` whose lines are printed
            after each epoch's bar (e.g. `MetaNetworkMovement.line`).
    """

    # Like Keras' own bar (which Keras adds after deciding on async dispatch): printing may run off the main
    # thread, so the bar does not make every batch wait for its logs.
    async_safe = True

    def __init__(self, shown=PROGRESS_BAR_METRICS, epoch_lines=()):
        super().__init__()
        self.shown = tuple(shown)
        self.epoch_lines = tuple(epoch_lines)
        self._meta_step_seen = True

    def _short(self, logs):
        logs = logs or {}
        shown = {name: logs[name] for name in self.shown if name in logs}
        # With `meta_every > 1` an epoch (or its first batches) may hold no meta step: its
        # `meta_loss` is then the empty mean, 0, which would read as a perfect meta objective.
        if not self._meta_step_seen:
            shown.pop("meta_loss", None)
        return shown

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._meta_step_seen = False

    def on_train_batch_end(self, batch, logs=None):
        # Read per batch: the validation at the epoch's end resets the tracker before `on_epoch_end`.
        # (convert_to_numpy: under tf.distribute the count is a sync-on-read variable, which float() refuses.)
        meta_loss = getattr(self.model, "meta_loss_tracker", None)
        if not self._meta_step_seen and meta_loss is not None:
            self._meta_step_seen = float(keras.ops.convert_to_numpy(meta_loss.count)) > 0
        super().on_train_batch_end(batch, self._short(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._short(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._short(logs))
        if self.verbose:
            for line in filter(None, (f(logs or {}) for f in self.epoch_lines)):
                print(line, flush=True)

    def on_test_end(self, logs=None):
        super().on_test_end(self._short(logs))


# The transfer figures of the logs besides the per-pair `lambda_m_n` (see also `MetaNetworkMovement`).
TRANSFER_METRICS = (
    "channel_weight_entropy", "channel_weight_entropy_min", "meta_gradient_norm", "lambda_change_max", "phi_distance",
)


# Logs of the mean λ of each source's pairs (several sources), e.g. `lambda_mean_of_tinyimagenet_resnet32`.
LAMBDA_PER_SOURCE_PREFIX = "lambda_mean_of_"


def is_pair_lambda(name):
    """Whether a log name is one pair's mean λ (`lambda_m_n`, or `lambda_<source>_m_n` with several sources)."""
    return name.startswith("lambda_") and name != "lambda_change_max" and not name.startswith(LAMBDA_PER_SOURCE_PREFIX)


def is_transfer_metric(name):
    """Whether a log name is one of L2T-ww's transfer figures (per-pair mean λ, entropies, movement, norms)."""
    return name.startswith("lambda_") or name in TRANSFER_METRICS


class GroupedTensorBoard(keras.callbacks.TensorBoard):
    """Keras' `TensorBoard` with 1-based epoch steps, a `test` run, and the transfer figures grouped.

    - Epoch e is written at step e (as history.csv and results.json number it).
    - `test_<name>` logs (e.g. `BestValidationTracker`'s `test_accuracy`) go to a
      `test` run as `epoch_<name>`, so train, validation and test accuracy share
      one chart, instead of an `epoch_test_accuracy` chart of the train run.
    - The transfer figures (`is_transfer_metric`) go to the train run as
      `transfer/<name>`: one TensorBoard group beside `TransferMonitor`'s
      `transfer/` image and histograms, not ~20 top-level charts.

    Args: those of `keras.callbacks.TensorBoard`.
    """

    def __init__(self, log_dir="logs", **kwargs):
        super().__init__(log_dir, **kwargs)
        self._test_writer = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        step = epoch + 1
        test_logs = {k[len("test_"):]: logs.pop(k) for k in list(logs) if k.startswith("test_")}
        transfer_logs = {k: logs.pop(k) for k in list(logs) if is_transfer_metric(k)}
        super().on_epoch_end(step, logs)
        if transfer_logs:
            with self._train_writer.as_default(step=step):
                for name, value in transfer_logs.items():
                    tf.summary.scalar(f"transfer/{name}", value)
        if test_logs:
            if self._test_writer is None:
                self._test_writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "test"))
            with self._test_writer.as_default(step=step):
                for name, value in test_logs.items():
                    tf.summary.scalar(f"epoch_{name}", value)
            self._test_writer.flush()

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._test_writer is not None:
            self._test_writer.close()
            self._test_writer = None


def pair_weight_matrix(pairs, pair_weights):
    """(source taps, target taps, matrix of mean λ with NaN where no pair) from per-pair λ tensors."""
    source_taps = sorted({m for m, _ in pairs})
    target_taps = sorted({n for _, n in pairs})
    matrix = np.full((len(source_taps), len(target_taps)), np.nan)
    for (m, n), weights in zip(pairs, pair_weights):
        matrix[source_taps.index(m), target_taps.index(n)] = float(np.mean(weights))
    return source_taps, target_taps, matrix


def first_images(images):
    """`images` itself, or the images of the first batch of a dataset of (images, labels) batches."""
    if isinstance(images, tf.data.Dataset):
        return next(iter(images))[0]
    return images


def tap_layer_names(backbone):
    """Per tap index of a `Backbone`, the name of the Keras layer whose output it is ("source/layer" in a stack)."""
    if isinstance(backbone, SourceStack):
        return [
            f"{member}/{name}"
            for member in backbone.member_names
            for name in tap_layer_names(Backbone(backbone.network.get_layer(member)))
        ]
    network = getattr(backbone, "network", None)
    names = list(getattr(network, "output_names", None) or [])[1:]
    num_taps = len(backbone.feature_shapes)
    return names if len(names) == num_taps else [f"tap {i}" for i in range(num_taps)]


def _heatmap_png(panels, target_names=None):
    """A PNG of mean-λ heatmaps side by side, one per (title, source taps, source tap labels, target taps, matrix)."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    width = sum(1.2 + 0.9 * len(panel[3]) for panel in panels)
    height = 1.0 + 0.8 * max(len(panel[1]) for panel in panels)
    figure, all_axes = plt.subplots(1, len(panels), figsize=(width, height), squeeze=False)
    vmax = max(1.0, max(float(np.nanmax(panel[4])) for panel in panels))
    for axes, (title, source_taps, source_labels, target_taps, matrix) in zip(all_axes[0], panels):
        image = axes.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax)
        axes.set_xticks(
            range(len(target_taps)),
            [f"{n}: {target_names[n]}" if target_names else str(n) for n in target_taps],
            rotation=30 if target_names else 0,
            ha="right" if target_names else "center",
        )
        axes.set_yticks(range(len(source_taps)), source_labels)
        axes.set_xlabel("target tap n: layer")
        axes.set_ylabel("source tap m: layer")
        axes.set_title(title)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if not np.isnan(matrix[i, j]):
                    axes.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    figure.colorbar(image, ax=list(all_axes[0]))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def pair_weight_panels(source, pairs, pair_weights, title, source_names=None):
    """The heatmap panels of `_heatmap_png`: one for a source, one per source of a `SourceStack` of several.

    A stacked source's rows are labelled with the source's own tap numbers.
    """
    owners = pair_sources(source, pairs) or [None] * len(pairs)
    panels = []
    for owner in dict.fromkeys(owners):
        chosen = [p for p, o in enumerate(owners) if o == owner]
        own_pairs = [pairs[p] for p in chosen]
        source_taps, target_taps, matrix = pair_weight_matrix(own_pairs, [pair_weights[p] for p in chosen])
        numbers = [source.member_tap(m)[1] if owner else m for m in source_taps]
        labels = [f"{k}: {source_names[m]}" if source_names else str(k) for k, m in zip(numbers, source_taps)]
        panels.append((f"{owner}: {title}" if owner else title, source_taps, labels, target_taps, matrix))
    return panels


class TransferMonitor(keras.callbacks.Callback):
    """Each epoch, writes what and where an `L2TWW` transfers to TensorBoard.

    On a fixed batch of images: an image of the mean λ matrix (source tap ×
    target tap, axes labelled "m: <layer name>") and a histogram of the channel
    weights w of every pair, under the tag group `transfer/`; once, a text table
    `transfer/taps` mapping the tap indices of `lambda_m_n` to layer names. (The
    per-pair mean λ scalars come with the training logs; `GroupedTensorBoard`
    writes them as `transfer/lambda_m_n`.) Epoch e is written at step e.
    Rendering the image and the histograms costs about 0.2 s, much more than a
    short run's epoch, so they are written for about `images_per_run` epochs
    spread over the run (the first and the last included).

    Args:
        images: A fixed batch of input images, or a `tf.data.Dataset` of
            (images, labels) batches whose first batch is used (e.g. the
            validation set). A dataset is read at the end of the first epoch,
            after validation has read it in full: a partial read of a dataset
            whose in-memory cache is not yet complete would discard the cache
            (and make tf.data warn).
        log_dir: TensorBoard directory (run) for these summaries.
        images_per_run: About how many epochs get the λ-matrix image and the histograms.
    """

    def __init__(self, images, log_dir, images_per_run=10):
        super().__init__()
        self.images = images
        self.log_dir = log_dir
        self.images_per_run = images_per_run
        self._writer = None
        self._statistics = FixedBatchStatistics()
        self._tap_names = None

    def on_train_begin(self, logs=None):
        self._statistics.reset()
        self._tap_names = (tap_layer_names(self.model.source), tap_layer_names(self.model.target))

    def _draws_image(self, step):
        epochs = int((self.params or {}).get("epochs") or 0)
        every = max(1, -(-epochs // self.images_per_run)) if epochs else 1
        return step == 1 or step == epochs or step % every == 0

    def _fixed_images(self):
        self.images = first_images(self.images)
        return self.images

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        if not self._draws_image(step):
            return
        source_names, target_names = self._tap_names  # fixed for the run
        weights = self.model.transfer_weights(statistics=self._statistics.get(self.model, self._fixed_images()))
        pairs = weights["pairs"]
        first = self._writer is None
        if first:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            if first:
                tf.summary.text("transfer/taps", tap_table(pairs, source_names, target_names))
            for (m, n), channel_weights in zip(pairs, weights["channel_weights"] or []):
                tf.summary.histogram(f"transfer/channel_weights/{m}-{n}", channel_weights)
            if weights["pair_weights"]:
                panels = pair_weight_panels(
                    self.model.source, pairs, weights["pair_weights"], f"mean λ, epoch {step}", source_names
                )
                png = _heatmap_png(panels, target_names)
                tf.summary.image("transfer/pair_weights", tf.image.decode_png(png)[tf.newaxis])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def tap_table(pairs, source_names, target_names):
    """A Markdown table: for each tap index in `pairs`, the source or target layer it taps."""
    rows = ["| network | tap | layer |", "|---|---|---|"]
    rows += [f"| source | {m} | {source_names[m]} |" for m in sorted({m for m, _ in pairs})]
    rows += [f"| target | {n} | {target_names[n]} |" for n in sorted({n for _, n in pairs})]
    return "\n".join(rows) + "\n\n`lambda_m_n` is the weight of matching source tap m to target tap n.\n"


class FixedBatchStatistics:
    """The source statistics of a callback's fixed batch, computed once per training (the source is frozen)."""

    def __init__(self):
        self._value = None

    def reset(self):
        self._value = None

    def get(self, model, images):
        if self._value is None:
            self._value = model.source_statistics(images)
        return self._value


def transfer_summary(model, images=None, statistics=None):
    """What an `L2TWW` transfers on `images`: per pair its mean λ and the normalised entropy of its w.

    Returns a JSON-able dict: `pairs` ([m, n] each), `lambda` (mean λ per pair,
    or None without a where-net) and `channel_weight_entropy` (per pair, the
    batch mean of −Σ w log w / log C: 1 for uniform channel weights, 0 for
    one channel; None without a what-net). With several sources also
    `pair_sources` (per pair, its source's name) and `lambda_per_source`
    (source name → mean λ of its pairs).
    """
    weights = model.transfer_weights(images, statistics)
    pair_weights, channel_weights = weights["pair_weights"], weights["channel_weights"]
    entropies = None
    if channel_weights:
        entropies = []
        for w in channel_weights:
            w = np.asarray(w, np.float64)
            entropy = -np.sum(w * np.log(w + 1e-12), axis=-1) / math.log(max(w.shape[-1], 2))
            entropies.append(float(np.mean(entropy)))
    summary = {
        "pairs": [[int(m), int(n)] for m, n in weights["pairs"]],
        "lambda": [float(np.mean(p)) for p in pair_weights] if pair_weights else None,
        "channel_weight_entropy": entropies,
    }
    names = pair_sources(model.source, weights["pairs"])
    if names:
        summary["pair_sources"] = names
        if summary["lambda"]:
            summary["lambda_per_source"] = {
                name: float(np.mean([lam for lam, owner in zip(summary["lambda"], names) if owner == name]))
                for name in dict.fromkeys(names)
            }
    return summary


class MetaNetworkMovement(keras.callbacks.Callback):
    """How far an `L2TWW`'s meta-networks have moved: logged every epoch, summarised at the end.

    The meta-networks start at uniform channel weights (entropy 1) and random
    pair weights λ; with few meta-steps they can stay there, and L2T-ww then is
    feature matching with fixed random λ. This makes that visible. At the end of
    each epoch, on a fixed batch, it adds to the logs (so history.csv and
    TensorBoard's `transfer/` group record them):
    - `channel_weight_entropy_min`: the lowest per-pair entropy of w (the
      training logs' `channel_weight_entropy` is the mean over pairs);
    - `lambda_change_max`: the largest |λ − λ at epoch 1| over pairs;
    - `phi_distance`: ‖φ − φ₀‖ / ‖φ₀‖, φ₀ the meta-networks' initial values.
    `line(logs)` formats these for one line after the epoch's progress bar, and
    `summary` holds the last epoch's `transfer_summary` plus these figures for
    results.json.

    φ₀ is written once to `initial_path` (an .npz) so that a resumed run keeps
    measuring from the true start; the epoch-1 λ are part of `get_state`.

    Args:
        images: A fixed batch of images, or a dataset whose first batch is used
            (read after the first epoch's validation, see `TransferMonitor`).
        initial_path: Where φ₀ is kept.
    """

    def __init__(self, images, initial_path):
        super().__init__()
        self.images = images
        self.initial_path = initial_path
        self.first_lambda = None
        self.summary = None
        self._initial = None
        self._statistics = FixedBatchStatistics()

    def on_train_begin(self, logs=None):
        self._statistics.reset()
        if os.path.exists(self.initial_path):
            with np.load(self.initial_path) as saved:
                self._initial = [saved[f"phi_{i}"] for i in range(len(saved.files))]
            return
        if int(self.model.optimizer.iterations.numpy()):
            logging.warning(
                "%s is missing in a resumed run: phi_distance is measured from where it resumed.", self.initial_path
            )
        self._initial = [np.array(v.numpy()) for v in self.model.meta_variables]
        tmp = f"{self.initial_path}.tmp{os.getpid()}.npz"
        np.savez(tmp, **{f"phi_{i}": value for i, value in enumerate(self._initial)})
        os.replace(tmp, self.initial_path)

    def _fixed_images(self):
        self.images = first_images(self.images)
        return self.images

    def _phi_distance(self):
        current = [np.asarray(v.numpy(), np.float64) for v in self.model.meta_variables]
        change = math.sqrt(sum(float(np.sum((c - i) ** 2)) for c, i in zip(current, self._initial)))
        scale = math.sqrt(sum(float(np.sum(np.asarray(i, np.float64) ** 2)) for i in self._initial))
        return change / scale if scale else change

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        summary = transfer_summary(self.model, statistics=self._statistics.get(self.model, self._fixed_images()))
        figures = {"phi_distance": self._phi_distance()}
        if summary["channel_weight_entropy"]:
            figures["channel_weight_entropy_min"] = min(summary["channel_weight_entropy"])
        if summary["lambda"]:
            if self.first_lambda is None:
                self.first_lambda = summary["lambda"]
            figures["lambda_change_max"] = max(abs(a - b) for a, b in zip(summary["lambda"], self.first_lambda))
        for name, mean in (summary.get("lambda_per_source") or {}).items():
            figures[f"{LAMBDA_PER_SOURCE_PREFIX}{name}"] = mean
        logs.update(figures)
        self.summary = {**summary, **figures, "epoch": epoch + 1}

    @staticmethod
    def line(logs):
        """One line on the meta-networks from an epoch's logs, or None if they hold none of its figures."""
        if "phi_distance" not in logs:
            return None
        parts = []
        if "channel_weight_entropy" in logs:
            parts.append(
                f"w entropy mean {float(logs['channel_weight_entropy']):.6f}, "
                f"min {float(logs['channel_weight_entropy_min']):.6f}"
            )
        lambdas = [float(v) for k, v in logs.items() if is_pair_lambda(k)]
        if lambdas:
            parts.append(
                f"λ in [{min(lambdas):.3f}, {max(lambdas):.3f}], max |Δλ| since epoch 1 "
                f"{float(logs['lambda_change_max']):.4f}"
            )
        per_source = {k[len(LAMBDA_PER_SOURCE_PREFIX):]: float(v) for k, v in logs.items()
                      if k.startswith(LAMBDA_PER_SOURCE_PREFIX)}
        if per_source:
            parts.append("mean λ per source: " + ", ".join(f"{name} {mean:.3f}" for name, mean in per_source.items()))
        parts.append(f"‖φ−φ₀‖/‖φ₀‖ {float(logs['phi_distance']):.2e}")
        return "meta-networks: " + "; ".join(parts)

    def get_state(self):
        return {"first_lambda": self.first_lambda, "summary": self.summary}

    def set_state(self, state):
        self.first_lambda = state.get("first_lambda")
        self.summary = state.get("summary")

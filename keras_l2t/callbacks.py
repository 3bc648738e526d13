"""Callbacks: the paper's model-selection protocol, a guard against numerical faults, a
resumable CSV history, and TensorBoard views of what is transferred."""

import csv
import io
import math
import os

import keras
import numpy as np
import tensorflow as tf

from keras_l2t.checkpointing import NonFiniteError
from keras_l2t.models import SourceTargetModel


class BestValidationTracker(keras.callbacks.Callback):
    """Tracks the best-validation epoch and the test accuracy at that epoch.

    The paper (and the official code) reports *test accuracy at the epoch of
    the strictly best validation accuracy*. After each epoch whose validation
    accuracy beats every earlier one, this callback evaluates the test set,
    saves the model to `checkpoint_path` (if given), and adds `test_accuracy`
    to the epoch's logs (so CSVLogger and TensorBoard record it; epochs that do
    not improve show no test figure).

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
    `truncate(epochs)` drops rows of epochs that a resumed run will redo.
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


def pair_weight_matrix(pairs, pair_weights):
    """(source taps, target taps, matrix of mean λ with NaN where no pair) from per-pair λ tensors."""
    source_taps = sorted({m for m, _ in pairs})
    target_taps = sorted({n for _, n in pairs})
    matrix = np.full((len(source_taps), len(target_taps)), np.nan)
    for (m, n), weights in zip(pairs, pair_weights):
        matrix[source_taps.index(m), target_taps.index(n)] = float(np.mean(weights))
    return source_taps, target_taps, matrix


def _heatmap_png(source_taps, target_taps, matrix, title):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel

    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * len(target_taps), 1.0 + 0.8 * len(source_taps)))
    image = axes.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(1.0, float(np.nanmax(matrix))))
    axes.set_xticks(range(len(target_taps)), [str(n) for n in target_taps])
    axes.set_yticks(range(len(source_taps)), [str(m) for m in source_taps])
    axes.set_xlabel("target layer n")
    axes.set_ylabel("source layer m")
    axes.set_title(title)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if not np.isnan(matrix[i, j]):
                axes.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    figure.colorbar(image, ax=axes)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


class TransferMonitor(keras.callbacks.Callback):
    """Each epoch, writes what and where an `L2TWW` transfers to TensorBoard.

    On a fixed batch of images: an image of the mean λ matrix (source layer ×
    target layer) and a histogram of the channel weights w of every pair. (The
    per-pair mean λ scalars come with the training logs.)

    Args:
        images: A fixed batch of input images (e.g. the first validation batch).
        log_dir: TensorBoard directory for these summaries.
    """

    def __init__(self, images, log_dir):
        super().__init__()
        self.images = images
        self.log_dir = log_dir
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        weights = self.model.transfer_weights(self.images)
        pairs = weights["pairs"]
        with self._writer.as_default(step=epoch):
            for (m, n), channel_weights in zip(pairs, weights["channel_weights"] or []):
                tf.summary.histogram(f"channel_weights/{m}-{n}", channel_weights)
            if weights["pair_weights"]:
                source_taps, target_taps, matrix = pair_weight_matrix(pairs, weights["pair_weights"])
                png = _heatmap_png(source_taps, target_taps, matrix, f"mean λ, epoch {epoch + 1}")
                tf.summary.image("pair_weights", tf.image.decode_png(png)[tf.newaxis])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

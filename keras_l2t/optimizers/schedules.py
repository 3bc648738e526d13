"""The official learning-rate schedule: per-epoch cosine annealing, stepped PyTorch-1.0 style."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_l2t")
class EpochCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine annealing that changes once per epoch, as `CosineAnnealingLR(T_max=epochs)`.

    Epoch e (0-based) uses `lr·(1 + cos(π·(e + offset)/epochs))/2`. The official
    code calls `scheduler.step()` at the *start* of each epoch, so its offset is
    1: the first value is skipped and the last epoch runs at 0 (docs/method.md
    §4.3). `offset=1` (default) reproduces it; `offset=0` is textbook cosine.

    Args:
        initial_learning_rate: Peak rate.
        epochs: T_max, the number of epochs of the run.
        steps_per_epoch: Optimizer steps per epoch (iterations → epoch).
        offset: 1 for the official behaviour, 0 for plain cosine.
    """

    def __init__(self, initial_learning_rate, epochs, steps_per_epoch, offset=1):
        if epochs <= 0 or steps_per_epoch <= 0:
            raise ValueError("epochs and steps_per_epoch must be positive.")
        self.initial_learning_rate = float(initial_learning_rate)
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.offset = int(offset)

    def __call__(self, step):
        # In float64, as PyTorch computes it in Python, then rounded once to floatx.
        epoch = ops.floor_divide(ops.cast(step, "int64"), self.steps_per_epoch)
        progress = ops.cast(ops.minimum(epoch + self.offset, self.epochs), "float64") / float(self.epochs)
        rate = self.initial_learning_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.cast(rate, keras.config.floatx())

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "offset": self.offset,
        }


# The meta learning rate of the official code (Adam), set for its 200-epoch runs.
OFFICIAL_META_LEARNING_RATE = 1e-4
# The fewest meta-steps of any paper setting: STL-10, 4,500 training images in batches of 128, 200 epochs.
REFERENCE_META_STEPS = 7_000
# 3e-2 cost the Fashion-MNIST study accuracy and 1e-1 made the demo diverge (docs/results/meta_lr_sweep.md).
MAX_AUTO_META_LEARNING_RATE = 1e-2


def auto_meta_learning_rate(meta_steps):
    """The meta learning rate `--meta_lr=auto` gives a run of `meta_steps` meta-updates.

    Adam moves each meta-parameter by about its learning rate per step, so a
    run's meta-networks can travel about lr × steps. Runs at least as long as
    the paper's shortest setting (REFERENCE_META_STEPS) keep the official 1e-4;
    shorter ones get the same travel, 1e-4 × REFERENCE_META_STEPS / meta_steps,
    capped at MAX_AUTO_META_LEARNING_RATE. Without it, the few hundred
    meta-steps of a small-data run leave w uniform and λ at its random start.
    """
    if meta_steps <= 0:
        raise ValueError(f"meta_steps must be positive, got {meta_steps}.")
    scaled = OFFICIAL_META_LEARNING_RATE * REFERENCE_META_STEPS / meta_steps
    return min(max(scaled, OFFICIAL_META_LEARNING_RATE), MAX_AUTO_META_LEARNING_RATE)

"""What a run will cost, measured on its first steps: the `Estimated time:` line.

One exact L2T-ww iteration costs about ten plain steps, so a run's price is
worth knowing before it is paid. `RunTimeEstimate` times the first few steps
of `fit` on this machine and prints one line with the seconds per step, the
steps in the run and the total, then keeps the figure for results.json.
"""

import statistics
import time

import keras

# An estimate above this on a machine without a GPU names the levers that shorten the run.
LONG_RUN_SECONDS = 3 * 3600


def hours_and_minutes(seconds):
    """'3 h 07 min' (rounded to the minute)."""
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


class RunTimeEstimate(keras.callbacks.Callback):
    """Times the first steps of `fit` and prints `Estimated time: ...` once.

    A step's time is the interval between the starts of two consecutive
    training batches of one epoch; the first interval of the run is left out
    (it traces the step). An epoch boundary's extra time (validation,
    checkpoints, loggers) is the interval across it less a step; the first
    boundary is left out too (it traces the evaluation). The line is printed
    once `timed_steps` steps and one boundary are timed, or, in runs with long
    epochs, after `max_timed_steps` steps, saying that epoch ends are not yet
    included. Medians, so that one slow step does not set the estimate.

    Args:
        start_time: `time.time()` when the run began (data loading included),
            so that the estimate is of the whole run's wall time.
        epochs: Epochs of the run.
        steps_per_epoch: Training steps per epoch.
        initial_epoch: First epoch of this `fit` (a resumed run's).
        long_run_advice: Text appended when the estimate exceeds
            `LONG_RUN_SECONDS` (or None).
        timed_steps, max_timed_steps: When the line is printed (above).
        print_fn: Where the line goes (None: nowhere, e.g. on a non-chief worker).

    Attributes:
        estimated_seconds: The estimate of the run's wall time, once printed (else None).
        line: The printed line (else None).
    """

    def __init__(self, start_time, epochs, steps_per_epoch, initial_epoch=0, long_run_advice=None,
                 timed_steps=3, max_timed_steps=8, print_fn=print):
        super().__init__()
        self.start_time = start_time
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.initial_epoch = int(initial_epoch)
        self.long_run_advice = long_run_advice
        self.timed_steps = int(timed_steps)
        self.max_timed_steps = int(max_timed_steps)
        self.print_fn = print_fn
        self.estimated_seconds = None
        self.line = None
        self._epoch = initial_epoch
        self._previous = None  # (time, epoch) of the last batch start
        self._intervals = 0
        self._boundaries = 0
        self._step_times = []
        self._boundary_times = []
        self._batches_begun = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        now = time.time()
        if self._previous is not None:
            interval = now - self._previous[0]
            if self._previous[1] == self._epoch:
                if self._intervals > 0:
                    self._step_times.append(interval)
                self._intervals += 1
            else:
                if self._boundaries > 0:
                    self._boundary_times.append(interval)
                self._boundaries += 1
        self._previous = (now, self._epoch)
        self._batches_begun += 1
        if self.line is None and self._ready():
            self._estimate(now)

    def _ready(self):
        enough_steps = len(self._step_times) >= self.timed_steps
        return (enough_steps and self._boundary_times) or len(self._step_times) >= self.max_timed_steps

    def _estimate(self, now):
        step = statistics.median(self._step_times)
        boundary = max(statistics.median(self._boundary_times) - step, 0.0) if self._boundary_times else None
        steps_left = (self.epochs - self.initial_epoch) * self.steps_per_epoch - (self._batches_begun - 1)
        epoch_ends_left = self.epochs - self._epoch  # this epoch's end included
        self.estimated_seconds = (now - self.start_time) + steps_left * step + epoch_ends_left * (boundary or 0.0)
        total_steps = self.epochs * self.steps_per_epoch
        ends = (f" + {boundary:.3g} s per epoch end (validation, checkpoint)" if boundary is not None
                else " (epoch ends, with validation and checkpoints, not yet timed)")
        self.line = (
            f"Estimated time: {step:.3g} s/step × {total_steps:,} steps ({self.epochs} epochs × "
            f"{self.steps_per_epoch}){ends} → {hours_and_minutes(self.estimated_seconds)} in all on this machine "
            f"(measured over {len(self._step_times)} steps)."
        )
        if self.long_run_advice and self.estimated_seconds > LONG_RUN_SECONDS:
            self.line += " " + self.long_run_advice
        if self.print_fn is not None:
            self.print_fn(self.line)

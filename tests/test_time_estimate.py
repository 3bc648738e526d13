"""The `Estimated time:` line: what it measures, when it is printed, and that it is right on the demo."""

import json
import os

import pytest

from keras_l2t import time_estimate
from tests.test_train_main import _run


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _drive(estimate, clock, epochs, steps_per_epoch, step_seconds, end_seconds, first_step_seconds=20.0):
    """Feeds `estimate` the batch and epoch events of a run whose steps and epoch ends take these times."""
    for epoch in range(epochs):
        estimate.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            estimate.on_train_batch_begin(batch)
            clock.now += first_step_seconds if (epoch, batch) == (0, 0) else step_seconds
        clock.now += end_seconds + (10.0 if epoch == 0 else 0.0)  # the first validation traces


def test_estimate_of_a_run_with_short_epochs(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time_estimate.time, "time", clock)
    start = clock.now - 5.0  # data loading before fit
    lines = []
    estimate = time_estimate.RunTimeEstimate(start, epochs=30, steps_per_epoch=2, print_fn=lines.append)
    _drive(estimate, clock, 30, 2, step_seconds=1.0, end_seconds=0.5)
    assert len(lines) == 1 and lines[0].startswith("Estimated time: 1 s/step × 60 steps (30 epochs × 2) + 0.5 s per")
    real = clock.now - start
    # Everything timed after the first step and the first epoch end is exact here.
    assert estimate.estimated_seconds == pytest.approx(real, abs=1e-6)
    assert "levers" not in lines[0]


def test_long_epochs_print_after_eight_steps_and_say_what_is_missing(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time_estimate.time, "time", clock)
    lines = []
    estimate = time_estimate.RunTimeEstimate(
        clock.now, epochs=200, steps_per_epoch=187, long_run_advice="levers: --speed=fast", print_fn=lines.append
    )
    estimate.on_epoch_begin(0)
    for batch in range(10):
        estimate.on_train_batch_begin(batch)
        clock.now += 20.0 if batch == 0 else 2.0
    assert len(lines) == 1 and "not yet timed" in lines[0] and "37,400 steps" in lines[0]
    assert estimate.estimated_seconds == pytest.approx(20.0 + 8 * 2.0 + (37_400 - 9) * 2.0)
    assert lines[0].endswith("levers: --speed=fast") and "20 h 47 min" in lines[0]


def test_a_run_too_short_to_time_has_no_estimate(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(time_estimate.time, "time", clock)
    lines = []
    estimate = time_estimate.RunTimeEstimate(clock.now, epochs=1, steps_per_epoch=3, print_fn=lines.append)
    _drive(estimate, clock, 1, 3, step_seconds=1.0, end_seconds=0.5)
    assert lines == [] and estimate.estimated_seconds is None


def test_the_demos_estimates_are_within_a_factor_of_two(tmp_path):
    # README command 1 as a newcomer runs it (one seed of each method, 30 epochs).
    model_dir = str(tmp_path / "demo")
    run = _run("train.main", f"--model_dir={model_dir}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("Estimated time: ") == 5, run.stdout  # the source's pretraining and each method
    for method in ("scratch", "fm", "l2t_ww_frozen", "l2t_ww"):
        with open(os.path.join(model_dir, method, "results.json"), encoding="utf-8") as f:
            results = json.load(f)
        ratio = results["estimated_seconds"] / results["wall_seconds"]
        assert 0.5 <= ratio <= 2.0, (method, results["estimated_seconds"], results["wall_seconds"])

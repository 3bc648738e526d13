"""`bench.device_check --tiny`: the GPU check runs end to end on a CPU, so it cannot rot between GPU machines."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_device_check_runs_every_part_at_toy_sizes(tmp_path):
    output = tmp_path / "device_check.json"
    command = [sys.executable, "-m", "bench.device_check", "--tiny", f"--output={output}"]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["ok"] and report["tiny"] and set(report["parts"]) == {"tests", "workloads", "train_main"}
    assert report["parts"]["tests"]["summary"].startswith("2 passed")
    rows = report["parts"]["workloads"]["rows"]
    assert [(r["workload"], r["precision"], r["xla"]) for r in rows] == [
        ("32", "float32", False), ("32", "mixed_float16", False), ("224", "float32", False),
    ]
    for row in rows:
        assert row["ok"] and 0 < row["plain_ms"] < row["meta_ms"], row
    train_main = report["parts"]["train_main"]
    assert train_main["ok"] and train_main["wall_seconds"] > 0
    assert "--strategy=mirrored" in train_main["command"] and "--target=resnet18" in train_main["command"]
    # The table's last lines name every part.
    assert "all passed" in run.stdout and "train.main ok" in run.stdout

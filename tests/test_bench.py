"""`bench.meta_step` on a tiny workload: the JSON line it prints carries timings and both memory figures."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_meta_step_bench_reports_times_rss_and_the_tensor_peak():
    command = [
        sys.executable, "-m", "bench.meta_step", "--modes=plain,meta", "--source_width=0.25", "--target_width=0.25",
        "--batch_size=16", "--num_classes=5", "--source_classes=5", "--warmup=1", "--repeats=1",
        "--json_only", "--details",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
    assert result["plain_ms"] > 0 and result["meta_ms"] > 0 and result["ratio"] > 1.0
    assert result["settings"]["num_pairs"] == 15 and result["settings"]["batch_size"] == 16
    assert result["settings"]["constant_folding"] is True  # TensorFlow's default unless --noconstant_folding
    # The allocator's figure: positive, below the whole process, and the meta step needs more than the plain one.
    # (At batch 4 and width 0.125 TensorFlow's CPU allocator statistics read 0 for both steps: not every
    # allocation is counted there, so the workload is large enough to register.)
    by_mode = result["by_mode"]
    assert 0 < by_mode["plain"]["tensor_peak_mib"] < by_mode["meta"]["tensor_peak_mib"] == result["tensor_peak_mib"]
    assert result["tensor_peak_mib"] < result["peak_rss_mib"]
    # Resident memory by kind: TensorFlow's libraries are file-backed; the kinds add up to at most the peak.
    breakdown = by_mode["meta"]["rss_breakdown_mib"]
    assert set(breakdown) == {"libraries", "heap", "anonymous"} and min(breakdown.values()) > 0
    assert breakdown["libraries"] > 100 and sum(breakdown.values()) <= result["peak_rss_mib"] + 1

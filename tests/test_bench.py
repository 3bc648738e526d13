"""The benchmarks on tiny workloads: `bench.meta_step`'s JSON line carries timings and the memory figures;
`bench.official_step` (the authors' iteration) runs where a torch Python and their checkout are named."""

import json
import os
import subprocess
import sys

import pytest

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
    # The fair measure against the authors': the peak less the RSS once TensorFlow, Keras and keras_l2t are imported.
    assert 300 < result["import_baseline_rss_mib"] < result["peak_rss_mib"]
    assert result["net_peak_rss_mib"] == pytest.approx(result["peak_rss_mib"] - result["import_baseline_rss_mib"], abs=0.2)
    # Resident memory by kind: TensorFlow's libraries are file-backed; the kinds add up to at most the peak.
    breakdown = by_mode["meta"]["rss_breakdown_mib"]
    assert set(breakdown) == {"libraries", "heap", "anonymous"} and min(breakdown.values()) > 0
    assert breakdown["libraries"] > 100 and sum(breakdown.values()) <= result["peak_rss_mib"] + 1


def test_the_224_workload_source_is_what_keras_hub_builds_for_timm_resnet34():
    """bench.workload's ResNet-34 arguments are those of keras-hub's timm converter (the real source's graph)."""
    pytest.importorskip("keras_hub")
    from keras_hub.src.utils.timm import convert_resnet  # pylint: disable=import-outside-toplevel

    from bench import workload

    assert convert_resnet.convert_backbone_config({"architecture": "resnet34"}) == workload.KERAS_HUB_RESNET34_ARGS


def test_a_fast_mode_costs_the_mean_of_whole_cycles_and_the_others_the_median():
    # In a subprocess: importing bench.meta_step defines its absl flags, which would clash with train's here.
    check = (
        "from bench import meta_step as m\n"
        "assert m.cycle('fast') == 4 and m.cycle('meta') == 1\n"
        "assert m.step_cost_ms('fast', [100, 1000, 100, 100, 100]) == 325\n"  # a 5th step is not a whole cycle
        "assert m.step_cost_ms('meta', [100, 1000, 300]) == 300\n"
    )
    run = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.mark.skipif(
    not (os.environ.get("KERAS_L2T_OFFICIAL_REPO") and os.environ.get("KERAS_L2T_TORCH_PYTHON")),
    reason="needs a checkout of the authors' repository and a Python with torch: set KERAS_L2T_OFFICIAL_REPO "
    "and KERAS_L2T_TORCH_PYTHON (BUILD.md)",
)
@pytest.mark.parametrize("workload", ["32", "224"])
def test_official_step_times_the_authors_iteration(workload):
    command = [
        os.environ["KERAS_L2T_TORCH_PYTHON"], "-m", "bench.official_step",
        f"--official_repo={os.environ['KERAS_L2T_OFFICIAL_REPO']}", f"--workload={workload}", "--batch_size=2",
        "--iters=1", "--warmup=0",
    ]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
    assert result["meta_ms"] > result["plain_ms"] > 0
    assert 0 < result["import_baseline_rss_mib"] < result["peak_rss_mib"]
    assert result["net_peak_rss_mib"] == pytest.approx(result["peak_rss_mib"] - result["import_baseline_rss_mib"], abs=0.2)
    assert result["settings"]["setting"] == {"32": "cifar100", "224": "dog"}[workload]

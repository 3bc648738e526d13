"""The authors' L2T-ww iteration, timed beside a plain step of their target, on the workloads of `bench.meta_step`.

Run it with a Python that has torch (no TensorFlow needed), on a checkout of the
authors' repository (github alinlab/L2T-ww), right before or after
`python -m bench.meta_step` with the same workload and batch on the same machine:

    /path/to/torch-python -m bench.official_step --official_repo=/path/to/L2T-ww --workload=32
    /path/to/torch-python -m bench.official_step --official_repo=/path/to/L2T-ww --workload=224 --batch_size=16

It calls their unmodified `train_l2t_ww.main()` with their README's command line
for the workload (`--workload=32`: CIFAR-100, Tiny-ImageNet ResNet-32 -> VGG-9-BN,
15 pairs; `--workload=224`: Stanford Dogs, ImageNet ResNet-34 at random weights
through the `load_url` their code fetches it with -> ResNet-18, 16 pairs), and
hands their loop random batches instead of a dataset. One meta-iteration is the
time from handing out a batch to the loop asking for the next one: their real
step, T look-ahead steps, outer step, `meta_backward` and Adam step, as their
loop runs them, nothing of it restated here. Between iterations, outside those
intervals, one plain step of their target (zero_grad, forward, cross-entropy,
backward, SGD 0.1/0.9/1e-4) is timed, so both see the same load.

Memory, the fair measure of issue #27: `net_peak_rss_mib` is the peak RSS less
the RSS right after importing torch and their modules, before building
anything (what `bench.meta_step` reports for keras-l2t); on a GPU also
`torch.cuda.max_memory_allocated`. Prints a summary, then one JSON line.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from bench import official_program, process_memory

# Target classes and image side per workload: bench/workload.py's values.
WORKLOADS = {"32": ("cifar100", 100, 32), "224": ("dog", 120, 224)}


class _Stop(Exception):
    """Ends the authors' main() once the timed iterations are done (skips their end-of-epoch evaluation)."""


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official_repo", required=True, help="a checkout of github alinlab/L2T-ww")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="32")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--inner_steps", type=int, default=2, help="T")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations (and plain steps) first")
    parser.add_argument("--iters", type=int, default=4, help="timed meta-iterations (one plain step before each)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    parser.add_argument("--no_plain", action="store_true", help="meta-iterations only (their peak memory alone)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the JSON here")
    return parser.parse_args()


def main():
    args = _parse_args()
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit("--iters must be >= 1 and --warmup >= 0")
    json_path = os.path.abspath(args.json) if args.json else None
    import torch  # pylint: disable=import-outside-toplevel
    import torch.nn.functional as functional  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    official = official_program.import_official(args.official_repo)
    from check_model import check_model  # pylint: disable=import-outside-toplevel
    from models import resnet_ilsvrc  # pylint: disable=import-outside-toplevel

    baseline = process_memory.current_rss_mib()  # torch and the authors' modules imported, nothing built
    setting, num_classes, image_size = WORKLOADS[args.workload]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # what their main() picks
    generator = torch.Generator().manual_seed(args.seed)
    batches = [
        (torch.randn(args.batch_size, 3, image_size, image_size, generator=generator),
         torch.randint(0, num_classes, (args.batch_size,), generator=generator))
        for _ in range(2)
    ]

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    plain_times = []
    if not args.no_plain:
        target_model = check_model(argparse.Namespace(model=("vgg9_bn", "resnet18")[setting == "dog"],
                                                      dataset=setting, num_classes=num_classes)).to(device)
        target_model.train()
        sgd = torch.optim.SGD(target_model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def plain_step(i):
        if args.no_plain:
            return
        x, y = (t.to(device) for t in batches[i % len(batches)])
        synchronize()
        start = time.perf_counter()
        sgd.zero_grad()
        logits, _ = target_model(x)
        loss = functional.cross_entropy(logits, y)
        loss.backward()
        sgd.step()
        loss.item()
        if i >= args.warmup:
            plain_times.append(time.perf_counter() - start)

    # The ImageNet source: random weights where their resnet34(pretrained=True) downloads them.
    original_resnet34 = resnet_ilsvrc.resnet34
    resnet_ilsvrc.model_zoo.load_url = lambda *_, **__: original_resnet34(pretrained=False).state_dict()
    total = args.warmup + args.iters
    handed, asked = [], []

    def loader():
        for i in range(total):
            plain_step(i)  # outside the timed interval of iteration i
            synchronize()
            handed.append(time.perf_counter())
            yield batches[i % len(batches)]
            synchronize()
            asked.append(time.perf_counter())
        raise _Stop()

    def check_dataset(opt):
        opt.num_classes = num_classes

        class Loader:  # pylint: disable=too-few-public-methods
            def __len__(self):
                return total

            def __iter__(self):
                return loader()

        return [Loader(), [], []]

    official.check_dataset = check_dataset
    work_dir = tempfile.mkdtemp(prefix="official_step_")
    sys.argv = official_program.command_line(setting, work_dir, args.batch_size, args.inner_steps)
    load_before = os.getloadavg()
    wall_start = time.perf_counter()
    with open(os.path.join(work_dir, "stdout.log"), "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        try:
            official.main()
        except _Stop:
            pass
    wall_s = time.perf_counter() - wall_start
    meta_times = [end - start for start, end in zip(handed, asked)][args.warmup:]
    if len(meta_times) != args.iters:
        raise SystemExit(f"the authors' loop ran {len(asked)} of {total} iterations")

    peak = process_memory.peak_rss_mib()
    plain_ms = round(1000 * statistics.median(plain_times), 1) if plain_times else None
    meta_ms = round(1000 * statistics.median(meta_times), 1)
    result = {
        "plain_ms": plain_ms,
        "meta_ms": meta_ms,
        "ratio": round(meta_ms / plain_ms, 2) if plain_ms else None,
        "images_per_s": round(args.batch_size / (meta_ms / 1000), 2),
        "peak_rss_mib": round(peak, 1),
        "import_baseline_rss_mib": round(baseline, 1),
        "net_peak_rss_mib": round(peak - baseline, 1),
        "cuda_peak_mib": (round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None),
        "plain_times_ms": [round(1000 * t, 1) for t in plain_times],
        "meta_times_ms": [round(1000 * t, 1) for t in meta_times],
        "settings": {
            "workload": args.workload, "setting": setting, "batch_size": args.batch_size,
            "inner_steps": args.inner_steps, "warmup": args.warmup, "iters": args.iters, "threads": args.threads,
            "device": str(device), "command": sys.argv, "cpu_count": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()], "wall_s": round(wall_s, 1),
        },
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    print(
        f"The authors' L2T-ww ({setting} command, torch {torch.__version__}, {args.threads} threads, {device}): "
        f"batch {args.batch_size}, T={args.inner_steps}, load {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}\n"
        f"  plain step     {plain_ms} ms   steps {result['plain_times_ms']}\n"
        f"  meta-iteration {meta_ms} ms ({result['ratio']}x plain)   iterations {result['meta_times_ms']}\n"
        f"  peak RSS {result['peak_rss_mib']} MiB, {result['net_peak_rss_mib']} MiB above the RSS after the "
        f"imports ({result['import_baseline_rss_mib']} MiB)"
        + (f"; CUDA peak {result['cuda_peak_mib']} MiB" if result["cuda_peak_mib"] is not None else "")
    )
    print(json.dumps(result))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

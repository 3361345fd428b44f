"""The GPU path in one run (`benchmarks/gpu_check.sh`): what a CUDA machine must show before its numbers count.

  1. the demo (`--task all`) on `--device cuda` in fp32 and in bf16, fbank and hubert-tiny-random: wall time
     per upstream and precision, and how far each bf16 score lies from its fp32 score
  2. extraction throughput vs the bare upstream forward on the same batches (hubert-base-random, KS subset),
     fp32 and bf16                                                                        goal >= 0.9x
  3. heads on the GPU vs the CPU: the same KS, SID and PR runs (fbank features from one cache, one lr, same
     seed) trained on each; dev and test must agree within --tolerance (float sums are reduced in another
     order on the GPU, so not to the last digit)
  4. host -> device copies of an extraction-sized batch: pageable vs pinned (`superbench.device.to_device`)

One table at the end. Without CUDA it says so and exits 0; `--device cpu` runs every step on the CPU (a
check of the script itself: the CPU-vs-CPU heads must then agree exactly, and step 4 is skipped).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _options(work: Path, device: str, precision: str, **more):
    from superbench.options import RunOptions

    base = dict(results_dir=work / "results", cache_root=work / "cache", checkpoint_root=work / "ckpt",
                progress=False, profile="fast", device=device, precision=precision)
    return RunOptions.of(**{**base, **more})


def demo_runs(data: Path, device: str, work: Path) -> list[tuple[str, str]]:
    from superbench.runner import run
    from superbench.tasks import TASKS, get_task
    from superbench.upstream import load_upstream

    rows, scores = [], {}
    tasks = [get_task(name) for name in TASKS if (data / name / "meta.json").is_file()]
    for upstream in ("fbank", "hubert-tiny-random"):
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            records = run(load_upstream(upstream), tasks, data, _options(work / f"demo-{precision}", device, precision))
            wall = time.perf_counter() - start
            scores[upstream, precision] = {r.task: r.test for r in records}
            extra = ""
            if precision == "bf16":
                diffs = {t: abs(v - scores[upstream, "fp32"][t]) for t, v in scores[upstream, precision].items()}
                worst = max(diffs, key=diffs.get)
                extra = (f"; |bf16 - fp32| median {statistics.median(diffs.values()):.2f}, "
                         f"max {diffs[worst]:.2f} ({worst})")
            rows.append((f"demo {upstream} {precision}", f"{len(records)} records in {wall:.0f} s{extra}"))
    return rows


def throughput(data: Path, device: str, work: Path, repeats: int) -> list[tuple[str, str]]:
    from bench import bench_throughput, subset

    from superbench.device import resolve_compute
    from superbench.upstream import load_upstream

    up = load_upstream("hubert-base-random")
    ks = subset(data / "ks", work / "subsets", 96, 24)
    rows = []
    for precision in ("fp32", "bf16"):
        compute = resolve_compute(device, precision)
        up.to(compute.device)
        bench_throughput(up, ks / "ks", work / f"warm-{precision}", 1, compute)  # kernels, allocator
        r = bench_throughput(up, ks / "ks", work / f"tp-{precision}", repeats, compute)
        rows.append((f"extraction / bare forward {precision}",
                     f"{r['ratio']:.2f}x (goal >= 0.9x): bare {r['bare_s']:.2f} s, extraction {r['extract_s']:.2f} s, "
                     f"{r['x_realtime']:.0f}x real time"))
    return rows


def heads(data: Path, device: str, work: Path, tolerance: float, steps: int) -> list[tuple[str, str]]:
    from superbench.runner import run
    from superbench.tasks import get_task
    from superbench.upstream import load_upstream

    rows = []
    for task in ("ks", "sid", "pr"):
        if not (data / task / "meta.json").is_file():
            continue
        over = {"train.steps": steps, "train.eval_interval": max(1, steps // 4)}
        got = {}
        for where in ("cpu", device):
            opts = _options(work / f"heads-{where}", where, "fp32", lr_sweep=False, overrides=over,
                            cache_root=work / "heads-cache")  # one cache: the features are the same
            (got[where],) = run(load_upstream("fbank"), [get_task(task)], data, opts)
        a, b = got["cpu"], got[device]
        gap = max(abs(a.test - b.test), abs(a.dev - b.dev))
        verdict = "equal" if gap == 0 else "within tolerance" if gap <= tolerance else "DIFFERENT"
        rows.append((f"heads {task} {device} vs cpu", f"{verdict}: test {b.test:.4f} vs {a.test:.4f}, dev {b.dev:.4f} "
                                                     f"vs {a.dev:.4f} (tolerance {tolerance})"))
    return rows


def transfer(device: str, repeats: int) -> list[tuple[str, str]]:
    import torch

    from superbench.device import pins, to_device

    target = torch.device(device)
    if not pins(torch.device("cpu"), target):
        return [("pinned transfer", f"not used for {device} (only host -> CUDA copies are pinned)")]
    batch = torch.randn(16, 16000 * 16)  # an extraction batch: 256 s of 16 kHz audio, 16 MiB
    rows = []
    for name, move in (("pageable", lambda t: t.to(target)), ("pinned (to_device)", lambda t: to_device(t, target))):
        times = []
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            move(batch)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times[1:])
        rate = batch.numel() * 4 / seconds / 1e9
        rows.append((f"host -> {device} {name}", f"{rate:.1f} GB/s ({seconds * 1e3:.2f} ms)"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a check of the script itself)")
    ap.add_argument("--data", default="demo", help="the demo corpus to run on (demo, demo:tiny, or a data root)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1.0,
                    help="largest dev/test gap of the GPU vs CPU heads, in the metric's points (accuracy %%, PER %%)")
    ap.add_argument("--head-steps", type=int, default=200, help="updates of each GPU-vs-CPU head")
    ap.add_argument("--skip", action="append", default=[], choices=("demo", "throughput", "heads", "transfer"))
    args = ap.parse_args()
    import torch

    from superbench.device import DeviceError, resolve_compute

    try:
        compute = resolve_compute(args.device)
    except DeviceError as exc:
        print(f"gpu check: {exc}; nothing to check on this machine")
        return 0
    logging.basicConfig(level=logging.WARNING)
    from superbench.cli.run import resolve_data

    data = resolve_data(args.data)
    device = str(compute.device)
    print(f"gpu check on {compute.describe()}, torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}), "
          f"data {data}", flush=True)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="superbench-gpu-check-") as tmp:
        work = Path(tmp)
        os.environ["SUPERBENCH_HOME"] = str(work / "home")
        steps = {"demo": lambda: demo_runs(data, device, work),
                 "throughput": lambda: throughput(data, device, work, args.repeats),
                 "heads": lambda: heads(data, device, work, args.tolerance, args.head_steps),
                 "transfer": lambda: transfer(device, args.repeats * 5)}
        for name, step in steps.items():
            if name not in args.skip:
                rows += step()
                print(f"  {rows[-1][0]}: {rows[-1][1]}", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'check':<{width}}  result")
    for name, result in rows:
        print(f"{name:<{width}}  {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

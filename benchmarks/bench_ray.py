"""The ER grid on Ray, 2 workers vs 1 (`make bench` section 7 on the demo; this script alone on a synthetic
ER-shaped corpus that needs no demo): wall times, and where the 2-worker run's time goes.

The grid is ER's: 3 learning rates x 5 folds = 15 trials on cached utterance features (hubert-base-random:
13 layers x 768), trained as one trial group per worker. Each Ray instance is local, started before the
timed run (its start-up, and the workers' import of torch, are not counted). From
`RayExecutor.placements`: the driver's share (plan, manifests, audio keys before the first job; selection
and records after the last), each job's start-up (submitted -> started: scheduling, the worker process, its
arguments), its cache open, its training, and the imbalance of the groups.
Goal: 2 workers >= 1.6x one. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def ray_er_grid(up, data: Path, work: Path, over: dict, workers: int) -> tuple[float, object, object]:
    """The ER grid on a fresh local Ray instance of `workers` CPUs: wall time, the record, and the executor."""
    import ray
    from bench import timed_run

    import superbench.runner as runner

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)

    @ray.remote(num_cpus=1)
    def warm() -> int:  # a worker process imports torch and superbench once; the timed tasks reuse it
        import superbench.executors  # noqa: F401

        return os.getpid()

    ray.get([warm.remote() for _ in range(2 * workers)])
    made, real = [], runner.make_executor
    runner.make_executor = lambda *a, **kw: made.append(real(*a, **kw)) or made[-1]
    try:
        t, rec = timed_run(up, "er", data, work / f"er-ray{workers}", profile="superb", overrides=over,
                           shared_cache=True, executor="ray")
    finally:
        runner.make_executor = real
        ray.shutdown()
    return t, rec, made[-1]


def er_grid_rows(up, data: Path, work: Path, over: dict) -> list[str]:
    """Local, Ray 1 worker and Ray 2 workers on the same cached features; the lines to print."""
    from bench import timed_run

    timed_run(up, "er", data, work / "warm", profile="superb", overrides={"train.steps": 2, "train.eval_interval": 2},
              shared_cache=True)  # extraction, not timed
    tl, rl = timed_run(up, "er", data, work / "er-local", profile="superb", overrides=over, shared_cache=True)
    t1, r1, _ = ray_er_grid(up, data, work, over, 1)
    t2, r2, ex2 = ray_er_grid(up, data, work, over, 2)
    rows = [f"ER grid, {len(rl.trials)} trials x {over['train.steps']} updates: local {tl:.1f} s, Ray 1 worker "
            f"{t1:.1f} s, Ray 2 workers {t2:.1f} s: 2 vs 1 x{t1 / t2:.2f} (goal >= 1.6x), 2 vs local x{tl / t2:.2f}; "
            f"same test accuracy: {r1.test == r2.test == rl.test}"]
    jobs = sorted(ex2.placements, key=lambda p: p.submitted)
    if not jobs:
        return rows
    first, last = min(p.submitted for p in jobs), max(p.finished for p in jobs)
    works = [p.work for p in jobs]
    mean = statistics.fmean(works)
    rows.append(f"2 workers, {t2:.1f} s: driver outside the jobs (plan, manifest, keys; selection, records) "
                f"{t2 - (last - first):.1f} s; jobs from first submit to last finish {last - first:.1f} s")
    rows += [f"  job {k} (node {p.node[:6]}, pid {p.pid}): start-up {p.startup:.2f} s, cache open "
             f"{p.opened - p.started:.2f} s, training {p.work:.1f} s" for k, p in enumerate(jobs)]
    rows.append(f"imbalance: longest / mean job {max(works) / mean:.2f}; the 1-worker run trained its one group of "
                f"15 in {r1.wall_time['training']:.1f} s, {r1.wall_time['training'] / mean:.2f}x a 2-worker group's "
                f"mean ({mean:.1f} s): the speed-up of the training itself; 1-worker driver outside training "
                f"{t1 - r1.wall_time['training']:.1f} s")
    rows += group_cost_rows(up, data, work, over, len(rl.trials), r1.wall_time["training"], t1 / t2)
    return rows


def group_cost_rows(up, data: Path, work: Path, over: dict, k_all: int, g_all: float, speedup: float) -> list[str]:
    """The training time g(K) of one stacked group of K trials on one worker (K = 5 and 10: the grid with one and
    two of its learning rates; K = 15 from the 1-worker run), a least-squares line g(K) = a + b K through the three,
    and the 2-worker bound it sets: two workers train groups of ceil(15 / 2) = 8 and 7, so their training cannot
    beat g(15) / g(8), whatever the start-up and the transfers cost."""
    import numpy as np

    from superbench.tasks import get_task

    grid = list(get_task("er").load_recipe("superb").train.lr_grid)
    ks, gs = [], []
    for n_lr in range(1, len(grid)):
        _, rec, _ = ray_er_grid(up, data, work, {**over, "train.lr_grid": grid[:n_lr]}, 1)
        ks.append(len(rec.trials))
        gs.append(rec.wall_time["training"])
    ks.append(k_all)
    gs.append(g_all)
    b, a = np.polyfit(ks, gs, 1)
    half = -(-k_all // 2)
    bound = (a + b * k_all) / (a + b * half)
    return ["one stacked group on one worker: " + ", ".join(f"K={k} {g:.1f} s" for k, g in zip(ks, gs))
            + f"; g(K) = {a:.1f} s + {b:.2f} s x K (a: what a group pays whatever its size: the per-update "
            f"loop, the batch draws, the evaluations' passes, the resident features)",
            f"bound on 2 workers (groups of {half} and {k_all - half}): g({k_all}) / g({half}) = x{bound:.2f}; "
            f"measured x{speedup:.2f}"]


def er_shaped_corpus(root: Path, clips_per_class: int) -> Path:
    """Four tone classes in train/dev/test and five folds over them: the ER grid's shape without the demo."""
    from superbench.manifest import Fold
    from superbench.testing import make_class_corpus

    folds = [Fold(f"fold{k}", "train", "dev", "test") for k in range(1, 6)]
    n = clips_per_class
    make_class_corpus(root, task="er", n_classes=4, per_class=(n, n // 4, n // 4), folds=folds)
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="a data root with an er task (default: synthetic)")
    ap.add_argument("--clips", type=int, default=160, help="training clips per class of the synthetic corpus")
    ap.add_argument("--er-steps", type=int, default=1000, help="updates per trial")
    args = ap.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("Ray is not installed (pip install 'superbench[ray]'): nothing to measure")
        return 0
    from superbench.upstream import load_upstream

    load = os.getloadavg()
    print(f"Ray ER grid on {os.cpu_count()} CPU(s), load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="superbench-ray-") as tmp:
        work = Path(tmp)
        os.environ["SUPERBENCH_HOME"] = str(work / "home")
        data = args.data or er_shaped_corpus(work / "data", args.clips)
        over = {"train.steps": args.er_steps, "train.eval_interval": max(1, args.er_steps // 3)}
        start = time.perf_counter()
        for line in er_grid_rows(load_upstream("hubert-base-random"), data, work, over):
            print(line, flush=True)
    load = os.getloadavg()
    print(f"total {time.perf_counter() - start:.0f} s; load at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

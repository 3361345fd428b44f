"""`superbench run ...` (benchmark an upstream) and `superbench tasks list`."""

from __future__ import annotations

import argparse
from pathlib import Path

RUN_EPILOG = """\
examples:
  superbench run --upstream fbank --task all --data demo
  superbench run --upstream hubert-tiny-random --task ks,sid --seeds 3
  superbench run --upstream my_model.py:MyUpstream --task pr --data /data/superb --profile superb
  superbench run --upstream hubert --upstream-path ./hubert-base-ls960 --task er --layer last

Features are extracted once per (upstream, corpus) into the cache ($SUPERBENCH_HOME/features);
re-runs reuse them. One JSON record per (upstream, task, seed) goes to --results; existing records
are skipped unless --overwrite. Interrupted (Ctrl-C, kill)? Run the same command again: the
extraction resumes by chunk, finished (lr, fold) trials are reused and the running one continues
from its last dev evaluation ($SUPERBENCH_HOME/checkpoints), with the same result.
"""


def _layer(value: str) -> int | str:
    if value == "last":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layer must be an integer or 'last', got {value!r}") from None


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="benchmark an upstream on SUPERB tasks",
                       description="Extract features once, train the SUPERB heads (learning-rate sweep on dev, "
                                   "best dev checkpoint scored on test), write result records.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", required=True, metavar="NAME",
                   help="registered name (see `superbench upstreams list`), NAME=DIR, file.py:Class or s3prl:HUB")
    p.add_argument("--upstream-path", metavar="DIR", help="local weights directory for the upstream")
    p.add_argument("--task", required=True, metavar="TASK",
                   help="pr, asr, ks, sid, er, a comma-separated list, or 'all'")
    p.add_argument("--data", default="demo", metavar="demo|DATA_ROOT",
                   help="'demo' (synthetic offline corpus, built on first use; 'demo:tiny' for the small one) "
                        "or a prepared data root with <task>/meta.json folders (default: demo)")
    p.add_argument("--seeds", type=_positive, default=1, metavar="N",
                   help="train with seeds 0..N-1; a record per seed, mean ± std printed (default: 1)")
    p.add_argument("--layer", type=_layer, default=None, metavar="K|last",
                   help="probe a single layer instead of the learned weighted sum")
    p.add_argument("--profile", choices=["fast", "superb", "ci"], default=None,
                   help="recipe profile: superb (s3prl schedules), fast (demo-scale) or ci (smoke-scale, for "
                        "regression checks); default: fast with --data demo, superb otherwise")
    p.add_argument("--lr", type=float, default=None, metavar="X", help="fixed learning rate (no sweep)")
    p.add_argument("--no-lr-sweep", dest="lr_sweep", action="store_false",
                   help="use the recipe's single lr instead of sweeping its lr_grid on dev")
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="run the upstream on every training step (s3prl's way; for corpora too big to cache)")
    p.add_argument("--overwrite", action="store_true", help="redo tasks whose records already exist")
    p.add_argument("--results", type=Path, default=None, metavar="DIR",
                   help="where result records go (default: $SUPERBENCH_RESULTS or ./results)")
    p.add_argument("--no-store", dest="store", action="store_false",
                   help="do not add records to the leaderboard database")
    p.add_argument("--db", type=Path, default=None, metavar="PATH", help="leaderboard database path")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.set_defaults(func=cmd_run)

    t = sub.add_parser("tasks", help="list the SUPERB tasks")
    tsub = t.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    tl = tsub.add_parser("list", help="name, metric, direction, level and recipe version of each task")
    tl.set_defaults(func=cmd_tasks_list)
    t.set_defaults(func=cmd_tasks_list)


def cmd_run(args: argparse.Namespace) -> int:
    from superbench.runner import RunOptions, resolve_tasks, run, summarize
    from superbench.upstream import load_upstream

    tasks = resolve_tasks(args.task)  # fail on a typo before loading a model
    upstream = load_upstream(args.upstream, path=args.upstream_path)
    opts = RunOptions(data=args.data, seeds=args.seeds, profile=args.profile, layer=args.layer, lr=args.lr,
                      lr_sweep=args.lr_sweep, use_cache=args.use_cache, results_dir=args.results,
                      overwrite=args.overwrite, store=args.store, db_path=args.db, progress=args.progress)
    records = run(upstream, tasks, opts)
    rows = summarize(records)
    if rows:
        print(f"{'upstream':<22} {'task':<5} {'metric':<6} {'test':>15} {'dev':>7} {'lr':>8} "
              f"{'profile':<7} {'extract s':>9} {'train s':>8}")
        for r in rows:
            score = f"{r['test_mean']:.2f}" + (f" ± {r['test_std']:.2f}" if r["seeds"] > 1 else "")
            print(f"{r['upstream']:<22} {r['task']:<5} {r['metric']:<6} {score:>15} {r['dev_mean']:>7.2f} "
                  f"{r['lr']:>8.0e} {r['profile']:<7} {r['extraction_s']:>9.1f} {r['training_s']:>8.1f}")
    return 0


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from recipes import load_recipe
    from superbench.tasks import TASK_ORDER, get_task

    print(f"{'task':<5} {'metric':<6} {'direction':<17} {'level':<10} {'recipe':<7} description")
    for name in TASK_ORDER:
        task = get_task(name)
        version = load_recipe(name, "superb")["version"]
        print(f"{name:<5} {task.metric:<6} {task.direction:<17} {task.level:<10} {'v' + version:<7} "
              f"{task.description}")
    return 0

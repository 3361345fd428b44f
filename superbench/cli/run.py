"""`superbench run ...` (benchmark an upstream) and `superbench tasks list`."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from superbench.options import (
    CACHE_DTYPES,
    EXECUTORS,
    MAX_SEEDS,
    PRECISIONS,
    ExecutionOptions,
    LayerChoice,
    RunHooks,
)

log = logging.getLogger(__name__)

RUN_EPILOG = """\
examples:
  superbench run --upstream fbank --task all --data demo
  superbench run --upstream hubert-tiny-random --task ks,sid --seeds 3
  superbench run --upstream my_model.py:MyUpstream --task pr --data /data/superb --profile superb
  superbench run --upstream hubert --upstream-path ./hubert-base-ls960 --task er --layer last
  superbench run --upstream hubert-tiny-random --task ks --layer all   # one probe per layer: score vs layer
  superbench run --upstream fbank --task ks --set train.steps=50 --set head.proj_dim=64

Features are extracted once per (upstream, audio) into the cache ($SUPERBENCH_HOME/features);
re-runs and other tasks over the same audio reuse them. One JSON record per run goes to --results
($SUPERBENCH_RESULTS, default $SUPERBENCH_HOME/results), under
<upstream>/<fingerprint>/<profile>-r<recipe version>/; a run is identified by the upstream's name
and weights, the task, the data, the recipe version and profile, the layer and the seed, and an
existing record of that identity is skipped unless --overwrite. Before any extraction, every task
folder, --layer, the labels and the free disk are checked for all tasks. Interrupted (Ctrl-C,
kill)? Run the same command again: the extraction resumes by chunk, finished (lr, fold) trials are
reused and the running one continues from its last dev evaluation ($SUPERBENCH_HOME/checkpoints),
with the same result. Beside each record: the best head (<stem>.head.pt) and its dev/test
predictions (<stem>.predictions.jsonl), listed in the record's "artifacts"; for tasks whose head gives
back audio (SE, SS), the waveforms of the first --keep-audio test utterances (<stem>.audio/*.wav).
"""


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """argparse type: a decimal integer in lo..hi (a loop count must be sane: `1e11` or 10**30 is a usage
    error, never a traceback)."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {value!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {value}")
        return n

    parse.__name__ = "integer"
    return parse


#: Most torch threads one may ask for.
MAX_THREADS = 1024
#: Largest layer index accepted on the command line (the upstream's own count is checked before any work).
MAX_LAYER = 9999

_positive = _int_in(1, MAX_THREADS)


def _layer(value: str) -> LayerChoice:
    """--layer as a LayerChoice (parsed there, the one place), at most MAX_LAYER on the command line."""
    try:
        choice = LayerChoice.parse(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layer must be an integer, 'last' or 'all', got {value!r}") from None
    if isinstance(choice.value, int) and choice.value > MAX_LAYER:
        raise argparse.ArgumentTypeError(f"--layer must be a layer index in 0..{MAX_LAYER}, 'last' or 'all', "
                                         f"got {value}")
    return choice


def _lr(value: str) -> float:
    import math

    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lr must be a number, got {value!r}") from None
    if not math.isfinite(x) or not 0 < x <= 10:
        raise argparse.ArgumentTypeError(f"--lr must be a finite learning rate in (0, 10], got {value}")
    return x


def _override(value: str) -> tuple[str, object]:
    """argparse type of `--set section.key=value`: the value read as YAML (numbers, lists, true/false)."""
    import yaml

    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes section.key=value (e.g. train.steps=50), got {value!r}")
    try:
        parsed = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"--set {key}: {raw!r} is not a YAML value ({exc})") from None
    return key.strip(), _numbers(parsed)


def _numbers(value: object) -> object:
    """YAML 1.1 reads `1e-3` (no dot) as text: such numbers become floats, in lists too."""
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        import math

        return number if math.isfinite(number) and any(c.isdigit() for c in value) else value
    return value


def overrides_from_args(sets: list[tuple[str, object]] | None) -> dict[str, object]:
    """`--set` pairs as RunIdentity.overrides (a later --set of the same key wins)."""
    return dict(sets or [])


def check_overrides(tasks: list, profile: str, overrides: dict[str, object]) -> None:
    """Every `--set` key and value is valid for every task's recipe (RecipeError, exit 2, before any work)."""
    for task in tasks:
        task.load_recipe(profile).with_overrides(overrides)


def _selection_args(p: argparse.ArgumentParser) -> None:
    """What a run is (model, tasks, data, recipe, device): the options `run` and `plan` share."""
    p.add_argument("--cache-dtype", default="fp16", choices=CACHE_DTYPES,
                   help="frame caches (PR/ASR) as float16, or int8 with a scale per utterance, layer and channel "
                        "(half the bytes; a cache and records of their own, profile +int8); utterance caches "
                        "are float32 either way")
    p.add_argument("--upstream", required=True, metavar="NAME",
                   help="registered name (see `superbench upstreams list`), NAME=DIR, file.py:Class or s3prl:HUB")
    p.add_argument("--upstream-path", metavar="DIR", help="local weights directory for the upstream")
    p.add_argument("--task", required=True, metavar="TASK",
                   help="pr, asr, ks, sid, er, st, ... (see `superbench tasks list`), a task group (ood_asr: "
                        "ood_es, ood_zh, ood_ar, ood_sbcsae), a comma-separated list, 'all', or file.py:NAME for a "
                        "task declared in a plugin file")
    p.add_argument("--data", default="demo", metavar="demo|DATA_ROOT",
                   help="'demo' (synthetic offline corpus, built on first use; 'demo:tiny' for the small one) "
                        "or a prepared data root with <task>/meta.json folders (default: demo)")
    p.add_argument("--seeds", type=_int_in(1, MAX_SEEDS), default=1, metavar="N",
                   help=f"train with seeds 0..N-1 (N in 1..{MAX_SEEDS}); a record per seed, mean ± std printed "
                        f"(default: 1)")
    p.add_argument("--layer", type=_layer, default=None, metavar="K|last|all",
                   help="probe a single layer instead of the learned weighted sum; 'all' probes every layer of "
                        "the upstream in turn (one record per layer, one extraction), for a score-vs-layer figure")
    p.add_argument("--profile", default=None, metavar="superb|fast|ci",
                   help="recipe profile: superb (s3prl schedules), fast (demo-scale) or ci (smoke-scale, for "
                        "regression checks); default: fast with --data demo, superb otherwise")
    p.add_argument("--lr", type=_lr, default=None, metavar="X", help="fixed learning rate (no sweep)")
    p.add_argument("--set", dest="sets", action="append", type=_override, default=None,
                   metavar="SECTION.KEY=VALUE",
                   help="override one recipe value, e.g. train.steps=50 or head.proj_dim=64 (repeatable; the value "
                        "is read as YAML: numbers, [lists], true/false); checked against every task's recipe before "
                        "any work; the record's profile becomes <profile>+<digest> and keeps the values")
    p.add_argument("--no-lr-sweep", dest="lr_sweep", action="store_false",
                   help="use the recipe's single lr instead of sweeping its lr_grid on dev")
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="run the upstream on every training step (s3prl's way; for corpora too big to cache)")
    p.add_argument("--results", type=Path, default=None, metavar="DIR",
                   help="where result records go (default: $SUPERBENCH_RESULTS or $SUPERBENCH_HOME/results)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N|mps",
                   help="where the upstream extracts and the heads train: auto (CUDA when available, else MPS, "
                        "else the CPU), cpu, cuda, cuda:N or mps; checked before any work")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="precision of the upstream forward (autocast); bf16/fp16 features get their own cache "
                        "and the records' profile says so (e.g. superb+bf16); heads always train in fp32")


def _thread_args(p: argparse.ArgumentParser) -> None:
    """--threads and --extract-threads: `plan` takes them too, so that its probe runs as the run will."""
    p.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="torch intra-op threads for extraction and for head training (default: torch's own, one "
                        "per core, the fastest measured for both; use 1 when several runs share the cores)")
    p.add_argument("--extract-threads", type=_positive, default=None, metavar="N",
                   help="threads while the upstream extracts features (overrides --threads)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="benchmark an upstream on SUPERB tasks",
                       description="Extract features once, train the SUPERB heads (learning-rate sweep on dev, "
                                   "best dev checkpoint scored on test), write result records.",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _selection_args(p)
    p.add_argument("--overwrite", action="store_true", help="redo tasks whose records already exist")
    p.add_argument("--keep-audio", type=_int_in(0, 1_000_000), default=ExecutionOptions.keep_audio, metavar="N",
                   help="tasks whose head gives back audio (SE, SS): write the first N test utterances' "
                        "waveforms beside the record, to listen to (default %(default)s; 0: none)")
    p.add_argument("--no-store", dest="store", action="store_false",
                   help="do not add records to the leaderboard database")
    p.add_argument("--db", type=Path, default=None, metavar="PATH",
                   help="leaderboard database (default: $SUPERBENCH_DB or $SUPERBENCH_HOME/leaderboard.db)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    _thread_args(p)
    p.add_argument("--train-threads", type=_positive, default=None, metavar="N",
                   help="threads while the heads train (overrides --threads)")
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="where trials train and features are extracted: this process, or Ray tasks and actors "
                        "(pip install 'superbench[ray]'; SUPERBENCH_HOME must then be on a filesystem every "
                        "node sees; records and the leaderboard are written by this process only)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="Ray cluster to join (auto: the one `ray start` runs here); default: start a local one")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="X",
                   help="GPUs per Ray training task; fractions pack several heads on a GPU (e.g. 0.25)")
    p.add_argument("--gpus-per-extractor", type=float, default=0.0, metavar="X",
                   help="GPUs per Ray extraction actor (each holds the upstream once)")
    p.add_argument("--one-trial-at-a-time", dest="group_trials", action="store_false",
                   help="train the trials of a sweep (lrs x seeds x folds) one after the other instead of as one "
                        "batched group (utterance tasks); same scores within float rounding, several times slower")
    p.set_defaults(func=cmd_run)

    q = sub.add_parser("plan", help="what a run would cost, without running it",
                       description="Per task: utterances, hours of audio (and of distinct audio, what the cache "
                                   "holds), cache bytes to write (float16 frames, and as int8), extraction time "
                                   "from a probe of the upstream on this device (the extraction itself on a "
                                   "sample of the run's chunks, after a warm-up batch; its rate is printed), "
                                   "updates x trials of the grid, and the free disk. Loads the manifests and the "
                                   "upstream; trains nothing and writes nothing to the cache.")
    _selection_args(q)
    _thread_args(q)
    q.add_argument("--no-probe", dest="probe", action="store_false",
                   help="do not time the upstream (no extraction-time estimate; for a quick look)")
    q.set_defaults(func=cmd_plan)

    t = sub.add_parser("tasks", help="list the SUPERB tasks (built-in and plugin)")
    tsub = t.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND")
    tl = tsub.add_parser("list", help="name, metric, direction, level and recipe version of each task")
    tl.set_defaults(func=cmd_tasks_list)
    t.set_defaults(func=cmd_tasks_list)


def resolve_data(data: str) -> Path:
    """`demo` / `demo:SIZE` (built on first use) or a data root holding <task>/meta.json folders."""
    from recipes.prepare.demo import demo_size, ensure_demo

    size = demo_size(data)
    if size is not None:
        return Path(ensure_demo(size=size, seed=0))
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist (use --data demo, or a folder made by "
                                f"`superbench data prepare`)")
    return root


def _run_from_args(args: argparse.Namespace, execution: ExecutionOptions | None = None,
                   hooks: RunHooks | None = None, extract_threads: int | None = None,
                   train_threads: int | None = None) -> tuple:
    """(upstream, tasks, data root, RunOptions) of the shared selection options, checked in the order that
    fails fastest: task names, device, recipe overrides, then the upstream and the data. `execution`,
    `hooks` and the thread counts are the run command's own (the plan command takes the defaults)."""
    from superbench.device import resolve_compute
    from superbench.options import ComputeOptions, RunIdentity, RunOptions, RunPaths
    from superbench.tasks import resolve_tasks
    from superbench.upstream import load_upstream

    tasks = resolve_tasks(args.task)  # fail on a typo before loading a model or building data
    resolve_compute(args.device, args.precision)  # no GPU where one is asked for: a usage error, before any work
    from recipes.prepare.demo import demo_size
    from recipes.prepare.no_demo_part import tasks_with_demo_parts

    if demo_size(args.data) is not None:  # `all` or a group on the demo: leave out the tasks it has no part for
        tasks, skipped = tasks_with_demo_parts(tasks, args.task.split(","))
        for note in skipped:
            log.warning(note)
        if not tasks:
            raise ValueError(f"--task {args.task}: the demo corpus has a part for none of these tasks")
    profile = args.profile or ("fast" if demo_size(args.data) is not None else "superb")
    overrides = overrides_from_args(getattr(args, "sets", None))
    check_overrides(tasks, profile, overrides)  # a bad --set is a usage error before any work
    upstream = load_upstream(args.upstream, path=args.upstream_path)
    data_root = resolve_data(args.data)
    identity = RunIdentity(profile=profile, seeds=args.seeds, layer=args.layer, lr=args.lr, lr_sweep=args.lr_sweep,
                           overrides=overrides, upstream_source=upstream_source_of(args.upstream, args.upstream_path))
    compute = ComputeOptions(device=args.device, precision=args.precision, cache_dtype=args.cache_dtype,
                             extract_threads=extract_threads, train_threads=train_threads)
    execution = execution or ExecutionOptions(use_cache=args.use_cache)
    opts = RunOptions(identity=identity, compute=compute, execution=execution,
                      paths=RunPaths(results_dir=args.results), hooks=hooks or RunHooks())
    return upstream, tasks, data_root, opts


def cmd_plan(args: argparse.Namespace) -> int:
    from superbench.plan import estimate_run, format_plan
    from superbench.runner import plan_run

    upstream, tasks, data_root, opts = _run_from_args(args, extract_threads=args.extract_threads or args.threads)
    print(format_plan(estimate_run(plan_run(upstream, tasks, data_root, opts), opts, probe=args.probe)))
    return 0


def _seconds(row: Any, column: str) -> str:
    """A summary row's time; blank on a secondary metric's row (it repeats the run's time, counted once)."""
    return f"{getattr(row, column):.1f}" if getattr(row, "role", "main") == "main" else ""


def task_width(names: Iterable[str]) -> int:
    """Width of a task column: the longest name shown (a plugin task's may be long), never narrower than the
    5 characters the tables had for the built-in names."""
    return max([5, *map(len, names)])


def summary_table(rows: Any) -> str:
    """The end-of-run table of aggregated rows (`superbench.summary.aggregate`), one line per row; the task
    column is as wide as the longest task name, so the columns after it line up."""
    w = task_width(rows["task"])
    lines = [f"{'upstream':<22} {'task':<{w}} {'layer':<5} {'metric':<6} {'test':>15} {'95% CI':>16} {'dev':>7} "
             f"{'lr':>8} {'profile':<16} {'extract s':>9} {'train s':>8}"]
    for r in rows.itertuples():
        score = f"{r.mean:.2f}" + (f" ± {r.std:.2f}" if r.n > 1 else "")
        low, high = getattr(r, "ci_low", math.nan), getattr(r, "ci_high", math.nan)
        ci = f"[{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else "-"
        lines.append(f"{r.upstream:<22} {r.task:<{w}} {r.layer or 'mix':<5} {r.metric:<6} {score:>15} {ci:>16} "
                     f"{r.dev_mean:>7.2f} {r.lr:>8.0e} {r.profile:<16} {_seconds(r, 'extraction_s'):>9} "
                     f"{_seconds(r, 'training_s'):>8}")
    if any(line.split()[0] and "[" in line for line in lines[1:]):
        lines.append("95% CI: percentile bootstrap of the test metric (the seeds' mean) over its units: utterances, "
                     "trial pairs (EER), queries (MTWV) or recordings (DER); 1,000 resamples")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from leaderboard.store import StoreWriter, default_db_path
    from superbench.preflight import check_writable
    from superbench.runner import run
    from superbench.summary import aggregate

    writer = StoreWriter(args.db) if args.store else None
    if writer is not None:  # before any work, like the runner's checks of the results and checkpoints folders
        check_writable((args.db or default_db_path()).parent, "results database's folder",
                       "fix its permissions, choose another database with --db, or run with --no-store")
    execution = ExecutionOptions(use_cache=args.use_cache, overwrite=args.overwrite, executor=args.executor,
                                 address=args.address, gpus_per_trial=args.gpus_per_trial,
                                 gpus_per_extractor=args.gpus_per_extractor, group_trials=args.group_trials,
                                 keep_audio=args.keep_audio)
    hooks = RunHooks(progress=args.progress, show_plan=True, on_record=writer)
    upstream, tasks, data_root, opts = _run_from_args(args, execution, hooks,
                                                      extract_threads=args.extract_threads or args.threads,
                                                      train_threads=args.train_threads or args.threads)
    if args.results is None:
        _warn_about_old_default()
    rows = aggregate(run(upstream, tasks, data_root, opts), by=("upstream", "profile", "layer"), intervals=True)
    if len(rows):
        print(summary_table(rows))
    if writer is not None and writer.failed:
        from superbench.exit_codes import ExitCode

        log.error("%d record(s) are not in the results database %s (see above); their files are kept: run "
                  "`superbench leaderboard sync` (or this command again) to add them", len(writer.failed),
                  writer.db or "(default)")
        return ExitCode.RUNTIME
    return 0


def upstream_source_of(spec: str, path: str | None) -> str:
    """The local weights an upstream spec names (`--upstream-path DIR` or `NAME=DIR`), absolute; "" for none."""
    if path is None and "=" in spec:
        path = spec.split("=", 1)[1]
    if not path:
        return ""
    return str(Path(path).expanduser().resolve())


def _warn_about_old_default() -> None:
    """Records used to default to ./results; say where they go now when an old folder is right here."""
    import os

    from superbench.paths import results_dir

    old = Path("results")
    if (not os.environ.get("SUPERBENCH_RESULTS") and old.is_dir() and old.resolve() != results_dir().resolve()
            and next(old.rglob("*.json"), None) is not None):
        log.warning("./results holds records, but results now default to %s; pass --results results (or set "
                    "SUPERBENCH_RESULTS) to keep using ./results", results_dir())


def cmd_tasks_list(args: argparse.Namespace) -> int:
    from superbench.recipe import read_recipe_file
    from superbench.tasks import TASKS, all_tasks, task_groups

    tasks = all_tasks()
    task_groups()  # a group named as a task is refused here too
    w = task_width(t.name for t in tasks)
    g = max([5, *(len(t.group) for t in tasks if t.group)])
    print(f"{'task':<{w}} {'metric':<6} {'direction':<17} {'level':<10} {'recipe':<7} {'source':<12} {'group':<{g}} "
          f"description")
    for task in tasks:
        version = str(read_recipe_file(task.recipe)["version"])
        print(f"{task.name:<{w}} {task.metric:<6} {task.direction:<17} {task.level:<10} {'v' + version:<7} "
              f"{TASKS.source(task.name):<12} {task.group or '-':<{g}} {task.description}")
    return 0


"""Run the SUPERB protocol for (upstream, tasks, seeds): plan -> extract -> sweep -> select -> record.

Each step is one function, in the order the work happens, chosen so mistakes cost
seconds: `plan_task` loads and checks the manifest and the recipe, derives every seed's
`RunKey` and skips the seeds already recorded — for every task before any feature is
extracted; `extract` runs the upstream once (cached by audio); `sweep` trains one head
per (learning rate, fold); `select` picks the learning rate on dev; `record` writes the
result and hands it to `RunOptions.on_record` (the CLI adds it to the leaderboard store).

Nothing here knows a particular task or upstream: the task's kind builds objective,
targets and head, and the recipe's `upstream` section asks the upstream for a variant.
Nothing is lost when a run is interrupted: the cache resumes by chunk, finished (lr,
fold) trials are kept, and the running trial resumes from its last dev evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from superbench.cache import OnlineFeatures, extract_features
from superbench.io import atomic_write_text
from superbench.manifest import TaskManifest, load_task_manifest
from superbench.paths import checkpoints_dir
from superbench.paths import results_dir as default_results_dir
from superbench.recipe import Recipe
from superbench.results import (
    ResultRecord,
    RunKey,
    environment_versions,
    git_hash,
    now_iso,
    old_layout_records,
    read_record,
    record_path,
    write_record,
)
from superbench.tasks import Task, TaskSetup
from superbench.training import FeatureSource, TrainResult, train
from superbench.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    profile: str = "superb"
    seeds: int = 1
    layer: int | str | None = None  # single-layer probe instead of the weighted sum
    lr: float | None = None  # fixed learning rate (no sweep)
    lr_sweep: bool = True
    use_cache: bool = True
    results_dir: Path | None = None  # None: $SUPERBENCH_RESULTS or ./results
    overwrite: bool = False
    progress: bool = True
    cache_root: Path | None = None  # None: $SUPERBENCH_HOME/features
    checkpoint_root: Path | None = None  # None: $SUPERBENCH_HOME/checkpoints
    #: Recipe values to override ({"train.steps": 50}; a bare key names the one section that has it).
    #: The record's profile then reads "<profile>+<digest>", so such numbers are never the recipe's.
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Called with each record once it is written (the CLI adds it to the leaderboard store).
    on_record: Callable[[ResultRecord], None] | None = None


@dataclass
class TaskPlan:
    """Everything one task's run needs, decided and checked before any expensive work."""

    task: Task
    recipe: Recipe
    manifest: TaskManifest
    model_name: str
    model_fingerprint: str  # the upstream the user chose: what records name
    upstream: Upstream  # the recipe's variant of it, which actually runs
    upstream_fingerprint: str  # of that variant: what the cache is keyed by
    keys: dict[int, RunKey]
    todo: list[int]
    done: list[ResultRecord]
    lrs: list[float]
    results: Path

    def checkpoint_dir(self, seed: int, opts: RunOptions) -> Path:
        """Finished trials and the running one's state, until the record is written."""
        return Path(opts.checkpoint_root or checkpoints_dir()) / self.keys[seed].digest()


@dataclass
class Selection:
    """The learning rate chosen on dev, what its trials measured, and every trial of the sweep."""

    lr: float
    folds: dict[str, TrainResult]
    dev: float
    training_seconds: float
    trials: dict[float, dict[str, TrainResult]]


def plan_task(upstream: Upstream, task: Task, data_root: Path, opts: RunOptions,
              fingerprint: str | None = None) -> TaskPlan:
    """Load and check recipe and manifest, derive each seed's RunKey, find the seeds already done."""
    recipe = task.load_recipe(opts.profile).with_overrides(opts.overrides)
    manifest = load_task_manifest(Path(data_root) / task.name)
    task.check_manifest(manifest)
    model_fp = fingerprint or upstream.fingerprint()
    variant = upstream.variant(**recipe.upstream.given())
    variant_fp = model_fp if variant is upstream else variant.fingerprint()
    results = Path(opts.results_dir or default_results_dir())
    old = old_layout_records(results)
    if old:
        log.warning("%s holds %d record(s) in the first layout (e.g. %s); they are not used to skip runs. "
                    "Move them with `superbench results migrate --results %s`", results, len(old), old[0].name,
                    results)
    keys = {seed: RunKey(upstream.name, model_fp, task.name, manifest.fingerprint, recipe.version,
                         recipe.profile_label, opts.layer, seed) for seed in range(opts.seeds)}
    existing = [s for s, k in keys.items() if record_path(results, k).is_file()]
    if existing and not opts.overwrite:
        log.info("%s/%s: record(s) for seed(s) %s exist under %s; skipping them (use --overwrite to redo)",
                 upstream.name, task.name, existing, results)
    skip = [] if opts.overwrite else existing
    return TaskPlan(task=task, recipe=recipe, manifest=manifest, model_name=upstream.name,
                    model_fingerprint=model_fp, upstream=variant, upstream_fingerprint=variant_fp, keys=keys,
                    todo=[s for s in keys if s not in skip], done=[read_record(record_path(results, keys[s]))
                                                                  for s in skip],
                    lrs=recipe.lrs(opts.lr, opts.lr_sweep), results=results)


def extract(plan: TaskPlan, opts: RunOptions) -> tuple[FeatureSource, float]:
    """Features for every utterance of the manifest (once, cached by audio), and the seconds it took."""
    start = time.perf_counter()
    if opts.use_cache:
        source: FeatureSource = extract_features(plan.upstream, plan.manifest, plan.task.level,
                                                 root=opts.cache_root, progress=opts.progress,
                                                 fingerprint=plan.upstream_fingerprint)
    else:
        source = OnlineFeatures(plan.upstream, plan.manifest)
    return source, time.perf_counter() - start


def sweep(plan: TaskPlan, setup: TaskSetup, source: FeatureSource, seed: int,
          opts: RunOptions) -> dict[float, dict[str, TrainResult]]:
    """One trained head per (learning rate, fold); finished trials survive an interruption."""
    partial = plan.checkpoint_dir(seed, opts)
    if opts.overwrite:
        shutil.rmtree(partial, ignore_errors=True)
    identity = {"key": plan.keys[seed].as_tuple(), "variant": plan.upstream_fingerprint,
                "recipe": dataclasses.asdict(plan.recipe)}
    rows = {split: plan.manifest.splits[split] for split in plan.manifest.splits}

    def data(split: str) -> tuple[list[str], list[Any]]:
        return [u.id for u in rows[split]], [setup.target_of(u) for u in rows[split]]

    name, task = plan.model_name, plan.task.name
    trials: dict[float, dict[str, TrainResult]] = {}
    for lr in plan.lrs:
        cfg = dataclasses.replace(plan.recipe.train, lr=lr, seed=seed)
        trials[lr] = {}
        for fold in plan.manifest.folds:
            desc = f"{name}/{task} seed {seed} lr {lr:g}" + (f" {fold.name}" if len(plan.manifest.folds) > 1 else "")
            key = _trial_key(identity, cfg, fold.name)
            trial_file = partial / f"lr{lr:g}-{fold.name}.json"
            result = _finished_trial(trial_file, key)
            if result is None:
                checkpoint = trial_file.with_suffix(".pt")
                result = train(setup.make_head, setup.objective, source, data(fold.train), data(fold.dev),
                               data(fold.test), cfg, progress=opts.progress, desc=desc, checkpoint=checkpoint,
                               checkpoint_key=key)
                atomic_write_text(trial_file, json.dumps({"key": key, "result": result.to_dict()}) + "\n")
                checkpoint.unlink(missing_ok=True)
            else:
                log.info("%s: finished before the interruption, reusing it (%s)", desc, trial_file)
            trials[lr][fold.name] = result
            log.info("%s: dev %s %.2f (best step %d)", desc, plan.task.metric, result.dev, result.best_step)
    return trials


def select(plan: TaskPlan, trials: dict[float, dict[str, TrainResult]]) -> Selection:
    """The learning rate with the best mean dev metric over folds (direction-aware)."""
    mean_dev = {lr: statistics.fmean(r.dev for r in folds.values()) for lr, folds in trials.items()}
    pick = max if plan.task.higher_is_better else min
    best = pick(plan.lrs, key=lambda lr: mean_dev[lr])
    spent = sum(r.seconds for folds in trials.values() for r in folds.values())
    return Selection(best, trials[best], mean_dev[best], spent, trials)


def record(plan: TaskPlan, seed: int, chosen: Selection, extraction_seconds: float,
           opts: RunOptions) -> ResultRecord:
    """Write the seed's result record (atomically), hand it on, and clear its checkpoints."""
    folds = chosen.folds
    n_layers = len(next(iter(folds.values())).layer_weights)
    weights = [round(statistics.fmean(r.layer_weights[i] for r in folds.values()), 6) for i in range(n_layers)]
    key = plan.keys[seed]
    task = plan.task
    result = ResultRecord(
        upstream=key.upstream, upstream_fingerprint=key.upstream_fingerprint, task=task.name,
        metric=task.metric, higher_is_better=task.higher_is_better,
        test=round(statistics.fmean(r.test for r in folds.values()), 4), dev=round(chosen.dev, 4), seed=seed,
        recipe_version=key.recipe_version, profile=key.profile, lr=chosen.lr, steps=plan.recipe.train.steps,
        layer_weights=weights, layer=key.layer, corpus=plan.manifest.corpus, manifest_fingerprint=key.data,
        folds={name: {"dev": round(r.dev, 4), "test": round(r.test, 4), "best_step": r.best_step}
               for name, r in folds.items()} if len(folds) > 1 else {},
        trials=[{"lr": lr, "fold": fold, "dev": round(r.dev, 4), "test": round(r.test, 4), "best_step": r.best_step,
                 "history": [[int(step), round(float(dev), 4)] for step, dev in r.history]}
                for lr, by_fold in chosen.trials.items() for fold, r in by_fold.items()],
        wall_time={"extraction": round(extraction_seconds, 3), "training": round(chosen.training_seconds, 3)},
        versions=environment_versions(), git_hash=git_hash(), created_at=now_iso())
    path = write_record(result, plan.results)
    log.info("%s/%s seed %d: test %s %.2f (dev %.2f, lr %g) -> %s", key.upstream, task.name, seed,
             task.metric, result.test, result.dev, chosen.lr, path)
    if opts.on_record is not None:
        opts.on_record(result)
    shutil.rmtree(plan.checkpoint_dir(seed, opts), ignore_errors=True)
    return result


def execute(plan: TaskPlan, opts: RunOptions) -> list[ResultRecord]:
    """Extract, then sweep -> select -> record for every seed still to do.

    Records found on disk are handed to `on_record` too, so a store that missed one (a run killed
    between the file and the database write) catches up on the rerun.
    """
    if opts.on_record is not None:
        for found in plan.done:
            opts.on_record(found)
    if not plan.todo:
        return list(plan.done)
    source, extraction = extract(plan, opts)
    setup = plan.task.kind.setup(plan.task, plan.manifest, plan.recipe.head, plan.upstream.num_layers,
                                 plan.upstream.hidden_size, opts.layer)
    out = list(plan.done)
    for seed in plan.todo:
        trials = sweep(plan, setup, source, seed, opts)
        out.append(record(plan, seed, select(plan, trials), extraction, opts))
        extraction = 0.0  # paid once, by the first seed's record
    return out


def run_task(upstream: Upstream, task: Task, data_root: Path, opts: RunOptions,
             fingerprint: str | None = None) -> list[ResultRecord]:
    """All seeds of one task; returns the records written (or found, when skipped)."""
    return execute(plan_task(upstream, task, data_root, opts, fingerprint), opts)


def run(upstream: Upstream, tasks: Sequence[Task], data_root: Path, opts: RunOptions) -> list[ResultRecord]:
    """Every task: all of them planned (and checked) first, then each extracted and trained in turn.

    The upstream's fingerprint (a hash of all its weights) is computed once here.
    """
    fingerprint = upstream.fingerprint()
    plans = [plan_task(upstream, task, data_root, opts, fingerprint) for task in tasks]
    return [r for plan in plans for r in execute(plan, opts)]


def _trial_key(identity: dict[str, Any], cfg: Any, fold: str) -> str:
    """Identity of one (seed, lr, fold) training run: saved state is reused only under the same key."""
    what = {**identity, "config": dataclasses.asdict(cfg), "fold": fold}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _finished_trial(path: Path, key: str) -> TrainResult | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return TrainResult.from_dict(saved["result"]) if saved.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None

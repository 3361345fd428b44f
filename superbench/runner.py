"""Run the SUPERB protocol for (upstream, tasks, seeds): plan -> extract -> sweep -> select -> record.

Each step is one function, in the order the work happens, chosen so mistakes cost
seconds: `run` first checks what every requested task needs (its data folder, `--layer`
against the upstream), `plan_task` loads and checks the manifest and the recipe, derives
every seed's `RunKey` and skips the seeds already recorded, and `check_disk` compares the
features still to extract with the free space — for every task before any feature is
extracted; `extract` runs the upstream once (cached by audio); `sweep` trains one head
per (learning rate, fold); `select` picks the learning rate on dev; `record` writes the
result and hands it to `RunHooks.on_record` (the CLI adds it to the leaderboard store). The options
are superbench.options' `RunOptions`, in five parts (identity, compute, execution, paths, hooks).

Nothing here knows a particular task or upstream: the task's kind builds objective,
targets and head, and the recipe's `upstream` section asks the upstream for a variant.
Nothing is lost when a run is interrupted: the cache resumes by chunk, finished (lr,
fold) trials are kept, and the running trial resumes from its last dev evaluation.

The plan is `superbench.task_plan`, the checks before any work `superbench.preflight`, the sweep
and the choice of lr `superbench.sweep`, the trials' files `superbench.trial_files` and what a
record keeps beside it `superbench.artifacts`.

One run at a time works on a run key: `execute` holds the key's lock (`TaskPlan.lock_path`) from the
sweep to the record, so an identical run started meanwhile waits, then finds the record and skips the
seed; it never trains into, or removes, a checkpoint folder another run still needs.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from superbench.artifacts import write_artifacts
from superbench.device import torch_threads
from superbench.downstream import FeatureSource
from superbench.executors import LocalExecutor, RayExecutor, make_executor
from superbench.features.extraction import extract_features
from superbench.features.keys import audio_keys
from superbench.features.online import OnlineFeatures
from superbench.io import run_lock
from superbench.manifest import load_task_manifest
from superbench.options import RunOptions
from superbench.plan import estimate_run, format_plan
from superbench.preflight import (
    check_disk,
    check_output_folders,
    check_task_folders,
)
from superbench.provenance import environment_versions, git_hash, now_iso
from superbench.records import ResultRecord, record_path, with_intervals, write_record
from superbench.sweep import select, sweep
from superbench.task_plan import Selection, TaskPlan, plan_task, records_to_keep
from superbench.tasks import Task
from superbench.training import TrainResult
from superbench.upstream import Upstream, as_upstream

log = logging.getLogger(__name__)


def extract(plan: TaskPlan, opts: RunOptions,
            executor: LocalExecutor | RayExecutor | None = None) -> tuple[FeatureSource, float]:
    """Features for every utterance of the manifest (once, cached by audio), and the seconds it took."""
    start = time.perf_counter()
    plan.upstream.to(plan.compute.device)
    pool = executor.extractor_pool() if executor else None
    if pool is not None and plan.load_spec is not None:
        pool.rebuild = (plan.load_spec, plan.recipe.upstream.given(), plan.variant_fingerprint)
    if opts.execution.use_cache:
        with torch_threads(opts.compute.extract_threads):
            source: FeatureSource = extract_features(plan.upstream, plan.manifest, plan.task.level,
                                                     root=opts.paths.cache_root, progress=opts.hooks.progress,
                                                     fingerprint=plan.upstream_fingerprint, keys=plan.audio_keys,
                                                     compute=plan.compute,
                                                     pool=pool,
                                                     frame_dtype=opts.compute.cache_dtype)
    else:  # the upstream runs inside training, so under `train_threads`
        source = OnlineFeatures(plan.upstream, plan.manifest, plan.compute)
    return source, time.perf_counter() - start


def record(plan: TaskPlan, seed: int, chosen: Selection, extraction_seconds: float,
           opts: RunOptions, scorers: dict[str, str] | None = None) -> ResultRecord:
    """Write the seed's result record (atomically), hand it on, and clear its checkpoints; `scorers` (the
    objective's vocoder, recogniser, ...) join the package versions."""
    folds = chosen.folds
    n_layers = len(next(iter(folds.values())).layer_weights)
    weights = [round(statistics.fmean(r.layer_weights[i] for r in folds.values()), 6) for i in range(n_layers)]
    key = plan.keys[seed]
    task = plan.task
    artifacts = write_artifacts(plan, seed, chosen, opts)
    result = ResultRecord(
        upstream=key.upstream, upstream_fingerprint=key.upstream_fingerprint, task=task.name,
        metric=task.metric, higher_is_better=task.higher_is_better, task_info=task.info,
        test=round(statistics.fmean(r.test for r in folds.values()), 4), dev=round(chosen.dev, 4), seed=seed,
        recipe_version=key.recipe_version, profile=key.profile, lr=chosen.lr, steps=plan.recipe.train.steps,
        layer_weights=weights, layer=key.layer, corpus=plan.manifest.corpus, manifest_fingerprint=key.data,
        folds={name: {"dev": round(r.dev, 4), "test": round(r.test, 4), "best_step": r.best_step}
               for name, r in folds.items()} if len(folds) > 1 else {},
        trials=[{"lr": lr, "fold": fold, "dev": round(r.dev, 4), "test": round(r.test, 4), "best_step": r.best_step,
                 "history": [[int(step), round(float(dev), 4)] for step, dev in r.history],
                 **({"secondary": r.secondary} if r.secondary else {})}
                for lr, by_fold in chosen.trials.items() for fold, r in by_fold.items()],
        wall_time={"extraction": round(extraction_seconds, 3), "training": round(chosen.training_seconds, 3)},
        versions={**environment_versions(), **(scorers or {})}, git_hash=git_hash(), created_at=now_iso(),
        features_fingerprint=plan.upstream_fingerprint, upstream_source=plan.upstream_source,
        audio_fingerprint=plan.audio_fingerprint,
        overrides=json.loads(json.dumps(plan.recipe.overrides, default=str)), artifacts=artifacts,
        device=plan.compute.describe(), precision=plan.compute.precision, secondary=_secondary_means(folds),
        units=_units_of(folds))
    result = with_intervals(result)
    path = write_record(result, plan.results)
    log.info("%s/%s seed %d: test %s %.2f%s (dev %.2f, lr %g) -> %s", key.upstream, task.name, seed,
             task.metric, result.test, _interval_text(result), result.dev, chosen.lr, path)
    shutil.rmtree(plan.checkpoint_dir(seed, opts), ignore_errors=True)  # the record is safe on disk
    if opts.hooks.on_record is not None:
        opts.hooks.on_record(result)
    return result


def _units_of(folds: dict[str, TrainResult]) -> dict[str, list[dict[str, Any]]]:
    """{metric: per-fold unit scores} for the metrics every fold of the chosen lr has them for."""
    results = list(folds.values())
    return {name: [r.units[name] for r in results] for name in results[0].units
            if all(name in r.units for r in results)}


def _interval_text(record: ResultRecord) -> str:
    """' [low, high]' (the 95 % interval) when the record has one, else ''."""
    if record.test_ci is None:
        return ""
    return f" [{record.test_ci[0]:.2f}, {record.test_ci[1]:.2f}]"


def _secondary_means(folds: dict[str, TrainResult]) -> dict[str, dict[str, float]]:
    """{"cer": {"dev": mean, "test": mean}} over the folds of the chosen lr (every fold has the same metrics)."""
    names = sorted({name for r in folds.values() for name in r.secondary.get("test", {})})
    return {name: {role: round(statistics.fmean(r.secondary[role][name] for r in folds.values()), 4)
                   for role in ("dev", "test")} for name in names}


def execute(plan: TaskPlan, opts: RunOptions, features: tuple[FeatureSource, float] | None = None,
            executor: LocalExecutor | RayExecutor | None = None) -> list[ResultRecord]:
    """Extract (unless `features` from an earlier plan of the same task is given), then
    sweep -> select -> record for every seed still to do.

    Records found on disk are handed to `on_record` too, so a store that missed one (a run killed
    between the file and the database write) catches up on the rerun. The seeds' locks are held
    throughout, so an identical run at the same time waits for this one and then skips.
    """
    with ExitStack() as held:
        _claim_seeds(plan, opts, held)
        return _execute_claimed(plan, opts, features, executor)


def _claim_seeds(plan: TaskPlan, opts: RunOptions, held: ExitStack) -> None:
    """Lock every seed still to do (in key order, so two runs never wait on each other), waiting for
    another run that holds one; a seed that run recorded meanwhile moves to `plan.done` (unless
    --overwrite). Leftover checkpoints of recorded seeds are removed where no run holds them."""
    for seed in sorted(plan.todo, key=lambda s: plan.keys[s].digest()):
        held.enter_context(run_lock(plan.lock_path(seed, opts), waiting=(
            f"{plan.keys[seed].describe()}: another run is working on it ({plan.lock_path(seed, opts)}); "
            "waiting for it to finish")))
        if opts.execution.overwrite:
            continue
        for found in records_to_keep({seed: plan.keys[seed]}, plan.results, plan.audio_fingerprint):
            log.info("%s: recorded by another run meanwhile (%s); skipping it", plan.keys[seed].describe(),
                     record_path(plan.results, plan.keys[seed]))
            plan.todo.remove(seed)
            plan.done.append(found)
    for found in plan.done:
        leftover = plan.checkpoint_dir(found.seed, opts)
        if not leftover.exists():
            continue
        with run_lock(plan.lock_path(found.seed, opts), blocking=False) as free:
            if free:  # the run was killed after its record was written
                log.info("%s: already recorded; removing its leftover checkpoints %s",
                         plan.keys[found.seed].describe(), leftover)
                shutil.rmtree(leftover, ignore_errors=True)


def _execute_claimed(plan: TaskPlan, opts: RunOptions, features: tuple[FeatureSource, float] | None,
                     executor: LocalExecutor | RayExecutor | None) -> list[ResultRecord]:
    """`execute` once this run holds the locks of every seed it does."""
    if opts.hooks.on_record is not None:
        for found in plan.done:
            opts.hooks.on_record(found)
    if not plan.todo:
        return list(plan.done)
    source, extraction = features if features is not None else extract(plan, opts)
    # A kind that labels frames in time (SD) declares `wants_frame_rate` and gets the upstream's frame rate.
    frame_rate = ({"downsample_rate": plan.upstream.downsample_rate, "sample_rate": plan.upstream.sample_rate}
                  if plan.task.kind.wants_frame_rate else {})
    setup = plan.task.kind.setup(plan.task, plan.manifest, plan.recipe.head, plan.upstream.num_layers,
                                 plan.upstream.hidden_size, plan.layer, **frame_rate)
    out = list(plan.done)
    grid = sweep(plan, setup, source, plan.todo, opts, executor)
    for seed in plan.todo:
        out.append(record(plan, seed, select(plan, grid.of_seed(seed)), extraction, opts, setup.objective.scorers()))
        extraction = 0.0  # paid once, by the first seed's record
    return out


def plan_run(upstream: Upstream, tasks: Sequence[Task], data_root: Path, opts: RunOptions,
             fingerprint: str | None = None) -> list[TaskPlan]:
    """Every check that needs no extraction, and one plan per task (per layer with `--layer all`):
    options, task folders, layers, manifests and recipes; each manifest loaded and audio-keyed once."""
    upstream = as_upstream(upstream)
    if opts.execution.executor == "ray" and not opts.execution.use_cache:
        raise ValueError("--executor ray reads features from the shared cache: drop --no-cache")
    check_task_folders(tasks, data_root)
    probes = opts.identity.layer.probes(upstream.num_layers, upstream.name)
    fingerprint = fingerprint or upstream.fingerprint()
    plans = []
    for task in tasks:
        manifest = load_task_manifest(Path(data_root) / task.name)
        task.check_manifest(manifest)
        keys = audio_keys(manifest)  # read once: the records' audio identity, the disk check and extraction
        for layer in probes:
            plans.append(plan_task(upstream, task, data_root, opts.replace(layer=layer), fingerprint, manifest,
                                   keys))
    return plans


def run(upstream: Upstream, tasks: Sequence[Task], data_root: Path, opts: RunOptions,
        fingerprint: str | None = None) -> list[ResultRecord]:
    """Every task: all of them checked and planned first, then each extracted and trained in turn.

    Before the first extraction: every task folder exists, `--layer` exists in the upstream,
    every manifest and recipe is valid, the results and checkpoints folders can be written, and the disk
    holds the features still to extract.
    The upstream's fingerprint (a hash of all its weights) is computed once here. With
    `--layer all` each task gets one plan per layer, and they share one extraction.
    """
    upstream = as_upstream(upstream)
    plans = plan_run(upstream, tasks, data_root, opts, fingerprint)
    check_output_folders(plans, opts)
    check_disk(plans, opts)
    if opts.hooks.show_plan and any(p.todo for p in plans):
        for line in format_plan(estimate_run(plans, opts)).splitlines():
            log.info("%s", line)
    ex = opts.execution
    executor = make_executor(ex.executor, ex.address, ex.ray_cpus, ex.gpus_per_trial, ex.gpus_per_extractor,
                             ex.extract_actors)
    out: list[ResultRecord] = []
    shared: tuple[tuple[str, str], FeatureSource] | None = None  # the last task's features
    for plan in plans:
        features = None
        if plan.todo:
            which = (plan.task.name, plan.upstream_fingerprint)
            if shared is not None and shared[0] == which:
                features = (shared[1], 0.0)  # extraction time goes to the first layer's record
            else:
                source, seconds = extract(plan, opts, executor)
                shared, features = (which, source), (source, seconds)
        out += execute(plan, opts, features, executor)
    return out

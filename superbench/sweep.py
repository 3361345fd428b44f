"""The learning-rate sweep: one head per (lr, fold) for every seed still to do, then the lr chosen on dev.

Trials are `PendingTrial`s gathered in a `TrialGrid`; finished ones are read back from their sealed
files (`superbench.trial_files`) instead of trained again; the rest train on an executor, one at a
time or stacked into groups (`superbench.trial_group`) where the head, the features and memory allow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import statistics
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from superbench.artifacts import prediction_lines, test_unit_scores, write_audio
from superbench.device import torch_threads
from superbench.downstream import FeatureSource
from superbench.executors import LocalExecutor, RayExecutor, TrainingJob
from superbench.io import human_bytes
from superbench.manifest import Fold
from superbench.options import RunOptions
from superbench.task_plan import Selection, TaskPlan, split_data
from superbench.tasks import TaskSetup
from superbench.training import TrainResult, Trial
from superbench.trial_files import TrialFiles
from superbench.trial_group import group_key, resident_bytes, rows_per_update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingTrial:
    """One (seed, lr, fold) trial still to train, and where its files go."""

    seed: int
    lr: float
    fold: Fold
    trial: Trial
    files: TrialFiles


class TrialGrid:
    """The finished trials of a sweep by seed, learning rate and fold; read back in the plan's lr order and
    the manifest's fold order, whatever order (remote) jobs finished in."""

    def __init__(self, seeds: Sequence[int], lrs: Sequence[float], folds: Sequence[str]) -> None:
        self.seeds, self.lrs, self.folds = list(seeds), list(lrs), list(folds)
        self._results: dict[tuple[int, float, str], TrainResult] = {}

    def put(self, seed: int, lr: float, fold: str, result: TrainResult) -> None:
        self._results[(seed, lr, fold)] = result

    def of_seed(self, seed: int) -> dict[float, dict[str, TrainResult]]:
        """{lr: {fold: result}} of one seed, what `select` chooses from."""
        return {lr: {f: self._results[(seed, lr, f)] for f in self.folds if (seed, lr, f) in self._results}
                for lr in self.lrs}

    def __iter__(self) -> Iterator[tuple[int, float, str, TrainResult]]:
        for seed in self.seeds:
            for lr, by_fold in self.of_seed(seed).items():
                for fold, result in by_fold.items():
                    yield seed, lr, fold, result


def sweep(plan: TaskPlan, setup: TaskSetup, source: FeatureSource, seeds: Sequence[int],
          opts: RunOptions, executor: LocalExecutor | RayExecutor | None = None) -> TrialGrid:
    """One trained head per (seed, learning rate, fold); finished trials survive an interruption.

    Where the task kind can stack its heads and the features are pooled, the trials still to train
    are trained as one group (superbench.trial_group; one group per worker on Ray); otherwise one
    after the other (one Ray task each on Ray).
    """
    executor = executor or LocalExecutor()
    for seed in seeds:
        if opts.execution.overwrite:
            shutil.rmtree(plan.checkpoint_dir(seed, opts), ignore_errors=True)
    name, task = plan.model_name, plan.task.name + ("" if plan.layer is None else f" layer {plan.layer}")
    several_folds = len(plan.manifest.folds) > 1
    grid = TrialGrid(seeds, plan.lrs, [f.name for f in plan.manifest.folds])
    pending: list[PendingTrial] = []
    for seed in seeds:
        identity = {"key": plan.keys[seed].as_tuple(), "variant": plan.upstream_fingerprint,
                    "recipe": dataclasses.asdict(plan.recipe), "audio": plan.audio_fingerprint}
        for lr in plan.lrs:
            cfg = dataclasses.replace(plan.recipe.train, lr=lr, seed=seed)
            for fold in plan.manifest.folds:
                desc = f"{name}/{task} seed {seed} lr {lr:g}" + (f" {fold.name}" if several_folds else "")
                trial = Trial(cfg, split_data(plan, setup, fold.train), split_data(plan, setup, fold.dev),
                              split_data(plan, setup, fold.test), desc, _trial_key(identity, cfg, fold.name))
                files = plan.trial_files(seed, opts, lr, fold.name)
                result = files.load(trial.key)
                if result is None:
                    pending.append(PendingTrial(seed, lr, fold, trial, files))
                else:
                    log.info("%s: finished before the interruption, reusing it (%s)", desc, files.json)
                    grid.put(seed, lr, fold.name, result)
    jobs, parts = _jobs(plan, setup, source, pending, opts, executor.workers)
    if jobs:
        log.info("%s/%s: %d trial(s) to train in %d job(s) on the %s executor (%s)", name, task, len(pending),
                 len(jobs), executor.name, ", ".join(f"{len(j.trials)} {'grouped' if j.grouped else 'in turn'}"
                                                     for j in jobs))

    def keep(j: int, i: int, result: TrainResult) -> None:
        entry = parts[j][i]
        grid.put(entry.seed, entry.lr, entry.fold.name,
                 _keep_trial(plan, setup, entry, result, opts.execution.keep_audio))
        spent = jobs[j].spent_checkpoint(i)
        if spent is not None:
            spent.unlink(missing_ok=True)

    with torch_threads(opts.compute.train_threads):
        executor.run(jobs, source, keep)
    for seed, lr, fold_name, result in grid:
        log.info("%s/%s seed %d lr %g%s: dev %s %.2f (best step %d)", name, task, seed, lr,
                 f" {fold_name}" if several_folds else "", plan.task.metric, result.dev, result.best_step)
    return grid


def _jobs(plan: TaskPlan, setup: TaskSetup, source: FeatureSource, pending: list[PendingTrial],
          opts: RunOptions, workers: int) -> tuple[list[TrainingJob], list[list[PendingTrial]]]:
    """The pending trials cut into jobs: groups (one per worker) where they can be grouped, else single trials
    (one job of all of them in this process, one job each for remote workers); job j trains `parts[j]`."""
    if not pending:
        return [], []
    name = f"{plan.model_name}/{plan.task.name}" + ("" if plan.layer is None else f" layer {plan.layer}")
    common = dict(setup=setup, progress=opts.hooks.progress, device=str(plan.compute.device))
    if _can_group(plan, setup, source, opts, [p.trial for p in pending]):
        parts = [pending[k::workers] for k in range(min(workers, len(pending)))]
        jobs = []
        for part in parts:
            group = [p.trial for p in part]
            checkpoint = plan.checkpoint_dir(part[0].seed, opts) / f"group-{group_key(group)}.pt"
            jobs.append(TrainingJob(trials=group, checkpoints=[checkpoint], grouped=True,
                                    desc=f"{name} x{len(group)}", **common))
        return jobs, parts
    parts = [pending] if workers == 1 else [[p] for p in pending]
    train_rows = plan.manifest.splits
    jobs = [TrainingJob(trials=[p.trial for p in part], checkpoints=[p.files.checkpoint for p in part], grouped=False,
                        lengths=[[u.num_samples for u in train_rows[p.fold.train]] for p in part], desc=name,
                        **common) for part in parts]
    return jobs, parts


def _can_group(plan: TaskPlan, setup: TaskSetup, source: FeatureSource, opts: RunOptions,
               group: Sequence[Trial]) -> bool:
    """Whether `group` can train as one computation: a stackable head on pooled features that fit in memory,
    equal batches for every trial."""
    if not opts.execution.group_trials or setup.stack is None or source.level != "utterance":
        return False
    if plan.recipe.train.bucketing:  # length buckets are drawn by training.train only
        return False
    if plan.recipe.train.weight_decay:  # the stacked optimiser is Adam; AdamW trains one head at a time
        return False
    try:
        rows_per_update(group)
    except ValueError as exc:
        log.info("%s: training trials one at a time: %s", plan.task.name, exc)
        return False
    needed = resident_bytes(len(plan.manifest.utterances()), plan.upstream.num_layers, plan.upstream.hidden_size)
    if needed > opts.execution.max_resident_bytes:
        log.info("%s: pooled features need %s resident, above --max-resident %s: training trials one at a time",
                 plan.task.name, human_bytes(needed), human_bytes(opts.execution.max_resident_bytes))
        return False
    return True


def _keep_trial(plan: TaskPlan, setup: TaskSetup, entry: PendingTrial, result: TrainResult,
                keep_audio: int = 0) -> TrainResult:
    """Write a finished trial's files (TrialFiles.save), after the waveforms it keeps (`--keep-audio`)."""
    result = dataclasses.replace(result, units=test_unit_scores(plan, setup, entry.fold, result))
    write_audio(plan, setup, entry.fold, result, keep_audio, entry.files.audio)
    entry.files.save(entry.trial.key, result, prediction_lines(plan, setup, entry.fold, result))
    return dataclasses.replace(result, head_state=None)  # on disk now; keep memory small


def select(plan: TaskPlan, trials: dict[float, dict[str, TrainResult]]) -> Selection:
    """The learning rate with the best mean dev metric over folds (direction-aware)."""
    mean_dev = {lr: statistics.fmean(r.dev for r in folds.values()) for lr, folds in trials.items()}
    pick = max if plan.task.higher_is_better else min
    best = pick(plan.lrs, key=lambda lr: mean_dev[lr])
    spent = sum(r.seconds for folds in trials.values() for r in folds.values())
    return Selection(best, trials[best], mean_dev[best], spent, trials)


def _trial_key(identity: dict[str, Any], cfg: Any, fold: str) -> str:
    """Identity of one (seed, lr, fold) training run: saved state is reused only under the same key."""
    what = {**identity, "config": dataclasses.asdict(cfg), "fold": fold}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]

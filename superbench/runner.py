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

What a record keeps beside it (same folder, same stem as `<stem>.json`; listed in the record's
`artifacts`, paths relative to the record file):

- `<stem>.head.pt`: the best (dev-selected) head of the chosen learning rate, a torch `state_dict`
  (`torch.load(path, weights_only=True)`; load it into the task kind's head built with the same
  recipe `head` section, upstream layer count and hidden size). With several folds (ER) there is
  one file per fold, `<stem>.<fold>.head.pt`, listed as `artifacts["head.<fold>"]`.
- `<stem>.predictions.jsonl`: that head's predictions, one JSON object per utterance, the dev
  utterances then the test utterances of each fold in manifest order:
  `{"split": "dev"|"test", "manifest_split": <split file it comes from>, "fold": <fold name>,
  "id": <utterance id>, "reference": ..., "prediction": ...}` plus a per-utterance score:
  `"correct": 0|1` where reference and prediction are classes (class names from the manifest's
  `labels`; the index where it has none), or `"errors"` (word/phone edit distance) and
  `"ref_tokens"` (reference length) where they are decoded strings (CTC), so that
  sum(errors) / sum(ref_tokens) is the corpus PER/WER of the record's `test` (per fold).

Each finished (lr, fold) trial writes its head and predictions into the trial folder before its
`.json` (a trial without them is trained again, deterministically), and the record copies those of
the chosen lr, so an interrupted and resumed run keeps the same artefacts. All files are atomic, and
every file a rerun reuses is sealed with its blake2b (`TrialFiles`): a damaged one is trained again.

One run at a time works on a run key: `execute` holds the key's lock (`TaskPlan.lock_path`) from the
sweep to the record, so an identical run started meanwhile waits, then finds the record and skips the
seed; it never trains into, or removes, a checkpoint folder another run still needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from superbench.cache import (
    CacheError,
    OnlineFeatures,
    audio_fingerprint,
    audio_keys,
    extract_features,
)
from superbench.device import Compute, resolve_compute, torch_threads
from superbench.downstream import FeatureSource
from superbench.executors import LocalExecutor, RayExecutor, TrainingJob, make_executor
from superbench.io import atomic_open, atomic_write_text, free_bytes, human_bytes, read_sealed, run_lock, write_sealed
from superbench.manifest import Fold, TaskManifest, load_task_manifest
from superbench.metrics import edit_distance
from superbench.options import RunOptions
from superbench.paths import cache_dir, checkpoints_dir
from superbench.paths import results_dir as default_results_dir
from superbench.plan import estimate_run, format_plan, task_estimates
from superbench.provenance import environment_versions, git_hash, now_iso
from superbench.recipe import Recipe
from superbench.records import ResultRecord, old_layout_records, read_record, record_path, write_record
from superbench.run_key import RunKey, safe_component
from superbench.tasks import Task, TaskSetup, in_task_order
from superbench.training import TrainResult, Trial
from superbench.trial_group import group_key, resident_bytes, rows_per_update
from superbench.upstream import Upstream, as_upstream

log = logging.getLogger(__name__)

@dataclass
class TaskPlan:
    """Everything one task's run needs, decided and checked before any expensive work."""

    task: Task
    recipe: Recipe
    manifest: TaskManifest
    model_name: str
    model_fingerprint: str  # the upstream the user chose: what records name
    upstream: Upstream  # the recipe's variant of it, which actually runs
    variant_fingerprint: str  # of that variant's weights (what a Ray worker's rebuilt upstream must have)
    keys: dict[int, RunKey]
    todo: list[int]
    done: list[ResultRecord]
    lrs: list[float]
    results: Path
    layer: int | str | None = None  # the probed layer of this plan's records: a LayerChoice.value, never "all"
    upstream_source: str = ""  # where the chosen upstream's weights came from, when known
    #: utterance id -> audio key (superbench.cache.audio_keys), computed once per manifest by `run`
    audio_keys: dict[str, str] | None = None
    #: superbench.cache.audio_fingerprint of `audio_keys`: the audio bytes the records were scored on
    audio_fingerprint: str = ""
    compute: Compute = field(default_factory=Compute)  # device and upstream precision
    load_spec: tuple | None = None  # how `load_upstream` built the chosen upstream (Ray workers rebuild it)
    #: What makes these features others than the variant's fp32 ones (ComputeOptions.feature_tags: "bf16", "int8")
    feature_tags: tuple[str, ...] = ()

    @property
    def upstream_fingerprint(self) -> str:
        """What the cache and the records' features are keyed by: the variant's fingerprint and the tags."""
        return "-".join((self.variant_fingerprint, *self.feature_tags))

    def trial_files(self, seed: int, opts: RunOptions, lr: float, fold: str) -> "TrialFiles":
        """One trial's files: `<stem>.json` (numbers), `.head.pt`, `.predictions.jsonl`, `.pt` (state)."""
        return TrialFiles(self.checkpoint_dir(seed, opts) / safe_component(f"lr{lr:g}-{fold}"))

    def checkpoint_dir(self, seed: int, opts: RunOptions) -> Path:
        """Finished trials and the running one's state, until the record is written."""
        return Path(opts.paths.checkpoint_root or checkpoints_dir()) / self.keys[seed].digest()

    def lock_path(self, seed: int, opts: RunOptions) -> Path:
        """Held by the one run working on this seed's key (superbench.io.run_lock), beside its checkpoint
        folder so that it outlives the folder's removal; gone when no run holds it."""
        folder = self.checkpoint_dir(seed, opts)
        return folder.with_name(folder.name + ".lock")


@dataclass
class Selection:
    """The learning rate chosen on dev, what its trials measured, and every trial of the sweep."""

    lr: float
    folds: dict[str, TrainResult]
    dev: float
    training_seconds: float
    trials: dict[float, dict[str, TrainResult]]


def plan_task(upstream: Upstream, task: Task, data_root: Path, opts: RunOptions,
              fingerprint: str | None = None, manifest: TaskManifest | None = None,
              audio: dict[str, str] | None = None) -> TaskPlan:
    """Load and check recipe and manifest, derive each seed's RunKey, find the seeds already done.

    `opts.identity.layer` is one layer here; `run` expands "all" into one plan per layer, loading and
    checking each task's `manifest` once for all of them, and keying its `audio` once (`audio_keys`).
    """
    ident, layer = opts.identity, opts.identity.layer
    recipe = task.load_recipe(ident.profile).with_overrides(ident.overrides)
    compute = resolve_compute(opts.compute.device, opts.compute.precision)
    if manifest is None:
        manifest = load_task_manifest(Path(data_root) / task.name)
        task.check_manifest(manifest)
    variant = upstream.variant(**recipe.upstream.given())
    if layer.every:
        raise ValueError("plan_task probes one layer; run() expands --layer all into one plan per layer")
    layer.probes(variant.num_layers, variant.name)  # the variant the recipe asks for has the layer too
    model_fp = fingerprint or upstream.fingerprint()
    variant_fp = model_fp if variant is upstream else variant.fingerprint()
    tags = opts.compute.feature_tags(task.level)  # other features: their own cache folder and run key
    profile = recipe.profile_label + "".join(f"+{tag}" for tag in tags)
    results = Path(opts.paths.results_dir or default_results_dir())
    old = old_layout_records(results)
    if old:
        log.warning("%s holds %d record(s) in the first layout (e.g. %s); they are not used to skip runs. "
                    "Move them with `superbench results migrate --results %s`", results, len(old), old[0].name,
                    results)
    keys = {seed: RunKey(upstream.name, model_fp, task.name, manifest.fingerprint, recipe.version,
                         profile, layer.value, seed) for seed in range(ident.seeds)}
    audio = audio if audio is not None else audio_keys(manifest)
    audio_fp = audio_fingerprint(audio)
    done = [] if opts.execution.overwrite else _records_to_keep(keys, results, audio_fp)
    if done:
        log.info("%s/%s: record(s) for seed(s) %s exist under %s; skipping them (use --overwrite to redo)",
                 upstream.name, task.name, [r.seed for r in done], results)
    kept = {r.seed for r in done}
    return TaskPlan(task=task, recipe=recipe, manifest=manifest, model_name=upstream.name,
                    model_fingerprint=model_fp, upstream=variant, variant_fingerprint=variant_fp, keys=keys,
                    todo=[s for s in keys if s not in kept], done=done,
                    lrs=recipe.lrs(ident.lr, ident.lr_sweep), results=results, layer=layer.value,
                    upstream_source=ident.upstream_source or upstream_source(upstream), compute=compute,
                    load_spec=upstream.load_spec, feature_tags=tags,
                    audio_keys=audio, audio_fingerprint=audio_fp)


def _records_to_keep(keys: dict[int, RunKey], results: Path, audio_fp: str) -> list[ResultRecord]:
    """The existing records that make their seed's run unnecessary: same run key and the same audio bytes.

    The run key's `data` digests the manifest rows only; a record scored on other audio bytes is run again
    (and replaced). A record from before audio fingerprints ("") cannot tell, and is kept as before.
    """
    out = []
    for key in keys.values():
        path = record_path(results, key)
        if not path.is_file():
            continue
        found = read_record(path)
        if found.audio_fingerprint and found.audio_fingerprint != audio_fp:
            log.info("%s: audio bytes changed since the record (audio %s -> %s): running again", key.describe(),
                     found.audio_fingerprint, audio_fp)
            continue
        out.append(found)
    return out


def upstream_source(upstream: Upstream) -> str:
    """The upstream's `source` (where its weights came from) when it names one as text or a path, else ""."""
    value = upstream.source
    return str(value) if isinstance(value, (str, Path)) else ""


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


@dataclass(frozen=True)
class TrialFiles:
    """One (lr, fold) trial's files in its run's checkpoint folder, each sealed (superbench.io.write_sealed):
    `<stem>.head.pt` (the dev-selected head), `<stem>.predictions.jsonl` and, written last because it says the
    trial is finished, `<stem>.json` (its key and numbers); `<stem>.pt` is its training state while it trains
    alone. A finished trial is reused only when all three files hold the bytes written: a flipped bit or a torn
    copy is logged with the file's path and the trial is trained again (deterministically: the same record)."""

    stem: Path

    def _file(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    @property
    def json(self) -> Path:
        return self._file(".json")

    @property
    def head(self) -> Path:
        return self._file(".head.pt")

    @property
    def predictions(self) -> Path:
        return self._file(".predictions.jsonl")

    @property
    def checkpoint(self) -> Path:
        """Its resumable state while it trains alone."""
        return self._file(".pt")

    def save(self, key: str, result: TrainResult, predictions: str) -> None:
        """Head and predictions first, then the .json that says the trial is finished."""
        buffer = io.BytesIO()
        torch.save(result.head_state, buffer)
        write_sealed(self.head, buffer.getbuffer())
        write_sealed(self.predictions, predictions.encode("utf-8"))
        write_sealed(self.json, (json.dumps({"key": key, "result": result.to_dict()}) + "\n").encode("utf-8"))

    def read(self, path: Path) -> bytes | None:
        """The payload of one of these files if its seal holds; else None, with a warning naming the file."""
        try:
            return read_sealed(path)
        except (OSError, ValueError) as exc:
            log.warning("%s: damaged finished-trial file, not reused (%s)", path, exc)
            return None

    def load(self, key: str) -> TrainResult | None:
        """The trial finished before an interruption (same key, all its files intact), else None."""
        if not self.json.is_file():
            return None
        missing = [p.name for p in (self.head, self.predictions) if not p.is_file()]
        if missing:
            log.info("%s: finished trial without %s (kept since); training it again", self.json, ", ".join(missing))
            return None
        payload = self.read(self.json)
        if payload is None:
            return None
        try:
            saved = json.loads(payload)
            if saved.get("key") != key:
                return None
            result = TrainResult.from_dict(saved["result"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: unreadable finished trial, training it again (%r)", self.json, exc)
            return None
        if any(self.read(p) is None for p in (self.head, self.predictions)):
            return None
        return result


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


def _split_data(plan: TaskPlan, setup: TaskSetup, split: str) -> tuple[list[str], list[Any]]:
    """(ids, targets) of one manifest split, targets as the task kind reads them."""
    rows = plan.manifest.splits[split]
    return [u.id for u in rows], [setup.target_of(u) for u in rows]


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
                trial = Trial(cfg, _split_data(plan, setup, fold.train), _split_data(plan, setup, fold.dev),
                              _split_data(plan, setup, fold.test), desc, _trial_key(identity, cfg, fold.name))
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
        grid.put(entry.seed, entry.lr, entry.fold.name, _keep_trial(plan, setup, entry, result))
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


def _keep_trial(plan: TaskPlan, setup: TaskSetup, entry: PendingTrial, result: TrainResult) -> TrainResult:
    """Write a finished trial's files (TrialFiles.save)."""
    entry.files.save(entry.trial.key, result, _prediction_lines(plan, setup, entry.fold, result))
    return dataclasses.replace(result, head_state=None)  # on disk now; keep memory small


def _prediction_lines(plan: TaskPlan, setup: TaskSetup, fold: Fold, result: TrainResult) -> str:
    """The finished trial's dev/test predictions, one JSON line per utterance (the record's predictions format)."""
    lines = []
    for role, split in (("dev", fold.dev), ("test", fold.test)):
        ids, targets = _split_data(plan, setup, split)
        predicted = result.predictions.get(role, [])
        if len(predicted) != len(ids):
            raise RuntimeError(f"{plan.task.name} {fold.name}: {len(predicted)} {role} predictions for {len(ids)} "
                               f"utterances")
        for utt, target, prediction in zip(ids, targets, predicted):
            row = {"split": role, "manifest_split": split, "fold": fold.name, "id": utt,
                   "reference": _shown(target, plan.manifest.labels),
                   "prediction": _shown(prediction, plan.manifest.labels), **_utterance_score(target, prediction)}
            lines.append(json.dumps(row, ensure_ascii=False, default=str))
    return "".join(line + "\n" for line in lines)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any, labels: Sequence[str]) -> Any:
    """A class index as its name from the manifest's `labels` (the index where there is none); else as is."""
    if _is_index(value) and labels and 0 <= value < len(labels):
        return labels[value]
    return value


def _utterance_score(target: Any, prediction: Any) -> dict[str, int]:
    """`correct` for classes, `errors` / `ref_tokens` (edit distance over whitespace tokens) for strings."""
    if _is_index(target) and (_is_index(prediction) or isinstance(prediction, str)):
        return {"correct": int(target == prediction)}  # a string: a class outside the inventory (IC), wrong
    if isinstance(target, str) and isinstance(prediction, str):
        ref = target.split()
        return {"errors": edit_distance(ref, prediction.split()), "ref_tokens": len(ref)}
    return {}


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
    artifacts = _write_artifacts(plan, seed, chosen, opts)
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
        versions=environment_versions(), git_hash=git_hash(), created_at=now_iso(),
        features_fingerprint=plan.upstream_fingerprint, upstream_source=plan.upstream_source,
        audio_fingerprint=plan.audio_fingerprint,
        overrides=json.loads(json.dumps(plan.recipe.overrides, default=str)), artifacts=artifacts,
        device=plan.compute.describe(), precision=plan.compute.precision, secondary=_secondary_means(folds))
    path = write_record(result, plan.results)
    log.info("%s/%s seed %d: test %s %.2f (dev %.2f, lr %g) -> %s", key.upstream, task.name, seed,
             task.metric, result.test, result.dev, chosen.lr, path)
    shutil.rmtree(plan.checkpoint_dir(seed, opts), ignore_errors=True)  # the record is safe on disk
    if opts.hooks.on_record is not None:
        opts.hooks.on_record(result)
    return result


def _secondary_means(folds: dict[str, TrainResult]) -> dict[str, dict[str, float]]:
    """{"cer": {"dev": mean, "test": mean}} over the folds of the chosen lr (every fold has the same metrics)."""
    names = sorted({name for r in folds.values() for name in r.secondary.get("test", {})})
    return {name: {role: round(statistics.fmean(r.secondary[role][name] for r in folds.values()), 4)
                   for role in ("dev", "test")} for name in names}


def _write_artifacts(plan: TaskPlan, seed: int, chosen: Selection, opts: RunOptions) -> dict[str, str]:
    """Copy the chosen lr's heads and predictions from its trial files to beside the record (atomically);
    returns the record's `artifacts` (file names, relative to the record). A missing trial file is logged
    and left out, never a failed run."""
    target = record_path(plan.results, plan.keys[seed])
    stem = target.name.removesuffix(".json")
    several = len(chosen.folds) > 1
    artifacts: dict[str, str] = {}
    lines: list[str] = []
    for fold in chosen.folds:
        files = plan.trial_files(seed, opts, chosen.lr, fold)
        name, out = ((f"head.{fold}", f"{stem}.{safe_component(fold)}.head.pt") if several
                     else ("head", f"{stem}.head.pt"))
        payload, predictions = files.read(files.head), files.read(files.predictions)
        if payload is None or predictions is None:  # never a damaged file beside the record
            log.warning("%s: no intact head or predictions of lr %g %s to keep beside the record",
                        plan.keys[seed].describe(), chosen.lr, fold)
            continue
        lines.append(predictions.decode("utf-8"))
        with atomic_open(target.parent / out, "wb") as fh:
            fh.write(payload)
        artifacts[name] = out
    if lines:
        out = f"{stem}.predictions.jsonl"
        atomic_write_text(target.parent / out, "".join(lines))
        artifacts["predictions"] = out
    return artifacts


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
        for found in _records_to_keep({seed: plan.keys[seed]}, plan.results, plan.audio_fingerprint):
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
        out.append(record(plan, seed, select(plan, grid.of_seed(seed)), extraction, opts))
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


# --------------------------------------------------------------------------- checks before any work

def check_task_folders(tasks: Sequence[Task], data_root: Path) -> None:
    """Every requested task has a prepared folder; otherwise name the missing ones and the tasks there are."""
    root = Path(data_root)
    missing = [t.name for t in tasks if not (root / t.name / "meta.json").is_file()]
    if not missing:
        return
    present = in_task_order(p.parent.name for p in root.glob("*/meta.json")) if root.is_dir() else []
    hint = (f"it has {', '.join(present)}: run those with `--task {','.join(present)}`, or prepare the others"
            if present else "it has no prepared task folder; prepare them")
    raise FileNotFoundError(f"data root {root} has no folder for task(s) {', '.join(missing)} "
                            f"(<task>/meta.json); {hint} with `superbench data prepare`")


def check_writable(folder: Path, what: str, hint: str) -> None:
    """Create `folder` if missing and write and remove a file there: an output folder that cannot be written
    (read-only, immutable, a file where the folder should be) is a usage error before any work, not a
    failure after hours of extraction and training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".superbench-write-check-"):
            pass
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or str(exc)
        raise PermissionError(f"the {what} {folder} cannot be written ({why}); {hint}") from None


def check_output_folders(plans: Sequence[TaskPlan], opts: RunOptions) -> None:
    """The folders the records and the trials' checkpoints of `plans` go to can be written (when there is
    anything to train)."""
    folders = {record_path(p.results, p.keys[seed]).parent: "results folder" for p in plans for seed in p.todo}
    if not folders:
        return
    for folder, what in folders.items():
        check_writable(folder, what, "fix its permissions or choose another with --results")
    check_writable(Path(opts.paths.checkpoint_root or checkpoints_dir()), "checkpoints folder",
                   "fix its permissions or point SUPERBENCH_HOME at a writable folder")


def cache_bytes_needed(plans: Sequence[TaskPlan], opts: RunOptions) -> dict[str, int]:
    """Bytes of features still to extract, per task: audio already cached counts nothing, and audio
    shared by several tasks counts once per cache folder (upstream variant and level)."""
    if not opts.execution.use_cache:
        return {}
    need: dict[str, int] = {}
    for plan, estimate in zip(plans, task_estimates(plans, opts)):
        if plan.todo:
            need[plan.task.name] = need.get(plan.task.name, 0) + estimate.cache_bytes
    return need


def check_disk(plans: Sequence[TaskPlan], opts: RunOptions) -> None:
    """Refuse a run whose features cannot fit, before the first extraction (the cache checks each task
    again when it starts, against what is free then)."""
    need = cache_bytes_needed(plans, opts)
    total = sum(need.values())
    if not total:
        return
    root = Path(opts.paths.cache_root or cache_dir())
    free = free_bytes(root)
    per_task = ", ".join(f"{task} {human_bytes(n)}" for task, n in need.items() if n)
    log.info("features to extract: about %s (%s) into %s, %s free", human_bytes(total), per_task, root,
             human_bytes(free))
    if total > 0.95 * free:
        hint = ""
        if opts.compute.cache_dtype == "fp16" and any(p.task.level == "frame" and p.todo for p in plans):
            int8 = sum(cache_bytes_needed(plans, opts.replace(cache_dtype="int8")).values())
            fits = "fits" if int8 <= 0.95 * free else "does not fit either"
            hint = f" With --cache-dtype int8 the frame caches take about {human_bytes(int8)} in all ({fits})."
        raise CacheError(f"not enough disk for the feature cache: this run needs about {human_bytes(total)} "
                         f"({per_task}) in {root}, only {human_bytes(free)} free.{hint} Free some space, point "
                         f"SUPERBENCH_HOME at a larger disk, run fewer tasks, or use --no-cache")


def _trial_key(identity: dict[str, Any], cfg: Any, fold: str) -> str:
    """Identity of one (seed, lr, fold) training run: saved state is reused only under the same key."""
    what = {**identity, "config": dataclasses.asdict(cfg), "fold": fold}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


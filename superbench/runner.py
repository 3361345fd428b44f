"""Run the SUPERB protocol for (upstream, tasks, seeds): plan -> extract -> sweep -> select -> record.

Each step is one function, in the order the work happens, chosen so mistakes cost
seconds: `run` first checks what every requested task needs (its data folder, `--layer`
against the upstream), `plan_task` loads and checks the manifest and the recipe, derives
every seed's `RunKey` and skips the seeds already recorded, and `check_disk` compares the
features still to extract with the free space — for every task before any feature is
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from superbench.cache import CacheError, OnlineFeatures, audio_keys, cache_path, extract_features
from superbench.io import atomic_write_text, human_bytes
from superbench.manifest import TaskManifest, load_task_manifest
from superbench.paths import cache_dir, checkpoints_dir
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
from superbench.tasks import Task, TaskSetup, in_task_order
from superbench.training import FeatureSource, TrainResult, train
from superbench.upstream import Upstream, as_upstream

log = logging.getLogger(__name__)

#: Most seeds one run trains (each is a full sweep); a larger count is a typo, not a plan.
MAX_SEEDS = 1000


@dataclass
class RunOptions:
    profile: str = "superb"
    seeds: int = 1
    #: Single-layer probe instead of the weighted sum: K, "last", or "all" (one probe per layer, a record each).
    layer: int | str | None = None
    lr: float | None = None  # fixed learning rate (no sweep)
    lr_sweep: bool = True
    use_cache: bool = True
    results_dir: Path | None = None  # None: $SUPERBENCH_RESULTS or $SUPERBENCH_HOME/results
    overwrite: bool = False
    progress: bool = True
    cache_root: Path | None = None  # None: $SUPERBENCH_HOME/features
    checkpoint_root: Path | None = None  # None: $SUPERBENCH_HOME/checkpoints
    #: Recipe values to override ({"train.steps": 50}; a bare key names the one section that has it).
    #: The record's profile then reads "<profile>+<digest>", so such numbers are never the recipe's.
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Called with each record once it is written (the CLI adds it to the leaderboard store).
    on_record: Callable[[ResultRecord], None] | None = None
    #: torch intra-op threads while the upstream extracts / while heads train; None leaves torch's setting.
    #: Separate because the best count differs (a large upstream scales with cores, a small head does not).
    extract_threads: int | None = None
    train_threads: int | None = None


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
    layer: int | str | None = None  # the probed layer of this plan's records (never "all")

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
    """Load and check recipe and manifest, derive each seed's RunKey, find the seeds already done.

    `opts.layer` is one layer here; `run` expands "all" into one plan per layer.
    """
    recipe = task.load_recipe(opts.profile).with_overrides(opts.overrides)
    manifest = load_task_manifest(Path(data_root) / task.name)
    task.check_manifest(manifest)
    variant = upstream.variant(**recipe.upstream.given())
    if opts.layer == "all":
        raise ValueError("plan_task probes one layer; run() expands --layer all into one plan per layer")
    layers_to_run(variant, opts.layer)  # the variant the recipe asks for has the layer too
    model_fp = fingerprint or upstream.fingerprint()
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
                    lrs=recipe.lrs(opts.lr, opts.lr_sweep), results=results, layer=opts.layer)


def extract(plan: TaskPlan, opts: RunOptions) -> tuple[FeatureSource, float]:
    """Features for every utterance of the manifest (once, cached by audio), and the seconds it took."""
    start = time.perf_counter()
    if opts.use_cache:
        with torch_threads(opts.extract_threads):
            source: FeatureSource = extract_features(plan.upstream, plan.manifest, plan.task.level,
                                                     root=opts.cache_root, progress=opts.progress,
                                                     fingerprint=plan.upstream_fingerprint)
    else:  # the upstream runs inside training, so under `train_threads`
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

    name, task = plan.model_name, plan.task.name + ("" if plan.layer is None else f" layer {plan.layer}")
    trials: dict[float, dict[str, TrainResult]] = {}
    with torch_threads(opts.train_threads):
        for lr in plan.lrs:
            cfg = dataclasses.replace(plan.recipe.train, lr=lr, seed=seed)
            trials[lr] = {}
            for fold in plan.manifest.folds:
                desc = (f"{name}/{task} seed {seed} lr {lr:g}"
                        + (f" {fold.name}" if len(plan.manifest.folds) > 1 else ""))
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
    shutil.rmtree(plan.checkpoint_dir(seed, opts), ignore_errors=True)  # the record is safe on disk
    if opts.on_record is not None:
        opts.on_record(result)
    return result


def execute(plan: TaskPlan, opts: RunOptions,
            features: tuple[FeatureSource, float] | None = None) -> list[ResultRecord]:
    """Extract (unless `features` from an earlier plan of the same task is given), then
    sweep -> select -> record for every seed still to do.

    Records found on disk are handed to `on_record` too, so a store that missed one (a run killed
    between the file and the database write) catches up on the rerun.
    """
    for found in plan.done:
        leftover = plan.checkpoint_dir(found.seed, opts)
        if leftover.exists():  # the run was killed after its record was written
            log.info("%s: already recorded; removing its leftover checkpoints %s", plan.keys[found.seed].describe(),
                     leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    if opts.on_record is not None:
        for found in plan.done:
            opts.on_record(found)
    if not plan.todo:
        return list(plan.done)
    source, extraction = features if features is not None else extract(plan, opts)
    setup = plan.task.kind.setup(plan.task, plan.manifest, plan.recipe.head, plan.upstream.num_layers,
                                 plan.upstream.hidden_size, plan.layer)
    out = list(plan.done)
    for seed in plan.todo:
        trials = sweep(plan, setup, source, seed, opts)
        out.append(record(plan, seed, select(plan, trials), extraction, opts))
        extraction = 0.0  # paid once, by the first seed's record
    return out


def run_task(upstream: Upstream, task: Task, data_root: Path, opts: RunOptions,
             fingerprint: str | None = None) -> list[ResultRecord]:
    """All seeds (and, with `--layer all`, all layers) of one task; the records written or found."""
    return run(upstream, [task], data_root, opts, fingerprint)


def run(upstream: Upstream, tasks: Sequence[Task], data_root: Path, opts: RunOptions,
        fingerprint: str | None = None) -> list[ResultRecord]:
    """Every task: all of them checked and planned first, then each extracted and trained in turn.

    Before the first extraction: every task folder exists, `--layer` exists in the upstream,
    every manifest and recipe is valid, and the disk holds the features still to extract.
    The upstream's fingerprint (a hash of all its weights) is computed once here. With
    `--layer all` each task gets one plan per layer, and they share one extraction.
    """
    upstream = as_upstream(upstream)
    if isinstance(opts.seeds, bool) or not isinstance(opts.seeds, int) or not 1 <= opts.seeds <= MAX_SEEDS:
        raise ValueError(f"seeds must be an integer in 1..{MAX_SEEDS}, got {opts.seeds!r}")
    for name in ("extract_threads", "train_threads"):
        value = getattr(opts, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    check_task_folders(tasks, data_root)
    layers = layers_to_run(upstream, opts.layer)
    fingerprint = fingerprint or upstream.fingerprint()
    plans = [plan_task(upstream, task, data_root, dataclasses.replace(opts, layer=layer), fingerprint)
             for task in tasks for layer in layers]
    check_disk(plans, opts)
    out: list[ResultRecord] = []
    shared: tuple[tuple[str, str], FeatureSource] | None = None  # the last task's features
    for plan in plans:
        features = None
        if plan.todo:
            which = (plan.task.name, plan.upstream_fingerprint)
            if shared is not None and shared[0] == which:
                features = (shared[1], 0.0)  # extraction time goes to the first layer's record
            else:
                source, seconds = extract(plan, opts)
                shared, features = (which, source), (source, seconds)
        out += execute(plan, opts, features)
    return out


# --------------------------------------------------------------------------- checks before any work

def layers_to_run(upstream: Upstream, layer: int | str | None) -> list[int | str | None]:
    """The probes `--layer` asks for, checked against the upstream (not after a long extraction)."""
    if layer is None or layer == "last":
        return [layer]
    if layer == "all":
        return list(range(upstream.num_layers))
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"--layer must be an index, 'last' or 'all', got {layer!r}")
    if not 0 <= layer < upstream.num_layers:
        raise ValueError(f"--layer {layer} is out of range: upstream {upstream.name} has {upstream.num_layers} "
                         f"layers, 0..{upstream.num_layers - 1} (or use --layer last / --layer all)")
    return [layer]


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


def cache_bytes_needed(plans: Sequence[TaskPlan], opts: RunOptions) -> dict[str, int]:
    """Bytes of features still to extract, per task: audio already cached counts nothing, and audio
    shared by several tasks counts once per cache folder (upstream variant and level)."""
    if not opts.use_cache:
        return {}
    cached: dict[Path, set[str]] = {}
    need: dict[str, int] = {}
    for plan in plans:
        if not plan.todo:
            continue
        up, level = plan.upstream, plan.task.level
        folder = cache_path(up, level, opts.cache_root, plan.upstream_fingerprint)
        done = cached.setdefault(folder, _cached_audio(folder))
        keys = audio_keys(plan.manifest)
        todo: list[int] = []
        for utt in plan.manifest.utterances():
            if keys[utt.id] not in done:
                done.add(keys[utt.id])
                todo.append(utt.num_samples * up.sample_rate // max(utt.sample_rate, 1))
        per_frame = up.num_layers * up.hidden_size
        if level == "utterance":  # each layer's mean over frames, float32
            nbytes = len(todo) * per_frame * 4
        else:  # every frame of every layer, float16
            nbytes = int(up.num_frames(torch.tensor(todo, dtype=torch.long)).sum()) * per_frame * 2 if todo else 0
        need[plan.task.name] = need.get(plan.task.name, 0) + nbytes
    return need


def check_disk(plans: Sequence[TaskPlan], opts: RunOptions) -> None:
    """Refuse a run whose features cannot fit, before the first extraction (the cache checks each task
    again when it starts, against what is free then)."""
    need = cache_bytes_needed(plans, opts)
    total = sum(need.values())
    if not total:
        return
    root = Path(opts.cache_root or cache_dir())
    free = _free_bytes(root)
    per_task = ", ".join(f"{task} {human_bytes(n)}" for task, n in need.items() if n)
    log.info("features to extract: about %s (%s) into %s, %s free", human_bytes(total), per_task, root,
             human_bytes(free))
    if total > 0.95 * free:
        raise CacheError(f"not enough disk for the feature cache: this run needs about {human_bytes(total)} "
                         f"({per_task}) in {root}, only {human_bytes(free)} free. Free some space, point "
                         f"SUPERBENCH_HOME at a larger disk, run fewer tasks, or use --no-cache")


def _cached_audio(folder: Path) -> set[str]:
    """Audio keys the cache folder already holds: the `keys` of its complete chunks (each chunk's .json
    is written last, see superbench.cache). Unreadable files count as not cached (an over-estimate)."""
    keys: set[str] = set()
    for meta in folder.glob("*-[0-9][0-9][0-9][0-9][0-9].json"):
        try:
            keys.update(json.loads(meta.read_text(encoding="utf-8"))["keys"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return keys


def _free_bytes(path: Path) -> int:
    """Free space of the disk that will hold `path` (its nearest existing parent, if it is not there yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the previous count (None: leave it)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

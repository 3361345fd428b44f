"""Run the SUPERB protocol for (upstream, task, seeds) and write one result record per seed.

Order of work, chosen so mistakes cost seconds: resolve the data and recipe, check
the manifest has the task's labels, skip tasks whose records exist, and only then
extract features (once, cached) and train the heads. Nothing is lost when a run is
interrupted: the cache resumes by chunk, finished (lr, fold) trials are kept, and the
running trial resumes from its last dev evaluation (`superbench.training`).
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

import torch

from downstreams import CTCHead, CTCVocab, UtteranceHead
from recipes import load_recipe
from superbench.cache import OnlineFeatures, extract_features
from superbench.io import atomic_write_text
from superbench.manifest import TaskManifest, load_task_manifest
from superbench.paths import checkpoints_dir
from superbench.paths import results_dir as default_results_dir
from superbench.results import ResultRecord, environment_versions, git_hash, now_iso, read_record, write_record
from superbench.tasks import TASK_ORDER, Task, get_task
from superbench.training import ClassificationObjective, CTCObjective, Objective, TrainConfig, TrainResult, train
from superbench.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    data: str = "demo"
    seeds: int = 1
    profile: str | None = None  # None: "fast" on the demo corpus, "superb" otherwise
    layer: int | str | None = None
    lr: float | None = None
    lr_sweep: bool = True
    use_cache: bool = True
    results_dir: Path | None = None
    overwrite: bool = False
    store: bool = True
    db_path: Path | None = None
    progress: bool = True
    cache_root: Path | None = None
    checkpoint_root: Path | None = None  # None: $SUPERBENCH_HOME/checkpoints
    #: Recipe keys to override (e.g. {"steps": 50} in tests and benchmarks); the record's profile
    #: then reads "<profile>+overrides" so such numbers are never mistaken for the recipe's.
    overrides: dict[str, Any] = field(default_factory=dict)


def resolve_data(data: str) -> tuple[Path, bool]:
    """`demo` / `demo:SIZE` (built on first use) or a data root holding <task>/meta.json folders."""
    if data == "demo" or data.startswith("demo:"):
        from recipes.prepare.demo import ensure_demo

        size = data.split(":", 1)[1] if ":" in data else "default"
        return Path(ensure_demo(size=size, seed=0)), True
    root = Path(data).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist (use --data demo, or a folder made by "
                                f"`superbench data prepare`)")
    return root, False


def resolve_tasks(task: str) -> list[Task]:
    names = TASK_ORDER if task == "all" else [t.strip() for t in task.split(",") if t.strip()]
    return [get_task(n) for n in names]


def check_manifest(task: Task, manifest: TaskManifest) -> None:
    """Refuse a manifest that cannot train this task, before any feature is extracted."""
    if manifest.task != task.name:
        raise ValueError(f"{manifest.root}: manifest is for task {manifest.task!r}, not {task.name!r}")
    if manifest.label_field != task.label_field:
        raise ValueError(f"{manifest.root}: task {task.name} needs {task.label_field!r} labels, the manifest "
                         f"has {manifest.label_field!r}")
    for fold in manifest.folds:
        for split in (fold.train, fold.dev, fold.test):
            rows = manifest.splits[split]
            if not rows:
                raise ValueError(f"{manifest.root}: split {split!r} (fold {fold.name}) is empty")
            lacking = [u.id for u in rows if not getattr(u, task.label_field)]
            if lacking:
                raise ValueError(f"{manifest.root}/{split}.jsonl: {len(lacking)} row(s) lack the "
                                 f"{task.label_field!r} label, e.g. {lacking[:3]}")
    if task.label_field in ("label", "phones") and not manifest.labels:
        raise ValueError(f"{manifest.root}/meta.json: task {task.name} needs a label inventory in 'labels'")


def _objective_and_targets(task: Task, manifest: TaskManifest) -> tuple[Objective, Callable[[Any], Any]]:
    if task.label_field == "label":
        index = {name: i for i, name in enumerate(manifest.labels)}
        return ClassificationObjective(), lambda u: index[u.label]
    if task.label_field == "phones":
        return CTCObjective(CTCVocab(manifest.labels, "phones"), task.metric), lambda u: u.phones
    texts = [u.text for u in manifest.utterances()]
    return CTCObjective(CTCVocab.for_texts(texts), task.metric), lambda u: " ".join(u.text.split())


def _head_factory(task: Task, recipe: dict[str, Any], upstream: Upstream, manifest: TaskManifest,
                  objective: Objective, layer: int | str | None) -> Callable[[], torch.nn.Module]:
    L, D = upstream.num_layers, upstream.hidden_size
    if task.level == "utterance":
        return lambda: UtteranceHead(L, D, len(manifest.labels), proj_dim=recipe["proj_dim"], layer=layer)
    vocab = objective.vocab  # type: ignore[attr-defined]
    return lambda: CTCHead(L, D, len(vocab), proj_dim=recipe["proj_dim"], rnn_dims=recipe["rnn_dims"],
                           dropout=recipe["dropout"], layer=layer,
                           frame_stack=recipe["frame_stack"])


def upstream_for_recipe(upstream: Upstream, recipe: dict[str, Any]) -> Upstream:
    """Apply the recipe's `filterbank_cmvn` to the FBANK/MFCC baselines.

    Per-utterance CMVN makes every utterance's mean feature zero, and the utterance
    heads mean-pool, so with CMVN the baseline is at chance by construction. The official
    SUPERB leaderboard therefore re-ran FBANK without CMVN for KS, SID and ER; the
    recipes of those tasks say the same, and the fingerprint records which one ran.
    """
    from upstreams.filterbank import KaldiFeatures

    wanted = bool(recipe["filterbank_cmvn"])
    if isinstance(upstream, KaldiFeatures) and upstream.config.cmvn != wanted:
        return KaldiFeatures(upstream.name, dataclasses.replace(upstream.config, cmvn=wanted))
    return upstream


def _record_path(results: Path, upstream: Upstream, task: Task, seed: int, layer: Any) -> Path:
    probe = ResultRecord(upstream=upstream.name, upstream_fingerprint="", task=task.name, metric=task.metric,
                         higher_is_better=task.higher_is_better, test=0.0, dev=0.0, seed=seed,
                         recipe_version="", layer=layer)
    return results / probe.file_name()


def run_task(upstream: Upstream, task: Task, data_root: Path, opts: RunOptions, is_demo: bool) -> list[ResultRecord]:
    """All seeds of one task; returns the records written (or found, when skipped)."""
    profile = opts.profile or ("fast" if is_demo else "superb")
    recipe = load_recipe(task.name, profile)
    if opts.overrides:
        unknown = sorted(set(opts.overrides) - set(recipe))
        if unknown:
            raise ValueError(f"unknown recipe override(s) {unknown}; recipe keys: {sorted(recipe)}")
        recipe = {**recipe, **opts.overrides}
        profile = f"{profile}+overrides"
    manifest = load_task_manifest(data_root / task.name)
    check_manifest(task, manifest)
    # The record names the model the user chose; the cache is keyed by the variant that actually runs.
    model_fingerprint = upstream.fingerprint()
    upstream = upstream_for_recipe(upstream, recipe)
    results = Path(opts.results_dir or default_results_dir())
    layer = opts.layer
    seeds = list(range(opts.seeds))
    paths = {s: _record_path(results, upstream, task, s, layer) for s in seeds}
    existing = [s for s in seeds if paths[s].is_file()]
    if existing and not opts.overwrite:
        log.info("%s/%s: record(s) for seed(s) %s exist in %s; skipping them (use --overwrite to redo)",
                 upstream.name, task.name, existing, results)
        seeds = [s for s in seeds if s not in existing]
    done = [read_record(paths[s]) for s in existing if not opts.overwrite]
    if not seeds:
        return done

    t0 = time.perf_counter()
    if opts.use_cache:
        source = extract_features(upstream, manifest, task.level, root=opts.cache_root, progress=opts.progress)
    else:
        source = OnlineFeatures(upstream, manifest)
    extraction = time.perf_counter() - t0

    objective, target_of = _objective_and_targets(task, manifest)
    make_head = _head_factory(task, recipe, upstream, manifest, objective, layer)

    def data(split: str) -> tuple[list[str], list[Any]]:
        rows = manifest.splits[split]
        return [u.id for u in rows], [target_of(u) for u in rows]

    if opts.lr is not None:
        lrs = [float(opts.lr)]
    elif opts.lr_sweep and recipe["lr_grid"]:
        lrs = recipe["lr_grid"]
    else:
        lrs = [recipe["lr"]]

    # Identity of this run's trials (weights hashed once here, not once per trial).
    run_identity = {"model": model_fingerprint, "variant": upstream.fingerprint(), "manifest": manifest.fingerprint,
                    "recipe": recipe, "profile": profile, "layer": layer}
    out = list(done)
    for seed in seeds:
        # Finished trials and the running one's state live here until the record is written, so
        # an interrupted run (Ctrl-C, kill, power loss) picks up where it stopped.
        partial = Path(opts.checkpoint_root or checkpoints_dir()) / paths[seed].stem
        if opts.overwrite:
            shutil.rmtree(partial, ignore_errors=True)
        trials: dict[float, dict[str, TrainResult]] = {}
        for lr in lrs:
            cfg = TrainConfig(steps=recipe["steps"], batch_size=recipe["batch_size"], lr=lr,
                              eval_interval=recipe["eval_interval"], grad_clip=recipe["grad_clip"],
                              grad_accum=recipe["grad_accum"], balanced_sampling=recipe["balanced_sampling"],
                              eval_batch_size=recipe["eval_batch_size"], seed=seed)
            trials[lr] = {}
            for fold in manifest.folds:
                desc = f"{upstream.name}/{task.name} seed {seed} lr {lr:g}" + (
                    f" {fold.name}" if len(manifest.folds) > 1 else "")
                key = _trial_key(run_identity, cfg, fold.name)
                trial_file = partial / f"lr{lr:g}-{fold.name}.json"
                result = _finished_trial(trial_file, key)
                if result is None:
                    checkpoint = trial_file.with_suffix(".pt")
                    result = train(make_head, objective, source, data(fold.train), data(fold.dev), data(fold.test),
                                   cfg, progress=opts.progress, desc=desc, checkpoint=checkpoint,
                                   checkpoint_key=key)
                    atomic_write_text(trial_file, json.dumps({"key": key, "result": result.to_dict()}) + "\n")
                    checkpoint.unlink(missing_ok=True)
                else:
                    log.info("%s: finished before the interruption, reusing it (%s)", desc, trial_file)
                trials[lr][fold.name] = result
                log.info("%s: dev %s %.2f (best step %d)", desc, task.metric,
                         trials[lr][fold.name].dev, trials[lr][fold.name].best_step)
        mean_dev = {lr: statistics.fmean(r.dev for r in folds.values()) for lr, folds in trials.items()}
        pick = max if task.higher_is_better else min
        best_lr = pick(lrs, key=lambda lr: mean_dev[lr])
        chosen = trials[best_lr]
        training = sum(r.seconds for folds in trials.values() for r in folds.values())
        n_layers = len(next(iter(chosen.values())).layer_weights)
        weights = [round(statistics.fmean(r.layer_weights[i] for r in chosen.values()), 6) for i in range(n_layers)]
        record = ResultRecord(
            upstream=upstream.name, upstream_fingerprint=model_fingerprint, task=task.name,
            metric=task.metric, higher_is_better=task.higher_is_better,
            test=round(statistics.fmean(r.test for r in chosen.values()), 4),
            dev=round(mean_dev[best_lr], 4), seed=seed, recipe_version=recipe["version"], profile=profile,
            lr=best_lr, steps=recipe["steps"], layer_weights=weights, layer=layer, corpus=manifest.corpus,
            manifest_fingerprint=manifest.fingerprint,
            folds={name: {"dev": round(r.dev, 4), "test": round(r.test, 4), "best_step": r.best_step}
                   for name, r in chosen.items()} if len(chosen) > 1 else {},
            wall_time={"extraction": round(extraction, 3), "training": round(training, 3)},
            versions=environment_versions(), git_hash=git_hash(), created_at=now_iso())
        path = write_record(record, results)
        log.info("%s/%s seed %d: test %s %.2f (dev %.2f, lr %g) -> %s", upstream.name, task.name, seed,
                 task.metric, record.test, record.dev, best_lr, path)
        _add_to_store(record, opts)
        shutil.rmtree(partial, ignore_errors=True)
        out.append(record)
        extraction = 0.0  # paid once, by the first seed's record
    return out


def _trial_key(run_identity: dict[str, Any], cfg: TrainConfig, fold: str) -> str:
    """Identity of one (seed, lr, fold) training run: saved state is reused only under the same key."""
    what = {**run_identity, "config": dataclasses.asdict(cfg), "fold": fold}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _finished_trial(path: Path, key: str) -> TrainResult | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return TrainResult.from_dict(saved["result"]) if saved.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _add_to_store(record: ResultRecord, opts: RunOptions) -> None:
    if not opts.store:
        return
    try:
        from leaderboard.store import ResultStore, default_db_path
    except ImportError:
        log.debug("leaderboard.store not importable; record kept as a file only")
        return
    store = ResultStore(opts.db_path or default_db_path())
    try:
        store.add(record, overwrite=True)
    finally:
        store.close()


def run(upstream: Upstream, tasks: Sequence[Task], opts: RunOptions) -> list[ResultRecord]:
    """Every task in order; the data root is resolved (and the demo built) once."""
    data_root, is_demo = resolve_data(opts.data)
    records: list[ResultRecord] = []
    for task in tasks:
        records.extend(run_task(upstream, task, data_root, opts, is_demo))
    return records


def summarize(records: Sequence[ResultRecord]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (upstream, task): the numbers a paper table shows."""
    groups: dict[tuple[str, str], list[ResultRecord]] = {}
    for r in records:
        groups.setdefault((r.upstream, r.task), []).append(r)
    rows = []
    for (up, task), recs in groups.items():
        tests = [r.test for r in recs]
        rows.append({"upstream": up, "task": task, "metric": recs[0].metric, "seeds": len(recs),
                     "test_mean": statistics.fmean(tests),
                     "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                     "dev_mean": statistics.fmean(r.dev for r in recs), "lr": recs[0].lr,
                     "profile": recs[0].profile,
                     "extraction_s": sum(r.wall_time.get("extraction", 0.0) for r in recs),
                     "training_s": sum(r.wall_time.get("training", 0.0) for r in recs)})
    return rows

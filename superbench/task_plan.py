"""What one task's run will do, decided and checked before any expensive work (`plan_task`, `TaskPlan`).

`plan_task` loads and checks the manifest and the recipe, derives every seed's `RunKey`, and keeps the
seeds already recorded on the same audio bytes (`records_to_keep`); the rest are to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superbench.device import Compute, resolve_compute
from superbench.features.keys import audio_fingerprint, audio_keys
from superbench.manifest import TaskManifest, load_task_manifest
from superbench.options import RunOptions
from superbench.paths import checkpoints_dir
from superbench.paths import results_dir as default_results_dir
from superbench.recipe import Recipe
from superbench.records import ResultRecord, old_layout_records, read_record, record_path
from superbench.run_key import RunKey, safe_component
from superbench.tasks import Task, TaskSetup
from superbench.training import TrainResult
from superbench.trial_files import TrialFiles
from superbench.upstream import Upstream

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
    #: utterance id -> audio key (superbench.features.keys.audio_keys), computed once per manifest by `run`
    audio_keys: dict[str, str] | None = None
    #: superbench.features.keys.audio_fingerprint of `audio_keys`: the audio bytes the records were scored on
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
    done = [] if opts.execution.overwrite else records_to_keep(keys, results, audio_fp)
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


def records_to_keep(keys: dict[int, RunKey], results: Path, audio_fp: str) -> list[ResultRecord]:
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


def split_data(plan: TaskPlan, setup: TaskSetup, split: str) -> tuple[list[str], list[Any]]:
    """(ids, targets) of one manifest split, targets as the task kind reads them."""
    rows = plan.manifest.splits[split]
    return [u.id for u in rows], [setup.target_of(u) for u in rows]

"""What a run will cost, before it runs: `superbench plan`, and the table `run` logs before extracting.

Per task: utterances and hours of audio (and how much of it is distinct audio, which is what the
audio-keyed cache extracts), the cache bytes still to write (frame caches in float16 and, for
comparison, in int8), the extraction time estimated from a short probe of the upstream on this
device, the updates x trials of the grid, and the free disk. Nothing here extracts or trains.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from superbench.audio import load_audio
from superbench.cache import audio_keys, cache_path, cached_keys, feature_bytes
from superbench.device import Compute
from superbench.io import free_bytes, human_bytes
from superbench.upstream import Upstream, pad_batch

if TYPE_CHECKING:
    from superbench.options import RunOptions
    from superbench.runner import TaskPlan

log = logging.getLogger(__name__)

#: Seconds of audio the probe runs the upstream on (after one warm-up batch).
PROBE_SECONDS = 8.0


@dataclass
class TaskEstimate:
    """One task (one probed layer) of a run, in numbers."""

    task: str
    level: str
    utterances: int
    hours: float  # all utterances
    distinct_hours: float  # each audio file once: what the cache holds
    to_extract: int  # distinct audio files not in the cache yet
    extract_hours: float  # their audio
    cache_bytes: int  # to write, in the cache's format (float16 frames, float32 means)
    cache_bytes_int8: int | None  # the same frames as int8 with per-utterance/layer/channel scales
    updates: int
    trials: int  # learning rates x seeds x folds still to train
    extraction_seconds: float | None = None  # from the probe; None when there was nothing to probe


@dataclass
class RunEstimate:
    upstream: str
    compute: str
    probe_rate: float | None  # seconds of compute per second of audio; None when nothing is to extract
    probe_audio_seconds: float
    cache_root: Path
    free_bytes: int
    tasks: list[TaskEstimate] = field(default_factory=list)

    @property
    def cache_bytes(self) -> int:
        return sum(t.cache_bytes for t in self.tasks)

    @property
    def cache_bytes_int8(self) -> int:
        return sum(t.cache_bytes_int8 if t.cache_bytes_int8 is not None else t.cache_bytes for t in self.tasks)


def probe_rate(upstream: Upstream, plans: Sequence[TaskPlan], compute: Compute,
               seconds: float = PROBE_SECONDS) -> tuple[float, float]:
    """Seconds the upstream takes per second of audio on `compute`, measured on up to `seconds` of the
    run's own audio (longest-first batches of 8, as extraction batches them); and the audio seconds used."""
    utts = sorted({u.audio: u for p in plans for u in p.manifest.utterances()}.values(),
                  key=lambda u: (-u.num_samples, u.id))
    picked, total = [], 0.0
    for u in utts[:: max(1, len(utts) // 64)]:  # spread over the corpus, not only its longest files
        if total >= seconds and len(picked) >= 2:
            break
        picked.append(u)
        total += u.duration
    batches = [picked[i:i + 8] for i in range(0, len(picked), 8)]
    wavs = [[load_audio(u.audio) for u in b] for b in batches]
    upstream = upstream.to(compute.device).eval()

    def forward(batch: list[np.ndarray]) -> None:
        x, lengths = pad_batch(batch)
        with torch.inference_mode(), compute.autocast():
            upstream(x.to(compute.device), lengths)
        if compute.device.type == "cuda":
            torch.cuda.synchronize(compute.device)

    forward([w[:upstream.receptive_field * 4] if len(w) > upstream.receptive_field * 4 else w
             for w in wavs[0]])  # warm-up (allocators, kernels)
    start = time.perf_counter()
    for batch in wavs:
        forward(batch)
    elapsed = time.perf_counter() - start
    return elapsed / max(total, 1e-9), total


def task_estimates(plans: Sequence[TaskPlan], opts: RunOptions) -> list[TaskEstimate]:
    """One TaskEstimate per plan, without timing anything: audio still to extract counts once per cache
    folder (audio already cached, or shared with an earlier plan, counts nothing); the runner's disk check
    sums these bytes too."""
    seen: dict[Path, set[str]] = {}
    tasks = []
    use_cache = opts.execution.use_cache
    for plan in plans:
        up, level = plan.upstream, plan.task.level
        folder = cache_path(up, level, opts.paths.cache_root, plan.upstream_fingerprint)
        done = seen.setdefault(folder, cached_keys(folder) if use_cache else set())
        keys = (plan.audio_keys if plan.audio_keys is not None else audio_keys(plan.manifest) if use_cache
                else {u.id: u.audio for u in plan.manifest.utterances()})
        utts = plan.manifest.utterances()
        distinct: dict[str, float] = {}
        new, nbytes, nbytes8, new_seconds = 0, 0, 0, 0.0
        for u in utts:
            key = keys[u.id]
            if key in distinct:
                continue
            distinct[key] = u.duration
            if key in done or not plan.todo:
                continue
            done.add(key)
            new += 1
            new_seconds += u.duration
            samples = u.num_samples * up.sample_rate // max(u.sample_rate, 1)
            nbytes += feature_bytes(up, samples, level, opts.compute.cache_dtype)
            nbytes8 += feature_bytes(up, samples, level, "int8")
        trials = len(plan.lrs) * len(plan.todo) * len(plan.manifest.folds)
        tasks.append(TaskEstimate(
            task=plan.task.name + ("" if plan.layer is None else f"@{plan.layer}"), level=level,
            utterances=len(utts), hours=sum(u.duration for u in utts) / 3600,
            distinct_hours=sum(distinct.values()) / 3600, to_extract=new, extract_hours=new_seconds / 3600,
            cache_bytes=nbytes if use_cache else 0, cache_bytes_int8=nbytes8 if level == "frame" else None,
            updates=plan.recipe.train.steps, trials=trials))
    return tasks


def estimate_run(plans: Sequence[TaskPlan], opts: RunOptions, probe: bool = True) -> RunEstimate:
    """The numbers of `plans` (the runner's, checked); `probe=False` skips timing the upstream."""
    from superbench.paths import cache_dir

    root = Path(opts.paths.cache_root or cache_dir())
    tasks = task_estimates(plans, opts)
    rate, used = None, 0.0
    if probe and plans and any(t.to_extract for t in tasks):
        rate, used = probe_rate(plans[0].upstream, plans, plans[0].compute)
        for t in tasks:
            t.extraction_seconds = rate * t.extract_hours * 3600
    first = plans[0] if plans else None
    return RunEstimate(upstream=first.model_name if first else "", compute=(
        f"{first.compute.describe()} ({first.compute.precision})" if first else ""), probe_rate=rate,
        probe_audio_seconds=used, cache_root=root, free_bytes=free_bytes(root), tasks=tasks)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(estimate: RunEstimate) -> str:
    """The plan as a table (what `superbench plan` prints and `run` logs)."""
    rate = ("nothing to extract" if estimate.probe_rate is None else
            f"probe: {estimate.probe_rate:.4f} s per s of audio ({estimate.probe_audio_seconds:.0f} s probed)")
    lines = [f"plan: {estimate.upstream} on {estimate.compute}; {rate}",
             f"{'task':<8} {'level':<9} {'utts':>8} {'hours':>8} {'distinct h':>10} {'to extract':>10} "
             f"{'cache':>10} {'(int8)':>10} {'extraction':>10} {'updates x trials':>17}"]
    for t in estimate.tasks:
        int8 = "-" if t.cache_bytes_int8 is None else human_bytes(t.cache_bytes_int8)
        lines.append(f"{t.task:<8} {t.level:<9} {t.utterances:>8} {t.hours:>8.2f} {t.distinct_hours:>10.2f} "
                     f"{t.to_extract:>10} {human_bytes(t.cache_bytes):>10} {int8:>10} "
                     f"{_duration(t.extraction_seconds):>10} {t.updates:>8} x {t.trials:<6}")
    total_time = sum(t.extraction_seconds or 0.0 for t in estimate.tasks)
    lines.append(f"cache to write: {human_bytes(estimate.cache_bytes)} (frame caches as int8: "
                 f"{human_bytes(estimate.cache_bytes_int8)}); extraction about {_duration(total_time)}; "
                 f"{human_bytes(estimate.free_bytes)} free in {estimate.cache_root}")
    return "\n".join(lines)

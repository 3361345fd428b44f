"""What a run will cost, before it runs: `superbench plan`, and the table `run` logs before extracting.

Per task: utterances and hours of audio (and how much of it is distinct audio, which is what the
audio-keyed cache extracts), the cache bytes still to write (frame caches in float16 and, for
comparison, in int8), the extraction time, the updates x trials of the grid, and the free disk.

The extraction time comes from a probe that runs the real extraction (`superbench.features.extraction.extract_chunk`:
audio read ahead, forward, checks, chunk written and hashed) on a sample of the run's own chunks, planned
as the cache plans them, on the run's device, precision and extraction threads, into a scratch folder.
Its first batch is a warm-up and not timed (allocators, kernels, thread pools: a short untimed probe
over-estimated fbank 8-35x on large corpora); it then times chunks spread over the length-sorted corpus
until PROBE_AUDIO_SECONDS of audio (at most PROBE_SHARE of the audio to extract) or PROBE_WALL_SECONDS
of wall time, and the rate (audio seconds per
wall second) scales to the audio still to extract. Nothing here trains or writes to the cache.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from superbench.device import Compute, torch_threads
from superbench.features.extraction import (
    DEFAULT_BATCH_SAMPLES,
    DEFAULT_CHUNK_BYTES,
    ChunkTask,
    extract_chunk,
    feature_bytes,
    plan_chunks,
)
from superbench.features.keys import audio_keys
from superbench.features.store import cache_path, cached_keys
from superbench.io import free_bytes, human_bytes
from superbench.manifest import Utterance
from superbench.upstream import Upstream

if TYPE_CHECKING:
    from superbench.options import RunOptions
    from superbench.task_plan import TaskPlan

log = logging.getLogger(__name__)

#: The probe stops timing once it has extracted this much audio (after its warm-up batch) ...
PROBE_AUDIO_SECONDS = 900.0
#: ... or once it has spent this long extracting it, whichever comes first (at least one chunk is timed).
PROBE_WALL_SECONDS = 10.0
#: ... and never more than this share of the audio to extract (the plan `run` logs must not double a small
#: extraction).
PROBE_SHARE = 0.1


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


@dataclass(frozen=True)
class Probe:
    """The timed part of a probe of one cache level: audio extracted over the wall time it took."""

    level: str
    audio_seconds: float
    wall_seconds: float
    chunks: int

    @property
    def rate(self) -> float:
        """Seconds of audio extracted per second of wall time."""
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


@dataclass
class RunEstimate:
    upstream: str
    compute: str
    probes: dict[str, Probe]  # by cache level; empty when nothing is to extract (or nothing was probed)
    cache_root: Path
    free_bytes: int
    threads: int  # torch threads extraction runs with (the probe's too)
    tasks: list[TaskEstimate] = field(default_factory=list)

    @property
    def cache_bytes(self) -> int:
        return sum(t.cache_bytes for t in self.tasks)

    @property
    def cache_bytes_int8(self) -> int:
        return sum(t.cache_bytes_int8 if t.cache_bytes_int8 is not None else t.cache_bytes for t in self.tasks)


def spread_order(n: int) -> list[int]:
    """0..n-1 in bit-reversed counting order: every prefix is spread over the whole range, so a probe that
    stops early has timed the long and the short utterances of the length-sorted plan alike."""
    bits = max(1, (n - 1).bit_length())
    return [i for i in (int(f"{k:0{bits}b}"[::-1], 2) for k in range(1 << bits)) if i < n]


def probe_extraction(upstream: Upstream, utterances: Sequence[Utterance], level: str, compute: Compute, *,
                     frame_dtype: str = "fp16", threads: int | None = None, workdir: Path | None = None,
                     max_audio: float = PROBE_AUDIO_SECONDS, max_wall: float = PROBE_WALL_SECONDS,
                     clock: Callable[[], float] = time.perf_counter) -> Probe:
    """Time the cache's own extraction of a sample of `utterances` (ids unique, e.g. audio keys) at `level`.

    The chunks are planned as `extract_features` plans them (longest first, DEFAULT_BATCH_SAMPLES padded
    samples per batch), so the probe pays the padding, reading and writing the real run pays; the
    first batch runs once untimed; chunks are then timed in `spread_order` until `max_audio` seconds of
    audio or `max_wall` seconds of wall time. Written into a scratch folder under `workdir`, then removed.
    """
    by_id = {u.id: u for u in utterances}
    chunks = plan_chunks(upstream, list(by_id.values()), level, DEFAULT_BATCH_SAMPLES, DEFAULT_CHUNK_BYTES)
    if not chunks:
        raise ValueError("nothing to probe: no utterances")
    upstream = upstream.to(compute.device).eval()
    audio, wall, timed = 0.0, 0.0, 0
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix=".plan-probe-", dir=workdir) as scratch:
        def run(name: str, batches: list[list[str]]) -> None:
            extract_chunk(upstream, ChunkTask(Path(scratch), name, [[by_id[i] for i in b] for b in batches],
                                              level, compute=compute, frame_dtype=frame_dtype))

        order = spread_order(len(chunks))
        run("warmup", chunks[order[0]][:1])  # not timed: first-call costs are no part of the steady rate
        for index in order:
            start = clock()
            run(f"probe-{index:05d}", chunks[index])
            wall += clock() - start
            audio += sum(by_id[i].duration for b in chunks[index] for i in b)
            timed += 1
            if audio >= max_audio or wall >= max_wall:
                break
    probe = Probe(level, audio, wall, timed)
    log.debug("probe of %s (%s): %.1f s of audio in %.2f s over %d chunk(s)", upstream.name, level, audio, wall,
              timed)
    return probe


def task_estimates(plans: Sequence[TaskPlan], opts: RunOptions) -> list[TaskEstimate]:
    """One TaskEstimate per plan, without timing anything: audio still to extract counts once per cache
    folder (audio already cached, or shared with an earlier plan, counts nothing); the runner's disk check
    sums these bytes too."""
    return _estimates(plans, opts)[0]


def _estimates(plans: Sequence[TaskPlan], opts: RunOptions
               ) -> tuple[list[TaskEstimate], dict[str, tuple[TaskPlan, list[Utterance]]]]:
    """`task_estimates`, and per cache level the first plan of that level with audio to extract and all the
    level's audio still to extract (as the cache keys it: the utterance's id is its audio key)."""
    seen: dict[Path, set[str]] = {}
    pending: dict[str, tuple[TaskPlan, list[Utterance]]] = {}
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
            pending.setdefault(level, (plan, []))[1].append(replace(u, id=key))
        trials = len(plan.lrs) * len(plan.todo) * len(plan.manifest.folds)
        tasks.append(TaskEstimate(
            task=plan.task.name + ("" if plan.layer is None else f"@{plan.layer}"), level=level,
            utterances=len(utts), hours=sum(u.duration for u in utts) / 3600,
            distinct_hours=sum(distinct.values()) / 3600, to_extract=new, extract_hours=new_seconds / 3600,
            cache_bytes=nbytes if use_cache else 0, cache_bytes_int8=nbytes8 if level == "frame" else None,
            updates=plan.recipe.train.steps, trials=trials))
    return tasks, pending


def estimate_run(plans: Sequence[TaskPlan], opts: RunOptions, probe: bool = True) -> RunEstimate:
    """The numbers of `plans` (the runner's, checked); `probe=False` skips timing the upstream. The probe
    runs with the run's extraction threads, device, precision and cache dtype, one per cache level."""
    from superbench.paths import cache_dir

    root = Path(opts.paths.cache_root or cache_dir())
    tasks, pending = _estimates(plans, opts)
    probes: dict[str, Probe] = {}
    threads = opts.compute.extract_threads
    if probe:
        for level, (plan, utts) in pending.items():
            audio = min(PROBE_AUDIO_SECONDS, PROBE_SHARE * sum(u.duration for u in utts))
            probes[level] = probe_extraction(plan.upstream, utts, level, plan.compute,
                                             frame_dtype=opts.compute.cache_dtype, threads=threads,
                                             workdir=root if root.is_dir() else None, max_audio=audio)
        for t in tasks:
            if t.level in probes:
                t.extraction_seconds = t.extract_hours * 3600 / probes[t.level].rate
    first = plans[0] if plans else None
    return RunEstimate(upstream=first.model_name if first else "", compute=(
        f"{first.compute.describe()} ({first.compute.precision})" if first else ""), probes=probes,
        cache_root=root, free_bytes=free_bytes(root), threads=threads or torch.get_num_threads(), tasks=tasks)


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
    if estimate.probes:
        rate = "; ".join(f"probe ({p.level}): {p.rate:.1f} s of audio per s ({p.audio_seconds:.0f} s of audio in "
                         f"{p.wall_seconds:.1f} s after a warm-up batch)" for p in estimate.probes.values())
    else:
        rate = "not probed" if any(t.to_extract for t in estimate.tasks) else "nothing to extract"
    lines = [f"plan: {estimate.upstream} on {estimate.compute}, {estimate.threads} extraction thread(s); {rate}",
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

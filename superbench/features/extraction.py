"""Extraction: the upstream run once over the audio a cache still lacks, planned into chunks (longest
first, under a samples budget), resumable chunk by chunk under the cache's extraction lock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from superbench.audio import TARGET_SAMPLE_RATE, check_waveform, load_audio
from superbench.device import Compute, to_device
from superbench.features.keys import audio_keys
from superbench.features.store import (
    CACHE_FORMAT_VERSION,
    FORMAT_CHANGES,
    FRAME_DTYPES,
    SCALE_ROWS,
    CacheError,
    FeatureCache,
    cache_path,
    disk_bytes,
    quantize_int8,
    scan_chunks,
    write_chunk,
    write_meta,
)
from superbench.io import atomic_write_text, human_bytes
from superbench.manifest import TaskManifest, Utterance
from superbench.upstream import Upstream, pad_batch

log = logging.getLogger(__name__)


#: Default extraction batch budget: padded samples per forward pass (64 s of 16 kHz audio).
DEFAULT_BATCH_SAMPLES = 16000 * 64


#: Default chunk size on disk; bounds the memory held before a chunk is written.
DEFAULT_CHUNK_BYTES = 64 << 20


#: At most this many utterances per chunk: a chunk is the unit of work of parallel extraction (Ray actors),
#: so small pooled features must not all land in one chunk.
DEFAULT_CHUNK_UTTERANCES = 64


#: Frames an upstream may differ from its declared frame rule before extraction stops.
DEFAULT_FRAME_TOLERANCE = 2


#: Samples a decoded waveform may differ from its row's num_samples (resampling rounding) before
#: extraction stops: a lying row must not size a batch.
NUM_SAMPLES_TOLERANCE = 4


class ChunkPool(Protocol):
    """Runs chunk tasks somewhere else; `run` calls `progress(n)` as chunks of n utterances finish."""

    def run(self, upstream: Upstream, tasks: Sequence["ChunkTask"], progress: Callable[[int], Any]) -> None: ...


def compute_for(upstream: Upstream, compute: Compute | None) -> Compute:
    """`compute`, or by default fp32 where the upstream's weights are (the CPU for one without any)."""
    if compute is not None:
        return compute
    for tensor in (*upstream.parameters(), *upstream.buffers()):
        return Compute(device=tensor.device)
    return Compute()


def feature_bytes(upstream: Upstream, num_samples: int, level: str, frame_dtype: str = "fp16") -> int:
    """Bytes the cache stores for one utterance of `num_samples` input samples: each layer's mean over
    frames in float32 (utterance level), or every frame of every layer in float16 (frame level) or in
    int8 plus a float32 scale per layer and channel (`frame_dtype="int8"`)."""
    values = upstream.num_layers * upstream.hidden_size
    if level == "utterance":
        return values * 4
    frames = int(upstream.num_frames(torch.tensor([num_samples]))[0])
    return frames * values + SCALE_ROWS * values if frame_dtype == "int8" else frames * values * 2


def plan_chunks(upstream: Upstream, utterances: Sequence[Utterance], level: str, batch_samples: int,
                chunk_bytes: int, chunk_utterances: int = DEFAULT_CHUNK_UTTERANCES) -> list[list[list[str]]]:
    """Chunks of batches of ids: longest first, each batch under `batch_samples` padded samples
    (and under `chunk_bytes` of features, so a chunk never holds more than one oversized batch);
    a chunk holds at most `chunk_utterances` utterances unless one batch alone is larger."""
    ordered = sorted(utterances, key=lambda u: (-u.num_samples, u.id))
    batches: list[list[Utterance]] = []
    batch_bytes: list[int] = []
    for utt in ordered:
        nbytes = feature_bytes(upstream, utt.num_samples, level)
        if (batches and batches[-1][0].num_samples * (len(batches[-1]) + 1) <= batch_samples
                and batch_bytes[-1] + nbytes <= chunk_bytes):
            batches[-1].append(utt)
            batch_bytes[-1] += nbytes
        else:
            batches.append([utt])
            batch_bytes.append(nbytes)
    chunks: list[list[list[str]]] = []
    size, count = chunk_bytes, chunk_utterances
    for batch, nbytes in zip(batches, batch_bytes):
        full = size + nbytes > chunk_bytes or count + len(batch) > chunk_utterances
        if full and (not chunks or chunks[-1]):
            chunks.append([])
            size, count = 0, 0
        chunks[-1].append([u.id for u in batch])
        size += nbytes
        count += len(batch)
    return chunks


def load_wav_for(utt: Utterance, min_samples: int) -> np.ndarray:
    """The waveform, refused when its length is not the row's num_samples: a row that lies about it
    would otherwise size (and pad) a whole batch."""
    wav = load_audio(utt.audio)
    expected = round(utt.num_samples * TARGET_SAMPLE_RATE / utt.sample_rate)
    if abs(len(wav) - expected) > NUM_SAMPLES_TOLERANCE:
        raise CacheError(f"{utt.audio} (id {utt.id}): the manifest row says num_samples={utt.num_samples} "
                         f"at {utt.sample_rate} Hz, the decoded audio has {len(wav)} samples at "
                         f"{TARGET_SAMPLE_RATE} Hz (expected {expected}); re-prepare the task or fix the row")
    return check_waveform(wav, name=utt.audio, min_samples=min_samples)


def _plan_hash(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def extract_features(upstream: Upstream, manifest: TaskManifest, level: str, *,
                     root: str | Path | None = None, fingerprint: str | None = None,
                     keys: Mapping[str, str] | None = None,
                     batch_samples: int = DEFAULT_BATCH_SAMPLES, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     frame_tolerance: int = DEFAULT_FRAME_TOLERANCE, progress: bool = True,
                     compute: Compute | None = None, pool: ChunkPool | None = None,
                     frame_dtype: str = "fp16") -> "FeatureCache":
    """Extract the audio of `manifest` that the cache lacks, then open the cache for its ids.

    `fingerprint` is `upstream.fingerprint()` and `keys` is `audio_keys(manifest)` when the caller
    already has them (hashing large weights takes seconds; keying a large corpus reads every file).
    Another process extracting into the same folder is waited for, not disturbed. `compute` says where the
    upstream runs and at which precision (default: where it is, fp32); a precision other than fp32 must be
    in `fingerprint` (the runner appends it), since it changes the features. `pool` runs the chunks
    elsewhere (e.g. Ray actors writing into this folder, which must then be on a shared filesystem);
    the plan, the lock and the check of the result stay here. `frame_dtype` "int8" stores frames as int8
    with a scale per utterance, layer and channel (half the bytes of float16; the numbers change, so the
    caller puts it in `fingerprint`, as the runner does).
    """
    if frame_dtype not in FRAME_DTYPES:
        raise ValueError(f"frame cache dtype must be one of {', '.join(FRAME_DTYPES)}, got {frame_dtype!r}")
    compute = compute_for(upstream, compute)
    fingerprint = fingerprint if fingerprint is not None else upstream.fingerprint()
    path = cache_path(upstream, level, root, fingerprint)
    keys = dict(keys) if keys is not None else audio_keys(manifest)
    if (path / "cache.json").is_file():  # fast path, no lock: every chunk we read is complete
        cache, _, _ = FeatureCache._open(path, keys)  # damaged chunks: repaired below, under the lock
        if cache is not None:
            log.info("features cached: %s", path)
            return cache
    else:
        _log_old_formats(path)
    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path / "extract.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is extracting into %s; waiting for it", path)
        lock.acquire()
    try:
        for stale in [*path.glob(".*.tmp"), *path.glob("plans/.*.tmp")]:  # a killed writer's; none runs now
            stale.unlink(missing_ok=True)
        write_meta(path, upstream, level, fingerprint, frame_dtype)
        _extract_missing(upstream, manifest, level, path, keys, batch_samples, chunk_bytes,
                         frame_tolerance, progress, compute, pool, frame_dtype)
    finally:
        lock.release()
    return FeatureCache.open(path, keys)


def _log_old_formats(path: Path) -> None:
    """Say why a cache that exists in an older format is extracted again."""
    level = path.name.rsplit("-v", 1)[0]
    old = sorted(p.name for p in path.parent.glob(f"{level}-v*") if p != path and (p / "cache.json").is_file())
    if old:
        why = FORMAT_CHANGES.get(CACHE_FORMAT_VERSION, "a new layout")
        log.info("%s: feature cache format changed (%s -> v%d: %s); extracting again "
                 "(the old folder(s) can be removed)", path.parent, ", ".join(old), CACHE_FORMAT_VERSION, why)


def _remove_bad_chunks(path: Path, bad: Mapping[str, str]) -> None:
    """Under the extraction lock only: drop each damaged chunk (its .json first, so no reader sees it
    complete) and say so; its audio is then missing and extracted again."""
    for name, why in sorted(bad.items()):
        log.warning("damaged feature-cache chunk, removing it and extracting it again: %s", why)
        (path / f"{name}.json").unlink(missing_ok=True)
        (path / f"{name}.npy").unlink(missing_ok=True)


def _read_plan(plan_file: Path) -> list[list[list[str]]] | None:
    """A plan's chunks, or None (logged, file removed; under the lock) when it cannot be read."""
    try:
        chunks = json.loads(plan_file.read_text(encoding="utf-8"))["chunks"]
        if isinstance(chunks, list) and all(isinstance(b, list) for c in chunks for b in c):
            return chunks
        problem = "malformed 'chunks'"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        problem = f"unreadable ({exc})"
    log.warning("%s: %s; removing the plan, its audio is planned again", plan_file, problem)
    plan_file.unlink(missing_ok=True)
    return None


def _extract_missing(upstream: Upstream, manifest: TaskManifest, level: str, path: Path, keys: dict[str, str],
                     batch_samples: int, chunk_bytes: int, frame_tolerance: int, progress: bool,
                     compute: Compute, pool: ChunkPool | None = None, frame_dtype: str = "fp16") -> None:
    by_key: dict[str, Utterance] = {}
    for utt in manifest.utterances():
        by_key.setdefault(keys[utt.id], utt)
    _, done, bad = scan_chunks(path, set(by_key), level)
    _remove_bad_chunks(path, bad)
    missing = set(by_key) - set(done)
    if not missing:
        log.info("features cached (by another process): %s", path)
        return

    # Unfinished plans whose audio is all in this manifest are finished as planned (byte-identical
    # resume); the rest of the missing audio gets a plan of its own.
    plans_dir = path / "plans"
    work: list[tuple[str, int, list[list[str]]]] = []  # (plan hash, chunk index, batches of keys)
    covered = set(done)  # extracted, or in a chunk scheduled above
    for plan_file in sorted(plans_dir.glob("*.json")):
        chunks = _read_plan(plan_file)
        if chunks is None:
            continue
        planned = {k for c in chunks for b in c for k in b}
        if not planned & missing or not planned <= set(by_key):
            continue
        work += [(plan_file.stem, i, c) for i, c in enumerate(chunks)
                 if any(k not in covered for b in c for k in b)]
        covered |= planned
        missing -= planned
    new_plan = None
    if missing:
        digest = _plan_hash(list(missing))
        plan_file = plans_dir / f"{digest}.json"
        chunks = _read_plan(plan_file) if plan_file.is_file() else None
        if chunks is None:
            as_keys = [dataclasses.replace(by_key[k], id=k) for k in missing]
            chunks = plan_chunks(upstream, as_keys, level, batch_samples, chunk_bytes)
            new_plan = (plan_file, chunks)
        work += [(digest, i, c) for i, c in enumerate(chunks) if any(k not in done for b in c for k in b)]

    todo = [k for _, _, c in work for b in c for k in b]
    estimate = sum(feature_bytes(upstream, by_key[k].num_samples, level, frame_dtype) for k in todo)
    free = shutil.disk_usage(path).free
    cached = sum(k in done for k in by_key)
    log.info("%s/%s: extracting %d utterance(s) in %d chunk(s) (%d of its %d audio file(s) already cached), "
             "about %s of %s features into %s (%s free)", upstream.name, manifest.task, len(todo), len(work),
             cached, len(by_key), human_bytes(estimate), level, path, human_bytes(free))
    if estimate > 0.95 * free:
        raise CacheError(
            f"not enough disk for the {level} feature cache: need about {human_bytes(estimate)} in {path}, "
            f"only {human_bytes(free)} free. Free some space, point SUPERBENCH_HOME at a larger disk, "
            f"or run with --no-cache (the upstream then runs on every training step).")
    if new_plan is not None:
        atomic_write_text(new_plan[0], json.dumps({"level": level, "chunks": new_plan[1]}) + "\n")

    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"extract {upstream.name}/{manifest.task}", unit="utt",
               disable=None if progress else True, leave=False)  # None: off when not a TTY
    tasks = [ChunkTask(path, f"{digest[:12]}-{i:05d}", [[dataclasses.replace(by_key[k], id=k) for k in batch]
                                                      for batch in c], level, frame_tolerance, compute,
                       frame_dtype)
             for digest, i, c in work]
    if pool is None:
        upstream.eval()
        for task in tasks:
            bar.update(extract_chunk(upstream, task))
    else:  # e.g. Ray actors that each hold the upstream (superbench.executors.RayExtractorPool)
        pool.run(upstream, tasks, bar.update)
    bar.close()
    log.info("extracted %d utterance(s) of %s/%s in %.1f s (%s of chunks in %s)", len(todo), upstream.name,
             manifest.task, time.perf_counter() - start, human_bytes(disk_bytes(path)), path)


@dataclass
class ChunkTask:
    """One chunk of a cache plan: its batches of utterances (whose `id` is the audio key), written as one
    .npy + sidecar. Self-contained, so any process that sees the cache folder can do it; doing it twice
    writes the same bytes (atomic renames), so a retried or duplicated task is harmless."""

    path: Path
    name: str
    batches: list[list[Utterance]]
    level: str
    frame_tolerance: int = DEFAULT_FRAME_TOLERANCE
    compute: Compute | None = None
    frame_dtype: str = "fp16"


def extract_chunk(upstream: Upstream, task: ChunkTask) -> int:
    """Run `upstream` over the chunk's batches (audio of the next batch read while it runs), write the
    chunk; returns the utterances extracted."""
    compute = compute_for(upstream, task.compute)
    min_samples = upstream.receptive_field
    parts, frames, keys = [], [], []

    def read(batch: list[Utterance]) -> list[np.ndarray]:
        return [load_wav_for(u, min_samples) for u in batch]

    with ThreadPoolExecutor(max_workers=1) as reader, torch.inference_mode():
        pending = reader.submit(read, task.batches[0])
        for k, batch in enumerate(task.batches):
            wavs = pending.result()
            if k + 1 < len(task.batches):
                pending = reader.submit(read, task.batches[k + 1])
            parts_b, frames_b = _run_batch(upstream, batch, wavs, task.level, task.frame_tolerance, compute,
                                           task.frame_dtype)
            parts.extend(parts_b)
            frames.extend(frames_b)
            keys.extend(u.id for u in batch)
    write_chunk(Path(task.path), task.name, parts, keys, frames, task.level, task.frame_dtype)
    return len(keys)


def _run_batch(upstream: Upstream, batch: list[Utterance], wavs: list[np.ndarray], level: str,
               frame_tolerance: int, compute: Compute, frame_dtype: str = "fp16"
               ) -> tuple[list[np.ndarray], list[int]]:
    wav_batch, wav_lengths = pad_batch(wavs)
    with compute.autocast():
        hidden, frame_lengths = upstream(to_device(wav_batch, compute.device), wav_lengths)  # lengths: CPU
    if len(hidden) != upstream.num_layers:
        raise CacheError(f"{upstream.name} returned {len(hidden)} layers, declares num_layers={upstream.num_layers}")
    expected = upstream.num_frames(wav_lengths)
    frame_lengths = torch.as_tensor(frame_lengths, dtype=torch.long).cpu()
    off = (frame_lengths - expected).abs()
    if bool((off > frame_tolerance).any()):
        b = int(off.argmax())
        raise CacheError(
            f"{upstream.name}: {batch[b].audio} ({int(wav_lengths[b])} samples) gave {int(frame_lengths[b])} "
            f"frames, its declared rule (n - {upstream.receptive_field}) // {upstream.downsample_rate} + 1 "
            f"says {int(expected[b])}; fix downsample_rate/receptive_field or the upstream")
    stacked = torch.stack([h.float() for h in hidden])  # (L, B, T, D)
    if stacked.shape[-1] != upstream.hidden_size:
        raise CacheError(f"{upstream.name} returned hidden size {stacked.shape[-1]}, "
                         f"declares hidden_size={upstream.hidden_size}")
    if int(frame_lengths.max()) > stacked.shape[2]:
        raise CacheError(f"{upstream.name}: frame_lengths exceed the returned time axis ({stacked.shape[2]})")
    parts, frames = [], []
    for b, utt in enumerate(batch):
        n = int(frame_lengths[b])
        valid = stacked[:, b, :n]  # (L, n, D)
        finite = torch.isfinite(valid).flatten(1).all(dim=1)
        if n == 0 or not bool(finite.all()):
            layers = (~finite).nonzero().flatten().tolist()
            what = "no frames" if n == 0 else f"NaN/Inf features in layer(s) {layers}"
            raise CacheError(f"{upstream.name}: {what} for {utt.audio} (id {utt.id})")
        if level == "utterance":
            parts.append(valid.mean(dim=1).cpu().numpy().astype(np.float32))  # (L, D)
        elif frame_dtype == "int8":
            parts.append(quantize_int8(valid.transpose(0, 1)).cpu().numpy())  # (SCALE_ROWS + n, L, D)
        else:
            half = valid.transpose(0, 1).to(torch.float16)  # (n, L, D)
            if not bool(torch.isfinite(half).all()):
                raise CacheError(f"{upstream.name}: features of {utt.audio} overflow float16 (|x| > 65504); "
                                 f"run with --no-cache for this upstream")
            parts.append(half.cpu().numpy())
        frames.append(n)
    return parts, frames

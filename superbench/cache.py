"""Feature cache: run the frozen upstream once per utterance, train heads from disk.

s3prl re-runs the frozen upstream on every training step. Since the upstream is
frozen, its outputs are a pure function of (weights, audio), so we compute them
once and key them by the upstream fingerprint, the manifest fingerprint and a
cache format version:

    cache_dir()/<upstream>-<upstream fp>/<task>-<manifest fp>-<level>-v<FORMAT>/
        plan.json            which utterances go into which chunk (fixed on first run)
        chunk_00000.npy      the features of one chunk
        chunk_00000.json     ids, frame counts and offsets; written LAST = the chunk is complete
        index.json           written when every chunk is complete

Two levels:

* ``utterance`` (KS, SID, ER): per utterance, the mean over valid frames of
  every layer, an (L, D) float32 array. This is exact, not an approximation:
  the utterance head is linear up to its mean pool (weighted sum, then Linear),
  and linear maps commute with the mean (tested in tests/test_cache.py).
* ``frame`` (PR, ASR): every layer's frames in float16, one ``(T_total, L, D)``
  .npy per chunk, read with ``np.load(mmap_mode="r")`` so training touches only
  the pages of the utterances in the current batch; memory stays flat however
  large the corpus.

Extraction sorts utterances by length (longest first, so an out-of-memory
surfaces in the first batch), batches them under a samples budget, runs under
inference mode and is resumable: a chunk is written to a temp file and renamed,
its .json is written after its .npy, and a re-run skips chunks whose .json exists
and never reads a temp file.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from superbench.audio import check_waveform, load_audio
from superbench.io import atomic_open, atomic_write_text
from superbench.manifest import TaskManifest, Utterance
from superbench.paths import cache_dir
from superbench.upstream import Upstream, pad_batch

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
LEVELS = ("utterance", "frame")
#: Default extraction batch budget: padded samples per forward pass (64 s of 16 kHz audio).
DEFAULT_BATCH_SAMPLES = 16000 * 64
#: Default chunk size on disk; bounds the memory held before a chunk is written.
DEFAULT_CHUNK_BYTES = 64 << 20
#: Frames an upstream may differ from its declared frame rule before extraction stops.
DEFAULT_FRAME_TOLERANCE = 2


class CacheError(RuntimeError):
    """Extraction cannot (or must not) go on; the message says why and what to do."""


def cache_path(upstream: Upstream, manifest: TaskManifest, level: str, root: str | Path | None = None) -> Path:
    """Where the features of (upstream, manifest, level) live; any change of either gives a new folder."""
    if level not in LEVELS:
        raise ValueError(f"cache level must be one of {LEVELS}, got {level!r}")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in upstream.name)
    base = Path(root) if root is not None else cache_dir()
    return (base / f"{safe}-{upstream.fingerprint()}"
            / f"{manifest.task}-{manifest.fingerprint}-{level}-v{CACHE_FORMAT_VERSION}")


def _bytes_per_utterance(upstream: Upstream, utt: Utterance, level: str) -> int:
    if level == "utterance":
        return upstream.num_layers * upstream.hidden_size * 4
    frames = int(upstream.num_frames(torch.tensor([utt.num_samples]))[0])
    return frames * upstream.num_layers * upstream.hidden_size * 2


def plan_chunks(upstream: Upstream, utterances: Sequence[Utterance], level: str, batch_samples: int,
                chunk_bytes: int) -> list[list[list[str]]]:
    """Chunks of batches of ids: longest first, each batch under `batch_samples` padded samples
    (and under `chunk_bytes` of features, so a chunk never holds more than one oversized batch)."""
    ordered = sorted(utterances, key=lambda u: (-u.num_samples, u.id))
    batches: list[list[Utterance]] = []
    batch_bytes: list[int] = []
    for utt in ordered:
        nbytes = _bytes_per_utterance(upstream, utt, level)
        if (batches and batches[-1][0].num_samples * (len(batches[-1]) + 1) <= batch_samples
                and batch_bytes[-1] + nbytes <= chunk_bytes):
            batches[-1].append(utt)
            batch_bytes[-1] += nbytes
        else:
            batches.append([utt])
            batch_bytes.append(nbytes)
    chunks: list[list[list[str]]] = []
    size = chunk_bytes
    for batch, nbytes in zip(batches, batch_bytes):
        if size + nbytes > chunk_bytes and (not chunks or chunks[-1]):
            chunks.append([])
            size = 0
        chunks[-1].append([u.id for u in batch])
        size += nbytes
    return chunks


def _write_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, array)


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def _load_wav(utt: Utterance, min_samples: int) -> np.ndarray:
    wav = load_audio(utt.audio)
    return check_waveform(wav, name=utt.audio, min_samples=min_samples)


@dataclass
class ExtractionStats:
    chunks_total: int
    chunks_done_before: int
    seconds: float
    bytes: int


def extract_features(upstream: Upstream, manifest: TaskManifest, level: str, *,
                     root: str | Path | None = None, batch_samples: int = DEFAULT_BATCH_SAMPLES,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES, frame_tolerance: int = DEFAULT_FRAME_TOLERANCE,
                     progress: bool = True) -> "FeatureCache":
    """Extract (or finish extracting) every utterance of `manifest`, then open the cache."""
    path = cache_path(upstream, manifest, level, root)
    if (path / "index.json").is_file():
        log.info("features cached: %s", path)
        return FeatureCache.open(path)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob(".*.tmp"):  # left by a killed run; never read
        stale.unlink(missing_ok=True)
    utterances = {u.id: u for u in manifest.utterances()}
    plan_file = path / "plan.json"
    if plan_file.is_file():
        chunks = json.loads(plan_file.read_text(encoding="utf-8"))["chunks"]
    else:
        chunks = plan_chunks(upstream, list(utterances.values()), level, batch_samples, chunk_bytes)
        atomic_write_text(plan_file, json.dumps({"level": level, "chunks": chunks}) + "\n")
    todo = [i for i in range(len(chunks)) if not (path / f"chunk_{i:05d}.json").is_file()]
    todo_utts = [utterances[uid] for i in todo for b in chunks[i] for uid in b]
    estimate = sum(_bytes_per_utterance(upstream, u, level) for u in todo_utts)
    free = shutil.disk_usage(path).free
    log.info("%s/%s: extracting %d utterance(s) in %d chunk(s) (%d already done), about %s of %s features "
             "into %s (%s free)", upstream.name, manifest.task, len(todo_utts), len(todo),
             len(chunks) - len(todo), _human(estimate), level, path, _human(free))
    if estimate > 0.95 * free:
        raise CacheError(
            f"not enough disk for the {level} feature cache: need about {_human(estimate)} in {path}, "
            f"only {_human(free)} free. Free some space, point SUPERBENCH_HOME at a larger disk, "
            f"or run with --no-cache (the upstream then runs on every training step).")

    start = time.perf_counter()
    bar = tqdm(total=len(todo_utts), desc=f"extract {upstream.name}/{manifest.task}", unit="utt",
               disable=None if progress else True, leave=False)  # None: off when not a TTY
    upstream.eval()
    min_samples = upstream.receptive_field
    batches = [(i, [utterances[uid] for uid in batch]) for i in todo for batch in chunks[i]]
    def read(batch: list[Utterance]) -> list[np.ndarray]:
        return [_load_wav(u, min_samples) for u in batch]

    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        # Audio for the next batch is read while the upstream runs on the current one.
        pending = pool.submit(read, batches[0][1]) if batches else None
        current_chunk, parts, meta = None, [], []
        for k, (chunk_idx, batch) in enumerate(batches):
            wavs = pending.result()
            if k + 1 < len(batches):
                pending = pool.submit(read, batches[k + 1][1])
            if chunk_idx != current_chunk:
                current_chunk, parts, meta = chunk_idx, [], []
            parts_b, meta_b = _run_batch(upstream, batch, wavs, level, frame_tolerance)
            parts.extend(parts_b)
            meta.extend(meta_b)
            bar.update(len(batch))
            if k + 1 == len(batches) or batches[k + 1][0] != chunk_idx:
                _write_chunk(path, chunk_idx, parts, meta, level)
    bar.close()
    cache = _finalise(path, upstream, manifest, level, chunks)
    log.info("extracted %s/%s in %.1f s (%s on disk)", upstream.name, manifest.task,
             time.perf_counter() - start, _human(cache.nbytes))
    return cache


def _run_batch(upstream: Upstream, batch: list[Utterance], wavs: list[np.ndarray], level: str,
               frame_tolerance: int) -> tuple[list[np.ndarray], list[tuple[str, int]]]:
    wav_batch, wav_lengths = pad_batch(wavs)
    hidden, frame_lengths = upstream(wav_batch, wav_lengths)
    if len(hidden) != upstream.num_layers:
        raise CacheError(f"{upstream.name} returned {len(hidden)} layers, declares num_layers={upstream.num_layers}")
    expected = upstream.num_frames(wav_lengths)
    frame_lengths = torch.as_tensor(frame_lengths, dtype=torch.long)
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
    parts, meta = [], []
    for b, utt in enumerate(batch):
        n = int(frame_lengths[b])
        valid = stacked[:, b, :n]  # (L, n, D)
        finite = torch.isfinite(valid).flatten(1).all(dim=1)
        if n == 0 or not bool(finite.all()):
            layers = (~finite).nonzero().flatten().tolist()
            what = "no frames" if n == 0 else f"NaN/Inf features in layer(s) {layers}"
            raise CacheError(f"{upstream.name}: {what} for {utt.audio} (id {utt.id})")
        if level == "utterance":
            parts.append(valid.mean(dim=1).numpy().astype(np.float32))  # (L, D)
        else:
            half = valid.transpose(0, 1).to(torch.float16)  # (n, L, D)
            if not bool(torch.isfinite(half).all()):
                raise CacheError(f"{upstream.name}: features of {utt.audio} overflow float16 (|x| > 65504); "
                                 f"run with --no-cache for this upstream")
            parts.append(half.numpy())
        meta.append((utt.id, n))
    return parts, meta


def _write_chunk(path: Path, idx: int, parts: list[np.ndarray], meta: list[tuple[str, int]], level: str) -> None:
    data = np.stack(parts) if level == "utterance" else np.concatenate(parts, axis=0)
    _write_npy_atomic(path / f"chunk_{idx:05d}.npy", data)
    lengths = [n for _, n in meta]
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist() if lengths else []
    info = {"ids": [uid for uid, _ in meta], "frames": lengths, "offsets": offsets}
    atomic_write_text(path / f"chunk_{idx:05d}.json", json.dumps(info) + "\n")  # last: marks the chunk done


def _finalise(path: Path, upstream: Upstream, manifest: TaskManifest, level: str,
              chunks: list[list[list[str]]]) -> "FeatureCache":
    nbytes = sum((path / f"chunk_{i:05d}.npy").stat().st_size for i in range(len(chunks)))
    index = {"format_version": CACHE_FORMAT_VERSION, "level": level, "upstream": upstream.name,
             "upstream_fingerprint": upstream.fingerprint(), "task": manifest.task,
             "manifest_fingerprint": manifest.fingerprint, "num_layers": upstream.num_layers,
             "hidden_size": upstream.hidden_size, "num_chunks": len(chunks),
             "num_utterances": sum(len(b) for c in chunks for b in c), "bytes": nbytes}
    atomic_write_text(path / "index.json", json.dumps(index, indent=2) + "\n")
    return FeatureCache.open(path)


class FeatureCache:
    """Read side of a complete cache: `batch(ids)` gives what the heads take."""

    def __init__(self, path: Path, index: dict, chunks: list[np.ndarray], where: dict[str, tuple[int, int, int]]):
        self.path = path
        self.index = index
        self.level: str = index["level"]
        self._chunks = chunks
        self._where = where

    @classmethod
    def open(cls, path: str | Path) -> "FeatureCache":
        path = Path(path)
        index_file = path / "index.json"
        if not index_file.is_file():
            raise CacheError(f"{path}: incomplete feature cache (no index.json); re-run to finish extraction")
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if index.get("format_version") != CACHE_FORMAT_VERSION:
            raise CacheError(f"{path}: cache format {index.get('format_version')}, expected {CACHE_FORMAT_VERSION}")
        level = index["level"]
        chunks, where, start = [], {}, 0
        for i in range(index["num_chunks"]):
            info = json.loads((path / f"chunk_{i:05d}.json").read_text(encoding="utf-8"))
            chunks.append(np.load(path / f"chunk_{i:05d}.npy", mmap_mode="r" if level == "frame" else None))
            for row, (uid, n, off) in enumerate(zip(info["ids"], info["frames"], info["offsets"])):
                # utterance level: row in the concatenated (N, L, D) array; frame level: (chunk, offset)
                where[uid] = (0, start + row, n) if level == "utterance" else (i, off, n)
            start += len(info["ids"])
        if level == "utterance":  # small: one (N, L, D) array in memory
            chunks = [np.concatenate(chunks, axis=0)] if chunks else []
        return cls(path, index, chunks, where)

    @property
    def nbytes(self) -> int:
        return int(self.index["bytes"])

    def __contains__(self, uid: str) -> bool:
        return uid in self._where

    def __len__(self) -> int:
        return len(self._where)

    def get(self, uid: str) -> np.ndarray:
        """(L, D) float32 for utterance caches; (T, L, D) float16 (memory-mapped) for frame caches."""
        c, pos, n = self._where[uid]
        return self._chunks[c][pos] if self.level == "utterance" else self._chunks[c][pos:pos + n]

    def batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, B, D) pooled + frame counts, or (L, B, T, D) float32 frames (zero-padded) + lengths."""
        lengths = torch.tensor([self._where[u][2] for u in ids], dtype=torch.long)
        if self.level == "utterance":
            x = torch.from_numpy(np.stack([self.get(u) for u in ids], axis=1))
            return x, lengths
        items = [self.get(u) for u in ids]
        first = items[0]
        out = np.zeros((first.shape[1], len(items), int(lengths.max()), first.shape[2]), dtype=np.float32)
        for b, arr in enumerate(items):
            out[:, b, : arr.shape[0]] = np.asarray(arr).transpose(1, 0, 2)
        return torch.from_numpy(out), lengths


class OnlineFeatures:
    """`--no-cache`: run the upstream on every batch, as s3prl does (the benchmark baseline).

    Waveforms are kept in memory after the first read, so this measures the upstream, not the disk.
    Returns frames (L, B, T, D) for every task; the utterance heads pool them themselves.
    """

    level = "frame"

    def __init__(self, upstream: Upstream, manifest: TaskManifest) -> None:
        self.upstream = upstream.eval()
        self._utts = {u.id: u for u in manifest.utterances()}
        self._wavs: dict[str, np.ndarray] = {}

    def batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        wavs = []
        for uid in ids:
            if uid not in self._wavs:
                self._wavs[uid] = _load_wav(self._utts[uid], self.upstream.receptive_field)
            wavs.append(self._wavs[uid])
        batch, lengths = pad_batch(wavs)
        with torch.inference_mode():
            hidden, frame_lengths = self.upstream(batch, lengths)
            x = torch.stack([h.float() for h in hidden])
        return x.clone(), torch.as_tensor(frame_lengths, dtype=torch.long).clone()

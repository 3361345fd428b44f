"""Feature cache: run the frozen upstream once per audio file, train heads from disk.

s3prl re-runs the frozen upstream on every training step. Since the upstream is
frozen, its outputs are a pure function of (weights, audio), so we compute them
once and key each utterance's features by its AUDIO, not by the task or the labels:

    cache_dir()/<upstream>-<upstream fp>/<level>-v<FORMAT>/
        cache.json                  format version, level, upstream, layers, hidden size
        extract.lock                held by the one process that is extracting
        plans/<request hash>.json   chunks of batches of audio keys for one set of missing audio
        <plan12>-00000.npy          the features of one chunk
        <plan12>-00000.json         audio keys, frame counts, offsets, the .npy's size and blake2b;
                                    written LAST = the chunk is complete

An audio key (`audio_key`) is a blake2b digest of the file's size and every byte of it,
read in 1 MiB blocks (about 5 % of FBANK extraction's time on the demo corpus, far less
of a neural upstream's; `make bench` measures it). The features are a function of the
bytes alone, so the key names no path: PR and ASR over the same LibriSpeech files share
one frame cache, fixing a transcript re-extracts nothing, a subset of earlier audio
extracts nothing, a superset extracts only what is missing, a moved corpus extracts
nothing, and any change to a file's bytes (an in-place edit included) gives a new key
and the file is extracted again. `audio_fingerprint` digests a manifest's (utterance,
audio key) pairs: what the runner records to tell a corpus whose audio changed.

Two levels:

* ``utterance`` (a task whose ``level`` is "utterance", such as KS or SID): per utterance, the
  mean over valid frames of every layer, an (L, D) float32 array. This is exact, not an approximation:
  the utterance head is linear up to its mean pool (weighted sum, then Linear),
  and linear maps commute with the mean (tested in tests/test_cache.py).
* ``frame`` (a task whose ``level`` is "frame", such as PR or ASR): every layer's frames in
  float16, one ``(T_total, L, D)`` .npy per chunk.

Both are read with ``np.load(mmap_mode="r")``, one map per chunk, so training touches
only the pages of the utterances in the current batch; memory stays flat however
large the corpus.

Extraction plans the missing audio (longest first, so an out-of-memory surfaces
in the first batch; batches under a samples budget), stores the plan under the hash
of the requested keys, runs under inference mode and is resumable: a chunk is
written to a temp file and renamed, its .json is written after its .npy, and a
re-run finds the same plan, does only the chunks without a .json and never reads a
temp file, so its features are byte-identical to an uninterrupted run's.

Every chunk is verified before it is used: its .npy must have the size and blake2b that its
.json recorded when it was written (a streaming read, once per file and process: the verified
(path, size, mtime, inode) are remembered). A chunk whose .npy is damaged or truncated, or whose
.json is unreadable, is logged with its path and treated as missing: under the extraction lock the
pair is removed and the chunk is extracted again; damaged features are never read.

The folder name is built from the upstream's name and fingerprint, both made safe first: anything
that is not a plain token is hashed, and the final path must lie inside the cache root.

Writers hold ``extract.lock`` (a `filelock.FileLock`) for the whole extraction, and
remove stale temp files only while holding it, so a second process waits instead of
deleting a running writer's temp files, then finds the work done. Reading a complete
cache takes no lock: a chunk is visible only once its .json exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
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
from superbench.io import atomic_open, atomic_write_text, human_bytes
from superbench.manifest import TaskManifest, Utterance
from superbench.options import CACHE_DTYPES
from superbench.paths import cache_dir
from superbench.upstream import Upstream, pad_batch

log = logging.getLogger(__name__)

#: v3: each chunk's .json records its .npy's size and blake2b (v2 chunks carry no checksum).
#: v4: audio keys hash every byte of a file (v3 keys: its path, size, first and last 64 KiB).
CACHE_FORMAT_VERSION = 4
#: Why each format replaced the one before, for the log line of a cache that is extracted again.
FORMAT_CHANGES = {3: "chunks now carry checksums", 4: "audio keys now hash every byte of each file"}
LEVELS = ("utterance", "frame")
#: Default extraction batch budget: padded samples per forward pass (64 s of 16 kHz audio).
DEFAULT_BATCH_SAMPLES = 16000 * 64
#: Default chunk size on disk; bounds the memory held before a chunk is written.
DEFAULT_CHUNK_BYTES = 64 << 20
#: At most this many utterances per chunk: a chunk is the unit of work of parallel extraction (Ray actors),
#: so small pooled features must not all land in one chunk.
DEFAULT_CHUNK_UTTERANCES = 64
#: Frames an upstream may differ from its declared frame rule before extraction stops.
DEFAULT_FRAME_TOLERANCE = 2
#: Bytes read per step when hashing an audio file for its key.
AUDIO_KEY_BLOCK = 1 << 20
#: Threads that compute audio keys: hashlib releases the GIL on large blocks, and reads overlap.
AUDIO_KEY_WORKERS = 8

#: Samples a decoded waveform may differ from its row's num_samples (resampling rounding) before
#: extraction stops: a lying row must not size a batch.
NUM_SAMPLES_TOLERANCE = 4
#: Bytes read per step when checksumming a chunk.
_HASH_BLOCK = 1 << 20

_CHUNK_GLOB = "*-[0-9][0-9][0-9][0-9][0-9].json"
#: A path component built from data (an upstream name, a fingerprint) is used as-is only when it is this.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_SAFE_FINGERPRINT = re.compile(r"[A-Za-z0-9_-]{1,128}")

#: (path, size, mtime_ns, inode) of every chunk .npy this process has checked (or written) whole.
_VERIFIED: set[tuple[str, int, int, int]] = set()


class ChunkPool(Protocol):
    """Runs chunk tasks somewhere else; `run` calls `progress(n)` as chunks of n utterances finish."""

    def run(self, upstream: Upstream, tasks: Sequence["ChunkTask"], progress: Callable[[int], Any]) -> None: ...


#: Frame cache storage: float16 (default), or int8 with a float32 scale per utterance, layer and channel.
FRAME_DTYPES = CACHE_DTYPES
#: int8 frame caches put each utterance's (L, D) float32 scales in the 4 int8 rows before its frames.
SCALE_ROWS = 4


def quantize_int8(frames: torch.Tensor) -> torch.Tensor:
    """(n, L, D) float frames -> (SCALE_ROWS + n, L, D) int8: the float32 scales (max |x| / 127 per layer
    and channel over the utterance's frames) as raw bytes, then round(x / scale). Symmetric, so the error
    of a value is at most half its channel's scale."""
    frames = frames.float()
    scale = frames.abs().amax(dim=0) / 127.0  # (L, D)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a silent channel: any scale is exact
    q = torch.round(frames / scale).clamp_(-127, 127).to(torch.int8)
    raw = scale.contiguous().view(torch.int8).reshape(scale.shape[0], scale.shape[1], 4)  # 4 bytes per value
    return torch.cat([raw.permute(2, 0, 1), q], dim=0)


def dequantize_int8(block: np.ndarray) -> np.ndarray:
    """The (n, L, D) float32 frames of one utterance's (SCALE_ROWS + n, L, D) int8 block."""
    head = np.ascontiguousarray(np.asarray(block[:SCALE_ROWS]).transpose(1, 2, 0))  # (L, D, 4) bytes
    scale = head.view(np.float32)[..., 0]  # (L, D)
    return np.asarray(block[SCALE_ROWS:], dtype=np.float32) * scale


class CacheError(RuntimeError):
    """Extraction cannot (or must not) go on; the message says why and what to do."""


def audio_key(path: str | Path, block: int = AUDIO_KEY_BLOCK) -> str:
    """Content key of one audio file: blake2b of its size and all its bytes, streamed `block` at a time.

    Every byte, so an edit anywhere in the file (even one that keeps its size, head and tail) is a new
    key; no path, so identical bytes share their features wherever the file lies.
    """
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            h.update(f"{os.fstat(fh.fileno()).st_size}\0".encode())
            for chunk in iter(lambda: fh.read(block), b""):
                h.update(chunk)
    except OSError as exc:
        raise CacheError(f"{path}: cannot read audio to key the feature cache ({exc})") from exc
    return h.hexdigest()


def audio_fingerprint(keys: Mapping[str, str]) -> str:
    """Digest of (utterance id, audio key) pairs (`audio_keys`): changes when any utterance's audio bytes
    change, or two utterances swap their audio; not when the corpus moves."""
    h = hashlib.sha256()
    for uid in sorted(keys):
        h.update(f"{uid}\0{keys[uid]}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def audio_keys(manifest: TaskManifest, workers: int = AUDIO_KEY_WORKERS) -> dict[str, str]:
    """Utterance id -> audio key for every utterance of `manifest` (each file read once, `workers` at a time)."""
    utts = manifest.utterances()
    paths = sorted({u.audio for u in utts})
    start = time.perf_counter()
    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(paths))) as pool:
            keys = dict(zip(paths, pool.map(audio_key, paths)))
    else:
        keys = {p: audio_key(p) for p in paths}
    log.debug("keyed %d audio file(s) in %.3f s", len(paths), time.perf_counter() - start)
    return {u.id: keys[u.audio] for u in utts}


def _compute_for(upstream: Upstream, compute: Compute | None) -> Compute:
    """`compute`, or by default fp32 where the upstream's weights are (the CPU for one without any)."""
    if compute is not None:
        return compute
    for tensor in (*upstream.parameters(), *upstream.buffers()):
        return Compute(device=tensor.device)
    return Compute()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _fingerprint_dir(upstream: Upstream, fingerprint: str | None) -> str:
    """`<name>-<fingerprint>`, where neither part can be `..`, empty or carry a separator: those are hashed."""
    name = str(upstream.name)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if not _SAFE_TOKEN.fullmatch(safe) or ".." in safe:
        safe = f"upstream_{_short_hash(name)}"
    fp = str(fingerprint if fingerprint is not None else upstream.fingerprint())
    if not _SAFE_FINGERPRINT.fullmatch(fp):
        fp = f"h{_short_hash(fp)}"
    return f"{safe}-{fp}"


def cache_path(upstream: Upstream, level: str, root: str | Path | None = None,
               fingerprint: str | None = None) -> Path:
    """Where (upstream, level) features live, whatever the task; pass `fingerprint` to skip hashing the weights."""
    if level not in LEVELS:
        raise ValueError(f"cache level must be one of {LEVELS}, got {level!r}")
    base = Path(root) if root is not None else cache_dir()
    path = base / _fingerprint_dir(upstream, fingerprint) / f"{level}-v{CACHE_FORMAT_VERSION}"
    if not os.path.abspath(path).startswith(os.path.join(os.path.abspath(base), "")):
        raise CacheError(f"cache folder {path} would lie outside the cache root {base}")  # defence in depth
    return path


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


class _HashingWriter:
    """A write-only file that hashes what passes through, so a chunk's checksum costs no second read."""

    def __init__(self, fh) -> None:
        self._fh, self.hash, self.nbytes = fh, hashlib.blake2b(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.nbytes += len(view)
        return self._fh.write(view)


def _write_npy_atomic(path: Path, array: np.ndarray) -> tuple[int, str]:
    """Write `array` as .npy; its (size, blake2b), which the chunk's .json records."""
    with atomic_open(path, "wb") as fh:
        writer = _HashingWriter(fh)
        np.save(writer, array)
    return writer.nbytes, writer.hash.hexdigest()


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns, st.st_ino


def _verify_npy(npy: Path, info: Mapping) -> str | None:
    """None when `npy` is the file its .json describes; else why not. Streaming, once per file and process."""
    try:
        key = _stat_key(npy)
        if key in _VERIFIED:
            return None
        if key[1] != info["npy_bytes"]:
            return f"{key[1]} bytes, its .json says {info['npy_bytes']} (truncated or replaced)"
        h = hashlib.blake2b()
        with open(npy, "rb") as fh:
            for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
                h.update(block)
    except OSError as exc:
        return f"cannot read it ({exc})"
    if h.hexdigest() != info["npy_blake2b"]:
        return "checksum mismatch (its bytes changed after it was written)"
    _VERIFIED.add(key)
    return None


def _load_wav(utt: Utterance, min_samples: int) -> np.ndarray:
    """The waveform, refused when its length is not the row's num_samples: a row that lies about it
    would otherwise size (and pad) a whole batch."""
    wav = load_audio(utt.audio)
    expected = round(utt.num_samples * TARGET_SAMPLE_RATE / utt.sample_rate)
    if abs(len(wav) - expected) > NUM_SAMPLES_TOLERANCE:
        raise CacheError(f"{utt.audio} (id {utt.id}): the manifest row says num_samples={utt.num_samples} "
                         f"at {utt.sample_rate} Hz, the decoded audio has {len(wav)} samples at "
                         f"{TARGET_SAMPLE_RATE} Hz (expected {expected}); re-prepare the task or fix the row")
    return check_waveform(wav, name=utt.audio, min_samples=min_samples)


# --------------------------------------------------------------------------- on-disk index

def _check_sidecar(info: object, level: str | None) -> str | None:
    """None when a chunk's .json has every field, consistently; else what is wrong."""
    if not isinstance(info, dict):
        return "not a JSON object"
    keys, frames = info.get("keys"), info.get("frames")
    if not isinstance(keys, list) or not isinstance(frames, list) or len(keys) != len(frames):
        return "'keys' and 'frames' missing or of different lengths"
    if not all(isinstance(k, str) for k in keys) or not all(isinstance(n, int) for n in frames):
        return "'keys' must be strings and 'frames' integers"
    offsets = info.get("offsets")
    if (level == "frame" or offsets is not None) and (not isinstance(offsets, list) or len(offsets) != len(keys)):
        return "'offsets' missing or of the wrong length"
    if not isinstance(info.get("npy_bytes"), int) or not isinstance(info.get("npy_blake2b"), str):
        return "no 'npy_bytes'/'npy_blake2b' checksum"
    return None


def _read_chunks(path: Path, level: str | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """Chunk name -> its .json for every complete chunk (a .json exists only after its .npy), and
    chunk name -> why, for each .json that cannot be read."""
    chunks, bad = {}, {}
    for meta in sorted(path.glob(_CHUNK_GLOB)):
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            bad[meta.stem] = f"{meta}: unreadable ({exc})"
            continue
        problem = _check_sidecar(info, level)
        if problem is not None:
            bad[meta.stem] = f"{meta}: {problem}"
            continue
        chunks[meta.stem] = info
    return chunks, bad


def _scan(path: Path, wanted: set[str] | None, level: str | None = None
          ) -> tuple[dict[str, dict], dict[str, tuple[str, int, int]], dict[str, str]]:
    """(good chunks, audio key -> where, chunk name -> why it is bad): every chunk that holds a
    `wanted` key (all when None) is verified against its checksum first, so nothing damaged is indexed."""
    chunks, bad = _read_chunks(path, level)
    while True:
        index = _key_index(chunks)
        names = {index[k][0] for k in (index if wanted is None else wanted & index.keys())}
        failed = {}
        for name in sorted(names):
            problem = _verify_npy(path / f"{name}.npy", chunks[name])
            if problem is not None:
                failed[name] = f"{path / f'{name}.npy'}: {problem}"
        if not failed:
            return chunks, index, bad
        bad.update(failed)  # a key held by a damaged chunk may also be in a later one: look again
        chunks = {n: c for n, c in chunks.items() if n not in failed}


def _key_index(chunks: Mapping[str, dict]) -> dict[str, tuple[str, int, int]]:
    """Audio key -> (chunk name, row or frame offset, frames); the first chunk (by name) wins."""
    where: dict[str, tuple[str, int, int]] = {}
    for name, info in chunks.items():
        starts = info.get("offsets") or range(len(info["keys"]))  # utterance level: the row
        for key, n, pos in zip(info["keys"], info["frames"], starts):
            where.setdefault(key, (name, int(pos), int(n)))
    return where


def _plan_hash(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def _read_meta(meta_file: Path) -> dict:
    """cache.json, or a CacheError naming it."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"{meta_file}: unreadable ({exc}); remove {meta_file.parent} to extract again") from exc
    if not isinstance(meta, dict):
        raise CacheError(f"{meta_file}: not a JSON object; remove {meta_file.parent} to extract again")
    return meta


def _write_meta(path: Path, upstream: Upstream, level: str, fingerprint: str, frame_dtype: str = "fp16") -> dict:
    meta_file = path / "cache.json"
    meta = {"format_version": CACHE_FORMAT_VERSION, "level": level, "upstream": upstream.name,
            "upstream_fingerprint": fingerprint, "num_layers": upstream.num_layers,
            "hidden_size": upstream.hidden_size}
    if level == "frame" and frame_dtype != "fp16":  # absent: float16, as every cache before int8 existed
        meta["frame_dtype"] = frame_dtype
    if meta_file.is_file():
        found = _read_meta(meta_file)
        if any(found.get(k) != v for k, v in meta.items() if k != "upstream"):
            raise CacheError(f"{path}: cache.json says {found}, this run expects {meta}; "
                             f"the folder was written by something else, remove it")
        return found
    atomic_write_text(meta_file, json.dumps(meta, indent=2) + "\n")
    return meta


# --------------------------------------------------------------------------- extraction

def cached_keys(path: str | Path) -> set[str]:
    """Audio keys held by the complete chunks of a cache folder, read from their sidecars only (no
    checksum pass): what a planner may count as already extracted."""
    return set(_key_index(_read_chunks(Path(path))[0]))


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
    compute = _compute_for(upstream, compute)
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
        _write_meta(path, upstream, level, fingerprint, frame_dtype)
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
    _, done, bad = _scan(path, set(by_key), level)
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
             manifest.task, time.perf_counter() - start, human_bytes(_disk_bytes(path)), path)


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
    compute = _compute_for(upstream, task.compute)
    min_samples = upstream.receptive_field
    parts, frames, keys = [], [], []

    def read(batch: list[Utterance]) -> list[np.ndarray]:
        return [_load_wav(u, min_samples) for u in batch]

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
    _write_chunk(Path(task.path), task.name, parts, keys, frames, task.level, task.frame_dtype)
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


def _write_chunk(path: Path, name: str, parts: list[np.ndarray], keys: list[str], frames: list[int],
                 level: str, frame_dtype: str = "fp16") -> None:
    data = np.stack(parts) if level == "utterance" else np.concatenate(parts, axis=0)
    npy = path / f"{name}.npy"
    nbytes, digest = _write_npy_atomic(npy, data)
    info: dict = {"keys": keys, "frames": frames}
    if level == "frame":  # where each utterance's frames start (int8: after its SCALE_ROWS rows of scales)
        rows = [len(part) for part in parts]
        head = SCALE_ROWS if frame_dtype == "int8" else 0
        info["offsets"] = (np.concatenate([[0], np.cumsum(rows)[:-1]]) + head).astype(int).tolist()
    info.update(npy_bytes=nbytes, npy_blake2b=digest)
    atomic_write_text(path / f"{name}.json", json.dumps(info) + "\n")  # last: marks the chunk done
    key = _stat_key(npy)
    if key[1] == nbytes:
        _VERIFIED.add(key)  # hashed on its way out: no need to read it back


def _disk_bytes(path: Path) -> int:
    total = 0
    for meta in path.glob(_CHUNK_GLOB):
        try:
            total += meta.with_suffix(".npy").stat().st_size
        except OSError:  # removed by a writer repairing it
            pass
    return total


# --------------------------------------------------------------------------- read side

class FeatureCache:
    """Read side of a cache for one manifest: `batch(ids)` takes its utterance ids, gives what the heads take."""

    def __init__(self, path: Path, meta: dict, where: dict[str, tuple[str, int, int]],
                 chunks: Mapping[str, dict] | None = None) -> None:
        self.path = path
        self.level: str = meta["level"]
        self._where = where  # utterance id -> (chunk name, row or frame offset, frames)
        self._chunks = dict(chunks or {})  # chunk name -> its .json (size and checksum of its .npy)
        self._maps: dict[str, np.ndarray] = {}
        self.keys: dict[str, str] = {}  # utterance id -> audio key, set by `open`
        names = {c for c, _, _ in where.values()}
        self.frame_dtype: str = meta.get("frame_dtype", "fp16")
        values = meta["num_layers"] * meta["hidden_size"]
        distinct = {(c, pos): n for c, pos, n in where.values()}
        if self.level == "utterance":
            nbytes = values * 4 * len(distinct)
        elif self.frame_dtype == "int8":
            nbytes = sum(values * (n + SCALE_ROWS) for n in distinct.values())
        else:
            nbytes = sum(values * 2 * n for n in distinct.values())
        self.index = {**meta, "num_chunks": len(names), "num_utterances": len(where), "bytes": nbytes}

    @classmethod
    def open(cls, path: str | Path, keys: Mapping[str, str]) -> "FeatureCache":
        """Index every complete chunk of `path` and map the ids of `keys` (id -> audio key) to their features."""
        cache, absent, bad = cls._open(Path(path), keys)
        for why in bad.values():
            log.warning("damaged feature-cache chunk, not used (re-run extraction to redo it): %s", why)
        if cache is None:
            raise CacheError(f"{path}: {len(absent)} utterance(s) not extracted yet (e.g. {absent[0]!r}); "
                             f"re-run to finish extraction")
        return cache

    @classmethod
    def _open(cls, path: Path, keys: Mapping[str, str]
              ) -> tuple["FeatureCache | None", list[str], dict[str, str]]:
        """The cache, or None and the ids whose audio is not extracted (or only in a damaged chunk);
        and chunk name -> why, for the damaged chunks met."""
        meta_file = path / "cache.json"
        if not meta_file.is_file():
            raise CacheError(f"{path}: no feature cache here (no cache.json); run extraction first")
        meta = _read_meta(meta_file)
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            raise CacheError(f"{path}: cache format {meta.get('format_version')}, expected {CACHE_FORMAT_VERSION}")
        chunks, by_key, bad = _scan(path, set(keys.values()), meta.get("level"))
        absent = [uid for uid, key in keys.items() if key not in by_key]
        if absent:
            return None, absent, bad
        cache = cls(path, meta, {uid: by_key[key] for uid, key in keys.items()}, chunks)
        cache.keys = dict(keys)  # what reopens it elsewhere (a Ray worker on the shared cache folder)
        return cache, [], bad

    @property
    def nbytes(self) -> int:
        """Bytes of this manifest's features (each audio file once), not of the whole shared folder."""
        return int(self.index["bytes"])

    @property
    def disk_bytes(self) -> int:
        """Bytes of every complete chunk in the folder, all manifests that share it included."""
        return _disk_bytes(self.path)

    def __contains__(self, uid: str) -> bool:
        return uid in self._where

    def __len__(self) -> int:
        return len(self._where)

    def _chunk(self, name: str) -> np.ndarray:
        array = self._maps.get(name)
        if array is None:  # mapped on first use: a process touches only the chunks it reads
            npy = self.path / f"{name}.npy"
            info = self._chunks.get(name)
            problem = _verify_npy(npy, info) if info is not None else None  # free unless it changed since open
            if problem is not None:
                raise CacheError(f"{npy}: {problem}; re-run extraction to redo this chunk")
            array = self._maps[name] = np.load(npy, mmap_mode="r")
        return array

    def get(self, uid: str) -> np.ndarray:
        """(L, D) float32 for utterance caches; (T, L, D) float16 for frame caches; both memory-mapped."""
        c, pos, n = self._where[uid]
        chunk = self._chunk(c)
        if self.level == "utterance":
            return chunk[pos]
        if self.frame_dtype == "int8":
            return dequantize_int8(chunk[pos - SCALE_ROWS:pos + n])
        return chunk[pos:pos + n]

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

    def __init__(self, upstream: Upstream, manifest: TaskManifest, compute: Compute | None = None) -> None:
        self.upstream = upstream.eval()
        self.compute = _compute_for(upstream, compute)
        self._utts = {u.id: u for u in manifest.utterances()}
        self._wavs: dict[str, np.ndarray] = {}

    def batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        wavs = []
        for uid in ids:
            if uid not in self._wavs:
                self._wavs[uid] = _load_wav(self._utts[uid], self.upstream.receptive_field)
            wavs.append(self._wavs[uid])
        batch, lengths = pad_batch(wavs)
        device = self.compute.device
        with torch.inference_mode(), self.compute.autocast():
            hidden, frame_lengths = self.upstream(to_device(batch, device), lengths)
            x = torch.stack([h.float() for h in hidden])
        return x.clone(), torch.as_tensor(frame_lengths, dtype=torch.long, device=device).clone()

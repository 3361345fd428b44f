"""The feature store on disk: one folder per (upstream fingerprint, level), chunks of features with their
index, each .npy verified against the size and blake2b its .json recorded, read through memory maps
(`FeatureCache`). The layout and its guarantees are described in `superbench.features`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from superbench.io import atomic_open, atomic_write_text, file_blake2b
from superbench.options import CACHE_DTYPES
from superbench.paths import cache_dir
from superbench.upstream import Upstream

log = logging.getLogger(__name__)


#: v3: each chunk's .json records its .npy's size and blake2b (v2 chunks carry no checksum).
#: v4: audio keys hash every byte of a file (v3 keys: its path, size, first and last 64 KiB).
CACHE_FORMAT_VERSION = 4


#: Why each format replaced the one before, for the log line of a cache that is extracted again.
FORMAT_CHANGES = {3: "chunks now carry checksums", 4: "audio keys now hash every byte of each file"}


LEVELS = ("utterance", "frame")


#: Bytes read per step when checksumming a chunk.
_HASH_BLOCK = 1 << 20


_CHUNK_GLOB = "*-[0-9][0-9][0-9][0-9][0-9].json"


#: A path component built from data (an upstream name, a fingerprint) is used as-is only when it is this.
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


_SAFE_FINGERPRINT = re.compile(r"[A-Za-z0-9_-]{1,128}")


#: (path, size, mtime_ns, inode) of every chunk .npy this process has checked (or written) whole.
_VERIFIED: set[tuple[str, int, int, int]] = set()


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
        digest = file_blake2b(npy, block=_HASH_BLOCK)
    except OSError as exc:
        return f"cannot read it ({exc})"
    if digest != info["npy_blake2b"]:
        return "checksum mismatch (its bytes changed after it was written)"
    _VERIFIED.add(key)
    return None


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


def scan_chunks(path: Path, wanted: set[str] | None, level: str | None = None
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


def _read_meta(meta_file: Path) -> dict:
    """cache.json, or a CacheError naming it."""
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"{meta_file}: unreadable ({exc}); remove {meta_file.parent} to extract again") from exc
    if not isinstance(meta, dict):
        raise CacheError(f"{meta_file}: not a JSON object; remove {meta_file.parent} to extract again")
    return meta


def write_meta(path: Path, upstream: Upstream, level: str, fingerprint: str, frame_dtype: str = "fp16") -> dict:
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


def cached_keys(path: str | Path) -> set[str]:
    """Audio keys held by the complete chunks of a cache folder, read from their sidecars only (no
    checksum pass): what a planner may count as already extracted."""
    return set(_key_index(_read_chunks(Path(path))[0]))


def write_chunk(path: Path, name: str, parts: list[np.ndarray], keys: list[str], frames: list[int],
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


def disk_bytes(path: Path) -> int:
    total = 0
    for meta in path.glob(_CHUNK_GLOB):
        try:
            total += meta.with_suffix(".npy").stat().st_size
        except OSError:  # removed by a writer repairing it
            pass
    return total


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
        chunks, by_key, bad = scan_chunks(path, set(keys.values()), meta.get("level"))
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
        return disk_bytes(self.path)

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

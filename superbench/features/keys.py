"""Audio keys: what the cache is keyed by. A key digests a file's size and every byte of it, so the
features are found again for the same audio under any path, and any change to the bytes is a miss."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Mapping

from superbench.features.store import CacheError
from superbench.io import file_blake2b, map_in_threads
from superbench.manifest import TaskManifest

log = logging.getLogger(__name__)


#: Bytes read per step when hashing an audio file for its key.
AUDIO_KEY_BLOCK = 1 << 20


#: Threads that compute audio keys: hashlib releases the GIL on large blocks, and reads overlap.
AUDIO_KEY_WORKERS = 8


def audio_key(path: str | Path, block: int = AUDIO_KEY_BLOCK) -> str:
    """Content key of one audio file: blake2b of its size and all its bytes, streamed `block` at a time.

    Every byte, so an edit anywhere in the file (even one that keeps its size, head and tail) is a new
    key; no path, so identical bytes share their features wherever the file lies.
    """
    try:
        return file_blake2b(path, digest_size=16, with_size=True, block=block)
    except OSError as exc:
        raise CacheError(f"{path}: cannot read audio to key the feature cache ({exc})") from exc


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
    keys = dict(zip(paths, map_in_threads(audio_key, paths, workers)))
    log.debug("keyed %d audio file(s) in %.3f s", len(paths), time.perf_counter() - start)
    return {u.id: keys[u.audio] for u in utts}

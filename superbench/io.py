"""Atomic file writes: readers (and a re-run after kill -9) see the old file or the whole new one.

Every file superbench writes that another step reads (manifests, cache chunks, records,
checkpoints, baselines, audio) goes through here, so no crash can leave half a file behind.
A new file gets the mode any other tool would give it (0o666 minus the umask), not
`mkstemp`'s private 0o600.

Files a later run reuses without redoing them (a trial's training state, a finished trial's numbers,
head and predictions) are *sealed*: `write_sealed` puts a line with the blake2b and size of the bytes
that follow in front of them, and `read_sealed` refuses any file whose bytes no longer match (a flipped
bit, a torn copy), so damage is redone instead of trusted. `run_lock` lets one process at a time work
on one run.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence, TypeVar

log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc), else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: What torch.save raises (a RuntimeError, not an OSError) when the disk fills under its zip writer.
_TORCH_DISK_FULL = ("enforce fail at inline_container", "No space left")


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC, however it surfaced (an OSError, or torch.save's RuntimeError)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_DISK_FULL)


def disk_full_error(path: str | Path, exc: BaseException | None = None) -> OSError:
    """The one message a full disk gets, wherever it happens: the path, and the space left there."""
    try:
        free = f"{human_bytes(shutil.disk_usage(Path(path).parent).free)} free"
    except OSError:
        free = "free space unknown"
    cause = f"; {exc}" if exc is not None else ""
    return OSError(errno.ENOSPC, f"no space left on {path} ({free}); free some space or point "
                                 f"SUPERBENCH_HOME at a larger disk{cause}")


def free_bytes(path: str | Path) -> int:
    """Free space of the disk that will hold `path` (its nearest existing parent, if it is not there yet),
    so a run can be refused before it writes anything."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A temp file beside `path` (unique per writer), fsynced and renamed over it on success,
    removed on failure. A full disk is reported as "no space left on <path>", not as a bare errno
    or a torch zip-writer assertion."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from exc
        raise
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0o600; the rename keeps it
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)  # our own temp file, never another writer's
        if is_disk_full(exc) and not str(getattr(exc, "strerror", "")).startswith("no space left on"):
            raise disk_full_error(path, exc) from exc
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file so readers see either the old or the whole new content, never half."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


#: First bytes of a sealed file: a digest line over the payload that follows it (the training checkpoints'
#: format since they carried a checksum, so those stay readable).
SEAL_MAGIC = b"superbench-checkpoint v1 blake2b="


def seal_digest(payload: bytes | memoryview) -> str:
    """The digest a sealed file carries of its payload (also a short identity of any bytes)."""
    return hashlib.blake2b(payload, digest_size=32).hexdigest()


T = TypeVar("T")
R = TypeVar("R")


def map_in_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """`[fn(x) for x in items]`, in order, with the items cut into `workers` contiguous slices, one thread
    each: for work that waits on the disk (opening, reading, hashing files releases the GIL). One task per
    slice, not per item: 100k futures would cost seconds and hundreds of MB by themselves."""
    if workers <= 1 or len(items) < 2 * workers:
        return [fn(x) for x in items]
    step = -(-len(items) // workers)
    slices = [items[k:k + step] for k in range(0, len(items), step)]
    with ThreadPoolExecutor(max_workers=len(slices)) as pool:
        return [r for part in pool.map(lambda part: [fn(x) for x in part], slices) for r in part]


def file_blake2b(path: str | Path, *, digest_size: int = 64, with_size: bool = False, block: int = 1 << 20) -> str:
    """blake2b of a file's bytes, read `block` at a time (memory stays flat for any size); `with_size`: its
    byte count goes in first, as the feature cache's audio keys have it. OSError when it cannot be read."""
    h = hashlib.blake2b(digest_size=digest_size)
    with open(path, "rb") as fh:
        if with_size:
            h.update(f"{os.fstat(fh.fileno()).st_size}\0".encode())
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def write_sealed(path: str | Path, payload: bytes | memoryview) -> None:
    """`payload` behind a line with its blake2b and size, in one atomic file, so a reader can tell the bytes
    it wrote from a flipped bit or a torn copy (sealed files are small: held in memory)."""
    header = SEAL_MAGIC + f"{seal_digest(payload)} bytes={len(payload)}\n".encode()
    with atomic_open(path, "wb") as fh:
        fh.write(header)
        fh.write(payload)


def read_sealed(path: str | Path) -> bytes:
    """The payload of a sealed file; ValueError saying why it cannot be trusted, OSError if unreadable."""
    with open(path, "rb") as fh:
        header = fh.readline(200)
        payload = fh.read()
    if not header.startswith(SEAL_MAGIC) or not header.endswith(b"\n"):
        raise ValueError("no checksum header (not written by this version, or damaged at the start)")
    try:
        digest, size = header[len(SEAL_MAGIC):].decode("ascii").split()
        nbytes = int(size.removeprefix("bytes="))
    except ValueError as exc:
        raise ValueError(f"garbled checksum header {header[:120]!r}") from exc
    if len(payload) != nbytes:
        raise ValueError(f"{len(payload)} bytes after the header, the header says {nbytes} (truncated?)")
    if seal_digest(payload) != digest:
        raise ValueError("checksum mismatch (the file changed after it was written)")
    return payload


@contextmanager
def run_lock(path: str | Path, waiting: str = "", blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path` for the block, waiting for another holder (logging `waiting` first);
    yields True. With `blocking=False` it does not wait: yields False, holding nothing, when another has it.

    Unlike the cache's `extract.lock` the file is removed on release, so a finished run leaves nothing behind:
    a waiter that locked the removed file sees it is no longer the one at `path` and locks the new one.
    The OS drops the lock of a killed process, so a crash never leaves a run locked."""
    fd = _lock_file(Path(path), waiting, blocking)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        Path(path).unlink(missing_ok=True)  # while still held: no one can hold the file being removed
        os.close(fd)


def _lock_file(path: Path, waiting: str, blocking: bool) -> int | None:
    """The descriptor holding the flock of the file now at `path`, or None (not blocking, held elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not blocking:
                    os.close(fd)
                    return None
                if waiting:
                    log.info("%s", waiting)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                on_disk, held = os.stat(path), os.fstat(fd)
                same = (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the holder before us removed that file: lock the one at `path` now


def human_bytes(nbytes: float) -> str:
    """1536 -> "1.5 KiB": sizes in messages about disk space."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""

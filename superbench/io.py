"""Atomic file writes: readers (and a re-run after kill -9) see the old file or the whole new one.

Every file superbench writes that another step reads (manifests, cache chunks, records,
checkpoints, baselines, audio) goes through here, so no crash can leave half a file behind.
A new file gets the mode any other tool would give it (0o666 minus the umask), not
`mkstemp`'s private 0o600.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


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


def human_bytes(nbytes: float) -> str:
    """1536 -> "1.5 KiB": sizes in messages about disk space."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""

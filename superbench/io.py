"""Atomic file writes: readers (and a re-run after kill -9) see the old file or the whole new one.

Every file superbench writes that another step reads (manifests, cache chunks, records,
checkpoints, baselines, audio) goes through here, so no crash can leave half a file behind.
A new file gets the mode any other tool would give it (0o666 minus the umask), not
`mkstemp`'s private 0o600.
"""

from __future__ import annotations

import os
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


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A temp file beside `path` (unique per writer), fsynced and renamed over it on success,
    removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0o600; the rename keeps it
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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

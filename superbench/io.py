"""Atomic file writes: readers (and a re-run after kill -9) see the old file or the whole new one.

Every file superbench writes that another step reads (manifests, cache chunks, records,
checkpoints, baselines) goes through here, so no crash can leave half a file behind.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A temp file beside `path` (unique per writer), fsynced and renamed over it on success,
    removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
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

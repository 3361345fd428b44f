"""Where superbench keeps data, caches and results (override with SUPERBENCH_HOME)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("SUPERBENCH_HOME", Path.home() / ".cache" / "superbench")).expanduser()


def data_dir() -> Path:
    return home() / "data"


def cache_dir() -> Path:
    return home() / "features"


def checkpoints_dir() -> Path:
    """Training state of unfinished runs; emptied as each result record is written."""
    return home() / "checkpoints"


def results_dir() -> Path:
    return Path(os.environ.get("SUPERBENCH_RESULTS", "results"))

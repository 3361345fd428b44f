"""Where superbench keeps things: one home, `$SUPERBENCH_HOME` (default ~/.cache/superbench).

    <home>/data          demo corpus and prepared data
    <home>/features      feature cache
    <home>/checkpoints   training state of unfinished runs
    <home>/results       result records ($SUPERBENCH_RESULTS or --results put them elsewhere)
    <home>/leaderboard.db  the leaderboard store ($SUPERBENCH_DB or --db)

Results live in the home too, so a run started from any folder finds (and skips) the
records of an earlier one.
"""

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
    """Result records: $SUPERBENCH_RESULTS, else <SUPERBENCH_HOME>/results (not the current folder)."""
    env = os.environ.get("SUPERBENCH_RESULTS", "").strip()
    return Path(env).expanduser() if env else home() / "results"

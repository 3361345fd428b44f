"""The results, checkpoints and store folders of a run are checked writable before any extraction or training:
a folder that cannot be written is a usage error (exit 2) naming it, not a failure after the work."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from superbench.cli import main
from superbench.testing import make_class_corpus

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SUPERBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SUPERBENCH_RESULTS", raising=False)
    monkeypatch.delenv("SUPERBENCH_DB", raising=False)
    return make_class_corpus(tmp_path / "data", task="ks").parent


def run(corpus: Path, *extra: str) -> int:
    return main(["run", "--upstream", "fbank", "--task", "ks", "--data", str(corpus), "--lr", "0.01",
                 "--set", "train.steps=5", "--no-progress", *extra])


def refused(code: int, caplog, path: Path, home: Path) -> None:
    """Exit 2 with a message naming `path`, and no feature extracted."""
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(path) in e and "cannot be written" in e for e in errors), errors
    if path.is_file():
        assert any(f"{path} is a file, not a folder" in e for e in errors), errors
    assert not (home / "features").exists()


@pytest.mark.parametrize("which", ["results", "checkpoints", "store"])
def test_a_file_where_an_output_folder_should_be_is_refused_before_any_work(which, corpus, tmp_path, caplog):
    home = tmp_path / "home"
    home.mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    extra: list[str] = []
    if which == "results":
        extra = ["--results", str(blocker)]
    elif which == "checkpoints":
        blocker = home / "checkpoints"
        blocker.write_text("a file, not a folder\n")
    else:
        extra = ["--db", str(blocker / "leaderboard.db")]
    refused(run(corpus, *extra), caplog, blocker, home)


@pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders; the file-in-the-way cases cover root")
@pytest.mark.parametrize("which", ["results", "store"])
def test_a_read_only_output_folder_is_refused_before_any_work(which, corpus, tmp_path, caplog):
    home = tmp_path / "home"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        extra = ["--results", str(locked)] if which == "results" else ["--db", str(locked / "leaderboard.db")]
        refused(run(corpus, *extra), caplog, locked, home)
    finally:
        locked.chmod(0o755)


def test_writable_folders_pass_and_the_check_leaves_nothing_behind(corpus, tmp_path):
    assert run(corpus, "--results", str(tmp_path / "out"), "--db", str(tmp_path / "db" / "lb.db")) == 0
    assert list(tmp_path.rglob(".superbench-write-check-*")) == []
    assert list((tmp_path / "out").rglob("*.json")) and (tmp_path / "db" / "lb.db").is_file()

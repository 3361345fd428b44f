"""A full disk under the results store is said as one ("no space left on <db>", exit 3) and leaves no empty
database behind; a file that is not a store keeps its "move it away" message (exit 2)."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3

import pytest

from leaderboard import store as store_module
from leaderboard.store import ResultStore, StoreError
from superbench.cli import main
from superbench.exit_codes import ExitCode
from superbench.records import ResultRecord, write_record

SQLITE_IOERR_SHMSIZE = 4874  # what SQLite reports when it cannot grow the WAL index on a full disk


def _record(seed: int = 0) -> ResultRecord:
    return ResultRecord("up", "fp-up", "ks", "acc", True, 50.0, 50.0, seed, "1.0", profile="superb",
                        layer_weights=[0.25, 0.75], manifest_fingerprint="d")


def _records(folder, seeds=(0,)):
    for seed in seeds:
        write_record(_record(seed), folder)
    return folder


def _full_disk_at(monkeypatch, statement: str, error: sqlite3.Error) -> None:
    """Connections whose `statement` fails with `error`, after SQLite's own automatic rollback (what it
    does when a write finds the disk full)."""

    class Full(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql.startswith(statement):
                if self.in_transaction:
                    super().execute("ROLLBACK")
                raise error
            return super().execute(sql, *args)

    real = sqlite3.connect
    monkeypatch.setattr(store_module.sqlite3, "connect", lambda *a, **k: real(*a, factory=Full, **k))


def _import(tmp_path, db, caplog) -> int:
    with caplog.at_level(logging.ERROR):
        return main(["leaderboard", "import", str(_records(tmp_path / "recs")), "--db", str(db)])


def test_a_full_disk_while_a_new_store_is_set_up_is_disk_full_and_leaves_no_file(tmp_path, monkeypatch, caplog):
    db = tmp_path / "lb.db"
    _full_disk_at(monkeypatch, "COMMIT", sqlite3.OperationalError("database or disk is full"))
    assert _import(tmp_path, db, caplog) == ExitCode.RUNTIME
    assert f"failed: [Errno 28] no space left on {db} (" in caplog.text
    assert "not a usable" not in caplog.text and "cannot rollback" not in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["recs"]  # no 0-byte db, no -wal or -shm


def test_creating_the_store_file_on_a_full_disk_names_it(tmp_path, monkeypatch, caplog):
    db = tmp_path / "lb.db"
    real_open = os.open

    def full_open(path, flags, *args):
        if os.fspath(path) == str(db) and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(store_module.os, "open", full_open)
    with pytest.raises(OSError, match=rf"no space left on {db} \(") as caught:
        len(ResultStore(db))
    assert caught.value.errno == errno.ENOSPC
    assert _import(tmp_path, db, caplog) == ExitCode.RUNTIME
    assert f"no space left on {db}" in caplog.text and not db.exists()


def test_a_full_disk_under_an_existing_store_keeps_its_rows(tmp_path, monkeypatch, caplog):
    db = tmp_path / "lb.db"
    ResultStore(db).add(_record(seed=7))
    _full_disk_at(monkeypatch, "INSERT", sqlite3.OperationalError("database or disk is full"))
    assert _import(tmp_path, db, caplog) == ExitCode.RUNTIME
    assert f"no space left on {db}" in caplog.text and "write failed" not in caplog.text
    monkeypatch.undo()
    assert [r.seed for r in ResultStore(db).records()] == [7]  # the store itself is untouched


def test_an_io_error_is_disk_full_only_when_the_disk_is(tmp_path, monkeypatch):
    """SQLite reports a WAL index it cannot grow as an I/O error: with (nearly) no space left that is a full
    disk, with space left it stays an unusable database."""
    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = SQLITE_IOERR_SHMSIZE
    _full_disk_at(monkeypatch, "PRAGMA journal_mode", error)
    with pytest.raises(StoreError, match=r"not a usable superbench results database \(disk I/O error\)"):
        len(ResultStore(tmp_path / "a.db"))
    usage = store_module.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: usage._replace(free=4096))
    with pytest.raises(OSError, match=r"no space left on .*b\.db \(4\.0 KiB free\)"):
        len(ResultStore(tmp_path / "b.db"))
    assert not list(tmp_path.glob("*.db*"))


def test_a_corrupt_file_keeps_its_move_it_away_message(tmp_path, caplog):
    db = tmp_path / "lb.db"
    db.write_bytes(b"this is not sqlite" * 100)
    assert _import(tmp_path, db, caplog) == ExitCode.USAGE
    assert f"{db}: not a usable superbench results database (file is not a database); move it away" in caplog.text
    assert "no space left" not in caplog.text
    assert db.read_bytes() == b"this is not sqlite" * 100  # never removed or rewritten

"""Results store: every result record in one embedded SQLite database.

Why SQLite: runs on several machines/processes append results at the same time
(a sweep launching one process per task), and a JSON-file-per-run directory
cannot answer "give me every seed of hubert on ks under recipe 1.0" without
re-reading everything. The database keeps the record's full JSON (nothing is
lost, new record fields need no migration) plus indexed key columns.

Concurrency: WAL journal + a generous busy timeout + `BEGIN IMMEDIATE` write
transactions, so parallel writers queue instead of failing or losing rows.
A connection is opened per process (never shared across fork()).

Identity: one row per `superbench.run_key.RunKey` (upstream, fingerprint, task,
data, recipe version, profile, layer, seed), the one definition shared with the
runner. The data (manifest fingerprint) is in it because a re-prepared or
relabelled corpus is another measurement: its record must be stored next to the
old corpus's, not refused as "already stored" while the old score is shown.

Published numbers (`leaderboard.published`, from a paper's table) live in their own
`published` table: they have no run key, and `records()` never returns them, so the CI
check, baselines and `local` references only ever see measurements made here.

A record's secondary metrics (`ResultRecord.secondary`, e.g. SF's slot-value CER) are in its
`record_json` and come back with it; the key columns hold the main metric only. A published
number is keyed by (upstream, task, metric), so a task's main and secondary metrics are two rows.

Schema history: 1 had no `data` column; 2 had no `published` table; 3 keyed `published` by
(upstream, task), with room for one metric per task. An older file is migrated in place when
opened (one write transaction, so concurrent openers migrate it once).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.published import PublishedResult
from superbench import paths
from superbench.io import disk_full_error, is_disk_full
from superbench.provenance import now_iso
from superbench.records import RecordError, ResultRecord, with_intervals
from superbench.run_key import RunKey

log = logging.getLogger(__name__)

STORE_SCHEMA_VERSION = 4
APPLICATION_ID = 0x53425042  # "SBPB": marks the file as a superbench store
BUSY_TIMEOUT_MS = 60_000
#: SQLite's primary result codes for "disk full" and "I/O error" (an extended code's low byte).
_SQLITE_FULL, _SQLITE_IOERR = 13, 10
#: An I/O error with less free space than this under the store is a full disk: SQLite reports a WAL index
#: (`-shm`) it cannot grow as SQLITE_IOERR_SHMSIZE, not as SQLITE_FULL.
_NEARLY_FULL_BYTES = 1 << 20

_VALUE_COLUMNS = ("metric", "higher_is_better", "test", "dev", "created_at", "stored_at", "record_json")
_COLUMNS = RunKey.FIELDS + _VALUE_COLUMNS
_KEY_SQL = ", ".join(RunKey.FIELDS)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS results (
    upstream TEXT NOT NULL,
    upstream_fingerprint TEXT NOT NULL,
    task TEXT NOT NULL,
    data TEXT NOT NULL,           -- manifest fingerprint of the corpus the run was scored on
    recipe_version TEXT NOT NULL,
    profile TEXT NOT NULL,
    layer TEXT NOT NULL,          -- '' for the weighted sum, else the probed layer
    seed INTEGER NOT NULL,
    metric TEXT NOT NULL,
    higher_is_better INTEGER NOT NULL,
    test REAL NOT NULL,
    dev REAL NOT NULL,
    created_at TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    record_json TEXT NOT NULL,
    PRIMARY KEY ({_KEY_SQL})
);
CREATE INDEX IF NOT EXISTS results_by_task ON results (task, recipe_version, profile);
CREATE INDEX IF NOT EXISTS results_by_upstream ON results (upstream, task);
CREATE TABLE IF NOT EXISTS published (
    upstream TEXT NOT NULL,       -- display name as published, e.g. 'HuBERT Base'
    task TEXT NOT NULL,
    metric TEXT NOT NULL,         -- the task's main metric or one of its secondary metrics
    higher_is_better INTEGER NOT NULL,
    value REAL NOT NULL,          -- percent, like every metric here
    source TEXT NOT NULL,         -- where the number comes from (paper, table)
    note TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (upstream, task, metric)
)
"""

#: Columns of the `published` table, in every schema that has one (3 and 4 differ in its key only).
_PUBLISHED_COLUMNS = ("upstream", "task", "metric", "higher_is_better", "value", "source", "note", "stored_at")
#: Columns of a version-1 table (no `data`), read by the migration.
_V1_COLUMNS = ("upstream", "upstream_fingerprint", "task", "recipe_version", "profile", "layer", "seed",
               "metric", "higher_is_better", "test", "dev", "created_at", "stored_at", "record_json")


class StoreError(ValueError):
    """The database cannot be used (corrupt, foreign or newer schema); the message names the file."""


def default_db_path() -> Path:
    """$SUPERBENCH_DB if set, else <superbench home>/leaderboard.db."""
    env = os.environ.get("SUPERBENCH_DB")
    return Path(env).expanduser() if env else paths.home() / "leaderboard.db"


def _statements(sql: str) -> list[str]:
    return [stmt for stmt in sql.strip().split(";\n") if stmt.strip()]


def _data_of(record_json: str) -> str:
    """A version-1 row's corpus: the stored record's manifest fingerprint ('' if it has none)."""
    try:
        data = json.loads(record_json)
    except (TypeError, json.JSONDecodeError):
        return ""  # kept as is; reading it later names the bad row
    return str(data.get("manifest_fingerprint") or "") if isinstance(data, dict) else ""


@dataclass
class ImportReport:
    """What an import did, by RunKey; `skipped` lists rows that already existed and were kept."""

    inserted: list[RunKey] = field(default_factory=list)
    replaced: list[RunKey] = field(default_factory=list)
    skipped: list[RunKey] = field(default_factory=list)
    #: Inputs that are not valid records, each "where: why" (a file, a list index); never written.
    refused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.inserted)} inserted, {len(self.replaced)} replaced, "
                f"{len(self.skipped)} skipped (already stored; use --overwrite to replace), "
                f"{len(self.refused)} refused")


@dataclass
class SyncReport:
    """What `ResultStore.sync` did: records on disk that the store lacked were added; nothing is deleted."""

    added: list[RunKey] = field(default_factory=list)
    already: int = 0  # records on disk that the store already had
    refused: list[str] = field(default_factory=list)  # unreadable or invalid files, "path: why"


class ResultStore:
    """A SQLite-backed set of ResultRecords; safe for concurrent writers."""

    def __init__(self, path: str | Path | None = None, *, create: bool = True) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self._create = create
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        #: Rows the last `records()` call skipped as invalid, each "db: stored row KEY is not ... (why)".
        self.invalid_rows: list[str] = []

    # -- connection -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        created = not self.path.exists()
        if created:
            if not self._create:
                raise StoreError(f"{self.path}: results database does not exist "
                                 f"(run something first, import records, or pass --db)")
            self._create_file()
        elif self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a results database")
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._init_schema(conn)
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", a full disk, ...
            error = self._failure(exc, f"{self.path}: not a usable superbench results database ({exc}); "
                                       f"move it away or pass another --db")
            if conn is not None:
                conn.close()
            if created:
                self._remove_if_empty()
            raise error from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _create_file(self) -> None:
        """Create the database file here rather than in SQLite, so a full disk (or a folder that cannot be
        written) surfaces with its errno instead of SQLite's "unable to open database file"."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.path, exc) from exc
            raise

    def _remove_if_empty(self) -> None:
        """A store that could not be set up leaves nothing behind that would look like a store: an empty file,
        or SQLite's first page alone (no table fits in one page) with an empty write-ahead log."""
        wal, shm = (self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm"))
        try:
            size = self.path.stat().st_size
            if size:
                with open(self.path, "rb") as fh:
                    page = int.from_bytes(fh.read(100)[16:18], "big")
                if size > (65536 if page == 1 else page) or (wal.exists() and wal.stat().st_size):
                    return
            for file in (self.path, wal, shm):
                file.unlink(missing_ok=True)
        except OSError:
            pass

    def _failure(self, exc: sqlite3.Error, message: str) -> Exception:
        """What to raise for `exc`: a full disk as the one disk-full message (a runtime failure, exit 3),
        anything else as a StoreError with `message` (the file itself is the problem)."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        full = primary == _SQLITE_FULL or "database or disk is full" in str(exc)
        if primary == _SQLITE_IOERR:
            try:
                full = shutil.disk_usage(self.path.parent).free < _NEARLY_FULL_BYTES
            except OSError:
                pass
        return disk_full_error(self.path, exc) if full else StoreError(message)

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == APPLICATION_ID:
            if version > STORE_SCHEMA_VERSION:
                raise StoreError(f"{self.path}: written by a newer superbench (store schema {version}, "
                                 f"this version reads {STORE_SCHEMA_VERSION}); upgrade superbench")
            if version < STORE_SCHEMA_VERSION:
                self._migrate(conn)
            return
        if tables:
            raise StoreError(f"{self.path}: an SQLite database but not a superbench results store "
                             f"(tables: {sorted(tables)})")
        with _transaction(conn):
            if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:  # lost a race?
                for stmt in _statements(_SCHEMA):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an older store to this schema in one write transaction.

        The version is read again under the write lock: a concurrent opener that got
        there first has already migrated, and the file must not be migrated twice.
        """
        with _transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (1, 2, 3, STORE_SCHEMA_VERSION):
                raise StoreError(f"{self.path}: unknown store schema {version}; cannot migrate it")
            if version == 1:
                self._migrate_v1(conn)
            if version in (1, 2):
                self._migrate_v2(conn)  # creates `published` in this schema's shape: nothing left to do
            if version == 3:
                self._migrate_v3(conn)
        if version != STORE_SCHEMA_VERSION:
            log.info("%s: migrated results store from schema %d to %d", self.path, version, STORE_SCHEMA_VERSION)

    @staticmethod
    def _migrate_v1(conn: sqlite3.Connection) -> None:
        """Schema 1 -> 2: add `data` to the key, taken from each stored record's manifest fingerprint."""
        conn.execute("ALTER TABLE results RENAME TO results_v1")
        conn.execute("DROP INDEX IF EXISTS results_by_task")
        conn.execute("DROP INDEX IF EXISTS results_by_upstream")
        for stmt in _statements(_SCHEMA):
            conn.execute(stmt)
        rows = conn.execute(f"SELECT {', '.join(_V1_COLUMNS)} FROM results_v1").fetchall()
        insert = f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        for row in rows:
            old = dict(zip(_V1_COLUMNS, row))
            old["data"] = _data_of(old["record_json"])
            conn.execute(insert, tuple(old[c] for c in _COLUMNS))
        conn.execute("DROP TABLE results_v1")
        conn.execute("PRAGMA user_version = 2")

    @staticmethod
    def _migrate_v2(conn: sqlite3.Connection) -> None:
        """Schema 2 -> 3 (and so 4): add the `published` table (results are untouched)."""
        for stmt in _statements(_SCHEMA):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION}")

    @staticmethod
    def _migrate_v3(conn: sqlite3.Connection) -> None:
        """Schema 3 -> 4: key `published` by (upstream, task, metric), so a task's secondary metric
        (SF's CER) can be stored beside its main one; every stored row is kept as it is."""
        cols = ", ".join(_PUBLISHED_COLUMNS)
        conn.execute("ALTER TABLE published RENAME TO published_v3")
        for stmt in _statements(_SCHEMA):
            conn.execute(stmt)
        conn.execute(f"INSERT INTO published ({cols}) SELECT {cols} FROM published_v3")
        conn.execute("DROP TABLE published_v3")
        conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION}")

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------
    @staticmethod
    def _row(record: ResultRecord) -> tuple:
        return (*record.run_key().as_tuple(), record.metric, int(bool(record.higher_is_better)), float(record.test),
                float(record.dev), record.created_at or "", now_iso(), record.to_json())

    def add(self, record: ResultRecord, overwrite: bool = False) -> bool:
        """Store one record; returns True if a row was written (inserted or, with overwrite, replaced).

        An existing row with the same key is kept unless `overwrite`, so re-importing
        old files can never clobber a newer result by accident.
        """
        report = self.add_many([record], overwrite=overwrite)
        return bool(report.inserted or report.replaced)

    def add_many(self, records: Iterable[ResultRecord], overwrite: bool = False) -> ImportReport:
        """Store records in ONE transaction: all of them land, or (on error) none.

        Every record is validated first (RecordError for the first invalid one: nothing is written).
        A row that exists is skipped (or, with `overwrite`, replaced); any other constraint failure
        is an error, never a row silently dropped while counted as inserted.
        """
        records = [r.validate() for r in records]
        report = ImportReport()
        conn = self._connect()
        verb = "INSERT OR REPLACE" if overwrite else "INSERT"
        insert = f"{verb} INTO results ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        exists_sql = "SELECT 1 FROM results WHERE " + " AND ".join(f"{c} = ?" for c in RunKey.FIELDS)
        with self._write(conn):
            for rec in records:
                key = rec.run_key()
                exists = conn.execute(exists_sql, key.as_tuple()).fetchone() is not None
                if exists and not overwrite:
                    report.skipped.append(key)
                    continue
                conn.execute(insert, self._row(rec))
                (report.replaced if exists else report.inserted).append(key)
        return report

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction: everything in the block lands, or (on any error) nothing."""
        try:
            with _transaction(conn):
                yield
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, f"{self.path}: write failed ({exc})") from exc

    def add_published(self, rows: Iterable[PublishedResult], overwrite: bool = False) -> tuple[int, int, list[str]]:
        """Store published numbers in one transaction; returns (inserted, replaced, skipped descriptions).

        A stored (upstream, task, metric) is kept unless `overwrite`, like result records.
        """
        rows = list(rows)
        conn = self._connect()
        inserted, replaced, skipped = 0, 0, []
        with self._write(conn):
            for r in rows:
                exists = conn.execute("SELECT 1 FROM published WHERE upstream = ? AND task = ? AND metric = ?",
                                      (r.upstream, r.task, r.metric)).fetchone() is not None
                if exists and not overwrite:
                    skipped.append(f"{r.label} / {r.task} {r.metric}")
                    continue
                conn.execute(f"INSERT OR REPLACE INTO published ({', '.join(_PUBLISHED_COLUMNS)}) "
                             f"VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (r.upstream, r.task, r.metric, int(r.higher_is_better), float(r.value), r.source,
                              r.note, now_iso()))
                replaced, inserted = (replaced + 1, inserted) if exists else (replaced, inserted + 1)
        return inserted, replaced, skipped

    def published(self) -> list[PublishedResult]:
        """Every stored published number (never part of `records()`)."""
        try:
            rows = self._connect().execute(
                "SELECT upstream, task, value, source, metric, higher_is_better, note FROM published "
                "ORDER BY upstream, task, metric").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, f"{self.path}: read failed ({exc})") from exc
        return [PublishedResult(u, t, float(v), s, m, bool(h), n) for u, t, v, s, m, h, n in rows]

    # -- reading --------------------------------------------------------------------
    def _select(self, where: str = "", params: tuple = ()) -> Iterator[tuple[tuple, str]]:
        conn = self._connect()
        sql = f"SELECT {_KEY_SQL}, record_json FROM results {where} ORDER BY " \
              f"upstream, task, recipe_version, profile, layer, data, upstream_fingerprint, seed"
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, f"{self.path}: read failed ({exc})") from exc
        for row in rows:
            yield tuple(row[:-1]), row[-1]

    def records(self, *, upstream: str | None = None, task: str | None = None,
                upstream_fingerprint: str | None = None, data: str | None = None,
                strict: bool = False) -> list[ResultRecord]:
        """Every stored record (optionally of one upstream/task/fingerprint/data), validated on the way out.

        A row that is not a valid record (edited by hand, written by a buggy version) is skipped
        with a warning naming it, and listed in `self.invalid_rows`, so one bad row never disables
        the leaderboard; `strict` raises StoreError instead.
        """
        clauses, params = [], []
        for column, value in (("upstream", upstream), ("task", task),
                              ("upstream_fingerprint", upstream_fingerprint), ("data", data)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        out = []
        self.invalid_rows = []
        for key, text in self._select(where, tuple(params)):
            try:
                rec = ResultRecord.from_dict(json.loads(text))
                if rec.run_key().as_tuple() != tuple(key):
                    raise RecordError(f"its record is for another run ({rec.run_key().as_tuple()})")
                out.append(rec)
            except (TypeError, ValueError) as exc:  # JSONDecodeError and RecordError are ValueErrors
                problem = f"{self.path}: stored row {key} is not a valid record ({exc})"
                if strict:
                    raise StoreError(problem) from exc
                log.warning("%s; skipped", problem)
                self.invalid_rows.append(problem)
        return out

    def __len__(self) -> int:
        try:
            return int(self._connect().execute("SELECT COUNT(*) FROM results").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise self._failure(exc, f"{self.path}: read failed ({exc})") from exc

    def sync(self, results_dir: str | Path) -> SyncReport:
        """Add every record file under `results_dir` that the store lacks (rows are never deleted
        or replaced): repairs a store that missed a record (a run killed, or its database write failed,
        after the record file was written). Invalid files are reported in `refused`, not added."""
        root = Path(results_dir)
        report = SyncReport()
        if not root.is_dir():
            report.refused.append(f"{root}: no such results folder")
            return report
        records, report.refused = load_record_files(sorted(root.rglob("*.json")))
        done = self.add_many(records, overwrite=False)
        report.added, report.already = done.inserted, len(done.skipped)
        return report

    def export_json(self, path: str | Path) -> int:
        """Write every record as one JSON list (importable again); returns the count."""
        from superbench.io import atomic_write_text

        records = self.records()
        text = json.dumps([r.to_dict() for r in records], indent=2, sort_keys=True, allow_nan=False)
        atomic_write_text(path, text + "\n")
        return len(records)


# -- reading record files for import --------------------------------------------------
@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE .. COMMIT, rolled back on any error unless SQLite already did (it does on a full
    disk): a ROLLBACK then would fail with "no transaction is active" and hide the error that happened."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _records_from_json(data: Any, origin: str, errors: list[str]) -> list[ResultRecord]:
    """The valid records of one file (a record or an export list); each invalid row goes to `errors`. A record
    that keeps per-unit scores but no interval (written before intervals) gets its interval on import."""
    items = data if isinstance(data, list) else [data]
    out = []
    for i, item in enumerate(items):
        where = f"{origin}[{i}]" if isinstance(data, list) else origin
        if not isinstance(item, dict):
            errors.append(f"{where}: not a result record (expected a JSON object)")
            continue
        try:
            out.append(with_intervals(ResultRecord.from_dict(item), only_missing=True))
        except RecordError as exc:
            errors.append(f"{where}: {exc}")
        except (TypeError, ValueError) as exc:
            errors.append(f"{where}: not a result record ({exc})")
    return out


def load_record_files(inputs: Iterable[str | Path]) -> tuple[list[ResultRecord], list[str]]:
    """Read record files, `leaderboard export` files and directories of them.

    Returns (records, errors); each error names the offending file (and list index),
    so one bad file in a directory of hundreds is found at once.
    """
    records: list[ResultRecord] = []
    errors: list[str] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files = sorted(p.rglob("*.json"))
            if not files:
                errors.append(f"{p}: directory holds no *.json result records")
        elif p.exists():
            files = [p]
        else:
            errors.append(f"{p}: no such file or directory")
            continue
        for f in files:
            try:
                data = json.loads(f.read_text(encoding="utf-8"), parse_constant=_json_constant)
                records.extend(_records_from_json(data, str(f), errors))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                errors.append(f"{f}: cannot read result record ({exc})")
            except RecursionError:
                errors.append(f"{f}: cannot read result record (nested too deeply)")
    return records, errors


def _json_constant(name: str) -> float:
    # json accepts NaN/Infinity by default; keep them as floats so validate() names the field
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


class StoreWriter:
    """`on_record` for the runner: each record goes into the leaderboard store as it is written.

    A failed database write (locked, full disk, not a database) never loses the result: the record
    file is already written, the error names the database and the record, the run goes on, and the
    command ends with exit code 3. The next run of the same command (records found on disk are
    handed over again) or `superbench leaderboard sync` adds the record.
    """

    def __init__(self, db: Path | None) -> None:
        self.db = db
        self.failed: list[str] = []

    def __call__(self, record: ResultRecord) -> None:
        store = ResultStore(self.db)
        try:
            with store:
                store.add(record, overwrite=True)
        except (StoreError, sqlite3.Error, OSError) as exc:
            what = record.run_key().describe()
            self.failed.append(what)
            log.error("could not add %s to the results database %s (%s); the record file is kept and the next "
                      "run, or `superbench leaderboard sync --db %s`, adds it", what, store.path, exc, store.path)

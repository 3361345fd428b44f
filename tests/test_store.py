import json
import multiprocessing as mp
import sqlite3

import pytest

from leaderboard.store import (
    APPLICATION_ID,
    STORE_SCHEMA_VERSION,
    ResultStore,
    StoreError,
    default_db_path,
    load_record_files,
)
from superbench.cli import main
from superbench.records import ResultRecord, write_record
from superbench.run_key import RunKey
from superbench.tasks import TASKS


def rec(upstream="up", task="ks", value=50.0, seed=0, recipe="1.0", profile="superb", layer=None, data="d-old"):
    spec = TASKS.get(task)
    return ResultRecord(upstream, f"fp-{upstream}", task, spec.metric, spec.higher_is_better, value, value,
                        seed, recipe, profile=profile, layer=layer, layer_weights=[0.25, 0.75],
                        manifest_fingerprint=data)


def test_default_db_path(monkeypatch, tmp_path):
    monkeypatch.delenv("SUPERBENCH_DB", raising=False)
    monkeypatch.setenv("SUPERBENCH_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "leaderboard.db"
    monkeypatch.setenv("SUPERBENCH_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"


def test_add_roundtrip_and_no_silent_overwrite(tmp_path):
    store = ResultStore(tmp_path / "lb.db")
    assert store.add(rec(value=50.0)) is True
    assert store.add(rec(value=99.0)) is False  # same key: kept
    assert [r.test for r in store.records()] == [50.0]
    assert store.add(rec(value=99.0), overwrite=True) is True
    got = store.records()
    assert [r.test for r in got] == [99.0] and got[0].layer_weights == [0.25, 0.75]
    # profile, layer, recipe, seed and data are all part of the identity
    for other in (rec(profile="fast"), rec(layer=3), rec(recipe="2.0"), rec(seed=1), rec(data="d-new")):
        assert store.add(other) is True
    assert len(store) == 6
    assert len(ResultStore(tmp_path / "lb.db").records(task="ks", upstream="up")) == 6
    assert [r.manifest_fingerprint for r in store.records(data="d-new")] == ["d-new"]
    conn = sqlite3.connect(tmp_path / "lb.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path, worker, n):
    store = ResultStore(path)
    for i in range(n):
        assert store.add(rec(upstream=f"w{worker}", seed=i, value=float(i)))
    store.close()


def test_parallel_writers_lose_nothing(tmp_path):
    path = tmp_path / "lb.db"
    ctx = mp.get_context("spawn")  # fresh interpreters, like separate runs
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = ResultStore(path)
    assert len(store) == 100
    assert sorted({r.upstream for r in store.records()}) == ["w0", "w1", "w2", "w3"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_corrupt_and_foreign_databases_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"bad\.db: not a usable superbench results database"):
        len(ResultStore(bad))
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a superbench results store"):
        ResultStore(foreign).records()
    with pytest.raises(StoreError, match="does not exist"):
        ResultStore(tmp_path / "missing.db", create=False).records()
    assert main(["leaderboard", "--db", str(bad)]) == 2


def test_load_record_files_reports_bad_files_by_path(tmp_path):
    d = tmp_path / "recs"
    write_record(rec(), d)
    bad_task = json.loads(rec().to_json()) | {"task": "asrr"}
    del bad_task["task_info"]  # a record written before records described their task, of no registered task
    (d / "unknown_task.json").write_text(json.dumps(bad_task))
    nan = rec().to_json().replace('"test": 50.0', '"test": NaN')
    (d / "nan_metric.json").write_text(nan)
    (d / "broken.json").write_text("{not json")
    records, errors = load_record_files([d, tmp_path / "nope.json"])
    assert len(records) == 1
    text = "\n".join(errors)
    assert "unknown_task.json" in text and "unknown task 'asrr'" in text
    assert "nan_metric.json" in text and "test metric is nan" in text
    assert "broken.json" in text and "cannot read result record" in text
    assert "nope.json: no such file" in text


def test_cli_import_export(tmp_path, capsys):
    db, d = tmp_path / "lb.db", tmp_path / "recs"
    for seed in range(3):
        write_record(rec(seed=seed, value=40.0 + seed), d)
    assert main(["leaderboard", "import", str(d), "--db", str(db)]) == 0
    assert "3 inserted" in capsys.readouterr().out
    # re-import with a changed value: skipped, the stored row is untouched
    write_record(rec(seed=0, value=10.0), d)
    assert main(["leaderboard", "--db", str(db), "import", str(d)]) == 0
    assert "0 inserted, 0 replaced, 3 skipped" in capsys.readouterr().out
    assert sorted(r.test for r in ResultStore(db).records()) == [40.0, 41.0, 42.0]
    assert main(["leaderboard", "import", str(d), "--db", str(db), "--overwrite"]) == 0
    assert "3 replaced" in capsys.readouterr().out
    assert sorted(r.test for r in ResultStore(db).records()) == [10.0, 41.0, 42.0]
    # export then import into a fresh store reproduces every record
    out = tmp_path / "export.json"
    assert main(["leaderboard", "export", "-o", str(out), "--db", str(db)]) == 0
    assert len(json.loads(out.read_text())) == 3
    db2 = tmp_path / "lb2.db"
    assert main(["leaderboard", "import", str(out), "--db", str(db2)]) == 0
    assert ResultStore(db2).records() == ResultStore(db).records()


def test_cli_import_refuses_bad_input_and_writes_nothing(tmp_path, caplog):
    db, d = tmp_path / "lb.db", tmp_path / "recs"
    write_record(rec(), d)
    (d / "zz_nan.json").write_text(rec(seed=5).to_json().replace('"dev": 50.0', '"dev": NaN'))
    assert main(["leaderboard", "import", str(d), "--db", str(db)]) == 2
    assert "zz_nan.json" in caplog.text and "dev metric is nan" in caplog.text
    assert "nothing was written" in caplog.text
    assert len(ResultStore(db)) == 0


def test_two_corpora_are_two_rows_and_import_reports_the_run_key(tmp_path, caplog):
    store = ResultStore(tmp_path / "lb.db")
    report = store.add_many([rec(value=50.0, data="d-old"), rec(value=70.0, data="d-new")])
    assert report.inserted == [rec(data="d-old").run_key(), rec(data="d-new").run_key()]
    assert sorted((r.manifest_fingerprint, r.test) for r in store.records()) == [("d-new", 70.0), ("d-old", 50.0)]
    again = store.add_many([rec(value=1.0, data="d-new")])
    assert again.skipped == [RunKey("up", "fp-up", "ks", "d-new", "1.0", "superb", None, 0)]
    d = tmp_path / "recs"
    write_record(rec(value=1.0, data="d-new"), d)
    assert main(["leaderboard", "import", str(d), "--db", str(tmp_path / "lb.db")]) == 0
    assert "skipped (already stored): up@fp-up ks seed 0 (data d-new, superb r1.0)" in caplog.text


# The version-1 schema verbatim (before `data` joined the key), to build an old store.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    upstream TEXT NOT NULL,
    upstream_fingerprint TEXT NOT NULL,
    task TEXT NOT NULL,
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
    PRIMARY KEY (upstream, upstream_fingerprint, task, recipe_version, profile, layer, seed)
);
CREATE INDEX IF NOT EXISTS results_by_task ON results (task, recipe_version, profile);
CREATE INDEX IF NOT EXISTS results_by_upstream ON results (upstream, task);
"""


def make_v1_store(path, records):
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    for r in records:
        conn.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (r.upstream, r.upstream_fingerprint, r.task, r.recipe_version, r.profile,
                      "" if r.layer is None else str(r.layer), r.seed, r.metric, int(r.higher_is_better), r.test,
                      r.dev, r.created_at, "2026-01-01T00:00:00+00:00", r.to_json()))
    conn.commit()
    conn.close()


def test_v1_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "v1.db"
    old = rec(value=50.0, data="d-old")
    make_v1_store(path, [old, rec(value=60.0, seed=1, layer=3, data="")])
    store = ResultStore(path)
    got = store.records()
    assert sorted((r.test, r.manifest_fingerprint) for r in got) == [(50.0, "d-old"), (60.0, "")]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_SCHEMA_VERSION == 4
    assert sorted(conn.execute("SELECT data, layer, seed FROM results").fetchall()) == [("", "3", 1),
                                                                                      ("d-old", "", 0)]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
    assert tables == {"results", "published"} and indexes == {"results_by_task", "results_by_upstream"}
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the same model/task/seed on a re-prepared corpus is a second row, not "already stored"
    report = store.add_many([rec(value=70.0, data="d-new")])
    assert len(report.inserted) == 1 and not report.skipped
    assert sorted((r.manifest_fingerprint, r.test) for r in store.records(upstream="up", task="ks")
                  if r.layer is None) == [("d-new", 70.0), ("d-old", 50.0)]
    store.close()
    assert len(ResultStore(path)) == 3  # opening a migrated store again changes nothing


def _open_and_count(path, queue):
    queue.put(len(ResultStore(path)))


def test_concurrent_openers_migrate_once(tmp_path):
    path = tmp_path / "v1.db"
    make_v1_store(path, [rec(seed=s, value=float(s)) for s in range(20)])
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open_and_count, args=(path, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sorted(queue.get(timeout=5) for _ in procs) == [20, 20, 20, 20]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT data) FROM results").fetchone() == (20, 1)


def test_newer_store_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    ResultStore(path).add(rec())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {STORE_SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer superbench"):
        ResultStore(path).records()

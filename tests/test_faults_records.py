"""Fault injection for "nothing lost, nothing silently wrong": a store that misses a record is repaired,
invalid records are refused everywhere with reasons, the CI gate cannot pass by accident, record paths
stay inside the results folder, and absurd numbers on the command line are usage errors."""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3

import pytest

import leaderboard.check as check_module
from leaderboard.store import ResultStore, StoreError, load_record_files
from superbench.cli import main
from superbench.exit_codes import ExitCode
from superbench.options import RunOptions
from superbench.records import RecordError, ResultRecord, read_record, record_path, write_record
from superbench.run_key import RunKey
from superbench.runner import run
from superbench.tasks import TASKS, get_task
from superbench.testing import ToneUpstream, make_class_corpus, scratch_run_options

SMALL = {"steps": 20, "eval_interval": 10, "batch_size": 8, "lr_grid": [1e-2]}


def rec(task="ks", value=50.0, seed=0, upstream="up", profile="fast", **kw) -> ResultRecord:
    spec = TASKS.get(task)
    return ResultRecord(upstream, f"fp-{upstream}", task, spec.metric, spec.higher_is_better, value, value, seed,
                        "1.0", profile=profile, manifest_fingerprint="d1", **kw)


def _opts(tmp_path, **kw):
    return scratch_run_options(tmp_path, **{"overrides": dict(SMALL), **kw})


# ------------------------------------------------------------------ 1. the store never misses a record
def test_store_write_failure_keeps_the_record_and_the_next_run_repairs_it(tmp_path, monkeypatch, caplog):
    from leaderboard.store import StoreWriter

    make_class_corpus(tmp_path / "a", task="ks")
    db = tmp_path / "lb.db"
    real_add = ResultStore.add

    def locked(self, record, overwrite=False):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ResultStore, "add", locked)
    writer = StoreWriter(db)
    with caplog.at_level(logging.ERROR):
        (first,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path, on_record=writer))
    path = record_path(tmp_path / "results", first.run_key())
    assert read_record(path) == first  # the record file is kept
    assert writer.failed and str(db) in caplog.text and "database is locked" in caplog.text
    assert "leaderboard sync" in caplog.text
    assert len(ResultStore(db)) == 0

    monkeypatch.setattr(ResultStore, "add", real_add)
    writer = StoreWriter(db)
    (again,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path, on_record=writer))
    assert again == first and not writer.failed
    assert ResultStore(db).records() == [first]  # the rerun skipped training yet repaired the store


@pytest.mark.slow
def test_cli_run_with_an_unusable_db_exits_3_keeps_the_record_and_sync_adds_it(tmp_path, caplog, capsys):
    make_class_corpus(tmp_path / "data", task="ks")
    (tmp_path / "tones.py").write_text("from superbench.testing import ToneUpstream\n\n"
                                       "class Tones(ToneUpstream):\n"
                                       "    def __init__(self, path=None):\n"
                                       "        super().__init__()\n")
    bad_db = tmp_path / "db-is-a-dir"
    bad_db.mkdir()
    results = tmp_path / "results"
    argv = ["run", "--upstream", f"{tmp_path / 'tones.py'}:Tones", "--task", "ks", "--data", str(tmp_path / "data"),
            "--results", str(results), "--no-progress", "--profile", "ci"]
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--db", str(bad_db)]) == ExitCode.RUNTIME == 3
    assert str(bad_db) in caplog.text and "record file is kept" in caplog.text
    (kept,) = sorted(results.rglob("*.json"))
    record = read_record(kept)

    good_db = tmp_path / "lb.db"
    capsys.readouterr()
    assert main(["leaderboard", "sync", "--results", str(results), "--db", str(good_db)]) == 0
    out = capsys.readouterr().out
    assert "1 record(s) added" in out and record.run_key().describe() in out
    assert ResultStore(good_db).records() == [record]
    # a second sync adds nothing and deletes nothing
    assert main(["leaderboard", "sync", "--results", str(results), "--db", str(good_db)]) == 0
    assert "0 record(s) added" in capsys.readouterr().out and len(ResultStore(good_db)) == 1


def test_sync_adds_only_what_is_missing_and_never_deletes(tmp_path, monkeypatch, capsys):
    results, db = tmp_path / "results", tmp_path / "lb.db"
    stored, missing = rec(seed=0), rec(seed=1)
    only_in_store = rec(seed=2)
    ResultStore(db).add_many([stored, only_in_store])
    write_record(stored, results)
    write_record(missing, results)
    (results / "broken.json").write_text("{not json")
    monkeypatch.setenv("SUPERBENCH_RESULTS", str(results))  # the default results folder
    assert main(["leaderboard", "sync", "--db", str(db)]) == ExitCode.USAGE  # broken.json is reported
    out = capsys.readouterr().out
    assert "1 record(s) added" in out and "1 already stored" in out and "1 refused" in out
    assert missing.run_key().describe() in out
    assert sorted(r.seed for r in ResultStore(db).records()) == [0, 1, 2]


def test_a_skipped_run_removes_its_leftover_checkpoints(tmp_path):
    make_class_corpus(tmp_path / "a", task="ks")
    (first,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path))
    leftover = tmp_path / "ckpt" / first.run_key().digest()
    leftover.mkdir(parents=True)  # as if killed between the record write and the checkpoint cleanup
    (leftover / "lr0.01-main.pt").write_bytes(b"state")
    (again,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path))
    assert again == first and not leftover.exists()


# ------------------------------------------------------------------ 2. one validated schema
@pytest.mark.parametrize("change, reason", [
    ({"test": 1e308}, "outside [0, 100]"),
    ({"test": -50.0}, "outside [0, 100]"),
    ({"test": True}, "not a number"),
    ({"dev": "50"}, "not a number"),
    ({"profile": None}, "profile is None"),
    ({"profile": ""}, "profile is ''"),
    ({"upstream_fingerprint": None}, "upstream_fingerprint is None"),
    ({"recipe_version": None}, "recipe_version is None"),
    ({"metric": "wer", "higher_is_better": False}, "does not match task 'ks'"),
    ({"seed": -1}, "seed is -1"),
    ({"seed": 10**30}, "seed is"),
    ({"seed": True}, "seed is True"),
])
def test_validate_refuses_bad_records(change, reason):
    data = json.loads(rec().to_json()) | change
    with pytest.raises(RecordError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        ResultRecord.from_dict(data)


def test_error_rates_may_exceed_100_but_not_1000():
    assert rec(task="asr", value=140.0).validate()  # insertions: WER above 100 is a real measurement
    with pytest.raises(RecordError, match=r"outside \[0, 1000\]"):
        rec(task="asr", value=1001.0).validate()
    with pytest.raises(RecordError, match=r"outside \[0, 100\]"):
        rec(task="ks", value=100.5).validate()


def test_import_refuses_every_bad_case_with_reasons_and_exact_counts(tmp_path, caplog, capsys):
    d, db = tmp_path / "recs", tmp_path / "lb.db"
    good = rec(seed=0)
    write_record(good, d)
    base = json.loads(rec(seed=1).to_json())
    cases = {"huge.json": {"test": 1e308}, "negative.json": {"test": -50}, "boolean.json": {"test": True},
             "null_profile.json": {"profile": None}, "ks_wer.json": {"metric": "wer", "higher_is_better": False}}
    for name, change in cases.items():
        (d / name).write_text(json.dumps(base | change))
    with caplog.at_level(logging.ERROR):
        assert main(["leaderboard", "import", str(d), "--db", str(db)]) == ExitCode.USAGE
    out = capsys.readouterr().out
    assert "0 inserted, 0 replaced, 0 skipped" in out and "5 refused" in out and "nothing was written" in out
    for name in cases:
        assert f"refused: {d / name}" in caplog.text, name
    assert "outside [0, 100]" in caplog.text and "not a number" in caplog.text
    assert "profile is None" in caplog.text and "does not match task 'ks'" in caplog.text
    assert len(ResultStore(db)) == 0

    for name in cases:
        (d / name).unlink()
    write_record(rec(seed=1), d)
    assert main(["leaderboard", "import", str(d), "--db", str(db)]) == 0
    assert "2 inserted, 0 replaced, 0 skipped (already stored; use --overwrite to replace), 0 refused" \
        in capsys.readouterr().out
    assert main(["leaderboard", "import", str(d), "--db", str(db)]) == 0
    assert "0 inserted, 0 replaced, 2 skipped" in capsys.readouterr().out
    assert len(ResultStore(db)) == 2


def test_an_export_list_names_each_bad_row(tmp_path):
    export = tmp_path / "export.json"
    rows = [json.loads(rec(seed=0).to_json()), json.loads(rec(seed=1).to_json()) | {"test": math.inf}]
    export.write_text(json.dumps(rows).replace("Infinity", "1e999"))
    records, errors = load_record_files([export])
    assert [r.seed for r in records] == [0] and len(errors) == 1 and f"{export}[1]" in errors[0]


def test_store_refuses_invalid_records_and_never_counts_a_dropped_row(tmp_path):
    store = ResultStore(tmp_path / "lb.db")
    bad = rec()
    bad.profile = None
    with pytest.raises(RecordError, match="profile is None"):
        store.add_many([rec(seed=1), bad])
    assert len(store) == 0  # all or nothing


def test_a_corrupted_stored_row_is_skipped_with_a_warning(tmp_path, caplog, capsys):
    db = tmp_path / "lb.db"
    ResultStore(db).add_many([rec(upstream="alpha", value=70.0), rec(upstream="beta", value=60.0)])
    conn = sqlite3.connect(db)
    bad = json.loads(rec(upstream="beta", value=60.0).to_json()) | {"metric": "wer", "higher_is_better": False}
    conn.execute("UPDATE results SET record_json = ? WHERE upstream = 'beta'", (json.dumps(bad),))
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING):
        assert main(["leaderboard", "--db", str(db), "--reference", "local"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" not in out
    assert "stored row" in caplog.text and "does not match task 'ks'" in caplog.text
    assert "1 stored row(s) skipped as invalid" in caplog.text
    store = ResultStore(db)
    assert [r.upstream for r in store.records()] == ["alpha"] and len(store.invalid_rows) == 1
    with pytest.raises(StoreError, match="not a valid record"):
        store.records(strict=True)


# ------------------------------------------------------------------ 3. a gate that cannot pass by accident
@pytest.fixture
def gate(tmp_path):
    """A store where ks dropped 13.6 points since the baseline, and the baseline's path."""
    db = tmp_path / "lb.db"
    ResultStore(db).add_many([rec(value=80.0, seed=0), rec(value=80.0, seed=1)])
    base = tmp_path / "baseline.json"
    assert main(["check", "--write-baseline", str(base), "--upstream", "up", "--db", str(db)]) == 0
    store = ResultStore(db)
    store.add_many([rec(value=66.4, seed=0), rec(value=66.4, seed=1)], overwrite=True)
    return db, base


def _set_std(base, value) -> None:
    data = json.loads(base.read_text())
    data["tasks"]["ks"]["std"] = value
    base.write_text(json.dumps(data))  # math.inf is written as Infinity, which json reads back


def test_a_real_drop_fails(gate):
    db, base = gate
    assert main(["check", "--baseline", str(base), "--db", str(db)]) == ExitCode.FAILED


@pytest.mark.parametrize("std, reason", [(math.inf, "not a finite number"), (1e6, "implausible"),
                                         (-1.0, "not a finite number >= 0"), ("2", "not a finite number")])
def test_implausible_baseline_std_is_refused(gate, caplog, std, reason):
    db, base = gate
    _set_std(base, std)
    assert main(["check", "--baseline", str(base), "--db", str(db)]) == ExitCode.USAGE
    assert "tasks.ks: std is" in caplog.text and reason in caplog.text


def test_baseline_n_and_mean_are_validated(gate, caplog):
    db, base = gate
    data = json.loads(base.read_text())
    for field, value, reason in (("n", 0, "n is 0"), ("mean", 1e308, "mean is 1e+308"), ("mean", True, "mean is")):
        broken = json.loads(json.dumps(data))
        broken["tasks"]["ks"][field] = value
        base.write_text(json.dumps(broken))
        assert main(["check", "--baseline", str(base), "--db", str(db)]) == ExitCode.USAGE, field
        assert reason in caplog.text, field


def test_current_std_widens_the_tolerance_only_up_to_the_cap(gate):
    db, base = gate
    store = ResultStore(db)  # seeds 0 and 100: a std of 70.7 points, capped at MAX_STD
    store.add_many([rec(value=0.0, seed=0), rec(value=100.0, seed=1)], overwrite=True)
    baseline = check_module.load_baseline(base)
    (row,) = check_module.compare(baseline, store.records()).rows
    assert row.allowed == 2.0 * check_module.MAX_STD


def test_allow_missing_with_nothing_compared_is_exit_2(gate, tmp_path, caplog):
    db, base = gate
    other = tmp_path / "other.db"
    ResultStore(other).add_many([rec(upstream="someone-else")])
    assert main(["check", "--baseline", str(base), "--db", str(other), "--allow-missing"]) == ExitCode.USAGE
    assert "nothing compared" in caplog.text


def test_a_crash_inside_check_is_exit_3_not_a_regression(gate, monkeypatch, caplog):
    db, base = gate

    def crash(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for -: 'str' and 'float'\nsecond line")

    monkeypatch.setattr(check_module, "compare", crash)
    assert main(["check", "--baseline", str(base), "--db", str(db)]) == ExitCode.INTERNAL == 3
    assert "internal error: TypeError: unsupported operand" in caplog.text
    assert "second line" not in caplog.text and "Traceback" not in caplog.text
    caplog.clear()
    assert main(["check", "--baseline", str(base), "--db", str(db), "-v"]) == 3
    assert "Traceback" in caplog.text  # the traceback only with -v


# ------------------------------------------------------------------ 4. safe identity paths
@pytest.mark.parametrize("evil", ["../", "..", ".", "", "x/../..", "../../etc/passwd", "/abs", "a" * 400])
def test_run_key_fields_never_escape_the_results_folder(tmp_path, evil):
    results = tmp_path / "results"
    for name in ("upstream", "upstream_fingerprint", "task", "data", "recipe_version", "profile", "layer"):
        values = dict(upstream="up", upstream_fingerprint="fp", task="ks", data="d1", recipe_version="1",
                      profile="fast", layer=None, seed=0)
        values[name] = evil
        key = RunKey(**values)
        for part in key.relpath().parts:
            assert part not in ("", ".", "..") and "/" not in part and len(part) < 200, (name, part)
        path = record_path(results, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        assert path.resolve().is_relative_to(results.resolve()), (name, path)
    every = RunKey(*(["../"] * 7), 0)
    assert record_path(results, every).resolve().is_relative_to(results.resolve())


def test_plain_names_keep_their_paths_and_odd_ones_do_not_collide():
    key = RunKey("hubert", "abc", "ks", "0123456789abcdef", "1.0", "fast+1a2b3c4d", None, 0)
    assert str(key.relpath()) == "hubert/abc/fast_1a2b3c4d-r1.0/ks-data0123456789ab-seed0.json"
    a = RunKey("..", "fp", "ks", "d", "1", "fast", None, 0).relpath()
    b = RunKey(".", "fp", "ks", "d", "1", "fast", None, 0).relpath()
    assert a.parts[0] != b.parts[0]


def test_records_with_traversal_names_are_written_inside(tmp_path):
    results = tmp_path / "deep" / "results"
    r = rec(upstream="../../..")
    r.upstream_fingerprint = "../x"
    r.recipe_version = ".."
    path = write_record(r, results)
    assert path.resolve().is_relative_to(results.resolve()) and read_record(path) == r


# ------------------------------------------------------------------ 5. numbers on the command line
@pytest.mark.parametrize("option, value", [("--seeds", "1e11"), ("--seeds", str(10**30)), ("--seeds", "0"),
                                           ("--seeds", "1001"), ("--threads", "1e11"), ("--threads", "0"),
                                           ("--extract-threads", str(10**30)), ("--train-threads", "-1"),
                                           ("--layer", str(10**30)), ("--layer", "-1"), ("--lr", "nan"),
                                           ("--lr", "inf"), ("--lr", "0")])
def test_absurd_numbers_are_usage_errors(option, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--upstream", "fbank", "--task", "ks", option, value])
    assert exc.value.code == ExitCode.USAGE == 2
    assert option in capsys.readouterr().err


def test_library_seeds_are_checked_too(tmp_path):
    make_class_corpus(tmp_path / "a", task="ks")
    with pytest.raises(ValueError, match="seeds must be an integer in 1..1000"):
        run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path, seeds=10**30))


def test_fold_names_from_meta_json_never_escape_the_checkpoint_or_results_folders(tmp_path):
    from superbench.manifest import Fold
    from superbench.runner import run
    from superbench.tasks import get_task
    from superbench.testing import ToneUpstream, make_class_corpus

    folds = [Fold("../../../../../escaped", "train", "dev", "test"), Fold("..", "train", "test", "dev")]
    make_class_corpus(tmp_path / "data", task="er", n_classes=3, per_class=(6, 2, 2), folds=folds)
    box = tmp_path / "box"
    opts = RunOptions.of(results_dir=box / "results", cache_root=box / "cache", checkpoint_root=box / "ckpt",
                         progress=False, profile="fast",
                         overrides={"steps": 4, "eval_interval": 2, "batch_size": 4, "lr_grid": [1e-2]})
    (rec,) = run(ToneUpstream(), [get_task("er")], tmp_path / "data", opts)
    assert set(rec.folds) == {"../../../../../escaped", ".."}
    outside = [p for p in tmp_path.rglob("*") if box not in p.parents and p != box and "data" not in p.parts]
    assert outside == []  # nothing written next to or above the box
    heads = sorted(p.name for p in (box / "results").rglob("*.head.pt"))
    assert len(heads) == 2 and all("/" not in h and not h.startswith(".") for h in heads)


# ------------------------------------------------------------------ every field the report reads is validated
@pytest.mark.parametrize("change, reason", [
    ({"layer_weights": "x"}, "layer_weights is 'x', not a list of finite weights"),
    ({"layer_weights": [0.5, float("nan")]}, "layer_weights is"),
    ({"trials": None}, "trials is 'None', not a list"),
    ({"trials": [{"lr": "0.1", "dev": 1.0, "test": 1.0}]}, "trials[0] lr is '0.1', not a finite number"),
    ({"trials": [{"lr": 0.1, "dev": 1.0, "test": 1.0, "history": [[1, "x"]]}]}, "trials[0] history is not a list"),
    ({"lr": float("nan")}, "lr is nan, not null or a learning rate > 0"),
    ({"lr": -1.0}, "lr is -1.0"),
    ({"created_at": "yesterday"}, "created_at is 'yesterday', not an ISO-8601 date"),
    ({"wall_time": {"training": -3}}, "wall_time is"),
    ({"folds": {"main": {"dev": 1.0}}}, "folds is"),
])
def test_records_refuse_fields_that_would_break_the_report(change, reason):
    data = json.loads(rec().to_json()) | change
    with pytest.raises(RecordError, match=re.escape(reason)):
        ResultRecord.from_dict(data)


def test_import_refuses_what_would_break_the_report_and_export_is_strict_json(tmp_path, caplog, capsys):
    d, db = tmp_path / "recs", tmp_path / "lb.db"
    write_record(rec(seed=0), d)
    base = json.loads(rec(seed=1).to_json())
    (d / "weights.json").write_text(json.dumps(base | {"layer_weights": "x"}))
    (d / "trials.json").write_text(json.dumps(base | {"trials": None}))
    (d / "lr.json").write_text(json.dumps(base | {"lr": float("nan")}))  # json.dumps writes a bare NaN token
    with caplog.at_level(logging.ERROR):
        assert main(["leaderboard", "import", str(d), "--db", str(db)]) == ExitCode.USAGE
    assert "0 inserted, 0 replaced, 0 skipped" in capsys.readouterr().out
    assert all(f"refused: {d / n}" in caplog.text for n in ("weights.json", "trials.json", "lr.json"))
    for name in ("weights.json", "trials.json", "lr.json"):
        (d / name).unlink()
    assert main(["leaderboard", "import", str(d), "--db", str(db)]) == 0
    assert main(["report", "--db", str(db), "-o", str(tmp_path / "r.html")]) == 0
    assert main(["leaderboard", "export", "-o", str(tmp_path / "export.json"), "--db", str(db)]) == 0
    text = (tmp_path / "export.json").read_text()
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert "NaN" not in text and "Infinity" not in text

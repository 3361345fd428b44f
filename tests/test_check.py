import json
from pathlib import Path

import pytest

from leaderboard.check import Baseline, CheckError, CheckReport, TaskBaseline, compare, load_baseline, make_baseline
from leaderboard.store import ResultStore
from superbench.cli import main
from superbench.records import ResultRecord, write_record
from superbench.tasks import TASKS

BASE = {"ks": [80.0, 82.0], "asr": [20.0, 21.0]}  # acc (higher better), WER (lower better)


def rec(task, value, seed, upstream="tiny", recipe="1.0", profile="fast", fp="fp1", data="d1", created_at=""):
    spec = TASKS.get(task)
    return ResultRecord(upstream, fp, task, spec.metric, spec.higher_is_better, value, value, seed, recipe,
                        profile=profile, manifest_fingerprint=data, created_at=created_at)


def records(values=BASE, **kw):
    return [rec(t, v, s, **kw) for t, vs in values.items() for s, v in enumerate(vs)]


@pytest.fixture
def db(tmp_path):
    store = ResultStore(tmp_path / "lb.db")
    store.add_many(records() + [rec("ks", 10.0, 0, upstream="other")])
    return tmp_path / "lb.db"


@pytest.fixture
def baseline_file(tmp_path, db):
    path = tmp_path / "baseline.json"
    assert main(["check", "--write-baseline", str(path), "--upstream", "tiny", "--db", str(db)]) == 0
    return path


def test_baseline_format(baseline_file):
    data = json.loads(baseline_file.read_text())
    assert data["format"] == "superbench-baseline" and data["upstream"] == "tiny"
    ks = data["tasks"]["ks"]
    assert ks["mean"] == 81.0 and ks["n"] == 2 and ks["metric"] == "acc" and ks["higher_is_better"] is True
    assert ks["std"] == pytest.approx(2 ** 0.5)  # sample std of 80, 82
    assert ks["recipe_version"] == "1.0" and ks["profile"] == "fast" and ks["data"] == "d1"
    assert data["upstream_fingerprint"] == "fp1"
    assert list(data["tasks"]) == ["ks", "asr"]


def test_passes_against_itself(baseline_file, db, capsys):
    assert main(["check", "--baseline", str(baseline_file), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "task" in out and "allowed" in out and "status" in out
    assert "OK: no regression for tiny (2 task(s) checked)" in out
    assert "compared tiny@fp1 (the only fingerprint in the store)" in out


def test_direction_aware_regression():
    base = make_baseline(records(), "tiny")
    # allowed = max(0.5, 2 * std); ks std = 1.41 -> allowed 2.83
    worse_ks = records({"ks": [77.0, 79.0], "asr": [20.0, 21.0]})  # -3.0 points of accuracy
    rep = compare(base, worse_ks, tolerance=0.5, std_tolerance=2.0)
    ks = rep.rows[0]
    assert ks.allowed == pytest.approx(2 * 2 ** 0.5) and ks.delta == pytest.approx(-3.0)
    assert ks.status == "REGRESSED" and rep.exit_code == 1
    # a WER *drop* is an improvement, a rise beyond tolerance a regression
    better_asr = compare(base, records({"ks": [80.0, 82.0], "asr": [15.0, 16.0]}), std_tolerance=0.0)
    assert [r.status for r in better_asr.rows] == ["ok", "improved"] and better_asr.exit_code == 0
    worse_asr = compare(base, records({"ks": [80.0, 82.0], "asr": [21.0, 22.0]}), tolerance=0.5,
                        std_tolerance=0.0)
    assert worse_asr.rows[1].status == "REGRESSED"
    assert compare(base, records({"ks": [80.0, 82.0], "asr": [21.0, 22.0]}), tolerance=1.0,
                   std_tolerance=0.0).exit_code == 0  # within the absolute tolerance


def test_cli_exit_1_when_a_task_gets_worse(tmp_path, baseline_file, capsys):
    d = tmp_path / "current"
    for r in records({"ks": [70.0, 71.0], "asr": [20.0, 21.0]}):
        write_record(r, d)
    assert main(["check", "--baseline", str(baseline_file), "--records", str(d)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "-10.50" in out
    assert "FAIL: 1 task(s) regressed for tiny: ks" in out


def test_exit_2_cases(tmp_path, baseline_file, caplog):
    # unreadable baseline
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert main(["check", "--baseline", str(bad), "--records", str(tmp_path)]) == 2
    assert "bad.json: cannot read baseline" in caplog.text
    caplog.clear()
    # missing task, unless --allow-missing
    only_ks = tmp_path / "only_ks"
    for r in records({"ks": [80.0, 82.0]}):
        write_record(r, only_ks)
    assert main(["check", "--baseline", str(baseline_file), "--records", str(only_ks)]) == 2
    assert "task asr: no current results for upstream 'tiny'" in caplog.text
    assert main(["check", "--baseline", str(baseline_file), "--records", str(only_ks), "--allow-missing"]) == 0
    caplog.clear()
    # baseline for a different recipe version
    v2 = tmp_path / "v2"
    for r in records(recipe="2.0"):
        write_record(r, v2)
    assert main(["check", "--baseline", str(baseline_file), "--records", str(v2)]) == 2
    assert "baseline is for recipe 1.0 / profile fast but current results are recipe 2.0 / profile fast" \
        in caplog.text
    caplog.clear()
    # not a baseline at all; --write-baseline without --upstream
    notbase = tmp_path / "x.json"
    notbase.write_text(json.dumps({"upstream": "tiny"}))
    assert main(["check", "--baseline", str(notbase), "--records", str(v2)]) == 2
    assert "not a superbench baseline" in caplog.text
    assert main(["check", "--write-baseline", str(tmp_path / "b.json"), "--records", str(v2)]) == 2
    assert "--write-baseline needs --upstream" in caplog.text


def test_load_baseline_validates_fields(tmp_path, baseline_file):
    data = json.loads(baseline_file.read_text())
    data["tasks"]["ks"]["metric"] = "wer"
    p = tmp_path / "b.json"
    p.write_text(json.dumps(data))
    with pytest.raises(CheckError, match=r"tasks\.ks: metric 'wer'"):
        load_baseline(p)
    # a baseline describes its metrics, so a task known nowhere loads (a plugin's) ... but gates nothing by chance
    data["tasks"] = {"kss": data["tasks"]["asr"]}
    p.write_text(json.dumps(data))
    assert load_baseline(p).tasks["kss"].metric == "wer"
    with pytest.raises(CheckError, match=r"task kss: no current results for upstream 'tiny'"):
        compare(load_baseline(p), [])


def test_make_baseline_refuses_mixed_setups():
    mixed = records() + records({"ks": [60.0]}, profile="superb")
    with pytest.raises(CheckError, match="several setups"):
        make_baseline(mixed, "tiny")
    assert make_baseline(mixed, "tiny", profile="superb").tasks["ks"].mean == 60.0
    with pytest.raises(CheckError, match="no results for upstream 'nobody'"):
        make_baseline(mixed, "nobody")


# --- the model under test is one fingerprint (the issue: A's own rows hid B's SID regression)
FP_A, FP_B = "1a2b3c4d5e6f7a8b", "1a2b9f9f9f9f9f9f"  # "1a2b" is ambiguous, "1a2b3c" is A
UP = "hubert-tiny-random"


def fp_records(fp, sid, ks, created_at, data="d1"):
    return [rec(t, v, s, upstream=UP, fp=fp, data=data, created_at=created_at)
            for t, v in (("sid", sid), ("ks", ks)) for s in (0, 1)]


@pytest.fixture
def two_fingerprints(tmp_path):
    """A baseline written from A's records, then B (newer, SID 22.5 points worse) joins the store."""
    db, base = tmp_path / "two.db", tmp_path / "base-a.json"
    ResultStore(db).add_many(fp_records(FP_A, 60.0, 50.0, "2026-01-01T10:00:00+00:00"))
    assert main(["check", "--write-baseline", str(base), "--upstream", UP, "--db", str(db)]) == 0
    ResultStore(db).add_many(fp_records(FP_B, 37.5, 50.0, "2026-02-01T10:00:00+00:00"))
    return db, base


def test_check_compares_the_newest_fingerprint(two_fingerprints, capsys):
    db, base = two_fingerprints
    written = json.loads(base.read_text())
    assert written["upstream_fingerprint"] == FP_A and written["tasks"]["sid"]["data"] == "d1"
    capsys.readouterr()
    assert main(["check", "--baseline", str(base), "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert f"compared {UP}@{FP_B[:12]} (newest of 2 fingerprints in the store; pick another with " \
           f"--fingerprint)" in out
    sid = next(line for line in out.splitlines() if line.startswith("sid "))
    assert "REGRESSED" in sid and "-22.50" in sid
    assert f"FAIL: 1 task(s) regressed for {UP}: sid" in out
    assert f"upstream fingerprint changed since the baseline ({FP_A[:12]} -> {FP_B[:12]})" in out
    # naming A (by a unique prefix) compares A: no regression
    assert main(["check", "--baseline", str(base), "--db", str(db), "--fingerprint", FP_A[:6]]) == 0
    out = capsys.readouterr().out
    assert f"compared {UP}@{FP_A[:12]} (chosen with --fingerprint {FP_A[:6]}; 2 fingerprints in the store)" in out
    assert "OK: no regression" in out


def test_write_baseline_takes_the_newest_or_the_named_fingerprint(two_fingerprints, tmp_path):
    db, _ = two_fingerprints
    newest, named = tmp_path / "newest.json", tmp_path / "named.json"
    assert main(["check", "--write-baseline", str(newest), "--upstream", UP, "--db", str(db)]) == 0
    assert json.loads(newest.read_text())["upstream_fingerprint"] == FP_B
    assert json.loads(newest.read_text())["tasks"]["sid"]["mean"] == 37.5
    assert main(["check", "--write-baseline", str(named), "--upstream", UP, "--db", str(db),
                 "--fingerprint", FP_A]) == 0
    assert json.loads(named.read_text())["tasks"]["sid"]["mean"] == 60.0


def test_unknown_or_ambiguous_fingerprint_is_exit_2(two_fingerprints, caplog):
    db, base = two_fingerprints
    assert main(["check", "--baseline", str(base), "--db", str(db), "--fingerprint", "ffff"]) == 2
    assert f"--fingerprint 'ffff' matches no fingerprint of upstream '{UP}'" in caplog.text
    assert FP_A in caplog.text and FP_B in caplog.text  # lists what is there
    caplog.clear()
    assert main(["check", "--baseline", str(base), "--db", str(db), "--fingerprint", "1a2b"]) == 2
    assert "--fingerprint '1a2b' is ambiguous: it matches 2" in caplog.text
    assert FP_A in caplog.text and FP_B in caplog.text
    caplog.clear()
    assert main(["check", "--write-baseline", str(base), "--upstream", UP, "--db", str(db),
                 "--fingerprint", "1a2b"]) == 2
    assert "is ambiguous" in caplog.text


def test_equally_new_fingerprints_are_not_picked_by_chance():
    recs = fp_records(FP_A, 60.0, 50.0, "2026-01-01T10:00:00+00:00") + \
        fp_records(FP_B, 60.0, 50.0, "2026-01-01T10:00:00+00:00")
    with pytest.raises(CheckError, match="cannot tell which weights .* are newest"):
        make_baseline(recs, UP)
    # other timezone notation, same instant order: parsed, not compared as text
    recs = fp_records(FP_A, 60.0, 50.0, "2026-01-01T12:00:00+02:00") + \
        fp_records(FP_B, 60.0, 50.0, "2026-01-01T11:00:00+00:00")
    assert make_baseline(recs, UP).upstream_fingerprint == FP_B


def test_other_data_is_not_comparable(tmp_path, two_fingerprints, caplog):
    db, base = two_fingerprints  # baseline measured on data d1
    d = tmp_path / "other-data"
    for r in fp_records(FP_A, 60.0, 50.0, "2026-03-01T00:00:00+00:00", data="d2"):
        write_record(r, d)
    assert main(["check", "--baseline", str(base), "--records", str(d)]) == 2
    assert "task sid: not comparable: other data (baseline measured on data d1, current results on d2)" \
        in caplog.text
    # with the baseline's data among the current results, that is what gets compared
    for r in fp_records(FP_A, 60.0, 50.0, "2026-03-01T00:00:00+00:00", data="d1"):
        write_record(r, d)
    assert main(["check", "--baseline", str(base), "--records", str(d)]) == 0


def test_several_data_without_a_baseline_data_is_exit_2(tmp_path, caplog):
    old = tmp_path / "old-baseline.json"
    old.write_text(json.dumps({"format": "superbench-baseline", "format_version": 1, "upstream": UP,
                               "tasks": {"sid": {"metric": "acc", "higher_is_better": True, "mean": 60.0,
                                                 "recipe_version": "1.0", "profile": "fast"}}}))
    assert load_baseline(old).tasks["sid"].data == ""
    recs = fp_records(FP_A, 60.0, 50.0, "2026-01-01T00:00:00+00:00", data="d1") + \
        fp_records(FP_A, 30.0, 50.0, "2026-01-01T00:00:00+00:00", data="d2")
    with pytest.raises(CheckError, match=r"task sid: .* has results on several data \(d1, d2\)"):
        compare(load_baseline(old), recs)
    with pytest.raises(CheckError, match=r"several setups .*data d1; .*data d2"):
        make_baseline(recs, UP)
    assert compare(load_baseline(old), recs[:4]).exit_code == 0


def test_committed_ci_baseline_still_loads(builtin_task_names):
    base = load_baseline(Path(__file__).resolve().parent.parent / "leaderboard" / "baseline-ci.json")
    assert base.upstream == UP and set(base.tasks) == builtin_task_names
    assert all(len(tb.data) == 16 for tb in base.tasks.values())  # each task's manifest fingerprint


# -- loopholes: a std of one seed, an unbounded K, counts of what was compared ------------------------------
def _gate(tb_std: float, tb_n: int, current: list[float], **kw) -> CheckReport:
    base = Baseline("up", {"ks": TaskBaseline("acc", True, 90.0, tb_std, tb_n, "1", "fast", "d")}, "fp")
    recs = [ResultRecord(upstream="up", upstream_fingerprint="fp", task="ks", metric="acc", higher_is_better=True,
                         test=v, dev=v, seed=i, recipe_version="1", profile="fast", manifest_fingerprint="d",
                         created_at="2026-01-01T00:00:00+00:00") for i, v in enumerate(current)]
    return compare(base, recs, **kw)


def test_a_std_of_one_seed_widens_nothing():
    report = _gate(49.0, 1, [19.0])  # a 71-point drop; before, allowed was 2 x 49 = 98 and it passed
    (row,) = report.rows
    assert row.allowed == 0.5 and row.status == "REGRESSED" and report.exit_code == 1
    assert "no seed spread where a side has one seed" in report.format() and "ks (baseline n=1, current n=1)" \
        in report.format()
    (row,) = _gate(2.0, 3, [86.0]).rows  # three seeds: K x std = 4 allowed, a 4-point drop passes
    assert row.allowed == 4.0 and row.status == "ok"


def test_std_tolerance_is_capped_like_tolerance():
    with pytest.raises(CheckError, match=r"--std-tolerance 1000 is more than 10"):
        _gate(1.0, 3, [80.0], std_tolerance=1000)
    (row,) = _gate(40.0, 3, [0.0], std_tolerance=10).rows  # 10 x 40 = 400 points: capped at 100
    assert row.allowed == 100.0


def test_the_verdict_counts_what_was_compared(tmp_path):
    base = Baseline("up", {"ks": TaskBaseline("acc", True, 90.0, 0.0, 1, "1", "fast", "d"),
                           "sid": TaskBaseline("acc", True, 50.0, 0.0, 1, "1", "fast", "d")}, "fp")
    recs = [ResultRecord(upstream="up", upstream_fingerprint="fp", task="ks", metric="acc", higher_is_better=True,
                         test=90.0, dev=90.0, seed=0, recipe_version="1", profile="fast", manifest_fingerprint="d")]
    text = compare(base, recs, allow_missing=True).format()
    assert "OK: no regression for up (1 task(s) checked; 1 metric(s) of 1 task(s) missing, not compared)" in text

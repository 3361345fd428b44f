import json

import pytest

from leaderboard.check import CheckError, compare, load_baseline, make_baseline
from leaderboard.store import ResultStore
from superbench.cli import main
from superbench.results import ResultRecord, write_record
from superbench.tasks import TASKS

BASE = {"ks": [80.0, 82.0], "asr": [20.0, 21.0]}  # acc (higher better), WER (lower better)


def rec(task, value, seed, upstream="tiny", recipe="1.0", profile="fast"):
    spec = TASKS.get(task)
    return ResultRecord(upstream, "fp1", task, spec.metric, spec.higher_is_better, value, value, seed, recipe,
                        profile=profile)


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
    assert ks["recipe_version"] == "1.0" and ks["profile"] == "fast"
    assert list(data["tasks"]) == ["ks", "asr"]


def test_passes_against_itself(baseline_file, db, capsys):
    assert main(["check", "--baseline", str(baseline_file), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "task" in out and "allowed" in out and "status" in out
    assert "OK: no regression for tiny (2 task(s) checked)" in out


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
    data["tasks"] = {"kss": data["tasks"]["asr"]}
    p.write_text(json.dumps(data))
    with pytest.raises(CheckError, match=r"tasks\.kss"):
        load_baseline(p)


def test_make_baseline_refuses_mixed_setups():
    mixed = records() + records({"ks": [60.0]}, profile="superb")
    with pytest.raises(CheckError, match="several setups"):
        make_baseline(mixed, "tiny")
    assert make_baseline(mixed, "tiny", profile="superb").tasks["ks"].mean == 60.0
    with pytest.raises(CheckError, match="no results for upstream 'nobody'"):
        make_baseline(mixed, "nobody")

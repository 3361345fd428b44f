import json
import math
from pathlib import Path

import numpy as np
import pytest

from leaderboard.check import (
    Baseline,
    CheckError,
    CheckReport,
    TaskBaseline,
    compare,
    load_baseline,
    make_baseline,
    resamples_for,
)
from leaderboard.store import ResultStore
from recipes.prepare.no_demo_part import NO_DEMO_PART
from superbench.cli import main
from superbench.records import ResultRecord, with_intervals, write_record
from superbench.tasks import TASKS
from superbench.uncertainty import UnitScores, value_of

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
    # every built-in task the demo has a part for (`--task all` on the demo skips the others, naming them)
    assert base.upstream == UP and set(base.tasks) == builtin_task_names - set(NO_DEMO_PART)
    assert all(len(tb.data) == 16 for tb in base.tasks.values())  # each task's manifest fingerprint
    # format 2: every metric keeps the per-unit scores a paired test needs, and they give its mean
    assert base.format_version == 2 and base.without_units() == []
    for tb in base.tasks.values():
        assert list(tb.units) == [0] and abs(value_of(tb.units[0]) - tb.mean) < 1e-3
    assert base.tasks["ks"].units[0][0].unit == "utterance" and base.tasks["sv"].units[0][0].unit == "trial pair"
    assert set(base.tasks["sf"].secondary["cer"].units) == {0}


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


# -- the paired rule: a drop must exceed the tolerance AND be significant on the same test units ----------------
N_UTT = 200
BITS = [1] * 160 + [0] * 40  # the baseline model: 80 % of 200 utterances right


def flip(bits, down=0, up=0):
    """`bits` with the first `down` right utterances scored wrong and the first `up` wrong ones right."""
    right = [i for i, b in enumerate(bits) if b][:down]
    wrong = [i for i, b in enumerate(bits) if not b][:up]
    return [1 - b if i in right or i in wrong else b for i, b in enumerate(bits)]


def acc_record(bits, seed=0, ids=None, units=True):
    """A ks record whose test accuracy is what its per-utterance `correct` bits say (with their interval)."""
    ids = ids or [f"utt{i:03d}" for i in range(len(bits))]
    scores = UnitScores.build("proportion", "utterance", ids, {"correct": bits})
    value = round(scores.value(), 4)
    r = ResultRecord("up", "fp", "ks", "acc", True, value, value, seed, "1", profile="fast", manifest_fingerprint="d",
                     created_at="2026-01-01T00:00:00+00:00", units={"acc": [scores.to_dict()]} if units else {})
    return with_intervals(r)


def sign_test_p(down: int, up: int) -> float:
    """Exact two-sided sign test over the discordant utterances: what approximate randomisation of a paired
    accuracy estimates (swapping a concordant pair changes nothing)."""
    k, n = min(down, up), down + up
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


@pytest.fixture
def unit_baseline(tmp_path):
    """A one-seed format-2 baseline of 200 utterances at 80 %, written by the CLI from its record."""
    d, path = tmp_path / "base-records", tmp_path / "baseline.json"
    write_record(acc_record(BITS), d)
    assert main(["check", "--write-baseline", str(path), "--upstream", "up", "--records", str(d)]) == 0
    return path


def check_cli(tmp_path, baseline, records, *extra):
    d = tmp_path / "current"
    for r in records:
        write_record(r, d)
    return main(["check", "--baseline", str(baseline), "--records", str(d), *extra])


def test_baseline_keeps_the_per_unit_scores_one_line_per_seed(unit_baseline, tmp_path):
    text = unit_baseline.read_text()
    data = json.loads(text)
    assert data["format_version"] == 2
    ks = data["tasks"]["ks"]
    assert list(ks["units"]) == ["0"] and ks["units"]["0"][0]["columns"] == {"correct": BITS}
    assert ks["units"]["0"][0]["n"] == N_UTT and ks["units"]["0"][0]["unit"] == "utterance"
    line = next(x for x in text.splitlines() if x.strip().startswith('"0": ['))
    assert json.loads(line.strip()[len('"0": '):]) == ks["units"]["0"]  # the seed's units on one line
    loaded = load_baseline(unit_baseline).tasks["ks"]
    assert loaded.units[0][0].value() == 80.0 and loaded.mean == 80.0
    # deterministic: the same baseline writes the same bytes
    base = load_baseline(unit_baseline)
    assert base.to_json() == load_baseline(unit_baseline).to_json() == text


def test_a_drop_within_test_set_noise_passes_and_says_so(unit_baseline, tmp_path, capsys):
    # 6 utterances now wrong, 3 now right: 1.5 points worse (beyond the 0.5 tolerance), p = 0.51 by the sign test
    capsys.readouterr()
    assert check_cli(tmp_path, unit_baseline, [acc_record(flip(BITS, down=6, up=3))]) == 0
    out = capsys.readouterr().out
    ks = next(line for line in out.splitlines() if line.startswith("ks "))
    assert ks.split()[-1] == "noise" and "-1.50" in ks and "200 utterances" in ks
    report = compare(load_baseline(unit_baseline), [acc_record(flip(BITS, down=6, up=3))])
    (row,) = report.rows
    assert row.worse == pytest.approx(1.5) and row.allowed == 0.5
    assert row.paired.p == pytest.approx(sign_test_p(6, 3), abs=0.05)  # 0.508
    assert row.paired.p_holm == row.paired.p  # one metric tested: Holm changes nothing
    assert "ks/acc: worse by 1.50 points, more than the 0.50 allowed, but not significant" in out
    assert f"a drop smaller than ±{row.paired.resolution:.2f} points cannot be told from test-set noise" in out
    assert "OK: no regression for up (1 task(s) checked); worse beyond the allowance but within test-set noise " \
           "(not significant at alpha 0.05): ks/acc" in out


def test_a_bootstrap_resample_of_the_baseline_passes():
    rng = np.random.default_rng(12)
    resampled = [BITS[j] for j in rng.integers(0, N_UTT, N_UTT)]  # a model as good, its errors elsewhere
    assert sum(resampled) == sum(BITS) - 10  # this draw happens to score 5 points lower
    report = compare(make_baseline([acc_record(BITS)], "up"), [acc_record(resampled)])
    (row,) = report.rows
    down = sum(1 for a, b in zip(BITS, resampled) if a > b)
    up = sum(1 for a, b in zip(BITS, resampled) if a < b)
    assert row.worse == pytest.approx(100 * (down - up) / N_UTT) and row.worse > row.allowed
    assert row.paired.p == pytest.approx(sign_test_p(down, up), abs=0.05) and row.paired.p > 0.05
    assert row.status == "noise" and report.exit_code == 0


def test_a_real_ten_point_drop_fails(unit_baseline, tmp_path, capsys):
    capsys.readouterr()
    assert check_cli(tmp_path, unit_baseline, [acc_record(flip(BITS, down=20))]) == 1
    out = capsys.readouterr().out
    ks = next(line for line in out.splitlines() if line.startswith("ks "))
    assert ks.split()[-1] == "REGRESSED" and "-10.00" in ks
    (row,) = compare(load_baseline(unit_baseline), [acc_record(flip(BITS, down=20))]).rows
    # 20 utterances wrong, none right: exact p = 2 / 2^20; 1,000 random swaps never reach it, p = 1 / 1001
    assert row.paired.p == pytest.approx(1 / 1001, abs=1e-6) and row.paired.p < 0.05
    assert row.paired.delta == -10.0 and row.paired.high < 0 < -row.paired.low
    assert f"FAIL: 1 task(s) regressed for up: ks (acc -10.00, Holm p {row.paired.p:.4f} < 0.05)" in out
    assert "paired test: the current per-unit test scores against the baseline's" in out


def test_a_one_seed_baseline_states_the_smallest_detectable_drop(unit_baseline):
    base = load_baseline(unit_baseline)
    # two utterances wrong: 1 point, beyond the tolerance; the old rule failed it, the paired test cannot tell
    report = compare(base, [acc_record(flip(BITS, down=2))])
    (row,) = report.rows
    assert row.status == "noise" and report.exit_code == 0 and row.paired.p == pytest.approx(0.5, abs=0.05)
    # the difference is -0.5 x (draws of the 2 changed utterances), a Binomial(200, 1 / 100): its 2.5 % and
    # 97.5 % quantiles are 0 and 5 draws, so the 95 % interval is [-2.5, 0] and its half-width 1.25
    assert (row.paired.low, row.paired.high, row.paired.resolution) == (-2.5, 0.0, 1.25)
    text = report.format()
    assert "one-seed baseline: its numbers carry the test set's noise only, not training noise" in text
    assert "the smallest drop this test set can tell from noise, per metric: ks/acc ±1.25 (half the paired " \
           "difference's CI)" in text
    # nothing changed: no difference to measure, the baseline's own interval gives the scale (Wald: ±5.54)
    same = compare(base, [acc_record(BITS)])
    (row,) = same.rows
    assert row.paired.identical and row.status == "ok"
    assert row.paired.baseline_half_width == pytest.approx(196 * (0.8 * 0.2 / N_UTT) ** 0.5, abs=0.6)
    assert f"ks/acc ±{row.paired.baseline_half_width:.2f} (no unit differs: half the baseline's own 95% CI)" \
        in same.format()
    assert "no unit differs" in next(line for line in same.format().splitlines() if line.startswith("ks "))


def test_a_format_1_baseline_keeps_todays_rule_and_says_so(unit_baseline, tmp_path, capsys):
    data = json.loads(unit_baseline.read_text())
    data["format_version"] = 1
    del data["tasks"]["ks"]["units"]
    old = tmp_path / "format1.json"
    old.write_text(json.dumps(data))
    assert load_baseline(old).format_version == 1 and load_baseline(old).tasks["ks"].units == {}
    capsys.readouterr()
    # the 1.5-point drop within noise that passes against the format-2 baseline fails by the size rule
    assert check_cli(tmp_path, old, [acc_record(flip(BITS, down=6, up=3))]) == 1
    out = capsys.readouterr().out
    ks = next(line for line in out.splitlines() if line.startswith("ks "))
    assert "size rule only: no baseline units" in ks and ks.split()[-1] == "REGRESSED"
    assert "size rule only (worse by more than `allowed`, no significance test) for ks/acc: the baseline " \
           "(format 1) keeps no per-unit scores; rewrite it with --write-baseline to test significance" in out
    assert "FAIL: 1 task(s) regressed for up: ks\n" in out


def test_current_records_without_units_fall_back_and_say_so(unit_baseline):
    report = compare(load_baseline(unit_baseline), [acc_record(flip(BITS, down=6, up=3), units=False)])
    (row,) = report.rows
    assert row.paired is None and row.status == "REGRESSED" and row.fallback_tag == "no current units"
    assert "for ks/acc: 1 of 1 current record(s) keep no per-unit scores of acc (re-run it" in report.format()


def test_other_test_units_fall_back_to_the_size_rule_with_the_reason(unit_baseline):
    other_ids = [f"other{i:03d}" for i in range(N_UTT)]  # same manifest fingerprint, yet other utterances
    report = compare(load_baseline(unit_baseline), [acc_record(flip(BITS, down=6, up=3), ids=other_ids)])
    (row,) = report.rows
    assert row.paired is None and row.status == "REGRESSED" and report.exit_code == 1
    text = report.format()
    assert "size rule only: units differ" in next(line for line in text.splitlines() if line.startswith("ks "))
    assert "for ks/acc: the current per-unit scores are not the baseline's test units: different test units: " \
           "200 utterances (ids" in text and "a paired test needs the same test set" in text


def test_seeds_pair_seed_by_seed_and_holm_covers_the_metrics_tested():
    base = make_baseline([acc_record(BITS, seed=0), acc_record(flip(BITS, down=1), seed=1)], "up")
    assert sorted(base.tasks["ks"].units) == [0, 1] and base.tasks["ks"].n == 2
    report = compare(base, [acc_record(flip(BITS, down=20), seed=0), acc_record(flip(BITS, down=21), seed=1)])
    (row,) = report.rows
    assert row.paired.pairing == "2 seeds paired seed by seed (0, 1)" and row.status == "REGRESSED"
    assert "seeds: 2 seeds paired seed by seed (0, 1) (ks/acc)" in report.format()
    assert row.paired.delta == pytest.approx(-10.0)


def test_a_baseline_whose_units_say_something_else_is_refused(unit_baseline, tmp_path, caplog):
    data = json.loads(unit_baseline.read_text())
    data["tasks"]["ks"]["units"]["0"][0]["columns"]["correct"] = [1] * N_UTT  # a perfect model beside 80 %
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(data))
    assert main(["check", "--baseline", str(bad), "--records", str(tmp_path)]) == 2
    assert "tasks.ks.units: the per-unit scores of acc give 100.0000, not the mean 80.0" in caplog.text
    data["tasks"]["ks"]["units"]["1"] = data["tasks"]["ks"]["units"]["0"]  # two seeds' units for n = 1
    bad.write_text(json.dumps(data))
    with pytest.raises(CheckError, match=r"tasks\.ks\.units: per-unit scores of 2 seed\(s\) for n = 1"):
        load_baseline(bad)


def test_alpha_out_of_range_is_refused(unit_baseline, tmp_path, caplog):
    for alpha in ("0.0001", "0.6", "nan"):
        assert check_cli(tmp_path, unit_baseline, [acc_record(BITS)], "--alpha", alpha) == 2, alpha
        assert "--alpha must be between 0.001 and 0.5" in caplog.text
        caplog.clear()
    # a stricter alpha: more resamples, so the smallest attainable p stays below it; the 10-point drop still fails
    report = compare(load_baseline(unit_baseline), [acc_record(flip(BITS, down=20))], alpha=0.001)
    (row,) = report.rows
    assert row.paired.resamples == resamples_for(1, 0.001) == 10000 and row.paired.p < 0.001
    assert row.status == "REGRESSED"


def test_an_insignificant_gain_is_no_improvement(unit_baseline):
    (row,) = compare(load_baseline(unit_baseline), [acc_record(flip(BITS, down=3, up=6))]).rows
    assert row.worse == pytest.approx(-1.5) and row.status == "ok"
    (row,) = compare(load_baseline(unit_baseline), [acc_record(flip(BITS, up=20))]).rows
    assert row.status == "improved"

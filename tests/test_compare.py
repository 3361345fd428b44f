"""`superbench compare A B`: paired tests between two models from records built by hand, so every expected
number is computed here independently (accuracy differences by hand, p-values by `paired_test` called directly,
Holm by hand, the SUPERB score difference from the formula over the same draws)."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from leaderboard.compare import CompareError, compare_models
from leaderboard.score import paper_references
from leaderboard.store import ResultStore
from superbench.cli import main
from superbench.records import ResultRecord
from superbench.tasks import TASKS
from superbench.uncertainty import UnitScores, bootstrap, paired_test

N = 60


def ids(n: int, prefix: str = "utt") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def bits(n: int, correct: int, seed: int) -> list[int]:
    """n correctness bits with exactly `correct` ones, in a seeded order."""
    out = np.zeros(n, dtype=int)
    out[np.random.default_rng(seed).choice(n, correct, replace=False)] = 1
    return out.tolist()


def proportion(b: list[int], prefix: str = "utt") -> UnitScores:
    return UnitScores.build("proportion", "utterance", ids(len(b), prefix), {"correct": b})


def ratio(errors: list[int], total: list[int]) -> UnitScores:
    return UnitScores.build("ratio", "utterance", ids(len(errors)), {"errors": errors, "total": total})


def rec(upstream: str, task: str, units: UnitScores | None, seed: int = 0, data: str = "d1",
        secondary: dict[str, UnitScores] | None = None, value: float | None = None, fp: str | None = None,
        created_at: str = "2026-01-01T00:00:00+00:00") -> ResultRecord:
    """A record whose test value is its units' value (or `value` for a record without units)."""
    spec = TASKS.get(task)
    test = units.value() if units is not None else value
    kept = {} if units is None else {spec.metric: [units.to_dict()]}
    extra = {}
    for name, u in (secondary or {}).items():
        extra[name] = {"dev": u.value(), "test": u.value()}
        kept[name] = [u.to_dict()]
    return ResultRecord(upstream, fp or f"fp-{upstream}", task, spec.metric, spec.higher_is_better, test, test, seed,
                        "1", profile="ci", manifest_fingerprint=data, corpus="superbench-demo", units=kept,
                        secondary=extra, created_at=created_at)


KS_A, KS_B = bits(N, 45, 1), bits(N, 30, 2)  # 75 % against 50 %
IC_A, IC_B = bits(N, 40, 3), bits(N, 37, 4)  # 66.7 % against 61.7 %


def two_models() -> list[ResultRecord]:
    return [rec("fbank", "ks", proportion(KS_B)), rec("mine", "ks", proportion(KS_A)),
            rec("fbank", "ic", proportion(IC_B)), rec("mine", "ic", proportion(IC_A))]


def test_the_difference_and_p_values_are_those_of_the_paired_test_on_the_units():
    result = compare_models(two_models(), "mine", "fbank")
    ks = next(r for r in result.rows if r.task == "ks")
    assert ks.test.delta == pytest.approx(100 * (45 - 30) / N)  # 25 points, by hand
    assert (ks.test.a, ks.test.b) == (pytest.approx(75.0), pytest.approx(50.0))
    direct = paired_test([[proportion(KS_A)]], [[proportion(KS_B)]], 1000, 0.95, 0)
    assert (ks.test.low, ks.test.high) == (direct.low, direct.high)
    assert (ks.test.p_bootstrap, ks.test.p_permutation) == (direct.p_bootstrap, direct.p_permutation)
    assert ks.test.low < 25.0 < ks.test.high and ks.test.unit == "utterance" and ks.test.n == N
    assert ks.better == "mine" and ks.metric == "acc" and ks.higher_is_better
    assert ks.pairing.note == "one seed paired (0): the test units' noise only, not training noise"


def test_holm_over_the_main_metrics_matches_a_hand_computation():
    result = compare_models(two_models(), "mine", "fbank", alpha=0.05)
    p = {r.task: r.test.p_permutation for r in result.main_rows}
    assert p["ks"] < p["ic"]  # 25 points apart against 5: ks has the smaller p
    first = min(1.0, 2 * p["ks"])
    second = max(first, min(1.0, p["ic"]))
    holm = {r.task: r.p_holm for r in result.main_rows}
    assert holm == {"ks": pytest.approx(first, abs=1e-6), "ic": pytest.approx(second, abs=1e-6)}
    assert {r.task: r.significant for r in result.main_rows} == {"ks": first < 0.05, "ic": second < 0.05}
    assert result.rows[0].significant is True and result.rows[1].significant is False  # ks clear, ic noise
    assert result.verdict() == "2 task(s) compared, 1 significant at α=0.05 after Holm's correction: ks (mine better)"


def test_lower_is_better_metrics_name_the_side_with_fewer_errors():
    total = [10] * N
    fewer, more = [1] * N, [3] * N  # PER 10 % against 30 %
    records = [rec("a", "pr", ratio(fewer, total)), rec("b", "pr", ratio(more, total))]
    row = compare_models(records, "a", "b").rows[0]
    assert row.test.delta == pytest.approx(10.0 - 30.0) and row.better == "a" and not row.higher_is_better
    assert compare_models(records, "b", "a").rows[0].better == "a"


def test_several_seeds_pair_seed_by_seed_and_say_so():
    records = [rec("a", "ks", proportion(bits(N, 40 + s, 10 + s)), seed=s) for s in (0, 1, 2)]
    records += [rec("b", "ks", proportion(bits(N, 30 + s, 20 + s)), seed=s) for s in (1, 2)]
    row = compare_models(records, "a", "b").rows[0]
    assert row.pairing.pairs == ((1, 1), (2, 2))
    assert row.pairing.note == ("2 seeds paired seed by seed (1, 2); unpaired seeds left out "
                                 "(first model's seeds 0, 1, 2, second's seeds 1, 2)")
    assert row.test.a == pytest.approx(100 * (41 + 42) / 2 / N, abs=1e-4)  # mean over the paired seeds only


def test_a_secondary_metric_is_an_extra_row_outside_the_holm_family():
    f1_a = UnitScores.build("mean", "utterance", ids(N), {"value": [80.0] * 30 + [100.0] * 30})
    f1_b = UnitScores.build("mean", "utterance", ids(N), {"value": [70.0] * 30 + [90.0] * 30})
    cer_a, cer_b = ratio([2] * N, [20] * N), ratio([4] * N, [20] * N)
    records = [rec("a", "sf", f1_a, secondary={"cer": cer_a}), rec("b", "sf", f1_b, secondary={"cer": cer_b})]
    result = compare_models(records, "a", "b")
    main, cer = result.rows
    assert (main.column, cer.column, cer.label) == ("sf", "sf/cer", "sf cer")
    assert main.test.delta == pytest.approx(10.0) and cer.test.delta == pytest.approx(10.0 - 20.0)
    assert cer.better == "a" and cer.p_holm is None and cer.significant is None
    direct = paired_test([[cer_a]], [[cer_b]], 1000, 0.95, 0)
    assert cer.test.p_permutation == direct.p_permutation
    assert "   sf cer" not in result.format() and "  sf cer" in result.format()  # indented under its task


def test_different_test_sets_and_missing_units_are_refused_with_the_reason():
    records = [rec("a", "ks", proportion(KS_A)), rec("b", "ks", proportion(KS_B), data="d2"),
               rec("a", "ic", proportion(IC_A)), rec("b", "ic", proportion(IC_B, prefix="other")),
               rec("a", "pr", ratio([1] * N, [10] * N)), rec("b", "pr", None, value=12.0),
               rec("a", "sid", proportion(KS_A))]
    result = compare_models(records, "a", "b")
    assert result.rows == [] and result.exit_code == 2
    why = {r.task: r.reason for r in result.refused}
    assert why["ks"].startswith("different data (manifest fingerprints): a on data d1, recipe 1, profile ci")
    assert "b on data d2, recipe 1, profile ci; a paired test needs the same test set" in why["ks"]
    assert "different test units" in why["ic"] and "a paired test needs the same test set" in why["ic"]
    assert why["pr"] == ("b's records keep no per-unit test scores (re-run it, or add them to its record file with "
                         "`superbench results ci` where its predictions were kept)")
    assert why["sid"] == "b has no records of sid"


def test_unknown_models_and_fingerprints_are_usage_errors():
    with pytest.raises(CompareError, match="no results of upstream 'nobody' in the store.*upstreams there: fbank"):
        compare_models(two_models(), "nobody", "fbank")
    with pytest.raises(ValueError, match="--fingerprint 'zz' matches no fingerprint of upstream 'mine'"):
        compare_models(two_models(), "mine@zz", "fbank")
    older = rec("mine", "ks", proportion(KS_B), fp="fp-old", created_at="2025-01-01T00:00:00+00:00")
    result = compare_models(two_models() + [older], "mine@fp-old", "fbank", tasks=["ks"])
    assert result.a.fingerprint == "fp-old" and result.rows[0].test.delta == pytest.approx(0.0)
    assert result.a.chosen == "chosen as mine@fp-old, of 2 fingerprints in the store"
    newest = compare_models(two_models() + [older], "mine", "fbank")
    assert newest.a.fingerprint == "fp-mine" and newest.b.chosen == "the only fingerprint in the store"
    assert newest.a.chosen == "the newest of 2 fingerprints in the store; pick another with mine@PREFIX"


def test_the_superb_score_difference_resamples_each_task_with_the_same_draw_for_both():
    result = compare_models(two_models(), "mine", "fbank", reference="paper")
    (score,) = result.scores
    refs = paper_references()

    def superb(ks: np.ndarray, ic: np.ndarray) -> np.ndarray:  # the formula by hand, over ks and ic
        s = [1000 * (v - refs[t].fbank) / (refs[t].sota - refs[t].fbank) for t, v in (("ks", ks), ("ic", ic))]
        return (s[0] + s[1]) / 2

    assert score.tasks == ("ks", "ic") and score.reference == "paper"
    assert score.a == pytest.approx(superb(np.float64(75.0), np.float64(100 * 40 / N)))
    assert score.b == pytest.approx(superb(np.float64(50.0), np.float64(100 * 37 / N)))

    def draws(ks_bits, ic_bits):
        return superb(bootstrap([[proportion(ks_bits)]], 1000, (0, zlib.crc32(b"ks"))),
                      bootstrap([[proportion(ic_bits)]], 1000, (0, zlib.crc32(b"ic"))))

    diff = draws(KS_A, IC_A) - draws(KS_B, IC_B)
    assert (score.low, score.high) == pytest.approx(tuple(np.percentile(diff, [2.5, 97.5])))
    observed = score.a - score.b
    assert score.p_bootstrap == pytest.approx((1 + np.sum(np.abs(diff - observed) >= abs(observed) - 1e-12)) / 1001)
    # the same draw for both: a model against itself differs by exactly nothing in every draw
    same = compare_models(two_models(), "mine", "mine", reference="paper").scores[0]
    assert (same.low, same.high, same.a - same.b) == (0.0, 0.0, 0.0) and same.p_bootstrap == 1.0


def test_the_cli_prints_a_table_and_a_json_report(tmp_path, capsys):
    db = tmp_path / "lb.db"
    ResultStore(db).add_many(two_models())
    assert main(["compare", "mine", "fbank", "--db", str(db), "--reference", "paper"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert all(h in header for h in ("A-B [95% CI]", "p boot", "p perm", "p Holm", "signif. (α=0.05)", "better"))
    ks_line = next(line for line in out.splitlines() if line.startswith("ks "))
    assert "75.00" in ks_line and "50.00" in ks_line and "+25.00 [" in ks_line and "mine" in ks_line
    assert "Holm's step-down correction of p perm" in out and "SUPERB score over ks,ic (paper ref" in out
    assert "seeds: one seed paired (0)" in out

    assert main(["compare", "mine", "fbank", "--db", str(db), "--format", "json", "--task", "ks"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"a", "b", "alpha", "resamples", "level", "seed", "correction", "decision", "reference",
                         "comparisons", "refused", "superb_score", "sg_score", "ood_asr", "notes"}
    assert data["correction"] == "holm" and data["decision"] == "p_permutation"
    assert data["a"]["upstream"] == "mine" and data["a"]["fingerprint"] == "fp-mine"
    (row,) = data["comparisons"]
    assert set(row) == {"label", "task", "column", "metric", "role", "higher_is_better", "data", "recipe_version",
                        "profile", "a", "b", "delta", "ci", "p_bootstrap", "p_permutation", "exact", "p_holm",
                        "significant", "better", "unit", "n", "seeds", "seed_note"}
    assert row["delta"] == pytest.approx(25.0) and row["p_holm"] == row["p_permutation"]  # one task: Holm = p
    assert row["seeds"] == [[0, 0]] and row["unit"] == "utterance" and row["n"] == N
    assert data["superb_score"][0]["tasks"] == ["ks"]


def test_the_cli_exits_2_with_the_reasons_when_nothing_could_be_compared(tmp_path, capsys, caplog):
    db = tmp_path / "lb.db"
    ResultStore(db).add_many([rec("a", "ks", proportion(KS_A)), rec("b", "ks", proportion(KS_B), data="d2")])
    assert main(["compare", "a", "b", "--db", str(db)]) == 2
    out = capsys.readouterr().out
    assert "not compared: ks: different data (manifest fingerprints)" in out and "nothing compared" in out
    assert "nothing compared between a and b: ks: different data" in caplog.text


def test_help_says_what_the_tests_and_the_correction_are(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "paired bootstrap" in text and "approximate randomisation" in text
    assert "Holm's step-down method" in text and "permutation p-values" in text


@pytest.mark.slow
def test_compare_two_upstreams_on_the_tiny_demo(tmp_path, capsys):
    db, results = tmp_path / "lb.db", tmp_path / "results"
    for upstream in ("fbank", "hubert-tiny-random"):
        assert main(["run", "--upstream", upstream, "--task", "ks", "--data", "demo:tiny", "--profile", "ci",
                     "--results", str(results), "--db", str(db)]) == 0
    records = {r.upstream: r for r in ResultStore(db).records()}
    assert all(r.test_ci is not None and r.unit_scores() is not None for r in records.values())
    capsys.readouterr()
    assert main(["compare", "fbank", "hubert-tiny-random", "--db", str(db), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (row,) = data["comparisons"]
    fbank, tiny = records["fbank"], records["hubert-tiny-random"]
    assert row["task"] == "ks" and row["delta"] == pytest.approx(fbank.test - tiny.test, abs=1e-3)
    direct = paired_test([fbank.unit_scores()], [tiny.unit_scores()])
    assert (row["p_permutation"], row["ci"]) == (direct.p_permutation, [direct.low, direct.high])
    assert row["p_holm"] == row["p_permutation"] and data["reference"] == "local"
    if fbank.test >= tiny.test:  # FBANK is also the best: SOTA = FBANK, so the local score leaves ks out
        assert data["superb_score"] == [] and data["notes"] == [
            "no SUPERB score compared over ks: no local reference point for any of them (ks: no model beats 'fbank' "
            "on its test set (SOTA = FBANK))"]
    else:
        assert data["superb_score"][0]["b"] == pytest.approx(1000.0)
    assert main(["compare", "fbank", "hubert-tiny-random", "--db", str(db)]) == 0
    assert next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ks "))
    assert main(["results", "ci", "--results", str(results)]) == 0  # every record already has its interval
    assert "2 already had them, 0 left without" in capsys.readouterr().out


def test_local_reference_points_are_measured_on_the_compared_test_set():
    records = [rec("fbank", "ks", proportion(bits(N, 30, 5))), rec("a", "ks", proportion(KS_A)),
               rec("b", "ks", proportion(bits(N, 36, 6))), rec("c", "ks", None, value=80.0),
               rec("c", "ks", None, value=99.0, data="elsewhere")]  # another test set: not its SOTA
    (score,) = compare_models(records, "a", "b", reference="local").scores
    # FBANK = fbank's 50 %, SOTA = the best model on this test set (c, 80 %, without per-unit scores)
    assert (score.a, score.b) == (pytest.approx(1000 * (75 - 50) / 30), pytest.approx(1000 * (60 - 50) / 30))
    assert compare_models(records, "a", "b").reference == "local"  # the demo corpus: local by default
    no_fbank = compare_models(records[1:], "a", "b", reference="local")
    assert no_fbank.scores == [] and no_fbank.notes == [
        "no SUPERB score compared over ks: no local reference point for any of them (ks: no 'fbank' result on its "
        "test set)"]


def test_the_seed_note_names_the_seeds_left_unpaired():
    from leaderboard.pairing import pair_seeds

    note = pair_seeds([0, 1], [0]).note
    assert note == ("one seed paired (0): the test units' noise only, not training noise; unpaired seeds left out "
                    "(first model's seeds 0, 1, second's seed 0)")
    assert pair_seeds([3], [5]).pairs == ((3, 5),) and "no shared seed" in pair_seeds([3], [5]).note

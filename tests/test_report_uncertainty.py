"""The report's uncertainty: error bars from the bootstrap interval over test units (± std only without
per-unit scores), a Holm-corrected pairwise significance matrix per task and test set, and the family
table's "clear of noise" from the paired test.

Records are built by hand with their per-unit scores, so every expectation comes from
`superbench.uncertainty` called directly on the same units (and Holm's correction by hand)."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from leaderboard.report import bar_ranges, build_report, record_labels, task_bar_figure
from leaderboard.significance import cell_html, matrix_html, significance_matrices
from leaderboard.store import ResultStore
from leaderboard.table import build_leaderboard
from superbench.cli import main
from superbench.records import ResultRecord
from superbench.tasks import TASKS
from superbench.uncertainty import UnitScores, confidence_interval, paired_test
from upstreams.pretrain.families import compare_records, evidence, families_markdown, holm_over_tasks

N = 120
IDS = [f"utt{i:03d}" for i in range(N)]


def bits(accuracy: float, seed: int) -> list[int]:
    """N per-utterance correct bits with about `accuracy` of them 1, reproducibly."""
    return (np.random.default_rng(seed).random(N) < accuracy).astype(int).tolist()


def ks_units(correct: list[int]) -> UnitScores:
    return UnitScores.build("proportion", "utterance", IDS, {"correct": correct})


def pr_units(errors: list[int], total: list[int]) -> UnitScores:
    return UnitScores.build("ratio", "utterance", IDS, {"errors": errors, "total": total})


def record(upstream: str, task: str, units: dict[str, UnitScores] | None, seed: int = 0, value: float | None = None,
           data: str = "data-ks", secondary: dict[str, float] | None = None) -> ResultRecord:
    """A record whose test value is its units' (or `value` without units)."""
    spec = TASKS.get(task)
    test = units[spec.metric].value() if units else value
    second = {name: {"dev": v, "test": v} for name, v in (secondary or {}).items()}
    if units:
        second = {name: {"dev": u.value(), "test": u.value()} for name, u in units.items() if name != spec.metric}
    return ResultRecord(upstream, f"fp-{upstream}", task, spec.metric, spec.higher_is_better, test, test, seed, "1",
                        profile="ci", corpus="superbench-demo", manifest_fingerprint=data, secondary=second,
                        units={name: [u.to_dict()] for name, u in (units or {}).items()})


# -- error bars ----------------------------------------------------------------------------------------------
def test_a_bar_with_per_unit_scores_spans_the_bootstrap_interval_of_its_seeds_mean():
    seeds = [ks_units(bits(0.7, s)) for s in (0, 1)]
    records = [record("hubert", "ks", {"acc": u}, seed=s) for s, u in enumerate(seeds)]
    records += [record("fbank", "ks", None, seed=s, value=v) for s, v in enumerate((40.0, 50.0, 60.0))]
    board = build_leaderboard(records, reference="local")
    bars = dict(bar_ranges(board, records)["ks"])
    ci = confidence_interval([[u] for u in seeds])  # every seed's units, one draw shared by both
    hubert = bars[("hubert", "ci", "1")]
    assert (hubert.kind, hubert.low, hubert.high) == ("ci", ci.low, ci.high)
    assert hubert.mean == pytest.approx((seeds[0].value() + seeds[1].value()) / 2)
    assert (hubert.unit, hubert.units, hubert.seeds) == ("utterance", N, 2)
    assert hubert.low < hubert.mean < hubert.high and hubert.high - hubert.low > 5  # 120 utterances: wide
    fbank = bars[("fbank", "ci", "1")]  # no per-unit scores: today's mean ± std over seeds (std 10)
    assert (fbank.kind, fbank.mean, fbank.low, fbank.high) == ("std", 50.0, 40.0, 60.0)
    assert (hubert.describe(), fbank.describe()) == ("95 % CI over test utterances", "± std over seeds")

    (ax,) = [a for a in task_bar_figure(board, records).axes if a.get_title()]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["95 % CI over test utterances",
                                                                   "± std over seeds", "one seed"]
    label = next(t for t in ax.texts if t.get_text() == f"{hubert.mean:.1f}")
    assert label.xy[0] == pytest.approx(ci.high)  # the number sits past the interval's end


def test_a_row_where_one_seed_lacks_units_keeps_the_std_bar():
    with_units = record("hubert", "ks", {"acc": ks_units(bits(0.7, 0))}, seed=0)
    without = record("hubert", "ks", None, seed=1, value=with_units.test + 4.0)
    board = build_leaderboard([with_units, without], reference="local")
    (_, bar), = bar_ranges(board, [with_units, without])["ks"]
    assert (bar.kind, bar.low, bar.high) == ("std", pytest.approx(bar.mean - 8 ** 0.5),
                                             pytest.approx(bar.mean + 8 ** 0.5))


def test_a_secondary_metric_gets_the_interval_of_its_own_units():
    rng = np.random.default_rng(3)
    f1 = [UnitScores.build("mean", "utterance", IDS, {"value": rng.uniform(40, 100, N).round(2).tolist()})
          for _ in range(2)]
    total = rng.integers(5, 20, N)
    cer = [pr_units(rng.integers(0, 4, N).tolist(), total.tolist()) for _ in range(2)]
    records = [record("hubert", "sf", {"f1": f, "cer": c}, seed=s) for s, (f, c) in enumerate(zip(f1, cer))]
    bars = bar_ranges(build_leaderboard(records, reference="local"), records)
    (_, main_bar), = bars["sf"]
    (_, cer_bar), = bars["sf/cer"]
    f1_ci, cer_ci = confidence_interval([[u] for u in f1]), confidence_interval([[u] for u in cer])
    assert (main_bar.low, main_bar.high) == (f1_ci.low, f1_ci.high)
    assert (cer_bar.kind, cer_bar.low, cer_bar.high) == ("ci", cer_ci.low, cer_ci.high)
    assert cer_bar.mean == pytest.approx(np.mean([c.value() for c in cer]))


# -- the significance matrix ---------------------------------------------------------------------------------
def holm_by_hand(p: list[float]) -> list[float]:
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_the_matrix_holds_each_pairs_paired_test_holm_corrected_and_marks_only_real_differences():
    strong, weak = ks_units(bits(0.85, 10)), ks_units(bits(0.55, 11))
    records = [record("strong", "ks", {"acc": strong}), record("weak", "ks", {"acc": weak}),
               record("weak-copy", "ks", {"acc": weak}), record("old", "ks", None, value=50.0)]
    (m,) = significance_matrices(records, order=["strong", "weak", "weak-copy"])
    assert m.models == ["strong", "weak", "weak-copy"] and m.without_units == ["old"]
    direct = {(0, 1): paired_test([[strong]], [[weak]]), (0, 2): paired_test([[strong]], [[weak]]),
              (1, 2): paired_test([[weak]], [[weak]])}
    adjusted = dict(zip(direct, holm_by_hand([t.p_permutation for t in direct.values()])))
    for (i, j), t in direct.items():
        cell, mirror = m.cells[(i, j)], m.cells[(j, i)]
        assert (cell.delta, cell.low, cell.high, cell.p) == (t.delta, t.low, t.high, t.p_permutation)
        assert (mirror.delta, mirror.low, mirror.high) == (-t.delta, -t.high, -t.low)
        assert cell.p_adjusted == pytest.approx(adjusted[(i, j)]) == mirror.p_adjusted
        assert cell.significant == (adjusted[(i, j)] < 0.05)
    assert direct[(0, 1)].delta > 20 and m.cells[(0, 1)].significant and m.cells[(0, 1)].better
    assert m.cells[(1, 0)].significant and m.cells[(1, 0)].better is False
    same = m.cells[(1, 2)]  # a model against an identical copy: no difference, never significant
    assert (same.delta, same.p, same.significant, same.better) == (0.0, 1.0, False, None)
    assert "better *" in cell_html(m.cells[(0, 1)]) and "class='better'" in cell_html(m.cells[(0, 1)])
    assert "worse *" in cell_html(m.cells[(1, 0)]) and "n.s." in cell_html(same)
    page = matrix_html(m)
    assert "No per-unit scores (not tested): old." in page and "over the 3 pair(s) of this table" in page


def test_lower_is_better_metrics_call_the_lower_error_rate_better():
    total = [10] * N
    good = pr_units([int(x) for x in np.random.default_rng(1).integers(0, 2, N)], total)  # ~5 % PER
    bad = pr_units([int(x) for x in np.random.default_rng(2).integers(1, 5, N)], total)  # ~25 % PER
    records = [record("good", "pr", {"per": good}, data="data-pr"), record("bad", "pr", {"per": bad}, data="data-pr")]
    (m,) = significance_matrices(records, order=["good", "bad"])
    cell = m.cells[(0, 1)]
    assert cell.delta == paired_test([[good]], [[bad]]).delta < 0  # good's PER minus bad's: negative ...
    assert cell.significant and cell.better  # ... and that is better
    assert "PR PER% ↓" in m.title


def test_a_pair_significant_at_5_percent_need_not_be_at_a_stricter_alpha():
    a, b = ks_units(bits(0.62, 20)), ks_units(bits(0.5, 21))
    records = [record("a", "ks", {"acc": a}), record("b", "ks", {"acc": b})]
    p = paired_test([[a]], [[b]]).p_permutation
    assert 0.001 < p < 0.05  # one pair: Holm leaves p as it is
    loose, strict = (significance_matrices(records, alpha=x)[0].cells[(0, 1)] for x in (0.05, 0.001))
    assert (loose.significant, strict.significant) == (True, False)
    with pytest.raises(ValueError, match="alpha 1.5 is not between 0 and 1"):
        significance_matrices(records, alpha=1.5)


def test_matrices_are_per_test_set_and_a_task_with_one_model_says_so():
    ks = [record("a", "ks", {"acc": ks_units(bits(0.7, 0))}), record("b", "ks", {"acc": ks_units(bits(0.6, 1))})]
    other = UnitScores.build("proportion", "utterance", [f"x{i}" for i in range(N)], {"correct": bits(0.5, 2)})
    lone = [record("a", "ks", {"acc": other}, data="data-ks-2"), record("b", "ks", None, value=40.0, data="data-ks-2")]
    probe = [replace(record("a", "ks", {"acc": ks_units(bits(0.7, 0))}), layer=3)]  # not a model of the matrix
    matrices = significance_matrices(ks + lone + probe)
    assert [(m.data, m.models) for m in matrices] == [("data-ks", ["a", "b"]), ("data-ks-2", ["a"])]
    assert "Fewer than two models with per-unit scores on this test set (a)" in matrix_html(matrices[1])
    assert "No per-unit scores (not tested): b." in matrix_html(matrices[1])


def test_the_report_shows_error_bars_and_the_matrix_and_cli_alpha_reaches_it(tmp_path, capsys):
    records = [record("strong", "ks", {"acc": ks_units(bits(0.85, 10))}),
               record("weak", "ks", {"acc": ks_units(bits(0.55, 11))})]
    page = build_report(records, reference="local")
    assert "<h2>Pairwise significance</h2>" in page and "<table class='significance'>" in page
    assert "significance level α = 0.05" in page and "Black error bars: the 95 % percentile-bootstrap" in page
    board = build_leaderboard(records, reference="local")
    labels = record_labels(board, records)
    assert [m.models for m in significance_matrices(records, labels, list(board.frame["label"]))] == \
        [["strong", "weak"]]  # the table's order: best first
    db = tmp_path / "lb.db"
    ResultStore(db).add_many(records)
    out = tmp_path / "r.html"
    assert main(["report", "--db", str(db), "-o", str(out), "--alpha", "0.01"]) == 0
    text = out.read_text()
    assert "significance level α = 0.01" in text and "α = 0.01: green" in text
    assert re.search(r"superbench report --db \S+ -o \S+ --alpha 0\.01", text)
    with pytest.raises(SystemExit) as exc:
        main(["report", "--db", str(db), "-o", str(out), "--alpha", "2"])
    assert exc.value.code == 2 and "2 is not between 0 and 1" in capsys.readouterr().err


# -- the family table ----------------------------------------------------------------------------------------
def family_row(tasks: dict) -> dict:
    return {"family": "apc", "kind": "generative", "parameters": 1000, "steps": 10, "wall_seconds": 12.3,
            "first_loss": 0.8, "final_loss": 0.6, "tasks": tasks,
            "beats_random_on_pr": tasks.get("pr", {}).get("better"),
            "other_tasks_beaten": [t for t, v in tasks.items() if t != "pr" and v["better"]]}


def test_a_family_is_clear_of_noise_by_the_paired_test_and_says_the_difference_ci_and_p():
    trained, init = ks_units(bits(0.85, 30)), ks_units(bits(0.45, 31))
    win = compare_records([record("apc-trained", "ks", {"acc": trained})],
                          [record("apc-random-init", "ks", {"acc": init})], higher_is_better=True)
    t = paired_test([[trained]], [[init]])
    assert (win["rule"], win["delta"], win["low"], win["high"], win["p"]) == ("paired", t.delta, t.low, t.high,
                                                                              t.p_permutation)
    assert win["clear"] and win["better"] and t.p_permutation < 0.05
    tie = compare_records([record("apc-trained", "ks", {"acc": init})],
                          [record("apc-random-init", "ks", {"acc": init})], higher_is_better=True)
    assert (tie["rule"], tie["delta"], tie["p"], tie["clear"]) == ("paired", 0.0, 1.0, False)

    cells = holm_over_tasks({"ks": win})
    md = families_markdown([family_row(cells)], ["ks"])
    assert f"{t.a:.2f} vs {t.b:.2f} ✓ (p < 0.001) |" in md
    assert (f"KS trained − random init {t.delta:+.2f} points, 95 % CI [{t.low:+.2f}, {t.high:+.2f}], p < 0.001 "
            f"(paired test over {N} test utterances; one seed paired (0)") in md and "clear of noise" in md
    tied = families_markdown([family_row(holm_over_tasks({"ks": {**tie, "better": True}}))], ["ks"])
    assert "(in noise, p = 1.000)" in tied and "other tasks better: ks (in noise)" in tied
    assert "p = 1.000 (paired test over" in tied and "not clear of noise" in tied


def test_holm_over_a_familys_tasks_decides_and_old_records_keep_the_spread_rule():
    a, b = ks_units(bits(0.62, 20)), ks_units(bits(0.5, 21))
    moderate = compare_records([record("t", "ks", {"acc": a})], [record("r", "ks", {"acc": b})], True)
    strong = compare_records([record("t", "ks", {"acc": ks_units(bits(0.9, 40))})],
                             [record("r", "ks", {"acc": ks_units(bits(0.3, 41))})], True)
    old = compare_records([record("t", "er", None, value=v, seed=s) for s, v in enumerate((50.0, 52.0))],
                          [record("r", "er", None, value=v, seed=s) for s, v in enumerate((40.0, 41.0))], True)
    cells = holm_over_tasks({"ks": moderate, "sid": strong, "er": old})
    expected = holm_by_hand([moderate["p"], strong["p"]])
    assert (cells["ks"]["p_holm"], cells["sid"]["p_holm"]) == (pytest.approx(expected[0]), pytest.approx(expected[1]))
    assert cells["ks"]["clear"] == (expected[0] < 0.05) and cells["ks"]["tasks_tested"] == 2
    # the old rule, unchanged where no per-unit scores exist: 51 vs 40.5, 10.5 > sqrt(2) + sqrt(0.5)
    assert (cells["er"]["rule"], cells["er"]["clear"]) == ("spread", True) and "p" not in cells["er"]
    assert evidence("er", cells["er"]) == ("ER by the seeds' spread rule (no per-unit test scores in every "
                                           "record): the means differ by more than the two stds added, clear "
                                           "of the seeds' spread")
    assert f"Holm-adjusted over 2 tasks (unadjusted p = {moderate['p']:.3f})" in evidence("ks", cells["ks"])

"""The SUPERB score with its interval (leaderboard.score.score_interval) and the leaderboard's intervals beside
every cell that has per-unit scores; expected values recomputed here from the same units and draws."""

from __future__ import annotations

import csv
import io
import json
import math
import zlib
from dataclasses import replace

import numpy as np
import pytest

from leaderboard.score import metric_draws, paper_references, score_interval, superb_score, task_stream
from leaderboard.store import ResultStore
from leaderboard.table import build_leaderboard
from superbench.cli import main
from superbench.records import ResultRecord, with_intervals
from superbench.tasks import TASKS
from superbench.uncertainty import UnitScores, bootstrap, confidence_interval

N = 80


def ids(n: int) -> list[str]:
    return [f"utt{i:03d}" for i in range(n)]


def bits(correct: int, seed: int, n: int = N) -> UnitScores:
    out = np.zeros(n, dtype=int)
    out[np.random.default_rng(seed).choice(n, correct, replace=False)] = 1
    return UnitScores.build("proportion", "utterance", ids(n), {"correct": out.tolist()})


def counts(errors: list[int], total: list[int]) -> UnitScores:
    return UnitScores.build("ratio", "utterance", ids(len(errors)), {"errors": errors, "total": total})


def rec(upstream: str, task: str, units: UnitScores | None, seed: int = 0, value: float | None = None,
        secondary: dict[str, UnitScores] | None = None) -> ResultRecord:
    spec = TASKS.get(task)
    test = units.value() if units is not None else value
    kept = {} if units is None else {spec.metric: [units.to_dict()]}
    extra = {}
    for name, u in (secondary or {}).items():
        extra[name] = {"dev": u.value(), "test": u.value()}
        kept[name] = [u.to_dict()]
    return ResultRecord(upstream, f"fp-{upstream}", task, spec.metric, spec.higher_is_better, test, test, seed, "1",
                        profile="superb", manifest_fingerprint=f"data-{task}", corpus="librispeech", units=kept,
                        secondary=extra)


def rng_errors(seed: int, rate: float) -> tuple[list[int], list[int]]:
    g = np.random.default_rng(seed)
    total = g.integers(5, 30, N)
    return g.binomial(total, rate).tolist(), total.tolist()


def test_the_score_interval_is_the_official_formula_over_independent_per_task_draws():
    ks = [[bits(70, 1)], [bits(66, 2)]]  # two seeds, sharing each draw of the utterances
    pr = [[counts(*rng_errors(3, 0.1))], [counts(*rng_errors(4, 0.12))]]
    f1 = UnitScores.build("mean", "utterance", ids(N), {"value": np.linspace(60, 100, N).tolist()})
    cer = counts(*rng_errors(5, 0.3))
    units = {"ks": ks, "pr": pr, "sf": [[f1]], "sf/cer": [[cer]]}
    refs = paper_references()
    got = score_interval(units, refs, "paper")

    point = {c: float(np.mean([s[0].value() for s in seeds])) for c, seeds in units.items()}
    assert got.value == pytest.approx(superb_score(point, refs, "paper").score)
    # recomputed: every task on its own stream (seed 0, crc32 of the task); SF's two metrics share SF's draw
    draws = {c: bootstrap(units[c], 1000, (0, zlib.crc32(c.split("/")[0].encode()))) for c in units}
    per_draw = [superb_score({c: draws[c][i] for c in units}, refs, "paper").score for i in range(1000)]
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(per_draw, [2.5, 97.5])))
    assert got.low < got.value < got.high
    assert got.text() == f"{got.value:.1f} [{got.low:.1f}, {got.high:.1f}]"
    # the streams: tasks independent, SF's metrics on one draw of its utterances
    assert task_stream("sf") == task_stream("sf", 0) == (0, zlib.crc32(b"sf")) != task_stream("ks")
    assert np.array_equal(metric_draws({"sf/cer": [[cer]]})["sf/cer"], bootstrap([[cer]], 1000, (0, zlib.crc32(b"sf"))))


def leaderboard_records() -> list[ResultRecord]:
    return [rec("a", "ks", bits(70, 1), seed=0), rec("a", "ks", bits(64, 2), seed=1),
            rec("a", "pr", counts(*rng_errors(3, 0.1))),
            rec("b", "ks", None, value=60.0), rec("b", "pr", None, value=20.0)]


def test_cells_with_units_show_the_half_width_of_the_interval_of_their_mean():
    records = leaderboard_records()
    board = build_leaderboard(records, reference="paper")
    ks_seeds = [records[0].unit_scores(), records[1].unit_scores()]
    ks_ci = confidence_interval(ks_seeds)  # the mean over both seeds, the seeds sharing each draw
    pr_ci = confidence_interval([records[2].unit_scores()])
    assert with_intervals(records[2]).test_ci == [pr_ci.low, pr_ci.high]  # one seed: the record's own interval
    d = board.display_frame().set_index("upstream")
    mean_ks = (records[0].test + records[1].test) / 2
    std_ks = float(np.std([records[0].test, records[1].test], ddof=1))
    assert d.loc["a", "KS ACC% ↑"] == f"{mean_ks:.2f} ± {std_ks:.2f} (CI ±{(ks_ci.high - ks_ci.low) / 2:.2f})"
    assert d.loc["a", "PR PER% ↓"] == f"{records[2].test:.2f} (CI ±{(pr_ci.high - pr_ci.low) / 2:.2f})"
    assert d.loc["b", "KS ACC% ↑"] == "60.00" and d.loc["b", "PR PER% ↓"] == "20.00"  # no units: as before
    score = score_interval({"ks": ks_seeds, "pr": [records[2].unit_scores()]}, paper_references(), "paper")
    assert d.loc["a", "SUPERB (paper ref)"] == f"{board.frame.set_index('upstream').loc['a', 'score']:.1f} " \
                                              f"[{score.low:.1f}, {score.high:.1f}]"
    assert not any(c in d.loc["b", "SUPERB (paper ref)"] for c in "[]")
    assert any(n.startswith("(CI ±h): half-width of the 95% percentile-bootstrap interval") for n in board.notes)

    rows = {r["row"]: r for r in json.loads(board.render("json"))["rows"]}
    assert rows["a"]["tasks"]["ks"]["ci"] == [ks_ci.low, ks_ci.high]
    assert rows["a"]["superb_score"]["ci"] == [round(score.low, 4), round(score.high, 4)]
    assert "ci" not in rows["b"]["tasks"]["ks"] and "ci" not in rows["b"]["superb_score"]
    table = list(csv.reader(io.StringIO(board.render("csv"))))
    assert table[0][-6:] == ["pr_ci_low", "pr_ci_high", "ks_ci_low", "ks_ci_high", "score_ci_low", "score_ci_high"]
    a_row = dict(zip(table[0], next(line for line in table if line[0] == "a")))
    assert (float(a_row["ks_ci_low"]), float(a_row["ks_ci_high"])) == (ks_ci.low, ks_ci.high)
    assert "(CI ±" in board.render("html")


def test_secondary_metric_cells_get_their_own_interval():
    cer = counts(*rng_errors(5, 0.3))
    f1 = UnitScores.build("mean", "utterance", ids(N), {"value": np.linspace(60, 100, N).tolist()})
    board = build_leaderboard([rec("a", "sf", f1, secondary={"cer": cer})], reference="paper")
    cell = json.loads(board.render("json"))["rows"][0]["tasks"]["sf"]
    ci = confidence_interval([[cer]])
    assert cell["secondary"]["cer"]["ci"] == [ci.low, ci.high]
    assert cell["ci"] == [confidence_interval([[f1]]).low, confidence_interval([[f1]]).high]


def test_no_ci_hides_every_interval_and_skips_the_bootstrap(tmp_path, capsys):
    records = leaderboard_records()
    plain = build_leaderboard(records, reference="paper", ci=False)
    assert "(CI" not in plain.render("md") and "_ci_" not in plain.render("csv") and '"ci"' not in plain.render("json")
    assert all(math.isnan(x) for x in plain.frame.get("ks_ci_low", [math.nan]))
    db = tmp_path / "lb.db"
    ResultStore(db).add_many(records)
    assert main(["leaderboard", "--db", str(db), "--reference", "paper"]) == 0
    assert "(CI ±" in capsys.readouterr().out
    assert main(["leaderboard", "--db", str(db), "--reference", "paper", "--no-ci"]) == 0
    out = capsys.readouterr().out
    assert "(CI" not in out and "| 60.00 |" in out


def test_a_one_seed_cell_reads_the_interval_its_record_states():
    units = counts(*rng_errors(3, 0.1))
    record = with_intervals(rec("a", "pr", units))  # as a run writes it: the default resamples, level and seed
    assert record.test_ci == list(_pair(confidence_interval([[units]])))
    stated = replace(record, test_ci=[record.test_ci[0] - 1.0, record.test_ci[1] + 1.0])  # not drawn again
    cell = json.loads(build_leaderboard([stated], reference="paper").render("json"))["rows"][0]["tasks"]["pr"]
    assert cell["ci"] == pytest.approx(stated.test_ci, abs=1e-4)
    other = replace(stated, uncertainty={**stated.uncertainty, "resamples": 500})  # made otherwise: drawn again
    cell = json.loads(build_leaderboard([other], reference="paper").render("json"))["rows"][0]["tasks"]["pr"]
    assert cell["ci"] == record.test_ci


def _pair(interval) -> tuple[float, float]:
    return interval.low, interval.high

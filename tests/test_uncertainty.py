"""Bootstrap intervals and paired tests (superbench.uncertainty) against independent values: the Wilson
interval of a proportion, a coverage simulation, an exact permutation enumeration, Holm by hand, and each
non-additive metric (EER, DER, MTWV) recomputed by its own code on explicitly repeated units."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from downstreams.diarization import DiarizationObjective, setting_name
from downstreams.qbe import GroundTruth, max_twv
from superbench import metrics
from superbench.uncertainty import (
    UnitScores,
    bootstrap,
    confidence_interval,
    holm,
    paired_test,
    pairing_problem,
    percentile_interval,
)


def ids(n: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def bits(correct: np.ndarray) -> UnitScores:
    return UnitScores.build("proportion", "utterance", ids(len(correct)), {"correct": correct.tolist()})


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def test_the_interval_of_a_large_proportion_matches_wilson():
    rng = np.random.default_rng(3)
    correct = (rng.random(20_000) < 0.7).astype(int)
    interval = confidence_interval([[bits(correct)]])
    low, high = wilson(correct.mean(), correct.size)
    assert interval.low == pytest.approx(low, abs=0.15)
    assert interval.high == pytest.approx(high, abs=0.15)
    assert (interval.unit, interval.n, interval.resamples, interval.level) == ("utterance", 20_000, 1000, 0.95)


def test_the_95_percent_interval_covers_a_known_accuracy_in_93_to_97_percent_of_test_sets():
    rng = np.random.default_rng(11)
    accuracy, covered, sets = 0.8, 0, 500
    for k in range(sets):
        correct = (rng.random(200) < accuracy).astype(int)  # a classifier of known accuracy on a fresh test set
        interval = confidence_interval([[bits(correct)]], resamples=1000, seed=k)
        covered += interval.low <= 100 * accuracy <= interval.high
    assert 0.93 <= covered / sets <= 0.97, covered / sets


def test_the_same_units_give_the_same_interval_and_a_seed_changes_the_draws():
    correct = np.random.default_rng(0).integers(0, 2, 300)
    first, again = confidence_interval([[bits(correct)]]), confidence_interval([[bits(correct)]])
    assert first == again
    assert not np.array_equal(bootstrap([[bits(correct)]], seed=0), bootstrap([[bits(correct)]], seed=1))


def exact_permutation_p(a: list[int], b: list[int]) -> float:
    """Every swap of the units between two systems, accuracy difference at least the observed one."""
    observed = abs(sum(a) - sum(b))
    hits = 0
    for swap in itertools.product((0, 1), repeat=len(a)):
        xa = sum(y if s else x for x, y, s in zip(a, b, swap))
        xb = sum(x if s else y for x, y, s in zip(a, b, swap))
        hits += abs(xa - xb) >= observed
    return hits / 2 ** len(a)


def test_the_permutation_p_value_is_the_exact_enumeration_on_a_tiny_set():
    a, b = [1, 1, 1, 0, 1, 1, 0, 1], [0, 1, 0, 0, 1, 0, 0, 0]
    test = paired_test([[bits(np.array(a))]], [[bits(np.array(b))]])
    assert test.exact
    assert test.p_permutation == pytest.approx(exact_permutation_p(a, b), abs=1e-6)
    assert test.delta == pytest.approx(100 * (sum(a) - sum(b)) / len(a), abs=1e-4)


def test_the_sampled_permutation_p_value_approximates_the_exact_one():
    rng = np.random.default_rng(5)
    a = (rng.random(14) < 0.8).astype(int).tolist()
    b = (rng.random(14) < 0.4).astype(int).tolist()
    test = paired_test([[bits(np.array(a))]], [[bits(np.array(b))]], resamples=4000)
    assert not test.exact
    assert test.p_permutation == pytest.approx(exact_permutation_p(a, b), abs=0.02)


def test_a_model_against_itself_differs_by_nothing_and_a_clear_win_is_significant():
    rng = np.random.default_rng(2)
    same = bits((rng.random(200) < 0.6).astype(int))
    null = paired_test([[same]], [[same]])
    assert (null.delta, null.low, null.high, null.p_bootstrap, null.p_permutation) == (0, 0, 0, 1.0, 1.0)
    better = bits((rng.random(200) < 0.9).astype(int))
    win = paired_test([[better]], [[same]])
    assert win.delta > 0 and win.low > 0
    assert win.p_bootstrap < 0.01 and win.p_permutation < 0.01


def test_units_of_another_test_set_are_refused_with_the_reason():
    a = bits(np.ones(10, dtype=int))
    b = UnitScores.build("proportion", "utterance", ids(10, "other"), {"correct": [1] * 10})
    assert "different test units" in pairing_problem([a], [b])
    with pytest.raises(ValueError, match="a paired test needs the same test set"):
        paired_test([[a]], [[b]])


def test_holm_by_hand():
    adjusted = holm({"ks": 0.01, "pr": 0.04, "sid": 0.03, "er": 0.5})
    # sorted: ks .01 x4 = .04; sid .03 x3 = .09; pr .04 x2 = .08 -> monotone .09; er .5 x1 = .5
    assert adjusted == pytest.approx({"ks": 0.04, "sid": 0.09, "pr": 0.09, "er": 0.5})


def test_word_error_rates_sum_counts_over_the_drawn_utterances():
    errors, total = np.array([0, 3, 1, 5]), np.array([4, 6, 2, 5])
    units = UnitScores.build("ratio", "utterance", ids(4), {"errors": errors, "total": total})
    counts = np.array([[2, 0, 1, 1], [0, 4, 0, 0]])
    expected = [100 * (counts[i] @ errors) / (counts[i] @ total) for i in range(2)]  # not a mean of rates
    assert units.evaluate(counts) == pytest.approx(expected)
    assert units.value() == pytest.approx(100 * 9 / 17)


def test_multi_fold_metrics_resample_within_each_fold_and_average():
    f1 = UnitScores.build("proportion", "utterance", ids(50), {"correct": [1] * 50}, fold="fold1")
    f2 = UnitScores.build("proportion", "utterance", ids(40, "v"), {"correct": [0] * 40}, fold="fold2")
    draws = bootstrap([[f1, f2]], resamples=50)
    assert draws == pytest.approx(np.full(50, 50.0))  # every draw keeps each fold's own units: (100 + 0) / 2


def test_eer_draws_equal_the_eer_of_the_trials_repeated_by_their_counts():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 60)
    labels[:2] = (0, 1)
    scores = np.round(rng.normal(size=60) + labels, 2)  # rounded: ties between trials happen
    units = UnitScores.build("eer", "trial pair", ids(60), {"label": labels, "score": scores})
    counts = rng.multinomial(60, np.full(60, 1 / 60), size=20)
    drawn = units.evaluate(counts)
    for row, value in zip(counts, drawn):
        repeated = np.repeat(np.arange(60), row)
        if len(set(labels[repeated])) < 2:
            assert math.isnan(value)
            continue
        assert value == pytest.approx(metrics.equal_error_rate(labels[repeated].tolist(), scores[repeated].tolist()))


def test_der_draws_equal_the_corpus_der_of_the_recordings_repeated_by_their_counts():
    rng = np.random.default_rng(4)
    objective = DiarizationObjective(frame_shift=160, thresholds=(0.4, 0.6), medians=(1,))
    targets, predictions = [], []
    for _ in range(8):
        a = sorted(rng.uniform(0, 10, 2).round(2))
        b = sorted(rng.uniform(0, 10, 2).round(2))
        targets.append({"segments": [["s1", *a], ["s2", *b]], "duration": 10.0})
        predictions.append({setting_name(th, 1): [["spk0", *sorted(rng.uniform(0, 10, 2).round(2))]]
                            for th in (0.4, 0.6)})
    units = objective.unit_scores(ids(8), targets, predictions)["der"]
    assert units.value() == pytest.approx(objective.score(targets, predictions), abs=1e-4)
    counts = rng.multinomial(8, np.full(8, 1 / 8), size=10)
    for row, value in zip(counts, units.evaluate(counts)):
        picked = np.repeat(np.arange(8), row)
        expected = objective.score([targets[i] for i in picked], [predictions[i] for i in picked])
        assert value == pytest.approx(expected, abs=1e-4)


def hand_mtwv(detections: dict[str, dict[str, float]], truth: GroundTruth, multiplicity: dict[str, int],
              beta: float = 999.9) -> float:
    """MTWV of a multiset of query terms, written out: at every threshold, the mean over the drawn terms of
    hits / N_true - beta false alarms / (N_docs - N_true); the best threshold, or 0."""
    drawn = sum(multiplicity.values())
    thresholds = sorted({s for by_doc in detections.values() for s in by_doc.values()})
    best = 0.0
    for theta in thresholds:
        total = 0.0
        for term, k in multiplicity.items():
            n_true = truth.true_count(term)
            hits = sum(1 for d, s in detections[term].items() if s >= theta and d in truth.hits.get(term, ()))
            fas = sum(1 for d, s in detections[term].items() if s >= theta and d not in truth.hits.get(term, ()))
            total += k * (hits / n_true - beta * fas / (truth.documents - n_true))
        best = max(best, total / drawn)
    return 100 * best


def test_mtwv_draws_equal_the_mtwv_of_the_queries_repeated_by_their_counts():
    from downstreams.qbe import twv_units

    rng = np.random.default_rng(9)
    docs = ids(30, "d")
    terms = ids(6, "t")
    truth = GroundTruth(terms=terms, hits={t: set(rng.choice(docs, 3, replace=False)) for t in terms},
                        documents=len(docs))
    detections = {t: {d: float(rng.normal() + 4 * (d in truth.hits[t])) for d in docs} for t in terms}
    units = twv_units(detections, truth)
    assert units.value() == pytest.approx(100 * max_twv(detections, truth)[0], abs=1e-3)
    counts = rng.multinomial(6, np.full(6, 1 / 6), size=8)
    for row, value in zip(counts, units.evaluate(counts)):
        expected = hand_mtwv(detections, truth, {t: int(k) for t, k in zip(terms, row) if k})
        assert value == pytest.approx(expected, abs=1e-3)


def test_percentiles_ignore_draws_where_the_metric_is_undefined():
    draws = np.array([1.0, np.nan, 2.0, 3.0, np.nan])
    assert percentile_interval(draws, level=0.5) == pytest.approx((1.5, 2.5))
    assert all(math.isnan(x) for x in percentile_interval(np.array([np.nan])))


def test_stored_units_read_back_the_same_and_bad_ones_are_refused():
    units = UnitScores.build("twv", "query", ids(2), {"score": [0.5, 0.25], "weight": [1.0, -0.5]}, owner=[0, 1])
    assert UnitScores.from_dict(units.to_dict()).value() == units.value()
    with pytest.raises(ValueError, match="owner indices outside 0..1"):
        UnitScores.from_dict({**units.to_dict(), "owner": [0, 2]})
    with pytest.raises(ValueError, match="ratio needs column"):
        UnitScores.from_dict({"statistic": "ratio", "unit": "utterance", "n": 1, "ids": "x",
                              "columns": {"errors": [1]}})
    with pytest.raises(ValueError, match="not one of"):
        UnitScores.from_dict({"statistic": "median", "unit": "utterance", "n": 1, "ids": "x", "columns": {}})


def test_a_record_with_per_unit_scores_but_no_interval_gets_it_on_import(tmp_path):
    from leaderboard.store import load_record_files
    from superbench.records import ResultRecord, with_intervals, write_record

    correct = np.random.default_rng(1).integers(0, 2, 40)
    units = bits(correct)
    value = units.value()
    record = ResultRecord("up", "fp-up", "ks", "acc", True, value, value, 0, "1.0", profile="superb",
                          layer_weights=[0.5, 0.5], manifest_fingerprint="d", units={"acc": [units.to_dict()]})
    assert record.test_ci is None
    write_record(record, tmp_path)
    (imported,), errors = load_record_files([tmp_path])
    assert errors == []
    interval = confidence_interval([[units]])
    assert imported.test_ci == [interval.low, interval.high]
    assert imported.uncertainty["unit"] == "utterance" and imported.uncertainty["units"] == 40
    assert with_intervals(imported, seed=5, only_missing=True).test_ci == imported.test_ci  # kept as it is


def test_a_record_whose_units_do_not_give_its_test_value_is_refused_and_units_are_stored_on_one_line(tmp_path):
    from superbench.records import RecordError, ResultRecord, read_record, with_intervals, write_record

    units = bits(np.array([1, 1, 0, 1]))  # 75 %
    record = with_intervals(ResultRecord("up", "fp-up", "ks", "acc", True, 75.0, 70.0, 0, "1.0", profile="superb",
                                         layer_weights=[1.0], manifest_fingerprint="d",
                                         units={"acc": [units.to_dict()]}))
    path = write_record(record, tmp_path)
    lines = path.read_text().splitlines()
    assert sum('"units": {"acc":[{' in line for line in lines) == 1 and len(lines) < 80
    assert read_record(path).unit_scores()[0].value() == 75.0
    with pytest.raises(RecordError, match="units of 'acc' give 75.0000, not the record's test 50.0"):
        ResultRecord("up", "fp-up", "ks", "acc", True, 50.0, 70.0, 0, "1.0", profile="superb", layer_weights=[1.0],
                     units={"acc": [units.to_dict()]}).validate()
    with pytest.raises(RecordError, match="test_ci is .*not \\[low, high\\]"):
        ResultRecord("up", "fp-up", "ks", "acc", True, 75.0, 70.0, 0, "1.0", profile="superb", layer_weights=[1.0],
                     test_ci=[80.0, 60.0], uncertainty=record.uncertainty).validate()


def test_a_cells_interval_is_that_of_the_seeds_mean_and_a_one_seed_record_keeps_its_own():
    from dataclasses import replace

    from superbench.records import ResultRecord, with_intervals
    from superbench.summary import aggregate, cell_interval

    rng = np.random.default_rng(8)
    seeds = [bits((rng.random(60) < p).astype(int)) for p in (0.5, 0.7)]

    def record(seed: int, units: UnitScores) -> ResultRecord:
        return with_intervals(ResultRecord("up", "fp", "ks", "acc", True, units.value(), 50.0, seed, "1",
                                           profile="ci", layer_weights=[1.0], units={"acc": [units.to_dict()]}))

    both = [record(0, seeds[0]), record(1, seeds[1])]
    expected = confidence_interval([[seeds[0]], [seeds[1]]])
    assert cell_interval(both) == (expected.low, expected.high)
    row = aggregate(both, intervals=True).iloc[0]
    assert (row.ci_low, row.ci_high) == (expected.low, expected.high)
    assert math.isnan(aggregate(both).iloc[0].ci_low)  # not drawn unless asked
    stated = replace(both[0], test_ci=[1.0, 99.0])
    assert cell_interval([stated]) == (1.0, 99.0)  # made with the defaults: read, not drawn again
    assert cell_interval([replace(both[0], units={}, test_ci=None, uncertainty={})]) is None


def test_unit_words():
    from superbench.uncertainty import units_word

    assert [units_word(u) for u in ("utterance", "trial pair", "query", "recording", "")] == [
        "utterances", "trial pairs", "queries", "recordings", "units"]

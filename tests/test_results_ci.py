"""`superbench results ci`: intervals for records written without them, from their own per-unit scores or from
the per-utterance scores of their kept predictions; expected intervals from `confidence_interval` of units built
here by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from superbench.cli import main
from superbench.record_units import add_intervals
from superbench.records import ResultRecord, read_record, record_path, write_record
from superbench.tasks import TASKS
from superbench.uncertainty import UnitScores, confidence_interval

N = 50


def rec(task: str, test: float, seed: int = 0, folds: dict | None = None, units: dict | None = None,
        upstream: str = "mine") -> ResultRecord:
    spec = TASKS.get(task)
    return ResultRecord(upstream, "fp-mine", task, spec.metric, spec.higher_is_better, test, test, seed, "1",
                        profile="ci", manifest_fingerprint="d1", folds=folds or {}, units=units or {})


def with_predictions(results: Path, record: ResultRecord, rows: list[dict]) -> Path:
    """Write `record` with a predictions artefact holding `rows` (dev rows are added before them); its path."""
    stem = record_path(results, record.run_key()).name.removesuffix(".json")
    name = f"{stem}.predictions.jsonl"
    path = write_record(ResultRecord(**{**record.__dict__, "artifacts": {"predictions": name}}), results)
    dev = [{"split": "dev", "fold": r["fold"], "id": f"dev-{i}", "reference": "x", "prediction": "x", "correct": 1}
           for i, r in enumerate(rows[:3])]
    (path.parent / name).write_text("".join(json.dumps(r) + "\n" for r in dev + rows), encoding="utf-8")
    return path


def correct_rows(bits: list[int], fold: str = "default", prefix: str = "utt") -> list[dict]:
    return [{"split": "test", "manifest_split": "test", "fold": fold, "id": f"{prefix}{i:03d}", "reference": "yes",
             "prediction": "yes" if b else "no", "correct": b} for i, b in enumerate(bits)]


BITS = (np.arange(N) % 5 != 0).astype(int).tolist()  # 40 of 50 right: 80 %


def test_a_record_with_kept_predictions_gets_the_interval_of_its_utterances(tmp_path, capsys):
    results = tmp_path / "results"
    path = with_predictions(results, rec("ks", 80.0), correct_rows(BITS))
    assert read_record(path).test_ci is None
    assert main(["results", "ci", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: interval from the per-utterance scores of its predictions" in out
    assert "1 record(s) given intervals (0 from their per-unit scores, 1 from their predictions)" in out
    record = read_record(path)
    units = UnitScores.build("proportion", "utterance", [f"utt{i:03d}" for i in range(N)], {"correct": BITS},
                             fold="default")
    ci = confidence_interval([[units]])
    assert record.test_ci == [ci.low, ci.high] and ci.low < 80.0 < ci.high
    assert record.uncertainty == {"method": "percentile bootstrap", "unit": "utterance", "units": N,
                                  "resamples": 1000, "level": 0.95, "seed": 0}
    assert [u.to_dict() for u in record.unit_scores()] == [units.to_dict()]
    # a second pass finds nothing to do
    assert main(["results", "ci", "--results", str(results)]) == 0
    assert "0 record(s) given intervals (0 from their per-unit scores, 0 from their predictions), 1 already had them" \
        in capsys.readouterr().out


def test_error_counts_are_summed_per_fold_as_the_record_averages_folds(tmp_path):
    results = tmp_path / "results"
    errors, tokens = [1, 0, 3, 2] * 10, [10, 5, 12, 8] * 10
    per = 100 * sum(errors) / sum(tokens)  # the corpus PER: counts summed, not rates averaged
    rows = [{"split": "test", "fold": "default", "id": f"u{i}", "reference": "a b", "prediction": "a",
             "errors": e, "ref_tokens": t} for i, (e, t) in enumerate(zip(errors, tokens))]
    pr = with_predictions(results, rec("pr", round(per, 4)), rows)
    # two folds of accuracy (ER): each resampled within itself, the record's test is their mean
    f1, f2 = BITS, [1] * 10 + [0] * 30
    er_rows = correct_rows(f1, "fold1") + correct_rows(f2, "fold2", prefix="v")
    er = with_predictions(results, rec("er", (80.0 + 25.0) / 2, folds={"fold1": {"dev": 1.0, "test": 80.0},
                                                                      "fold2": {"dev": 1.0, "test": 25.0}}), er_rows)
    report = add_intervals(results)
    assert sorted(report.from_predictions) == sorted([pr, er]) and report.complete
    ratio = UnitScores.build("ratio", "utterance", [f"u{i}" for i in range(40)], {"errors": errors, "total": tokens},
                             fold="default")
    assert read_record(pr).test_ci == [confidence_interval([[ratio]]).low, confidence_interval([[ratio]]).high]
    folds = [UnitScores.build("proportion", "utterance", [f"utt{i:03d}" for i in range(N)], {"correct": f1},
                              fold="fold1"),
             UnitScores.build("proportion", "utterance", [f"v{i:03d}" for i in range(40)], {"correct": f2},
                              fold="fold2")]
    ci = confidence_interval([folds])
    assert read_record(er).test_ci == [ci.low, ci.high] and read_record(er).uncertainty["units"] == N + 40


def test_records_that_cannot_get_an_interval_are_left_as_they_were_with_the_reason(tmp_path, capsys):
    results = tmp_path / "results"
    wrong = with_predictions(results, rec("ks", 75.0), correct_rows(BITS))  # the predictions give 80 %
    before = wrong.read_text()
    sv_rows = [{"split": "test", "fold": "default", "id": f"s{i}", "reference": "spk1", "prediction": [0.1, 0.2]}
               for i in range(4)]
    sv = with_predictions(results, rec("sv", 10.0), sv_rows)
    bare = write_record(rec("ic", 50.0), results)
    units = UnitScores.build("proportion", "utterance", [f"utt{i:03d}" for i in range(N)], {"correct": BITS})
    kept = write_record(rec("ks", 80.0, seed=1, units={"acc": [units.to_dict()]}), results)
    assert main(["results", "ci", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert wrong.read_text() == before
    assert (f"{wrong}: no interval: the per-utterance scores in {wrong.stem}.predictions.jsonl give an accuracy of "
            f"80.0000, not the record's test acc 75.0; left as it was (they measure another metric, or are not this "
            f"record's; re-run for per-unit scores)") in out
    assert f"{sv}: no interval: no per-unit scores (task kind {rec('sv', 1.0).task_info.kind} keeps none in its " \
           f"predictions; re-run)" in out
    assert f"{bare}: no interval: no per-unit scores and no predictions file ({bare.stem}.predictions.jsonl) " \
           f"beside it; re-run" in out
    assert f"{kept}: interval from its per-unit scores" in out
    assert read_record(kept).test_ci == [confidence_interval([[units]]).low, confidence_interval([[units]]).high]
    assert "1 record(s) given intervals (1 from their per-unit scores, 0 from their predictions), 0 already had " \
           "them, 3 left without" in out

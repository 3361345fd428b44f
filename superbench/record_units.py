"""Intervals for records written without them (`superbench results ci`).

A record file that lacks `test_ci` gets one where it can:

1. it keeps per-unit scores (`units`): the interval is computed from them (`records.with_intervals`);
2. else its predictions artefact (`<stem>.predictions.jsonl`, `superbench.artifacts`) holds a per-utterance
   score for every test row: `correct` (0/1, accuracy: statistic "proportion") or `errors` and
   `ref_tokens` (a corpus error rate such as PER/WER: statistic "ratio", the counts summed over the drawn
   utterances), one set of units per fold. They must give back the record's own test value (within
   `TOLERANCE`, per fold averaged as the record states it); otherwise the record is left as it was and
   the reason said, so an interval is never drawn around another number;
3. else nothing can be done but re-run: the task kind keeps no per-unit score in its predictions (EER
   trials, MTWV detections, DER segments, SF's slot F1 need the model's outputs again).

Files are rewritten atomically (a reader sees the old record or the new one, never half), and only the
fields `units`, `test_ci` and `uncertainty` change.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from superbench.io import atomic_write_text
from superbench.records import RecordError, ResultRecord, artifact_paths, read_record, with_intervals
from superbench.uncertainty import UnitScores, folds_to_json, value_of

log = logging.getLogger(__name__)

#: Largest |units' value - record's test| accepted (the precision of the stored metrics).
TOLERANCE = 1e-3
UNIT = "utterance"


@dataclass
class CIReport:
    """What `add_intervals` did to each record file under a results folder."""

    from_units: list[Path] = field(default_factory=list)  # intervals computed from the record's own units
    from_predictions: list[Path] = field(default_factory=list)  # units built from the predictions, then intervals
    already: list[Path] = field(default_factory=list)  # had an interval
    left: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it has none)

    @property
    def complete(self) -> bool:
        """Every record now has an interval."""
        return not self.left

    def summary(self, root: str | Path) -> str:
        added = len(self.from_units) + len(self.from_predictions)
        return (f"{root}: {added} record(s) given intervals ({len(self.from_units)} from their per-unit scores, "
                f"{len(self.from_predictions)} from their predictions), {len(self.already)} already had them, "
                f"{len(self.left)} left without")


class NoUnits(ValueError):
    """The predictions cannot give this record per-unit scores; the message says why."""


def _kind(record: ResultRecord) -> str:
    info = record.task_info
    return getattr(info, "kind", "") or record.task


def units_from_predictions(record: ResultRecord, predictions: Path) -> list[UnitScores]:
    """The per-fold unit scores of `record`'s main metric from its predictions file (see the module docstring);
    NoUnits saying why not (no file, no per-utterance scores, or scores that do not give the record's test)."""
    if not predictions.is_file():
        raise NoUnits(f"no per-unit scores and no predictions file ({predictions.name}) beside it; re-run")
    folds: dict[str, dict[str, list]] = {}
    kinds: set[str] = set()
    with predictions.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NoUnits(f"{predictions.name} line {number} is not JSON ({exc})") from exc
            if not isinstance(row, dict) or row.get("split") != "test":
                continue
            if "correct" in row:
                kinds.add("proportion")
            elif "errors" in row and "ref_tokens" in row:
                kinds.add("ratio")
            else:
                kinds.add("")
            fold = folds.setdefault(str(row.get("fold", "")), {"ids": [], "correct": [], "errors": [], "total": []})
            fold["ids"].append(str(row.get("id", number)))
            fold["correct"].append(row.get("correct"))
            fold["errors"].append(row.get("errors"))
            fold["total"].append(row.get("ref_tokens"))
    if not folds:
        raise NoUnits(f"{predictions.name} holds no test predictions; re-run")
    if kinds != {"proportion"} and kinds != {"ratio"}:
        raise NoUnits(f"no per-unit scores (task kind {_kind(record)} keeps none in its predictions; re-run)")
    statistic = kinds.pop()
    columns = ("correct",) if statistic == "proportion" else ("errors", "total")
    try:
        units = [UnitScores.build(statistic, UNIT, f["ids"], {c: f[c] for c in columns}, fold=name)
                 for name, f in folds.items()]
    except (TypeError, ValueError) as exc:
        raise NoUnits(f"the per-utterance scores in {predictions.name} are not usable ({exc})") from exc
    value = value_of(units)
    if not abs(value - record.test) <= TOLERANCE:
        what = "an accuracy" if statistic == "proportion" else "an error rate"
        raise NoUnits(f"the per-utterance scores in {predictions.name} give {what} of {value:.4f}, not the "
                      f"record's test {record.metric} {record.test}; left as it was (they measure another metric, "
                      f"or are not this record's; re-run for per-unit scores)")
    return units


def add_intervals(results_dir: str | Path) -> CIReport:
    """Give every record file under `results_dir` that lacks one its interval (see the module docstring)."""
    root = Path(results_dir)
    report = CIReport()
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        try:
            record = read_record(path)
        except RecordError as exc:
            report.left.append((path, f"unreadable record ({exc})"))
            continue
        if record.test_ci is not None:
            report.already.append(path)
            continue
        if record.unit_scores() is not None:
            _rewrite(path, with_intervals(record))
            report.from_units.append(path)
            continue
        predictions = artifact_paths(record, path).get("predictions",
                                                       path.with_name(path.name.removesuffix(".json")
                                                                      + ".predictions.jsonl"))
        try:
            units = units_from_predictions(record, predictions)
        except NoUnits as exc:
            report.left.append((path, str(exc)))
            continue
        updated = with_intervals(dataclasses.replace(record, units={record.metric: folds_to_json(units)}))
        _rewrite(path, updated)
        report.from_predictions.append(path)
    return report


def _rewrite(path: Path, record: ResultRecord) -> None:
    record.validate()  # the units give back the record's test value, and the interval is well formed
    atomic_write_text(path, record.to_json() + "\n")
    log.info("%s: test_ci %s", path, record.test_ci)

"""Regression check of fresh results against a committed baseline (`superbench check`).

Baseline file (JSON, small enough to commit next to the code it guards), format 2:

    {"format": "superbench-baseline", "format_version": 2,
     "upstream": "hubert-tiny-random", "upstream_fingerprint": "...", "created_at": "...",
     "tasks": {"ks": {"metric": "acc", "higher_is_better": true, "mean": 61.2, "std": 0.8, "n": 3,
                      "recipe_version": "1.0", "profile": "fast", "data": "<manifest fingerprint>",
                      "units": {"0": [{"columns": {"correct": [0, 1, ...]}, "ids": "...", "n": 96, ...}],
                                "1": [...], "2": [...]}}, ...}}

`units` are the baseline model's per-unit test scores of the metric, per seed (the seed
number as the key, one line each), per fold (`superbench.uncertainty.UnitScores.to_dict()`:
a 0/1 `correct` per utterance, error/total counts per utterance, trial scores, ...): what a
paired test against the current results needs, a few KB for the ci profile. They are kept
only when every seed's record has them, must be the same test units for every seed, and
must give back the entry's `mean` (a baseline whose units say something else is refused).
`data` and `units` are optional when reading: format 1 (no `units` at all) still loads, and
so does a task whose records kept no per-unit scores; those metrics are checked by the size
rule alone, and the report says so. A task with secondary metrics (`Task.secondary_metrics`,
e.g. SF's slot-value CER beside its F1) also has them, each with its own direction, mean,
std, seed count and units:

     "sf": {"metric": "f1", "higher_is_better": true, "mean": 88.5, ..., "secondary":
            {"cer": {"higher_is_better": false, "mean": 25.2, "std": 0.4, "n": 3, "units": {...}}}}

`secondary` is optional too: a baseline without it checks the main metrics only (and says
which current metrics had no baseline).

The model under test: one upstream name can cover several weights (fingerprints) in a
store. Only ONE fingerprint's results are compared: the newest (latest `created_at`)
unless `--fingerprint PREFIX` names another, and the report says which. Mixing
fingerprints let the baseline's own old rows stand in for a regressed new model.

The rule, per metric, in its own direction (lower accuracy, F1 or MTWV, higher
PER/WER/CER/EER/DER is worse):

1. size: worse by more than `allowed = max(tolerance, K * std)`, where std is the larger of
   the baseline's and the current run's seed std of that metric (a side with one seed has no
   spread, whatever std its file says: a std needs n >= 2, and the report notes it); the
   allowance never exceeds `MAX_TOLERANCE`, and `--std-tolerance` above `MAX_STD_TOLERANCE` is
   refused. The std can widen the tolerance only so far: a std is a number of metric points
   (percent), and one above `MAX_STD` (50 points) is implausible for a seed-to-seed spread, so
   a baseline holding one (or a non-finite one, or n < 1) is refused on load, and a current
   std is capped at `MAX_STD` when the allowance is computed.
2. significance: where both sides keep per-unit scores of the same test units, the drop must
   also be significant at `--alpha` (default 0.05) by the paired test of the current per-unit
   scores against the baseline's (`leaderboard.pairing.paired_metric`: seed by seed over the
   shared seeds, else in seed order): the two-sided approximate-randomisation p-value, with
   Holm's correction over every metric the check tests this way (eleven metrics tested at 0.05
   each would raise a false alarm in up to 43 % of clean runs), and the paired difference
   itself must be a drop. Two-sided at alpha is the one-sided question "is the current model
   worse" at alpha/2: conservative, on purpose. Enough resamples are drawn that the smallest
   attainable adjusted p-value is at most a tenth of alpha (`resamples_for`), so no alpha/Holm
   combination makes every drop pass.

A metric that is worse beyond `allowed` but not significant is "noise": it passes, and the
report says so, with the comparison's power: the half-width of the paired difference's
(1 - alpha) bootstrap interval, the smallest drop this test set can tell from test-set noise.
The report has a row per metric with both tests (delta and allowed; the paired difference
with its interval, p and Holm-adjusted p, the resolution, the unit and how many) and names
the metric that regressed; its verdict counts the tasks and metrics actually compared, and
the missing ones. Where either side lacks per-unit scores, or they are not the same test
units, that row falls back to the size rule alone and says why. `--tolerance` above 100
points (any drop passes), non-finite options and `--alpha` outside [`MIN_ALPHA`, `MAX_ALPHA`]
are refused.

Exit codes: 0 nothing regressed, 1 a regression, 2 a usage/data problem (unreadable or
implausible baseline, missing task without --allow-missing, nothing compared at all,
different recipe version, profile or data, unknown or ambiguous --fingerprint) - a check
that cannot compare like with like must not pass silently. 3: the check itself crashed
(an internal error, never reported as a regression).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from leaderboard.pairing import NO_UNITS_HINT, paired_metric, units_by_seed
from superbench.exit_codes import ExitCode
from superbench.io import atomic_write_text
from superbench.provenance import now_iso
from superbench.records import ResultRecord
from superbench.summary import aggregate
from superbench.task_info import MetricInfo
from superbench.tasks import in_task_order, registered_task_info
from superbench.uncertainty import (
    RESAMPLES,
    SEED,
    UnitScores,
    confidence_interval,
    folds_from_json,
    folds_to_json,
    holm,
    pairing_problem,
    units_word,
    value_of,
)

BASELINE_FORMAT = "superbench-baseline"
#: Written: 2 (per-unit scores per seed beside mean/std/n). Read: 1 and 2.
BASELINE_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
#: Default significance level of the paired test, and the range --alpha may take: above MAX_ALPHA a "significant"
#: drop is a coin toss; below MIN_ALPHA the resamples needed (`resamples_for`) are more than a gate can afford.
ALPHA = 0.05
MIN_ALPHA = 0.001
MAX_ALPHA = 0.5
#: How far a baseline's per-unit scores may give another value than its mean (records round to 4 decimals).
UNITS_MEAN_TOLERANCE = 2e-3
#: What a check summarises over seeds: one model's benchmark numbers per corpus and setup.
SUMMARY_KEYS = ("upstream", "upstream_fingerprint", "data", "recipe_version", "profile", "layer")
#: Largest plausible seed std, in metric points (percent): more is a broken baseline, not noise.
MAX_STD = 50.0
#: Largest --tolerance, and largest allowance whatever the stds: 100 points lets any drop of a percentage pass.
MAX_TOLERANCE = 100.0
#: Largest --std-tolerance K: a drop of more than ten seed stds is no seed noise.
MAX_STD_TOLERANCE = 10.0


class CheckError(ValueError):
    """The comparison cannot be made (exit code 2); the message says why and what to do."""


#: One model's per-unit scores of one metric: {seed: [per-fold UnitScores]} (every seed the same test units).
Units = dict[int, list[UnitScores]]


def _units_to_json(units: Units) -> dict[str, list[dict[str, Any]]]:
    return {str(seed): folds_to_json(folds) for seed, folds in sorted(units.items())}


@dataclass
class MetricBaseline:
    """A task's secondary metric in a baseline (measured with the task's recipe, profile and data)."""

    higher_is_better: bool
    mean: float
    std: float
    n: int
    #: The baseline's per-unit test scores of this metric per seed; {} when its records kept none.
    units: Units = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"higher_is_better": self.higher_is_better, "mean": self.mean, "std": self.std,
                               "n": self.n}
        if self.units:
            out["units"] = _units_to_json(self.units)
        return out


@dataclass
class TaskBaseline:
    metric: str
    higher_is_better: bool
    mean: float
    std: float
    n: int
    recipe_version: str
    profile: str
    data: str = ""  # manifest fingerprint the baseline was measured on; '' = not recorded
    #: The task's secondary metrics by name ({"cer": ...}); {} for a task without (or an older baseline).
    secondary: dict[str, MetricBaseline] = field(default_factory=dict)
    #: The baseline's per-unit test scores of the main metric per seed; {} when its records kept none.
    units: Units = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The file's task entry; `units` and `secondary` only when there are some, so other entries keep
        their shape."""
        out = {k: v for k, v in vars(self).items() if k not in ("secondary", "units")}
        if self.units:
            out["units"] = _units_to_json(self.units)
        if self.secondary:
            out["secondary"] = {name: mb.to_dict() for name, mb in self.secondary.items()}
        return out


@dataclass
class Baseline:
    upstream: str
    tasks: dict[str, TaskBaseline]
    upstream_fingerprint: str = ""
    created_at: str = ""
    #: The format the baseline was read in (a format-1 file keeps no per-unit scores); written: always the newest.
    format_version: int = BASELINE_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"format": BASELINE_FORMAT, "format_version": BASELINE_FORMAT_VERSION,
                "upstream": self.upstream, "upstream_fingerprint": self.upstream_fingerprint,
                "created_at": self.created_at,
                "tasks": {t: tb.to_dict() for t, tb in self.tasks.items()}}

    def to_json(self) -> str:
        """Indented JSON with each seed's per-unit scores compact on one line (sorted keys): deterministic,
        and a diff of a rewritten baseline shows which seed's units changed."""
        data = self.to_dict()
        compact: dict[str, str] = {}

        def mark(entry: dict[str, Any]) -> None:
            for seed, folds in entry.get("units", {}).items():
                key = f"\0units{len(compact)}\0"
                compact[key] = json.dumps(folds, sort_keys=True, separators=(",", ":"), allow_nan=False)
                entry["units"][seed] = key

        for entry in data["tasks"].values():
            mark(entry)
            for sub in entry.get("secondary", {}).values():
                mark(sub)
        text = json.dumps(data, indent=2, allow_nan=False)
        for key, line in compact.items():
            text = text.replace(json.dumps(key), line, 1)
        return text + "\n"

    def without_units(self) -> list[str]:
        """'task/metric' of every metric the baseline keeps no per-unit scores of (checked by the size rule only)."""
        out = [f"{t}/{tb.metric}" for t, tb in self.tasks.items() if not tb.units]
        return out + [f"{t}/{name}" for t, tb in self.tasks.items() for name, mb in tb.secondary.items()
                      if not mb.units]


def _std(x: float) -> float:
    return 0.0 if x is None or not math.isfinite(x) else float(x)


def _select(records: Iterable[ResultRecord], upstream: str) -> list[ResultRecord]:
    # single-layer probes are analyses, not the benchmark number a CI gate protects
    return [r for r in records if r.upstream == upstream and r.layer is None]


def _when(created_at: str) -> datetime:
    """A record's creation time for ordering; unparseable or missing sorts oldest."""
    try:
        t = datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@dataclass
class FingerprintChoice:
    """Which weights of an upstream name were compared, and why (shown in the report)."""

    upstream: str
    fingerprint: str
    available: list[str]  # every fingerprint of the name in the current results, newest first
    how: str  # "only", "newest" or "chosen"
    prefix: str = ""
    source: str = "the current results"

    def describe(self) -> str:
        n = len(self.available)
        where = f"{n} fingerprints in {self.source}"
        if self.how == "only":
            why = f"the only fingerprint in {self.source}"
        elif self.how == "newest":
            why = f"newest of {where}; pick another with --fingerprint"
        else:
            why = f"chosen with --fingerprint {self.prefix}; {where}" if n > 1 else \
                f"chosen with --fingerprint {self.prefix}"
        return f"compared {self.upstream}@{self.fingerprint[:12]} ({why})"


def choose_fingerprint(records: Iterable[ResultRecord], upstream: str, prefix: str | None = None, *,
                       source: str = "the current results") -> FingerprintChoice | None:
    """The fingerprint under test: `prefix`'s unique match, else the one with the newest record.

    None when the name has no records at all. Raises CheckError for an unknown or ambiguous
    prefix, and when two fingerprints are equally new (a gate must not pick one by chance).
    """
    latest: dict[str, datetime] = {}
    for r in records:
        if r.upstream == upstream:
            when = _when(r.created_at)
            latest[r.upstream_fingerprint] = max(latest.get(r.upstream_fingerprint, when), when)
    if not latest:
        return None
    newest_first = sorted(latest, key=lambda fp: (latest[fp], fp), reverse=True)
    listing = ", ".join(f"{fp} (newest record {_stamp(latest[fp])})" for fp in newest_first)
    if prefix is not None:
        matches = [fp for fp in newest_first if fp == prefix] or [fp for fp in newest_first if fp.startswith(prefix)]
        if len(matches) != 1:
            what = "matches no fingerprint" if not matches else f"is ambiguous: it matches {len(matches)} fingerprints"
            raise CheckError(f"--fingerprint {prefix!r} {what} of upstream {upstream!r}; "
                             f"fingerprints in {source}: {listing}")
        return FingerprintChoice(upstream, matches[0], newest_first, "chosen", prefix, source)
    if len(newest_first) == 1:
        return FingerprintChoice(upstream, newest_first[0], newest_first, "only", source=source)
    top = [fp for fp in newest_first if latest[fp] == latest[newest_first[0]]]
    if len(top) > 1:
        raise CheckError(f"cannot tell which weights of upstream {upstream!r} are newest: fingerprints "
                         f"{', '.join(top)} have the same latest created_at; pick one with --fingerprint "
                         f"(fingerprints in {source}: {listing})")
    return FingerprintChoice(upstream, newest_first[0], newest_first, "newest", source=source)


def _stamp(t: datetime) -> str:
    return "unknown" if t == datetime.min.replace(tzinfo=timezone.utc) else t.isoformat(timespec="seconds")


def _short_list(values: Iterable[str]) -> str:
    return ", ".join(sorted(str(v)[:12] or "unknown" for v in values))


def make_baseline(records: Iterable[ResultRecord], upstream: str, *, profile: str | None = None,
                  recipe_version: str | None = None, fingerprint: str | None = None,
                  source: str = "the current results") -> Baseline:
    """Summarise one fingerprint's stored results (mean/std over seeds per task) as a baseline.

    The fingerprint is the newest of the upstream name unless `fingerprint` (a prefix) names one;
    each task records the data it was measured on, so a later check can refuse other data, and
    each metric the per-unit scores of its seeds, so a later check can run a paired test.
    """
    recs = _select(records, upstream)
    if profile is not None:
        recs = [r for r in recs if r.profile == profile]
    if recipe_version is not None:
        recs = [r for r in recs if r.recipe_version == recipe_version]
    if not recs:
        raise CheckError(f"no results for upstream {upstream!r}"
                         + (f" with profile {profile!r}" if profile else "")
                         + (f" and recipe version {recipe_version!r}" if recipe_version else "")
                         + " to build a baseline from")
    choice = choose_fingerprint(recs, upstream, fingerprint, source=source)
    recs = [r for r in recs if r.upstream_fingerprint == choice.fingerprint]
    long = aggregate(recs, by=SUMMARY_KEYS)
    secondary = long[long["role"] == "secondary"]
    long = long[long["role"] == "main"]
    tasks: dict[str, TaskBaseline] = {}
    for task, g in long.groupby("task", sort=False):
        if len(g) > 1:
            combos = sorted({f"recipe {r.recipe_version} / profile {r.profile} / data {r.data[:12] or 'unknown'}"
                             for r in g.itertuples()})
            raise CheckError(f"upstream {upstream!r}@{choice.fingerprint[:12]} task {task!r} has results from "
                             f"several setups ({'; '.join(combos)}); pick one with --profile / --recipe-version, "
                             f"or keep one corpus's records (--records DIR)")
        r = g.iloc[0]
        if _std(r["std"]) > MAX_STD:
            raise CheckError(f"upstream {upstream!r} task {task!r}: seed std {_std(r['std']):.2f} is more than "
                             f"{MAX_STD:g} points; such results cannot make a baseline")
        runs = _runs_of(recs, task, r)
        extra = {}
        for s in secondary[secondary["task"] == task].itertuples():
            if _std(s.std) > MAX_STD:
                raise CheckError(f"upstream {upstream!r} task {task!r} metric {s.metric!r}: seed std "
                                 f"{_std(s.std):.2f} is more than {MAX_STD:g} points; such results cannot make "
                                 f"a baseline")
            extra[str(s.metric)] = MetricBaseline(bool(s.higher_is_better), float(s.mean), _std(s.std), int(s.n),
                                                  _all_units([x for x in runs if s.metric in x.secondary],
                                                             str(s.metric)))
        tasks[task] = TaskBaseline(str(r["metric"]), bool(r["higher_is_better"]), float(r["mean"]),
                                   _std(r["std"]), int(r["n"]), str(r["recipe_version"]), str(r["profile"]),
                                   str(r["data"]), extra, _all_units(runs, str(r["metric"])))
    ordered = {t: tasks[t] for t in in_task_order(tasks)}
    return Baseline(upstream, ordered, choice.fingerprint, now_iso())


def _runs_of(records: Iterable[ResultRecord], task: str, row: Any) -> list[ResultRecord]:
    """The records (seeds) behind one aggregated row: its task, recipe version, profile and data."""
    return [x for x in records if x.task == task and x.recipe_version == row["recipe_version"]
            and x.profile == row["profile"] and x.manifest_fingerprint == row["data"]]


def _all_units(runs: list[ResultRecord], metric: str) -> Units:
    """The per-unit scores of `metric` of every seed in `runs`, or {} when a seed kept none: a paired test over
    some of the seeds would test other numbers than the mean beside it."""
    units = units_by_seed(runs, metric)
    return units if runs and len(units) == len(runs) else {}


def write_baseline(baseline: Baseline, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, baseline.to_json())
    return path


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file; every problem names the file and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckError(f"{path}: cannot read baseline ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise CheckError(f"{path}: not a superbench baseline (expected \"format\": \"{BASELINE_FORMAT}\"; "
                         f"write one with `superbench check --write-baseline FILE --upstream NAME`)")
    version = data.get("format_version")
    if isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
        raise CheckError(f"{path}: baseline format_version {version!r} is not supported "
                         f"(this superbench reads {' and '.join(map(str, READABLE_FORMAT_VERSIONS))})")
    if not isinstance(data.get("upstream"), str) or not data["upstream"]:
        raise CheckError(f"{path}: baseline has no upstream name")
    tasks_in = data.get("tasks")
    if not isinstance(tasks_in, dict) or not tasks_in:
        raise CheckError(f"{path}: baseline lists no tasks")
    tasks = {}
    for task, entry in tasks_in.items():
        if not isinstance(entry, dict):
            raise CheckError(f"{path}: tasks.{task}: expected an object, got {entry!r}")
        problems = _entry_problems(entry, task)
        if problems:
            raise CheckError(f"{path}: tasks.{task}: " + "; ".join(problems))
        try:
            tb = TaskBaseline(str(entry["metric"]), bool(entry["higher_is_better"]), float(entry["mean"]),
                              float(entry.get("std", 0.0) or 0.0), int(entry.get("n", 1)),
                              str(entry["recipe_version"]), str(entry.get("profile", "superb")),
                              str(entry.get("data") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckError(f"{path}: tasks.{task}: missing or bad field ({exc!r})") from exc
        spec = registered_task_info(task)  # an installed task's declaration; else the baseline describes it
        if spec is not None and (tb.metric, tb.higher_is_better) != (spec.metric.name, spec.metric.higher_is_better):
            raise CheckError(f"{path}: tasks.{task}: metric {tb.metric!r} (higher_is_better="
                             f"{tb.higher_is_better}) does not match task {task!r} ({spec.metric.name}, "
                             f"{spec.metric.direction})")
        tb.units = _load_units(f"{path}: tasks.{task}", entry, tb.metric, tb.mean, tb.n)
        tb.secondary = _load_secondary(path, task, entry.get("secondary", {}))
        tasks[task] = tb
    return Baseline(data["upstream"], tasks, str(data.get("upstream_fingerprint", "")),
                    str(data.get("created_at", "")), version)


def _load_units(where: str, entry: dict[str, Any], metric: str, mean: float, n: int) -> Units:
    """An entry's per-unit scores ({} without), parsed and checked (see `units_problems`)."""
    raw = entry.get("units")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise CheckError(f"{where}.units: expected an object of seed -> per-fold unit scores, got {str(raw)[:60]!r}")
    units: Units = {}
    for seed, folds in raw.items():
        if not (isinstance(seed, str) and seed.lstrip("-").isdigit()):
            raise CheckError(f"{where}.units: key {seed!r} is not a seed number")
        try:
            units[int(seed)] = folds_from_json(folds)
        except ValueError as exc:
            raise CheckError(f"{where}.units.{seed}: {exc}") from exc
    problems = units_problems(units, metric, mean, n)
    if problems:
        raise CheckError(f"{where}.units: " + "; ".join(problems))
    return units


def units_problems(units: Units, metric: str, mean: float, n: int) -> list[str]:
    """Why a baseline's per-unit scores cannot stand for its numbers: not one list per seed, seeds scored on
    different test units, or units that give another value than the mean they sit beside (a baseline could
    otherwise hold the units of a better model than its mean says)."""
    if not units:
        return []
    if len(units) != n:
        return [f"per-unit scores of {len(units)} seed(s) for n = {n}"]
    seeds = list(units.values())
    for seed, folds in units.items():
        problem = pairing_problem(seeds[0], folds)
        if problem:
            return [f"seed {seed} was scored on other units than seed {next(iter(units))}: {problem}"]
    value = sum(value_of(folds) for folds in seeds) / len(seeds)
    if not abs(value - mean) <= UNITS_MEAN_TOLERANCE:
        return [f"the per-unit scores of {metric} give {value:.4f}, not the mean {mean!r}"]
    return []


def _load_secondary(path: Path, task: str, entries: Any) -> dict[str, MetricBaseline]:
    """A task entry's `secondary` metrics, each one the task declares (when it is known here), in its
    declared direction."""
    where = f"{path}: tasks.{task}.secondary"
    if not isinstance(entries, dict):
        raise CheckError(f"{where}: expected an object of metric -> {{higher_is_better, mean, std, n}}, "
                         f"got {entries!r}")
    spec = registered_task_info(task)
    declared = {m.name: m for m in spec.secondary} if spec is not None else None
    out = {}
    for name, entry in entries.items():
        if declared is not None and name not in declared:
            raise CheckError(f"{where}.{name}: not a secondary metric of task {task} "
                             f"({', '.join(declared) or 'it has none'})")
        if not isinstance(entry, dict):
            raise CheckError(f"{where}.{name}: expected an object, got {entry!r}")
        problems = _metric_problems(_described(task, name), entry)
        if problems:
            raise CheckError(f"{where}.{name}: " + "; ".join(problems))
        mb = MetricBaseline(entry["higher_is_better"], float(entry["mean"]), float(entry.get("std", 0.0) or 0.0),
                            int(entry.get("n", 1)))
        mb.units = _load_units(f"{where}.{name}", entry, name, mb.mean, mb.n)
        if declared is not None and mb.higher_is_better != declared[name].higher_is_better:
            raise CheckError(f"{where}.{name}: higher_is_better={mb.higher_is_better} does not match task "
                             f"{task!r} ({name}, {declared[name].direction})")
        out[name] = mb
    return out


def _described(task: str, metric: str) -> str | MetricInfo:
    """A baseline metric's description where its task is installed (its range then checks the mean)."""
    spec = registered_task_info(task)
    return (spec.metric_named(metric) if spec is not None else None) or metric


def _entry_problems(entry: dict[str, Any], task: str) -> list[str]:
    """Why a baseline task entry cannot gate anything: missing fields, a mean that is no score,
    a std that is not a finite spread within MAX_STD, n < 1."""
    missing = [k for k in ("metric", "higher_is_better", "mean", "recipe_version") if k not in entry]
    if missing:
        return [f"missing field(s) {missing}"]
    if not isinstance(entry["metric"], str):
        return [f"metric is {entry['metric']!r}, not a string"] + _metric_problems(str(entry["metric"]), entry)
    return _metric_problems(_described(task, entry["metric"]), entry)


def _metric_problems(metric: str | MetricInfo, entry: dict[str, Any]) -> list[str]:
    """Why one metric's baseline (main or secondary) cannot gate anything. `metric` is its description
    (its range checks the mean) or, for a task not known here, its name (any finite mean)."""
    missing = [k for k in ("higher_is_better", "mean") if k not in entry]
    if missing:
        return [f"missing field(s) {missing}"]
    problems = []
    if not isinstance(entry["higher_is_better"], bool):
        problems.append(f"higher_is_better is {entry['higher_is_better']!r}, not true/false")
    if isinstance(metric, str):
        metric = MetricInfo(metric, bool(entry["higher_is_better"]))
    problem = metric.value_problem(entry["mean"], "mean")
    if problem:
        problems.append(problem.replace("mean metric is", "mean is"))
    std = entry.get("std", 0.0)
    std = 0.0 if std is None else std
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
        problems.append(f"std is {std!r}, not a finite number >= 0")
    elif std > MAX_STD:
        problems.append(f"std is {std!r}, implausible for a seed spread (more than {MAX_STD:g} points); "
                        f"a std that large would let any regression pass")
    n = entry.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        problems.append(f"n is {n!r}, not an integer >= 1")
    return problems


@dataclass(frozen=True)
class PairedCheck:
    """The significance half of a row: the paired test of the current per-unit scores against the baseline's."""

    delta: float  # current - baseline over the paired seeds
    low: float  # the difference's paired-bootstrap interval at `level` (1 - alpha)
    high: float
    p: float  # two-sided approximate randomisation
    p_holm: float  # Holm-adjusted over every metric the check tested
    unit: str  # what was resampled: "utterance", "trial pair", ...
    n: int  # test units (summed over folds)
    pairing: str  # how the seeds were paired, in words
    resamples: int
    level: float
    #: Half-width of the baseline's own bootstrap interval (at `level`): the test set's noise on the metric itself,
    #: the scale of a drop this test set cannot tell from noise when no unit differs yet.
    baseline_half_width: float = math.nan

    @property
    def resolution(self) -> float:
        """Half the width of the difference's interval: a drop smaller than this cannot be told from test-set
        noise with this test set (0 when no unit's score differs: then there is no drop to tell)."""
        return (self.high - self.low) / 2.0

    @property
    def identical(self) -> bool:
        """No unit scored differently: the difference and its whole interval are 0."""
        return self.delta == 0 and self.low == 0 and self.high == 0

    def worse(self, higher_is_better: bool) -> float:
        """The paired difference as a drop in the metric's own direction (> 0: worse)."""
        return -self.delta if higher_is_better else self.delta


@dataclass
class CheckRow:
    task: str
    metric: str
    higher_is_better: bool
    baseline: float
    baseline_std: float
    current: float | None
    current_std: float | None
    n: int
    allowed: float
    #: "ok", "improved", "REGRESSED", "missing", or "noise": worse beyond `allowed` but not significant.
    status: str
    secondary: bool = False  # a task's secondary metric (`metric` names it), not its main one
    paired: PairedCheck | None = None  # the paired test; None: the size rule alone (see `fallback`)
    fallback: str = ""  # why a compared row has no paired test, in a sentence ("" with one)
    fallback_tag: str = ""  # the same in a few words, for the table

    @property
    def delta(self) -> float | None:
        return None if self.current is None else self.current - self.baseline

    @property
    def worse(self) -> float | None:
        """How much worse the current mean is, in the metric's own direction (< 0: better)."""
        if self.current is None:
            return None
        return (self.baseline - self.current) if self.higher_is_better else (self.current - self.baseline)

    @property
    def name(self) -> str:
        """The task for its main metric, 'task metric' for a secondary one ('sf cer')."""
        return f"{self.task} {self.metric}" if self.secondary else self.task

    @property
    def key(self) -> str:
        """'task/metric', for notes that list metrics."""
        return f"{self.task}/{self.metric}"

    def cells(self) -> list[str]:
        """The row in the report's table (see `CheckReport.HEAD`)."""
        arrow = "↑" if self.higher_is_better else "↓"
        cur = "–" if self.current is None else f"{self.current:.2f} ± {_std(self.current_std):.2f} (n={self.n})"
        delta = "–" if self.delta is None else f"{self.delta:+.2f}"
        size = [self.task, f"{self.metric} {arrow}", f"{self.baseline:.2f} ± {self.baseline_std:.2f}", cur, delta,
                f"{self.allowed:.2f}"]
        t = self.paired
        if t is None:
            tag = f"size rule only: {self.fallback_tag}" if self.fallback_tag else "–"
            return size + ["–", "–", "–", tag, self.status]
        diff = "no unit differs" if t.identical else f"{t.delta:+.2f} [{t.low:+.2f}, {t.high:+.2f}]"
        resolution = "–" if t.identical else f"±{t.resolution:.2f}"
        return size + [diff, f"{t.p:.4f} ({t.p_holm:.4f})", resolution, f"{t.n} {units_word(t.unit)}", self.status]


@dataclass
class CheckReport:
    upstream: str
    rows: list[CheckRow]
    notes: list[str] = field(default_factory=list)
    compared: str = ""  # which fingerprint was compared and how it was chosen
    alpha: float = ALPHA

    @property
    def regressed(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == "REGRESSED"]

    @property
    def noise(self) -> list[CheckRow]:
        """Worse beyond the allowance, but not significantly: passed as test-set noise (and said so)."""
        return [r for r in self.rows if r.status == "noise"]

    @property
    def exit_code(self) -> int:
        return ExitCode.FAILED if self.regressed else ExitCode.OK

    def format(self) -> str:
        head = ["task", "metric", "baseline", "current", "delta", "allowed", f"diff [{1 - self.alpha:.0%} CI]",
                "p (Holm)", "resolution", "test units", "status"]
        body = [r.cells() for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head] + body]
        compared = [r for r in self.rows if r.status != "missing"]
        n_tasks = len({r.task for r in compared})
        checked = (f"{n_tasks} task(s)" + (f", {len(compared)} metric(s)" if len(compared) != n_tasks else "")
                   + " checked")
        if len(compared) != len(self.rows):
            missing = {r.task for r in self.rows if r.status == "missing"}
            checked += f"; {len(self.rows) - len(compared)} metric(s) of {len(missing)} task(s) missing, not compared"
        verdict = (f"FAIL: {len({r.task for r in self.regressed})} task(s) regressed for {self.upstream}: "
                   f"{', '.join(_regressed_text(r, self.alpha) for r in self.regressed)}" if self.regressed
                   else f"OK: no regression for {self.upstream} ({checked})")
        if self.noise:
            verdict += (f"; worse beyond the allowance but within test-set noise (not significant at alpha "
                        f"{self.alpha:g}): {', '.join(r.key for r in self.noise)}")
        head_lines = [self.compared] if self.compared else []
        return "\n".join(head_lines + lines + [f"note: {n}" for n in self.notes] + [verdict]) + "\n"


def _regressed_text(row: CheckRow, alpha: float = ALPHA) -> str:
    """'ks' for a main metric, 'sf cer (lower is better: 25.20 -> 28.40)' for a secondary one; with a paired
    test, its difference and adjusted p ('ks (acc -10.42, Holm p 0.0050 < 0.05)')."""
    test = row.paired
    if not row.secondary:
        return row.task if test is None else \
            f"{row.task} ({row.metric} {test.delta:+.2f}, Holm p {test.p_holm:.4f} < {alpha:g})"
    direction = "higher" if row.higher_is_better else "lower"
    significance = "" if test is None else f", Holm p {test.p_holm:.4f} < {alpha:g}"
    return f"{row.name} ({direction} is better: {row.baseline:.2f} -> {row.current:.2f}{significance})"


def spread(std: float, n: int) -> float:
    """The seed spread a std stands for: none from fewer than two seeds (a std of one value means nothing)."""
    return min(_std(std), MAX_STD) if n >= 2 else 0.0


def _judge(task: str, metric: str, higher_is_better: bool, mean: float, std: float, baseline_n: int, current: float,
           current_std: float, n: int, tolerance: float, std_tolerance: float, secondary: bool) -> CheckRow:
    """One metric's size verdict: worse in its own direction by more than max(tolerance, K * std), where std is
    the larger seed spread of the two sides (`spread`), and the allowance never exceeds MAX_TOLERANCE. A paired
    test may then turn a regression into "noise" (`_decide`)."""
    allowed = min(max(tolerance, std_tolerance * max(spread(std, baseline_n), spread(current_std, n))),
                  MAX_TOLERANCE)
    worse = (mean - current) if higher_is_better else (current - mean)
    status = "REGRESSED" if worse > allowed + 1e-9 else ("improved" if worse < -allowed - 1e-9 else "ok")
    return CheckRow(task, metric, higher_is_better, mean, std, current, current_std, n, allowed, status, secondary)


def resamples_for(tested: int, alpha: float) -> int:
    """Resamples of the paired tests: at least RESAMPLES, and enough that the smallest attainable permutation
    p-value after Holm over `tested` metrics (tested / (R + 1)) is at most a tenth of alpha."""
    return max(RESAMPLES, math.ceil(10 * tested / alpha))


def _decide(row: CheckRow, alpha: float) -> None:
    """The size verdict stands only where the paired test agrees: a regression needs a significant paired drop
    (else "noise"), an improvement a significant paired gain (else "ok")."""
    test = row.paired
    if test is None or row.status not in ("REGRESSED", "improved"):
        return
    significant = test.p_holm < alpha
    if row.status == "REGRESSED" and not (significant and test.worse(row.higher_is_better) > 0):
        row.status = "noise"
    elif row.status == "improved" and not (significant and test.worse(row.higher_is_better) < 0):
        row.status = "ok"


def _why_untested(baseline: Baseline, base_units: Units, cur_units: Units, runs: int, metric: str) -> tuple[str, str]:
    """(sentence, tag) saying why a metric cannot be tested for significance; ("", "") when it can."""
    if not base_units:
        if baseline.format_version < 2:
            return (f"the baseline (format {baseline.format_version}) keeps no per-unit scores; rewrite it with "
                    f"--write-baseline to test significance", "no baseline units")
        return (f"the baseline keeps no per-unit scores of {metric} (its records had none); rewrite it from records "
                f"that have them", "no baseline units")
    if len(cur_units) < runs:
        return (f"{runs - len(cur_units)} of {runs} current record(s) keep no per-unit scores of {metric} "
                f"({NO_UNITS_HINT})", "no current units")
    for side, units in (("current", cur_units), ("baseline", base_units)):
        seeds = list(units.values())
        for folds in seeds[1:]:
            problem = pairing_problem(seeds[0], folds)
            if problem:
                return f"the {side} seeds were scored on different units: {problem}", "units differ"
    problem = pairing_problem(next(iter(base_units.values())), next(iter(cur_units.values())))
    if problem:
        return f"the current per-unit scores are not the baseline's test units: {problem}", "units differ"
    return "", ""


def _paired_tests(pending: list[tuple[CheckRow, Units, Units]], alpha: float) -> list[str]:
    """Run the paired test of every row that has one, Holm-correct the p-values over them, and settle each
    row's status; returns the notes that say what was tested, how, and what could not be."""
    tested = [(row, base, cur) for row, base, cur in pending if not row.fallback]
    resamples = resamples_for(len(tested), alpha)
    results = {}
    for row, base, cur in tested:
        try:
            results[row.key] = paired_metric(cur, base, resamples=resamples, level=1 - alpha, seed=SEED)
        except ValueError as exc:  # a pairing problem `_why_untested` did not foresee: the size rule, and why
            row.fallback, row.fallback_tag = f"no paired test ({exc})", "no paired test"
    adjusted = holm({key: r.test.p_permutation for key, r in results.items()})
    for row, base, _ in pending:
        result = results.get(row.key)
        if result is not None:
            t = result.test
            own = confidence_interval(list(base.values()), RESAMPLES, 1 - alpha, SEED)
            row.paired = PairedCheck(t.delta, t.low, t.high, t.p_permutation, round(adjusted[row.key], 6), t.unit,
                                     t.n, result.pairing.note, t.resamples, t.level, round(own.half_width, 4))
        _decide(row, alpha)
    notes = []
    if results:
        notes.append(f"paired test: the current per-unit test scores against the baseline's, on the same test units; "
                     f"a metric regresses only when it is worse by more than `allowed` AND significantly so: "
                     f"two-sided approximate-randomisation p < alpha {alpha:g} after Holm's correction over the "
                     f"{len(results)} metric(s) tested ({resamples} resamples, seed {SEED}); diff = current - "
                     f"baseline with its {1 - alpha:.0%} paired-bootstrap CI; resolution = half its width: a drop "
                     f"smaller than that cannot be told from test-set noise with this test set")
        by_pairing: dict[str, list[str]] = {}
        for row, _, _ in pending:
            if row.paired is not None:
                by_pairing.setdefault(row.paired.pairing, []).append(row.key)
        notes += [f"seeds: {how} ({', '.join(keys)})" for how, keys in by_pairing.items()]
    by_reason: dict[str, list[str]] = {}
    for row, _, _ in pending:
        if row.paired is None:
            by_reason.setdefault(row.fallback, []).append(row.key)
    notes += [f"size rule only (worse by more than `allowed`, no significance test) for {', '.join(keys)}: {why}"
              for why, keys in by_reason.items()]
    for row, _, _ in pending:
        t = row.paired
        if row.status == "noise" and t is not None:
            how = (f"the paired difference is no drop ({t.delta:+.2f})" if t.worse(row.higher_is_better) <= 0
                   else f"not significant (p {t.p:.4f}, Holm {t.p_holm:.4f} >= alpha {alpha:g})")
            notes.append(f"{row.key}: worse by {row.worse:.2f} points, more than the {row.allowed:.2f} allowed, but "
                         f"{how}: with this test set ({t.n} {units_word(t.unit)}) a drop smaller than "
                         f"±{t.resolution:.2f} points cannot be told from test-set noise")
    one_seed = [row for row, base, _ in pending if row.paired is not None and len(base) == 1]
    if one_seed:
        differ = [f"{r.key} ±{r.paired.resolution:.2f}" for r in one_seed if not r.paired.identical]
        same = [f"{r.key} ±{r.paired.baseline_half_width:.2f}" for r in one_seed if r.paired.identical]
        parts = ([f"{', '.join(differ)} (half the paired difference's CI)"] if differ else []) + \
            ([f"{', '.join(same)} (no unit differs: half the baseline's own {1 - alpha:.0%} CI)"] if same else [])
        notes.append(f"one-seed baseline: its numbers carry the test set's noise only, not training noise (a second "
                     f"seed adds it); the smallest drop this test set can tell from noise, per metric: "
                     f"{'; '.join(parts)}")
    return notes


def compare(baseline: Baseline, records: Iterable[ResultRecord], *, tolerance: float = 0.5,
            std_tolerance: float = 2.0, allow_missing: bool = False, fingerprint: str | None = None,
            source: str = "the current results", alpha: float = ALPHA) -> CheckReport:
    """Compare the model under test with a baseline; raises CheckError when they are not comparable.

    The model under test is one fingerprint of the baseline's upstream name (see
    `choose_fingerprint`); per task, only its results on the baseline's recipe, profile
    and (when the baseline names it) data count. Each metric gets the size rule and, where
    both sides keep per-unit scores of the same test units, the paired test at `alpha`.
    """
    if tolerance < 0 or std_tolerance < 0 or not math.isfinite(tolerance) or not math.isfinite(std_tolerance):
        raise CheckError(f"--tolerance and --std-tolerance must be finite and >= 0 "
                         f"(got {tolerance}, {std_tolerance})")
    if tolerance > MAX_TOLERANCE:
        raise CheckError(f"--tolerance {tolerance:g} is more than {MAX_TOLERANCE:g} points: any drop would pass")
    if std_tolerance > MAX_STD_TOLERANCE:
        raise CheckError(f"--std-tolerance {std_tolerance:g} is more than {MAX_STD_TOLERANCE:g} (seed stds): a "
                         f"drop that large is no seed noise")
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and MIN_ALPHA <= alpha <= MAX_ALPHA):
        raise CheckError(f"--alpha must be between {MIN_ALPHA:g} and {MAX_ALPHA:g} (got {alpha!r}): a larger one "
                         f"calls noise significant, a smaller one needs more resamples than a gate can draw")
    for task, tb in baseline.tasks.items():  # a Baseline built in code gets the checks of load_baseline
        problems = _entry_problems(vars(tb), task) + units_problems(tb.units, tb.metric, tb.mean, tb.n)
        for name, mb in tb.secondary.items():
            problems += [f"secondary {name}: {p}" for p in _metric_problems(_described(task, name), vars(mb))
                         + units_problems(mb.units, name, mb.mean, mb.n)]
        if problems:
            raise CheckError(f"baseline task {task}: " + "; ".join(problems))
    recs = _select(records, baseline.upstream)
    choice = choose_fingerprint(recs, baseline.upstream, fingerprint, source=source)
    if choice is not None:
        recs = [r for r in recs if r.upstream_fingerprint == choice.fingerprint]
    long = aggregate(recs, by=SUMMARY_KEYS)
    secondary = long[long["role"] == "secondary"]
    long = long[long["role"] == "main"]
    rows: list[CheckRow] = []
    pending: list[tuple[CheckRow, Units, Units]] = []  # compared rows with both sides' per-unit scores
    problems: list[str] = []
    notes: list[str] = []
    unchecked: list[str] = []
    for task, tb in baseline.tasks.items():
        cur = long[long["task"] == task]
        same = cur[(cur["recipe_version"] == tb.recipe_version) & (cur["profile"] == tb.profile)]
        if same.empty:
            if not cur.empty:
                seen = sorted({f"recipe {r.recipe_version} / profile {r.profile}" for r in cur.itertuples()})
                problems.append(f"task {task}: baseline is for recipe {tb.recipe_version} / profile {tb.profile} "
                                f"but current results are {', '.join(seen)}; re-run with that recipe or "
                                f"rewrite the baseline (--write-baseline)")
                continue
            if not allow_missing:
                problems.append(f"task {task}: no current results for upstream {baseline.upstream!r} "
                                f"(pass --allow-missing to check only the tasks that ran)")
                continue
            rows.append(CheckRow(task, tb.metric, tb.higher_is_better, tb.mean, tb.std, None, None, 0,
                                 tolerance, "missing"))
            rows += [CheckRow(task, name, mb.higher_is_better, mb.mean, mb.std, None, None, 0, tolerance, "missing",
                              True) for name, mb in tb.secondary.items()]
            continue
        if tb.data:
            on_data = same[same["data"] == tb.data]
            if on_data.empty:
                problems.append(f"task {task}: not comparable: other data (baseline measured on data "
                                f"{tb.data[:12]}, current results on {_short_list(same['data'])}); re-run on "
                                f"the baseline's corpus or rewrite the baseline (--write-baseline)")
                continue
            same = on_data
        elif len(same) > 1:
            problems.append(f"task {task}: {baseline.upstream}@{choice.fingerprint[:12]} has results on several "
                            f"data ({_short_list(same['data'])}) and the baseline names none; keep one corpus's "
                            f"records (--records DIR) or rewrite the baseline (--write-baseline)")
            continue
        r = same.iloc[0]
        runs = _runs_of(recs, task, r)
        rows.append(_judge(task, tb.metric, tb.higher_is_better, tb.mean, tb.std, tb.n, float(r["mean"]),
                           _std(r["std"]), int(r["n"]), tolerance, std_tolerance, False))
        pending.append(_pending(baseline, rows[-1], tb.units, runs))
        # the secondary metrics of the same runs (same fingerprint, recipe, profile and data)
        run = secondary[(secondary["task"] == task) & (secondary["data"] == r["data"])
                        & (secondary["recipe_version"] == r["recipe_version"]) & (secondary["profile"] == r["profile"])]
        for name, mb in tb.secondary.items():
            cur_m = run[run["metric"] == name]
            if cur_m.empty:
                if not allow_missing:
                    problems.append(f"task {task}: metric {name} is in the baseline but the current results have "
                                    f"no {name} (records written before secondary metrics?); pass --allow-missing "
                                    f"to check only the metrics that ran")
                    continue
                rows.append(CheckRow(task, name, mb.higher_is_better, mb.mean, mb.std, None, None, 0, tolerance,
                                     "missing", True))
                continue
            m = cur_m.iloc[0]
            rows.append(_judge(task, name, mb.higher_is_better, mb.mean, mb.std, mb.n, float(m["mean"]), _std(m["std"]),
                               int(m["n"]), tolerance, std_tolerance, True))
            pending.append(_pending(baseline, rows[-1], mb.units, [x for x in runs if name in x.secondary]))
        unchecked += [f"{task}/{name}" for name in run["metric"] if name not in tb.secondary]
    if problems:
        raise CheckError("cannot check against the baseline:\n  " + "\n  ".join(problems)
                         + (f"\n  ({choice.describe()})" if choice else ""))
    if not any(r.status != "missing" for r in rows):
        raise CheckError(f"nothing compared: none of the baseline's tasks ({', '.join(baseline.tasks)}) has "
                         f"current results for upstream {baseline.upstream!r}; --allow-missing skips missing "
                         f"tasks, but a check that compared nothing cannot pass")
    notes += _paired_tests(pending, alpha)
    if choice is not None and baseline.upstream_fingerprint and choice.fingerprint != baseline.upstream_fingerprint:
        notes.append(f"upstream fingerprint changed since the baseline ({baseline.upstream_fingerprint[:12]} -> "
                     f"{choice.fingerprint[:12]})")
    baseline_n = {(t, tb.metric): tb.n for t, tb in baseline.tasks.items()}
    baseline_n |= {(t, name): mb.n for t, tb in baseline.tasks.items() for name, mb in tb.secondary.items()}
    no_spread = [f"{r.name} (baseline n={baseline_n[(r.task, r.metric)]}, current n={r.n})" for r in rows
                 if r.status != "missing" and min(baseline_n[(r.task, r.metric)], r.n) < 2]
    if no_spread:
        notes.append(f"no seed spread where a side has one seed (a std needs n >= 2; the allowance is the larger "
                     f"side's K x std, or --tolerance): {', '.join(no_spread)}")
    extra = sorted(set(long["task"]) - set(baseline.tasks))
    if extra:
        notes.append(f"tasks without a baseline (not checked): {', '.join(extra)}")
    if unchecked:
        notes.append(f"secondary metrics without a baseline (not checked; rewrite the baseline with "
                     f"--write-baseline to gate them): {', '.join(unchecked)}")
    return CheckReport(baseline.upstream, rows, notes, choice.describe() if choice else "", alpha)


def _pending(baseline: Baseline, row: CheckRow, base_units: Units,
             runs: list[ResultRecord]) -> tuple[CheckRow, Units, Units]:
    """A compared row with both sides' per-unit scores, its `fallback` set where they cannot be paired."""
    cur_units = units_by_seed(runs, row.metric)
    row.fallback, row.fallback_tag = _why_untested(baseline, base_units, cur_units, len(runs), row.metric)
    return row, base_units, cur_units

"""Result records: the schema, validated on write, read and import, and the record files.

Beside each record, with the same stem, the runner keeps the best head (`<stem>.head.pt`, or
`<stem>.<fold>.head.pt` per fold) and its predictions (`<stem>.predictions.jsonl`), named in the
record's `artifacts` (see `superbench.artifacts` for the formats). Where a record lives is its
`superbench.run_key.RunKey`'s business.

Every metric is in percent (PER/WER/accuracy), the same unit as the SUPERB paper, so records
compare directly with published numbers. Records are written atomically and validated on read,
so a crashed run never leaves a half record. A record describes its task (`task_info`), so it
reads without the task's code (`superbench.task_info`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from superbench.io import atomic_write_text
from superbench.options import PRECISIONS
from superbench.run_key import RunKey
from superbench.task_info import TaskInfo, is_real, learn
from superbench.tasks import TASKS
from superbench.uncertainty import LEVEL, RESAMPLES, SEED, UnitScores, confidence_interval, folds_from_json, value_of

log = logging.getLogger(__name__)

#: 2: records carry `task_info` (they describe their task); 1: they did not (upgraded on read where the
#: task is registered, or rewritten by `superbench results migrate`).
SCHEMA_VERSION = 2


class RecordError(ValueError):
    pass


# ------------------------------------------------------------------ the record schema
#: Seeds are non-negative and fit the 32-bit seeding of numpy / torch workers.
MAX_SEED = 2**32 - 1
#: Identity fields that must be non-empty text (they name the run and its file).
IDENTITY_FIELDS = ("upstream", "upstream_fingerprint", "task", "metric", "recipe_version", "profile")
#: Fields that are text, possibly empty ("" in records written before the field existed).
TEXT_FIELDS = ("manifest_fingerprint", "features_fingerprint", "upstream_source", "audio_fingerprint", "device",
               "corpus", "git_hash", "created_at")


def record_problems(record: "ResultRecord") -> list[str]:
    """Every way `record` breaks the schema (empty when it is valid).

    Structural: the record's own `task_info` says which metrics it has, their directions and
    plausible ranges, so no task registry is needed (see `superbench.task_info`).
    """
    problems = []
    for name in IDENTITY_FIELDS:
        value = getattr(record, name)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name} is {value!r}, not a non-empty string")
    seed = record.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        problems.append(f"seed is {seed!r}, not an integer in 0..{MAX_SEED}")
    if not isinstance(record.higher_is_better, bool):
        problems.append(f"higher_is_better is {record.higher_is_better!r}, not true/false")
    layer = record.layer
    if not (layer is None or layer == "last" or (isinstance(layer, int) and not isinstance(layer, bool)
                                                  and 0 <= layer < 10_000)):
        problems.append(f"layer is {layer!r}, not null, 'last' or a layer index")
    for name in TEXT_FIELDS:
        if not isinstance(getattr(record, name), str):
            problems.append(f"{name} is {getattr(record, name)!r}, not a string")
    if record.precision not in PRECISIONS:
        problems.append(f"precision is {record.precision!r}, not fp32, bf16 or fp16")
    if not isinstance(record.overrides, dict):
        problems.append(f"overrides is {record.overrides!r}, not a mapping")
    artifacts = record.artifacts
    if not isinstance(artifacts, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                  and not Path(v).is_absolute() and ".." not in Path(v).parts
                                                  for k, v in artifacts.items()):
        problems.append(f"artifacts is {artifacts!r}, not a mapping of names to paths relative to the record")
    problems += _content_problems(record)
    info = record.task_info
    if info is None:
        return problems + [_undescribed_problem(record.task)]
    if not isinstance(info, TaskInfo):
        return problems + [f"task_info is {info!r}, not a task description"]
    metric = info.metric
    if (record.metric, record.higher_is_better) != (metric.name, metric.higher_is_better):
        problems.append(f"metric {record.metric!r} (higher_is_better={record.higher_is_better}) does not match "
                        f"task {record.task!r} ({metric.name}, {metric.direction})")
    for role in ("test", "dev"):
        problem = metric.value_problem(getattr(record, role), role)
        if problem:
            problems.append(problem)
    return problems + _secondary_problems(record, info) + _uncertainty_problems(record, info)


def _finite(value: object) -> bool:
    return is_real(value) and math.isfinite(value)


def _trial_problem(trial: object) -> str | None:
    """Why one entry of `trials` is not a trial the report can draw (None when it is)."""
    if not isinstance(trial, dict):
        return f"is {trial!r}, not an object"
    for name in ("lr", "dev", "test"):
        if name in trial and not _finite(trial[name]):
            return f"{name} is {trial[name]!r}, not a finite number"
    if "lr" not in trial or trial["lr"] <= 0:
        return f"lr is {trial.get('lr')!r}, not a learning rate > 0"
    step = trial.get("best_step", 0)
    if isinstance(step, bool) or not isinstance(step, int):
        return f"best_step is {step!r}, not an integer"
    history = trial.get("history", [])
    if not isinstance(history, list) or not all(isinstance(p, list) and len(p) == 2 and all(map(_finite, p))
                                                for p in history):
        return "history is not a list of [step, dev metric] pairs of finite numbers"
    return None


def _content_problems(record: "ResultRecord") -> list[str]:
    """The fields the leaderboard and the report read besides the scores: each the type they expect,
    every number finite (JSON has no NaN), so a stored record can never break a table or a figure."""
    problems = []
    weights = record.layer_weights
    if not isinstance(weights, list) or not all(_finite(w) and w >= 0 for w in weights):
        problems.append(f"layer_weights is {str(weights)[:60]!r}, not a list of finite weights >= 0")
    if record.lr is not None and not (_finite(record.lr) and record.lr > 0):
        problems.append(f"lr is {record.lr!r}, not null or a learning rate > 0")
    if isinstance(record.steps, bool) or not isinstance(record.steps, int) or record.steps < 0:
        problems.append(f"steps is {record.steps!r}, not an integer >= 0")
    if not isinstance(record.trials, list):
        problems.append(f"trials is {str(record.trials)[:60]!r}, not a list")
    else:
        problems += [f"trials[{i}] {p}" for i, t in enumerate(record.trials) if (p := _trial_problem(t))]
    folds = record.folds
    if not isinstance(folds, dict) or not all(isinstance(v, dict) and all(_finite(v.get(k)) for k in ("dev", "test"))
                                              for v in folds.values()):
        problems.append(f"folds is {str(folds)[:60]!r}, not a mapping of fold -> finite dev and test")
    wall = record.wall_time
    if not isinstance(wall, dict) or not all(isinstance(k, str) and _finite(v) and v >= 0 for k, v in wall.items()):
        problems.append(f"wall_time is {str(wall)[:60]!r}, not a mapping of stage -> seconds >= 0")
    versions = record.versions
    if not isinstance(versions, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in versions.items()):
        problems.append(f"versions is {str(versions)[:60]!r}, not a mapping of package -> version")
    if isinstance(record.created_at, str) and record.created_at:
        try:
            datetime.fromisoformat(record.created_at)
        except ValueError:
            problems.append(f"created_at is {record.created_at!r}, not an ISO-8601 date")
    return problems


def _interval_problem(value: object, role: str) -> str | None:
    if not (isinstance(value, list) and len(value) == 2 and all(map(_finite, value)) and value[0] <= value[1]):
        return f"{role} is {str(value)[:60]!r}, not [low, high] finite with low <= high"
    return None


def _uncertainty_problems(record: "ResultRecord", info: TaskInfo) -> list[str]:
    """Intervals well formed and described; per-unit scores parse, belong to the task's metrics and give back
    the record's own test values (so no interval is ever drawn around another number)."""
    problems = []
    if record.test_ci is not None:
        problem = _interval_problem(record.test_ci, "test_ci")
        if problem:
            problems.append(problem)
        how = record.uncertainty
        if not isinstance(how, dict) or not {"method", "unit", "units", "resamples", "level", "seed"} <= set(how):
            problems.append(f"uncertainty is {str(how)[:60]!r}, not how test_ci was made "
                            f"(method, unit, units, resamples, level, seed)")
        else:
            for name, interval in dict(how.get("secondary") or {}).items():
                problem = _interval_problem(interval, f"uncertainty.secondary[{name!r}]")
                if problem:
                    problems.append(problem)
    elif record.uncertainty not in ({}, None):
        problems.append("uncertainty describes an interval the record does not have (test_ci is null)")
    units = record.units
    if not isinstance(units, dict):
        return problems + [f"units is {str(units)[:60]!r}, not a mapping of metric -> per-fold unit scores"]
    for name, data in units.items():
        metric = info.metric_named(name)
        if metric is None:
            problems.append(f"units of {name!r}, which is not a metric of task {record.task!r}")
            continue
        try:
            value = value_of(folds_from_json(data))
        except ValueError as exc:
            problems.append(f"units of {name!r}: {exc}")
            continue
        stated = record.test if name == record.metric else (record.secondary.get(name) or {}).get("test")
        if not (_finite(stated) and abs(value - stated) <= 1e-3):
            problems.append(f"units of {name!r} give {value:.4f}, not the record's test {stated!r}")
    return problems


def _undescribed_problem(task: object) -> str:
    """Why a record that does not describe its task (written before schema 2) cannot be read here."""
    return (f"unknown task {task!r}: {TASKS.unknown_message(str(task))} (a record written before records "
            f"described their task is read only where its task is registered)")


def _secondary_problems(record: "ResultRecord", info: TaskInfo) -> list[str]:
    """Secondary metrics: a mapping of metric -> {"dev", "test"} in range, each one the task describes."""
    secondary = record.secondary
    if not isinstance(secondary, dict):
        return [f"secondary is {secondary!r}, not a mapping of metric -> {{dev, test}}"]
    declared = {m.name: m for m in info.secondary}
    problems = []
    for name, values in secondary.items():
        if name not in declared:
            problems.append(f"secondary metric {name!r} is not one of task {record.task!r}'s "
                            f"({', '.join(sorted(declared)) or 'none'})")
            continue
        if not isinstance(values, dict) or set(values) != {"dev", "test"}:
            problems.append(f"secondary metric {name!r} is {values!r}, not {{'dev': ..., 'test': ...}}")
            continue
        for role in ("dev", "test"):
            problem = declared[name].value_problem(values[role], f"secondary {role}")
            if problem:
                problems.append(problem)
    return problems


@dataclass
class ResultRecord:
    upstream: str
    upstream_fingerprint: str
    task: str
    metric: str
    higher_is_better: bool
    test: float
    dev: float
    seed: int
    recipe_version: str
    profile: str = "superb"  # "superb" or a shrunken profile such as "fast"; never mix them silently
    lr: float | None = None
    steps: int = 0
    layer_weights: list[float] = field(default_factory=list)
    layer: int | str | None = None  # single-layer probe, or None for the weighted sum
    corpus: str = ""
    manifest_fingerprint: str = ""
    folds: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Every (lr, fold) training of the sweep: {"lr", "fold", "dev", "test", "best_step",
    #: "history": [[step, dev metric], ...]}; the lr sweep and the dev curves behind the chosen number.
    trials: list[dict[str, Any]] = field(default_factory=list)
    wall_time: dict[str, float] = field(default_factory=dict)  # {"extraction": s, "training": s}
    versions: dict[str, str] = field(default_factory=dict)
    git_hash: str = ""
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION
    #: Fingerprint of the upstream variant whose features were scored (e.g. FBANK without CMVN for KS/SID/ER);
    #: equal to `upstream_fingerprint` (the model the user chose, the run identity) when the recipe asks no
    #: variant; "" in records written before it existed.
    features_fingerprint: str = ""
    #: The local checkpoint directory or file the upstream was loaded from ("" for a built-in or hub model),
    #: so weights from `NAME=DIR` can never pass for the published model of that name.
    upstream_source: str = ""
    #: Recipe values overridden for this run ({"train.steps": 50}); their digest is in `profile`.
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Files kept beside the record, as paths relative to the record file's folder: "head" (or "head.<fold>"
    #: for several folds) the best head's state_dict, "predictions" its dev and test predictions (JSON lines);
    #: see `superbench.artifacts` for their formats.
    artifacts: dict[str, str] = field(default_factory=dict)
    #: Where extraction and training ran ("cpu", "cuda:0 (NVIDIA H100 ...)"); "" in records written before.
    device: str = ""
    #: Precision of the upstream forward (fp32, bf16, fp16); anything but fp32 is also in `profile` ("+bf16").
    precision: str = "fp32"
    #: The task's secondary metrics (`Task.secondary_metrics`) of the selected head, mean over folds:
    #: {"cer": {"dev": ..., "test": ...}}; {} for a task that reports only its main metric.
    secondary: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The task as this record describes it (metrics, directions, ranges, level, column order), so the record
    #: is read, validated, aggregated and gated without importing the task (`superbench.task_info`). A record
    #: built or read without one (schema 1) takes its registered task's, when there is one.
    task_info: TaskInfo | None = None
    #: Digest of the (utterance, audio content key) pairs scored (superbench.features.keys.audio_fingerprint): a run
    #: over the same rows whose audio bytes changed is run again; "" in records written before it existed.
    audio_fingerprint: str = ""
    #: Percentile-bootstrap interval of `test` over its resampling units, [low, high] (`uncertainty` says how it
    #: was made); None for a record without per-unit scores (written before them, or a task without them).
    test_ci: list[float] | None = None
    #: How `test_ci` was made: {"method", "unit", "units", "resamples", "level", "seed"}, and the secondary
    #: metrics' intervals as {"secondary": {"cer": [low, high]}}; {} without an interval.
    uncertainty: dict[str, Any] = field(default_factory=dict)
    #: The per-unit test scores behind the intervals and paired tests: {metric: [one fold's
    #: `superbench.uncertainty.UnitScores.to_dict()`, ...]}, main and secondary metrics; stored compact.
    units: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task_info is None and isinstance(self.task, str) and self.task in TASKS:
            self.task_info = TASKS.get(self.task).info  # upgrade of a record that did not describe its task
            self.schema_version = SCHEMA_VERSION

    def validate(self) -> "ResultRecord":
        """The one schema of a record, used by write, read, import and the store; raises RecordError
        listing every problem (see `record_problems`). A valid record teaches readers its task."""
        problems = record_problems(self)
        if problems:
            raise RecordError(f"result record {self.upstream}/{self.task}/seed{self.seed}: " + "; ".join(problems))
        learn(self.task, self.task_info)
        return self

    def run_key(self) -> RunKey:
        return RunKey(self.upstream, self.upstream_fingerprint, self.task, self.manifest_fingerprint,
                      self.recipe_version, self.profile, self.layer, int(self.seed))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["task_info"] = self.task_info.to_dict() if isinstance(self.task_info, TaskInfo) else self.task_info
        return out

    def to_json(self) -> str:
        """Indented JSON, strict (no NaN token); the per-unit scores on one line (a number per line would
        make a record of 10,000 utterances 10,000 lines long)."""
        data = self.to_dict()
        units = json.dumps(data.pop("units"), sort_keys=True, separators=(",", ":"), allow_nan=False)
        text = json.dumps({**data, "units": _UNITS_PLACEHOLDER}, indent=2, sort_keys=True, allow_nan=False)
        return text.replace(json.dumps(_UNITS_PLACEHOLDER), units, 1)

    def unit_scores(self, metric: str | None = None) -> list[UnitScores] | None:
        """The per-unit test scores of `metric` (the main one by default), per fold; None when not kept."""
        data = self.units.get(metric or self.metric)
        return None if data is None else folds_from_json(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultRecord":
        if not isinstance(data, dict):
            raise RecordError(f"not a result record (expected a JSON object, got {type(data).__name__})")
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise RecordError(f"not a result record: missing field(s) {missing}")
        values = {k: v for k, v in data.items() if k in known}
        if values.get("task_info") is not None:
            try:
                values["task_info"] = TaskInfo.from_dict(values["task_info"])
            except ValueError as exc:
                raise RecordError(f"not a result record ({exc})") from exc
        try:
            rec = cls(**values)
        except TypeError as exc:
            raise RecordError(f"not a result record ({exc})") from exc
        return rec.validate()


_UNITS_PLACEHOLDER = "\0superbench-units\0"


def with_intervals(record: ResultRecord, resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = SEED, only_missing: bool = False) -> ResultRecord:
    """`record` with `test_ci` and `uncertainty` computed from its per-unit scores (unchanged without them, or,
    with `only_missing`, when it has an interval already): deterministic, so the same predictions always give
    the same interval."""
    main = record.unit_scores()
    if main is None or (only_missing and record.test_ci is not None):
        return record
    interval = confidence_interval([main], resamples, level, seed)
    described = interval.describe()
    secondary = {}
    for name in sorted(record.units):
        if name != record.metric:
            other = confidence_interval([record.unit_scores(name)], resamples, level, seed)
            secondary[name] = [other.low, other.high]
    if secondary:
        described["secondary"] = secondary
    return dataclasses.replace(record, test_ci=[interval.low, interval.high], uncertainty=described)


def record_path(results_dir: str | Path, key: RunKey) -> Path:
    """The record's file: always inside `results_dir` (see `_safe`; checked again here)."""
    root = Path(results_dir)
    path = root / key.relpath()
    if not path.resolve().is_relative_to(root.resolve()):  # cannot happen with _safe; never write outside
        raise RecordError(f"run {key.as_tuple()} maps to {path}, outside the results folder {root}")
    return path


def write_record(record: ResultRecord, results_dir: str | Path) -> Path:
    record.validate()
    path = record_path(results_dir, record.run_key())
    atomic_write_text(path, record.to_json() + "\n")
    return path


def read_record(path: str | Path) -> ResultRecord:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: cannot read result record ({exc})") from exc
    try:
        return ResultRecord.from_dict(data)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from exc


def artifact_paths(record: ResultRecord, record_file: str | Path) -> dict[str, Path]:
    """The record's artefacts (`ResultRecord.artifacts`) as paths: relative to the record file's folder."""
    folder = Path(record_file).parent
    return {name: folder / rel for name, rel in record.artifacts.items()}


def read_records(paths: list[str | Path]) -> list[ResultRecord]:
    """Read files, or every *.json under directories."""
    out = []
    for p in map(Path, paths):
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        out.extend(read_record(f) for f in files)
    return out


# ------------------------------------------------------------------ records of the first layout
#: Records written before run identities existed: <results>/<upstream>__<task>[__layerK]__seed<N>.json
OLD_LAYOUT_GLOB = "*__*__seed*.json"


def old_layout_records(results_dir: str | Path) -> list[Path]:
    """Flat first-layout record files directly under `results_dir` (read by import; moved by migrate)."""
    root = Path(results_dir)
    return sorted(root.glob(OLD_LAYOUT_GLOB)) if root.is_dir() else []


def migrate_results(results_dir: str | Path) -> list[tuple[Path, Path]]:
    """Move first-layout records into the RunKey layout; returns (old, new) pairs.

    A record whose new path already holds a record is left where it is (reported, not replaced).
    """
    moved = []
    for old in old_layout_records(results_dir):
        record = read_record(old)
        new = record_path(results_dir, record.run_key())
        if new.exists():
            log.warning("%s: not moved, %s already exists", old, new)
            continue
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(old), new)
        moved.append((old, new))
    return moved


def undescribed_records(results_dir: str | Path) -> list[Path]:
    """Record files under `results_dir` written before records described their task (schema 1)."""
    root = Path(results_dir)
    out = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "task" in data and "metric" in data and data.get("task_info") is None:
            out.append(path)
    return out


def describe_records(results_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Rewrite schema-1 records in place with their registered task's description, so they read anywhere.

    Returns (rewritten files, problems): a record whose task is not registered here stays as it is.
    """
    done, problems = [], []
    for path in undescribed_records(results_dir):
        try:
            record = read_record(path)
        except RecordError as exc:
            problems.append(str(exc))
            continue
        atomic_write_text(path, record.to_json() + "\n")
        done.append(path)
    return done, problems

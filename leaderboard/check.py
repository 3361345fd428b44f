"""Regression check of fresh results against a committed baseline (`superbench check`).

Baseline file (JSON, small enough to commit next to the code it guards):

    {"format": "superbench-baseline", "format_version": 1,
     "upstream": "hubert-tiny-random", "upstream_fingerprint": "...", "created_at": "...",
     "tasks": {"ks": {"metric": "acc", "higher_is_better": true, "mean": 61.2, "std": 0.8, "n": 3,
                      "recipe_version": "1.0", "profile": "fast"}, ...}}

A task regresses when it got worse (direction-aware: lower accuracy, higher
PER/WER) by more than `allowed = max(tolerance, K * std)`, where std is the
larger of the baseline's and the current run's seed std (0 with one seed).
Exit codes: 0 nothing regressed, 1 a regression, 2 a usage/data problem (unreadable
baseline, missing task without --allow-missing, different recipe version or
profile) - a check that cannot compare like with like must not pass silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.table import aggregate
from superbench.io import atomic_write_text
from superbench.results import ResultRecord, now_iso
from superbench.tasks import TASKS, in_task_order

BASELINE_FORMAT = "superbench-baseline"
BASELINE_FORMAT_VERSION = 1
EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


class CheckError(ValueError):
    """The comparison cannot be made (exit code 2); the message says why and what to do."""


@dataclass
class TaskBaseline:
    metric: str
    higher_is_better: bool
    mean: float
    std: float
    n: int
    recipe_version: str
    profile: str


@dataclass
class Baseline:
    upstream: str
    tasks: dict[str, TaskBaseline]
    upstream_fingerprint: str = ""
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": BASELINE_FORMAT, "format_version": BASELINE_FORMAT_VERSION,
                "upstream": self.upstream, "upstream_fingerprint": self.upstream_fingerprint,
                "created_at": self.created_at,
                "tasks": {t: vars(tb) for t, tb in self.tasks.items()}}


def _std(x: float) -> float:
    return 0.0 if x is None or not math.isfinite(x) else float(x)


def _select(records: Iterable[ResultRecord], upstream: str) -> list[ResultRecord]:
    # single-layer probes are analyses, not the benchmark number a CI gate protects
    return [r for r in records if r.upstream == upstream and r.layer is None]


def make_baseline(records: Iterable[ResultRecord], upstream: str, *, profile: str | None = None,
                  recipe_version: str | None = None) -> Baseline:
    """Summarise an upstream's stored results (mean/std over seeds per task) as a baseline."""
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
    long = aggregate(recs)
    tasks: dict[str, TaskBaseline] = {}
    for task, g in long.groupby("task", sort=False):
        if len(g) > 1:
            combos = sorted({f"recipe {r.recipe_version} / profile {r.profile} / fingerprint "
                             f"{r.upstream_fingerprint[:12]}" for r in g.itertuples()})
            raise CheckError(f"upstream {upstream!r} task {task!r} has results from several setups "
                             f"({'; '.join(combos)}); pick one with --profile / --recipe-version")
        r = g.iloc[0]
        tasks[task] = TaskBaseline(str(r["metric"]), bool(r["higher_is_better"]), float(r["mean"]),
                                   _std(r["std"]), int(r["n"]), str(r["recipe_version"]), str(r["profile"]))
    ordered = {t: tasks[t] for t in in_task_order(tasks)}
    fps = sorted({r.upstream_fingerprint for r in recs})
    return Baseline(upstream, ordered, fps[0] if len(fps) == 1 else "", now_iso())


def write_baseline(baseline: Baseline, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(baseline.to_dict(), indent=2) + "\n")
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
    if data.get("format_version") != BASELINE_FORMAT_VERSION:
        raise CheckError(f"{path}: baseline format_version {data.get('format_version')!r} is not supported "
                         f"(this superbench reads {BASELINE_FORMAT_VERSION})")
    if not isinstance(data.get("upstream"), str) or not data["upstream"]:
        raise CheckError(f"{path}: baseline has no upstream name")
    tasks_in = data.get("tasks")
    if not isinstance(tasks_in, dict) or not tasks_in:
        raise CheckError(f"{path}: baseline lists no tasks")
    tasks = {}
    for task, entry in tasks_in.items():
        if task not in TASKS:
            raise CheckError(f"{path}: tasks.{task}: {TASKS.unknown_message(task)}")
        try:
            tb = TaskBaseline(str(entry["metric"]), bool(entry["higher_is_better"]), float(entry["mean"]),
                              float(entry.get("std", 0.0) or 0.0), int(entry.get("n", 1)),
                              str(entry["recipe_version"]), str(entry.get("profile", "superb")))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckError(f"{path}: tasks.{task}: missing or bad field ({exc!r})") from exc
        if not math.isfinite(tb.mean):
            raise CheckError(f"{path}: tasks.{task}: mean is {tb.mean}, not a finite number")
        spec = TASKS.get(task)
        if tb.metric != spec.metric or tb.higher_is_better != spec.higher_is_better:
            raise CheckError(f"{path}: tasks.{task}: metric {tb.metric!r} (higher_is_better="
                             f"{tb.higher_is_better}) does not match task {task!r} ({spec.metric}, "
                             f"{spec.direction})")
        tasks[task] = tb
    return Baseline(data["upstream"], tasks, str(data.get("upstream_fingerprint", "")),
                    str(data.get("created_at", "")))


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
    status: str  # "ok", "improved", "REGRESSED", "missing"

    @property
    def delta(self) -> float | None:
        return None if self.current is None else self.current - self.baseline


@dataclass
class CheckReport:
    upstream: str
    rows: list[CheckRow]
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == "REGRESSED"]

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressed else EXIT_OK

    def format(self) -> str:
        head = ["task", "metric", "baseline", "current", "delta", "allowed", "status"]
        body = []
        for r in self.rows:
            arrow = "↑" if r.higher_is_better else "↓"
            cur = "–" if r.current is None else f"{r.current:.2f} ± {_std(r.current_std):.2f} (n={r.n})"
            delta = "–" if r.delta is None else f"{r.delta:+.2f}"
            body.append([r.task, f"{r.metric} {arrow}", f"{r.baseline:.2f} ± {r.baseline_std:.2f}", cur, delta,
                         f"{r.allowed:.2f}", r.status])
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head] + body]
        verdict = (f"FAIL: {len(self.regressed)} task(s) regressed for {self.upstream}: "
                   f"{', '.join(r.task for r in self.regressed)}" if self.regressed
                   else f"OK: no regression for {self.upstream} ({len(self.rows)} task(s) checked)")
        return "\n".join(lines + [f"note: {n}" for n in self.notes] + [verdict]) + "\n"


def compare(baseline: Baseline, records: Iterable[ResultRecord], *, tolerance: float = 0.5,
            std_tolerance: float = 2.0, allow_missing: bool = False) -> CheckReport:
    """Compare current results with a baseline; raises CheckError when they are not comparable."""
    if tolerance < 0 or std_tolerance < 0 or not math.isfinite(tolerance) or not math.isfinite(std_tolerance):
        raise CheckError(f"--tolerance and --std-tolerance must be finite and >= 0 "
                         f"(got {tolerance}, {std_tolerance})")
    recs = _select(records, baseline.upstream)
    long = aggregate(recs)
    rows: list[CheckRow] = []
    problems: list[str] = []
    notes: list[str] = []
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
            continue
        if len(same) > 1:
            match = same[same["upstream_fingerprint"] == baseline.upstream_fingerprint]
            if len(match) != 1:
                fps = ", ".join(sorted(str(x)[:12] for x in same["upstream_fingerprint"]))
                problems.append(f"task {task}: current results come from several weights of "
                                f"{baseline.upstream!r} (fingerprints {fps}); keep one (--records DIR)")
                continue
            same = match
        r = same.iloc[0]
        if baseline.upstream_fingerprint and r["upstream_fingerprint"] != baseline.upstream_fingerprint:
            notes.append(f"{task}: upstream fingerprint changed ({baseline.upstream_fingerprint[:12]} -> "
                         f"{str(r['upstream_fingerprint'])[:12]})")
        current, cstd = float(r["mean"]), _std(r["std"])
        allowed = max(tolerance, std_tolerance * max(tb.std, cstd))
        worse = (tb.mean - current) if tb.higher_is_better else (current - tb.mean)
        status = "REGRESSED" if worse > allowed + 1e-9 else ("improved" if worse < -allowed - 1e-9 else "ok")
        rows.append(CheckRow(task, tb.metric, tb.higher_is_better, tb.mean, tb.std, current, cstd,
                             int(r["n"]), allowed, status))
    if problems:
        raise CheckError("cannot check against the baseline:\n  " + "\n  ".join(problems))
    extra = sorted(set(long["task"]) - set(baseline.tasks))
    if extra:
        notes.append(f"tasks without a baseline (not checked): {', '.join(extra)}")
    return CheckReport(baseline.upstream, rows, notes)

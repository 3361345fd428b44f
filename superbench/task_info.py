"""What a result record says about its task, so it can be read without the task's code.

A record carries a `TaskInfo`: its metric (name, direction, plausible range, unit), each
secondary metric likewise, the cache level, the column order and a description. Validating,
aggregating, scoring and gating a record need nothing else, so a plugin task's records are
read by `leaderboard`, `report` and `check` in a process that never imported the plugin.
The task registry is consulted only to *run* a task (and to upgrade records written before
they described themselves).

Readers ask `describe_task(name)` (in `superbench.tasks`): the registered declaration when
there is one, else the description the records read in this process carried (`learn`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: Plausible ranges of a metric in percent. Accuracy-like metrics (acc, F1, EER) lie in [0, 100];
#: edit-distance error rates (PER, WER, CER, DER) count insertions, so they can exceed 100 but not
#: 1000, beyond which the number is a bug, not a measurement. A metric declared without one gets
#: `UNBOUNDED`: any finite value within +-1e9.
PERCENT = (0.0, 100.0)
ERROR_RATE = (0.0, 1000.0)
UNBOUNDED = (-1e9, 1e9)
#: Column position of tasks that do not say (plugins): after the SUPERB ones, alphabetically.
UNORDERED = 1000
LEVELS = ("utterance", "frame")
#: How headers spell a metric whose name is not simply its upper case.
METRIC_DISPLAY = {"sisdri": "SI-SDRi", "sisdr": "SI-SDR"}


@dataclass(frozen=True)
class MetricInfo:
    """One metric as a record states it: enough to range-check, compare and rank its values."""

    name: str
    higher_is_better: bool
    low: float = UNBOUNDED[0]
    high: float = UNBOUNDED[1]
    unit: str = "%"

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def label(self) -> str:
        """The metric with its unit, as table headers and axes show it: "ACC%", "SI-SDRi dB", "PESQ" (a metric
        that is its own scale)."""
        name = METRIC_DISPLAY.get(self.name, self.name.upper())
        if self.unit == "%":
            return f"{name}%"
        return name if self.unit.upper() == name or not self.unit else f"{name} {self.unit}"

    def value_problem(self, value: object, role: str = "value") -> str | None:
        """Why `value` is not a plausible score of this metric (None when it is)."""
        if not is_real(value):
            return f"{role} metric is {value!r}, not a number"
        if not math.isfinite(value):
            return f"{role} metric is {float(value)}, not a finite number"
        if not self.low <= value <= self.high:
            return (f"{role} metric is {value!r}, outside [{self.low:g}, {self.high:g}] for metric "
                    f"{self.name!r} ({self.unit})")
        return None


@dataclass(frozen=True)
class TaskInfo:
    """A task as its records describe it (see the module docstring)."""

    metric: MetricInfo
    secondary: tuple[MetricInfo, ...] = ()
    level: str = ""
    order: int = UNORDERED
    description: str = ""
    kind: str = ""

    def metric_named(self, name: str) -> MetricInfo | None:
        """The main or a secondary metric by name."""
        return next((m for m in (self.metric, *self.secondary) if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["secondary"] = [asdict(m) for m in self.secondary]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "TaskInfo":
        """Parse a record's `task_info`; raises ValueError naming every problem."""
        problems = task_info_problems(data)
        if problems:
            raise ValueError("task_info: " + "; ".join(problems))
        return cls(metric=MetricInfo(**data["metric"]),
                   secondary=tuple(MetricInfo(**m) for m in data.get("secondary", ())),
                   level=data.get("level", ""), order=data.get("order", UNORDERED),
                   description=data.get("description", ""), kind=data.get("kind", ""))


def is_real(value: object) -> bool:
    """A real number (int or float), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metric_problems(data: Any, where: str) -> list[str]:
    if not isinstance(data, dict):
        return [f"{where} is {data!r}, not an object"]
    unknown = sorted(set(data) - {"name", "higher_is_better", "low", "high", "unit"})
    problems = [f"{where} has unknown field(s) {unknown}"] if unknown else []
    if not isinstance(data.get("name"), str) or not data.get("name"):
        problems.append(f"{where}.name is {data.get('name')!r}, not a non-empty string")
    if not isinstance(data.get("higher_is_better"), bool):
        problems.append(f"{where}.higher_is_better is {data.get('higher_is_better')!r}, not true/false")
    low, high = data.get("low", UNBOUNDED[0]), data.get("high", UNBOUNDED[1])
    if not (is_real(low) and is_real(high) and math.isfinite(low) and math.isfinite(high) and low < high):
        problems.append(f"{where} range [{low!r}, {high!r}] is not two finite numbers, low < high")
    if not isinstance(data.get("unit", "%"), str):
        problems.append(f"{where}.unit is {data.get('unit')!r}, not a string")
    return problems


def task_info_problems(data: Any) -> list[str]:
    """Every way `data` is not a task description (empty when it is one)."""
    if not isinstance(data, dict):
        return [f"is {data!r}, not an object"]
    unknown = sorted(set(data) - {"metric", "secondary", "level", "order", "description", "kind"})
    problems = [f"unknown field(s) {unknown}"] if unknown else []
    problems += _metric_problems(data.get("metric"), "metric")
    secondary = data.get("secondary", [])
    if not isinstance(secondary, list):
        problems.append(f"secondary is {secondary!r}, not a list")
        secondary = []
    for i, m in enumerate(secondary):
        problems += _metric_problems(m, f"secondary[{i}]")
    names = [m.get("name") for m in [data.get("metric"), *secondary] if isinstance(m, dict)]
    if len(set(map(str, names))) != len(names):
        problems.append(f"metric names {names} are not distinct")
    if data.get("level", "") not in ("", *LEVELS):
        problems.append(f"level is {data.get('level')!r}, not one of {LEVELS}")
    order = data.get("order", UNORDERED)
    if isinstance(order, bool) or not isinstance(order, int):
        problems.append(f"order is {order!r}, not an integer")
    for name in ("description", "kind"):
        if not isinstance(data.get(name, ""), str):
            problems.append(f"{name} is {data.get(name)!r}, not a string")
    return problems


#: Descriptions carried by the records this process has read, for tasks it has not registered.
_LEARNED: dict[str, TaskInfo] = {}


def learn(task: str, info: TaskInfo) -> None:
    """Remember what a valid record said about its task (the newest reading wins)."""
    _LEARNED[task] = info


def learned(task: str) -> TaskInfo | None:
    return _LEARNED.get(task)


def forget_learned() -> None:
    """Forget what records taught this process (tests start each case from a clean slate)."""
    _LEARNED.clear()

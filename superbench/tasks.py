"""Task metadata: what each SUPERB task measures, declared once.

Hyper-parameters are not here: they live in the versioned recipes under
`recipes/<task>.yaml`. This module only says what a task *is*, so the runner,
the leaderboard and `check` agree on metric names and directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from superbench.registry import Registry


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    metric: str  # reported in percent
    higher_is_better: bool
    level: str  # "utterance" (pooled features suffice) or "frame"
    label_field: str  # manifest field holding the target

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


TASKS: Registry[Task] = Registry("task")

for _task in (
    Task("pr", "Phoneme recognition: CTC over phones", "per", False, "frame", "phones"),
    Task("asr", "Automatic speech recognition: CTC over characters", "wer", False, "frame", "text"),
    Task("ks", "Keyword spotting: 10 words + unknown + silence", "acc", True, "utterance", "label"),
    Task("sid", "Speaker identification: closed set", "acc", True, "utterance", "label"),
    Task("er", "Emotion recognition: 4 classes, mean over folds", "acc", True, "utterance", "label"),
):
    TASKS.register(_task.name, _task)

TASK_ORDER = ["pr", "ks", "sid", "er", "asr"]


def in_task_order(names: Iterable[str]) -> list[str]:
    """Distinct task names in SUPERB's column order, any others after them alphabetically."""
    names = set(names)
    return [t for t in TASK_ORDER if t in names] + sorted(names - set(TASK_ORDER))


def get_task(name: str) -> Task:
    return TASKS.get(name.lower())

"""What a task is: one declaration, with its behaviour coming from its task kind.

A task module (the built-ins are `recipes/<task>.py`, next to their recipe YAML)
declares, with keyword fields, everything the runner needs:

    TASK = Task(name="ks", description="Keyword spotting ...", metric="acc", higher_is_better=True,
                target="label", kind=UtteranceClassification(), recipe=Path(__file__).with_suffix(".yaml"),
                order=2)

The *kind* (MTEB's task type) supplies the behaviour shared by every task of that
shape: which cache level it reads, what its recipe's `head` section holds, how it
checks a manifest, and how it builds the objective, the targets and the head. The
runner therefore has no per-task branches, and a new task is its module plus its
recipe. Tasks are found through `TASKS`, fed by the entry-point group
`superbench.tasks` (built-ins and plugin packages alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from superbench.downstream import Head, Objective
from superbench.manifest import TaskManifest, Utterance
from superbench.recipe import Recipe, load_recipe
from superbench.registry import Registry, load_object_from_file
from superbench.task_info import LEVELS, UNBOUNDED, UNORDERED, MetricInfo, TaskInfo, learned

#: Where the built-in tasks' paper reference points come from.
SUPERB_LEADERBOARD = ("https://superbbenchmark.org/leaderboard (reference points of its overall score: "
                      "superbbenchmark/website-react frontend/src/Data.js; FBANK re-run for KS/IC/SID/ER, "
                      "website-react commit 025458a)")
#: Where the SUPERB-SG tasks' (SE, SS) reference points come from: superbench's choice, as SUPERB-SG defines
#: no overall score (see leaderboard/score.py, the "SG score").
SUPERB_SG_REFERENCE = ("superbench's choice of reference points, not an official definition (SUPERB-SG defines "
                       "no overall score): FBANK = the SUPERB leaderboard's FBANK row, SOTA = its best row "
                       "(WavLM Large), github.com/superbbenchmark/superbbenchmark.github.io src/data/public.json "
                       "(commit 2935745)")


@dataclass
class TaskSetup:
    """What one run of a task trains: objective, the target of each utterance, and a head factory."""

    objective: Objective
    target_of: Callable[[Utterance], Any]
    make_head: Callable[[], Head]
    #: Stacks K heads of `make_head` for training them as one group (superbench.trial_group); None when
    #: the kind has no batched form (frame-level heads train one at a time).
    stack: Callable[[list[torch.nn.Module]], Any] | None = None
    #: Replaces `superbench.training.train` for a kind that is not trained by gradient steps (QbE's DTW
    #: over each layer, the layer chosen on dev): same arguments, returns a `TrainResult`. None: `train`.
    fit: Callable[..., Any] | None = None


class TaskKind:
    """Behaviour shared by all tasks of one shape (utterance classification, CTC transcription, ...):
    subclass it. Required: `level`, `head_config`, `setup`. Optional, with defaults: `check` (no
    checks beyond the task's own), `wants_frame_rate` (False), `checks_targets` (False)."""

    #: Cache level the head reads: "utterance" (per-layer means suffice) or "frame".
    level: str
    #: Dataclass of the recipe's `head` section (validated on load, unknown keys refused).
    head_config: type
    #: True: `setup` also receives the upstream's `downsample_rate` and `sample_rate` as keywords, for
    #: labels placed on the upstream's frames (SD).
    wants_frame_rate: bool = False
    #: True: `check` runs before the task's own check for rows without a target, and names their file and
    #: line itself (speech translation).
    checks_targets: bool = False

    def check(self, task: Task, manifest: TaskManifest) -> None:
        """Raise ValueError (naming rows) when the manifest cannot train this kind of head."""

    def setup(self, task: Task, manifest: TaskManifest, head: Any, num_layers: int, hidden_size: int,
              layer: int | str | None, **frame_rate: int) -> TaskSetup:
        """Objective, targets and a fresh-head factory for `manifest` and the recipe's head section
        (`frame_rate`: `downsample_rate` and `sample_rate` for a kind that `wants_frame_rate`)."""
        raise NotImplementedError


@dataclass(frozen=True)
class PaperReference:
    """A task's FBANK and SOTA points on the official SUPERB leaderboard (in the metric's unit: percent, PESQ
    or dB), for the `paper` score; `source` says where they come from (the SUPERB-SG tasks' points are
    superbench's own choice, `SUPERB_SG_REFERENCE`).

    The leaderboard's FBANK row is a re-run without CMVN for KS, SID and ER, so those values
    differ from the FBANK row of the SUPERB paper (Yang et al., Interspeech 2021, Table 3).
    """

    fbank: float
    sota: float
    source: str = SUPERB_LEADERBOARD


@dataclass(frozen=True)
class SecondaryMetric:
    """A metric a task reports beside its main one (SF's slot-value CER beside slot-type F1).

    The main metric selects the learning rate and the checkpoint; a secondary metric is computed
    on the selected head (the objective's `secondary_scores`) and, when it has a paper reference,
    counts in the SUPERB score with the main one (a task's score is the mean over its metrics).
    """

    name: str  # the metric's name, in percent, e.g. "cer"
    higher_is_better: bool
    paper_reference: PaperReference | None = None
    #: Plausible values (`superbench.task_info.PERCENT`, `ERROR_RATE`, ...), checked on every record.
    range: tuple[float, float] = UNBOUNDED
    #: The metric's unit: "%" for the SUPERB metrics; "dB" (SI-SDR improvement), "PESQ" (a MOS-LQO scale), ...
    unit: str = "%"

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(self.name, self.higher_is_better, *self.range, unit=self.unit)

    @property
    def direction(self) -> str:
        return self.info.direction


@dataclass(frozen=True)
class Task:
    """A task declaration: metadata, the manifest field it learns, its kind and its recipe file."""

    name: str
    description: str
    metric: str  # reported in percent, unless `metric_unit` says otherwise
    higher_is_better: bool
    target: str  # manifest field holding the target (the manifest's `label_field`)
    kind: TaskKind
    recipe: Path  # the versioned recipe YAML (profiles with upstream / head / train sections)
    order: int = UNORDERED  # column position in tables (SUPERB's paper order for the built-ins)
    paper_reference: PaperReference | None = None  # None: the task has no official SUPERB points
    #: Metrics reported beside `metric` (computed on the dev-selected head), e.g. SF's slot-value CER.
    secondary_metrics: tuple[SecondaryMetric, ...] = ()
    #: Plausible values of `metric` (`superbench.task_info.PERCENT`, `ERROR_RATE`, ...), checked on every record.
    metric_range: tuple[float, float] = UNBOUNDED
    #: Unit of `metric`: "%" (every SUPERB metric) or another one a record then states ("PESQ", "dB").
    metric_unit: str = "%"
    #: A name several tasks share, which `--task` expands to all of them (SUPERB-SG's "ood_asr": the four
    #: out-of-domain ASR tasks); None: the task belongs to no group. A group may not be named as a task.
    group: str | None = None

    def __post_init__(self) -> None:
        if self.kind.level not in LEVELS:
            raise ValueError(f"task {self.name}: kind level must be one of {LEVELS}, got {self.kind.level!r}")
        names = [self.metric] + [m.name for m in self.secondary_metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name}: metric names must be distinct, got {names}")

    @property
    def level(self) -> str:
        return self.kind.level

    @property
    def direction(self) -> str:
        return self.info.metric.direction

    @property
    def info(self) -> TaskInfo:
        """What every record of this task carries about it, so readers need not import it."""
        return TaskInfo(metric=MetricInfo(self.metric, self.higher_is_better, *self.metric_range,
                                          unit=self.metric_unit),
                        secondary=tuple(m.info for m in self.secondary_metrics), level=self.level,
                        order=self.order, description=self.description, kind=type(self.kind).__name__)

    def load_recipe(self, profile: str) -> Recipe:
        """One profile of this task's recipe, validated (typed sections, no unknown keys)."""
        return load_recipe(self.recipe, profile, task=self.name, head_config=self.kind.head_config)

    def check_manifest(self, manifest: TaskManifest) -> None:
        """Refuse a manifest that cannot train this task, before any feature is extracted."""
        where = manifest.root
        if manifest.task != self.name:
            raise ValueError(f"{where}: manifest is for task {manifest.task!r}, not {self.name!r}")
        if manifest.label_field != self.target:
            raise ValueError(f"{where}: task {self.name} needs {self.target!r} labels, the manifest "
                             f"has {manifest.label_field!r}")
        if self.kind.checks_targets:
            self.kind.check(self, manifest)
        for fold in manifest.folds:
            for split in (fold.train, fold.dev, fold.test):
                rows = manifest.splits[split]
                if not rows:
                    raise ValueError(f"{where}: split {split!r} (fold {fold.name}) is empty")
                lacking = [u.id for u in rows if not u.targets.get(self.target)]
                if lacking:
                    raise ValueError(f"{where}/{split}.jsonl: {len(lacking)} row(s) lack the "
                                     f"{self.target!r} label, e.g. {lacking[:3]}")
        if not self.kind.checks_targets:
            self.kind.check(self, manifest)


TASKS: Registry[Task] = Registry("task", entry_point_group="superbench.tasks")


def get_task(name: str) -> Task:
    return TASKS.get(name.lower())


def all_tasks() -> list[Task]:
    """Every registered task in column order."""
    return [TASKS.get(n) for n in in_task_order(TASKS.names())]


def registered_task_info(name: str) -> TaskInfo | None:
    """The description of an installed (registered) task; None for any other name."""
    return TASKS.get(name).info if name in TASKS else None


def describe_task(name: str) -> TaskInfo | None:
    """What readers know about a task: its declaration when registered, else the description its
    records carried (`superbench.task_info.learn`); None for a task neither registered nor read."""
    return registered_task_info(name) or learned(name)


def in_task_order(names: Iterable[str]) -> list[str]:
    """Distinct task names in column order (SUPERB's for the built-ins), unknown ones last, alphabetically."""
    def position(name: str) -> tuple[int, str]:
        info = describe_task(name)
        return (info.order if info else UNORDERED + 1, name)

    return sorted(set(names), key=position)


def task_groups() -> dict[str, list[str]]:
    """{group name: its registered tasks in column order} (`Task.group`). A group named as a task would make
    `--task NAME` ambiguous, so it is refused here, naming both."""
    groups: dict[str, list[str]] = {}
    for task in all_tasks():
        if task.group is not None:
            groups.setdefault(task.group, []).append(task.name)
    for group, members in groups.items():
        if group in TASKS:
            raise ValueError(f"task group {group!r} (tasks {', '.join(members)}) has the name of the task "
                             f"{group!r} ({TASKS.source(group)}); rename one of them")
    return groups


def resolve_tasks(spec: str) -> list[Task]:
    """`all`, a name, a group name (`Task.group`: every task of the group), a comma-separated list, or
    `file.py:NAME` (a task declared in a plugin file, registered on the way); every name is checked before
    anything runs, and a task named twice runs once."""
    if spec.strip() == "all":
        return all_tasks()
    out: list[Task] = []
    groups = task_groups()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part.lower() in groups:
            out += [get_task(n) for n in groups[part.lower()] if get_task(n) not in out]
            continue
        if ".py:" in part:
            task = load_object_from_file(part)
            if not isinstance(task, Task):
                raise ValueError(f"{part} is a {type(task).__name__}, not a superbench Task")
            if task.name not in TASKS:
                TASKS.register(task.name, task, source=f"file {part}")
            elif TASKS.get(task.name) is not task:
                raise ValueError(f"{part} declares task {task.name!r}, which is already registered by "
                                 f"{TASKS.source(task.name)}")
            out.append(task)
        elif get_task(part) not in out:
            out.append(get_task(part))
    return out

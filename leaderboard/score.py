"""SUPERB score: one number per upstream, always reported with its task set.

    score_task = 1000 * (m - m_FBANK) / (m_SOTA - m_FBANK)
    SUPERB score = mean of score_task over the tasks present

FBANK maps to 0 and SOTA to 1000 on every task; the same formula handles error
rates (their SOTA is lower, so the denominator is negative). Scores are not
capped: worse than FBANK is negative, better than SOTA exceeds 1000.

Two reference modes, named in every output:
- `paper`: the official leaderboard's reference points, declared by each task
  (`Task.paper_reference`, with its source). Meaningful only for full-protocol runs
  on the official data. The leaderboard's score follows SUPERB-SG (Tsai et al., ACL
  2022, "SUPERB score"); worked example (tests/test_score.py): HuBERT Base with PR
  5.41, KS 96.30, SID 81.42, ER 64.92, ASR 6.42 scores about 912.1 over these five.
- `local`: FBANK measured here (the `fbank` upstream's records on the same data,
  recipe version and profile) and SOTA = the best row scored in that group per task
  (every fingerprint and layer probe included), so no task score exceeds 1000 and a
  row that is best on every task scores exactly 1000.
  Use it for shrunken profiles / other corpora where paper constants do not apply.

Default (no `--reference`): `local` when every measured row is on a known corpus that
is not one of SUPERB's (`OFFICIAL_CORPORA`; the demo corpus is "superbench-demo"),
`paper` otherwise; the leaderboard's notes say which and why.

A score over five tasks is not comparable with the official ten-task score, nor
with a score over a different subset; `SuperbScore.tasks` travels with the value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from superbench.tasks import TASKS, all_tasks, in_task_order

REFERENCE_MODES = ("paper", "local")
FBANK_UPSTREAM = "fbank"
#: Corpus names (manifest `corpus`) of SUPERB's own data, as the `superbench data prepare` preparers
#: write them; the paper reference points mean something only there.
OFFICIAL_CORPORA = frozenset({"librispeech", "speech_commands", "voxceleb1", "iemocap"})


def default_reference(corpora: Iterable[str]) -> tuple[str, str]:
    """(mode, why): `local` when every corpus is known and unofficial, else `paper`."""
    names = sorted(set(corpora))
    if not names:
        return "paper", "no measured rows"
    unknown = [c for c in names if not c]
    official = [c for c in names if c in OFFICIAL_CORPORA]
    if official:
        return "paper", f"rows on SUPERB corpora ({', '.join(official)})"
    if unknown:
        return "paper", "some records do not name their corpus"
    return "local", (f"every row is on a corpus that is not SUPERB's ({', '.join(names)}), where the paper's "
                     f"reference points mean nothing")


@dataclass(frozen=True)
class Reference:
    """FBANK and SOTA values of one task's metric (percent)."""

    task: str
    metric: str
    fbank: float
    sota: float
    source: str = ""

    def score(self, value: float) -> float:
        """1000 * (m - FBANK) / (SOTA - FBANK); NaN if the reference is degenerate."""
        span = self.sota - self.fbank
        if span == 0 or not math.isfinite(span):
            return math.nan
        return 1000.0 * (value - self.fbank) / span


@dataclass
class SuperbScore:
    """A SUPERB score together with what it is computed over."""

    score: float
    tasks: tuple[str, ...]
    per_task: dict[str, float]
    reference: str
    missing: tuple[str, ...] = field(default=())  # tasks with a metric but no usable reference

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def label(self) -> str:
        """e.g. '912.1 (5 tasks: pr,ks,sid,er,asr; paper ref)'."""
        if not self.tasks:
            return "n/a"
        return f"{self.score:.1f} ({self.n_tasks} tasks: {','.join(self.tasks)}; {self.reference} ref)"


def _ordered(tasks: Iterable[str]) -> tuple[str, ...]:
    return tuple(in_task_order(tasks))


def paper_references() -> dict[str, Reference]:
    """The published reference points of every registered task that declares them."""
    return {t.name: Reference(t.name, t.metric, t.paper_reference.fbank, t.paper_reference.sota,
                              t.paper_reference.source)
            for t in all_tasks() if t.paper_reference is not None}


def local_references(task_means: Mapping[str, Mapping[str, float]],
                     fbank_upstream: str = FBANK_UPSTREAM) -> dict[str, Reference]:
    """References measured in this store.

    `task_means` maps upstream -> {task: mean metric} for ONE comparable group
    (same recipe version, profile and data). FBANK is `fbank_upstream`'s mean;
    SOTA is the best mean over all upstreams (direction-aware). Tasks without an
    FBANK measurement get no reference (and are listed as missing in scores).
    """
    fbank = task_means.get(fbank_upstream, {})
    refs = {}
    for task, fb in fbank.items():
        if task not in TASKS or not math.isfinite(fb):
            continue
        spec = TASKS.get(task)
        values = [m[task] for m in task_means.values() if task in m and math.isfinite(m[task])]
        best = max(values) if spec.higher_is_better else min(values)
        refs[task] = Reference(task, spec.metric, fb, best, f"local: {fbank_upstream} vs best upstream in store")
    return refs


def superb_score(metrics: Mapping[str, float], references: Mapping[str, Reference],
                 reference: str = "paper") -> SuperbScore:
    """Average per-task scores over the tasks that have both a metric and a usable reference."""
    per_task, missing = {}, []
    for task in _ordered(metrics):
        value = metrics[task]
        ref = references.get(task)
        s = ref.score(value) if ref is not None and math.isfinite(value) else math.nan
        if math.isnan(s):
            missing.append(task)
        else:
            per_task[task] = s
    tasks = _ordered(per_task)
    score = sum(per_task.values()) / len(per_task) if per_task else math.nan
    return SuperbScore(score, tasks, per_task, reference, tuple(missing))

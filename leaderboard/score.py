"""SUPERB score: one number per upstream, always reported with its task set.

    score_metric = 1000 * (m - m_FBANK) / (m_SOTA - m_FBANK)
    score_task = mean of score_metric over the task's metrics (SUPERB-SG)
    SUPERB score = mean of score_task over the tasks present

A task with a secondary metric (`Task.secondary_metrics`, e.g. SF: slot-type F1 and
slot-value CER) counts once, as the mean of its metrics' scores, each scaled with its
own reference points. Metrics are keyed by column key: the task's name for its main
metric, 'task/metric' for a secondary one ('sf/cer'; `superbench.summary.metric_column`).
A row that lacks a metric the others count (a record from before secondary metrics) is
scored on what it has and says so (`SuperbScore.partial`).

FBANK maps to 0 and SOTA to 1000 on every task; the same formula handles error
rates (their SOTA is lower, so the denominator is negative). Scores are not
capped: worse than FBANK is negative, better than SOTA exceeds 1000.

Two reference modes, named in every output:
- `paper`: the official leaderboard's reference points, declared by each task
  (`Task.paper_reference`, with its source). Meaningful only for full-protocol runs
  on the official data. The leaderboard's score follows SUPERB-SG (Tsai et al., ACL
  2022, "SUPERB score"); worked example (tests/test_score.py): HuBERT Base with PR
  5.41, KS 96.30, SID 81.42, ER 64.92, ASR 6.42 scores about 912.1 over these five;
  over all ten tasks its leaderboard row scores 941, as the leaderboard's own scoring
  code gives it (tests/test_official_score.py reproduces nine leaderboard rows).
- `local`: FBANK measured here (the `fbank` upstream's records on the same data,
  recipe version and profile) and SOTA = the best row scored in that group per task
  (every fingerprint and layer probe included), so no task score exceeds 1000 and a
  row that is best on every task scores exactly 1000.
  Use it for shrunken profiles / other corpora where paper constants do not apply.

Default (no `--reference`): `local` when every measured row is on a known corpus that
is not one of SUPERB's (`OFFICIAL_CORPORA`; the demo corpus is "superbench-demo"),
`paper` otherwise; the leaderboard's notes say which and why.

The score's uncertainty (`score_interval`): each task's metrics are bootstrapped over their test
units (`superbench.uncertainty.bootstrap`), every task on its own random stream (`task_stream`), so
tasks are resampled independently while a task's metrics (SF's F1 and CER) share one draw of its
utterances; every draw is scored with the formula above and the percentile interval is taken. The
reference points are held fixed: the interval is the test sets' sampling noise of this model's
numbers, not the uncertainty of FBANK's or SOTA's.

A score over five tasks is not comparable with the official ten-task score, nor
with a score over a different subset; `SuperbScore.tasks` travels with the value, and
`SuperbScore.official` / `.scope()` say in every output (label, table's 'score tasks',
JSON's `superb_score.official` and `.scope`, the HTML report) whether a number is the
official SUPERB score: `paper` points, exactly `SUPERB_TASKS`, every metric counted.

The SUPERB score never counts the SUPERB-SG tasks (`SUPERB_SG_TASKS`: SE, SS, VC), in either mode: it
averages SUPERB's tasks and plugin tasks. SUPERB-SG (Tsai et al., ACL 2022) defines no overall score, so
superbench adds its own, the "SG score" (`suite="sg"` of `superb_score` / `score_interval`; `sg_score`):
the same formula over the SUPERB-SG tasks present, counting the metrics SUPERB-SG's table reports (SE:
PESQ and STOI; SS: SI-SDRi; the metrics that declare paper points) in both modes. Its `paper` points are
superbench's choice (`superbench.tasks.SUPERB_SG_REFERENCE`: the SUPERB leaderboard's FBANK row and its
best row, WavLM Large), its `local` points those of the SUPERB score. Every output names it
`SG_SCOPE`, never "official" (`SuperbScore.scope()`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from superbench.summary import metric_column, split_metric_column
from superbench.tasks import all_tasks, describe_task, in_task_order
from superbench.uncertainty import LEVEL, RESAMPLES, SEED, Seeds, bootstrap, percentile_interval, value_of

REFERENCE_MODES = ("paper", "local")
#: The ten tasks of the SUPERB paper (Yang et al., Interspeech 2021): the official SUPERB score averages
#: exactly these, in `paper` mode. A score over any other set is partial and says so everywhere.
SUPERB_TASKS = ("pr", "ks", "ic", "sid", "er", "asr", "qbe", "sf", "sv", "sd")
#: The out-of-domain ASR tasks of SUPERB-SG, whose mean test WER/CER is its OOD-ASR aggregate (`ood_asr_mean`).
OOD_ASR_TASKS = ("ood_es", "ood_zh", "ood_ar", "ood_sbcsae")
#: The SUPERB-SG tasks: never counted in the SUPERB score, only in superbench's own SG score. VC declares no paper
#: points (the paper's numbers come from another vocoder and recogniser), so it counts there in `local` mode only,
#: by its main metric, MCD.
SUPERB_SG_TASKS = ("se", "ss", "st", *OOD_ASR_TASKS, "vc")
#: The score suites: "superb" (SUPERB's tasks and plugin tasks) and "sg" (`SUPERB_SG_TASKS`).
SUITES = ("superb", "sg")
#: What the SG score is, said in every output that shows it.
SG_SCOPE = "superbench's own SUPERB-SG aggregate (SUPERB-SG defines no overall score)"
#: The OOD-ASR aggregate's key: its column in tables (CSV, JSON, sort) and its task name in published CSVs.
OOD_ASR_KEY = "ood_asr"
#: The OOD-ASR aggregate's header.
OOD_ASR_HEADER = "OOD-ASR mean WER/CER ↓"
#: What the OOD-ASR aggregate is, said in every output that shows it.
OOD_ASR_SCOPE = ("SUPERB-SG's OOD-ASR aggregate: the mean of the test error rates of its four out-of-domain ASR "
                 "tasks (WER for ood_es, ood_ar and ood_sbcsae, CER for ood_zh), shown only for a row that has all "
                 "four (never a mean over fewer, which would not compare with SUPERB-SG's); not a score: lower is "
                 "better, and it does not enter the SUPERB or SG score")
NOT_OFFICIAL = "not the official SUPERB score"
FBANK_UPSTREAM = "fbank"
#: Corpus names (manifest `corpus`) of SUPERB's and SUPERB-SG's own data, as the `superbench data prepare`
#: preparers write them; the paper reference points mean something only there.
OFFICIAL_CORPORA = frozenset({"librispeech", "speech_commands", "voxceleb1", "iemocap", "fluent_speech_commands",
                              "snips", "quesst14", "librimix", "voicebank-demand", "libri2mix", "covost2",
                              "common-voice", "sbcsae"})


def suite_of(task: str) -> str:
    """'sg' for a SUPERB-SG task, 'superb' for every other one (SUPERB's tasks and plugin tasks)."""
    return "sg" if task in SUPERB_SG_TASKS else "superb"


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
    """A SUPERB score together with what it is computed over.

    `per_task` holds each task's score (the mean of its metrics' scores, SUPERB-SG), `per_metric`
    each metric's score by column key ('sf', 'sf/cer'); `partial` names, per task, the metrics that
    would count but did not (no value, e.g. a record from before secondary metrics, or no reference).
    """

    score: float
    tasks: tuple[str, ...]
    per_task: dict[str, float]
    reference: str
    missing: tuple[str, ...] = field(default=())  # tasks with a metric but no usable reference
    per_metric: dict[str, float] = field(default_factory=dict)
    partial: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: "superb": the SUPERB score; "sg": superbench's own SUPERB-SG aggregate (`SG_SCOPE`).
    suite: str = "superb"

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Column keys of every metric that counted, in column order."""
        return tuple(self.per_metric)

    def partial_text(self) -> str:
        """e.g. 'sf: f1 only, no cer'; '' when every task counted with all its metrics."""
        parts = []
        for task, left_out in self.partial.items():
            used = [_metric_name(c) for c in self.per_metric if split_metric_column(c)[0] == task]
            parts.append(f"{task}: {'+'.join(used)} only, no {'+'.join(left_out)}")
        return "; ".join(parts)

    @property
    def official(self) -> bool:
        """True only for the official SUPERB score's definition: `paper` reference points, exactly the ten
        SUPERB tasks, every metric of each (SF: F1 and CER) counted. Never the SG score."""
        return (self.suite == "superb" and self.reference == "paper" and set(self.tasks) == set(SUPERB_TASKS)
                and not self.partial)

    def _scope_texts(self) -> tuple[str, str]:
        """(sentence, table cell): one decision of what the number is, in both lengths."""
        if not self.tasks:
            return "no score", ""
        if self.suite == "sg":
            return f"{SG_SCOPE}; {self.reference} reference points", "superbench's own SG aggregate"
        if self.official:
            return "official SUPERB score (10 tasks, paper reference points)", "official"
        if self.reference != "paper":
            return f"{self.reference} reference points: {NOT_OFFICIAL}", f"not official: {self.reference} ref"
        if set(self.tasks) == set(SUPERB_TASKS):
            return f"partial (a task lacks a metric): {NOT_OFFICIAL}", "not official: metric missing"
        n = len(set(self.tasks) & set(SUPERB_TASKS))
        return f"partial ({n} of SUPERB's 10 tasks): {NOT_OFFICIAL}", f"not official: {n}/10 SUPERB tasks"

    def scope(self) -> str:
        """What the number is, said so that a partial score is never taken for the official one."""
        return self._scope_texts()[0]

    def short_scope(self) -> str:
        """The scope in a table cell: 'official', or 'not official: ...' with the one reason."""
        return self._scope_texts()[1]

    def label(self) -> str:
        """e.g. '912.1 (5 tasks: pr,ks,sid,er,asr; paper ref; partial (5 of SUPERB's 10 tasks): not the
        official SUPERB score)'; the SG score's ends with `SG_SCOPE`."""
        if not self.tasks:
            return "n/a"
        partial = f"; {self.partial_text()}" if self.partial else ""
        return (f"{self.score:.1f} ({self.n_tasks} tasks: {','.join(self.tasks)}; {self.reference} ref{partial}; "
                f"{self.scope()})")


def _metric_name(column: str) -> str:
    task, metric = split_metric_column(column)
    if metric is not None:
        return metric
    info = describe_task(task)
    return info.metric.name if info else task


def _ordered(tasks: Iterable[str]) -> tuple[str, ...]:
    return tuple(in_task_order(tasks))


def metric_columns(task: str) -> list[str]:
    """Column keys of a task's metrics: its main one, then its declared secondary ones ('sf', 'sf/cer')."""
    info = describe_task(task)
    return [task] + [metric_column(task, m.name) for m in (info.secondary if info else ())]


def column_order(columns: Iterable[str]) -> list[str]:
    """Distinct column keys in table order: by task (`in_task_order`), main metric first, then the
    secondary ones in declaration order."""
    columns = set(columns)
    out = []
    for task in in_task_order(split_metric_column(c)[0] for c in columns):
        declared = metric_columns(task)
        out += [c for c in declared if c in columns]
        out += sorted(c for c in columns if split_metric_column(c)[0] == task and c not in declared)
    return out


def column_direction(column: str) -> bool:
    """higher_is_better of the metric a column key names."""
    task, metric = split_metric_column(column)
    info = describe_task(task)
    if info is None:
        raise KeyError(f"column {column!r}: task {task!r} is neither registered nor described by a record")
    described = info.metric if metric is None else info.metric_named(metric)
    if described is None:
        raise KeyError(f"column {column!r}: task {task!r} has no metric {metric!r}")
    return described.higher_is_better


def paper_references() -> dict[str, Reference]:
    """The published reference points of every registered task that declares them, by column key:
    a task's main metric under its name, each secondary metric with a reference under 'task/metric'."""
    refs = {}
    for t in all_tasks():
        if t.paper_reference is not None:
            refs[t.name] = Reference(t.name, t.metric, t.paper_reference.fbank, t.paper_reference.sota,
                                     t.paper_reference.source)
        for m in t.secondary_metrics:
            if m.paper_reference is not None:
                refs[metric_column(t.name, m.name)] = Reference(t.name, m.name, m.paper_reference.fbank,
                                                                m.paper_reference.sota, m.paper_reference.source)
    return refs


def local_references(task_means: Mapping[str, Mapping[str, float]],
                     fbank_upstream: str = FBANK_UPSTREAM) -> dict[str, Reference]:
    """References measured in this store.

    `task_means` maps upstream -> {column key: mean metric} for ONE comparable group
    (same recipe version, profile and data); a column key is a task ('ks') or a task's secondary
    metric ('sf/cer'). FBANK is `fbank_upstream`'s mean; SOTA is the best mean over all upstreams,
    in that metric's own direction. Metrics without an FBANK measurement get no reference (and are
    listed as missing or partial in scores).
    """
    fbank = task_means.get(fbank_upstream, {})
    refs = {}
    for column, fb in fbank.items():
        task, metric = split_metric_column(column)
        info = describe_task(task)
        if info is None or not math.isfinite(fb):
            continue
        higher = column_direction(column)
        values = [m[column] for m in task_means.values() if column in m and math.isfinite(m[column])]
        best = max(values) if higher else min(values)
        refs[column] = Reference(task, metric or info.metric.name, fb, best,
                                 f"local: {fbank_upstream} vs best upstream in store")
    return refs


def _expected(task: str, reference: str) -> list[str]:
    """The column keys of `task` that count in a `reference`-mode score when present: every metric in
    `local` mode; in `paper` mode the main one and the secondary ones that declare paper points. A
    SUPERB-SG task counts those (the metrics SUPERB-SG's table reports) in both modes."""
    declared = {t.name: t for t in all_tasks()}
    if (reference != "paper" and suite_of(task) != "sg") or task not in declared:
        return metric_columns(task)
    return [task] + [metric_column(task, m.name) for m in declared[task].secondary_metrics
                     if m.paper_reference is not None]


def in_suite(column: str, suite: str, reference: str) -> bool:
    """Whether a column key counts in `suite`'s score: its task is of that suite and, for a SUPERB-SG task,
    the metric is one SUPERB-SG's table reports (`_expected`)."""
    task = split_metric_column(column)[0]
    if suite_of(task) != suite:
        return False
    return suite != "sg" or column in _expected(task, reference)


def superb_score(metrics: Mapping[str, float], references: Mapping[str, Reference],
                 reference: str = "paper", suite: str = "superb") -> SuperbScore:
    """Average per-task scores over the tasks of `suite` that have a metric with a usable reference.

    `metrics` and `references` are keyed by column key ('ks', 'sf', 'sf/cer'). A task's score is the
    mean of the scores of its metrics (SUPERB-SG: SF counts once, as the mean of its F1 and CER scores);
    a task that should count with a metric it lacks here (no value or no reference) is scored on the
    others and named in `partial`, never silently averaged with complete rows. `suite` "superb" (the
    SUPERB score) leaves the SUPERB-SG tasks out; "sg" (superbench's own SG score) counts only them.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown score suite {suite!r}; choose from {', '.join(SUITES)}")
    metrics = {c: v for c, v in metrics.items() if in_suite(c, suite, reference)}
    per_metric: dict[str, float] = {}
    for column in column_order(metrics):
        value = metrics[column]
        ref = references.get(column)
        s = ref.score(value) if ref is not None and math.isfinite(value) else math.nan
        if not math.isnan(s):
            per_metric[column] = s
    by_task: dict[str, list[float]] = {}
    for column, s in per_metric.items():
        by_task.setdefault(split_metric_column(column)[0], []).append(s)
    per_task = {t: sum(v) / len(v) for t, v in by_task.items()}
    tasks = _ordered(per_task)
    missing = tuple(t for t in _ordered(split_metric_column(c)[0] for c in metrics) if t not in per_task)
    partial = {}
    for task in tasks:
        left_out = [_metric_name(c) for c in _expected(task, reference) if c not in per_metric]
        if left_out:
            partial[task] = tuple(left_out)
    score = sum(per_task.values()) / len(per_task) if per_task else math.nan
    return SuperbScore(score, tasks, {t: per_task[t] for t in tasks}, reference, missing, per_metric, partial,
                       suite)


def sg_note(reference: str, tasks: Iterable[str] = SUPERB_SG_TASKS) -> str:
    """One line on what the SG score is, for the notes of a table or a comparison that shows it."""
    counted = ", ".join(f"{t}: {'+'.join(_metric_name(c) for c in _expected(t, reference))}"
                        for t in _ordered(tasks))
    points = ("paper reference points = superbench's choice, the SUPERB leaderboard's FBANK row and its best row "
              "(WavLM Large)" if reference == "paper" else f"{reference} reference points, as the SUPERB score's")
    return (f"SG score: {SG_SCOPE}, the SUPERB score's formula over the SUPERB-SG tasks present ({counted}), "
            f"which the SUPERB score never counts; {points}")


def sg_score(metrics: Mapping[str, float], references: Mapping[str, Reference],
             reference: str = "paper") -> SuperbScore:
    """superbench's own SUPERB-SG aggregate (`SG_SCOPE`): `superb_score` over the SUPERB-SG tasks only."""
    return superb_score(metrics, references, reference, suite="sg")


def ood_asr_mean(metrics: Mapping[str, float]) -> float:
    """SUPERB-SG's OOD-ASR aggregate (`OOD_ASR_SCOPE`) of one row's metrics by column key: the plain mean of the
    four tasks' main metrics (WER, or CER for Mandarin, in percent), NaN unless all four have a finite value."""
    values = [metrics.get(task, math.nan) for task in OOD_ASR_TASKS]
    if not all(math.isfinite(v) for v in values):
        return math.nan
    return sum(values) / len(values)


def ood_asr_interval(units: Mapping[str, Seeds], resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = SEED) -> tuple[float, float]:
    """The percentile bootstrap interval of `ood_asr_mean` from the four tasks' per-unit scores (column key ->
    per seed, per fold unit scores): every task resampled on its own stream (`metric_draws`), as the four test
    sets are independent, and the mean taken per draw. (NaN, NaN) unless all four have units."""
    if not all(task in units for task in OOD_ASR_TASKS):
        return math.nan, math.nan
    draws = metric_draws({task: units[task] for task in OOD_ASR_TASKS}, resamples, seed)
    return percentile_interval(np.mean([draws[task] for task in OOD_ASR_TASKS], axis=0), level)


# ------------------------------------------------------------------ the score's interval

def task_stream(task: str, seed: int = SEED) -> tuple[int, int]:
    """The bootstrap stream of one task: independent of every other task's, and the same for each of the
    task's metrics, so SF's F1 and CER are drawn on the same utterances (their units have the same size)."""
    return (int(seed), zlib.crc32(task.encode("utf-8")))


def metric_draws(units: Mapping[str, Seeds], resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, np.ndarray]:
    """{column key: (resamples,) bootstrap draws of the metric (mean over the seeds)}, each task on its own
    stream (`task_stream`). Two models' units of the same test set get the same draws: paired."""
    return {c: bootstrap(s, resamples, task_stream(split_metric_column(c)[0], seed)) for c, s in units.items()}


def score_draws(draws: Mapping[str, np.ndarray], references: Mapping[str, Reference]) -> np.ndarray:
    """The SUPERB score of each draw (the formula of `superb_score`, vectorised over draws).

    Only the metrics with a usable reference count, as in `superb_score`; a draw in which one of them is
    undefined (nan) has no score (nan), rather than a score over fewer tasks.
    """
    by_task: dict[str, list[np.ndarray]] = {}
    for column in column_order(draws):
        ref = references.get(column)
        span = None if ref is None else ref.sota - ref.fbank
        if span is None or span == 0 or not math.isfinite(span):
            continue
        scored = 1000.0 * (np.asarray(draws[column], dtype=np.float64) - ref.fbank) / span
        by_task.setdefault(split_metric_column(column)[0], []).append(scored)
    if not by_task:
        size = len(next(iter(draws.values()))) if draws else 0
        return np.full(size, np.nan)
    return np.mean([np.mean(metrics, axis=0) for metrics in by_task.values()], axis=0)


@dataclass(frozen=True)
class ScoreInterval:
    """A SUPERB score with its percentile bootstrap interval (the references held fixed)."""

    score: SuperbScore
    low: float
    high: float
    resamples: int = RESAMPLES
    level: float = LEVEL
    seed: int = SEED

    @property
    def value(self) -> float:
        return self.score.score

    def text(self, digits: int = 1) -> str:
        """e.g. '412.3 [380.1, 441.0]'."""
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def score_interval(units: Mapping[str, Seeds], references: Mapping[str, Reference], reference: str = "paper",
                   resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED,
                   suite: str = "superb") -> ScoreInterval:
    """The SUPERB score of a model's per-unit scores (`units`: column key -> per seed, per fold unit scores)
    and its percentile interval: every task resampled independently (`metric_draws`), the score recomputed
    per draw (`score_draws`). The references are held fixed: FBANK and SOTA are constants of the formula
    here, so the interval is the sampling noise of this model's test sets only.

    Every column the score should count must be in `units`: a metric without per-unit scores cannot be
    resampled, and holding it at its mean would make the interval look narrower than it is. `suite` as in
    `superb_score` ("sg": superbench's own SG score).
    """
    point = superb_score({c: float(np.mean([value_of(folds) for folds in s])) for c, s in units.items()},
                         references, reference, suite)
    counted = score_draws(metric_draws({c: units[c] for c in point.per_metric}, resamples, seed), references)
    low, high = percentile_interval(counted, level)
    return ScoreInterval(point, low, high, resamples, level, seed)

"""Paired significance between two models on the test sets they share (`superbench compare A B`).

Two models' records of a task pair when they were scored on the same test set: the same manifest
fingerprint (`data`), recipe version and profile (weighted-sum records only, no layer probes), and
their per-unit test scores are the same units (`superbench.uncertainty.pairing_problem`). Anything
else is refused with the reason, task by task; nothing is ever compared across test sets.

Per task, for its main metric and each secondary metric (an extra row):

- the difference A - B (mean over the paired seeds) with its percentile interval from the paired
  bootstrap (one draw of test units applied to both models), and the bootstrap p-value (the share
  of drawn differences, shifted to the null, at least as far from 0 as the observed one);
- the paired approximate randomisation (permutation) p-value: each unit's scores swapped between
  A and B with probability 1/2 (exact enumeration for tiny test sets);
- Holm's step-down correction over the compared tasks' *main* metrics, applied to the permutation
  p-values (the decision: significant when the adjusted p < alpha); secondary rows keep their
  uncorrected p-values and are not part of the decision;
- which side is better, in the metric's own direction, the unit and their number, and how seeds
  were paired (`leaderboard.pairing.pair_seeds`: seed by seed over the shared seeds).

The SUPERB score difference: over the tasks compared (per corpus and profile), each task resampled
independently with the same draw for A and B (`leaderboard.score.metric_draws`: the same stream for
both, so the draws are paired), both scores recomputed per draw with the same reference points, held
fixed, then the difference's percentile interval and bootstrap p-value. The reference mode is the
leaderboard's (`paper`, or `local` for stores on non-SUPERB corpora, `default_reference`); `local`
points are measured on each compared test set itself, as the leaderboard means them: FBANK the
newest `fbank` fingerprint's mean there, SOTA the best mean there over every stored model (layer
probes included); a metric that no model beats FBANK on has no local point and does not count.
The SUPERB score difference never counts the SUPERB-SG tasks (SE, SS); over those, the same test gives
the difference of superbench's own SUPERB-SG aggregate (`leaderboard.score.SG_SCOPE`), the "SG score",
on its own line (JSON `sg_score`). Where all four OOD-ASR tasks were compared on one corpus and profile, the
difference of SUPERB-SG's OOD-ASR aggregate (`leaderboard.score.OOD_ASR_SCOPE`: their mean WER/CER, lower is
better) follows the same way, each task resampled on its own stream with the same draw for A and B (JSON
`ood_asr`).

JSON (`Comparison.to_json`): {"a": side, "b": side, "alpha", "resamples", "level", "seed",
"correction": "holm", "decision": "p_permutation", "reference", "comparisons": [row...],
"refused": [{"label", "task", "reason"}...], "superb_score": [score...], "sg_score": [score...], "ood_asr": [score...],
"notes": [...]}, where
side = {"upstream", "fingerprint", "chosen"}; row = {"label", "task", "column", "metric", "role"
("main"|"secondary"), "higher_is_better", "data", "recipe_version", "profile", "a", "b", "delta",
"ci": [low, high], "p_bootstrap", "p_permutation", "exact", "p_holm" (null for a secondary row),
"significant" (null for a secondary row), "better" (an upstream name, or null for a tie), "unit", "n",
"seeds": [[seed of A, seed of B]...], "seed_note"}; score = {"suite" ("superb"|"sg"|"ood_asr"), "scope", "tasks",
"columns", "reference", "a", "b", "delta", "ci": [low, high], "p_bootstrap", "partial", "notes"}.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leaderboard.check import CheckError, choose_fingerprint
from leaderboard.pairing import PairedResult, SeedPairing, paired_metric, units_by_seed
from leaderboard.score import (
    FBANK_UPSTREAM,
    OOD_ASR_KEY,
    OOD_ASR_SCOPE,
    OOD_ASR_TASKS,
    REFERENCE_MODES,
    SG_SCOPE,
    SUITES,
    Reference,
    default_reference,
    in_suite,
    local_references,
    metric_draws,
    paper_references,
    score_draws,
    suite_of,
    superb_score,
)
from superbench.exit_codes import ExitCode
from superbench.records import ResultRecord
from superbench.summary import metric_column
from superbench.tasks import in_task_order
from superbench.uncertainty import (
    LEVEL,
    RESAMPLES,
    SEED,
    PairedTest,
    UnitScores,
    bootstrap_p,
    holm,
    percentile_interval,
    units_word,
    value_of,
)

ALPHA = 0.05
FORMATS = ("table", "json")


class CompareError(ValueError):
    """The comparison cannot start (unknown model, bad option); the message says why."""


@dataclass(frozen=True)
class Side:
    """One model under comparison: a name, the fingerprint compared and how it was chosen."""

    upstream: str
    fingerprint: str
    chosen: str

    def to_dict(self) -> dict[str, str]:
        return {"upstream": self.upstream, "fingerprint": self.fingerprint, "chosen": self.chosen}


@dataclass
class MetricComparison:
    """The paired tests of one metric of one task between A and B on one test set."""

    label: str  # the task, with its setup when a task has several ('ks [ci r2 data 1a2b3c4d]')
    task: str
    column: str  # 'ks', or 'sf/cer' for a secondary metric
    metric: str
    higher_is_better: bool
    data: str
    recipe_version: str
    profile: str
    test: PairedTest
    pairing: SeedPairing
    better: str | None  # the better side's upstream name, None for a tie
    seeds_a: list[list[UnitScores]] = field(repr=False, default_factory=list)
    seeds_b: list[list[UnitScores]] = field(repr=False, default_factory=list)
    corpus: str = ""
    p_holm: float | None = None
    significant: bool | None = None

    @property
    def main(self) -> bool:
        return self.column == self.task

    def to_dict(self) -> dict[str, Any]:
        t = self.test
        return {"label": self.label, "task": self.task, "column": self.column, "metric": self.metric,
                "role": "main" if self.main else "secondary", "higher_is_better": self.higher_is_better,
                "data": self.data, "recipe_version": self.recipe_version, "profile": self.profile,
                "a": _round(t.a), "b": _round(t.b), "delta": _round(t.delta), "ci": [_round(t.low), _round(t.high)],
                "p_bootstrap": t.p_bootstrap,
                "p_permutation": t.p_permutation, "exact": t.exact, "p_holm": self.p_holm,
                "significant": self.significant, "better": self.better, "unit": t.unit, "n": t.n,
                "seeds": [list(p) for p in self.pairing.pairs], "seed_note": self.pairing.note}


@dataclass(frozen=True)
class Refusal:
    """A task (or one of its metrics) that could not be compared, and why."""

    label: str
    task: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"label": self.label, "task": self.task, "reason": self.reason}


@dataclass
class ScoreComparison:
    """The SUPERB score (or, `suite` "sg", superbench's own SG score) of A and B over the tasks compared, and
    their paired-bootstrap difference."""

    tasks: tuple[str, ...]
    columns: tuple[str, ...]
    reference: str
    a: float
    b: float
    low: float
    high: float
    p_bootstrap: float
    partial: str = ""
    notes: list[str] = field(default_factory=list)
    suite: str = "superb"
    scope: str = ""  # `SuperbScore.scope()`: official or not; the SG score's says it is superbench's own

    @property
    def delta(self) -> float:
        return self.a - self.b

    @property
    def name(self) -> str:
        """'SUPERB score', 'SG score' with what it is (`SG_SCOPE`), or the OOD-ASR aggregate's name."""
        if self.suite == OOD_ASR_KEY:
            return "OOD-ASR mean WER/CER (SUPERB-SG's aggregate, lower is better)"
        return "SUPERB score" if self.suite == "superb" else f"SG score ({SG_SCOPE})"

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "scope": self.scope, "tasks": list(self.tasks), "columns": list(self.columns),
                "reference": self.reference,
                "a": _round(self.a), "b": _round(self.b), "delta": _round(self.delta),
                "ci": [_round(self.low), _round(self.high)], "p_bootstrap": round(self.p_bootstrap, 6),
                "partial": self.partial, "notes": self.notes}


def _round(x: float) -> float | None:
    """A number for JSON: 4 decimals, never "-0.0", None where undefined (no finite draw)."""
    return None if not math.isfinite(x) else round(float(x), 4) + 0.0


@dataclass
class Comparison:
    """Everything `superbench compare` prints."""

    a: Side
    b: Side
    alpha: float
    resamples: int
    level: float
    seed: int
    reference: str
    rows: list[MetricComparison] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    scores: list[ScoreComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def main_rows(self) -> list[MetricComparison]:
        return [r for r in self.rows if r.main]

    @property
    def exit_code(self) -> int:
        """OK when at least one task was compared; USAGE (a data problem) when none could be."""
        return ExitCode.OK if self.main_rows else ExitCode.USAGE

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "alpha": self.alpha, "resamples": self.resamples,
                "level": self.level, "seed": self.seed, "correction": "holm", "decision": "p_permutation",
                "reference": self.reference, "comparisons": [r.to_dict() for r in self.rows],
                "refused": [r.to_dict() for r in self.refused],
                "superb_score": [s.to_dict() for s in self.scores if s.suite == "superb"],
                "sg_score": [s.to_dict() for s in self.scores if s.suite == "sg"],
                OOD_ASR_KEY: [s.to_dict() for s in self.scores if s.suite == OOD_ASR_KEY], "notes": self.notes}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def format(self) -> str:
        """The human-readable report: an aligned table, the SUPERB score line(s), refusals and how to read it."""
        pct = f"{self.level:.0%}"
        lines = [f"A = {self.a.upstream}@{self.a.fingerprint[:12]} ({self.a.chosen})",
                 f"B = {self.b.upstream}@{self.b.fingerprint[:12]} ({self.b.chosen})", ""]
        if self.rows:
            head = ["task", "metric", "A", "B", f"A-B [{pct} CI]", "p boot", "p perm", "p Holm",
                    f"signif. (α={self.alpha:g})", "better", "units", "seeds"]
            body = []
            for r in self.rows:
                t = r.test
                metric = f"{r.metric} {'↑' if r.higher_is_better else '↓'}"
                signif = ("–" if r.significant is None else "yes" if r.significant else "no")
                body.append([r.label if r.main else f"  {r.label}", metric, f"{t.a:.2f}", f"{t.b:.2f}",
                             f"{t.delta:+.2f} [{t.low:+.2f}, {t.high:+.2f}]", _p(t.p_bootstrap),
                             _p(t.p_permutation) + ("*" if t.exact else ""),
                             "–" if r.p_holm is None else _p(r.p_holm), signif, r.better or "tie",
                             f"{t.n} {units_word(t.unit)}", str(len(r.pairing.pairs))])
            lines += _aligned(head, body, numeric={2, 3, 4, 5, 6, 7, 11})
            notes = {r.label: r.pairing.note for r in self.main_rows}
            if len(set(notes.values())) == 1:
                lines.append(f"seeds: {next(iter(notes.values()))}")
            else:
                lines += [f"seeds ({label}): {note}" for label, note in notes.items()]
        for s in self.scores:
            partial = f"; {s.partial}" if s.partial else ""
            how = "no reference points" if s.suite == OOD_ASR_KEY else f"{s.reference} ref{partial}"
            lines.append(f"{s.name} over {','.join(s.tasks)} ({how}): A {s.a:.1f}, "
                         f"B {s.b:.1f}, A-B {s.delta:+.1f} [{pct} CI {s.low:+.1f}, {s.high:+.1f}], "
                         f"p (bootstrap) {_p(s.p_bootstrap)}")
            lines += [f"  {n}" for n in s.notes]
        for r in self.refused:
            lines.append(f"not compared: {r.label}: {r.reason}")
        lines += [f"note: {n}" for n in self.notes]
        lines += ["", *HOW_TO_READ.format(pct=pct, resamples=self.resamples, alpha=self.alpha).splitlines()]
        lines.append(self.verdict())
        return "\n".join(lines) + "\n"

    def verdict(self) -> str:
        main = self.main_rows
        if not main:
            return "nothing compared: no task has records of both models on the same test set with per-unit scores"
        sig = [r for r in main if r.significant]
        which = "; ".join(f"{r.label} ({r.better} better)" for r in sig)
        return (f"{len(main)} task(s) compared, {len(sig)} significant at α={self.alpha:g} after Holm's correction"
                + (f": {which}" if sig else ""))


HOW_TO_READ = """\
A-B: the difference of the means over the paired seeds, with its {pct} paired-bootstrap percentile interval \
({resamples} draws of the test units, the same draw for A and B).
p boot: paired bootstrap p-value; p perm: paired approximate randomisation (each unit's scores swapped between \
A and B at random; * = exact enumeration).
p Holm: Holm's step-down correction of p perm over the tasks' main metrics; signif.: p Holm < {alpha:g}. \
Indented rows are secondary metrics: uncorrected, not part of the decision."""


def _p(p: float) -> str:
    return f"{p:.4f}"


def _aligned(head: list[str], body: list[list[str]], numeric: set[int]) -> list[str]:
    """Rows padded to their column widths: numbers right-aligned, text left-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return ["  ".join(str(x).rjust(w) if i in numeric else str(x).ljust(w)
                      for i, (x, w) in enumerate(zip(row, widths))).rstrip() for row in [head] + body]


# ------------------------------------------------------------------ building a comparison

def parse_side(spec: str) -> tuple[str, str | None]:
    """'NAME' or 'NAME@FINGERPRINT_PREFIX' -> (name, prefix or None)."""
    name, at, prefix = spec.partition("@")
    if not name or (at and not prefix):
        raise CompareError(f"{spec!r} is not an upstream name, or NAME@FINGERPRINT_PREFIX")
    return name, prefix or None


def _side(records: list[ResultRecord], spec: str) -> tuple[Side, list[ResultRecord]]:
    name, prefix = parse_side(spec)
    choice = choose_fingerprint(records, name, prefix, source="the store")
    if choice is None:
        names = sorted({r.upstream for r in records})
        raise CompareError(f"no results of upstream {name!r} in the store (weighted-sum records); upstreams there: "
                           f"{', '.join(names) or 'none'}")
    n = len(choice.available)
    chosen = {"only": "the only fingerprint in the store",
              "newest": f"the newest of {n} fingerprints in the store; pick another with {name}@PREFIX",
              "chosen": f"chosen as {name}@{prefix}" + (f", of {n} fingerprints in the store" if n > 1 else "")
              }[choice.how]
    mine = [r for r in records if r.upstream == name and r.upstream_fingerprint == choice.fingerprint]
    return Side(name, choice.fingerprint, chosen), mine


def _setup(r: ResultRecord) -> tuple[str, str, str]:
    return (r.manifest_fingerprint, str(r.recipe_version), r.profile)


def _setup_text(setup: tuple[str, str, str]) -> str:
    data, recipe, profile = setup
    return f"data {data[:12] or 'unknown'}, recipe {recipe}, profile {profile}"


def _different_sets(task: str, a: Side, b: Side, sa: Iterable[tuple], sb: Iterable[tuple]) -> str:
    sa, sb = sorted(sa), sorted(sb)
    if not sa and not sb:
        return "neither model has records of it"
    if not sa or not sb:
        return f"{(a if not sa else b).upstream} has no records of {task}"
    same_rest = {s[1:] for s in sa} & {s[1:] for s in sb}
    what = ("different data (manifest fingerprints)" if same_rest
            else "no common test set (data, recipe version and profile)")
    return (f"{what}: {a.upstream} on {'; '.join(map(_setup_text, sa))}, {b.upstream} on "
            f"{'; '.join(map(_setup_text, sb))}; a paired test needs the same test set")


def _better(test: PairedTest, higher_is_better: bool, a: Side, b: Side) -> str | None:
    if test.delta == 0:
        return None
    return a.upstream if (test.delta > 0) == higher_is_better else b.upstream


def _metric_names(records: Iterable[ResultRecord]) -> list[tuple[str, bool]]:
    """(secondary metric, higher_is_better) carried by any of `records`, in the task's declared order."""
    records = list(records)
    info = records[0].task_info
    names = {n for r in records for n in r.secondary}
    return [(m.name, m.higher_is_better) for m in info.secondary if m.name in names]


def compare_models(records: Iterable[ResultRecord], a: str, b: str, tasks: Sequence[str] | None = None, *,
                   alpha: float = ALPHA, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED,
                   reference: str | None = None) -> Comparison:
    """Paired tests of model `a` against model `b` ('NAME' or 'NAME@FP_PREFIX') over `records` (a store's),
    on every task (or `tasks`) both have on the same test set; see the module docstring."""
    if not 0 < alpha < 1:
        raise CompareError(f"--alpha {alpha} is not a level between 0 and 1")
    if resamples < 1:
        raise CompareError(f"--resamples {resamples} is not a positive number of draws")
    everything = list(records)
    weighted = [r for r in everything if r.layer is None]
    side_a, recs_a = _side(weighted, a)
    side_b, recs_b = _side(weighted, b)
    if reference is None:
        reference = default_reference(r.corpus for r in everything)[0]  # as the leaderboard picks it
    if reference not in REFERENCE_MODES:
        raise CompareError(f"unknown reference {reference!r}; choose from {', '.join(REFERENCE_MODES)}")
    out = Comparison(side_a, side_b, alpha, resamples, level, seed, reference)
    wanted = list(tasks) if tasks else in_task_order({r.task for r in recs_a + recs_b})
    for task in dict.fromkeys(wanted):
        ga, gb = defaultdict(list), defaultdict(list)
        for r in recs_a:
            if r.task == task:
                ga[_setup(r)].append(r)
        for r in recs_b:
            if r.task == task:
                gb[_setup(r)].append(r)
        common = [s for s in ga if s in gb]
        if not common:
            out.refused.append(Refusal(task, task, _different_sets(task, side_a, side_b, ga, gb)))
            continue
        for setup in sorted(common):
            label = task if len(common) == 1 else f"{task} [{setup[2]} r{setup[1]} data {setup[0][:8]}]"
            _compare_setup(out, task, label, setup, ga[setup], gb[setup])
    keys = {r.label: r.test.p_permutation for r in out.main_rows}
    adjusted = holm(keys)
    for r in out.main_rows:
        r.p_holm = round(adjusted[r.label], 6)
        r.significant = adjusted[r.label] < alpha
    out.scores = _score_comparisons(out, everything)
    return out


def _compare_setup(out: Comparison, task: str, label: str, setup: tuple[str, str, str], ra: list[ResultRecord],
                   rb: list[ResultRecord]) -> None:
    """Append the main metric's and each secondary metric's paired tests of one test set (or the refusals)."""
    info = ra[0].task_info
    for metric, higher, column in ([(info.metric.name, info.metric.higher_is_better, task)]
                                   + [(n, h, metric_column(task, n)) for n, h in _metric_names(ra + rb)]):
        main = column == task
        name = label if main else f"{label} {metric}"
        ua = units_by_seed(ra, None if main else metric)
        ub = units_by_seed(rb, None if main else metric)
        try:
            result: PairedResult = paired_metric(ua, ub, out.resamples, out.level, out.seed)
        except ValueError as exc:
            out.refused.append(Refusal(name, task, _sides(str(exc), out)))
            if main:
                return  # no secondary rows beside a main metric that could not be compared
            continue
        left_out = _left_out(ra, ua, out.a) + _left_out(rb, ub, out.b)
        pairing = result.pairing
        if left_out:
            pairing = SeedPairing(pairing.pairs, f"{pairing.note}; without per-unit scores, left out: "
                                                 f"{', '.join(left_out)}")
        out.rows.append(MetricComparison(
            name, task, column, metric, higher, setup[0], setup[1], setup[2], result.test, pairing,
            _better(result.test, higher, out.a, out.b), [ua[x] for x, _ in pairing.pairs],
            [ub[y] for _, y in pairing.pairs], ra[0].corpus))


def _sides(message: str, out: Comparison) -> str:
    """pairing's 'the first/second model' said with the models' names."""
    return message.replace("the first model", out.a.upstream).replace("the second model", out.b.upstream)


def _left_out(records: list[ResultRecord], kept: dict, side: Side) -> list[str]:
    return [f"{side.upstream} seed {r.seed}" for r in sorted(records, key=lambda r: r.seed) if r.seed not in kept]


def _score_comparisons(out: Comparison, records: list[ResultRecord]) -> list[ScoreComparison]:
    """One SUPERB score comparison, and one SG score comparison, per (corpus, profile) of the compared tasks
    of each; none where a task was compared on several test sets there (no one score holds both)."""
    groups: dict[tuple[str, str], list[MetricComparison]] = defaultdict(list)
    for r in out.rows:
        groups[(r.corpus, r.profile)].append(r)
    scores = []
    for (corpus, profile), rows in groups.items():
        sets: dict[str, set] = defaultdict(set)
        for r in rows:
            sets[r.task].add((r.data, r.recipe_version))
        for suite in SUITES:
            mine = [r for r in rows if suite_of(r.task) == suite]
            several = [t for t, v in sets.items() if len(v) > 1 and suite_of(t) == suite]
            if several:
                out.notes.append(f"no {'SUPERB' if suite == 'superb' else 'SG'} score on "
                                 f"{corpus or 'an unnamed corpus'} / profile {profile}: "
                                 f"{', '.join(several)} compared on several test sets there")
                continue
            score = _score_comparison(out, mine, records, suite) if mine else None
            if score is not None:
                scores.append(score)
        ood = {r.task: r for r in rows if r.main and r.task in OOD_ASR_TASKS}
        if len(ood) == len(OOD_ASR_TASKS) and not any(len(sets[t]) > 1 for t in ood):
            scores.append(_ood_asr_comparison(out, [ood[t] for t in OOD_ASR_TASKS]))
    return scores


def _ood_asr_comparison(out: Comparison, rows: list[MetricComparison]) -> ScoreComparison:
    """A - B of SUPERB-SG's OOD-ASR aggregate (the four tasks' mean error rate) with its paired bootstrap: every
    task drawn on its own stream, the same draw for both models, the mean taken per draw."""
    columns = tuple(r.column for r in rows)
    a = float(np.mean([np.mean([value_of(f) for f in r.seeds_a]) for r in rows]))
    b = float(np.mean([np.mean([value_of(f) for f in r.seeds_b]) for r in rows]))
    draws_a = metric_draws({r.column: r.seeds_a for r in rows}, out.resamples, out.seed)
    draws_b = metric_draws({r.column: r.seeds_b for r in rows}, out.resamples, out.seed)
    diff = np.mean([draws_a[c] for c in columns], axis=0) - np.mean([draws_b[c] for c in columns], axis=0)
    low, high = percentile_interval(diff, out.level)
    p = bootstrap_p(diff, a - b)
    return ScoreComparison(columns, columns, out.reference, a, b, low, high, p,
                           notes=["each task resampled independently with the same draw for A and B; not a score, "
                                  "lower is better, and in neither the SUPERB nor the SG score"],
                           suite=OOD_ASR_KEY, scope=OOD_ASR_SCOPE)


def _local_reference(records: list[ResultRecord], row: MetricComparison) -> tuple[Reference | None, str]:
    """The `local` reference point of one compared metric, measured on its test set (see the module docstring),
    or None and why not."""
    setup = (row.data, row.recipe_version, row.profile)
    metric = None if row.main else row.metric
    values: dict[tuple, list[float]] = defaultdict(list)
    fbank = []
    for r in records:
        value = r.test if metric is None else (r.secondary.get(metric) or {}).get("test")
        if r.task != row.task or _setup(r) != setup or value is None:
            continue
        values[(r.upstream, r.upstream_fingerprint, r.layer)].append(float(value))
        if r.upstream == FBANK_UPSTREAM and r.layer is None:
            fbank.append(r)
    try:
        choice = choose_fingerprint(fbank, FBANK_UPSTREAM, source="its test set")  # the newest, as the leaderboard
    except CheckError as exc:
        return None, str(exc)
    if choice is None:
        return None, f"no '{FBANK_UPSTREAM}' result on its test set"
    chosen = (FBANK_UPSTREAM, choice.fingerprint, None)
    means = {(FBANK_UPSTREAM if k == chosen else f"{k[0]}@{k[1]}@{k[2]}"): {row.column: float(np.mean(v))}
             for k, v in values.items()}
    ref = local_references(means).get(row.column)
    if ref is None or ref.sota == ref.fbank:
        return None, f"no model beats '{FBANK_UPSTREAM}' on its test set (SOTA = FBANK)"
    return ref, ""


def _score_comparison(out: Comparison, rows: list[MetricComparison], records: list[ResultRecord],
                      suite: str = "superb") -> ScoreComparison | None:
    notes: list[str] = []
    refs: dict[str, Reference] = {}
    why_not: dict[str, str] = {}
    paper = paper_references() if out.reference == "paper" else {}
    rows = [r for r in rows if in_suite(r.column, suite, out.reference)]  # SG: the metrics SUPERB-SG reports
    what = "SUPERB" if suite == "superb" else "SG"
    if not rows:
        return None
    for r in rows:
        ref, why = (paper.get(r.column), "no paper reference point") if paper else _local_reference(records, r)
        if ref is None:
            why_not[r.column] = why
        else:
            refs[r.column] = ref
    units_a = {r.column: r.seeds_a for r in rows}
    units_b = {r.column: r.seeds_b for r in rows}
    means_a = {c: float(np.mean([value_of(f) for f in s])) for c, s in units_a.items()}
    means_b = {c: float(np.mean([value_of(f) for f in s])) for c, s in units_b.items()}
    counted_a = superb_score(means_a, refs, out.reference, suite).per_metric
    columns = [c for c in superb_score(means_b, refs, out.reference, suite).per_metric if c in counted_a]
    left_out = "; ".join(f"{c}: {why}" for c, why in why_not.items())
    if not columns:
        out.notes.append(f"no {what} score compared over {', '.join(r.column for r in rows)}: no {out.reference} "
                         f"reference point for any of them ({left_out})")
        return None
    point_a = superb_score({c: means_a[c] for c in columns}, refs, out.reference, suite)
    point_b = superb_score({c: means_b[c] for c in columns}, refs, out.reference, suite)
    draws_a = score_draws(metric_draws({c: units_a[c] for c in columns}, out.resamples, out.seed), refs)
    draws_b = score_draws(metric_draws({c: units_b[c] for c in columns}, out.resamples, out.seed), refs)
    diff = draws_a - draws_b
    low, high = percentile_interval(diff, out.level)
    p = bootstrap_p(diff, point_a.score - point_b.score)
    if why_not:
        notes.append(f"not counted, no {out.reference} reference point: {left_out}")
    notes.append("over the tasks compared here only, each resampled independently with the same draw for A and "
                 "B; reference points held fixed")
    if suite == "sg":
        notes.append("the SUPERB-SG tasks count here only, never in the SUPERB score")
    return ScoreComparison(point_a.tasks, tuple(columns), out.reference, point_a.score, point_b.score, low, high, p,
                           point_a.partial_text(), notes, suite, point_a.scope())


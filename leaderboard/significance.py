"""Which models differ beyond noise: a pairwise significance matrix per task and test set, for the report.

Models are leaderboard rows; two are compared only on the same test set (same data fingerprint, recipe
version and profile, full model: layer None) and only where their records keep per-unit test scores.
Every pair is tested with the paired test of `leaderboard.pairing` (paired bootstrap interval of the
difference, paired approximate-randomisation p-value), and the p-values of one matrix (one metric on one
test set) are Holm-corrected together: a cell is significant when its adjusted p is below `alpha`.
"""

from __future__ import annotations

import html
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from leaderboard.pairing import PairedResult, paired_metric, units_by_seed
from superbench.records import ResultRecord
from superbench.summary import metric_column, split_metric_column
from superbench.tasks import describe_task, in_task_order
from superbench.uncertainty import LEVEL, RESAMPLES, holm, units_word

log = logging.getLogger(__name__)

#: Significance level of the report's matrices unless told otherwise (`superbench report --alpha`).
ALPHA = 0.05


@dataclass(frozen=True)
class MatrixCell:
    """Row model - column model on one metric: the difference, its paired-bootstrap interval, the paired
    approximate-randomisation p-value, that p Holm-adjusted over the matrix, and what it means."""

    delta: float
    low: float
    high: float
    p: float
    p_adjusted: float
    significant: bool
    better: bool | None  # the row model is better (metric direction taken into account); None: no difference


@dataclass
class SignificanceMatrix:
    """One metric (a leaderboard column) on one test set: every pair of its models with per-unit scores."""

    column: str
    data: str  # manifest fingerprint of the test set
    recipe: str
    profile: str
    higher_is_better: bool
    alpha: float
    models: list[str] = field(default_factory=list)  # with per-unit scores, in the given order
    #: (i, j) -> the cell of models[i] - models[j], both orders, i != j; pairs that could not be tested are absent.
    cells: dict[tuple[int, int], MatrixCell] = field(default_factory=dict)
    #: (i, j), i < j -> the paired test of models[i] - models[j].
    tests: dict[tuple[int, int], PairedResult] = field(default_factory=dict)
    #: (i, j), i < j -> why the pair has no test.
    problems: dict[tuple[int, int], str] = field(default_factory=dict)
    without_units: list[str] = field(default_factory=list)  # models on this test set that keep no per-unit scores

    @property
    def title(self) -> str:
        task, secondary = split_metric_column(self.column)
        metric = secondary or describe_task(task).metric.name
        return (f"{task.upper()} {metric.upper()}% {'↑' if self.higher_is_better else '↓'} · data "
                f"{self.data[:8] or 'unknown'} · {self.profile}, r{self.recipe}")

    @property
    def enough(self) -> bool:
        return len(self.models) >= 2


def _cell(delta: float, low: float, high: float, p: float, adjusted: float, alpha: float,
          higher_is_better: bool) -> MatrixCell:
    better = None if delta == 0 else (delta > 0) == higher_is_better
    return MatrixCell(delta, low, high, p, adjusted, adjusted < alpha, better)


def significance_matrices(records: Iterable[ResultRecord], labels: Mapping[tuple, str] | None = None,
                          order: Iterable[str] = (), alpha: float = ALPHA, resamples: int = RESAMPLES,
                          level: float = LEVEL) -> list[SignificanceMatrix]:
    """One `SignificanceMatrix` per metric column and test set (data fingerprint, recipe version, profile) of
    the full-model records (layer None), models named by `labels` (RunKey tuple -> leaderboard row label;
    the upstream name without) and ordered as `order` (then by name). Every pair is tested with
    `leaderboard.pairing.paired_metric` (its default seed), the permutation p-values Holm-corrected within
    the matrix. A matrix with fewer than two models with per-unit scores is returned too (it says so)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha} is not between 0 and 1")
    labels = labels or {}
    rank = {name: i for i, name in enumerate(order)}
    groups: dict[tuple, dict[str, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.layer is not None:
            continue
        name = labels.get(r.run_key().as_tuple()) or r.upstream
        for metric in [r.metric, *r.secondary]:
            key = (metric_column(r.task, metric), r.manifest_fingerprint, str(r.recipe_version), r.profile)
            groups[key][name].append(r)
    columns = {c for c, *_ in groups}
    task_rank = {t: i for i, t in enumerate(in_task_order({split_metric_column(c)[0] for c in columns}))}

    def position(key: tuple) -> tuple:
        task, secondary = split_metric_column(key[0])
        return (task_rank[task], secondary or "", key[1:])

    out = []
    for key in sorted(groups, key=position):
        column, data, recipe, profile = key
        task, secondary = split_metric_column(column)
        info = describe_task(task)
        spec = info.metric if secondary is None else info.metric_named(secondary)
        matrix = SignificanceMatrix(column, data, recipe, profile, spec.higher_is_better, alpha)
        units = {}
        for name in sorted(groups[key], key=lambda n: (rank.get(n, len(rank)), n)):
            seeds = units_by_seed(groups[key][name], spec.name)
            if seeds:
                matrix.models.append(name)
                units[name] = seeds
            else:
                matrix.without_units.append(name)
        pvalues = {}
        for i, j in itertools.combinations(range(len(matrix.models)), 2):
            try:
                result = paired_metric(units[matrix.models[i]], units[matrix.models[j]], resamples, level)
            except ValueError as exc:
                matrix.problems[(i, j)] = str(exc)
                log.warning("%s: %s vs %s not tested: %s", matrix.title, matrix.models[i], matrix.models[j], exc)
                continue
            matrix.tests[(i, j)] = result
            pvalues[f"{i},{j}"] = result.test.p_permutation
        adjusted = holm(pvalues)
        for (i, j), result in matrix.tests.items():
            t, adj = result.test, adjusted[f"{i},{j}"]
            matrix.cells[(i, j)] = _cell(t.delta, t.low, t.high, t.p_permutation, adj, alpha, spec.higher_is_better)
            matrix.cells[(j, i)] = _cell(-t.delta, -t.high, -t.low, t.p_permutation, adj, alpha,
                                         spec.higher_is_better)
        out.append(matrix)
    return out


# -- HTML ---------------------------------------------------------------------------------------------
CSS = """
table.significance{border-collapse:collapse;font-size:.85em;margin-bottom:.4em}
table.significance th,table.significance td{padding:4px 8px;border:1px solid #e4e4e4;text-align:center}
table.significance th{background:#f3f3f3}table.significance td.diag{background:#fafafa;color:#aaa}
table.significance td.better{background:#d8efd9}table.significance td.worse{background:#f6d5d5}
table.significance td .p{color:#555;font-size:.9em}
"""


def _num(x: float) -> str:
    return f"{round(x, 2) + 0.0:+.2f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def cell_html(cell: MatrixCell | None, problem: str | None = None) -> str:
    """One `<td>`: the difference with its interval, the raw and Holm-adjusted p, and better/worse when
    significant (coloured), 'n.s.' when not."""
    if cell is None:
        return f"<td title='{html.escape(problem or '')}'>not tested</td>"
    verdict = ("n.s." if not cell.significant else "better" if cell.better else "worse")
    css = "" if not cell.significant else (" class='better'" if cell.better else " class='worse'")
    text = (f"<b>{_num(cell.delta)}</b> [{_num(cell.low)}, {_num(cell.high)}]<br>"
            f"<span class='p'>p {_p(cell.p)}, Holm {_p(cell.p_adjusted)}</span> "
            + (f"<b>{verdict}{' *' if cell.significant else ''}</b>" if cell.significant else verdict))
    return f"<td{css}>{text}</td>"


def matrix_html(matrix: SignificanceMatrix) -> str:
    """The matrix as a heading, a note and a table (or a sentence when it has fewer than two models)."""
    esc = html.escape
    head = f"<h3>{esc(matrix.title)}</h3>"
    missing = (f" No per-unit scores (not tested): {esc(', '.join(matrix.without_units))}."
               if matrix.without_units else "")
    if not matrix.enough:
        have = f" ({esc(matrix.models[0])})" if matrix.models else ""
        return (f"{head}<p class='notes'>Fewer than two models with per-unit scores on this test set"
                f"{have}: nothing to compare.{missing}</p>")
    first = next(iter(matrix.tests.values()), None)
    pairs = len(matrix.tests)
    about = ""
    if first is not None:
        t = first.test
        notes = sorted({r.pairing.note for r in matrix.tests.values()})
        about = (f" Over {t.n} test {units_word(t.unit)}; {'; '.join(notes)}; {t.resamples:,} resamples, "
                 f"{100 * t.level:g} % intervals.")
    direction = "higher" if matrix.higher_is_better else "lower"
    note = (f"Cell = row model − column model ({direction} is better), the paired-bootstrap interval of the "
            f"difference, the paired approximate-randomisation p-value and that p Holm-adjusted over the "
            f"{pairs} pair(s) of this table; significant (coloured, *) when the adjusted p is below "
            f"α = {matrix.alpha:g}: green = the row model is better, red = worse.{about}{missing}")
    rows = ["<tr><th>row − column</th>" + "".join(f"<th>{esc(m)}</th>" for m in matrix.models) + "</tr>"]
    for i, name in enumerate(matrix.models):
        cells = []
        for j in range(len(matrix.models)):
            if i == j:
                cells.append("<td class='diag'>–</td>")
            else:
                cells.append(cell_html(matrix.cells.get((i, j)), matrix.problems.get((min(i, j), max(i, j)))))
        rows.append(f"<tr><th>{esc(name)}</th>" + "".join(cells) + "</tr>")
    return f"{head}<p class='notes'>{esc(note)}</p><table class='significance'>{''.join(rows)}</table>"


def significance_html(matrices: list[SignificanceMatrix]) -> str:
    """Every matrix, or one sentence when no task has records of full models."""
    if not matrices:
        return "<p class='notes'>No full-model records (layer probes are not compared).</p>"
    return "\n".join(matrix_html(m) for m in matrices)

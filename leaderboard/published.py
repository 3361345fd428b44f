"""Published numbers (a paper's table, the official leaderboard) shown beside local results.

A published row is one (upstream, task) value with its source: no fingerprint, seed,
dev score or corpus fingerprint, because a paper gives none. They live in their own
table of the store (`ResultStore.add_published` / `.published()`), never among the
result records, so `check`, `make_baseline` and `local` references cannot see them;
the leaderboard shows them as "<upstream> (published)" and scores them in `paper` mode
only (their corpus is the official one, the paper's reference points apply).

CSV format (one header line, then one row per number):

    upstream,task,value,source[,metric][,note]
    HuBERT Base,ks,96.30,"Yang et al., SUPERB, Interspeech 2021, Table 3"

`value` is in the metric's unit, percent for every SUPERB metric (PESQ on its MOS-LQO scale, SI-SDRi in
dB: `Task.metric_unit`, `SecondaryMetric.unit`), within the metric's range (the range its task declares,
`Task.metric_range` / `SecondaryMetric.range`: accuracy-like metrics 0..100, edit-distance error rates such
as CER up to 1000, PESQ 1..4.65). `metric`, when given, must be the task's metric (a PER typed
into an accuracy column is caught) or one of its secondary metrics (`Task.secondary_metrics`),
which gives that metric's number: `HuBERT Base,sf,25.20,"...",cer` is SF's slot-value CER
beside `HuBERT Base,sf,88.53,"...",f1`. Without `metric` the row is the task's main metric.

One name that is not a task is accepted in `task`: `ood_asr`, SUPERB-SG's OOD-ASR aggregate (the mean WER/CER of
its four out-of-domain ASR tasks, `leaderboard.score.OOD_ASR_SCOPE`), which papers quote without the four
numbers behind it; its `metric` is empty or `mean`, its value an error rate (0..1000).
"""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass
from pathlib import Path

from leaderboard.score import OOD_ASR_KEY
from superbench.task_info import ERROR_RATE, UNBOUNDED
from superbench.tasks import TASKS

REQUIRED_COLUMNS = ("upstream", "task", "value", "source")
OPTIONAL_COLUMNS = ("metric", "note")
#: The metric name of a published OOD-ASR aggregate (`task` `ood_asr`).
AGGREGATE_METRIC = "mean"
#: The CSVs shipped with superbench (`import-published superb-paper` finds them by name).
SHIPPED_DIR = Path(__file__).with_name("published")
PUBLISHED_SUFFIX = " (published)"


class PublishedError(ValueError):
    """A published-results CSV cannot be read; the message names the file, line and field."""


@dataclass(frozen=True)
class PublishedResult:
    """One published number: `value` of `task`'s metric `metric` (in its unit, percent for SUPERB's; the main
    one or a secondary one) for `upstream`, from `source`."""

    upstream: str
    task: str
    value: float
    source: str
    metric: str
    higher_is_better: bool
    note: str = ""

    @property
    def label(self) -> str:
        """How the leaderboard names the row: never mistaken for a local measurement."""
        return f"{self.upstream}{PUBLISHED_SUFFIX}"


def shipped_files() -> dict[str, Path]:
    """Shipped CSVs by stem (e.g. 'superb-paper', 'superb-sg-paper')."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.csv"))}


def resolve_published_path(spec: str | Path) -> Path:
    """A CSV path, or the name of a shipped CSV; a missing file says what is shipped."""
    path = Path(spec)
    if path.exists():
        return path
    shipped = shipped_files()
    if str(spec) in shipped:
        return shipped[str(spec)]
    raise PublishedError(f"{spec}: no such file (shipped published tables: {', '.join(shipped) or 'none'})")


def _column_hint(name: str) -> str:
    close = difflib.get_close_matches(name, REQUIRED_COLUMNS + OPTIONAL_COLUMNS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_published_csv(path: str | Path) -> list[PublishedResult]:
    """Every row of a published-results CSV, or PublishedError listing every bad line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublishedError(f"{path}: cannot read ({exc})") from exc
    reader = csv.DictReader(text.splitlines(), skipinitialspace=True)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise PublishedError(f"{path}: empty file; expected a header line {','.join(REQUIRED_COLUMNS)}")
    problems = [f"line 1: missing column {c!r}" for c in REQUIRED_COLUMNS if c not in header]
    problems += [f"line 1: unknown column {c!r}{_column_hint(c)}" for c in header
                 if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if problems:
        raise PublishedError(f"{path}: bad header\n  " + "\n  ".join(problems))
    reader.fieldnames = header
    rows: list[PublishedResult] = []
    seen: dict[tuple[str, str, str], int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:  # more fields than the header has
            problems.append(f"line {line}: {len(header) + len(row[None])} fields, the header has {len(header)}")
            continue
        cells = {k: (v or "").strip() for k, v in row.items()}
        if not any(cells.values()):
            continue
        bad = _row_problems(cells)
        if bad:
            problems += [f"line {line}, field {f!r}: {msg}" for f, msg in bad]
            continue
        if cells["task"].lower() == OOD_ASR_KEY:  # the aggregate: no task spec behind it
            key = (cells["upstream"], OOD_ASR_KEY, AGGREGATE_METRIC)
            if key in seen:
                problems.append(f"line {line}: {cells['upstream']} / {OOD_ASR_KEY} already given on line {seen[key]}")
                continue
            seen[key] = line
            rows.append(PublishedResult(cells["upstream"], OOD_ASR_KEY, float(cells["value"]), cells["source"],
                                        AGGREGATE_METRIC, False, cells.get("note", "")))
            continue
        spec = TASKS.get(cells["task"].lower())
        metric = (cells.get("metric") or spec.metric).lower()
        key = (cells["upstream"], spec.name, metric)
        if key in seen:
            what = spec.name if metric == spec.metric else f"{spec.name} {metric}"
            problems.append(f"line {line}: {cells['upstream']} / {what} already given on line {seen[key]}")
            continue
        seen[key] = line
        higher = spec.info.metric_named(metric).higher_is_better
        rows.append(PublishedResult(cells["upstream"], spec.name, float(cells["value"]), cells["source"],
                                    metric, higher, cells.get("note", "")))
    if problems:
        raise PublishedError(f"{path}: {len(problems)} bad row(s); nothing was imported\n  " + "\n  ".join(problems))
    if not rows:
        raise PublishedError(f"{path}: no rows under the header")
    return rows


def _row_problems(cells: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for c in REQUIRED_COLUMNS:
        if not cells.get(c):
            why = " (every published number needs its source)" if c == "source" else ""
            out.append((c, f"empty{why}"))
    task = cells.get("task", "").lower()
    if task == OOD_ASR_KEY:
        return out + _aggregate_problems(cells)
    if task and task not in TASKS:
        out.append(("task", TASKS.unknown_message(task)))
    metric = cells.get("metric", "").lower()
    known = task_metrics(task) if task in TASKS else []
    if metric and known and metric not in known:
        out.append(("metric", f"{cells['metric']!r} is not task {task}'s metric ({known[0]})" if len(known) == 1
                    else f"{cells['metric']!r} is not one of task {task}'s metrics ({', '.join(known)})"))
    value = cells.get("value", "")
    if value:
        try:
            number = float(value)
        except ValueError:
            out.append(("value", f"{value!r} is not a number"))
        else:
            declared = TASKS.get(task).info.metric_named(metric or known[0]) if known else None
            lo, hi = (declared.low, declared.high) if declared else UNBOUNDED
            if not math.isfinite(number) or not lo <= number <= hi:
                unit = declared.unit if declared else "%"
                where = ("a percentage" if hi <= 100.0 and unit == "%" else
                         f"a {metric or known[0]} value ({'percent' if unit == '%' else unit})")
                out.append(("value", f"{value} is not {where} between {lo:g} and {hi:g}"))
    return out


def _aggregate_problems(cells: dict[str, str]) -> list[tuple[str, str]]:
    """What is wrong with a published OOD-ASR aggregate row's metric and value (an error rate, percent)."""
    out = []
    metric = cells.get("metric", "").lower()
    if metric and metric != AGGREGATE_METRIC:
        out.append(("metric", f"{cells['metric']!r}: {OOD_ASR_KEY} is an aggregate, its metric is empty or "
                              f"{AGGREGATE_METRIC!r}"))
    value = cells.get("value", "")
    if value:
        try:
            number = float(value)
        except ValueError:
            return out + [("value", f"{value!r} is not a number")]
        lo, hi = ERROR_RATE
        if not math.isfinite(number) or not lo <= number <= hi:
            out.append(("value", f"{value} is not an error rate (percent) between {lo:g} and {hi:g}"))
    return out


def task_metrics(task: str) -> list[str]:
    """A task's metric names, main first: the values a published row's `metric` may take."""
    spec = TASKS.get(task)
    return [spec.metric] + [m.name for m in spec.secondary_metrics]

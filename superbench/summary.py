"""Summaries of records over seeds: the numbers a paper table, the leaderboard and a CI gate read."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

from superbench.records import ResultRecord
from superbench.tasks import describe_task
from superbench.uncertainty import LEVEL, RESAMPLES, SEED, confidence_interval

if TYPE_CHECKING:
    import pandas as pd


def metric_column(task: str, metric: str | None = None) -> str:
    """The key of one (task, metric) in wide tables, scores and baselines: the task's name for its main
    metric (so every existing column keeps its name), `task/metric` for a secondary one ('sf/cer')."""
    info = describe_task(task)
    if metric is None or (info is not None and info.metric.name == metric):
        return task
    return f"{task}/{metric}"


def split_metric_column(column: str) -> tuple[str, str | None]:
    """(task, secondary metric) of a `metric_column` key; None for the task's main metric."""
    task, _, metric = column.partition("/")
    return task, (metric or None)


def aggregate(records: Iterable[ResultRecord], by: Sequence[str] = ("upstream", "upstream_fingerprint",
              "recipe_version", "profile", "layer"), secondary: bool = True, intervals: bool = False) -> pd.DataFrame:
    """One row per (`by`..., task, metric): the test metric's mean, sample std (NaN for one seed), n, seeds,
    mean dev, and the wall time spent; the numbers a paper table and a CI gate read.

    A task's main metric has `role` "main" and `column` = the task's name; each secondary metric
    (`ResultRecord.secondary`, e.g. SF's CER) has its own row right after it, with `role` "secondary",
    `column` "sf/cer" (see `metric_column`), its own direction in `higher_is_better`, and mean/std/n over
    the seeds whose record carries it (an old record without it counts only in the main row).
    `lr`, `extraction_s` and `training_s` of a secondary row repeat those of the runs it was computed on
    (the main metric selected the head): sum times over `role == "main"` rows only.
    `ci_low`/`ci_high`: with `intervals`, the 95 % bootstrap interval of the mean over the seeds
    (`cell_interval`), NaN where a seed's record keeps no per-unit scores (and always NaN without `intervals`:
    the bootstrap is not paid for where nobody reads it).
    `secondary=False` gives the main rows alone.
    """
    import pandas as pd

    rows = []
    for r in records:
        base = {"upstream": r.upstream, "upstream_fingerprint": r.upstream_fingerprint,
                "data": r.manifest_fingerprint, "recipe_version": r.recipe_version, "profile": r.profile,
                "layer": "" if r.layer is None else str(r.layer), "task": r.task, "seed": r.seed,
                "lr": r.lr, "created_at": r.created_at,
                "extraction_s": float(r.wall_time.get("extraction", 0.0)),
                "training_s": float(r.wall_time.get("training", 0.0))}
        rows.append({**base, "metric": r.metric, "higher_is_better": bool(r.higher_is_better), "role": "main",
                     "column": r.task, "rank": 0, "test": float(r.test), "dev": float(r.dev), "record": r})
        declared = [m.name for m in r.task_info.secondary]
        for name, values in (r.secondary.items() if secondary else ()):
            rows.append({**base, "metric": name, "higher_is_better": r.task_info.metric_named(name).higher_is_better,
                         "role": "secondary", "column": metric_column(r.task, name),
                         "rank": 1 + declared.index(name), "test": float(values["test"]),
                         "dev": float(values["dev"]), "record": r})
    keys = list(by) + ["task", "metric", "higher_is_better", "role", "column"]
    cols = keys + ["mean", "std", "n", "seeds", "dev_mean", "lr", "created_at", "extraction_s", "training_s",
                   "ci_low", "ci_high"]
    if not rows:
        return pd.DataFrame(columns=cols)
    behind: dict[tuple, list[ResultRecord]] = {}
    for row in rows:
        behind.setdefault(tuple(row[k] for k in keys), []).append(row.pop("record"))
    g = pd.DataFrame(rows).groupby(keys, sort=False, dropna=False)
    out = g.agg(mean=("test", "mean"), std=("test", "std"), n=("test", "size"),
                seeds=("seed", lambda s: sorted(int(x) for x in s)), dev_mean=("dev", "mean"),
                lr=("lr", "first"), created_at=("created_at", "max"),
                extraction_s=("extraction_s", "sum"), training_s=("training_s", "sum"),
                rank=("rank", "first")).reset_index()
    # each task's secondary rows right after its main row, whatever order the records came in
    task_keys = list(by) + ["task"]
    first: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(tuple(row[k] for k in task_keys), i)
    out["order"] = [first[tuple(v)] for v in out[task_keys].itertuples(index=False, name=None)]
    out = out.sort_values(["order", "rank"], kind="stable").reset_index(drop=True)
    intervals = [_interval_or_nan(behind[tuple(v)], v.metric if v.role == "secondary" else None) if intervals
                 else None for v in out[keys].itertuples(index=False)]
    out["ci_low"] = [i[0] if i else math.nan for i in intervals]
    out["ci_high"] = [i[1] if i else math.nan for i in intervals]
    return out[cols]


def _interval_or_nan(records: list[ResultRecord], metric: str | None) -> tuple[float, float] | None:
    try:
        return cell_interval(records, metric)
    except ValueError:  # seeds scored on different units: no one interval
        return None


def cell_interval(records: Sequence[ResultRecord], metric: str | None = None) -> tuple[float, float] | None:
    """The 95 % bootstrap interval of the mean over `records`' seeds of `metric` (each record's main metric by
    default), each draw of test units shared by the seeds: the one definition every table, figure and summary
    shows. A single record whose stored interval was made with the defaults gives that interval (the same
    numbers, not drawn again). None when a record keeps no per-unit scores of the metric; ValueError when the
    seeds were scored on different units."""
    records = sorted(records, key=lambda r: r.seed)
    seeds = [r.unit_scores(metric or r.metric) for r in records]
    if not records or any(s is None for s in seeds):
        return None
    if len(records) == 1:
        r, how = records[0], records[0].uncertainty or {}
        if r.test_ci is not None and (how.get("resamples"), how.get("level"), how.get("seed")) == (RESAMPLES, LEVEL,
                                                                                                 SEED):
            stated = r.test_ci if metric in (None, r.metric) else (how.get("secondary") or {}).get(metric)
            if stated is not None:
                return float(stated[0]), float(stated[1])
    interval = confidence_interval(seeds)  # type: ignore[arg-type]
    return interval.low, interval.high

"""Summaries of records over seeds: the numbers a paper table, the leaderboard and a CI gate read."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

from superbench.records import ResultRecord
from superbench.tasks import describe_task
from superbench.uncertainty import UnitScores, confidence_interval

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
              "recipe_version", "profile", "layer"), secondary: bool = True) -> pd.DataFrame:
    """One row per (`by`..., task, metric): the test metric's mean, sample std (NaN for one seed), n, seeds,
    mean dev, and the wall time spent; the numbers a paper table and a CI gate read.

    A task's main metric has `role` "main" and `column` = the task's name; each secondary metric
    (`ResultRecord.secondary`, e.g. SF's CER) has its own row right after it, with `role` "secondary",
    `column` "sf/cer" (see `metric_column`), its own direction in `higher_is_better`, and mean/std/n over
    the seeds whose record carries it (an old record without it counts only in the main row).
    `lr`, `extraction_s` and `training_s` of a secondary row repeat those of the runs it was computed on
    (the main metric selected the head): sum times over `role == "main"` rows only.
    `ci_low`/`ci_high`: the 95 % bootstrap interval of the mean over the seeds (`seeds_interval`), NaN where a
    seed's record keeps no per-unit scores.
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
                     "column": r.task, "rank": 0, "test": float(r.test), "dev": float(r.dev),
                     "units": r.unit_scores()})
        declared = [m.name for m in r.task_info.secondary]
        for name, values in (r.secondary.items() if secondary else ()):
            rows.append({**base, "metric": name, "higher_is_better": r.task_info.metric_named(name).higher_is_better,
                         "role": "secondary", "column": metric_column(r.task, name),
                         "rank": 1 + declared.index(name), "test": float(values["test"]),
                         "dev": float(values["dev"]), "units": r.unit_scores(name)})
    keys = list(by) + ["task", "metric", "higher_is_better", "role", "column"]
    cols = keys + ["mean", "std", "n", "seeds", "dev_mean", "lr", "created_at", "extraction_s", "training_s",
                   "ci_low", "ci_high"]
    if not rows:
        return pd.DataFrame(columns=cols)
    units: dict[tuple, list] = {}
    for row in rows:
        units.setdefault(tuple(row[k] for k in keys), []).append(row.pop("units"))
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
    intervals = [seeds_interval(units[tuple(v)]) for v in out[keys].itertuples(index=False, name=None)]
    out["ci_low"] = [i[0] for i in intervals]
    out["ci_high"] = [i[1] for i in intervals]
    return out[cols]


def seeds_interval(seeds: Sequence[list[UnitScores] | None]) -> tuple[float, float]:
    """The 95 % bootstrap interval of the mean over seeds (each draw of test units shared by the seeds);
    (nan, nan) when a seed has no per-unit scores or the seeds were scored on different units."""
    if not seeds or any(s is None for s in seeds):
        return math.nan, math.nan
    try:
        interval = confidence_interval(list(seeds))  # type: ignore[arg-type]
    except ValueError:
        return math.nan, math.nan
    return interval.low, interval.high

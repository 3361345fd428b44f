"""Self-contained HTML report: the leaderboard, its figures, and what produced every number.

One file with every image embedded as base64 PNG (matplotlib Agg, no display
needed), so it can be attached to a CI run, mailed, or opened offline.

Figures, each drawn per leaderboard row (so a panel never mixes two fingerprints,
corpora or profiles that the table keeps apart, and carries the table's row label):
- per-task bars: the mean over seeds with its 95 % bootstrap interval over the test units
  where the records keep per-unit scores (else ± std over seeds; the legend says which),
  every seed as a point, the value printed past the error bar, and the chance level where
  it is known (`chance`, task -> percent; the CLI reads it from the manifests with `--data`;
  PER/WER have none); a task's secondary metric (SF's CER) gets its own panel next to the task's;
- pairwise significance per task and test set (`leaderboard.significance`): every pair of
  models, paired test, Holm-corrected, as a table of differences;
- layer weights: the classic SUPERB analysis, softmax-normalised weighted-sum weights
  per layer and task, with the weight printed in each cell;
- score vs layer: when single-layer probes (`--layer K`) exist for every layer
  0..L-1 of one fingerprint and task;
- dev curves of every training (`trials[*].history`) and the lr sweep (dev score per lr).
Then the provenance: corpora (name, data fingerprint; hours and utterances per split
only when `corpora` gives them, since records do not carry them), profile, recipe
version, chosen lr per seed, versions and the commands.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import statistics
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leaderboard.published import PublishedResult
from leaderboard.score import SG_SCOPE, column_direction
from leaderboard.significance import ALPHA, significance_html, significance_matrices
from leaderboard.significance import CSS as SIGNIFICANCE_CSS
from leaderboard.table import ROW_KEYS, Leaderboard, build_leaderboard
from superbench import __version__
from superbench.provenance import now_iso
from superbench.records import ResultRecord
from superbench.summary import cell_interval, metric_column, split_metric_column
from superbench.tasks import describe_task, in_task_order
from superbench.uncertainty import LEVEL, RESAMPLES, units_word

log = logging.getLogger(__name__)

#: Panels beyond this many are left out of the dev-curve figure (and named in a note).
MAX_CURVE_PANELS = 24

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1em}
table.leaderboard,table.provenance{border-collapse:collapse;font-size:.9em}
table.leaderboard th,table.leaderboard td,table.provenance th,table.provenance td{padding:4px 10px;
border-bottom:1px solid #e4e4e4;text-align:right}
table.leaderboard th,table.provenance th{background:#f3f3f3}
table.leaderboard td:first-child,table.leaderboard th:first-child{text-align:left}
table.provenance td,table.provenance th{text-align:left}
.notes{font-size:.85em;color:#555}.meta{color:#777;font-size:.85em}img{max-width:100%}
pre{background:#f6f6f6;padding:.6em;font-size:.85em;overflow-x:auto}
"""

_MEASURED, _PUBLISHED, _CHANCE = "#4c72b0", "#a0a0a0", "#c44e52"


def normalise_weights(weights: Iterable[float]) -> np.ndarray:
    """Weights as a distribution over layers.

    Records store softmax-normalised weights; raw logits (any negative value or a
    sum far from 1) are softmaxed, non-negative unnormalised weights are rescaled.
    """
    w = np.asarray(list(weights), dtype=float)
    if w.size == 0 or not np.all(np.isfinite(w)):
        return np.array([])
    if np.any(w < 0):
        e = np.exp(w - w.max())
        return e / e.sum()
    total = w.sum()
    if total <= 0:
        return np.full_like(w, 1.0 / w.size)
    return w / total


def png_data_uri(fig) -> str:
    """Encode (and close) a figure as an embeddable data URI."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def record_labels(board: Leaderboard, records: Iterable[ResultRecord]) -> dict[tuple, str]:
    """RunKey tuple of each record -> the label of its leaderboard row, so figures name what the table names."""
    f = board.frame
    measured = f[f["kind"] == "measured"] if "kind" in f else f
    by_row = {tuple(r[k] for k in ROW_KEYS): r["label"] for _, r in measured.iterrows()}
    out = {}
    for r in records:
        key = r.run_key().as_tuple()
        row = (r.upstream, r.upstream_fingerprint, board.row_of.get(key, r.manifest_fingerprint),
               board.recipe_of.get(key, r.recipe_version), r.profile, "" if r.layer is None else str(r.layer))
        out[key] = by_row.get(row, r.upstream)
    return out


def _label(r: ResultRecord, labels: Mapping[tuple, str]) -> str:
    return labels.get(r.run_key().as_tuple()) or r.upstream


def _panel_label(label: str, profile: str, recipe: str) -> str:
    return f"{label} ({profile}, r{recipe})"


def _grid(plt, n: int, cols: int, width: float, height: float):
    cols = max(1, min(n, cols))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


# -- per-task bars ------------------------------------------------------------------------
@dataclass(frozen=True)
class BarRange:
    """What one bar's error bar spans, and what it measures: the bootstrap interval of the row's mean over
    its test units (`kind` "ci") where every seed kept per-unit scores, else ± std over seeds ("std")."""

    mean: float
    low: float
    high: float
    kind: str  # "ci" or "std"
    unit: str = ""  # the resampled unit ("utterance", "trial pair", ...), for "ci"
    units: int = 0  # units per seed (summed over folds), for "ci"
    seeds: int = 0
    level: float = LEVEL
    resamples: int = RESAMPLES

    def describe(self) -> str:
        """The legend's words for this kind of error bar."""
        if self.kind == "ci":
            return f"{100 * self.level:g} % CI over test {units_word(self.unit)}"
        return "± std over seeds"


def row_records(board: Leaderboard, records: Iterable[ResultRecord],
                labels: Mapping[tuple, str] | None = None) -> dict[tuple, list[ResultRecord]]:
    """(row label, profile, row recipe, column) -> the records (seeds) behind that bar: each record under its
    task's column and under each of its secondary metrics' columns ('sf/cer')."""
    records = list(records)
    labels = labels if labels is not None else record_labels(board, records)
    out: dict[tuple, list[ResultRecord]] = defaultdict(list)
    for r in records:
        recipe = board.recipe_of.get(r.run_key().as_tuple(), r.recipe_version)  # the row's, as in the frame
        out[(_label(r, labels), r.profile, recipe, r.task)].append(r)
        for name in r.secondary:
            out[(_label(r, labels), r.profile, recipe, metric_column(r.task, name))].append(r)
    return dict(out)


def bar_range(mean: float, std: float, records: Iterable[ResultRecord], column: str) -> BarRange:
    """The error bar of one bar: the bootstrap interval of the mean over `records`' seeds of `column`'s metric
    (`superbench.summary.cell_interval`, the table's) when every seed kept per-unit scores on the same test
    units; otherwise mean ± std over seeds (± 0 with one seed)."""
    records = list(records)
    std = 0.0 if std is None or not math.isfinite(std) else float(std)
    secondary = split_metric_column(column)[1]
    try:
        interval = cell_interval(records, secondary)
    except ValueError as exc:  # seeds scored on different units: no one interval for their mean
        log.warning("%s of %s: no interval for its bar (%s); ± std over seeds instead", column,
                    records[0].upstream, exc)
        interval = None
    if interval is not None and all(map(math.isfinite, interval)):
        first = records[0].unit_scores(secondary)
        return BarRange(mean, interval[0], interval[1], "ci", first[0].unit, sum(f.n for f in first), len(records),
                        LEVEL, RESAMPLES)
    return BarRange(mean, mean - std, mean + std, "std", seeds=len(records))


def _bar_rows(board: Leaderboard) -> dict[str, pd.DataFrame]:
    """Per column with at least one value, the leaderboard rows that get a bar in its panel."""
    f = board.frame
    if f.empty:
        return {}
    if board.reference != "paper":  # published numbers come from other data: no bar beside local ones
        f = f[f["kind"] == "measured"]
    per_column = {c: f[f[c].notna()] for c in board.columns}
    return {c: rows for c, rows in per_column.items() if not rows.empty}


def bar_ranges(board: Leaderboard, records: Iterable[ResultRecord] = (),
               labels: Mapping[tuple, str] | None = None) -> dict[str, list[tuple[tuple, BarRange]]]:
    """Per column: ((row label, profile, recipe), `bar_range`) for each of its bars, in the table's order,
    the numbers `task_bar_figure` draws (a published row's bar keeps its ± std: it has no records here)."""
    records = list(records)
    labels = labels if labels is not None else record_labels(board, records)
    by_row = row_records(board, records, labels)
    out = {}
    for column, rows in _bar_rows(board).items():
        bars = []
        for _, r in rows.iterrows():
            key = (r["label"], r["profile"], r["recipe_version"])
            recs = by_row.get(key + (column,), []) if r["kind"] == "measured" else []
            bars.append((key, bar_range(float(r[column]), float(r[f"{column}_std"]), recs, column)))
        out[column] = bars
    return out


#: Error-bar colours (the bootstrap interval over test units, ± std over seeds) and the seeds' dots.
_CI_COLOR, _STD_COLOR, _SEED_COLOR = "#111111", "#8c8c8c", "#dd8452"


def task_bar_figure(board: Leaderboard, records: Iterable[ResultRecord] = (),
                    chance: Mapping[str, float] | None = None, labels: Mapping[tuple, str] | None = None):
    """One panel per task metric (the leaderboard's columns: a task's main metric, then its secondary
    ones): a bar per leaderboard row with its error bar (`bar_range`: the 95 % CI over test units where
    the records keep per-unit scores, else ± std over seeds, each kind in its own colour and named in the
    legend), each seed as a point, the value printed beyond the error bar, and a dashed chance line where
    `chance` knows it (main metrics only)."""
    if not board.tasks or board.frame.empty:
        return None
    chance = chance or {}
    records = list(records)
    labels = labels if labels is not None else record_labels(board, records)
    per_task = _bar_rows(board)
    if not per_task:
        return None
    ranges = bar_ranges(board, records, labels)
    by_row = row_records(board, records, labels)
    plt = _pyplot()
    from matplotlib import transforms

    height = max(2.0, 0.36 * max(len(rows) for rows in per_task.values()) + 1.6)
    fig, axes = _grid(plt, len(per_task), 3, 5.2, height)
    for ax, (task, rows) in zip(axes, per_task.items()):
        owner, secondary = split_metric_column(task)
        higher = column_direction(task)
        metric = secondary or describe_task(owner).metric.name
        labels_ = [_panel_label(r.label, r.profile, r.recipe_version) if r.kind == "measured" else r.label
                   for r in rows.itertuples()]
        bars = [b for _, b in ranges[task]]
        y = np.arange(len(rows))
        means = np.array([b.mean for b in bars])
        colors = [_PUBLISHED if k == "published" else _MEASURED for k in rows["kind"]]
        ax.barh(y, means, color=colors, alpha=.85)
        right = [b.high for b in bars] + list(means)
        kinds = {}
        for yi, b in zip(y, bars):  # drawn from its ends: a percentile interval need not be centred on the mean
            color = _CI_COLOR if b.kind == "ci" else _STD_COLOR
            ax.hlines(yi, b.low, b.high, color=color, lw=1.4, zorder=4)
            ax.vlines([b.low, b.high], yi - 0.16, yi + 0.16, color=color, lw=1.4, zorder=4)
            kinds.setdefault(b.describe(), color)
        for (key, _), yi in zip(ranges[task], y):
            recs = by_row.get(key + (task,), [])
            points = [float(r.test) if secondary is None else float(r.secondary[secondary]["test"]) for r in recs]
            if len(points) > 1:
                right += points
                jitter = np.linspace(-0.18, 0.18, len(points))
                ax.scatter(points, yi + jitter, s=12, color=_SEED_COLOR, zorder=5)
        for words, color in kinds.items():
            ax.plot([], [], color=color, lw=1.4, marker="|", ms=8, label=words)
        if any(len(by_row.get(key + (task,), [])) > 1 for key, _ in ranges[task]):
            ax.scatter([], [], s=12, color=_SEED_COLOR, label="one seed")
        if task in chance:
            ax.axvline(chance[task], color=_CHANCE, ls="--", lw=1.2, label=f"chance {chance[task]:.1f}%")
            right.append(chance[task])
        # below the tick labels, never over a bar: what each error bar measures is read beside its panel
        below = transforms.offset_copy(ax.transAxes, fig=fig, y=-14, units="points")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=below, ncol=2, fontsize=7,
                  frameon=False, handlelength=1.6, columnspacing=1.2)
        ax.set_xlim(0, (max(right, default=1.0) or 1.0) * 1.22)
        for yi, b in zip(y, bars):  # written past the error bar's end, never under it
            ax.annotate(f"{b.mean:.1f}", (max(b.high, b.mean), yi), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.set_yticks(y, labels_, fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_title(f"{owner.upper()}: {metric.upper()} % ({'higher' if higher else 'lower'} is better)",
                     fontsize=10)
    fig.tight_layout()
    return fig


def task_bar_chart(board: Leaderboard, records: Iterable[ResultRecord] = (),
                   chance: Mapping[str, float] | None = None, labels: Mapping[tuple, str] | None = None) -> str | None:
    """`task_bar_figure` as a data URI (None when there is nothing to draw)."""
    fig = task_bar_figure(board, records, chance, labels)
    return None if fig is None else png_data_uri(fig)


# -- layer weights --------------------------------------------------------------------------
def layer_weight_figure(records: Iterable[ResultRecord], labels: Mapping[tuple, str] | None = None):
    """A heatmap per leaderboard row (tasks x layers, mean normalised weight over seeds), the weight in each cell."""
    by_key: dict[tuple, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.layer is not None or not r.layer_weights:
            continue
        w = normalise_weights(r.layer_weights)
        if w.size > 1:  # a single-layer upstream (e.g. fbank) has nothing to weigh
            name = (labels or {}).get(r.run_key().as_tuple()) or f"{r.upstream}@{r.upstream_fingerprint[:8]}"
            by_key[(name, r.profile, r.recipe_version)][r.task].append(w)
    if not by_key:
        return None
    titles = {k: _panel_label(*k) for k in by_key}
    keys = sorted(by_key, key=lambda k: titles[k])
    plt = _pyplot()
    heights = [1.3 + 0.5 * len(by_key[k]) for k in keys]
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, key in zip(axes[:, 0], keys):
        groups = by_key[key]
        tasks = in_task_order(groups)
        width = max(len(w) for t in tasks for w in groups[t])
        mat = np.full((len(tasks), width), np.nan)
        for i, t in enumerate(tasks):
            same = [w for w in groups[t] if len(w) == len(groups[t][0])]
            if len(same) != len(groups[t]):
                log.warning("%s/%s: layer-weight vectors of different lengths; plotting the first shape",
                            titles[key], t)
            mean = np.mean(same, axis=0)
            mat[i, :len(mean)] = mean
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=max(np.nanmax(mat), 1e-9))
        top = np.nanmax(mat)
        for (i, j), v in np.ndenumerate(mat):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7 if width <= 13 else 5,
                        color="black" if v > 0.6 * top else "white")
        ax.set_yticks(range(len(tasks)), [t.upper() for t in tasks], fontsize=8)
        ax.set_xticks(range(width), [str(i) for i in range(width)], fontsize=7)
        ax.set_xlabel("layer (0 = input to first block)", fontsize=8)
        ax.set_title(titles[key], fontsize=10)
        fig.colorbar(im, ax=ax, fraction=.025, pad=.01, label="weight")
    fig.tight_layout()
    return fig


# -- score vs layer --------------------------------------------------------------------------
def complete_layer_probes(records: Iterable[ResultRecord]) -> dict[tuple, dict[int, list[ResultRecord]]]:
    """(upstream, fingerprint, data, recipe, profile, task) -> {layer: records} for every
    fingerprint and task whose probes cover each layer 0..L-1 (L from its weighted-sum layer
    weights, else from the probes themselves)."""
    records = list(records)
    n_layers: dict[tuple, int] = {}
    for r in records:
        if r.layer is None and len(r.layer_weights) > 1:
            n_layers[(r.upstream, r.upstream_fingerprint)] = len(r.layer_weights)
    probes: dict[tuple, dict[int, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.layer is None:
            continue
        try:
            layer = int(r.layer)
        except (TypeError, ValueError):
            continue  # "last" names no position
        key = (r.upstream, r.upstream_fingerprint, r.manifest_fingerprint, r.recipe_version, r.profile, r.task)
        probes[key][layer].append(r)
    out = {}
    for key, by_layer in probes.items():
        total = n_layers.get(key[:2], max(by_layer) + 1)
        if total > 1 and set(by_layer) == set(range(total)):
            out[key] = dict(sorted(by_layer.items()))
    return out


def score_vs_layer_figure(records: Iterable[ResultRecord], labels: Mapping[tuple, str] | None = None,
                          chance: Mapping[str, float] | None = None):
    """Per task: test metric of each single-layer probe (mean ± std, seeds as points) against the
    layer, with the weighted sum of the same fingerprint as a dotted line."""
    records = list(records)
    probes = complete_layer_probes(records)
    if not probes:
        return None
    labels, chance = labels or {}, chance or {}
    weighted: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r.layer is None:
            weighted[(r.upstream, r.upstream_fingerprint, r.manifest_fingerprint, r.recipe_version, r.profile,
                      r.task)].append(float(r.test))
    tasks = in_task_order(k[-1] for k in probes)
    plt = _pyplot()
    fig, axes = _grid(plt, len(tasks), 2, 5.6, 3.4)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes, tasks):
        spec = describe_task(task).metric
        for i, key in enumerate(sorted(k for k in probes if k[-1] == task)):
            color = colors[i % len(colors)]
            first = probes[key][min(probes[key])][0]
            base = _label(first, labels).replace(f" [layer {first.layer}]", "")
            name = _panel_label(base, key[4], key[3])
            layers = list(probes[key])
            values = [[float(r.test) for r in probes[key][layer]] for layer in layers]
            means = [statistics.fmean(v) for v in values]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
            ax.errorbar(layers, means, yerr=stds, marker="o", ms=4, capsize=3, color=color, label=name)
            for layer, v in zip(layers, values):
                if len(v) > 1:
                    ax.scatter([layer] * len(v), v, s=9, color=color, alpha=.5)
            if weighted.get(key):
                ax.axhline(statistics.fmean(weighted[key]), color=color, ls=":", lw=1.2,
                           label=f"{name}: weighted sum")
        if task in chance:
            ax.axhline(chance[task], color=_CHANCE, ls="--", lw=1, label=f"chance {chance[task]:.1f}%")
        ax.set_xticks(sorted({layer for k in probes if k[-1] == task for layer in probes[k]}))
        _axes_text(ax, "probed layer (0 = input to first block)", f"test {spec.label}",
               f"{task.upper()}: score vs layer ({spec.direction})", legend=7)
    fig.tight_layout()
    return fig


# -- training: dev curves and the lr sweep ----------------------------------------------------
def _trial_panels(records: Iterable[ResultRecord], labels: Mapping[tuple, str]) -> dict[str, list[ResultRecord]]:
    panels: dict[str, list[ResultRecord]] = defaultdict(list)
    for r in records:
        if any(t.get("history") for t in r.trials):
            name = _panel_label(_label(r, labels), r.profile, r.recipe_version)
            panels[f"{name} · {r.task.upper()}"].append(r)
    def position(item: tuple[str, list[ResultRecord]]) -> tuple[int, str]:
        return (item[1][0].task_info.order, item[0])

    return dict(sorted(panels.items(), key=position))


def dev_curve_figure(records: Iterable[ResultRecord], labels: Mapping[tuple, str] | None = None,
                     max_panels: int = MAX_CURVE_PANELS) -> tuple[Any, list[str]]:
    """Dev metric against training step for every trial (seed x lr x fold), one panel per row and
    task; the chosen lr solid, the others dashed, each trial's best step marked.
    Returns (figure or None, names of the panels left out beyond `max_panels`)."""
    panels = _trial_panels(records, labels or {})
    if not panels:
        return None, []
    names = list(panels)
    shown, left_out = names[:max_panels], names[max_panels:]
    plt = _pyplot()
    fig, axes = _grid(plt, len(shown), 4, 3.6, 2.6)
    cmap = plt.get_cmap("viridis")
    for ax, name in zip(axes, shown):
        recs = panels[name]
        lrs = sorted({float(t["lr"]) for r in recs for t in r.trials})
        for r in recs:
            for t in r.trials:
                hist = np.asarray(t.get("history") or [], dtype=float).reshape(-1, 2)
                if not len(hist):
                    continue
                lr = float(t["lr"])
                color = cmap(lrs.index(lr) / max(1, len(lrs) - 1) * 0.85)
                chosen = r.lr is not None and math.isclose(lr, float(r.lr))
                ax.plot(hist[:, 0], hist[:, 1], color=color, lw=1.3 if chosen else .9,
                        ls="-" if chosen else "--", alpha=.9)
                best = hist[hist[:, 0] == t.get("best_step")]
                if len(best):
                    ax.plot(best[:1, 0], best[:1, 1], "o", color=color, ms=3)
        for lr in lrs:
            ax.plot([], [], color=cmap(lrs.index(lr) / max(1, len(lrs) - 1) * 0.85), label=f"lr {lr:g}")
        spec = recs[0].task_info.metric
        ax.set_title(textwrap.fill(name, 46), fontsize=7)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel(f"dev {spec.label}", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return fig, left_out


def lr_sweep_table(records: Iterable[ResultRecord], labels: Mapping[tuple, str] | None = None) -> pd.DataFrame:
    """Mean dev metric per (row, task, lr) over seeds and folds, from the records' trials."""
    labels = labels or {}
    rows = [{"row": _panel_label(_label(r, labels), r.profile, r.recipe_version),
             "task": r.task, "lr": float(t["lr"]), "dev": float(t["dev"]),
             "chosen": r.lr is not None and math.isclose(float(t["lr"]), float(r.lr))}
            for r in records for t in r.trials if "lr" in t and "dev" in t]
    if not rows:
        return pd.DataFrame(columns=["row", "task", "lr", "dev", "chosen"])
    return (pd.DataFrame(rows).groupby(["row", "task", "lr"], as_index=False)
            .agg(dev=("dev", "mean"), chosen=("chosen", "any")))


def lr_sweep_figure(records: Iterable[ResultRecord], labels: Mapping[tuple, str] | None = None):
    """Per task: dev metric against the learning rate for each row that swept more than one lr;
    the chosen lr starred."""
    sweep = lr_sweep_table(records, labels)
    swept = sweep.groupby(["row", "task"])["lr"].transform("nunique") > 1
    sweep = sweep[swept]
    if sweep.empty:
        return None
    tasks = in_task_order(sweep["task"])
    plt = _pyplot()
    fig, axes = _grid(plt, len(tasks), 3, 4.6, 3.0)
    for ax, task in zip(axes, tasks):
        spec = describe_task(task).metric
        for row, g in sweep[sweep["task"] == task].groupby("row"):
            g = g.sort_values("lr")
            line, = ax.plot(g["lr"], g["dev"], marker="o", ms=4, label=row)
            chosen = g[g["chosen"]]
            ax.plot(chosen["lr"], chosen["dev"], "*", ms=11, color=line.get_color())
        ax.set_xscale("log")
        _axes_text(ax, "learning rate (★ chosen on dev)", f"dev {spec.label}",
               f"{task.upper()}: lr sweep ({spec.direction})", legend=6)
    fig.tight_layout()
    return fig


def _axes_text(ax, xlabel: str, ylabel: str, title: str, legend: int) -> None:
    """Axis labels, title and a frameless legend in the report's sizes."""
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=legend, frameon=False)


# -- provenance -----------------------------------------------------------------------------------
def describe_data_root(root: str | Path, fingerprints: Iterable[str] | None = None
                       ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """(corpora, chance) read from the manifests under `root`: per manifest fingerprint its corpus,
    task, class count and utterances/hours per split; per classification task 100 / #classes.

    With `fingerprints`, only manifests the records were scored on count: a chance line or an
    hour count from another corpus would be a wrong statement about these numbers.
    """
    from superbench.manifest import load_task_manifest

    wanted = None if fingerprints is None else set(fingerprints)
    corpora: dict[str, dict[str, Any]] = {}
    chance: dict[str, float] = {}
    for meta in sorted(Path(root).glob("*/meta.json")):
        try:
            m = load_task_manifest(meta.parent, check_files=False)
        except (OSError, ValueError) as exc:
            log.warning("%s: not described in the report (%s)", meta.parent, exc)
            continue
        if wanted is not None and m.fingerprint not in wanted:
            continue
        spec = describe_task(m.task)
        classes = len(m.labels) if spec is not None and spec.metric.name == "acc" and m.labels else None
        corpora[m.fingerprint] = {
            "corpus": m.corpus, "version": m.version, "task": m.task, "classes": classes,
            "splits": {name: {"utterances": len(rows),
                              "hours": sum(u.num_samples / u.sample_rate for u in rows) / 3600}
                       for name, rows in m.splits.items()}}
        if classes:
            chance[m.task] = 100.0 / classes
    return corpora, chance


def provenance_frame(records: Iterable[ResultRecord], labels: Mapping[tuple, str] | None = None) -> pd.DataFrame:
    """One row per (leaderboard row, task): what produced the number."""
    labels = labels or {}
    rows = []
    for r in records:
        trial_lrs = sorted({float(t["lr"]) for t in r.trials if "lr" in t})
        rows.append({"row": _label(r, labels), "task": r.task.upper(),
                     "corpus": r.corpus or "unknown", "data": r.manifest_fingerprint[:12] or "unknown",
                     "profile": r.profile, "recipe": r.recipe_version, "seed": int(r.seed),
                     "lr": "–" if r.lr is None else f"{r.lr:g}",
                     "grid": ", ".join(f"{x:g}" for x in trial_lrs) or "–", "steps": r.steps,
                     "git": r.git_hash or "–", "superbench": r.versions.get("superbench", "–"),
                     "created": r.created_at or "–",
                     "train_s": float(r.wall_time.get("training", 0.0)),
                     "extract_s": float(r.wall_time.get("extraction", 0.0))})
    cols = ["row", "task", "corpus", "data", "profile", "recipe", "seeds", "chosen lr per seed", "lr grid",
            "steps", "git", "superbench", "newest record", "train s", "extract s"]
    if not rows:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame(rows).sort_values(["row", "task", "seed"])
    keys = ["row", "task", "corpus", "data", "profile", "recipe"]
    out = frame.groupby(keys, sort=False).agg(
        seeds=("seed", lambda s: ",".join(map(str, s))), lr=("lr", ", ".join),
        grid=("grid", lambda s: " | ".join(dict.fromkeys(s))), steps=("steps", "max"),
        git=("git", lambda s: ", ".join(dict.fromkeys(s))),
        superbench=("superbench", lambda s: ", ".join(dict.fromkeys(s))), created=("created", "max"),
        train_s=("train_s", "sum"), extract_s=("extract_s", "sum")).reset_index()
    out.columns = cols
    out["train s"] = out["train s"].round(1)
    out["extract s"] = out["extract s"].round(1)
    return out


def corpus_frame(records: Iterable[ResultRecord], corpora: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> pd.DataFrame:
    """One row per (corpus fingerprint, split): what records say, plus `corpora`'s sizes when given."""
    corpora = corpora or {}
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        entry = seen.setdefault(r.manifest_fingerprint, {"corpus": r.corpus or "unknown", "tasks": set()})
        entry["tasks"].add(r.task)
    rows = []
    for fp, entry in sorted(seen.items(), key=lambda kv: (kv[1]["corpus"], sorted(kv[1]["tasks"]))):
        base = {"corpus": entry["corpus"], "data fingerprint": fp[:12] or "unknown",
                "tasks": ",".join(in_task_order(entry["tasks"])).upper()}
        info = corpora.get(fp)
        if not info:
            rows.append({**base, "classes": "–", "split": "–", "utterances": "–", "hours": "–"})
            continue
        for split, size in info.get("splits", {}).items():
            rows.append({**base, "classes": info.get("classes") or "–", "split": split,
                         "utterances": size["utterances"], "hours": f"{size['hours']:.3f}"})
    return pd.DataFrame(rows, columns=["corpus", "data fingerprint", "tasks", "classes", "split", "utterances",
                                       "hours"])


def run_commands(records: Iterable[ResultRecord]) -> list[str]:
    """`superbench run` lines equivalent to the stored records, reconstructed from their fields
    (--data names the corpus; the path it was read from is not recorded)."""
    groups: dict[tuple, dict[str, set]] = defaultdict(lambda: {"tasks": set(), "seeds": set()})
    for r in records:
        layer = None if r.layer is None else str(r.layer)
        key = (r.upstream, r.upstream_fingerprint[:8], r.corpus or "unknown", r.manifest_fingerprint[:8],
               r.profile, layer)
        g = groups[key]
        g["tasks"].add(r.task)
        g["seeds"].add(int(r.seed))
    lines = []
    for (up, fp, corpus, data, profile, layer), g in sorted(groups.items(), key=lambda kv: tuple(
            "" if x is None else str(x) for x in kv[0])):
        seeds = sorted(g["seeds"])
        seed_arg = f" --seeds {len(seeds)}" if seeds == list(range(len(seeds))) else f"  # seeds {seeds}"
        layer_arg = "" if layer is None else f" --layer {layer}"
        base_profile = profile.split("+")[0]
        overrides = "" if base_profile == profile else "  # with recipe overrides " + profile
        lines.append(f"superbench run --upstream {up} --task {','.join(in_task_order(g['tasks']))} "
                     f"--data <{corpus} data {data}> --profile {base_profile}{layer_arg}{seed_arg}"
                     f"   # weights {fp}{overrides}")
    return lines


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, classes="provenance", border=0)


def _img(uri: str | None, alt: str, missing: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='{uri}'>" if uri else f"<p class='notes'>{html.escape(missing)}</p>"


def build_report(records: list[ResultRecord], reference: str | None = None, sort: str | None = None,
                 title: str = "superbench report", *, published: Iterable[PublishedResult] = (),
                 chance: Mapping[str, float] | None = None,
                 corpora: Mapping[str, Mapping[str, Any]] | None = None, command: str | None = None,
                 alpha: float = ALPHA) -> str:
    """The whole report as one HTML string.

    `chance` (task -> percent) draws chance lines only where the class count is known (the CLI
    reads it from the manifests); `corpora` (manifest fingerprint -> corpus, classes, utterances
    and hours per split) adds corpus sizes, which records do not carry; `command` is shown as
    the command that made the report; `alpha` is the level of the pairwise significance matrices.
    """
    records = list(records)
    published = list(published)
    board = build_leaderboard(records, reference=reference, sort=sort, published=published)
    labels = record_labels(board, records)
    chance = {t: float(v) for t, v in (chance or {}).items() if t in board.tasks and math.isfinite(float(v))}
    esc = html.escape

    bars = task_bar_chart(board, records, chance, labels)
    order = [str(x) for x in board.frame["label"]] if "label" in board.frame else []
    matrices = significance_matrices(records, labels, order, alpha)
    weights_fig = layer_weight_figure(records, labels)
    weights = None if weights_fig is None else png_data_uri(weights_fig)
    layer_fig = score_vs_layer_figure(records, labels, chance)
    by_layer = None if layer_fig is None else png_data_uri(layer_fig)
    curves_fig, curves_left_out = dev_curve_figure(records, labels)
    curves = None if curves_fig is None else png_data_uri(curves_fig)
    sweep_fig = lr_sweep_figure(records, labels)
    sweep = None if sweep_fig is None else png_data_uri(sweep_fig)

    no_chance = [t.upper() for t in in_task_order({r.task for r in records}) if t not in chance]
    chance_note = ("Chance (uniform guess, 100 / number of classes in the manifest): "
                   + (", ".join(f"{t.upper()} {v:.1f} %" for t, v in chance.items()) if chance else "none drawn")
                   + (f"; no chance line for {', '.join(no_chance)} (error rates have none; for accuracy the "
                      f"class count is not in the records: pass --data to `superbench report`)" if no_chance else "")
                   + ". The number is the mean over seeds, written past the error bar. Black error bars: the "
                   f"{100 * LEVEL:g} % percentile-bootstrap interval of that mean over the test units "
                   f"({RESAMPLES:,} resamples of the units, shared by the seeds; the legend names the unit), "
                   "where every seed kept its per-unit scores; grey: ± std over seeds (records without per-unit "
                   "scores; ± 0 with one seed). Dots are single seeds.")
    curves_note = ("Dev metric at each evaluation of every training (seed × lr × fold); solid = the lr chosen on "
                   "dev, dashed = the other lrs of the sweep, dot = the step whose checkpoint was scored on test.")
    if curves_left_out:
        curves_note += f" Left out ({len(curves_left_out)} more panels): {', '.join(curves_left_out)}."
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_CSS}{SIGNIFICANCE_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        (f"<p class='meta'>{len(records)} result record(s)"
         + (f" and {len(published)} published number(s)" if published else "")
         + f"; SUPERB score reference: <b>{esc(board.reference)}</b>"
         + (f"; SG score: {esc(SG_SCOPE)}, never counted in the SUPERB score" if board.has_sg else "")
         + "; "
         f"generated {esc(now_iso())} by superbench {esc(__version__)}</p>"),
        "<h2>Leaderboard</h2>", board.to_html(),
        "<h2>Per-task results</h2>", f"<p class='notes'>{esc(chance_note)}</p>",
        _img(bars, "per-task results", "No results."),
        "<h2>Pairwise significance</h2>",
        (f"<p class='notes'>Per task metric and test set (same data, recipe version and profile), every pair of "
         f"models whose records keep per-unit test scores, compared on the same test units; Holm's correction "
         f"over the pairs of each table, significance level α = {alpha:g} (<code>--alpha</code>).</p>"),
        significance_html(matrices),
        "<h2>Layer weights</h2>",
        ("<p class='notes'>Normalised weighted-sum weights by layer (mean over seeds), one panel per leaderboard "
         "row. Content tasks (PR, ASR) typically favour upper-middle layers, speaker tasks (SID) lower "
         "layers.</p>"),
        _img(weights, "layer weights", "No layer weights recorded (single-layer probes only, or no results)."),
        "<h2>Score vs layer</h2>",
        _img(by_layer, "score vs layer", "No fingerprint has single-layer probes of every layer of a task "
             "(superbench run --layer K for each K, or --layer all)."),
        "<h2>Training</h2>", f"<p class='notes'>{esc(curves_note)}</p>",
        _img(curves, "dev curves", "No training histories in these records (written before trials were kept)."),
        _img(sweep, "lr sweep", "No lr sweep in these records: every training used a single learning rate "
             "(--lr, --no-lr-sweep or a profile with one lr)."),
        "<h2>What produced these numbers</h2>",
        "<h3>Corpora</h3>", _table_html(corpus_frame(records, corpora)),
        ("" if corpora else "<p class='notes'>Hours and utterances per split are not stored in result records; "
         "pass <code>--data DATA_ROOT</code> to <code>superbench report</code> to read them from the "
         "manifests the records were scored on.</p>"),
        "<h3>Runs</h3>", _table_html(provenance_frame(records, labels)),
    ]
    if published:
        pub = pd.DataFrame([{"row": p.label, "task": p.task.upper(), "metric": p.metric.upper(), "value": p.value,
                             "source": p.source, "note": p.note} for p in published])
        parts += ["<h3>Published numbers</h3>", _table_html(pub)]
    commands = ([f"# this report\n{command}"] if command else []) + (
        ["# equivalent runs (reconstructed from the records)"] + run_commands(records) if records else [])
    if commands:
        parts += ["<h3>Commands</h3>", f"<pre>{esc(chr(10).join(commands))}</pre>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)

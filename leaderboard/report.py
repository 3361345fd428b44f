"""Self-contained HTML report: leaderboard table, per-task bars, layer-weight figure.

One file with every image embedded as base64 PNG (matplotlib Agg, no display
needed), so it can be attached to a CI run, mailed, or opened offline.
The layer-weight figure is the classic SUPERB analysis: for each upstream, the
softmax-normalised weighted-sum weights per layer for every task, showing which
layers carry content (PR/ASR) versus speaker (SID) information.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from leaderboard.table import Leaderboard, build_leaderboard
from superbench import __version__
from superbench.results import ResultRecord, now_iso
from superbench.tasks import TASKS, in_task_order

log = logging.getLogger(__name__)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table.leaderboard{border-collapse:collapse;font-size:.9em}
table.leaderboard th,table.leaderboard td{padding:4px 10px;border-bottom:1px solid #e4e4e4;text-align:right}
table.leaderboard th{background:#f3f3f3}
table.leaderboard td:first-child,table.leaderboard th:first-child{text-align:left}
.notes{font-size:.85em;color:#555}.meta{color:#777;font-size:.85em}img{max-width:100%}
"""


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


def _png(fig) -> str:
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


def task_bar_chart(board: Leaderboard) -> str | None:
    """One panel per task: mean ± std per leaderboard row, direction in the title."""
    if not board.tasks or board.frame.empty:
        return None
    plt = _pyplot()
    n = len(board.tasks)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    height = max(2.2, 0.35 * len(board.frame) + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, height * rows), squeeze=False)
    labels = [f"{r.label} ({r.profile}, r{r.recipe_version})" for r in board.frame.itertuples()]
    for ax, task in zip(axes.flat, board.tasks):
        spec = TASKS.get(task)
        means = board.frame[task].to_numpy(dtype=float)
        stds = np.nan_to_num(board.frame[f"{task}_std"].to_numpy(dtype=float))
        y = np.arange(len(labels))
        ax.barh(y, np.nan_to_num(means), xerr=stds, color="#4c72b0", alpha=.85, capsize=3)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{task.upper()}: {spec.metric.upper()} % ({spec.direction})", fontsize=10)
        for yi, m in zip(y, means):
            if math.isfinite(m):
                ax.text(m, yi, f" {m:.1f}", va="center", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def layer_weight_figure(records: Iterable[ResultRecord]) -> str | None:
    """Heatmap per upstream: tasks x layers, mean normalised weight over seeds."""
    by_key: dict[tuple, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.layer is not None or not r.layer_weights:
            continue
        w = normalise_weights(r.layer_weights)
        if w.size > 1:  # a single-layer upstream (e.g. fbank) has nothing to weigh
            key = (r.upstream, r.upstream_fingerprint, r.manifest_fingerprint, r.profile, r.recipe_version)
            by_key[key][r.task].append(w)
    if not by_key:
        return None
    groups = {_weights_title(key, by_key): tasks for key, tasks in by_key.items()}
    plt = _pyplot()
    names = sorted(groups)
    height = sum(1.1 + 0.45 * len(groups[n]) for n in names)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, height), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        tasks = in_task_order(groups[name])
        width = max(len(w) for t in tasks for w in groups[name][t])
        mat = np.full((len(tasks), width), np.nan)
        for i, t in enumerate(tasks):
            same = [w for w in groups[name][t] if len(w) == len(groups[name][t][0])]
            if len(same) != len(groups[name][t]):
                log.warning("%s/%s: layer-weight vectors of different lengths; plotting the first shape", name, t)
            mean = np.mean(same, axis=0)
            mat[i, :len(mean)] = mean
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0)
        ax.set_yticks(range(len(tasks)), [t.upper() for t in tasks], fontsize=8)
        ax.set_xticks(range(width), [str(i) for i in range(width)], fontsize=7)
        ax.set_xlabel("layer (0 = input to first block)", fontsize=8)
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=.025, pad=.01, label="weight")
    fig.tight_layout()
    return _png(fig)


def _weights_title(key: tuple, keys: Iterable[tuple]) -> str:
    """Like the table's row label: weights and corpora are named only where one upstream has several."""
    upstream, fingerprint, data, profile, recipe = key
    same = [k for k in keys if k[0] == upstream]
    title = upstream
    if len({k[1] for k in same}) > 1:
        title += f"@{fingerprint[:8] or 'unknown'}"
    if len({k[2] for k in same}) > 1:
        title += f" [data {data[:8] or 'unknown'}]"
    return f"{title} ({profile}, r{recipe})"


def build_report(records: list[ResultRecord], reference: str = "paper", sort: str | None = None,
                 title: str = "superbench report") -> str:
    """The whole report as one HTML string."""
    records = list(records)
    board = build_leaderboard(records, reference=reference, sort=sort)
    bars = task_bar_chart(board)
    weights = layer_weight_figure(records)
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        (f"<p class='meta'>{len(records)} result record(s); SUPERB score reference: <b>{esc(reference)}</b>; "
         f"generated {esc(now_iso())} by superbench {esc(__version__)}</p>"),
        "<h2>Leaderboard</h2>", board.to_html(),
        "<h2>Per-task results</h2>",
        f"<img alt='per-task results' src='{bars}'>" if bars else "<p>No results.</p>",
        "<h2>Layer weights</h2>",
        ("<p class='notes'>Normalised weighted-sum weights by layer (mean over seeds). Content tasks (PR, ASR) "
         "typically favour upper-middle layers, speaker tasks (SID) lower layers.</p>"),
        f"<img alt='layer weights' src='{weights}'>" if weights else
        "<p>No layer weights recorded (single-layer probes only, or no results).</p>",
        "</body></html>\n",
    ]
    return "\n".join(parts)

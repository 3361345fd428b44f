"""Leaderboard table: upstreams x tasks, mean ± std over seeds, SUPERB score.

Rows are (upstream, fingerprint, data, recipe version, profile, layer): results
from different corpora (manifest fingerprints), recipe versions or profiles are
different experiments, so they get separate rows and are never averaged together.
The numbers come from `superbench.results.aggregate`, the same summary the runner
prints. Every task column header names the metric and its direction, and every
score carries its task set and reference mode (see leaderboard/score.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from leaderboard.score import (
    FBANK_UPSTREAM,
    REFERENCE_MODES,
    SuperbScore,
    local_references,
    paper_references,
    superb_score,
)
from superbench.results import ResultRecord, aggregate
from superbench.tasks import TASKS, in_task_order

ROW_KEYS = ["upstream", "upstream_fingerprint", "data", "recipe_version", "profile", "layer"]
FORMATS = ("md", "csv", "json", "html")


def _task_header(task: str) -> str:
    spec = TASKS.get(task)
    return f"{task.upper()} {spec.metric.upper()}% {'↑' if spec.higher_is_better else '↓'}"


def _fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.2f}" if std is None or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


@dataclass
class Leaderboard:
    """Numeric wide frame plus what is needed to render it honestly."""

    frame: pd.DataFrame  # one row per ROW_KEYS; per task: <task>, <task>_std, <task>_n; score, n_tasks, tasks
    tasks: list[str]
    reference: str
    scores: list[SuperbScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # -- views ----------------------------------------------------------------------
    def display_frame(self) -> pd.DataFrame:
        """Human-readable frame: formatted cells and self-describing headers."""
        f = self.frame
        out = pd.DataFrame({"upstream": f["label"]})
        out["recipe"] = f["recipe_version"]
        out["profile"] = f["profile"]
        for t in self.tasks:
            out[_task_header(t)] = [_fmt(m, s) for m, s in zip(f[t], f[f"{t}_std"])]
        out["seeds"] = [_seeds_label(row, self.tasks) for _, row in f.iterrows()]
        out[f"SUPERB ({self.reference} ref)"] = ["–" if math.isnan(s) else f"{s:.1f}" for s in f["score"]]
        out["score tasks"] = [f"{n}: {t}" if n else "–" for n, t in zip(f["n_tasks"], f["tasks"])]
        return out

    def to_markdown(self) -> str:
        d = self.display_frame()
        cols = list(d.columns)
        lines = ["| " + " | ".join(cols) + " |",
                 "|" + "|".join("---" if c in ("upstream", "recipe", "profile", "score tasks") else "---:"
                                for c in cols) + "|"]
        for _, row in d.iterrows():
            lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

    def to_csv(self) -> str:
        cols = ["label"] + ROW_KEYS + [c for t in self.tasks for c in (t, f"{t}_std", f"{t}_n")] + \
            ["score", "n_tasks", "tasks", "reference"]
        return self.frame[cols].rename(columns={"label": "row"}).to_csv(index=False, float_format="%.4f")

    def to_json(self) -> str:
        rows = []
        for _, r in self.frame.iterrows():
            rows.append({
                "row": r["label"], **{k: r[k] for k in ROW_KEYS},
                "tasks": {t: {"metric": TASKS.get(t).metric, "higher_is_better": TASKS.get(t).higher_is_better,
                              "mean": _num(r[t]), "std": _num(r[f"{t}_std"]), "n": int(r[f"{t}_n"])}
                          for t in self.tasks if not math.isnan(r[t])},
                "superb_score": {"value": _num(r["score"]), "tasks": r["tasks"].split(",") if r["tasks"] else [],
                                 "reference": self.reference},
            })
        return json.dumps({"reference": self.reference, "notes": self.notes, "rows": rows}, indent=2) + "\n"

    def to_html(self) -> str:
        table = self.display_frame().to_html(index=False, escape=True, classes="leaderboard", border=0)
        notes = "".join(f"<li>{_esc(n)}</li>" for n in self.notes)
        return table + (f"<ul class='notes'>{notes}</ul>" if notes else "")

    def render(self, fmt: str) -> str:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        return {"md": self.to_markdown, "csv": self.to_csv, "json": self.to_json, "html": self.to_html}[fmt]()


def _esc(text: str) -> str:
    import html

    return html.escape(text)


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


def _seeds_label(row: pd.Series, tasks: list[str]) -> str:
    ns = sorted({int(row[f"{t}_n"]) for t in tasks if row[f"{t}_n"] > 0})
    return "/".join(map(str, ns)) if ns else "–"


def _short(fingerprint: str) -> str:
    return str(fingerprint)[:8] or "unknown"


def _row_labels(frame: pd.DataFrame) -> list[str]:
    """Upstream name, plus the fingerprint when one name covers several weights, plus the data
    when one name has rows on several corpora, plus the probed layer."""
    fps = frame.groupby("upstream")["upstream_fingerprint"].nunique()
    datas = frame.groupby("upstream")["data"].nunique()
    labels = []
    for _, r in frame.iterrows():
        label = r["upstream"]
        if fps[r["upstream"]] > 1:
            label += f"@{_short(r['upstream_fingerprint'])}"
        if datas[r["upstream"]] > 1:
            label += f" [data {_short(r['data'])}]"
        if r["layer"] != "":
            label += f" [layer {r['layer']}]"
        labels.append(label)
    return labels


def build_leaderboard(records: Iterable[ResultRecord], reference: str = "paper",
                      sort: str | None = None) -> Leaderboard:
    """Aggregate records into the leaderboard (see module docstring)."""
    if reference not in REFERENCE_MODES:
        raise ValueError(f"unknown reference {reference!r}; choose from {', '.join(REFERENCE_MODES)}")
    long = aggregate(records, by=ROW_KEYS)
    tasks = in_task_order(long["task"])
    if long.empty:
        frame = pd.DataFrame(columns=ROW_KEYS + ["label", "score", "n_tasks", "tasks", "reference"])
        return Leaderboard(frame, [], reference, notes=["no results stored yet"])
    stats = long.set_index(ROW_KEYS + ["task"])[["mean", "std", "n"]].unstack("task")
    wide = stats["mean"].reindex(columns=tasks)
    for t in tasks:
        wide[f"{t}_std"] = stats["std"].reindex(columns=tasks)[t]
        wide[f"{t}_n"] = stats["n"].reindex(columns=tasks)[t].fillna(0).astype(int)
    wide = wide.reset_index()
    wide.columns.name = None
    wide["label"] = _row_labels(wide)

    notes: list[str] = []
    refs_by_group = _references(wide, tasks, reference, notes)
    scores = []
    for _, r in wide.iterrows():
        metrics = {t: float(r[t]) for t in tasks if not math.isnan(r[t])}
        scores.append(superb_score(metrics, refs_by_group[_group(r)], reference))
    wide["score"] = [s.score for s in scores]
    wide["n_tasks"] = [s.n_tasks for s in scores]
    wide["tasks"] = [",".join(s.tasks) for s in scores]
    wide["reference"] = reference

    if len({s.tasks for s in scores if s.tasks}) > 1:
        notes.append("rows are scored over different task sets; compare SUPERB scores only between rows "
                     "with the same 'score tasks'")
    notes.append("the official SUPERB leaderboard averages over ten tasks; these scores cover only the tasks "
                 "listed and are not comparable with it")
    board = Leaderboard(wide, tasks, reference, scores, notes)
    return sort_leaderboard(board, sort or "score")


def _group(row: pd.Series) -> tuple[str, str, str]:
    """The comparable group of a row: local references are measured per (data, recipe, profile)."""
    return (row["data"], row["recipe_version"], row["profile"])


def _group_name(group: tuple[str, str, str], with_data: bool) -> str:
    data, recipe, profile = group
    return (f"data {_short(data)} / " if with_data else "") + f"recipe {recipe} / profile {profile}"


def _references(wide: pd.DataFrame, tasks: list[str], reference: str, notes: list[str]) -> dict:
    groups = {_group(r) for _, r in wide.iterrows()}
    with_data = len({g[0] for g in groups}) > 1
    if reference == "paper":
        refs = paper_references()
        notes.insert(0, "SUPERB score: 1000*(m-FBANK)/(SOTA-FBANK) per task, averaged; reference = paper "
                        "(official leaderboard reference points, declared by each task)")
        odd = sorted({p for _, _, p in groups if p != "superb"})
        if odd:
            notes.append(f"paper references assume the full SUPERB protocol; rows with profile(s) {odd} are "
                         f"scored for orientation only (use --reference local)")
        return {g: refs for g in groups}
    notes.insert(0, f"SUPERB score: 1000*(m-FBANK)/(SOTA-FBANK) per task, averaged; reference = local "
                    f"(FBANK = '{FBANK_UPSTREAM}' upstream, SOTA = best upstream, per data, recipe version "
                    f"and profile)")
    out = {}
    for group in sorted(groups):
        sub = wide[(wide["data"] == group[0]) & (wide["recipe_version"] == group[1])
                   & (wide["profile"] == group[2]) & (wide["layer"] == "")]
        means = {}
        for _, r in sub.iterrows():
            means.setdefault(r["upstream"], {t: float(r[t]) for t in tasks if not math.isnan(r[t])})
        out[group] = local_references(means)
        tied = [t for t, ref in out[group].items() if ref.sota == ref.fbank]
        if tied:
            notes.append(f"{_group_name(group, with_data)}: no upstream beats '{FBANK_UPSTREAM}' on "
                         f"{', '.join(tied)}, so SOTA = FBANK and the local score leaves those tasks out")
        if FBANK_UPSTREAM not in means:
            notes.append(f"no '{FBANK_UPSTREAM}' results for {_group_name(group, with_data)}: "
                         f"no local SUPERB score there")
    return out


def sort_leaderboard(board: Leaderboard, column: str) -> Leaderboard:
    """Sort best-first by 'score', a task name (direction-aware) or 'upstream'/'recipe'/'profile'/'data'."""
    col = column.lower()
    f = board.frame
    aliases = {"recipe": "recipe_version", "recipe_version": "recipe_version", "profile": "profile",
               "upstream": "label", "row": "label", "data": "data"}
    if col in ("score", "superb"):
        key, ascending = "score", False
    elif col in board.tasks:
        key, ascending = col, not TASKS.get(col).higher_is_better
    elif col in aliases:
        key, ascending = aliases[col], True
    else:
        choices = ["score", "upstream", "recipe", "profile", "data"] + board.tasks
        raise ValueError(f"cannot sort by {column!r}; choose from {', '.join(choices)}")
    if not f.empty:
        board.frame = f.sort_values([key, "label"], ascending=[ascending, True], na_position="last",
                                    kind="stable").reset_index(drop=True)
    return board

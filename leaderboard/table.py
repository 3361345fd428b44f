"""Leaderboard table: upstreams x tasks, mean ± std over seeds, SUPERB score.

Rows are (upstream, fingerprint, data, recipe version, profile, layer): results
from different corpora (manifest fingerprints), recipe versions or profiles are
different experiments, so they get separate rows and are never averaged together.
A row's `data` joins its tasks' manifest fingerprints (each task has its own manifest;
see `row_data`), and local references are measured per task data.
The numbers come from `superbench.results.aggregate`, the same summary the runner
prints. Every task column header names the metric and its direction, and every
score carries its task set and reference mode (see leaderboard/score.py).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pandas as pd

from leaderboard.published import PublishedResult
from leaderboard.score import (
    FBANK_UPSTREAM,
    REFERENCE_MODES,
    SuperbScore,
    default_reference,
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


def _fixed(x: float, digits: int) -> str:
    """`x` to `digits` decimals, never "-0.0" (a value that rounds to zero has no sign)."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"


def _fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return _fixed(mean, 2) if std is None or math.isnan(std) else f"{_fixed(mean, 2)} ± {_fixed(std, 2)}"


def format_score(score: float) -> str:
    """A SUPERB score as shown in tables: one decimal, '–' when there is none, never '-0.0'."""
    return "–" if score is None or math.isnan(score) else _fixed(score, 1)


@dataclass
class Leaderboard:
    """Numeric wide frame plus what is needed to render it honestly."""

    frame: pd.DataFrame  # one row per ROW_KEYS; per task: <task>, <task>_std, <task>_n; score, n_tasks, tasks
    tasks: list[str]
    reference: str
    scores: list[SuperbScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: RunKey tuple of each record -> the `data` of its row (see `row_data`), to find a record's row.
    row_of: dict[tuple, str] = field(default_factory=dict)
    #: RunKey tuple of each record -> the recipe label of its row (see `row_recipes`).
    recipe_of: dict[tuple, str] = field(default_factory=dict)

    # -- views ----------------------------------------------------------------------
    def display_frame(self) -> pd.DataFrame:
        """Human-readable frame: formatted cells and self-describing headers."""
        f = self.frame
        out = pd.DataFrame({"upstream": f["label"]})
        out["recipe"] = [v or "–" for v in f["recipe_version"]]
        out["profile"] = f["profile"]
        for t in self.tasks:
            out[_task_header(t)] = [_fmt(m, s) for m, s in zip(f[t], f[f"{t}_std"])]
        out["seeds"] = [_seeds_label(row, self.tasks) for _, row in f.iterrows()]
        out[f"SUPERB ({self.reference} ref)"] = [format_score(s) for s in f["score"]]
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
            ["score", "n_tasks", "tasks", "reference", "kind", "source"]
        frame = self.frame[cols].rename(columns={"label": "row"})
        numeric = frame.select_dtypes("number").columns
        frame[numeric] = frame[numeric].round(4) + 0  # rounding to zero leaves no "-0.0000"
        return frame.to_csv(index=False, float_format="%.4f")

    def to_json(self) -> str:
        rows = []
        for _, r in self.frame.iterrows():
            rows.append({
                "row": r["label"], **{k: r[k] for k in ROW_KEYS}, "kind": r["kind"],
                **({"source": r["source"]} if r["kind"] == "published" else {}),
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
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6) + 0.0


def _seeds_label(row: pd.Series, tasks: list[str]) -> str:
    if row.get("kind") == "published":
        return "published"
    ns = sorted({int(row[f"{t}_n"]) for t in tasks if row[f"{t}_n"] > 0})
    return "/".join(map(str, ns)) if ns else "–"


def _short(fingerprint: str) -> str:
    """First 8 characters of a fingerprint, of each one for a row's joined per-task fingerprints."""
    return "+".join(part[:8] or "unknown" for part in str(fingerprint).split("+"))


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


def row_data(records: Iterable[ResultRecord]) -> dict[tuple, str]:
    """The `data` of each record's row, by `RunKey` tuple.

    Every task has its own manifest, so one corpus gives each task another fingerprint. A row
    holds one model's tasks on one corpus: its `data` joins the per-task fingerprints ('+').
    When a task of (upstream, fingerprint, corpus name, recipe, profile, layer) was scored on
    several data (a re-prepared or relabelled corpus), nothing says which tasks belong together,
    so those records get one row per data fingerprint instead.
    """
    records = list(records)
    by_base: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        by_base[_base(r)][r.task].add(r.manifest_fingerprint)
    out = {}
    for r in records:
        per_task = by_base[_base(r)]
        joined = all(len(fps) == 1 for fps in per_task.values())
        out[r.run_key().as_tuple()] = ("+".join(sorted(set().union(*per_task.values()))) if joined
                                       else r.manifest_fingerprint)
    return out


def row_recipes(records: Iterable[ResultRecord]) -> dict[tuple, str]:
    """The recipe label of each record's row, by `RunKey` tuple.

    Recipe versions are per task, so one model's tasks can carry different versions (pr 2, er 1, ...):
    its row keeps them together and lists them per task ('pr2 ks2 er1'), or shows the one version they
    share. When a task of (upstream, fingerprint, corpus, profile, layer) was scored under several versions,
    those records keep their own version, one row each, as rows never average across versions.
    """
    records = list(records)
    by_base: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        by_base[_recipe_base(r)][r.task].add(str(r.recipe_version))
    out = {}
    for r in records:
        per_task = by_base[_recipe_base(r)]
        label = str(r.recipe_version)
        if all(len(v) == 1 for v in per_task.values()):
            versions = {t: next(iter(v)) for t, v in per_task.items()}
            if len(set(versions.values())) > 1:
                label = " ".join(f"{t}{versions[t]}" for t in in_task_order(list(versions)))
        out[r.run_key().as_tuple()] = label
    return out


def _recipe_base(r: ResultRecord) -> tuple:
    return (r.upstream, r.upstream_fingerprint, r.corpus, r.profile, r.layer)


def _base(r: ResultRecord) -> tuple:
    return (r.upstream, r.upstream_fingerprint, r.corpus, r.recipe_version, r.profile, r.layer)


def build_leaderboard(records: Iterable[ResultRecord], reference: str | None = None,
                      sort: str | None = None, published: Iterable[PublishedResult] = ()) -> Leaderboard:
    """Aggregate records (plus published numbers, as their own rows) into the leaderboard.

    `reference=None` picks the mode from the rows' corpora (see `leaderboard.score.default_reference`)
    and says so in the notes.
    """
    records = list(records)
    notes: list[str] = []
    if reference is None:
        reference, why = default_reference(r.corpus for r in records)
        notes.append(f"reference = {reference} by default: {why}; pass --reference "
                     f"{'paper' if reference == 'local' else 'local'} to override")
    if reference not in REFERENCE_MODES:
        raise ValueError(f"unknown reference {reference!r}; choose from {', '.join(REFERENCE_MODES)}")
    published = list(published)
    recipe_of = row_recipes(records)
    relabelled = [replace(r, recipe_version=recipe_of[r.run_key().as_tuple()]) for r in records]
    data_by_row = row_data(relabelled)  # by the relabelled records' keys
    data_of = {r.run_key().as_tuple(): data_by_row[n.run_key().as_tuple()] for r, n in zip(records, relabelled)}
    rows = [replace(n, manifest_fingerprint=data_by_row[n.run_key().as_tuple()]) for n in relabelled]
    long = aggregate(rows, by=ROW_KEYS)
    tasks = in_task_order(list(long["task"]) + [p.task for p in published])
    if long.empty and not published:
        frame = pd.DataFrame(columns=ROW_KEYS + ["label", "kind", "score", "n_tasks", "tasks", "reference"])
        return Leaderboard(frame, [], reference, notes=notes + ["no results stored yet"])
    wide = _measured_frame(long, tasks, relabelled, data_by_row) if not long.empty else pd.DataFrame()
    if published:
        wide = pd.concat([wide, _published_frame(published, tasks)], ignore_index=True)
    for t in tasks:
        wide[f"{t}_n"] = wide[f"{t}_n"].fillna(0).astype(int)
        if f"{t}_data" not in wide:
            wide[f"{t}_data"] = ""
        wide[f"{t}_data"] = wide[f"{t}_data"].fillna("")

    refs_by_row = _references(wide, tasks, reference, notes)
    scores = []
    for i, r in wide.iterrows():
        metrics = {t: float(r[t]) for t in tasks if not math.isnan(r[t])}
        scores.append(superb_score(metrics, refs_by_row[i], reference))
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
    board.row_of = data_of
    board.recipe_of = recipe_of
    return sort_leaderboard(board, sort or "score")


def _measured_frame(long: pd.DataFrame, tasks: list[str], records: list[ResultRecord],
                    data_of: dict[tuple, str]) -> pd.DataFrame:
    stats = long.set_index(ROW_KEYS + ["task"])[["mean", "std", "n", "created_at"]].unstack("task")
    wide = stats["mean"].reindex(columns=tasks)
    for t in tasks:
        wide[f"{t}_std"] = stats["std"].reindex(columns=tasks)[t]
        wide[f"{t}_n"] = stats["n"].reindex(columns=tasks)[t].fillna(0).astype(int)
    wide["created_at"] = stats["created_at"].fillna("").max(axis=1)
    wide = wide.reset_index()
    wide.columns.name = None
    corpus, task_data = {}, {}
    for r in records:
        row = (r.upstream, r.upstream_fingerprint, data_of[r.run_key().as_tuple()], r.recipe_version, r.profile,
               "" if r.layer is None else str(r.layer))
        corpus[row] = r.corpus
        task_data[row + (r.task,)] = r.manifest_fingerprint
    keys = [tuple(r[k] for k in ROW_KEYS) for _, r in wide.iterrows()]
    wide["corpus"] = [corpus.get(k, "") for k in keys]
    for t in tasks:
        wide[f"{t}_data"] = [task_data.get(k + (t,), "") for k in keys]
    wide["kind"] = "measured"
    wide["source"] = ""
    wide["label"] = _row_labels(wide)
    return wide


def _published_frame(published: list[PublishedResult], tasks: list[str]) -> pd.DataFrame:
    """One row per published upstream; no std, seeds or fingerprint (a paper gives none)."""
    rows: dict[str, dict] = {}
    for p in published:
        row = rows.setdefault(p.upstream, {
            "upstream": p.upstream, "upstream_fingerprint": "", "data": "", "recipe_version": "",
            "profile": "published", "layer": "", "created_at": "", "corpus": "", "kind": "published",
            "label": p.label, "sources": []})
        row[p.task] = p.value
        row[f"{p.task}_n"] = 0
        if p.source not in row["sources"]:
            row["sources"].append(p.source)
    frame = pd.DataFrame([{**r, "source": "; ".join(r.pop("sources"))} for r in rows.values()])
    for t in tasks:
        frame[t] = frame[t].astype(float) if t in frame else math.nan
        frame[f"{t}_std"] = math.nan
        frame[f"{t}_n"] = frame[f"{t}_n"] if f"{t}_n" in frame else 0
    return frame


def _references(wide: pd.DataFrame, tasks: list[str], reference: str, notes: list[str]) -> dict[int, dict]:
    """Reference points per row (index -> task -> Reference).

    `local`: per task, FBANK and SOTA come from the rows scored on the same task data, recipe
    version and profile, SOTA over every one of them (all fingerprints, layer probes), so a
    task score never exceeds 1000 and the best row on every task scores exactly 1000.
    """
    measured = wide[wide["kind"] == "measured"]
    has_published = (wide["kind"] == "published").any()
    if reference == "paper":
        refs = paper_references()
        notes.insert(0, "SUPERB score: 1000*(m-FBANK)/(SOTA-FBANK) per task, averaged; reference = paper "
                        "(official leaderboard reference points, declared by each task)")
        odd = sorted(set(measured["profile"]) - {"superb"})
        if odd:
            notes.append(f"paper references assume the full SUPERB protocol; rows with profile(s) {odd} are "
                         f"scored for orientation only (use --reference local)")
        if has_published:
            notes.append("'(published)' rows are numbers from papers (source per row in the published table), "
                         "scored with the same paper references; never used by `check` or local references")
        return {i: refs for i in wide.index}
    notes.insert(0, f"SUPERB score: 1000*(m-FBANK)/(SOTA-FBANK) per task, averaged; reference = local "
                    f"(FBANK = the '{FBANK_UPSTREAM}' upstream, SOTA = the best row on the same task data, recipe "
                    f"version and profile, probed layers and every fingerprint included, so no task scores "
                    f"above 1000)")
    if has_published:
        notes.append("'(published)' rows are not scored with local references (they were measured on other "
                     "data); use --reference paper to score them")
    out: dict[int, dict] = {i: {} for i in wide.index}
    several_data = {t: measured[f"{t}_data"][measured[t].notna()].nunique() > 1 for t in tasks}
    for t in tasks:
        scored = measured[measured[t].notna()]
        for (data, recipe, profile), sub in scored.groupby([f"{t}_data", "recipe_version", "profile"]):
            where = f"{f'data {_short(data)} / ' if several_data[t] else ''}recipe {recipe} / profile {profile}"
            fbank = sub[(sub["upstream"] == FBANK_UPSTREAM) & (sub["layer"] == "")]
            if fbank.empty:
                notes.append(f"no '{FBANK_UPSTREAM}' result for {t} on {where}: no local score for {t} there")
                continue
            newest = fbank.sort_values(["created_at", "upstream_fingerprint"]).iloc[-1]
            if len(fbank) > 1:
                notes.append(f"{where}: several '{FBANK_UPSTREAM}' fingerprints on {t}; FBANK = the newest "
                             f"({_short(newest['upstream_fingerprint'])})")
            means = {label: {t: float(v)} for label, v in zip(sub["label"], sub[t])}
            means[FBANK_UPSTREAM] = means.pop(newest["label"])
            ref = local_references(means).get(t)
            if ref is None or ref.sota == ref.fbank:
                notes.append(f"{where}: no upstream beats '{FBANK_UPSTREAM}' on {t}, so SOTA = FBANK and the "
                             f"local score leaves {t} out")
                continue
            for i in sub.index:
                out[i][t] = ref
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

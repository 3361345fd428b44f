"""Leaderboard table: upstreams x tasks, mean ± std over seeds, SUPERB score.

Rows are (upstream, fingerprint, data, recipe version, profile, layer): results
from different corpora (manifest fingerprints), recipe versions or profiles are
different experiments, so they get separate rows and are never averaged together.
A row's `data` joins its tasks' manifest fingerprints (each task has its own manifest;
see `row_data`), and local references are measured per task data.
The numbers come from `superbench.summary.aggregate`, the same summary the runner
prints. Every task column header names the metric and its direction, and every
score carries its task set and reference mode (see leaderboard/score.py).

A task's secondary metrics (`Task.secondary_metrics`, e.g. SF's slot-value CER beside its
slot-type F1) get their own column right after the task's, keyed 'task/metric' ('sf/cer',
`superbench.summary.metric_column`) in the frame, CSV and sort option, with its own
header ('SF CER% ↓'), mean ± std and seed count; the SUPERB score counts the task once,
as the mean of its metrics' scores.

Beside each cell whose records keep per-unit test scores (`ResultRecord.units`), the table shows
the 95 % percentile-bootstrap interval of the cell's mean over its test units, as `(CI ±h)` (its
half-width; after the seed std where there is one): `superbench.uncertainty.confidence_interval`
over every seed of the row, the seeds sharing each draw of the units. The SUPERB score of a row
whose counted metrics all have them shows its interval, `score [low, high]`
(`leaderboard.score.score_interval`: tasks resampled independently, references held fixed).
Cells without per-unit scores (older records, tasks that keep none) show as before. The frame
holds them as `<key>_ci_low`/`<key>_ci_high` and `score_ci_low`/`score_ci_high` (NaN where none);
`build_leaderboard(ci=False)` (`--no-ci`) leaves them out of every format and skips the bootstrap.

The SUPERB score never counts the SUPERB-SG tasks (SE, SS). When any row has one, the table adds
superbench's own SUPERB-SG aggregate (`leaderboard.score.SG_SCOPE`, SUPERB-SG defines no overall score):
the columns 'SG score' (with its interval, as the SUPERB score's) and 'SG tasks', the frame's `sg_score`,
`sg_n_tasks`, `sg_tasks`, `sg_metrics`, `sg_partial`, `sg_scope` (and `sg_score_ci_low/_high`), the same
in CSV, and each JSON row's `sg_score` {value, ci, tasks, metrics, partial, reference, scope}; a note
says what it is. Sort by it with 'sg'.

SUPERB-SG's OOD-ASR aggregate (`leaderboard.score.OOD_ASR_SCOPE`: the mean test WER/CER of ood_es, ood_zh,
ood_ar and ood_sbcsae) gets its own column, 'OOD-ASR mean WER/CER ↓' (frame, CSV and sort key `ood_asr`, with
`ood_asr_ci_low/_high`; JSON `ood_asr` {value, ci, tasks, scope}), shown when a row has all four tasks or a
published aggregate (`FBANK,ood_asr,63.58,...`); a row with only some of the four shows none, and a note names
what it lacks. It is not a score: it enters neither the SUPERB nor the SG score.
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
    NOT_OFFICIAL,
    OOD_ASR_HEADER,
    OOD_ASR_KEY,
    OOD_ASR_SCOPE,
    OOD_ASR_TASKS,
    REFERENCE_MODES,
    SG_SCOPE,
    Reference,
    SuperbScore,
    column_direction,
    column_order,
    default_reference,
    local_references,
    metric_columns,
    ood_asr_interval,
    ood_asr_mean,
    paper_references,
    score_interval,
    sg_note,
    suite_of,
    superb_score,
)
from superbench.records import ResultRecord
from superbench.summary import aggregate, cell_interval, metric_column, split_metric_column
from superbench.tasks import describe_task, in_task_order
from superbench.uncertainty import LEVEL, RESAMPLES, UnitScores

ROW_KEYS = ["upstream", "upstream_fingerprint", "data", "recipe_version", "profile", "layer"]
FORMATS = ("md", "csv", "json", "html")


def _task_header(column: str) -> str:
    """'KS ACC% ↑' for a task's main metric, 'SF CER% ↓' for its secondary metric 'sf/cer' (the unit as the task
    states it: 'SE PESQ ↑', 'SS SI-SDRi dB ↑')."""
    task, metric = split_metric_column(column)
    info = describe_task(task)
    spec = info.metric if not metric else info.metric_named(metric) if info else None
    label = spec.label if spec is not None else f"{(metric or '').upper()}%"
    return f"{task.upper()} {label} {'↑' if column_direction(column) else '↓'}"


def _fixed(x: float, digits: int) -> str:
    """`x` to `digits` decimals, never "-0.0" (a value that rounds to zero has no sign)."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(mean: float, std: float, low: float | None = None, high: float | None = None) -> str:
    """'mean ± std', then '(CI ±half-width)' where the cell has an interval."""
    if _missing(mean):
        return "–"
    text = _fixed(mean, 2) if _missing(std) else f"{_fixed(mean, 2)} ± {_fixed(std, 2)}"
    if not _missing(low) and not _missing(high):
        text += f" (CI ±{_fixed((high - low) / 2.0, 2)})"
    return text


def format_score(score: float, low: float | None = None, high: float | None = None) -> str:
    """A SUPERB score as shown in tables: one decimal, '–' when there is none, never '-0.0'; with its
    interval as '412.3 [380.1, 441.0]' where it has one."""
    if _missing(score):
        return "–"
    if _missing(low) or _missing(high):
        return _fixed(score, 1)
    return f"{_fixed(score, 1)} [{_fixed(low, 1)}, {_fixed(high, 1)}]"


@dataclass
class Leaderboard:
    """Numeric wide frame plus what is needed to render it honestly."""

    #: One row per ROW_KEYS; per column key (task, or 'task/metric' for a secondary metric): <key>, <key>_std,
    #: <key>_n; per task <task>_data; score, n_tasks, tasks, metrics (column keys scored), partial; the same
    #: of the SG score as sg_score, sg_n_tasks, sg_tasks, sg_metrics, sg_partial (and sg_scope).
    frame: pd.DataFrame
    tasks: list[str]
    reference: str
    scores: list[SuperbScore] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: RunKey tuple of each record -> the `data` of its row (see `row_data`), to find a record's row.
    row_of: dict[tuple, str] = field(default_factory=dict)
    #: RunKey tuple of each record -> the recipe label of its row (see `row_recipes`).
    recipe_of: dict[tuple, str] = field(default_factory=dict)
    #: Column keys in table order: each task, then its secondary metrics ('sf', 'sf/cer'); [] = `tasks`.
    columns: list[str] = field(default_factory=list)
    #: Whether the frame's intervals are shown (`<key>_ci_low/_high`, `score_ci_low/_high`); False: `--no-ci`.
    ci: bool = False
    #: The reference points each row's SUPERB score used, by the row's ROW_KEYS values (column key -> Reference).
    references: dict[tuple, dict[str, Reference]] = field(default_factory=dict)
    #: Each row's SG score (superbench's own SUPERB-SG aggregate, `SG_SCOPE`), in the order of `scores`.
    sg_scores: list[SuperbScore] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns:
            self.columns = list(self.tasks)

    @property
    def has_sg(self) -> bool:
        """Whether any row has an SG score (a SUPERB-SG task with a reference point): then it is shown."""
        return "sg_n_tasks" in self.frame and bool((self.frame["sg_n_tasks"] > 0).any())

    @property
    def has_ood_asr(self) -> bool:
        """Whether any row has the OOD-ASR aggregate (all four tasks, or a published value): then it is shown."""
        return OOD_ASR_KEY in self.frame and bool(self.frame[OOD_ASR_KEY].notna().any())

    # -- views ----------------------------------------------------------------------
    def display_frame(self) -> pd.DataFrame:
        """Human-readable frame: formatted cells and self-describing headers."""
        f = self.frame
        out = pd.DataFrame({"upstream": f["label"]})
        out["recipe"] = [v or "–" for v in f["recipe_version"]]
        out["profile"] = f["profile"]
        for c in self.columns:
            out[_task_header(c)] = [_fmt(m, s, *ci) for m, s, ci in zip(f[c], f[f"{c}_std"], self._ci(c))]
        if self.has_ood_asr:
            out[OOD_ASR_HEADER] = [_fmt(m, math.nan, *ci) for m, ci in zip(f[OOD_ASR_KEY], self._ci(OOD_ASR_KEY))]
        out["seeds"] = [_seeds_label(row, self.columns) for _, row in f.iterrows()]
        out[f"SUPERB ({self.reference} ref)"] = [format_score(s, *ci) for s, ci in zip(f["score"], self._ci("score"))]
        partial = f["partial"] if "partial" in f else [""] * len(f)
        scope = f["short_scope"] if "short_scope" in f else [""] * len(f)
        out["score tasks"] = [(f"{n}: {t}" + (f" ({p})" if p else "") + (f"; {sc}" if sc else "")) if n else "–"
                              for n, t, p, sc in zip(f["n_tasks"], f["tasks"], partial, scope)]
        if self.has_sg:
            out[f"SG score ({self.reference} ref)"] = [format_score(s, *ci)
                                                       for s, ci in zip(f["sg_score"], self._ci("sg_score"))]
            out["SG tasks"] = [(f"{n}: {t}" + (f" ({p})" if p else "")) if n else "–"
                               for n, t, p in zip(f["sg_n_tasks"], f["sg_tasks"], f["sg_partial"])]
        return out

    def _ci(self, key: str) -> list[tuple[float | None, float | None]]:
        """(low, high) of column `key` (or "score") per row; (None, None) where hidden or absent."""
        f = self.frame
        if not self.ci or f"{key}_ci_low" not in f:
            return [(None, None)] * len(f)
        return list(zip(f[f"{key}_ci_low"], f[f"{key}_ci_high"]))

    def to_markdown(self) -> str:
        d = self.display_frame()
        cols = list(d.columns)
        lines = ["| " + " | ".join(cols) + " |",
                 "|" + "|".join("---" if c in ("upstream", "recipe", "profile", "score tasks", "SG tasks") else "---:"
                                for c in cols) + "|"]
        for _, row in d.iterrows():
            lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

    def to_csv(self) -> str:
        cols = ["label"] + ROW_KEYS + [x for c in self.columns for x in (c, f"{c}_std", f"{c}_n")] + \
            ["score", "n_tasks", "tasks", "reference", "kind", "source"] + \
            (["metrics", "partial"] if self.columns != self.tasks else [])
        sg = ["sg_score"] if self.has_sg else []
        if sg:
            cols += ["sg_score", "sg_n_tasks", "sg_tasks", "sg_metrics", "sg_partial"]
        ood = [OOD_ASR_KEY] if self.has_ood_asr else []
        cols += ood
        if self.ci and "score_ci_low" in self.frame:
            cols += [f"{c}_ci_{end}" for c in self.columns + ["score"] + sg + ood for end in ("low", "high")]
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
                "tasks": {t: self._task_json(r, t) for t in self.tasks
                          if any(not math.isnan(r[c]) for c in self._columns_of(t))},
                "superb_score": {"value": _num(r["score"]), **self._ci_json(r, "score"),
                                 "tasks": r["tasks"].split(",") if r["tasks"] else [],
                                 "reference": self.reference, "official": bool(r.get("official", False)),
                                 "scope": r.get("scope", ""),
                                 **({"metrics": r["metrics"].split(",") if r["metrics"] else [],
                                     "partial": r["partial"]} if self.columns != self.tasks else {})},
                **({"sg_score": self._sg_json(r)} if self.has_sg else {}),
                **({OOD_ASR_KEY: {"value": _num(r[OOD_ASR_KEY]), **self._ci_json(r, OOD_ASR_KEY),
                                  "tasks": list(OOD_ASR_TASKS), "scope": OOD_ASR_SCOPE}} if self.has_ood_asr else {}),
            })
        return json.dumps({"reference": self.reference, "notes": self.notes, "rows": rows}, indent=2) + "\n"

    def _sg_json(self, r: pd.Series) -> dict:
        """A row's SG score in JSON: superbench's own SUPERB-SG aggregate, said in `scope`."""
        return {"value": _num(r["sg_score"]), **self._ci_json(r, "sg_score"),
                "tasks": r["sg_tasks"].split(",") if r["sg_tasks"] else [],
                "metrics": r["sg_metrics"].split(",") if r["sg_metrics"] else [], "partial": r["sg_partial"],
                "reference": self.reference, "scope": r["sg_scope"] or SG_SCOPE}

    def _columns_of(self, task: str) -> list[str]:
        return [c for c in self.columns if split_metric_column(c)[0] == task]

    def _task_json(self, r: pd.Series, task: str) -> dict:
        """One task's cell in JSON: its main metric, and its secondary metrics under "secondary"."""
        spec = describe_task(task).metric
        out = {"metric": spec.name, "higher_is_better": spec.higher_is_better,
               "mean": _num(r[task]), "std": _num(r[f"{task}_std"]), "n": int(r[f"{task}_n"]), **self._ci_json(r, task)}
        secondary = {split_metric_column(c)[1]: {"higher_is_better": column_direction(c), "mean": _num(r[c]),
                                                 "std": _num(r[f"{c}_std"]), "n": int(r[f"{c}_n"]),
                                                 **self._ci_json(r, c)}
                     for c in self._columns_of(task) if c != task and not math.isnan(r[c])}
        if secondary:
            out["secondary"] = secondary
        return out

    def _ci_json(self, r: pd.Series, key: str) -> dict:
        """{"ci": [low, high]} of a cell (or of "score") that has an interval and shows it; {} otherwise."""
        if not self.ci or _missing(r.get(f"{key}_ci_low")) or _missing(r.get(f"{key}_ci_high")):
            return {}
        return {"ci": [_num(r[f"{key}_ci_low"]), _num(r[f"{key}_ci_high"])]}

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


def _seeds_label(row: pd.Series, columns: list[str]) -> str:
    if row.get("kind") == "published":
        return "published"
    ns = sorted({int(row[f"{c}_n"]) for c in columns if row[f"{c}_n"] > 0})
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
                      sort: str | None = None, published: Iterable[PublishedResult] = (),
                      ci: bool = True) -> Leaderboard:
    """Aggregate records (plus published numbers, as their own rows) into the leaderboard.

    `reference=None` picks the mode from the rows' corpora (see `leaderboard.score.default_reference`)
    and says so in the notes. `ci=False` computes and shows no intervals (see the module docstring).
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
    aggregates = {p.upstream: p for p in published if p.task == OOD_ASR_KEY}
    published = [p for p in published if p.task != OOD_ASR_KEY]  # an aggregate, not a task's column
    tasks = in_task_order(list(long["task"]) + [p.task for p in published])
    if long.empty and not published and not aggregates:
        frame = pd.DataFrame(columns=ROW_KEYS + ["label", "kind", "score", "n_tasks", "tasks", "reference"])
        return Leaderboard(frame, [], reference, notes=notes + ["no results stored yet"])
    # every declared metric of a task shown gets its column ('–' where a row lacks it), plus any stored one
    columns = column_order([c for t in tasks for c in metric_columns(t)] + list(long["column"])
                           + [metric_column(p.task, p.metric) for p in published])
    wide = _measured_frame(long, columns, relabelled, data_by_row) if not long.empty else pd.DataFrame()
    if published or aggregates:
        wide = pd.concat([wide, _published_frame(published, columns, aggregates)], ignore_index=True)
    for c in columns:
        wide[f"{c}_n"] = wide[f"{c}_n"].fillna(0).astype(int)
    for t in tasks:
        if f"{t}_data" not in wide:
            wide[f"{t}_data"] = ""
        wide[f"{t}_data"] = wide[f"{t}_data"].fillna("")

    refs_by_row = _references(wide, columns, reference, notes)
    scores, sg_scores = [], []
    for i, r in wide.iterrows():
        metrics = {c: float(r[c]) for c in columns if not math.isnan(r[c])}
        scores.append(superb_score(metrics, refs_by_row[i], reference))
        sg_scores.append(superb_score(metrics, refs_by_row[i], reference, suite="sg"))
    wide["score"] = [s.score for s in scores]
    wide["n_tasks"] = [s.n_tasks for s in scores]
    wide["tasks"] = [",".join(s.tasks) for s in scores]
    wide["metrics"] = [",".join(s.metrics) for s in scores]
    wide["partial"] = [s.partial_text() for s in scores]
    wide["reference"] = reference
    wide["official"] = [s.official for s in scores]
    wide["scope"] = [s.scope() for s in scores]
    wide["short_scope"] = [s.short_scope() for s in scores]
    wide["sg_score"] = [s.score for s in sg_scores]
    wide["sg_n_tasks"] = [s.n_tasks for s in sg_scores]
    wide["sg_tasks"] = [",".join(s.tasks) for s in sg_scores]
    wide["sg_metrics"] = [",".join(s.metrics) for s in sg_scores]
    wide["sg_partial"] = [s.partial_text() for s in sg_scores]
    wide["sg_scope"] = [s.scope() if s.tasks else "" for s in sg_scores]
    wide[OOD_ASR_KEY] = [_ood_asr_value(r, aggregates) for _, r in wide.iterrows()]
    _note_ood_asr(wide, notes)

    partial = [(label, s) for label, s in zip(wide["label"], scores) if s.partial]
    partial += [(f"{label} SG score", s) for label, s in zip(wide["label"], sg_scores) if s.partial]
    if partial:
        rows_text = "; ".join(f"{label} ({s.partial_text()})" for label, s in partial)
        notes.append(f"scored without some of a task's metrics (no value, e.g. a record from before secondary "
                     f"metrics, or no reference for it): {rows_text}; such a task's score is the mean of the "
                     f"metrics it has, so compare those rows only with rows of the same 'score tasks'")
    if len({s.metrics for s in scores if s.tasks}) > 1:
        notes.append("rows are scored over different task sets; compare SUPERB scores only between rows "
                     "with the same 'score tasks'")
    keys = [tuple(r[k] for k in ROW_KEYS) for _, r in wide.iterrows()]
    if any(s.tasks for s in sg_scores):
        notes.append(sg_note(reference, sorted({t for s in sg_scores for t in s.tasks})))
    if ci:
        _add_intervals(wide, columns, _records_by_row(rows), scores, sg_scores, refs_by_row, keys, reference,
                       notes)
    unofficial = [label for label, s in zip(wide["label"], scores) if s.tasks and not s.official]
    if unofficial:
        notes.append(f"the official SUPERB score averages SUPERB's ten tasks with the paper's reference points; "
                     f"{len(unofficial)} of {len(scores)} row(s) are scored otherwise (see 'score tasks') and are "
                     f"{NOT_OFFICIAL}: compare them only with rows of the same task set and reference")
    board = Leaderboard(wide, tasks, reference, scores, notes, columns=columns, ci=ci,
                        references={k: refs_by_row[i] for k, i in zip(keys, wide.index)}, sg_scores=sg_scores)
    board.row_of = data_of
    board.recipe_of = recipe_of
    order = sort or "score"
    if order.lower() in ("score", "superb") and not any(s.tasks for s in scores) and board.has_sg:
        order = "sg"  # only SUPERB-SG tasks: no SUPERB score to order by
    return sort_leaderboard(board, order)


def _ood_asr_value(row: pd.Series, aggregates: dict[str, PublishedResult]) -> float:
    """A row's OOD-ASR aggregate: the mean of its four OOD-ASR tasks, or a published row's quoted value."""
    if row["kind"] == "published" and row["upstream"] in aggregates:
        return aggregates[row["upstream"]].value
    return ood_asr_mean({t: float(row[t]) for t in OOD_ASR_TASKS if t in row.index})


def _note_ood_asr(wide: pd.DataFrame, notes: list[str]) -> None:
    """Say what the OOD-ASR column is where it is shown, and which rows have only some of its four tasks."""
    present = [t for t in OOD_ASR_TASKS if t in wide]
    lacking = []
    for _, r in wide.iterrows():
        have = [t for t in present if not _missing(r[t])]
        if have and math.isnan(r[OOD_ASR_KEY]):
            lacking.append(f"{r['label']} (no {', '.join(t for t in OOD_ASR_TASKS if t not in have)})")
    if wide[OOD_ASR_KEY].notna().any():
        notes.append(f"{OOD_ASR_HEADER}: {OOD_ASR_SCOPE}")
    if lacking:
        notes.append(f"no OOD-ASR aggregate for rows with only some of its four tasks: {'; '.join(lacking)}")


def _row_key(r: ResultRecord) -> tuple:
    """The ROW_KEYS values of a relabelled record's row (its `manifest_fingerprint` already the row's data)."""
    return (r.upstream, r.upstream_fingerprint, r.manifest_fingerprint, r.recipe_version, r.profile,
            "" if r.layer is None else str(r.layer))


def _records_by_row(rows: Iterable[ResultRecord]) -> dict[tuple, dict[str, list[ResultRecord]]]:
    """{row key: {column key: the records behind that cell's mean}}: a task's records for its main metric,
    those that carry a secondary metric for its column ('sf/cer'), as `aggregate` averages them."""
    out: dict[tuple, dict[str, list[ResultRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells = out[_row_key(r)]
        cells[r.task].append(r)
        for name in r.secondary:
            cells[metric_column(r.task, name)].append(r)
    return out


def _cell_units(records: list[ResultRecord], column: str) -> list[list[UnitScores]] | None:
    """Per seed (in seed order) the per-unit scores of a cell's metric; None unless every seed has them."""
    metric = split_metric_column(column)[1]
    seeds = []
    for r in sorted(records, key=lambda r: r.seed):
        units = r.unit_scores(metric or r.metric)
        if units is None:
            return None
        seeds.append(units)
    return seeds or None


def _add_intervals(wide: pd.DataFrame, columns: list[str], by_row: dict[tuple, dict[str, list[ResultRecord]]],
                   scores: list[SuperbScore], sg_scores: list[SuperbScore], refs_by_row: dict[int, dict],
                   keys: list[tuple], reference: str, notes: list[str]) -> None:
    """Fill `<key>_ci_low/_high` of every cell whose records all keep per-unit scores, and `score_ci_low/_high`
    (`sg_score_ci_low/_high`) of every row whose counted metrics of the SUPERB (SG) score all do (NaN
    elsewhere); a note says what the intervals are."""
    keys_out = columns + ["score", "sg_score", OOD_ASR_KEY]
    lows = {c: [math.nan] * len(wide) for c in keys_out}
    highs = {c: [math.nan] * len(wide) for c in keys_out}
    problems = []
    for pos, (i, key, score, sg) in enumerate(zip(wide.index, keys, scores, sg_scores)):
        if wide.at[i, "kind"] != "measured":
            continue
        units = {}
        for c in columns:
            cell = by_row.get(key, {}).get(c, [])
            seeds = _cell_units(cell, c)
            if seeds is None:
                continue
            try:
                low, high = cell_interval(cell, split_metric_column(c)[1])  # type: ignore[misc]
            except ValueError as exc:  # seeds of one row scored on different units: no interval, said once
                problems.append(f"{wide.at[i, 'label']} {c}: {exc}")
                continue
            units[c] = seeds
            lows[c][pos], highs[c][pos] = low, high
        for name, s in (("score", score), ("sg_score", sg)):
            if s.tasks and all(c in units for c in s.per_metric):
                counted = score_interval({c: units[c] for c in s.per_metric}, refs_by_row[i], reference,
                                         suite=s.suite)
                lows[name][pos], highs[name][pos] = round(counted.low, 4), round(counted.high, 4)
        if all(t in units for t in OOD_ASR_TASKS):
            low, high = ood_asr_interval({t: units[t] for t in OOD_ASR_TASKS})
            lows[OOD_ASR_KEY][pos], highs[OOD_ASR_KEY][pos] = round(low, 4), round(high, 4)
    for c in keys_out:
        wide[f"{c}_ci_low"], wide[f"{c}_ci_high"] = lows[c], highs[c]
    if any(not math.isnan(x) for c in columns for x in lows[c]):
        notes.append(f"(CI ±h): half-width of the {LEVEL:.0%} percentile-bootstrap interval of a cell's mean over "
                     f"its test units ({RESAMPLES} resamples, the row's seeds sharing each draw), after the seed std "
                     f"(±) where there are several seeds; the score's [low, high] resamples every task independently "
                     f"with the reference points held fixed; cells without per-unit scores have none (--no-ci hides "
                     f"them)")
    for problem in problems:
        notes.append(f"no interval for {problem}")


def _measured_frame(long: pd.DataFrame, columns: list[str], records: list[ResultRecord],
                    data_of: dict[tuple, str]) -> pd.DataFrame:
    stats = long.set_index(ROW_KEYS + ["column"])[["mean", "std", "n", "created_at"]].unstack("column")
    wide = stats["mean"].reindex(columns=columns)
    for c in columns:
        wide[f"{c}_std"] = stats["std"].reindex(columns=columns)[c]
        wide[f"{c}_n"] = stats["n"].reindex(columns=columns)[c].fillna(0).astype(int)
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
    for t in dict.fromkeys(split_metric_column(c)[0] for c in columns):
        wide[f"{t}_data"] = [task_data.get(k + (t,), "") for k in keys]
    wide["kind"] = "measured"
    wide["source"] = ""
    wide["label"] = _row_labels(wide)
    return wide


def _published_frame(published: list[PublishedResult], columns: list[str],
                     aggregates: dict[str, PublishedResult] | None = None) -> pd.DataFrame:
    """One row per published upstream; no std, seeds or fingerprint (a paper gives none).
    A number of a task's secondary metric fills that metric's column ('sf/cer'); an upstream that has only a
    published OOD-ASR aggregate (`aggregates`, by upstream) still gets its row, with that number's source."""
    rows: dict[str, dict] = {}

    def row_of(upstream: str, label: str) -> dict:
        return rows.setdefault(upstream, {
            "upstream": upstream, "upstream_fingerprint": "", "data": "", "recipe_version": "",
            "profile": "published", "layer": "", "created_at": "", "corpus": "", "kind": "published",
            "label": label, "sources": []})

    for p in [*published, *(aggregates or {}).values()]:
        row = row_of(p.upstream, p.label)
        if p.task == OOD_ASR_KEY:  # its value is the row's OOD-ASR aggregate (`_ood_asr_value`), not a column
            row["sources"] += [p.source] if p.source not in row["sources"] else []
            continue
        column = metric_column(p.task, p.metric)
        row[column] = p.value
        row[f"{column}_n"] = 0
        if p.source not in row["sources"]:
            row["sources"].append(p.source)
    frame = pd.DataFrame([{**r, "source": "; ".join(r.pop("sources"))} for r in rows.values()])
    for c in columns:
        frame[c] = frame[c].astype(float) if c in frame else math.nan
        frame[f"{c}_std"] = math.nan
        frame[f"{c}_n"] = frame[f"{c}_n"] if f"{c}_n" in frame else 0
    return frame


def _references(wide: pd.DataFrame, columns: list[str], reference: str, notes: list[str]) -> dict[int, dict]:
    """Reference points per row (index -> column key -> Reference).

    `local`: per metric (a task's main one, and each secondary one: 'sf/cer'), FBANK and SOTA come
    from the rows scored on the same task data, recipe version and profile, SOTA over every one of
    them (all fingerprints, layer probes) in the metric's own direction, so a metric's score never
    exceeds 1000 and the best row on every metric scores exactly 1000.
    """
    measured = wide[wide["kind"] == "measured"]
    has_published = (wide["kind"] == "published").any()
    if reference == "paper":
        refs = paper_references()
        notes.insert(0, f"SUPERB score: 1000*(m-FBANK)/(SOTA-FBANK) per task{_per_metric(columns)}, averaged; "
                        "reference = paper (official leaderboard reference points, declared by each task)")
        odd = sorted(set(measured["profile"]) - {"superb"})
        if odd:
            notes.append(f"paper references assume the full SUPERB protocol; rows with profile(s) {odd} are "
                         f"scored for orientation only (use --reference local)")
        if has_published:
            notes.append("'(published)' rows are numbers from papers (source per row in the published table), "
                         "scored with the same paper references; never used by `check` or local references")
        return {i: refs for i in wide.index}
    notes.insert(0, f"SUPERB score: 1000*(m-FBANK)/(SOTA-FBANK) per task{_per_metric(columns)}, averaged; "
                    f"reference = local "
                    f"(FBANK = the '{FBANK_UPSTREAM}' upstream, SOTA = the best row on the same task data, recipe "
                    f"version and profile, probed layers and every fingerprint included, so no task scores "
                    f"above 1000)")
    if has_published:
        notes.append("'(published)' rows are not scored with local references (they were measured on other "
                     "data); use --reference paper to score them")
    out: dict[int, dict] = {i: {} for i in wide.index}
    for c in columns:
        t = split_metric_column(c)[0]
        several_data = measured[f"{t}_data"][measured[c].notna()].nunique() > 1
        scored = measured[measured[c].notna()]
        for (data, recipe, profile), sub in scored.groupby([f"{t}_data", "recipe_version", "profile"]):
            where = f"{f'data {_short(data)} / ' if several_data else ''}recipe {recipe} / profile {profile}"
            fbank = sub[(sub["upstream"] == FBANK_UPSTREAM) & (sub["layer"] == "")]
            if fbank.empty:
                notes.append(f"no '{FBANK_UPSTREAM}' result for {c} on {where}: no local score for {c} there")
                continue
            newest = fbank.sort_values(["created_at", "upstream_fingerprint"]).iloc[-1]
            if len(fbank) > 1 and c == t:  # said once per task, not again for its secondary metrics
                notes.append(f"{where}: several '{FBANK_UPSTREAM}' fingerprints on {t}; FBANK = the newest "
                             f"({_short(newest['upstream_fingerprint'])})")
            means = {label: {c: float(v)} for label, v in zip(sub["label"], sub[c])}
            means[FBANK_UPSTREAM] = means.pop(newest["label"])
            ref = local_references(means).get(c)
            if ref is None or ref.sota == ref.fbank:
                notes.append(f"{where}: no upstream beats '{FBANK_UPSTREAM}' on {c}, so SOTA = FBANK and the "
                             f"local score leaves {c} out")
                continue
            for i in sub.index:
                out[i][c] = ref
    return out


def _per_metric(columns: list[str]) -> str:
    """How a task with several metrics is scored, said only when the table has one ('sf: f1+cer'); the SUPERB-SG
    tasks, which the SUPERB score never counts, are left to the SG score's note (`sg_note`)."""
    metrics: dict[str, list[str]] = {}
    for c in columns:
        task, metric = split_metric_column(c)
        if suite_of(task) == "sg":
            continue
        metrics.setdefault(task, []).append(metric or describe_task(task).metric.name)
    several = [f"{t}: {'+'.join(ms)}" for t, ms in metrics.items() if len(ms) > 1]
    if not several:
        return ""
    return (f" (a task with several metrics, {', '.join(several)}, scores the mean of its metrics' scores, "
            f"each metric with its own references)")


def sort_leaderboard(board: Leaderboard, column: str) -> Leaderboard:
    """Sort best-first by 'score', 'sg' (the SG score), a task name or a secondary metric's key
    ('sf/cer'), direction-aware, or 'upstream'/'recipe'/'profile'/'data'."""
    col = column.lower()
    f = board.frame
    aliases = {"recipe": "recipe_version", "recipe_version": "recipe_version", "profile": "profile",
               "upstream": "label", "row": "label", "data": "data"}
    if col in ("score", "superb"):
        key, ascending = "score", False
    elif col in ("sg", "sg_score") and "sg_score" in f:
        key, ascending = "sg_score", False
    elif col == OOD_ASR_KEY and OOD_ASR_KEY in f:
        key, ascending = OOD_ASR_KEY, True  # an error rate: lowest first
    elif col in board.columns:
        key, ascending = col, not column_direction(col)
    elif col in aliases:
        key, ascending = aliases[col], True
    else:
        choices = ["score", "sg", OOD_ASR_KEY, "upstream", "recipe", "profile", "data"] + board.columns
        raise ValueError(f"cannot sort by {column!r}; choose from {', '.join(choices)}")
    if not f.empty:
        board.frame = f.sort_values([key, "label"], ascending=[ascending, True], na_position="last",
                                    kind="stable").reset_index(drop=True)
    return board

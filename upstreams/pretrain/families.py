"""The family table: every self-supervised family pretrained small on the same audio, each scored on SUPERB
tasks against its own random initialisation.

It lives beside the pretraining it drives (families, loop, audio) rather than in `leaderboard`, which
stays a reader of records with no model code; it uses the leaderboard only to store, to pair (the paired
test that says whether a family is clear of its random init's noise) and to render. Scoring goes through
`superbench.runner.run` directly, and `superbench families` only parses and prints.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superbench.records import ResultRecord
from superbench.uncertainty import units_word
from upstreams.pretrain import family_names, get_family, load_pretrained
from upstreams.pretrain.base import PretrainConfig
from upstreams.pretrain.data import PretrainAudio, load_pretrain_audio
from upstreams.pretrain.loop import PretrainResult, pretrain

log = logging.getLogger(__name__)

#: The SUPERB tasks the table scores unless told otherwise (the five first ones).
DEFAULT_TASKS = ("pr", "ks", "sid", "er", "asr")
#: The table always scores on a demo corpus, which `superbench run` scores with the demo-scale profile.
SCORING_PROFILE = "fast"

#: Below this (Holm-adjusted over a family's tasks) paired p-value, trained vs random init is clear of noise.
NOISE_ALPHA = 0.05

TABLE_NOTE = ("Cells: trained vs its own random initialisation (test score, mean ± std over seeds where a task was "
              "scored with several); ✓ = the trained model is better. Where both models' records keep per-unit "
              "test scores, a paired test on the same test units decides (paired approximate randomisation, "
              f"Holm-adjusted over the family's tasks): p is shown, (in noise) = p ≥ {NOISE_ALPHA:g}. Otherwise "
              "the seeds' spread decides: (in spread) = the means differ by no more than the two stds added.")


@dataclass(frozen=True)
class PretrainSettings:
    """How a family trains, shared by `superbench pretrain` and the family table (the steps and seed are
    per run: the table also saves each family's 0-step initialisation)."""

    size: str = "tiny"
    lr: float = 0.0  # 0: the family's own
    batch_size: int = 8
    crop_seconds: float = 2.0
    threads: int | None = None  # torch threads; None leaves torch's own
    progress: bool = True


def pretrain_family(name: str, audio: PretrainAudio, out: Path, settings: PretrainSettings,
                    steps: int | None = None, seed: int = 0) -> PretrainResult:
    """Pretrain family `name` on `audio` into `out` (resumed when `out` holds this run); `steps=None` runs
    the family's own default, 0 saves its random initialisation."""
    family = get_family(name)
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    cfg = PretrainConfig(family=name, steps=family.default_steps if steps is None else steps, size=settings.size,
                         seed=seed, batch_size=settings.batch_size, crop_seconds=settings.crop_seconds,
                         lr=settings.lr)
    log.info("%s: %d steps on %d utterances (%.2f h) from %s", name, cfg.steps, len(audio.wavs), audio.hours,
             audio.source)
    return pretrain(family, audio, out, cfg, progress=settings.progress)


@dataclass(frozen=True)
class FamilyComparison:
    """One family table: which families, scored on which tasks with how many seeds, written into `out`.

    A difference smaller than `confirm_below` points is not taken on `seeds` seeds when `confirm_seeds`
    is larger: that task is scored again with `confirm_seeds` seeds for both models. Checked when built,
    so a bad value fails before any work.
    """

    out: Path
    families: tuple[str, ...] = field(default_factory=lambda: tuple(family_names()))
    tasks: tuple[str, ...] = DEFAULT_TASKS
    data: str = "demo"  # the pretraining audio: demo, demo:SIZE or a folder of audio files
    seeds: int = 1
    confirm_below: float = 3.0
    confirm_seeds: int = 2
    steps: int | None = None  # None: each family's own
    seed: int = 0
    settings: PretrainSettings = PretrainSettings()

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f not in family_names()]
        if unknown:
            raise ValueError(f"--families: unknown {', '.join(unknown)} (families: {', '.join(family_names())})")
        if self.confirm_seeds < 1 or self.seeds < 1:
            raise ValueError("--seeds and --confirm-seeds must be at least 1")

    @property
    def db(self) -> Path:
        return self.out / "leaderboard.db"

    @property
    def results(self) -> Path:
        return self.out / "results"


def scoring_corpus(data: str) -> str:
    """The corpus the family table scores on: the demo corpus the families trained on (`demo`, `demo:tiny`),
    or the default demo corpus when they trained on a folder of audio."""
    from recipes.prepare.demo import demo_size

    return data if demo_size(data) is not None else "demo"


def compare_families(comparison: FamilyComparison, scoring_root: Path) -> list[dict[str, Any]]:
    """Pretrain each family and save its random initialisation, score both on the corpus at `scoring_root`
    (the data root of `scoring_corpus(comparison.data)`), confirm small differences with more seeds, then
    write families.json/.md/.html, leaderboard.md and report.html into `comparison.out`; returns the rows.
    Everything resumes: finished pretraining and records are reused."""
    c = comparison
    c.out.mkdir(parents=True, exist_ok=True)
    tasks = list(c.tasks)
    audio = load_pretrain_audio(c.data)  # once: every family learns from the same waveforms
    for name in c.families:
        for variant, steps in (("trained", c.steps), ("random-init", 0)):
            folder = c.out / name / variant
            pretrain_family(name, audio, folder, c.settings, steps, c.seed)
            score_pretrained(c, folder, tasks, c.seeds, scoring_root)
    if c.confirm_seeds > c.seeds and c.confirm_below > 0:
        for row in family_rows(c.out, list(c.families), tasks, scoring_root):
            small = [t for t, v in row["tasks"].items() if abs(v["trained"] - v["random_init"]) < c.confirm_below]
            if small:
                log.info("%s: trained and random init differ by less than %g points on %s: scoring again with "
                         "%d seeds", row["family"], c.confirm_below, ", ".join(small), c.confirm_seeds)
            for variant in ("trained", "random-init") if small else ():
                score_pretrained(c, c.out / row["family"] / variant, small, c.confirm_seeds, scoring_root)
    rows = family_rows(c.out, list(c.families), tasks, scoring_root)
    write_family_pages(c.out, rows, tasks)
    write_board_and_report(c.db, c.out)
    return rows


def score_pretrained(comparison: FamilyComparison, folder: Path, tasks: list[str], seeds: int,
                     scoring_root: Path) -> list[ResultRecord]:
    """Score the model in a pretrain folder on `tasks` as `superbench run` would (records under the
    comparison's results folder, each added to its database as it is written); a record the database
    refused is a RuntimeError once the run ends (the record file is kept: a re-run adds it)."""
    from leaderboard.store import StoreWriter
    from superbench.options import RunOptions
    from superbench.runner import run
    from superbench.tasks import resolve_tasks
    from superbench.upstream import load_upstream

    writer = StoreWriter(comparison.db)
    threads = comparison.settings.threads
    opts = RunOptions.of(profile=SCORING_PROFILE, seeds=seeds, results_dir=comparison.results, on_record=writer,
                         progress=comparison.settings.progress, show_plan=True, extract_threads=threads,
                         train_threads=threads)
    records = run(load_upstream(f"pretrained:{folder}"), resolve_tasks(",".join(tasks)), scoring_root, opts)
    if writer.failed:
        raise RuntimeError(f"scoring {folder}: {len(writer.failed)} record(s) are not in the results database "
                           f"{comparison.db}; their files are kept: run this again (or `superbench leaderboard "
                           f"sync`) to add them")
    log.info("scored %s on %s (%d record(s))", folder, ", ".join(tasks), len(records))
    return records


def _records_of(records: list[ResultRecord], folder: Path, manifests: dict[str, str]) -> dict[str, list[ResultRecord]]:
    """Records per task of the model in a pretrain folder on the scoring corpus (`manifests`: task ->
    manifest fingerprint), by the weights' fingerprint: a re-trained folder's old records (same name,
    other weights) and records of another corpus never mix in."""
    upstream = load_pretrained(folder)
    fingerprint = upstream.fingerprint()
    out: dict[str, list[ResultRecord]] = {}
    for r in records:
        if (r.layer is None and r.upstream == upstream.name and r.upstream_fingerprint == fingerprint
                and r.manifest_fingerprint == manifests.get(r.task)):
            out.setdefault(r.task, []).append(r)
    return out


def compare_scores(trained: list[float], random_init: list[float], higher_is_better: bool) -> dict[str, Any]:
    """One cell of the family table: means, sample stds (0 with one seed), whether the trained model is
    better, and whether that is clear of the seeds' spread (the means differ by more than the two stds
    added; never with a single seed, whose spread is unknown)."""
    ma, mb = statistics.fmean(trained), statistics.fmean(random_init)
    sa = statistics.stdev(trained) if len(trained) > 1 else 0.0
    sb = statistics.stdev(random_init) if len(random_init) > 1 else 0.0
    seeds = min(len(trained), len(random_init))
    return {"trained": ma, "random_init": mb, "trained_std": sa, "random_init_std": sb, "seeds": seeds,
            "trained_seeds": len(trained), "random_init_seeds": len(random_init),
            "better": (ma > mb) if higher_is_better else (ma < mb),
            "clear": seeds > 1 and abs(ma - mb) > sa + sb, "rule": "spread"}


def compare_records(trained: list[ResultRecord], random_init: list[ResultRecord],
                    higher_is_better: bool) -> dict[str, Any]:
    """One cell of the family table from the two models' records of a task: `compare_scores`' means and stds,
    and, where every record keeps per-unit test scores on the same test units, the paired test of trained -
    random init (`leaderboard.pairing.paired_metric`: the difference, its bootstrap interval, the paired
    approximate-randomisation p) as the rule ("paired"; `holm_over_tasks` then decides "clear"). Records
    without per-unit scores keep the seeds' spread rule ("spread"), with the reason in "rule_note"."""
    from leaderboard.pairing import paired_metric, units_by_seed

    cell = compare_scores([float(r.test) for r in trained], [float(r.test) for r in random_init], higher_is_better)
    a, b = units_by_seed(trained), units_by_seed(random_init)
    if len(a) < len(trained) or len(b) < len(random_init):
        cell["rule_note"] = "no per-unit test scores in every record"
        return cell
    try:
        result = paired_metric(a, b)
    except ValueError as exc:
        cell["rule_note"] = f"no paired test: {exc}"
        return cell
    t = result.test
    cell.update(rule="paired", delta=t.delta, low=t.low, high=t.high, p=t.p_permutation, p_holm=t.p_permutation,
                level=t.level, unit=t.unit, units=t.n, pairing=result.pairing.note,
                clear=t.p_permutation < NOISE_ALPHA)
    return cell


def holm_over_tasks(cells: dict[str, dict[str, Any]], alpha: float = NOISE_ALPHA) -> dict[str, dict[str, Any]]:
    """The cells of one family with the paired tests' p-values Holm-adjusted over its tasks ("p_holm",
    "tasks_tested") and "clear" = adjusted p < `alpha`; seeds'-spread cells unchanged."""
    from superbench.uncertainty import holm

    paired = {t: v["p"] for t, v in cells.items() if v.get("rule") == "paired"}
    adjusted = holm(paired)
    return {t: ({**v, "p_holm": adjusted[t], "tasks_tested": len(paired), "clear": adjusted[t] < alpha}
                if t in adjusted else v) for t, v in cells.items()}


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def evidence(task: str, v: dict[str, Any]) -> str:
    """Why a cell is or is not clear of noise, in words, naming the rule: the paired test's difference, its
    interval and p, or the seeds' spread (and why there is no paired test)."""
    if v.get("rule") == "paired":
        tested = v.get("tasks_tested", 1)
        holm_text = (f" Holm-adjusted over {tested} tasks (unadjusted {_p_text(v['p'])})" if tested > 1 else "")
        return (f"{task.upper()} trained − random init {v['delta']:+.2f} points, {100 * v['level']:g} % CI "
                f"[{v['low']:+.2f}, {v['high']:+.2f}], {_p_text(v['p_holm'])}{holm_text} (paired test over "
                f"{v['units']} test {units_word(v['unit'])}; {v['pairing']}): "
                + ("clear of noise" if v["clear"] else "not clear of noise"))
    why = v.get("rule_note") or "no per-unit test scores"
    if v["seeds"] < 2:
        verdict = "one seed, so no spread to judge by"
    elif v["clear"]:
        verdict = "the means differ by more than the two stds added, clear of the seeds' spread"
    else:
        verdict = "the means differ by no more than the two stds added, within the seeds' spread"
    return f"{task.upper()} by the seeds' spread rule ({why}): {verdict}"


def family_rows(out: Path, families: list[str], tasks: list[str], scoring_root: Path) -> list[dict[str, Any]]:
    """One row per family: pretraining facts from pretrain.json and scores (on the corpus at
    `scoring_root`) trained vs random init."""
    from leaderboard.store import ResultStore
    from superbench.manifest import load_task_manifest
    from superbench.tasks import TASKS

    records = ResultStore(out / "leaderboard.db").records()
    manifests = {t: load_task_manifest(scoring_root / t, check_files=False).fingerprint for t in tasks}
    rows = []
    for name in families:
        info = json.loads((out / name / "trained" / "pretrain.json").read_text())
        trained = _records_of(records, out / name / "trained", manifests)
        init = _records_of(records, out / name / "random-init", manifests)
        per_task = {}
        for task in tasks:
            a, b = trained.get(task, []), init.get(task, [])
            if not a or not b:
                continue
            per_task[task] = compare_records(a, b, TASKS.get(task).higher_is_better)
        per_task = holm_over_tasks(per_task)
        others = [t for t, v in per_task.items() if t != "pr" and v["better"]]
        rows.append({"family": name, "kind": info["kind"], "loader": info["loader"],
                     "parameters": info["parameters"]["upstream"], "steps": info["steps"],
                     "wall_seconds": info["wall_seconds"], "first_loss": info["first_loss"],
                     "final_loss": info["final_loss"], "tasks": per_task,
                     "beats_random_on_pr": per_task.get("pr", {}).get("better"),
                     "other_tasks_beaten": others,
                     "loss_curve": str(out / name / "trained" / "loss.png")})
    return rows


def family_table(rows: list[dict[str, Any]], tasks: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """The family table as text: column heads, one row of cells per family, and one verdict per family
    (PR better or not, which other tasks, and which wins are within the seeds' spread)."""
    from superbench.tasks import TASKS

    def cell(v: dict[str, Any] | None) -> str:
        if not v:
            return "–"
        sd = (f" ± {v['trained_std']:.2f}" if v.get("trained_seeds", v["seeds"]) > 1 else "")
        sd0 = (f" ± {v['random_init_std']:.2f}" if v.get("random_init_seeds", v["seeds"]) > 1 else "")
        mark = (" ✓" if v["better"] else "") + _doubt(v, " (in spread)", " (in noise, {p})", " ({p})")
        return f"{v['trained']:.2f}{sd} vs {v['random_init']:.2f}{sd0}{mark}"

    heads = ["family", "kind", "params", "steps", "pretrain s", "loss first → last"] + [
        f"{t.upper()} {TASKS.get(t).metric.upper()} {'↑' if TASKS.get(t).higher_is_better else '↓'}" for t in tasks]
    cells, verdicts = [], []
    for r in rows:
        loss = (f"{r['first_loss']:.3g} → {r['final_loss']:.3g}" if r["first_loss"] is not None
                and not math.isnan(r["final_loss"]) else "–")
        cells.append([r["family"], r["kind"], f"{r['parameters']:,}", str(r["steps"]), f"{r['wall_seconds']:.0f}",
                      loss] + [cell(r["tasks"].get(t)) for t in tasks])
        pr = r["beats_random_on_pr"]
        pr_text = "better" if pr else ("not better" if pr is not None else "not run")
        if pr:
            pr_text += _doubt(r["tasks"]["pr"], " (within the seeds' spread)", " (not clear of noise)", "")
        others = [t + _doubt(r["tasks"][t], " (in spread)", " (in noise)", "") for t in r["other_tasks_beaten"]]
        why = "; ".join(evidence(t, v) for t, v in r["tasks"].items())
        verdicts.append(f"{r['family']}: PR {pr_text} than random init; other tasks better: "
                        f"{', '.join(others) or 'none'}" + (f". {why}" if why else ""))
    return heads, cells, verdicts


def _doubt(v: dict[str, Any], spread: str, noise: str, clear: str) -> str:
    """The mark of a cell's doubt by its rule: `spread` when the seeds' spread rule finds the means within it
    (never claimed with one seed), `noise` when the paired test is not significant, `clear` when it is
    (`{p}` in either becomes the Holm-adjusted p)."""
    if v.get("rule") == "paired":
        return (clear if v["clear"] else noise).format(p=_p_text(v["p_holm"]))
    return spread if v["seeds"] > 1 and not v.get("clear") else ""


def families_markdown(rows: list[dict[str, Any]], tasks: list[str]) -> str:
    """The family table, its note and the verdicts as Markdown (families.md)."""
    heads, cells, verdicts = family_table(rows, tasks)
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    lines += ["", TABLE_NOTE + " Loss curves: <family>/trained/loss.png.", ""] + [f"- {v}" for v in verdicts]
    return "\n".join(lines) + "\n"


def families_html(rows: list[dict[str, Any]], tasks: list[str], title: str = "superbench families") -> str:
    """One self-contained page: the family table, the verdicts, and each family's loss curve (embedded)."""
    import base64
    import html

    import pandas as pd

    heads, cells, verdicts = family_table(rows, tasks)
    table = pd.DataFrame(cells, columns=heads).to_html(index=False, border=0, classes="families")
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em;color:#222}}"
             "table.families{border-collapse:collapse;font-size:.9em}table.families td,table.families th"
             "{padding:4px 8px;border-bottom:1px solid #e4e4e4}div.curve{display:inline-block;margin:0 1em 1em 0}"
             "div.curve img{width:480px}h3{font-size:1em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", table, f"<p>{html.escape(TABLE_NOTE)}</p>",
             "<ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in verdicts) + "</ul>",
             "<p>Every record, layer weights and training curves: <a href='report.html'>report.html</a>.</p>",
             "<h2>Pretraining loss</h2>"]
    for r in rows:
        curve = Path(r["loss_curve"])
        image = (f"<img alt='{html.escape(r['family'])} loss' src='data:image/png;base64,"
                 f"{base64.b64encode(curve.read_bytes()).decode('ascii')}'>" if curve.is_file()
                 else f"<p>no loss curve ({html.escape(str(curve))} is missing)</p>")
        parts.append(f"<div class='curve'><h3>{html.escape(r['family'])} ({html.escape(r['kind'])}), "
                     f"{r['steps']} steps, {r['wall_seconds']:.0f} s</h3>{image}</div>")
    return "\n".join(parts + ["</body></html>", ""])


def write_family_pages(out: Path, rows: list[dict[str, Any]], tasks: list[str]) -> None:
    """families.json (the rows), families.md and families.html."""
    from superbench.io import atomic_write_text

    atomic_write_text(out / "families.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "families.md", families_markdown(rows, tasks))
    atomic_write_text(out / "families.html", families_html(rows, tasks))


def write_board_and_report(db: Path, out: Path) -> None:
    """leaderboard.md and report.html of every record in `db`, as `superbench leaderboard` and `superbench
    report` write them with their defaults. Either failing is logged and leaves the family pages standing."""
    from leaderboard.report import build_report
    from leaderboard.store import ResultStore
    from leaderboard.table import build_leaderboard
    from superbench.io import atomic_write_text

    board_md, report = out / "leaderboard.md", out / "report.html"
    store = ResultStore(db, create=False)
    try:
        records = store.records()
        if store.invalid_rows:
            log.warning("%d stored row(s) skipped as invalid (see above); the table shows the other %d",
                        len(store.invalid_rows), len(records))
        atomic_write_text(board_md, build_leaderboard(records, published=store.published()).render("md"))
    except (LookupError, ValueError, RuntimeError, OSError) as exc:
        log.warning("could not write %s: %s", board_md, exc)
    try:
        command = shlex.join(["superbench", "report", "--db", str(store.path), "-o", str(report)])
        atomic_write_text(report, build_report(store.records(), published=store.published(), command=command))
    except (LookupError, ValueError, RuntimeError, OSError) as exc:
        log.warning("could not write %s: %s", report, exc)

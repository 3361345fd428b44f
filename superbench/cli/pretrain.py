"""`superbench pretrain FAMILY ...` (train a self-supervised family small) and `superbench families`
(pretrain every family, score each trained model against its own random initialisation)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from superbench.exit_codes import ExitCode

log = logging.getLogger(__name__)

PRETRAIN_EPILOG = """\
examples:
  superbench pretrain apc --data demo --out runs/apc            # the family's default steps, tiny size
  superbench pretrain hubert --data demo --steps 0 --out runs/hubert-init   # its random initialisation
  superbench pretrain tera --data /data/wavs --size small --steps 5000 --out runs/tera
  superbench run --upstream pretrained:runs/apc --task pr,ks --data demo

The --out folder holds the model in its loader's format (s3prl .ckpt for apc/tera, a transformers
folder for hubert/best-rq/wav2vec2/data2vec/vicreg): `LOADER=DIR` (e.g. `apc=runs/apc`), `FAMILY=DIR`
or `pretrained:DIR` loads it as an upstream with every layer. Beside it: pretrain.json (config, data,
wall time, parameters, losses), loss.csv and loss.png. Interrupted? Run the same command again: it
resumes from the last saved step (pretrain-state.pt) and ends with the same weights.
"""

FAMILIES_EPILOG = """\
For each family: pretrain it (--steps, default the family's own) and save its random initialisation
(0 steps), score both on --tasks with --seeds seeds, then write into --out: families.md and
families.json (kind, parameters, pretraining wall time, loss first -> last, per-task scores trained
vs random init, and whether the trained model beats its random init on PR and on which other tasks),
families.html (the same table with each family's loss curve), leaderboard.md and report.html.
Everything is resumable: a re-run reuses finished pretraining and records.

A difference smaller than --confirm-below points (default 3) is not taken on one seed: that task is
scored again with --confirm-seeds seeds (default 2) for both models, and the table gives mean ± std
and says whether the win is clear of the spread (difference larger than the two stds added).
Scoring uses the demo corpus of --data (`demo:tiny` scores on demo:tiny), or the default demo corpus
when --data is a folder.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from upstreams.pretrain import family_names

    families = family_names()
    p = sub.add_parser("pretrain", help="train a self-supervised family small; the result loads as an upstream",
                       description="Pretrain one self-supervised family (generative: apc, tera; predictive: "
                                   "hubert, best-rq; contrastive: wav2vec2; bootstrapping: data2vec; "
                                   "regularization: vicreg) on the demo corpus or a folder of audio.",
                       epilog=PRETRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=families, metavar="FAMILY", help="one of: " + ", ".join(families))
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (resumed if it holds "
                                                                          "this run)")
    _add_training_options(p)
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="optimiser steps (default: the family's own; 0 saves the random initialisation)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, batches and masks (default 0)")
    p.set_defaults(func=cmd_pretrain)

    f = sub.add_parser("families", help="pretrain every family and score it against its random init",
                       description="The family table: each self-supervised family pretrained small on the same "
                                   "data, scored with its own random initialisation on SUPERB tasks.",
                       epilog=FAMILIES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--out", type=Path, default=Path("families"), metavar="DIR",
                   help="output folder (default: ./families)")
    f.add_argument("--families", default=",".join(families), metavar="A,B",
                   help=f"families to run (default: all: {','.join(families)})")
    f.add_argument("--tasks", default="pr,ks,sid,er,asr", metavar="A,B", help="tasks to score (default: the five "
                                                                              "first SUPERB tasks)")
    f.add_argument("--seeds", type=int, default=1, metavar="N", help="downstream seeds per task (default 1)")
    f.add_argument("--confirm-below", type=float, default=3.0, metavar="PTS",
                   help="re-score a task with --confirm-seeds seeds where trained and random init differ by "
                        "less than PTS points (default 3; 0: never)")
    f.add_argument("--confirm-seeds", type=int, default=2, metavar="N",
                   help="seeds for the tasks whose difference is small (default 2)")
    f.add_argument("--steps", type=int, default=None, metavar="N", help="pretraining steps (default: each "
                                                                       "family's own)")
    f.add_argument("--seed", type=int, default=0, help="pretraining seed (default 0)")
    _add_training_options(f)
    f.set_defaults(func=cmd_families)


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="demo", metavar="demo|demo:SIZE|DIR",
                   help="training audio: the demo corpus's training splits (default) or a folder of audio files")
    p.add_argument("--size", default="tiny", choices=("tiny", "small"), help="model size (default tiny)")
    p.add_argument("--lr", type=float, default=0.0, metavar="X", help="peak learning rate (default: the family's)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="crops per step (default 8)")
    p.add_argument("--crop-seconds", type=float, default=2.0, metavar="S", help="crop length (default 2.0 s)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: torch's own; use 1 per job when several run side by side)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def _pretrain_one(family_name: str, args: argparse.Namespace, steps: int | None, out: Path, seed: int,
                  audio: Any) -> Any:
    from upstreams.pretrain import get_family
    from upstreams.pretrain.base import PretrainConfig
    from upstreams.pretrain.loop import pretrain

    family = get_family(family_name)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = PretrainConfig(family=family_name, steps=family.default_steps if steps is None else steps, size=args.size,
                         seed=seed, batch_size=args.batch_size, crop_seconds=args.crop_seconds, lr=args.lr)
    log.info("%s: %d steps on %d utterances (%.2f h) from %s", family_name, cfg.steps, len(audio.wavs),
             audio.hours, audio.source)
    return pretrain(family, audio, out, cfg, progress=args.progress)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from upstreams.pretrain.data import load_pretrain_audio

    result = _pretrain_one(args.family, args, args.steps, args.out, args.seed, load_pretrain_audio(args.data))
    print(f"{args.family}: {result.steps} steps in {result.wall_seconds:.1f} s, {result.parameters:,} upstream "
          f"parameters, loss {result.info['first_loss'] if result.info['first_loss'] is not None else 'n/a'} -> "
          f"{result.final_loss:.4g}")
    print(f"load it with --upstream pretrained:{args.out} (or {result.loader}={result.upstream_path})")
    return ExitCode.OK


# --------------------------------------------------------------------------- the family table

def _scores_of(records: list[Any], folder: Path, manifests: dict[str, str]) -> dict[str, list[float]]:
    """Test scores per task of the model in a pretrain folder on the scoring corpus (`manifests`: task ->
    manifest fingerprint), by the weights' fingerprint: a re-trained folder's old records (same name,
    other weights) and records of another corpus never mix in."""
    from upstreams.pretrain import load_pretrained

    upstream = load_pretrained(folder)
    fingerprint = upstream.fingerprint()
    out: dict[str, list[float]] = {}
    for r in records:
        if (r.layer is None and r.upstream == upstream.name and r.upstream_fingerprint == fingerprint
                and r.manifest_fingerprint == manifests.get(r.task)):
            out.setdefault(r.task, []).append(float(r.test))
    return out


def scoring_corpus(data: str) -> str:
    """The corpus the family table scores on: the demo corpus the families trained on (`demo`, `demo:tiny`),
    or the default demo corpus when they trained on a folder of audio."""
    from recipes.prepare.demo import demo_size

    return data if demo_size(data) is not None else "demo"


def _manifest_fingerprints(corpus: str, tasks: list[str]) -> dict[str, str]:
    from superbench.cli.run import resolve_data
    from superbench.manifest import load_task_manifest

    root, _ = resolve_data(corpus)
    return {t: load_task_manifest(root / t, check_files=False).fingerprint for t in tasks}


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
            "clear": seeds > 1 and abs(ma - mb) > sa + sb}


def family_rows(out: Path, families: list[str], tasks: list[str], corpus: str = "demo") -> list[dict[str, Any]]:
    """One row per family: pretraining facts from pretrain.json and scores (on `corpus`) trained vs
    random init."""
    from leaderboard.store import ResultStore
    from superbench.tasks import TASKS

    records = ResultStore(out / "leaderboard.db").records()
    manifests = _manifest_fingerprints(corpus, tasks)
    rows = []
    for name in families:
        info = json.loads((out / name / "trained" / "pretrain.json").read_text())
        trained = _scores_of(records, out / name / "trained", manifests)
        init = _scores_of(records, out / name / "random-init", manifests)
        per_task = {}
        for task in tasks:
            a, b = trained.get(task, []), init.get(task, [])
            if not a or not b:
                continue
            per_task[task] = compare_scores(a, b, TASKS.get(task).higher_is_better)
        others = [t for t, v in per_task.items() if t != "pr" and v["better"]]
        rows.append({"family": name, "kind": info["kind"], "loader": info["loader"],
                     "parameters": info["parameters"]["upstream"], "steps": info["steps"],
                     "wall_seconds": info["wall_seconds"], "first_loss": info["first_loss"],
                     "final_loss": info["final_loss"], "tasks": per_task,
                     "beats_random_on_pr": per_task.get("pr", {}).get("better"),
                     "other_tasks_beaten": others,
                     "loss_curve": str(out / name / "trained" / "loss.png")})
    return rows


TABLE_NOTE = ("Cells: trained vs its own random initialisation (test score, mean ± std over seeds where a task was "
              "scored with several); ✓ = the trained model is better; (in spread) = the means differ by no more "
              "than the two stds added.")


def family_table(rows: list[dict[str, Any]], tasks: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """The family table as text: column heads, one row of cells per family, and one verdict per family
    (PR better or not, which other tasks, and which wins are within the seeds' spread)."""
    from superbench.tasks import TASKS

    def cell(v: dict[str, Any] | None) -> str:
        if not v:
            return "–"
        sd = (f" ± {v['trained_std']:.2f}" if v.get("trained_seeds", v["seeds"]) > 1 else "")
        sd0 = (f" ± {v['random_init_std']:.2f}" if v.get("random_init_seeds", v["seeds"]) > 1 else "")
        mark = (" ✓" if v["better"] else "") + (" (in spread)" if v["seeds"] > 1 and not v.get("clear") else "")
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
        spread = r["tasks"].get("pr", {})
        pr_text = "better" if pr else ("not better" if pr is not None else "not run")
        if pr and spread.get("seeds", 1) > 1 and not spread.get("clear"):
            pr_text += " (within the seeds' spread)"
        others = [t + ("" if r["tasks"][t]["seeds"] == 1 or r["tasks"][t].get("clear") else " (in spread)")
                  for t in r["other_tasks_beaten"]]
        verdicts.append(f"{r['family']}: PR {pr_text} than random init; other tasks better: "
                        f"{', '.join(others) or 'none'}")
    return heads, cells, verdicts


def families_markdown(rows: list[dict[str, Any]], tasks: list[str]) -> str:
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


def cmd_families(args: argparse.Namespace) -> int:
    from superbench.cli import main as cli_main
    from superbench.io import atomic_write_text
    from upstreams.pretrain import family_names

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in family_names()]
    if unknown:
        raise ValueError(f"--families: unknown {', '.join(unknown)} (families: {', '.join(family_names())})")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.confirm_seeds < 1 or args.seeds < 1:
        raise ValueError("--seeds and --confirm-seeds must be at least 1")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    db, results = out / "leaderboard.db", out / "results"
    corpus = scoring_corpus(args.data)

    def score(folder: Path, task_list: list[str], seeds: int) -> int:
        argv = ["run", "--upstream", f"pretrained:{folder}", "--task", ",".join(task_list), "--data", corpus,
                "--seeds", str(seeds), "--db", str(db), "--results", str(results)]
        argv += (["--threads", str(args.threads)] if args.threads else []) + ([] if args.progress else
                                                                              ["--no-progress"])
        code = cli_main(argv)
        if code != 0:
            log.error("scoring %s failed with exit code %d", folder, code)
        return code

    from upstreams.pretrain.data import load_pretrain_audio

    audio = load_pretrain_audio(args.data)  # once: every family learns from the same waveforms
    for name in families:
        for variant, steps in (("trained", args.steps), ("random-init", 0)):
            folder = out / name / variant
            _pretrain_one(name, args, steps, folder, args.seed, audio)
            if code := score(folder, tasks, args.seeds):
                return code
    if args.confirm_seeds > args.seeds and args.confirm_below > 0:
        for row in family_rows(out, families, tasks, corpus):
            small = [t for t, v in row["tasks"].items() if abs(v["trained"] - v["random_init"]) < args.confirm_below]
            if small:
                log.info("%s: trained and random init differ by less than %g points on %s: scoring again with "
                         "%d seeds", row["family"], args.confirm_below, ", ".join(small), args.confirm_seeds)
            for variant in ("trained", "random-init") if small else ():
                if code := score(out / row["family"] / variant, small, args.confirm_seeds):
                    return code
    rows = family_rows(out, families, tasks, corpus)
    atomic_write_text(out / "families.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(out / "families.md", families_markdown(rows, tasks))
    atomic_write_text(out / "families.html", families_html(rows, tasks))
    board_md = out / "leaderboard.md"
    for argv in (["leaderboard", "--db", str(db), "--format", "md", "-o", str(board_md)],
                 ["report", "--db", str(db), "-o", str(out / "report.html")]):
        if cli_main(argv) != 0:
            log.warning("`superbench %s` failed", " ".join(argv))
    print((out / "families.md").read_text())
    print(f"wrote {out / 'families.md'}, families.html, families.json, leaderboard.md, report.html")
    return ExitCode.OK

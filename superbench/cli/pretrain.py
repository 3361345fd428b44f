"""`superbench pretrain FAMILY ...` (train a self-supervised family small) and `superbench families`
(pretrain every family, score each trained model against its own random initialisation)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from superbench.exit_codes import ExitCode

if TYPE_CHECKING:
    from upstreams.pretrain.families import PretrainSettings

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
    from upstreams.pretrain.families import DEFAULT_TASKS

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
    f.add_argument("--tasks", default=",".join(DEFAULT_TASKS), metavar="A,B", help="tasks to score (default: the five "
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


def _settings(args: argparse.Namespace) -> PretrainSettings:
    """The training options both commands share, as the library takes them."""
    from upstreams.pretrain.families import PretrainSettings

    return PretrainSettings(size=args.size, lr=args.lr, batch_size=args.batch_size, crop_seconds=args.crop_seconds,
                            threads=args.threads, progress=args.progress)


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def cmd_pretrain(args: argparse.Namespace) -> int:
    from upstreams.pretrain.data import load_pretrain_audio
    from upstreams.pretrain.families import pretrain_family

    result = pretrain_family(args.family, load_pretrain_audio(args.data), args.out, _settings(args), args.steps,
                             args.seed)
    print(f"{args.family}: {result.steps} steps in {result.wall_seconds:.1f} s, {result.parameters:,} upstream "
          f"parameters, loss {result.info['first_loss'] if result.info['first_loss'] is not None else 'n/a'} -> "
          f"{result.final_loss:.4g}")
    print(f"load it with --upstream pretrained:{args.out} (or {result.loader}={result.upstream_path})")
    return ExitCode.OK


def cmd_families(args: argparse.Namespace) -> int:
    from superbench.cli.run import resolve_data
    from upstreams.pretrain.families import FamilyComparison, compare_families, scoring_corpus

    comparison = FamilyComparison(out=args.out, families=_names(args.families), tasks=_names(args.tasks),
                                  data=args.data, seeds=args.seeds, confirm_below=args.confirm_below,
                                  confirm_seeds=args.confirm_seeds, steps=args.steps, seed=args.seed,
                                  settings=_settings(args))  # checked here, before any work
    compare_families(comparison, resolve_data(scoring_corpus(args.data)))
    print((args.out / "families.md").read_text())
    print(f"wrote {args.out / 'families.md'}, families.html, families.json, leaderboard.md, report.html")
    return ExitCode.OK

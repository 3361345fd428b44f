"""`superbench compare A B`: paired significance tests between two models on the test sets they share.

    superbench compare A[@FP] B[@FP] [--task T ...] [--alpha 0.05] [--resamples 1000] [--reference paper|local]
                       [--format table|json] [--db PATH]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from superbench.exit_codes import ExitCode

log = logging.getLogger("superbench.compare")

DESCRIPTION = """\
Compare two models task by task on the test sets both were scored on (same manifest fingerprint, recipe
version and profile; weighted-sum records), from the per-unit test scores their records keep.

Tests, per task, for the main metric and each secondary metric (indented rows):
  - paired bootstrap: the same draw of test units (utterances, trial pairs, queries or recordings, as the
    metric declares) for both models, --resamples draws; the difference A-B with its 95 % percentile
    interval, and the bootstrap p-value;
  - paired approximate randomisation (permutation test): each unit's scores swapped between A and B at
    random (every swap enumerated on tiny test sets); its p-value decides.
Correction: Holm's step-down method over the compared tasks' main metrics, applied to the permutation
p-values; a difference is significant when its Holm-adjusted p < --alpha. Secondary metrics are shown
uncorrected and are not part of the decision. Several seeds are paired seed by seed (shared seed numbers,
else in seed order), and the output says so.

The SUPERB score over the compared tasks: every task resampled independently, the same draw for A and B,
both scores recomputed with the same reference points, held fixed (paper, or local: FBANK and the best
model measured on each compared test set; the default mode as the leaderboard picks it); the difference
with its percentile interval and bootstrap p-value. SE and SS never count in it: over them the same test
gives the SG score, superbench's own SUPERB-SG aggregate (SUPERB-SG defines no overall score).

A task is refused, with the reason, when the two models' test sets differ or a side keeps no per-unit
scores (add them with `superbench results ci` where predictions were kept, or re-run). Everything is
seeded: the same records give the same numbers.

Exit codes: 0 compared (whatever the verdict), 2 nothing could be compared (the reasons are printed) or
bad input."""


def register(sub: argparse._SubParsersAction) -> None:
    from leaderboard.compare import ALPHA, FORMATS
    from leaderboard.score import REFERENCE_MODES
    from superbench.uncertainty import RESAMPLES

    p = sub.add_parser("compare", help="paired significance tests between two models, per task and for the "
                                       "SUPERB score (Holm-corrected)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="first model: an upstream name in the store, or NAME@FINGERPRINT_PREFIX "
                                          "(default fingerprint: the newest)")
    p.add_argument("b", metavar="B", help="second model, likewise")
    p.add_argument("--task", action="extend", nargs="+", default=None, metavar="T",
                   help="compare only these tasks (repeatable; default: every task either model has)")
    p.add_argument("--alpha", type=float, default=ALPHA,
                   help=f"significance level after Holm's correction (default {ALPHA})")
    p.add_argument("--resamples", type=int, default=RESAMPLES,
                   help=f"bootstrap draws and random permutations (default {RESAMPLES})")
    p.add_argument("--reference", choices=REFERENCE_MODES, default=None,
                   help="SUPERB score reference points: published (paper) or measured on each compared test set "
                        "(local); default: as `superbench leaderboard` picks them")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default, aligned text) or json (fields: see leaderboard/compare.py)")
    p.add_argument("--db", type=Path, default=None,
                   help="results database (default: $SUPERBENCH_DB or <SUPERBENCH_HOME>/leaderboard.db)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from leaderboard.compare import compare_models
    from leaderboard.store import ResultStore

    store = ResultStore(args.db, create=False)
    records = store.records()
    if store.invalid_rows:
        log.warning("%d stored row(s) skipped as invalid (see above)", len(store.invalid_rows))
    result = compare_models(records, args.a, args.b, args.task, alpha=args.alpha, resamples=args.resamples,
                            reference=args.reference)
    sys.stdout.write(result.to_json() if args.format == "json" else result.format())
    if result.exit_code != ExitCode.OK:
        log.error("nothing compared between %s and %s: %s", args.a, args.b,
                  "; ".join(f"{r.label}: {r.reason}" for r in result.refused) or "no tasks")
    return result.exit_code

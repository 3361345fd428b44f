"""`superbench results migrate`: move records of the first layout into the run-identity layout, and
rewrite records written before records described their task (schema 1) with that description.
`superbench results ci`: give records written without a confidence interval theirs, from their per-unit
scores or their kept predictions (`superbench.record_units`)."""

from __future__ import annotations

import argparse

from superbench.exit_codes import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    res = sub.add_parser("results", help="manage result record folders",
                         description="Result records live under <upstream>/<fingerprint>/<profile>-r<version>/.")
    rsub = res.add_subparsers(dest="results_command", metavar="SUBCOMMAND")
    mig = rsub.add_parser("migrate", help="move first-layout records (<upstream>__<task>__seed<N>.json) into "
                                          "the current layout, so skip-if-done and the store see them, and add "
                                          "the task's description to records that lack it (schema 1), so they "
                                          "read where the task is not installed")
    mig.add_argument("--results", default=None, metavar="DIR",
                     help="results folder (default: $SUPERBENCH_RESULTS or $SUPERBENCH_HOME/results)")
    mig.set_defaults(func=cmd_migrate)
    ci = rsub.add_parser("ci", help="add the 95 %% confidence interval (test_ci) to records that lack it: from their "
                                    "per-unit scores, or from the per-utterance scores of their kept predictions "
                                    "(accuracy, PER/WER); exit 1 when some record is still without one",
                         description="For each record file lacking test_ci: intervals from its per-unit scores "
                                     "(units) when it keeps them; else units built from its predictions file "
                                     "(<stem>.predictions.jsonl: 'correct' per utterance for accuracy, 'errors' and "
                                     "'ref_tokens' for PER/WER), checked to give back the record's test value; else "
                                     "the reason (re-run). Files are rewritten atomically.")
    ci.add_argument("--results", default=None, metavar="DIR",
                    help="results folder (default: $SUPERBENCH_RESULTS or $SUPERBENCH_HOME/results)")
    ci.set_defaults(func=cmd_ci)
    res.set_defaults(func=lambda args: res.print_help() or ExitCode.USAGE)


def cmd_migrate(args: argparse.Namespace) -> int:
    from superbench.paths import results_dir
    from superbench.records import describe_records, migrate_results, old_layout_records

    root = args.results or results_dir()
    before = old_layout_records(root)
    moved = migrate_results(root)
    for old, new in moved:
        print(f"{old} -> {new}")
    print(f"{root}: moved {len(moved)} of {len(before)} first-layout record(s)")
    described, problems = describe_records(root)
    for problem in problems:
        print(f"not described: {problem}")
    print(f"{root}: {len(described)} record(s) now describe their task"
          + (f", {len(problems)} left as they were" if problems else ""))
    return ExitCode.OK if len(moved) == len(before) and not problems else ExitCode.FAILED


def cmd_ci(args: argparse.Namespace) -> int:
    from superbench.paths import results_dir
    from superbench.record_units import add_intervals

    root = args.results or results_dir()
    report = add_intervals(root)
    for path in report.from_units:
        print(f"{path}: interval from its per-unit scores")
    for path in report.from_predictions:
        print(f"{path}: interval from the per-utterance scores of its predictions")
    for path, why in report.left:
        print(f"{path}: no interval: {why}")
    print(report.summary(root))
    return ExitCode.OK if report.complete else ExitCode.FAILED

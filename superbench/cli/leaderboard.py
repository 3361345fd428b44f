"""`superbench leaderboard`, `superbench report` and `superbench check`.

    superbench leaderboard [--db PATH] [--reference paper|local] [--sort COL] [--no-published]
                           [--format md|csv|json|html] [--no-ci]
    superbench leaderboard import PATHS... [--overwrite]
    superbench leaderboard import-published FILE.csv|superb-paper|superb-sg-paper [--overwrite]
    superbench leaderboard export -o FILE
    superbench leaderboard sync [--results DIR] [--db PATH]
    superbench report -o report.html [--data DATA_ROOT|demo[:SIZE]] [--reference paper|local] [--alpha A]
    superbench check --baseline FILE [--db PATH | --records DIR] [--fingerprint FP] [--tolerance ABS]
                     [--std-tolerance K] [--alpha A]
    superbench check --write-baseline FILE --upstream NAME [--fingerprint FP] [--profile P] [--recipe-version V]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from superbench.exit_codes import ExitCode

log = logging.getLogger("superbench.leaderboard")

SHOW_SKIPPED = 10  # skipped rows listed one by one before summarising


def _add_db(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    p.add_argument("--db", type=Path, default=argparse.SUPPRESS if suppress else None,
                   help="results database (default: $SUPERBENCH_DB or <SUPERBENCH_HOME>/leaderboard.db)")


def _store(args: argparse.Namespace, must_exist: bool = True):
    from leaderboard.store import ResultStore

    return ResultStore(getattr(args, "db", None), create=not must_exist)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    from superbench.io import atomic_write_text

    atomic_write_text(output, text)
    log.info("wrote %s", output)


def _published(args: argparse.Namespace, store) -> list:
    return [] if getattr(args, "no_published", False) else store.published()


def cmd_table(args: argparse.Namespace) -> int:
    from leaderboard.table import build_leaderboard

    store = _store(args)
    records = store.records()  # rows that fail validation are skipped with a warning each
    if store.invalid_rows:
        log.warning("%d stored row(s) skipped as invalid (see above); the table shows the other %d",
                    len(store.invalid_rows), len(records))
    board = build_leaderboard(records, reference=args.reference, sort=args.sort,
                              published=_published(args, store), ci=not args.no_ci)
    _emit(board.render(args.format), args.output)
    return ExitCode.OK


def cmd_import_published(args: argparse.Namespace) -> int:
    from leaderboard.published import PublishedError, read_published_csv, resolve_published_path

    try:
        rows = read_published_csv(resolve_published_path(args.file))
    except PublishedError as exc:
        log.error("%s", exc)
        return ExitCode.USAGE
    store = _store(args, must_exist=False)
    inserted, replaced, skipped = store.add_published(rows, overwrite=args.overwrite)
    for what in skipped[:SHOW_SKIPPED]:
        log.warning("skipped (already stored): %s", what)
    if len(skipped) > SHOW_SKIPPED:
        log.warning("... and %d more skipped row(s)", len(skipped) - SHOW_SKIPPED)
    upstreams = sorted({r.upstream for r in rows})
    print(f"{store.path}: published numbers for {', '.join(upstreams)}: {inserted} inserted, {replaced} replaced, "
          f"{len(skipped)} skipped (already stored; use --overwrite to replace); shown as '(published)' rows, "
          f"scored with --reference paper, never used by `check`")
    return ExitCode.OK


def cmd_import(args: argparse.Namespace) -> int:
    """All or nothing: every input is validated (the one record schema, `ResultRecord.validate`) before
    anything is written; with any refused input nothing is written and the refusals are listed."""
    from leaderboard.store import ImportReport, load_record_files

    records, errors = load_record_files(args.paths)
    store = _store(args, must_exist=False)
    if errors:
        for e in errors:
            log.error("refused: %s", e)
        log.error("import refused: %d bad input(s), %d valid record(s) not imported; nothing was written",
                  len(errors), len(records))
        print(f"{store.path}: {ImportReport(refused=errors).summary()}; nothing was written")
        return ExitCode.USAGE
    report = store.add_many(records, overwrite=args.overwrite)
    for key in report.skipped[:SHOW_SKIPPED]:
        log.warning("skipped (already stored): %s", key.describe())
    if len(report.skipped) > SHOW_SKIPPED:
        log.warning("... and %d more skipped row(s)", len(report.skipped) - SHOW_SKIPPED)
    print(f"{store.path}: {report.summary()}; {len(store)} row(s) in store")
    return ExitCode.OK


def cmd_sync(args: argparse.Namespace) -> int:
    """Add record files the store lacks (a run killed, or its database write failed, after the record
    file was written); rows are never deleted or replaced. Exit 2 when some file could not be added."""
    from superbench.paths import results_dir

    root = args.results if args.results is not None else results_dir()
    store = _store(args, must_exist=False)
    report = store.sync(root)
    for key in report.added:
        print(f"added {key.describe()}")
    for problem in report.refused:
        log.error("refused: %s", problem)
    print(f"{store.path}: {len(report.added)} record(s) added from {root}, {report.already} already stored, "
          f"{len(report.refused)} refused; {len(store)} row(s) in store")
    return ExitCode.USAGE if report.refused else ExitCode.OK


def cmd_export(args: argparse.Namespace) -> int:
    n = _store(args).export_json(args.output)
    print(f"exported {n} record(s) to {args.output}")
    return ExitCode.OK


def _report_data_root(spec: str) -> Path:
    """A data root for `report --data`: a folder, or an already built demo corpus (never built here)."""
    from recipes.prepare.demo import demo_dir, demo_size, is_complete

    size = demo_size(spec)
    if size is not None:
        root = demo_dir(size or "default")  # `demo:` alone: the default size
        if not is_complete(root):
            raise FileNotFoundError(f"--data {spec}: the demo corpus is not built at {root} "
                                    f"(run `superbench data demo` or leave out --data)")
        return root
    root = Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {spec}: no such data root (a folder with <task>/meta.json manifests)")
    return root


def _report_alpha(text: str) -> float:
    """`report --alpha`: a level strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (e.g. 0.05)")
    return value


def _report_command(args: argparse.Namespace) -> str:
    """The report's own command line, rebuilt from its options (paths as given)."""
    import shlex

    parts = ["superbench", "report", "--db", str(_store(args).path), "-o", str(args.output)]
    for flag, value in (("--reference", args.reference), ("--data", args.data)):
        if value is not None:
            parts += [flag, str(value)]
    if args.sort != "score":
        parts += ["--sort", args.sort]
    if args.no_published:
        parts.append("--no-published")
    if args.alpha is not None:
        parts += ["--alpha", f"{args.alpha:g}"]
    return shlex.join(parts)


def cmd_report(args: argparse.Namespace) -> int:
    from leaderboard.report import build_report, describe_data_root

    store = _store(args)
    records = store.records()
    corpora, chance = None, None
    if args.data is not None:
        corpora, chance = describe_data_root(_report_data_root(args.data),
                                             fingerprints={r.manifest_fingerprint for r in records})
        if not corpora:
            log.warning("--data %s: no manifest there matches the stored records' data; no corpus sizes or "
                        "chance levels in the report", args.data)
    text = build_report(records, reference=args.reference, sort=args.sort, title=args.title,
                        published=_published(args, store), chance=chance, corpora=corpora,
                        command=_report_command(args), **({} if args.alpha is None else {"alpha": args.alpha}))
    _emit(text, args.output)
    return ExitCode.OK


def cmd_check(args: argparse.Namespace) -> int:
    from leaderboard.check import compare, load_baseline, make_baseline, write_baseline
    from leaderboard.store import load_record_files

    if args.records is not None and args.db is not None:
        raise ValueError("pass either --db or --records, not both")
    source = f"the records in {args.records}" if args.records is not None else "the store"
    if args.write_baseline is not None:
        if not args.upstream:
            raise ValueError("--write-baseline needs --upstream NAME")
        records = _current_records(args, load_record_files)
        base = make_baseline(records, args.upstream, profile=args.profile, recipe_version=args.recipe_version,
                             fingerprint=args.fingerprint, source=source)
        write_baseline(base, args.write_baseline)
        print(f"wrote baseline for {base.upstream}@{base.upstream_fingerprint[:12]} ({', '.join(base.tasks)}) "
              f"to {args.write_baseline}")
        without = base.without_units()
        if without:
            print(f"no per-unit test scores for {', '.join(without)} (their records kept none): these metrics will "
                  f"be checked by the size rule only, without a significance test")
        return ExitCode.OK
    baseline = load_baseline(args.baseline)
    report = compare(baseline, _current_records(args, load_record_files), tolerance=args.tolerance,
                     std_tolerance=args.std_tolerance, allow_missing=args.allow_missing,
                     fingerprint=args.fingerprint, source=source, alpha=args.alpha)
    sys.stdout.write(report.format())
    return report.exit_code


def _current_records(args: argparse.Namespace, load_record_files) -> list:
    if args.records is not None:
        records, errors = load_record_files([args.records])
        if errors:
            raise ValueError("bad result records:\n  " + "\n  ".join(errors))
        return records
    return _store(args).records()


def register(sub: argparse._SubParsersAction) -> None:
    from leaderboard.check import ALPHA
    from leaderboard.score import REFERENCE_MODES
    from leaderboard.table import FORMATS

    # What the table shows, the same for `leaderboard` and `report`: declared once, inherited by both.
    view = argparse.ArgumentParser(add_help=False)
    view.add_argument("--reference", choices=REFERENCE_MODES, default=None,
                      help="SUPERB score reference points: published (paper) or measured in this store (local); "
                           "default: local when every row is on a non-SUPERB corpus (e.g. the demo), else paper")
    view.add_argument("--no-published", action="store_true",
                      help="hide the '(published)' rows added with `leaderboard import-published`")
    view.add_argument("--sort", default="score", metavar="COLUMN",
                      help="table order: score (default; the SG score when no row has a SUPERB score), sg "
                           "(superbench's own SUPERB-SG aggregate), upstream, recipe, profile, a task name, or a "
                           "secondary metric's key such as sf/cer (best first)")

    lb = sub.add_parser("leaderboard", parents=[view], help="show the results table; import/export results",
                        description="Upstreams x tasks (mean ± std over seeds, and the 95 % confidence interval over "
                                    "the test units where records keep per-unit scores) with the SUPERB score. "
                                    "Subcommands: import, export.")
    _add_db(lb)
    lb.add_argument("--format", choices=FORMATS, default="md",
                    help="md (default, for terminals and READMEs), csv, json (with score task sets) or html")
    lb.add_argument("-o", "--output", type=Path, help="write to a file instead of stdout")
    lb.add_argument("--no-ci", action="store_true",
                    help="hide the confidence intervals: by default a cell whose records keep per-unit test scores "
                         "shows '(CI ±h)', the half-width of the 95%% percentile-bootstrap interval of its mean over "
                         "the test units, and the SUPERB score its [low, high] (tasks resampled independently, "
                         "reference points held fixed)")
    lb.set_defaults(func=cmd_table)
    lbsub = lb.add_subparsers(dest="leaderboard_command", metavar="SUBCOMMAND")

    imp = lbsub.add_parser("import", help="add result record files/directories (or an export) to the store")
    imp.add_argument("paths", nargs="+", type=Path, help="record JSON files, export files or directories")
    imp.add_argument("--overwrite", action="store_true", help="replace rows that are already stored")
    _add_db(imp, suppress=True)
    imp.set_defaults(func=cmd_import)

    pub = lbsub.add_parser("import-published",
                           help="add published numbers (CSV: upstream,task,value,source[,metric][,note]; metric may "
                                "be a task's secondary metric, e.g. cer for sf) as '(published)' rows",
                           description="Published numbers are stored apart from result records: shown as "
                                       "'<upstream> (published)', scored in paper mode, never used by `check` "
                                       "or local references. FILE is a CSV path or the name of a shipped "
                                       "table (superb-paper, superb-sg-paper).")
    pub.add_argument("file", metavar="FILE.csv", help="CSV with columns upstream,task,value,source[,metric][,note]")
    pub.add_argument("--overwrite", action="store_true", help="replace (upstream, task) numbers already stored")
    _add_db(pub, suppress=True)
    pub.set_defaults(func=cmd_import_published)

    exp = lbsub.add_parser("export", help="write every stored record to one JSON file")
    exp.add_argument("-o", "--output", type=Path, required=True,
                     help="JSON file to write (a list of records; `leaderboard import` reads it back)")
    _add_db(exp, suppress=True)
    exp.set_defaults(func=cmd_export)

    syn = lbsub.add_parser("sync", help="add record files under the results folder that the store lacks",
                           description="Repairs a store that missed records (a run killed, or the database "
                                       "write failed, after the record file was written). Records already "
                                       "stored are left as they are; rows are never deleted.")
    syn.add_argument("--results", type=Path, default=None, metavar="DIR",
                     help="results folder to read (default: $SUPERBENCH_RESULTS or $SUPERBENCH_HOME/results)")
    _add_db(syn, suppress=True)
    syn.set_defaults(func=cmd_sync)

    rep = sub.add_parser("report", parents=[view],
                         help="write a self-contained HTML report (table, bar chart, layer weights)")
    _add_db(rep)
    rep.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                     help="HTML file to write, self-contained (default: report.html)")
    rep.add_argument("--data", metavar="DATA_ROOT|demo[:SIZE]",
                     help="read corpus sizes and class counts (chance lines) from these manifests; only "
                          "manifests the stored records were scored on are used")
    rep.add_argument("--title", default="superbench report", help="page title (default: superbench report)")
    rep.add_argument("--alpha", type=_report_alpha, default=None, metavar="A",
                     help="significance level of the pairwise significance matrices, after Holm's correction "
                          "over each table's pairs (default: 0.05)")
    rep.set_defaults(func=cmd_report)

    chk = sub.add_parser("check", help="fail (exit 1) when results regressed against a baseline",
                         description="Direction-aware regression check: a metric regresses when it got worse by "
                                     "more than max(tolerance, K*std) and, where the baseline and the current "
                                     "records keep per-unit test scores, the paired test finds the drop "
                                     "significant at --alpha. Exit 0: ok, 1: regression, "
                                     "2: usage/data error (also: implausible baseline std, nothing compared), "
                                     "3: internal error.")
    mode = chk.add_mutually_exclusive_group(required=True)
    mode.add_argument("--baseline", type=Path, help="baseline JSON to check against")
    mode.add_argument("--write-baseline", type=Path, metavar="FILE",
                      help="write a baseline for --upstream from the current results instead")
    _add_db(chk)
    chk.add_argument("--records", type=Path, help="read current results from this directory instead of --db")
    chk.add_argument("--tolerance", type=float, default=0.5,
                     help="allowed drop in metric points (percent) before it counts (default 0.5)")
    chk.add_argument("--std-tolerance", type=float, default=2.0, metavar="K",
                     help="also allow K x the seeds' std (default 2.0); allowed = max(tolerance, K*std)")
    chk.add_argument("--alpha", type=float, default=ALPHA,
                     help=f"significance level of the paired test (default {ALPHA:g}; two-sided approximate "
                          "randomisation, Holm-corrected over the metrics tested): a drop beyond the tolerance "
                          "that is not significant passes as test-set noise, and the report says so")
    chk.add_argument("--allow-missing", action="store_true", help="tasks missing from the current results "
                                                                   "are reported, not an error")
    chk.add_argument("--fingerprint", metavar="FP",
                     help="compare (or write the baseline from) these weights of the upstream: a fingerprint or "
                          "a unique prefix of one (default: the newest fingerprint in the current results)")
    chk.add_argument("--upstream", help="upstream to write the baseline for (with --write-baseline)")
    chk.add_argument("--profile", help="with --write-baseline: only results of this profile")
    chk.add_argument("--recipe-version", help="with --write-baseline: only results of this recipe version")
    chk.set_defaults(func=cmd_check)

"""`superbench` command line: thin wrappers over library functions, and the only place that wires
the core to the built-in upstreams, tasks, data preparers and the leaderboard.

Each command group lives in its own module and contributes a `register(subparsers)`.
Exit codes: `superbench.exit_codes.ExitCode`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, Iterator

from superbench import __version__
from superbench.cli import compare, data, leaderboard, pretrain, results, run, upstreams
from superbench.exit_codes import ExitCode, exit_code_for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superbench",
        description="Benchmark frozen self-supervised speech models on SUPERB tasks "
                    "(PR, KS, IC, SID, ER, ASR, QbE, SF, SV, SD) with cached features and a local "
                    "leaderboard; pretrain small self-supervised models to compare families.",
        epilog="exit codes: 0 ok, 1 negative verdict (regression, failed validation), 2 usage error "
               "(bad input, found before any work), 3 runtime failure or internal error (e.g. NaN loss, full "
               "disk, a bug), 130 interrupted (Ctrl-C), 141 output closed by its reader (e.g. `| head`), "
               "143 terminated (SIGTERM)",
    )
    parser.add_argument("--version", action="version", version=f"superbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (upstreams, data, run, results, leaderboard, compare, pretrain):
        module.register(sub)
    for command in subcommands(parser):
        # -v also after the subcommand (`superbench run ... -v`); SUPPRESS keeps a -v given before it.
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    return parser


def subcommands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every subcommand parser below `parser`, at any depth (`data demo`, `leaderboard import`, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield child
                yield from subcommands(child)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where the process is, so it unwinds exactly as
    Ctrl-C does: finished work kept, the running trial's checkpoint left for a resume."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.USAGE
    log = logging.getLogger("superbench")
    try:
        return int(args.func(args) or 0)
    except Terminated:
        log.error("terminated (SIGTERM); finished work is kept and a re-run resumes")
        return ExitCode.TERMINATED
    except BrokenPipeError:  # the reader went away (`... | head`): nothing left to say, and no one to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return ExitCode.BROKEN_PIPE
    except KeyboardInterrupt:
        log.error("interrupted; finished work is kept and a re-run resumes")
        return ExitCode.INTERRUPTED
    except (LookupError, ValueError, RuntimeError, OSError, ImportError) as exc:
        code = exit_code_for(exc)
        kind = "error" if code == ExitCode.USAGE else "failed"
        log.error("%s: %s", kind, exc, exc_info=bool(args.verbose))
        return code
    except Exception as exc:  # a bug, not a verdict: never exit 1 (a regression, to CI)
        first = (str(exc).splitlines() or [""])[0]
        log.error("internal error: %s: %s (run with -v for the traceback)", type(exc).__name__, first,
                  exc_info=bool(args.verbose))
        return ExitCode.INTERNAL


if __name__ == "__main__":
    sys.exit(main())

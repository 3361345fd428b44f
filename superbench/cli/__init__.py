"""`superbench` command line: thin wrappers over library functions.

Each command group lives in its own module and contributes a `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from superbench import __version__
from superbench.cli import data, leaderboard, run, upstreams

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superbench",
        description="Benchmark frozen self-supervised speech models on SUPERB tasks "
                    "(PR, ASR, KS, SID, ER) with cached features and a local leaderboard.",
    )
    parser.add_argument("--version", action="version", version=f"superbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (upstreams, data, run, leaderboard):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("superbench").error("interrupted; finished work is kept and a re-run resumes")
        return 130
    except (LookupError, ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        logging.getLogger("superbench").error("%s", exc)
        if args.verbose:
            raise
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

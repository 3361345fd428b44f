"""`superbench upstreams list`, `superbench upstreams validate NAME [--upstream-path DIR]` and
`superbench upstreams random-checkpoint NAME --out FILE`."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from superbench.exit_codes import ExitCode

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("upstreams", help="list built-in and plugin upstreams, check the contract",
                            description="Upstreams are frozen speech encoders returning every hidden layer.")
    commands = parser.add_subparsers(dest="upstreams_command", metavar="SUBCOMMAND")

    listing = commands.add_parser("list", help="all registered upstreams (built-ins and entry points)")
    listing.set_defaults(func=cmd_list)

    validate = commands.add_parser(
        "validate", help="run the upstream contract checks on synthetic audio (exit 0 = all pass)",
        description="Checks attributes, layer count, shapes, frame lengths, determinism, batch-vs-single "
                    "equality, padding invariance, finite values and the too-short-input error.")
    validate.add_argument("name", nargs="?", default=None,
                          help="NAME, NAME=DIR, path/to/file.py:Class or s3prl:HUBNAME (or give --upstream)")
    validate.add_argument("--upstream", dest="upstream", metavar="NAME", default=None,
                          help="the same as the positional NAME, spelled as in `run` and `check`")
    validate.add_argument("--upstream-path", metavar="DIR", default=None,
                          help="load NAME's weights from this local checkpoint directory")
    validate.add_argument("--atol", type=float, default=None,
                          help="tolerance relative to the feature scale (default 1e-4)")
    validate.set_defaults(func=cmd_validate)

    random_ckpt = commands.add_parser(
        "random-checkpoint", help="write a tiny random-init checkpoint in NAME's published format",
        description="Writes a small randomly initialised model of NAME's family in the file format its public "
                    "checkpoint is published in (s3prl .ckpt, fairseq .pt, ...), so that loading, "
                    "`validate NAME=FILE` and a whole `run --upstream NAME=FILE` can be tried without the real "
                    "weights. Its scores mean nothing.")
    random_ckpt.add_argument("name", help="a native SSL upstream name (apc, tera, wav2vec, distilhubert, ...)")
    random_ckpt.add_argument("--out", required=True, metavar="FILE", help="where to write the checkpoint")
    random_ckpt.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")
    random_ckpt.set_defaults(func=cmd_random_checkpoint)
    parser.set_defaults(func=lambda args: (parser.print_help(), ExitCode.USAGE)[1])


def upstream_rows() -> list[dict[str, Any]]:
    """One row per registered upstream, from what its factory declares (no model is built)."""
    from superbench.upstream import UPSTREAMS, UpstreamInfo, describe_factory

    rows = []
    for name in UPSTREAMS.names():
        try:
            info = describe_factory(UPSTREAMS.get(name))
        except Exception as exc:  # listing must survive one odd plugin
            log.debug("no metadata for %s: %s", name, exc)
            info = UpstreamInfo()
        origin = UPSTREAMS.source(name)
        rows.append({"name": name, "family": info.family or ("plugin" if origin != "built-in" else "-"),
                     "layers": info.layers, "hidden": info.hidden_size, "source": info.source or origin,
                     "registered": origin})
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    rows = upstream_rows()
    headers = ["name", "family", "layers", "hidden", "weights / hub id", "registered by"]
    keys = ["name", "family", "layers", "hidden", "source", "registered"]
    table = [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print("\nAlso: s3prl:HUBNAME (needs `pip install 'superbench[s3prl]'`), path/to/file.py:Class, NAME=DIR.")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from superbench.upstream import load_upstream
    from superbench.validate import DEFAULT_ATOL, all_passed, format_checks, validate_upstream

    if bool(args.name) == bool(args.upstream):
        raise ValueError("upstreams validate needs the upstream once: `validate NAME` or `validate --upstream NAME`")
    upstream = load_upstream(args.name or args.upstream, path=args.upstream_path)
    checks = validate_upstream(upstream, atol=args.atol if args.atol is not None else DEFAULT_ATOL)
    print(f"upstream {upstream.name} (fingerprint {upstream.fingerprint()})")
    print(format_checks(checks))
    return ExitCode.OK if all_passed(checks) else ExitCode.FAILED


def random_checkpoint_writers() -> dict[str, Any]:
    """Registered upstream names whose factory can write a random checkpoint in its published format."""
    from superbench.upstream import UPSTREAMS, UpstreamFactory

    return {name: factory.write_random_checkpoint for name, factory in UPSTREAMS.items()
            if isinstance(factory, UpstreamFactory) and factory.write_random_checkpoint is not None}


def cmd_random_checkpoint(args: argparse.Namespace) -> int:
    writers = random_checkpoint_writers()
    if args.name not in writers:
        import difflib

        close = difflib.get_close_matches(args.name, list(writers), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"upstream {args.name!r} has no published checkpoint format to write{hint} "
                         f"(random-checkpoint serves: {', '.join(sorted(writers))})")
    path = writers[args.name](args.out, seed=args.seed)
    print(f"wrote a random-init {args.name} checkpoint to {path}; try `superbench upstreams validate "
          f"{args.name}={path}`")
    return ExitCode.OK

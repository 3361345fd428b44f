"""`superbench data ...`: build the offline demo corpus or index a real corpus already on disk."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from superbench.exit_codes import ExitCode

log = logging.getLogger(__name__)

#: `data prepare` options the CLI spells as flags (any preparer may read them): flag dest -> help.
PREPARE_FLAGS = {
    "test_root": "speech_commands: the official test-set folder",
    "task": "hf: the task the dataset is for (ks, sid, er, asr, pr)",
    "columns": 'hf: JSON column map, e.g. {"label": "intent"}',
    "splits": 'hf: JSON split map, e.g. {"dev": "validation"}',
    "config": "hf: dataset configuration name",
    "language": "common-voice: the language's folder is ROOT (es, zh-CN or ar; default es)",
}


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare datasets (demo corpus, real corpora)")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")

    demo = dsub.add_parser("demo", help="synthesise the offline eSpeak NG demo corpus (every task)")
    demo.add_argument("--size", default="default", choices=("tiny", "default", "large"),
                      help="tiny (seconds, for tests), default (~40 min of speech) or large")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the synthesis (default: 0)")
    demo.add_argument("--out", type=Path, default=None,
                      help="output folder (default: $SUPERBENCH_HOME/data/demo-SIZE)")
    demo.add_argument("--force", action="store_true", help="regenerate even if a complete corpus exists")
    demo.set_defaults(func=_demo)

    prep = dsub.add_parser("prepare", help="write manifests for a corpus already on disk",
                           description="CORPUS is a registered corpus preparer (built-in or a plugin's "
                                       "`superbench.preparers` entry point); `superbench data list` shows them.")
    prep.add_argument("corpus", metavar="CORPUS", help="which corpus layout to read (see `superbench data list`)")
    prep.add_argument("--root", required=True, help="corpus folder (for hf: hub id, save_to_disk dir or "
                                                    "audiofolder:DIR)")
    prep.add_argument("--out", type=Path, default=None,
                      help="output root, one folder per task (default: $SUPERBENCH_HOME/data/CORPUS)")
    prep.add_argument("--skip-bad", action="store_true", help="leave out unreadable/missing files (logged)")
    for dest, text in PREPARE_FLAGS.items():
        prep.add_argument("--" + dest.replace("_", "-"), dest=dest, default=None, help=text)
    prep.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                      help="an option of the corpus's preparer that has no flag (repeatable)")
    prep.set_defaults(func=_prepare)
    synth = dsub.add_parser("synth", help="write a synthetic corpus in a real corpus' layout, at its size "
                                          "(a scale test instrument, not speech)",
                            description="Files in the folder layout of VoxCeleb1, LibriSpeech or Speech Commands "
                                        "v0.01, with labels learnable from the signal; index them with "
                                        "`superbench data prepare LAYOUT --root OUT`.")
    synth.add_argument("--layout", required=True, choices=("voxceleb1", "librispeech", "speech_commands"),
                       help="which real corpus' layout to write")
    synth.add_argument("--utterances", type=int, required=True,
                       help="audio files to write (real sizes: voxceleb1 148642, librispeech train-clean-100 "
                            "28539, speech_commands 51088)")
    synth.add_argument("--hours", type=float, default=None,
                       help="total audio (default: the real corpus' mean utterance length; speech_commands "
                            "clips are always 1 s)")
    synth.add_argument("--speakers", type=int, default=None,
                       help="speakers (default: the real corpus' utterances per speaker)")
    synth.add_argument("--out", type=Path, required=True, help="output folder (the corpus root)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    synth.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    synth.set_defaults(func=_synth)
    listing = dsub.add_parser("list", help="the corpora `data prepare` and `--data` know (built-ins and plugins)")
    listing.set_defaults(func=_list)
    data.set_defaults(func=lambda args: data.print_help() or ExitCode.USAGE)


def _demo(args: argparse.Namespace) -> int:
    from recipes.prepare import demo

    if args.out is None and not args.force:
        out = demo.ensure_demo(args.size, args.seed)
    else:
        out = args.out or demo.demo_dir(args.size)
        demo.prepare_demo(out, size=args.size, seed=args.seed)
    print(f"demo corpus ({args.size}, seed {args.seed}): {out}")
    print(demo.format_summary(demo.summarize_corpus(out)))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from recipes.prepare.synth import SynthSpec, synthesize
    from superbench.io import human_bytes

    spec = SynthSpec(args.layout, args.utterances, hours=args.hours, seed=args.seed, speakers=args.speakers)
    done = synthesize(spec, args.out, progress=args.progress)
    print(f"{done.layout} layout (seed {spec.seed}): {done.files} files, {done.seconds / 3600:.2f} h, "
          f"{human_bytes(done.bytes)}, {done.speakers} speakers in {done.root}")
    print(f"index it with: superbench data prepare {done.layout} --root {done.root}")
    return 0


def prepare_options(args: argparse.Namespace) -> dict[str, str]:
    """The preparer options given on the command line: the flags set, then each `--option KEY=VALUE`."""
    options = {dest: getattr(args, dest) for dest in PREPARE_FLAGS if getattr(args, dest) is not None}
    for item in args.option:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        options[key.replace("-", "_")] = value
    return options


def _prepare(args: argparse.Namespace) -> int:
    from recipes.prepare import format_summary, summarize_corpus
    from superbench.preparers import PREPARERS, PrepareRequest

    preparer = PREPARERS.get(args.corpus)
    if preparer.prepare is None:
        raise ValueError(f"corpus {args.corpus!r} is not read from disk (use --data {args.corpus} where a command "
                         f"takes data, or its own command)")
    options = prepare_options(args)
    unread = sorted(set(options) - set(preparer.options))
    if unread:
        log.warning("%s does not read %s; ignored", args.corpus, ", ".join(f"--{o.replace('_', '-')}" for o in unread))
    root = preparer.prepare(PrepareRequest(args.root, args.out, args.skip_bad, options))
    print(f"{args.corpus}: manifests in {root}")
    print(format_summary(summarize_corpus(root)))
    return 0


def _list(args: argparse.Namespace) -> int:
    from superbench.preparers import PREPARERS

    for name, preparer in PREPARERS.items():
        how = " and ".join(w for w, f in (("data prepare", preparer.prepare), ("--data", preparer.ensure)) if f)
        options = f"; options: {', '.join(preparer.options)}" if preparer.options else ""
        print(f"{name:<16} {preparer.writes or '-'} ({how}{options}; {PREPARERS.source(name)})")
    return 0

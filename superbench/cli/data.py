"""`superbench data ...`: build the offline demo corpus or index a real corpus already on disk."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from superbench.exit_codes import ExitCode

#: Corpora whose preparer is `prepare_<corpus>(root, out, skip_bad=...) -> task folder`: (module, function, task).
SIMPLE_PREPARERS = {
    "iemocap": ("recipes.prepare.iemocap", "prepare_iemocap", "er"),
    "fluent_commands": ("recipes.prepare.fluent_commands", "prepare_fluent_commands", "ic"),
    "snips": ("recipes.prepare.snips", "prepare_snips", "sf"),
    "quesst14": ("recipes.prepare.quesst14", "prepare_quesst14", "qbe"),
    "librimix": ("recipes.prepare.librimix", "prepare_librimix", "sd"),
}
CORPORA = ("speech_commands", "voxceleb1", "librispeech", *SIMPLE_PREPARERS, "hf")


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare datasets (demo corpus, real corpora)")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")

    demo = dsub.add_parser("demo", help="synthesise the offline eSpeak NG demo corpus (all ten tasks)")
    demo.add_argument("--size", default="default", choices=("tiny", "default", "large"),
                      help="tiny (seconds, for tests), default (~40 min of speech) or large")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the synthesis (default: 0)")
    demo.add_argument("--out", type=Path, default=None,
                      help="output folder (default: $SUPERBENCH_HOME/data/demo-SIZE)")
    demo.add_argument("--force", action="store_true", help="regenerate even if a complete corpus exists")
    demo.set_defaults(func=_demo)

    prep = dsub.add_parser("prepare", help="write manifests for a corpus already on disk")
    prep.add_argument("corpus", choices=CORPORA,
                      help="which corpus layout to read: " + ", ".join(CORPORA) + " (voxceleb1 writes SID, and SV "
                           "too when the verification trial list veri_test2.txt is in --root; the others: "
                           + ", ".join(f"{c} -> {t}" for c, (_, _, t) in SIMPLE_PREPARERS.items()) + ")")
    prep.add_argument("--root", required=True, help="corpus folder (for hf: hub id, save_to_disk dir or "
                                                    "audiofolder:DIR)")
    prep.add_argument("--out", type=Path, default=None,
                      help="output root, one folder per task (default: $SUPERBENCH_HOME/data/CORPUS)")
    prep.add_argument("--skip-bad", action="store_true", help="leave out unreadable/missing files (logged)")
    prep.add_argument("--test-root", default=None, help="speech_commands: the official test-set folder")
    prep.add_argument("--task", default=None, help="hf: the task the dataset is for (ks, sid, er, asr, pr)")
    prep.add_argument("--columns", default=None, help='hf: JSON column map, e.g. {"label": "intent"}')
    prep.add_argument("--splits", default=None, help='hf: JSON split map, e.g. {"dev": "validation"}')
    prep.add_argument("--config", default=None, help="hf: dataset configuration name")
    prep.set_defaults(func=_prepare)
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


def _prepare(args: argparse.Namespace) -> int:
    from recipes.prepare.demo import format_summary, summarize_corpus

    out = args.out
    if args.corpus == "speech_commands":
        from recipes.prepare.speech_commands import prepare_speech_commands
        root = prepare_speech_commands(args.root, out, test_root=args.test_root, skip_bad=args.skip_bad).parent
    elif args.corpus == "voxceleb1":
        from recipes.prepare.voxceleb1 import TEST_TRIAL_NAMES, prepare_voxceleb1, prepare_voxceleb1_sv
        root = prepare_voxceleb1(args.root, out, skip_bad=args.skip_bad).parent
        if any((Path(args.root) / name).is_file() for name in TEST_TRIAL_NAMES):
            prepare_voxceleb1_sv(args.root, root, skip_bad=args.skip_bad)
    elif args.corpus in SIMPLE_PREPARERS:
        import importlib

        module, function, _ = SIMPLE_PREPARERS[args.corpus]
        root = getattr(importlib.import_module(module), function)(args.root, out, skip_bad=args.skip_bad).parent
    elif args.corpus == "librispeech":
        from recipes.prepare.librispeech import prepare_librispeech
        root = prepare_librispeech(args.root, out, skip_bad=args.skip_bad)["asr"].parent
    else:
        from recipes.prepare.hf_datasets import prepare_hf_dataset
        if not args.task:
            raise ValueError("data prepare hf needs --task (ks, sid, er, asr or pr)")
        root = prepare_hf_dataset(args.root, args.task, out, columns=json.loads(args.columns or "{}"),
                                  splits=json.loads(args.splits) if args.splits else None, config=args.config,
                                  skip_bad=args.skip_bad).parent
    print(f"{args.corpus}: manifests in {root}")
    print(format_summary(summarize_corpus(root)))
    return 0

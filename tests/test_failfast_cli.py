"""Item 15: every option has help, `-v` works after the subcommand, and one home holds results, store and cache."""

from __future__ import annotations

import argparse
import logging

import pytest

from superbench.cli import build_parser, main, subcommands
from superbench.paths import cache_dir, checkpoints_dir, data_dir, home, results_dir

#: Options of superbench/cli/leaderboard.py still without help (that module is edited elsewhere). The test
#: below fails on any other option without help, and shrinks with this set as they get one.


def _options_without_help() -> set[str]:
    parser = build_parser()
    missing = set()
    for command in [parser, *subcommands(parser)]:
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.add(f"{command.prog} {action.option_strings[-1] if action.option_strings else action.dest}")
    return missing


def test_every_option_of_every_subcommand_has_help():
    parser = build_parser()
    progs = {c.prog for c in subcommands(parser)}
    assert {"superbench run", "superbench data demo", "superbench data prepare", "superbench upstreams validate",
            "superbench results migrate", "superbench leaderboard import", "superbench check"} <= progs
    assert not _options_without_help(), sorted(_options_without_help())
    for command in [parser, *subcommands(parser)]:  # and every subcommand has a help line in its parent's list
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all((a.help or "").strip() for a in action._choices_actions), command.prog


@pytest.mark.parametrize("argv", [["-v", "upstreams", "list"], ["upstreams", "list", "-v"],
                                  ["upstreams", "-v", "list"], ["tasks", "list", "--verbose"]])
def test_verbose_works_before_and_after_the_subcommand(argv, monkeypatch):
    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    assert main(argv) == 0
    assert levels == [logging.DEBUG]


def test_without_verbose_the_level_is_info(monkeypatch):
    levels = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: levels.append(kw["level"]))
    assert main(["tasks", "list"]) == 0 and levels == [logging.INFO]
    args = build_parser().parse_args(["run", "--upstream", "fbank", "--task", "ks", "-v"])
    assert args.verbose is True and args.command == "run"


def test_one_home_for_results_store_cache_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERBENCH_HOME", str(tmp_path / "sb"))
    monkeypatch.delenv("SUPERBENCH_RESULTS", raising=False)
    assert home() == tmp_path / "sb"
    assert [results_dir(), cache_dir(), checkpoints_dir(), data_dir()] == \
        [tmp_path / "sb" / d for d in ("results", "features", "checkpoints", "data")]
    monkeypatch.setenv("SUPERBENCH_RESULTS", str(tmp_path / "elsewhere"))
    assert results_dir() == tmp_path / "elsewhere"
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "$SUPERBENCH_RESULTS or $SUPERBENCH_HOME/results" in " ".join(help_text.split())


@pytest.mark.slow
def test_run_records_go_to_the_home_by_default(tmp_path, monkeypatch, capsys):
    from superbench.records import read_records
    from superbench.testing import make_class_corpus

    monkeypatch.setenv("SUPERBENCH_HOME", str(tmp_path / "sb"))
    monkeypatch.delenv("SUPERBENCH_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    make_class_corpus(tmp_path / "data", task="ks")
    (tmp_path / "tones.py").write_text("from superbench.testing import ToneUpstream as Tones\n")
    assert main(["run", "--upstream", "tones.py:Tones", "--task", "ks", "--data", "data", "--no-store",
                 "--no-progress", "--profile", "ci", "--lr", "0.01"]) == 0
    assert len(read_records([tmp_path / "sb" / "results"])) == 1 and not (tmp_path / "results").exists()

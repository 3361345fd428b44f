"""Plain-text tables of the CLI line up whatever the task names, and options shared by two commands are
declared once."""

from __future__ import annotations

import pandas as pd

from superbench.cli import build_parser, main, subcommands
from superbench.cli.run import summary_table, task_width


def _row(task: str, **kw: object) -> dict[str, object]:
    return {"upstream": "fbank", "task": task, "layer": None, "metric": "acc", "mean": 61.234, "std": 1.5, "n": 2,
            "dev_mean": 60.0, "lr": 1e-3, "profile": "fast", "extraction_s": 1.25, "training_s": 3.5, "role": "main",
            **kw}


def test_the_run_summary_task_column_fits_the_longest_task_name():
    table = summary_table(pd.DataFrame([_row("ks"), _row("pitch_contour", metric="mae", n=1)]))
    head, ks, pitch = table.splitlines()
    assert pitch.startswith("fbank                  pitch_contour mix   mae  ")
    assert ks.startswith("fbank                  ks            mix   acc  ")
    starts = {line.index(word) for line, word in ((head, "layer"), (ks, "mix"), (pitch, "mix"))}
    assert len(starts) == 1, table  # every column after the task starts at the same place
    assert " 61.23 ± 1.50 " in ks and "±" not in pitch  # one seed: no spread


def test_built_in_task_names_keep_the_five_character_column():
    assert task_width(["pr", "qbe"]) == 5 and task_width(["pitch_contour"]) == 13
    line = summary_table(pd.DataFrame([_row("qbe")])).splitlines()[1]
    assert line.startswith("fbank                  qbe   mix   acc")


def test_tasks_list_aligns_its_columns(capsys):
    assert main(["tasks", "list"]) == 0
    head, *rows = capsys.readouterr().out.splitlines()
    metric = head.index("metric")
    assert rows and all(r[metric - 1] == " " and r[metric] != " " for r in rows), "\n".join([head, *rows])


def test_view_options_are_shared_by_leaderboard_and_report():
    parsers = {p.prog.split()[-1]: p for p in subcommands(build_parser())}
    for name in ("leaderboard", "report"):
        flags = {s for a in parsers[name]._actions for s in a.option_strings}
        assert {"--reference", "--sort", "--no-published"} <= flags, name
    args = build_parser().parse_args(["report", "--sort", "ks", "--no-published", "--reference", "paper"])
    assert (args.sort, args.no_published, args.reference) == ("ks", True, "paper")

"""A task declared outside the package (a test-local module + its recipe) registers, lists and runs end to end,
with a plugin upstream from a test-local module, and without touching any file of the project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from superbench.cli import main
from superbench.records import read_records
from superbench.registry import load_object_from_file
from superbench.tasks import TASKS, get_task
from superbench.testing import TONES, make_class_corpus

TASK_SOURCE = textwrap.dedent('''
    """A new task: which of three tone pitches an utterance holds, read from a new manifest field."""
    from pathlib import Path

    from downstreams import UtteranceClassification
    from superbench.tasks import Task

    TASK = Task(name="pitch", description="Tone pitch class (plugin)", metric="acc", higher_is_better=True,
                target="pitch", kind=UtteranceClassification(), recipe=Path(__file__).with_name("pitch.yaml"))
''')

RECIPE = textwrap.dedent('''
    version: "3"
    task: pitch
    reference: none (a test task)
    profiles:
      fast:
        description: a few updates
        head: {proj_dim: 16}
        train: {steps: 60, batch_size: 8, lr: 1.0e-2, eval_interval: 20}
''')

UPSTREAM_SOURCE = textwrap.dedent('''
    from superbench.testing import ToneUpstream


    class PluginTones(ToneUpstream):
        name = "plugin-tones"

        def __init__(self, path=None):
            super().__init__()
''')


@pytest.fixture
def plugin(tmp_path):
    pkg = tmp_path / "plugin"
    pkg.mkdir()
    (pkg / "pitch_task.py").write_text(TASK_SOURCE)
    (pkg / "pitch.yaml").write_text(RECIPE)
    (pkg / "tones_up.py").write_text(UPSTREAM_SOURCE)
    data = tmp_path / "data"
    make_class_corpus(data, task="pitch", label_field="pitch")
    return pkg, data


def _run(tmp_path, pkg, data, task_spec):
    return main(["run", "--upstream", f"{pkg / 'tones_up.py'}:PluginTones", "--task", task_spec, "--data", str(data),
                 "--profile", "fast", "--results", str(tmp_path / "results"), "--no-store", "--no-progress"])


@pytest.mark.slow
def test_a_task_from_a_test_module_registers_lists_and_runs(tmp_path, plugin, capsys):
    pkg, data = plugin
    task = load_object_from_file(f"{pkg / 'pitch_task.py'}:TASK")
    with TASKS.scoped():
        TASKS.register(task.name, task, source="a test module")
        assert main(["tasks", "list"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("pitch"))
        assert line.split()[:6] == ["pitch", "acc", "higher", "is", "better", "utterance"] and "v3" in line
        assert _run(tmp_path, pkg, data, "pitch") == 0
        (record,) = read_records([tmp_path / "results"])
    assert "pitch" not in TASKS  # the scope is undone
    assert (record.upstream, record.task, record.recipe_version, record.profile) == ("plugin-tones", "pitch", "3",
                                                                                      "fast")
    assert record.test > 100 / len(TONES[:3]) + 30  # three tone classes: chance is 33 %
    assert len(record.layer_weights) == 3 and abs(sum(record.layer_weights) - 1) < 1e-5


@pytest.mark.slow
def test_task_named_by_file_on_the_command_line(tmp_path, plugin):
    pkg, data = plugin
    with TASKS.scoped():
        assert _run(tmp_path, pkg, data, f"{pkg / 'pitch_task.py'}:TASK,") == 0
        assert TASKS.source("pitch") == f"file {pkg / 'pitch_task.py'}:TASK"
        (record,) = read_records([tmp_path / "results"])
    assert record.task == "pitch" and record.test > 63


@pytest.mark.slow
def test_task_from_an_installed_package_entry_point(tmp_path, plugin, monkeypatch):
    pkg, _ = plugin
    info = pkg / "pitch_task-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pitch-task\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[superbench.tasks]\npitch = pitch_task:TASK\n")
    monkeypatch.syspath_prepend(str(pkg))
    with TASKS.scoped(rescan=True):
        assert TASKS.source("pitch") == "entry point pitch_task:TASK"
        assert get_task("pitch").recipe == pkg / "pitch.yaml"
        assert get_task("pitch").load_recipe("fast").train.steps == 60
        assert TASKS.source("ks") == "built-in" and [n for n in TASKS.names() if n != "pitch"] == \
            ["asr", "er", "ic", "ks", "pr", "qbe", "sd", "se", "sf", "sid", "ss", "sv", "vc"]
    assert "pitch" not in TASKS
    sys.modules.pop("pitch_task", None)


def _fresh(*argv: str, home) -> subprocess.CompletedProcess:
    """A superbench command in a new process, which has never imported the plugin."""
    env = {**os.environ, "SUPERBENCH_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "superbench", *argv], capture_output=True, text=True, env=env,
                          timeout=600, cwd=home)


@pytest.mark.slow
def test_a_plugin_tasks_records_read_in_a_fresh_process_without_the_plugin(tmp_path, plugin):
    """Records describe their task: leaderboard, report, check and sync read them where the plugin is gone."""
    pkg, data = plugin
    results, db = tmp_path / "results", tmp_path / "lb.db"
    with TASKS.scoped():
        assert main(["run", "--upstream", f"{pkg / 'tones_up.py'}:PluginTones", "--task",
                     f"{pkg / 'pitch_task.py'}:TASK", "--data", str(data), "--profile", "fast", "--seeds", "2",
                     "--results", str(results), "--db", str(db), "--no-progress"]) == 0
    records = read_records([results])
    assert len(records) == 2 and {r.task for r in records} == {"pitch"}
    shutil.move(pkg, tmp_path / "gone")  # the task's module and recipe are nowhere to be found
    mean = sum(r.test for r in records) / 2

    board = _fresh("leaderboard", "--db", str(db), "--format", "json", home=tmp_path)
    assert board.returncode == 0, board.stderr
    assert "skipped as invalid" not in board.stderr
    (row,) = json.loads(board.stdout)["rows"]
    cell = row["tasks"]["pitch"]
    assert cell["metric"] == "acc" and cell["higher_is_better"] is True and cell["n"] == 2
    assert cell["mean"] == pytest.approx(mean, abs=0.01)

    report = _fresh("report", "--db", str(db), "-o", str(tmp_path / "report.html"), home=tmp_path)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report.html").read_text()
    assert "PITCH" in html and "plugin-tones" in html and "skipped" not in report.stderr

    baseline = tmp_path / "baseline.json"
    wrote = _fresh("check", "--write-baseline", str(baseline), "--upstream", "plugin-tones", "--db", str(db),
                   home=tmp_path)
    assert wrote.returncode == 0, wrote.stderr + wrote.stdout
    entry = json.loads(baseline.read_text())["tasks"]["pitch"]
    assert (entry["metric"], entry["higher_is_better"], entry["n"]) == ("acc", True, 2)
    checked = _fresh("check", "--baseline", str(baseline), "--db", str(db), home=tmp_path)
    assert checked.returncode == 0 and "OK: no regression for plugin-tones" in checked.stdout, checked.stdout

    synced = _fresh("leaderboard", "sync", "--db", str(tmp_path / "new.db"), "--results", str(results),
                    home=tmp_path)
    assert synced.returncode == 0 and "2 record(s) added" in synced.stdout, synced.stdout + synced.stderr

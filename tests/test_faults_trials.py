"""Fault injection on what a run reuses from its checkpoint folder, and two identical runs at once.

Every reused file (finished-trial .json, .head.pt, .predictions.jsonl, a group's training state) is
checked against its digest before reuse: any single flipped bit is detected, logged with the path,
and the trial is trained again, so the record equals the uninterrupted run's, artefacts included.
Two identical runs started together end with one complete record.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import superbench.runner as runner_mod
import superbench.sweep as sweep_mod
import superbench.training as training_mod
from superbench.manifest import Fold
from superbench.records import ResultRecord, artifact_paths, read_record, record_path
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import Interrupted, ToneUpstream, make_class_corpus, scratch_run_options

FAST = {"steps": 40, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}
FLIPS_PER_KIND = 12


def _run(tmp_path: Path, root: Path, task: str = "ks") -> ResultRecord:
    (rec,) = run(ToneUpstream(), [get_task(task)], tmp_path / "data",
                 scratch_run_options(root, cache_root=tmp_path / "cache", overrides=dict(FAST)))
    return rec


def _artefacts(rec: ResultRecord, results: Path) -> dict[str, Path]:
    return artifact_paths(rec, record_path(results, rec.run_key()))


def _same_record(rec: ResultRecord, whole: ResultRecord, results: Path, whole_results: Path) -> None:
    assert (rec.test, rec.dev, rec.lr, rec.layer_weights, rec.trials) == \
        (whole.test, whole.dev, whole.lr, whole.layer_weights, whole.trials)
    assert rec.artifacts == whole.artifacts and set(rec.artifacts) == {"head", "predictions"}
    mine, theirs = _artefacts(rec, results), _artefacts(whole, whole_results)
    assert mine["predictions"].read_bytes() == theirs["predictions"].read_bytes()
    # a trial trained again alone (a group of one, not of two) differs from the group's only in float rounding
    torch.testing.assert_close(torch.load(mine["head"], weights_only=True),
                               torch.load(theirs["head"], weights_only=True), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """An uninterrupted ks run, and two interrupted copies of it: one killed after every trial finished
    (before the record: the finished-trial files are reused), one killed in the middle of the grouped
    training (its group checkpoint is resumed)."""
    tmp_path = tmp_path_factory.mktemp("trials")
    make_class_corpus(tmp_path / "data", task="ks")
    whole = _run(tmp_path, tmp_path / "whole")
    mp = pytest.MonkeyPatch()

    def no_record(*args, **kwargs):
        raise Interrupted

    mp.setattr(runner_mod, "write_record", no_record)
    with pytest.raises(Interrupted):
        _run(tmp_path, tmp_path / "finished")
    mp.undo()
    real_save, saves = training_mod._save_checkpoint, []

    def save_then_die(path, state):
        real_save(path, state)
        saves.append(path)
        raise Interrupted

    mp.setattr(training_mod, "_save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        _run(tmp_path, tmp_path / "grouped")
    mp.undo()
    assert len(saves) == 1 and saves[0].name.startswith("group-")
    return tmp_path, whole


def _reused_files(root: Path) -> dict[str, list[Path]]:
    files = sorted(p for p in (root / "ckpt").rglob("*") if p.is_file())
    kinds = {kind: [p for p in files if p.name.endswith(kind)]
             for kind in (".json", ".head.pt", ".predictions.jsonl")}
    kinds["group .pt"] = [p for p in files if p.name.startswith("group-")]
    return kinds


@pytest.mark.parametrize("kind", [".json", ".head.pt", ".predictions.jsonl", "group .pt"])
def test_any_flipped_bit_of_a_reused_file_is_retrained_to_the_same_record(interrupted, kind, tmp_path, caplog):
    base, whole = interrupted
    source = base / ("grouped" if kind == "group .pt" else "finished")
    victims = _reused_files(source)[kind]
    assert victims, f"no {kind} file to damage"
    rng = random.Random(f"flip {kind}")
    for i in range(FLIPS_PER_KIND):
        root = tmp_path / f"flip{i}"
        shutil.copytree(source / "ckpt", root / "ckpt")
        victim = root / "ckpt" / rng.choice(victims).relative_to(source / "ckpt")
        data = bytearray(victim.read_bytes())
        position = rng.randrange(len(data) * 8)
        data[position // 8] ^= 1 << (position % 8)
        victim.write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rec = _run(base, root)
        _same_record(rec, whole, root / "results", base / "whole" / "results")
        assert str(victim) in caplog.text, f"bit {position} of {victim.name}: not reported"
        assert not (root / "ckpt" / rec.run_key().digest()).exists()


def test_intact_finished_trials_are_reused_as_they_are(interrupted, tmp_path, monkeypatch, caplog):
    base, whole = interrupted
    shutil.copytree(base / "finished" / "ckpt", tmp_path / "ckpt")
    real_jobs = sweep_mod._jobs

    def no_training(plan, setup, source, pending, *args, **kwargs):
        assert pending == [], "an intact finished trial was trained again"
        return real_jobs(plan, setup, source, pending, *args, **kwargs)

    monkeypatch.setattr(sweep_mod, "_jobs", no_training)
    with caplog.at_level(logging.INFO, logger="superbench"):
        rec = _run(base, tmp_path)
    assert caplog.text.count("reusing it") == len(FAST["lr_grid"])
    _same_record(rec, whole, tmp_path / "results", base / "whole" / "results")


# --------------------------------------------------------------------------- two identical runs at once

_RUN_CHILD = """
import logging, sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, scratch_run_options
opts = scratch_run_options(Path({root!r}), overrides={overrides!r})
Path({ready!r}).touch()
while not Path({go!r}).exists():  # start both runs together
    time.sleep(0.01)
(rec,) = run(ToneUpstream(), [get_task("er")], Path({data!r}), opts)
print("artifacts", len(rec.artifacts), flush=True)
"""


def test_two_identical_runs_at_once_end_with_one_complete_record(tmp_path):
    folds = [Fold(f"fold{i}", "train", "dev", "test") for i in range(1, 6)]
    make_class_corpus(tmp_path / "data", task="er", n_classes=3, per_class=(8, 3, 3), folds=folds)
    overrides = {"steps": 200, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}
    go = tmp_path / "go"
    children = []
    for i in range(2):
        code = _RUN_CHILD.format(root=str(tmp_path / "run"), overrides=overrides, ready=str(tmp_path / f"ready{i}"),
                                 go=str(go), data=str(tmp_path / "data"))
        children.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, env=dict(os.environ)))
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
        assert all(c.poll() is None for c in children), [c.communicate()[0] for c in children]
        time.sleep(0.05)
    go.touch()
    outputs = [c.communicate(timeout=600)[0] for c in children]
    assert [c.returncode for c in children] == [0, 0], outputs

    records = sorted((tmp_path / "run" / "results").rglob("*.json"))
    assert len(records) == 1, records
    rec = read_record(records[0])
    expected = {"predictions", *(f"head.{f.name}" for f in folds)}
    assert set(rec.artifacts) == expected, outputs
    paths = artifact_paths(rec, records[0])
    assert all(p.is_file() for p in paths.values())
    rows = [json.loads(line) for line in paths["predictions"].read_text().splitlines()]
    assert sorted({r["fold"] for r in rows}) == [f.name for f in folds]
    assert all("no intact head or predictions" not in out for out in outputs), outputs
    skipped = ["recorded by another run meanwhile" in out or "skipping them" in out for out in outputs]
    assert sorted(skipped) == [False, True], outputs  # one trained, the other waited and found its record
    assert not any(p.is_file() for p in (tmp_path / "run" / "ckpt").rglob("*"))

"""A task's secondary metrics (SF's slot-value CER beside its F1) reach the trials and the record, computed on
the dev-selected head, on the grouped and the one-at-a-time paths; a record naming an undeclared one is refused.
Also: a manifest's sidecar files (SV's trial lists) are part of its fingerprint."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from downstreams import UtteranceClassification
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest
from superbench.records import RecordError, ResultRecord, read_records
from superbench.runner import run
from superbench.tasks import TASKS, SecondaryMetric, Task
from superbench.testing import ToneUpstream, make_class_corpus, scratch_run_options


class ErrorRateObjective:
    """The classification objective plus a secondary metric: the error rate (100 - accuracy)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.metric, self.higher_is_better = inner.metric, inner.higher_is_better

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def secondary_scores(self, targets: list, predictions: list) -> dict[str, float]:
        wrong = sum(t != p for t, p in zip(targets, predictions))
        return {"err": 100.0 * wrong / len(targets)}


class WithErrorRate(UtteranceClassification):
    def setup(self, *args, **kwargs):
        setup = super().setup(*args, **kwargs)
        return dataclasses.replace(setup, objective=ErrorRateObjective(setup.objective))


RECIPE = textwrap.dedent('''
    version: "1"
    task: pitch2
    reference: none (a test task)
    profiles:
      fast:
        description: a few updates
        head: {proj_dim: 16}
        train: {steps: 40, batch_size: 8, lr: 1.0e-2, lr_grid: [1.0e-2, 1.0e-3], eval_interval: 20}
''')


@pytest.fixture
def task(tmp_path):
    (tmp_path / "pitch2.yaml").write_text(RECIPE)
    task = Task(name="pitch2", description="tones with an error rate", metric="acc", higher_is_better=True,
                target="pitch", kind=WithErrorRate(), recipe=tmp_path / "pitch2.yaml",
                secondary_metrics=(SecondaryMetric("err", higher_is_better=False),))
    with TASKS.scoped():
        TASKS.register(task.name, task, source="a test")
        yield task


@pytest.mark.parametrize("grouped", [True, False])
def test_secondary_metric_of_the_selected_head_in_trials_and_record(tmp_path, task, grouped):
    data = tmp_path / "data"
    make_class_corpus(data, task="pitch2", label_field="pitch")
    opts = scratch_run_options(tmp_path / "run", group_trials=grouped)
    (rec,) = run(ToneUpstream(), [task], data, opts)
    # accuracy and error rate come from the same predictions of the same (dev-selected) head
    assert rec.secondary["err"]["test"] == pytest.approx(100 - rec.test, abs=1e-3)
    assert rec.secondary["err"]["dev"] == pytest.approx(100 - rec.dev, abs=1e-3)
    assert len(rec.trials) == 2 and all(t["secondary"]["test"]["err"] == pytest.approx(100 - t["test"], abs=1e-3)
                                        for t in rec.trials)
    (on_disk,) = read_records([opts.paths.results_dir])
    assert on_disk.secondary == rec.secondary


def test_record_refuses_an_undeclared_or_malformed_secondary_metric(task):
    base = ResultRecord(upstream="u", upstream_fingerprint="f", task="pitch2", metric="acc", higher_is_better=True,
                        test=50.0, dev=50.0, seed=0, recipe_version="1", profile="fast")
    base.validate()
    with pytest.raises(RecordError, match="secondary metric 'cer' is not one of task 'pitch2'.s \\(err\\)"):
        dataclasses.replace(base, secondary={"cer": {"dev": 1.0, "test": 2.0}}).validate()
    with pytest.raises(RecordError, match="secondary metric 'err' is .*not \\{'dev'"):
        dataclasses.replace(base, secondary={"err": {"test": 2.0}}).validate()
    with pytest.raises(RecordError, match="secondary test metric is nan"):
        dataclasses.replace(base, secondary={"err": {"dev": 1.0, "test": float("nan")}}).validate()


def test_task_refuses_a_secondary_metric_named_like_its_main_one(tmp_path):
    with pytest.raises(ValueError, match="metric names must be distinct"):
        Task(name="x", description="x", metric="acc", higher_is_better=True, target="label",
             kind=UtteranceClassification(), recipe=tmp_path / "x.yaml",
             secondary_metrics=(SecondaryMetric("acc", higher_is_better=True),))


def test_sidecar_files_are_part_of_the_manifest_fingerprint(tmp_path):
    rows = {s: [{"id": f"{s}{i}", "audio": "a.wav", "sample_rate": 16000, "num_samples": 16000, "label": "x"}
                for i in range(2)] for s in ("train", "dev", "test")}
    plain = write_task_manifest(tmp_path / "plain", task="t", corpus="c", version="1", label_field="label",
                                labels=["x"], splits=rows)
    folder = tmp_path / "with"
    folder.mkdir()
    (folder / "trials_test.txt").write_text("1 test0 test1\n")
    write_task_manifest(folder, task="t", corpus="c", version="1", label_field="label", labels=["x"], splits=rows,
                        sidecars=["trials_test.txt"])
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["sidecars"] == ["trials_test.txt"] and "sidecars" not in json.loads((plain / "meta.json").read_text())
    first = load_task_manifest(folder, check_files=False).fingerprint
    assert first == meta["fingerprint"] != load_task_manifest(plain, check_files=False).fingerprint
    (folder / "trials_test.txt").write_text("0 test0 test1\n")  # the same rows, another trial list
    assert load_task_manifest(folder, check_files=False).fingerprint != first
    (folder / "trials_test.txt").unlink()
    with pytest.raises(ManifestError, match="trials_test.txt: sidecar file named in meta.json is missing"):
        load_task_manifest(folder, check_files=False)

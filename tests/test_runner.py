"""End to end through the runner: records on disk, folds, skip/overwrite, label checks before extraction."""

from __future__ import annotations

import json

import pytest

import superbench.executors as executors
from downstreams import UtteranceHeadConfig
from superbench.manifest import Fold, write_task_manifest
from superbench.recipe import RecipeError, load_recipe
from superbench.records import read_record, record_path
from superbench.registry import UnknownNameError
from superbench.runner import run
from superbench.tasks import get_task, resolve_tasks
from superbench.testing import ToneUpstream, make_class_corpus, make_sequence_corpus, scratch_run_options

FAST = {"steps": 40, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}


def _opts(tmp_path, **kw):
    return scratch_run_options(tmp_path, **{"overrides": dict(FAST), **kw})


def test_ks_run_writes_a_complete_record(tmp_path):
    make_class_corpus(tmp_path, task="ks")
    (rec,) = run(ToneUpstream(), [get_task("ks")], tmp_path, _opts(tmp_path))
    on_disk = read_record(record_path(tmp_path / "results", rec.run_key()))
    assert on_disk.test == rec.test and rec.test > 60
    recipe = get_task("ks").load_recipe("fast")
    assert rec.profile == recipe.with_overrides(FAST).profile_label and rec.profile.startswith("fast+")
    assert rec.recipe_version == recipe.version
    assert rec.lr in FAST["lr_grid"] and len(rec.layer_weights) == 3
    assert [(t["lr"], t["fold"]) for t in rec.trials] == [(lr, "default") for lr in FAST["lr_grid"]]
    chosen = next(t for t in rec.trials if t["lr"] == rec.lr)
    assert [step for step, _ in chosen["history"]] == [20, 40] and chosen["dev"] == rec.dev
    assert max(dev for _, dev in chosen["history"]) == chosen["dev"]  # best dev checkpoint selected
    assert set(rec.wall_time) == {"extraction", "training"}
    assert rec.manifest_fingerprint and rec.upstream_fingerprint == ToneUpstream().fingerprint()


def test_existing_record_is_skipped_unless_overwrite(tmp_path):
    make_class_corpus(tmp_path, task="sid")
    opts = _opts(tmp_path, lr=1e-2)
    (first,) = run(ToneUpstream(), [get_task("sid")], tmp_path, opts)
    path = record_path(tmp_path / "results", first.run_key())
    stamp = path.stat().st_mtime_ns
    (again,) = run(ToneUpstream(), [get_task("sid")], tmp_path, opts)
    assert path.stat().st_mtime_ns == stamp and again.created_at == first.created_at
    opts = opts.replace(overwrite=True)
    run(ToneUpstream(), [get_task("sid")], tmp_path, opts)
    assert path.stat().st_mtime_ns != stamp


def test_er_reports_the_mean_over_folds(tmp_path):
    folds = [Fold("fold1", "train", "dev", "test"), Fold("fold2", "train", "test", "dev")]
    make_class_corpus(tmp_path, task="er", n_classes=4, per_class=(8, 3, 3), folds=folds)
    (rec,) = run(ToneUpstream(), [get_task("er")], tmp_path, _opts(tmp_path, lr=1e-2))
    assert set(rec.folds) == {"fold1", "fold2"}
    assert rec.test == pytest.approx(sum(f["test"] for f in rec.folds.values()) / 2, abs=1e-3)
    assert rec.dev == pytest.approx(sum(f["dev"] for f in rec.folds.values()) / 2, abs=1e-3)


@pytest.mark.parametrize("task", ["pr", "asr"])
def test_ctc_tasks_run_and_beat_the_empty_output(tmp_path, task):
    make_sequence_corpus(tmp_path, task=task)
    overrides = {"steps": 150, "eval_interval": 50, "batch_size": 8, "lr_grid": [3e-2]}
    if task == "asr":
        overrides.update(proj_dim=32, rnn_dims=[32])
    (rec,) = run(ToneUpstream(), [get_task(task)], tmp_path, _opts(tmp_path, overrides=overrides))
    assert rec.metric == ("per" if task == "pr" else "wer")
    assert rec.test < 100.0  # an empty hypothesis scores exactly 100


def test_missing_labels_fail_before_extraction(tmp_path):
    rows = [{"id": "u1", "audio": "x.wav", "sample_rate": 16000, "num_samples": 16000, "text": "HI"}]
    write_task_manifest(tmp_path / "ks", task="ks", corpus="x", version="1", label_field="text", labels=[],
                        splits={"train": rows, "dev": rows, "test": rows})
    (tmp_path / "ks" / "x.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="needs 'label' labels"):
        run(ToneUpstream(), [get_task("ks")], tmp_path, _opts(tmp_path))
    assert not (tmp_path / "cache").exists()


def test_recipe_validation_and_task_lists(builtin_task_names):
    names = [t.name for t in resolve_tasks("all")]
    assert len(names) == len(builtin_task_names) and set(names) == builtin_task_names
    assert names[:6] == ["pr", "ks", "ic", "sid", "er", "asr"]  # SUPERB's order
    with pytest.raises(RecipeError, match="no profile 'huge'; available: superb, fast, ci"):
        get_task("ks").load_recipe("huge")
    with pytest.raises(UnknownNameError, match="unknown task 'qa'"):
        resolve_tasks("ks,qa")
    asr = get_task("asr").load_recipe("superb")
    assert (asr.head.proj_dim, asr.head.rnn_dims, asr.head.dropout) == (1024, (1024, 1024), 0.2)
    assert (asr.train.steps, asr.train.lr, asr.upstream.cmvn) == (200000, 1e-4, None)
    assert get_task("ks").load_recipe("superb").upstream.given() == {"cmvn": False, "gain_db": -3.0}


RECIPE = """version: '1'
profiles:
  fast:
    head: {proj_dim: 8}
    train: {steps: 1, batch_size: 1, lr: 0.1, eval_interval: 1}
"""


@pytest.mark.parametrize(("edit", "error"), [
    (("steps: 1", "stpes: 1"), r"profile 'fast': train: unknown key\(s\) \['stpes'\] \(did you mean 'steps'\?\)"),
    (("head:", "heads:"), r"unknown key\(s\) \['heads'\] \(did you mean 'head'\?\)"),
    (("proj_dim: 8", "proj_dim: 8, rnn_dims: [3]"), r"head: unknown key\(s\) \['rnn_dims'\]"),
    (("steps: 1, ", ""), r"train: missing required key\(s\) \['steps'\]"),
    (("batch_size: 1", "batch_size: 0"), r"train: batch_size must be a positive integer, got 0"),
    (("lr: 0.1", "lr: fast"), r"train.lr must be a number, got 'fast'"),
    (("version: '1'", "verison: '1'"), r"unknown top-level key\(s\) \['verison'\] \(did you mean 'version'\?\)"),
])
def test_recipe_mistakes_are_clear_errors_before_any_work(tmp_path, edit, error):
    path = tmp_path / "ks.yaml"
    path.write_text(RECIPE.replace(*edit))
    with pytest.raises(RecipeError, match=error):
        load_recipe(path, "fast", task="ks", head_config=UtteranceHeadConfig)
    path.write_text(RECIPE)
    good = load_recipe(path, "fast", task="ks", head_config=UtteranceHeadConfig)
    assert (good.head.proj_dim, good.train.steps, good.train.lr) == (8, 1, 0.1)


def test_overrides_are_validated_and_change_the_profile_label():
    recipe = get_task("asr").load_recipe("fast")
    over = recipe.with_overrides({"train.steps": 7, "proj_dim": 16})
    assert (over.train.steps, over.head.proj_dim, over.head.rnn_dims) == (7, 16, recipe.head.rnn_dims)
    assert over.profile_label.startswith("fast+") and over.profile_label != recipe.profile_label
    assert over.profile_label == recipe.with_overrides({"proj_dim": 16, "steps": 7}).profile_label
    assert over.profile_label != recipe.with_overrides({"train.steps": 8, "proj_dim": 16}).profile_label
    with pytest.raises(RecipeError, match=r"unknown recipe override 'train.stesp' \(did you mean 'train.steps'\?\)"):
        recipe.with_overrides({"train.stesp": 3})
    with pytest.raises(RecipeError, match="train: steps must be a positive integer"):
        recipe.with_overrides({"steps": -1})


def test_cli_tasks_list_and_run_help(capsys):
    from superbench.cli import main

    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert "asr" in out and "wer" in out and "lower is better" in out and "frame" in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "--no-cache" in help_text
    import re

    from superbench.upstream import UPSTREAMS

    named = [n for n in re.findall(r"run --upstream (\S+)", help_text) if ":" not in n]
    assert named and all(n in UPSTREAMS for n in named)  # the examples name real upstreams


class Interrupted(Exception):
    pass


class CountingObjective:
    """Wraps the runner's objective: counts training losses and can die after `limit`, like a kill."""

    def __init__(self, objective, limit=None):
        self.objective, self.limit, self.calls = objective, limit, 0

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def loss(self, *args):
        self.calls += 1
        if self.limit is not None and self.calls > self.limit:
            raise Interrupted
        return self.objective.loss(*args)


def test_interrupted_run_keeps_finished_trials_and_resumes_the_running_one(tmp_path, monkeypatch):

    make_class_corpus(tmp_path, task="ks")
    (whole,) = run(ToneUpstream(), [get_task("ks")], tmp_path,  # trials one at a time (see test_trial_group)
                        _opts(tmp_path, results_dir=tmp_path / "a", checkpoint_root=tmp_path / "ckpt-a",
                              group_trials=False))
    real_train, seen = executors.train, []

    def train_dying_in_the_second_trial(make_head, objective, *args, **kw):
        seen.append(CountingObjective(objective, limit=30 if len(seen) == 1 else None))
        return real_train(make_head, seen[-1], *args, **kw)

    monkeypatch.setattr(executors, "train", train_dying_in_the_second_trial)
    opts = _opts(tmp_path, results_dir=tmp_path / "b", checkpoint_root=tmp_path / "ckpt-b", group_trials=False)
    with pytest.raises(Interrupted):  # lr 1e-3 finished; lr 1e-2 dies in step 31 (state saved at 20)
        run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    partial = tmp_path / "ckpt-b" / whole.run_key().digest()
    assert sorted(p.name for p in partial.iterdir()) == ["lr0.001-default.head.pt", "lr0.001-default.json",
                                                         "lr0.001-default.predictions.jsonl", "lr0.01-default.pt"]

    rerun = []

    def train_counting(make_head, objective, *args, **kw):
        rerun.append(CountingObjective(objective))
        return real_train(make_head, rerun[-1], *args, **kw)

    monkeypatch.setattr(executors, "train", train_counting)
    (resumed,) = run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    assert len(rerun) == 1 and rerun[0].calls == 20  # only lr 1e-2, steps 21..40, was trained
    assert (resumed.test, resumed.dev, resumed.lr, resumed.layer_weights) == \
        (whole.test, whole.dev, whole.lr, whole.layer_weights)
    assert not partial.exists()  # cleared once the record is written


@pytest.mark.parametrize(("task", "field", "bad", "shown"), [
    ("ks", "label", "c9", "dev.jsonl id='dev-0-1': 'c9'"),
    ("pr", "phones", "a zz b qq", "dev.jsonl id='dev-1': ['qq', 'zz']"),
])
def test_labels_outside_the_inventory_fail_before_extraction(tmp_path, task, field, bad, shown):
    from superbench.manifest import ManifestError

    task_dir = make_class_corpus(tmp_path, task=task, label_field=field) if task == "ks" else \
        make_sequence_corpus(tmp_path, task=task)
    rows = {s: [json.loads(x) for x in (task_dir / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "dev", "test")}
    rows["dev"][1][field] = bad
    meta = json.loads((task_dir / "meta.json").read_text())
    write_task_manifest(task_dir, task=task, corpus="tones", version="1", label_field=field, labels=meta["labels"],
                        splits=rows)
    with pytest.raises(ManifestError, match=r"1 row\(s\) with labels outside the inventory") as err:
        run(ToneUpstream(), [get_task(task)], tmp_path, _opts(tmp_path))
    assert shown in str(err.value)
    assert not (tmp_path / "cache").exists()

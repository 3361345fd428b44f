"""What a record keeps beside it (best head, predictions), which features it scored, and `run --set`."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import superbench.executors as executors
from superbench.cli import main
from superbench.manifest import Fold, load_task_manifest
from superbench.records import artifact_paths, read_record, read_records, record_path
from superbench.runner import extract, run
from superbench.task_plan import plan_task
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, make_sequence_corpus, scratch_run_options
from superbench.training import evaluate
from superbench.upstream import load_upstream

FAST = {"steps": 40, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}


def _opts(tmp_path, **kw):
    return scratch_run_options(tmp_path, **{"overrides": dict(FAST), **kw})


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _artifacts(tmp_path, rec):
    path = record_path(tmp_path / "results", rec.run_key())
    assert read_record(path).artifacts == rec.artifacts
    files = artifact_paths(rec, path)
    assert all(p.is_file() and p.parent == path.parent and p.name.startswith(path.stem + ".") for p in files.values())
    return files


def test_ks_record_keeps_its_best_head_and_predictions(tmp_path):
    make_class_corpus(tmp_path, task="ks")
    upstream = ToneUpstream()
    opts = _opts(tmp_path)
    (rec,) = run(upstream, [get_task("ks")], tmp_path, opts)
    files = _artifacts(tmp_path, rec)
    assert set(rec.artifacts) == {"head", "predictions"}
    assert rec.artifacts["head"].endswith(".head.pt") and rec.artifacts["predictions"].endswith(".predictions.jsonl")

    manifest = load_task_manifest(tmp_path / "ks")
    rows = _rows(files["predictions"])
    dev, test = manifest.splits["dev"], manifest.splits["test"]
    assert len(rows) == len(dev) + len(test)
    assert [(r["split"], r["id"]) for r in rows] == [("dev", u.id) for u in dev] + [("test", u.id) for u in test]
    assert [r["reference"] for r in rows] == [u.targets["label"] for u in dev + test]
    assert all(r["prediction"] in manifest.labels and r["correct"] == int(r["prediction"] == r["reference"])
               and r["fold"] == "default" for r in rows)
    test_rows = [r for r in rows if r["split"] == "test"]
    assert 100 * sum(r["correct"] for r in test_rows) / len(test_rows) == pytest.approx(rec.test, abs=1e-3)
    dev_rows = [r for r in rows if r["split"] == "dev"]
    assert 100 * sum(r["correct"] for r in dev_rows) / len(dev_rows) == pytest.approx(rec.dev, abs=1e-3)

    # the saved head reloads into a fresh head of the same shape and predicts the same
    plan = plan_task(upstream, get_task("ks"), tmp_path, opts)
    setup = plan.task.kind.setup(plan.task, plan.manifest, plan.recipe.head, plan.upstream.num_layers,
                                 plan.upstream.hidden_size, plan.layer)
    head = setup.make_head()
    head.load_state_dict(torch.load(files["head"], weights_only=True))
    source, _ = extract(plan, opts)
    _, predicted = evaluate(head, setup.objective, source, [u.id for u in test], [setup.target_of(u) for u in test])
    assert [manifest.labels[i] for i in predicted] == [r["prediction"] for r in test_rows]
    assert head.featurizer.normalized_weights().detach().tolist() == pytest.approx(rec.layer_weights, abs=1e-5)


def test_multi_fold_record_keeps_one_head_per_fold(tmp_path):
    folds = [Fold("fold1", "train", "dev", "test"), Fold("fold2", "train", "test", "dev")]
    task_dir = make_class_corpus(tmp_path, task="er", n_classes=4, per_class=(8, 3, 3), folds=folds)
    splits = {s: [json.loads(x) for x in (task_dir / f"{s}.jsonl").read_text().splitlines()]
              for s in ("train", "dev", "test")}
    (rec,) = run(ToneUpstream(), [get_task("er")], tmp_path, _opts(tmp_path, lr=1e-2))
    files = _artifacts(tmp_path, rec)
    assert set(rec.artifacts) == {"head.fold1", "head.fold2", "predictions"}
    assert files["head.fold1"].name.endswith(".fold1.head.pt") and files["head.fold1"] != files["head.fold2"]
    rows = _rows(files["predictions"])
    assert len(rows) == 2 * (len(splits["dev"]) + len(splits["test"]))
    for fold in folds:
        mine = [r for r in rows if r["fold"] == fold.name]
        assert [r["manifest_split"] for r in mine if r["split"] == "test"] == [fold.test] * len(splits[fold.test])
        test_rows = [r for r in mine if r["split"] == "test"]
        assert 100 * sum(r["correct"] for r in test_rows) / len(test_rows) == \
            pytest.approx(rec.folds[fold.name]["test"], abs=1e-3)
    heads = [torch.load(files[f"head.{f.name}"], weights_only=True) for f in folds]
    assert heads[0].keys() == heads[1].keys()


@pytest.mark.parametrize("task", ["pr", "asr"])
def test_ctc_record_keeps_decoded_predictions_with_edit_counts(tmp_path, task):
    make_sequence_corpus(tmp_path, task=task)
    overrides = {"steps": 60, "eval_interval": 30, "batch_size": 4, "lr_grid": [1e-2]}
    (rec,) = run(ToneUpstream(), [get_task(task)], tmp_path, _opts(tmp_path, overrides=overrides))
    files = _artifacts(tmp_path, rec)
    manifest = load_task_manifest(tmp_path / task)
    field = "phones" if task == "pr" else "text"
    rows = _rows(files["predictions"])
    expected = manifest.splits["dev"] + manifest.splits["test"]
    assert [r["id"] for r in rows] == [u.id for u in expected]
    assert [r["reference"] for r in rows] == [" ".join(u.targets[field].split()) for u in expected]
    assert all(isinstance(r["prediction"], str) and r["ref_tokens"] == len(r["reference"].split()) for r in rows)
    test_rows = [r for r in rows if r["split"] == "test"]
    error_rate = 100 * sum(r["errors"] for r in test_rows) / sum(r["ref_tokens"] for r in test_rows)
    assert error_rate == pytest.approx(rec.test, abs=1e-3)
    assert isinstance(torch.load(files["head"], weights_only=True), dict)


def test_artifacts_survive_an_interruption_and_resume(tmp_path, monkeypatch):

    make_class_corpus(tmp_path, task="ks")  # one trial at a time: a trial that dies after another finished
    (whole,) = run(ToneUpstream(), [get_task("ks")], tmp_path,
                        _opts(tmp_path, results_dir=tmp_path / "a", checkpoint_root=tmp_path / "ckpt-a",
                              group_trials=False))
    real_train, calls = executors.train, []

    class Interrupted(Exception):
        pass

    def dying_in_the_second_trial(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real_train(*args, **kw)

    monkeypatch.setattr(executors, "train", dying_in_the_second_trial)
    opts = _opts(tmp_path, results_dir=tmp_path / "b", checkpoint_root=tmp_path / "ckpt-b", group_trials=False)
    with pytest.raises(Interrupted):
        run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    monkeypatch.setattr(executors, "train", real_train)
    (resumed,) = run(ToneUpstream(), [get_task("ks")], tmp_path, opts)  # lr 1e-3 comes from disk
    assert (resumed.test, resumed.dev, resumed.lr) == (whole.test, whole.dev, whole.lr)
    a = artifact_paths(whole, record_path(tmp_path / "a", whole.run_key()))
    b = artifact_paths(resumed, record_path(tmp_path / "b", resumed.run_key()))
    assert set(a) == set(b) == {"head", "predictions"}
    assert a["predictions"].read_text() == b["predictions"].read_text()
    sa, sb = (torch.load(x["head"], weights_only=True) for x in (a, b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_finished_trial_without_its_head_is_trained_again(tmp_path, monkeypatch):
    import superbench.runner as runner

    make_class_corpus(tmp_path, task="ks")
    opts = _opts(tmp_path, lr=1e-2, overwrite=False, group_trials=False)
    real_train, calls = executors.train, []

    class Interrupted(Exception):
        pass

    def record_dies(*args, **kw):
        raise Interrupted

    monkeypatch.setattr(runner, "record", record_dies)
    with pytest.raises(Interrupted):
        run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    (head,) = (tmp_path / "ckpt").rglob("*.head.pt")
    head.unlink()  # e.g. a trial folder written by an older version
    monkeypatch.undo()

    def counting(*args, **kw):
        calls.append(1)
        return real_train(*args, **kw)

    monkeypatch.setattr(executors, "train", counting)
    (rec,) = run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    assert len(calls) == 1 and set(rec.artifacts) == {"head", "predictions"}


def test_features_fingerprint_names_the_variant_that_ran(tmp_path):
    make_class_corpus(tmp_path, task="ks", per_class=(6, 2, 2))
    opts = _opts(tmp_path, lr=1e-2, overrides={"steps": 4, "eval_interval": 2, "batch_size": 4})
    fbank = load_upstream("fbank")
    (rec,) = run(fbank, [get_task("ks")], tmp_path, opts)
    assert rec.upstream_fingerprint == fbank.fingerprint()  # the model chosen: the run identity
    assert rec.features_fingerprint == fbank.variant(cmvn=False).fingerprint() != rec.upstream_fingerprint
    (tone,) = run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    assert tone.features_fingerprint == tone.upstream_fingerprint == ToneUpstream().fingerprint()
    assert tone.upstream_source == "" and tone.overrides == {"train.steps": 4, "train.eval_interval": 2,
                                                             "train.batch_size": 4}


def test_upstream_source_is_recorded(tmp_path):
    make_class_corpus(tmp_path, task="ks", per_class=(6, 2, 2))
    opts = _opts(tmp_path, lr=1e-2, overrides={"steps": 2, "eval_interval": 2, "batch_size": 4},
                 upstream_source="/models/my-hubert")
    (rec,) = run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    assert read_record(record_path(tmp_path / "results", rec.run_key())).upstream_source == "/models/my-hubert"
    up = ToneUpstream()
    up.source = "/weights/tone.pt"
    (rec,) = run(up, [get_task("ks")], tmp_path, _opts(tmp_path, lr=1e-2, overwrite=True, overrides={
        "steps": 2, "eval_interval": 2, "batch_size": 4}))
    assert rec.upstream_source == "/weights/tone.pt"


@pytest.mark.slow
def test_cli_set_overrides_the_recipe_end_to_end(tmp_path):
    make_class_corpus(tmp_path / "data", task="ks", per_class=(6, 2, 2))
    results = tmp_path / "results"
    code = main(["run", "--upstream", "fbank", "--task", "ks", "--data", str(tmp_path / "data"), "--profile", "fast",
                 "--results", str(results), "--no-store", "--no-progress", "--no-lr-sweep",
                 "--set", "train.steps=6", "--set", "eval_interval=3", "--set", "train.lr=1e-3",
                 "--set", "head.proj_dim=16", "--set", "train.lr_grid=[1e-3, 1e-2]"])
    assert code == 0
    (rec,) = read_records([results])
    assert rec.overrides == {"train.steps": 6, "train.eval_interval": 3, "train.lr": 0.001, "head.proj_dim": 16,
                             "train.lr_grid": [0.001, 0.01]}
    recipe = get_task("ks").load_recipe("fast").with_overrides(rec.overrides)
    assert rec.profile == recipe.profile_label and rec.profile.startswith("fast+")
    assert rec.steps == 6 and rec.lr == 1e-3 and [t["lr"] for t in rec.trials] == [1e-3]
    head = torch.load(artifact_paths(rec, record_path(results, rec.run_key()))["head"], weights_only=True)
    assert head["projector.weight"].shape[0] == 16  # head.proj_dim=16 reached the head


@pytest.mark.parametrize(("arg", "shown"), [
    ("train.stpes=5", "did you mean 'train.steps'"),
    ("train.steps=many", "must be an integer"),
])
def test_cli_bad_set_is_a_usage_error_before_any_work(tmp_path, caplog, arg, shown):
    with caplog.at_level(logging.ERROR):
        code = main(["run", "--upstream", "fbank", "--task", "ks", "--data", str(tmp_path / "nowhere"),
                     "--no-store", "--set", arg])
    assert code == 2 and shown in caplog.text
    assert "data root" not in caplog.text  # refused before the data is looked at


def test_cli_set_needs_key_and_value(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--upstream", "fbank", "--task", "ks", "--set", "train.steps"])
    assert exc.value.code == 2 and "section.key=value" in capsys.readouterr().err

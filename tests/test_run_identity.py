"""One run identity: any change of profile, recipe version, layer, corpus or weights is a new record, never the
old one; an identical rerun is skipped; first-layout records are found and migrated; exit codes tell usage
errors from runtime failures."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import pytest
import torch

import superbench.executors as executors
from superbench.cli import main
from superbench.exit_codes import ExitCode
from superbench.records import read_record, read_records, record_path
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, scratch_run_options

SMALL = {"steps": 20, "eval_interval": 10, "batch_size": 8, "lr_grid": [1e-2]}


@pytest.fixture
def trained(monkeypatch):
    """Counts the heads trained (a skipped run trains none)."""
    calls = []
    real, real_group = executors.train, executors.train_group

    def counting(*args, **kw):
        calls.append(kw.get("desc"))
        return real(*args, **kw)

    def counting_group(make_head, stack, objective, source, trials, **kw):
        calls.extend(t.desc for t in trials)
        return real_group(make_head, stack, objective, source, trials, **kw)

    monkeypatch.setattr(executors, "train", counting)
    monkeypatch.setattr(executors, "train_group", counting_group)
    return calls


def _opts(tmp_path, **kw):
    return scratch_run_options(tmp_path, **{"overrides": dict(SMALL), **kw})


def test_any_change_of_identity_is_a_new_record_and_a_rerun_is_skipped(tmp_path, trained):
    make_class_corpus(tmp_path / "a", task="ks")
    make_class_corpus(tmp_path / "b", task="ks", seed=1)  # another corpus, same layout and labels
    ks = get_task("ks")
    (first,) = run(ToneUpstream(), [ks], tmp_path / "a", _opts(tmp_path))
    assert len(trained) == 1

    (again,) = run(ToneUpstream(), [ks], tmp_path / "a", _opts(tmp_path))
    assert len(trained) == 1 and again == first  # identical identity: skipped, the stored record returned

    v2 = tmp_path / "ks-v2.yaml"
    v2.write_text(re.sub(r'(?m)^version: .*$', 'version: "99"', ks.recipe.read_text()))
    heavier = ToneUpstream()
    with torch.no_grad():
        heavier.proj.weight.mul_(2.0)  # same name, other weights
    variants = {
        "profile": (ToneUpstream(), ks, tmp_path / "a", _opts(tmp_path, profile="ci")),
        "overrides": (ToneUpstream(), ks, tmp_path / "a", _opts(tmp_path, overrides={**SMALL, "steps": 21})),
        "recipe version": (ToneUpstream(), dataclasses.replace(ks, recipe=v2), tmp_path / "a", _opts(tmp_path)),
        "layer": (ToneUpstream(), ks, tmp_path / "a", _opts(tmp_path, layer=0)),
        "corpus": (ToneUpstream(), ks, tmp_path / "b", _opts(tmp_path)),
        "weights": (heavier, ks, tmp_path / "a", _opts(tmp_path)),
    }
    field_of = {"profile": "profile", "overrides": "profile", "recipe version": "recipe_version", "layer": "layer",
                "corpus": "data", "weights": "upstream_fingerprint"}
    keys = {first.run_key()}
    for what, (upstream, task, data, opts) in variants.items():
        before = len(trained)
        (rec,) = run(upstream, [task], data, opts)
        assert len(trained) == before + 1, f"{what}: the old record came back instead of a new run"
        key = rec.run_key()
        assert getattr(key, field_of[what]) != getattr(first.run_key(), field_of[what]), what
        assert key not in keys and rec.upstream == first.upstream == "tone-test", what
        assert read_record(record_path(tmp_path / "results", key)) == rec
        keys.add(key)
    assert len(keys) == 7
    assert len(read_records([tmp_path / "results"])) == 7  # nothing overwritten
    assert read_record(record_path(tmp_path / "results", first.run_key())) == first  # the first is untouched


def test_pr_and_asr_over_the_same_audio_extract_once(tmp_path):
    """The frame cache is keyed by audio: ASR after PR on the same files runs no upstream forward."""
    from superbench.testing import make_sequence_corpus

    counter = tmp_path / "forwards.txt"
    make_sequence_corpus(tmp_path, task="pr")
    pr_rows = [json.loads(x) for x in (tmp_path / "pr" / "train.jsonl").read_text().splitlines()]
    assert pr_rows
    from superbench.manifest import write_task_manifest

    splits = {}
    for split in ("train", "dev", "test"):
        rows = [json.loads(x) for x in (tmp_path / "pr" / f"{split}.jsonl").read_text().splitlines()]
        splits[split] = [{**{k: v for k, v in r.items() if k != "phones"}, "audio": f"../pr/{r['audio']}",
                          "text": r["phones"].upper().replace(" ", "")} for r in rows]
    write_task_manifest(tmp_path / "asr", task="asr", corpus="tones", version="1", label_field="text", labels=[],
                        splits=splits)
    opts = _opts(tmp_path, overrides={"steps": 4, "eval_interval": 2, "batch_size": 4, "lr_grid": [1e-2],
                                      "proj_dim": 8})
    run(ToneUpstream(counter=str(counter)), [get_task("pr")], tmp_path, opts)
    after_pr = sum(int(x) for x in counter.read_text().split())
    (rec,) = run(ToneUpstream(counter=str(counter)), [get_task("asr")], tmp_path,
                      opts.replace(overrides={**opts.identity.overrides, "rnn_dims": [8]}))
    assert after_pr == sum(len(r) for r in splits.values())  # every utterance once
    assert sum(int(x) for x in counter.read_text().split()) == after_pr  # and ASR forwarded nothing
    assert rec.wall_time["extraction"] < 5


def test_first_layout_records_are_reported_and_migrated(tmp_path, trained, caplog):
    make_class_corpus(tmp_path / "a", task="ks")
    (rec,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path))
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    (old_dir / "tone-test__ks__seed0.json").write_text(
        record_path(tmp_path / "results", rec.run_key()).read_text())
    with caplog.at_level(logging.WARNING, logger="superbench.runner"):
        run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path, results_dir=old_dir))
    assert len(trained) == 2  # not skipped on the strength of an old-layout file...
    assert "1 record(s) in the first layout" in caplog.text and "superbench results migrate" in caplog.text
    (tmp_path / "old2").mkdir()
    (tmp_path / "old2" / "tone-test__ks__seed0.json").write_text(
        record_path(tmp_path / "results", rec.run_key()).read_text())
    assert main(["results", "migrate", "--results", str(tmp_path / "old2")]) == ExitCode.OK
    assert not list((tmp_path / "old2").glob("*.json"))
    assert read_record(record_path(tmp_path / "old2", rec.run_key())) == rec
    run(ToneUpstream(), [get_task("ks")], tmp_path / "a", _opts(tmp_path, results_dir=tmp_path / "old2"))
    assert len(trained) == 2  # ...but skipped once migrated


def test_exit_codes_tell_usage_errors_from_runtime_failures(tmp_path, caplog):
    make_class_corpus(tmp_path, task="ks")
    (tmp_path / "nan_up.py").write_text(
        "from superbench.testing import ToneUpstream\n\n"
        "class NanTones(ToneUpstream):\n"
        "    def __init__(self, path=None):\n"
        "        super().__init__(nan_layer=1)\n")
    common = ["--data", str(tmp_path), "--results", str(tmp_path / "r"), "--no-store", "--no-progress",
              "--profile", "ci"]
    assert main(["run", "--upstream", "fbank", "--task", "kss", *common]) == ExitCode.USAGE == 2
    assert main(["run", "--upstream", f"{tmp_path / 'nan_up.py'}:NanTones", "--task", "ks", *common]) \
        == ExitCode.RUNTIME == 3
    assert "error: unknown task 'kss'; did you mean 'ss', 'ks'?" in caplog.text
    assert "failed: tone-test: NaN/Inf features in layer(s) [1]" in caplog.text


def test_on_record_sees_new_and_found_records_so_a_store_catches_up(tmp_path, trained):
    make_class_corpus(tmp_path / "a", task="sid")
    seen = []
    opts = _opts(tmp_path, seeds=2, on_record=seen.append)
    first = run(ToneUpstream(), [get_task("sid")], tmp_path / "a", opts)
    assert [r.seed for r in seen] == [0, 1] and len(trained) == 2
    again = run(ToneUpstream(), [get_task("sid")], tmp_path / "a", opts)
    assert len(trained) == 2 and again == first and seen[2:] == first  # skipped, yet handed on again

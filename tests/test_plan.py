"""`superbench plan` / the plan `run` logs: numbers that match what extraction then writes, nothing extracted."""

from __future__ import annotations

import json

import pytest
import torch

from superbench.cache import audio_keys, extract_features, feature_bytes
from superbench.cli import main
from superbench.manifest import load_task_manifest, write_task_manifest
from superbench.plan import estimate_run, format_plan
from superbench.runner import plan_run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, make_sequence_corpus, scratch_run_options


def test_plan_counts_what_extraction_then_writes(tmp_path):
    make_class_corpus(tmp_path, task="ks")
    make_sequence_corpus(tmp_path, task="pr")
    up, opts = ToneUpstream(), scratch_run_options(tmp_path, lr=1e-2, seeds=2)
    tasks = [get_task("ks"), get_task("pr")]
    estimate = estimate_run(plan_run(up, tasks, tmp_path, opts), opts)
    ks, pr = estimate.tasks
    for t, name in ((ks, "ks"), (pr, "pr")):
        m = load_task_manifest(tmp_path / name)
        assert t.utterances == len(m.utterances()) == t.to_extract
        assert t.hours == pytest.approx(sum(u.num_samples for u in m.utterances()) / 16000 / 3600)
        assert t.trials == 1 * 2 * 1 and t.updates == get_task(name).load_recipe("fast").train.steps
        cache = extract_features(up, m, t.level, root=tmp_path / "cache", progress=False)
        assert t.cache_bytes == cache.nbytes  # the estimate is the cache's own byte count
    assert ks.cache_bytes == ks.utterances * up.num_layers * up.hidden_size * 4 and ks.cache_bytes_int8 is None
    frames = sum(int(up.num_frames(torch.tensor([u.num_samples]))[0])
                 for u in load_task_manifest(tmp_path / "pr").utterances())
    values = up.num_layers * up.hidden_size
    assert pr.cache_bytes_int8 == frames * values + pr.utterances * values * 4 < pr.cache_bytes
    assert estimate.probe_rate is not None and estimate.probe_rate > 0
    assert all(t.extraction_seconds is not None and t.extraction_seconds > 0 for t in (ks, pr))
    again = estimate_run(plan_run(up, tasks, tmp_path, opts), opts)  # everything cached now
    assert [(t.to_extract, t.cache_bytes, t.extraction_seconds) for t in again.tasks] == [(0, 0, None)] * 2
    assert again.probe_rate is None and "nothing to extract" in format_plan(again)


def test_cache_bytes_by_hand():
    up = ToneUpstream()  # 400-sample window, 160-sample hop: 98 frames in one second
    assert feature_bytes(up, 16000, "frame") == 98 * up.num_layers * up.hidden_size * 2
    assert feature_bytes(up, 16000, "utterance", "int8") == up.num_layers * up.hidden_size * 4
    values = up.num_layers * up.hidden_size
    assert feature_bytes(up, 16000, "frame", "int8") == 98 * values + 4 * values  # + a float32 scale per value


def test_a_large_manifest_of_repeated_audio_plans_its_distinct_audio(tmp_path):
    make_class_corpus(tmp_path / "small", task="ks")
    m = load_task_manifest(tmp_path / "small" / "ks")
    rows = {split: [] for split in ("train", "dev", "test")}
    for split, utts in m.splits.items():
        for copy in range(200 if split == "train" else 20):
            rows[split] += [{"id": f"{u.id}-{copy}", "audio": u.audio, "sample_rate": u.sample_rate,
                             "num_samples": u.num_samples, "speaker": u.speaker, "label": u.label} for u in utts]
    write_task_manifest(tmp_path / "big" / "ks", task="ks", corpus="tones-x200", version="1", label_field="label",
                        labels=m.labels, splits=rows)
    opts = scratch_run_options(tmp_path)
    (t,) = estimate_run(plan_run(ToneUpstream(), [get_task("ks")], tmp_path / "big", opts), opts,
                        probe=False).tasks
    assert t.utterances == 200 * 36 + 2 * 20 * 12
    assert t.to_extract == len(m.utterances()) == 60  # the cache extracts each audio file once
    assert t.distinct_hours == pytest.approx(sum(u.duration for u in m.utterances()) / 3600)
    assert t.hours > 100 * t.distinct_hours and t.extraction_seconds is None


def test_plan_command_prints_the_table_and_extracts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SUPERBENCH_HOME", str(tmp_path / "home"))
    make_class_corpus(tmp_path / "data", task="ks")
    assert main(["plan", "--upstream", "fbank", "--task", "ks", "--data", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: fbank on cpu (fp32); probe: ")
    header, row = out.splitlines()[1:3]
    assert header.split()[:4] == ["task", "level", "utts", "hours"]
    assert row.split()[:3] == ["ks", "utterance", "60"]
    assert not (tmp_path / "home" / "features").exists() and not (tmp_path / "home" / "results").exists()
    assert json.loads((tmp_path / "data" / "ks" / "meta.json").read_text())["task"] == "ks"
    assert main(["plan", "--upstream", "fbank", "--task", "ks", "--data", str(tmp_path / "data"),
                 "--device", "cuda:7"]) == 2
    assert audio_keys(load_task_manifest(tmp_path / "data" / "ks"))  # the corpus is intact

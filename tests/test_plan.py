"""`superbench plan` / the plan `run` logs: numbers that match what extraction then writes, nothing extracted."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from superbench.cli import main
from superbench.device import Compute
from superbench.features.extraction import (
    DEFAULT_BATCH_SAMPLES,
    DEFAULT_CHUNK_BYTES,
    extract_features,
    feature_bytes,
    plan_chunks,
)
from superbench.features.keys import audio_keys
from superbench.manifest import load_task_manifest, write_task_manifest
from superbench.plan import estimate_run, format_plan, probe_extraction, spread_order
from superbench.runner import plan_run
from superbench.tasks import get_task
from superbench.testing import (
    SR,
    ToneUpstream,
    chirp_wavs,
    make_class_corpus,
    make_sequence_corpus,
    scratch_run_options,
)


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
    assert set(estimate.probes) == {"utterance", "frame"} and all(p.rate > 0 for p in estimate.probes.values())
    assert all(t.extraction_seconds is not None and t.extraction_seconds > 0 for t in (ks, pr))
    again = estimate_run(plan_run(up, tasks, tmp_path, opts), opts)  # everything cached now
    assert [(t.to_extract, t.cache_bytes, t.extraction_seconds) for t in again.tasks] == [(0, 0, None)] * 2
    assert not again.probes and "nothing to extract" in format_plan(again)


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
    assert out.startswith("plan: fbank on cpu (fp32), ") and "; probe (utterance): " in out.splitlines()[0]
    header, row = out.splitlines()[1:3]
    assert header.split()[:4] == ["task", "level", "utts", "hours"]
    assert row.split()[:3] == ["ks", "utterance", "60"]
    assert not (tmp_path / "home" / "features").exists() and not (tmp_path / "home" / "results").exists()
    assert json.loads((tmp_path / "data" / "ks" / "meta.json").read_text())["task"] == "ks"
    assert main(["plan", "--upstream", "fbank", "--task", "ks", "--data", str(tmp_path / "data"),
                 "--device", "cuda:7"]) == 2
    assert audio_keys(load_task_manifest(tmp_path / "data" / "ks"))  # the corpus is intact


class CostedUpstream(ToneUpstream):
    """ToneUpstream on a fake clock: each forward costs `per_sample` seconds per (unpadded) sample, the first
    one `first` seconds more; it records the batch shape, torch threads and CPU autocast dtype of every call."""

    def __init__(self, per_sample: float = 1e-5, first: float = 1000.0) -> None:
        super().__init__()
        self.per_sample, self.first, self.now, self.calls = per_sample, first, 0.0, []

    def _forward(self, wavs, wav_lengths):
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        self.calls.append((tuple(wavs.shape), torch.get_num_threads(), autocast))
        self.now += (self.first if len(self.calls) == 1 else 0.0) + self.per_sample * int(wav_lengths.sum())
        return super()._forward(wavs.float(), wav_lengths)

    def clock(self) -> float:
        return self.now


def two_second_corpus(root, n: int = 200) -> list:
    """`n` utterances of 1.5-2.5 s (32 to a 64-s batch, two batches to a 64-utterance chunk)."""
    lengths = [int(SR * (1.5 + (k % 11) / 10)) for k in range(n)]
    rows = []
    for k, wav in enumerate(chirp_wavs(lengths)):
        (root / "ks" / "wav").mkdir(parents=True, exist_ok=True)
        sf.write(root / "ks" / "wav" / f"{k}.wav", wav, SR)
        rows.append({"id": f"u{k}", "audio": f"wav/{k}.wav", "sample_rate": SR, "num_samples": len(wav),
                     "speaker": "s", "label": "a"})
    write_task_manifest(root / "ks", task="ks", corpus="chirps", version="1", label_field="label", labels=["a"],
                        splits={"train": rows[:-2], "dev": rows[-2:-1], "test": rows[-1:]})
    return load_task_manifest(root / "ks").utterances()


def test_spread_order_visits_every_index_once_and_spreads_each_prefix():
    assert spread_order(1) == [0] and spread_order(2) == [0, 1]
    assert spread_order(5) == [0, 4, 2, 1, 3]
    assert sorted(spread_order(100)) == list(range(100))
    assert max(spread_order(100)[:4]) >= 75  # four chunks already reach the short end of the plan


def test_probe_discards_the_warm_up_and_rates_timed_audio_over_timed_wall(tmp_path):
    utts = two_second_corpus(tmp_path)
    up = CostedUpstream(per_sample=1e-5)  # 0.16 s of wall per s of audio: a rate of 6.25, whatever the padding
    probe = probe_extraction(up, utts, "utterance", Compute(), clock=up.clock, max_audio=1e9, max_wall=1e9,
                             workdir=tmp_path)
    chunks = plan_chunks(up, utts, "utterance", DEFAULT_BATCH_SAMPLES, DEFAULT_CHUNK_BYTES)
    assert len(chunks) > 2 and probe.chunks == len(chunks)  # no limit reached: every chunk timed once
    assert probe.audio_seconds == pytest.approx(sum(u.duration for u in utts))
    assert probe.wall_seconds == pytest.approx(1e-5 * sum(u.num_samples for u in utts))  # the 1000 s not in it
    assert probe.rate == pytest.approx(6.25)
    # the warm-up is the first batch of the first chunk; then the real extraction's batches, chunk by chunk
    length = {u.id: u.num_samples for u in utts}
    batches = [b for i in spread_order(len(chunks)) for b in chunks[i]]
    expected = [(len(b), max(length[i] for i in b)) for b in [batches[0], *batches]]
    assert [shape for shape, _, _ in up.calls] == expected
    assert list(tmp_path.glob(".plan-probe-*")) == []  # the scratch folder is gone


def test_probe_stops_at_its_audio_or_wall_limit(tmp_path):
    utts = two_second_corpus(tmp_path)
    up = CostedUpstream()
    by_audio = probe_extraction(up, utts, "utterance", Compute(), clock=up.clock, max_audio=1.0, max_wall=1e9)
    assert by_audio.chunks == 1 and by_audio.audio_seconds > 1.0
    up = CostedUpstream()
    by_wall = probe_extraction(up, utts, "utterance", Compute(), clock=up.clock, max_audio=1e9,
                               max_wall=1.001 * by_audio.wall_seconds)
    assert by_wall.chunks == 2 and by_wall.rate == pytest.approx(6.25)


def test_plan_probes_with_the_runs_threads_device_and_precision(tmp_path):
    two_second_corpus(tmp_path, n=80)
    threads = torch.get_num_threads()
    want = 1 if threads > 1 else 2
    up = CostedUpstream()
    opts = scratch_run_options(tmp_path, lr=1e-2, extract_threads=want, device="cpu", precision="bf16")
    estimate = estimate_run(plan_run(up, [get_task("ks")], tmp_path, opts), opts)
    assert up.calls and {(n, dtype) for _, n, dtype in up.calls} == {(want, torch.bfloat16)}
    assert torch.get_num_threads() == threads  # restored
    (t,) = estimate.tasks
    probe = estimate.probes["utterance"]
    assert t.extraction_seconds == pytest.approx(t.extract_hours * 3600 / probe.rate)
    assert estimate.threads == want and f"cpu (bf16), {want} extraction thread(s); probe (utterance): " in \
        format_plan(estimate)

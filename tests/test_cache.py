"""Feature cache: exactness of pooled features, frame round trip, resume after kill -9, safety checks.

The helpers at the top (ToneUpstream, make_*_corpus) are shared by the other
test_heads / test_training / test_runner modules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from superbench.cache import CacheError, OnlineFeatures, cache_path, extract_features, plan_chunks
from superbench.manifest import load_task_manifest, write_task_manifest
from superbench.upstream import Upstream

SR = 16000
TONES = [300.0, 500.0, 800.0, 1200.0, 1800.0, 2600.0]


class ToneUpstream(Upstream):
    """Tiny deterministic upstream: 16 log band energies per 25 ms frame, plus a random tanh layer."""

    name = "tone-test"
    num_layers = 3
    hidden_size = 16
    downsample_rate = 160
    receptive_field = 400

    def __init__(self, sleep: float = 0.0, counter: str | None = None, nan_layer: int | None = None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(16, 16)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(16, 16, generator=g) * 0.3)
            self.proj.bias.zero_()
        self.sleep, self.counter, self.nan_layer = sleep, counter, nan_layer

    def _forward(self, wavs, wav_lengths):
        if self.counter:
            with open(self.counter, "a") as fh:
                fh.write(f"{wavs.shape[0]}\n")
        if self.sleep:
            time.sleep(self.sleep)
        frames = wavs.unfold(1, self.receptive_field, self.downsample_rate)  # (B, T, 400)
        spec = torch.fft.rfft(frames * torch.hann_window(400), dim=-1).abs() ** 2
        bands = torch.stack([b.sum(-1) for b in spec[..., 1:193].chunk(16, dim=-1)], dim=-1)
        h0 = (torch.log(bands + 1e-6) + 4.0) / 4.0  # roughly unit scale
        h1 = torch.tanh(self.proj(h0))
        h2 = torch.tanh(self.proj(h1))
        layers = [h0, h1, h2]
        if self.nan_layer is not None:
            layers[self.nan_layer] = layers[self.nan_layer].clone()
            layers[self.nan_layer][0, 0, 0] = float("nan")
        return layers, self.num_frames(wav_lengths)


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) + 0.01 * rng.standard_normal(t.size))


def make_class_corpus(root: Path, task: str = "ks", n_classes: int = 3, per_class: tuple = (12, 4, 4),
                      seed: int = 0) -> Path:
    """Utterance task: class c is a tone at TONES[c] of random length (0.3-0.8 s)."""
    rng = np.random.default_rng(seed)
    labels = [f"c{i}" for i in range(n_classes)]
    splits = {}
    for split, n in zip(("train", "dev", "test"), per_class):
        rows = []
        for c in range(n_classes):
            for k in range(n):
                wav = _tone(TONES[c], rng.uniform(0.3, 0.8), rng).astype(np.float32)
                rel = f"wav/{split}_{c}_{k}.wav"
                (root / task / "wav").mkdir(parents=True, exist_ok=True)
                sf.write(root / task / rel, wav, SR)
                rows.append({"id": f"{split}-{c}-{k}", "audio": rel, "sample_rate": SR, "num_samples": wav.size,
                             "speaker": f"s{k % 3}", "label": labels[c]})
        splits[split] = rows
    write_task_manifest(root / task, task=task, corpus="tones", version="1", label_field="label",
                        labels=labels, splits=splits)
    return root / task


def make_sequence_corpus(root: Path, task: str = "pr", n: tuple = (24, 6, 6), seed: int = 0) -> Path:
    """Frame task: a 'phone' is a 0.12 s tone; PR labels are phone names, ASR text uses one letter per tone
    and a 0.1 s silence after the first (one-letter) word."""
    rng = np.random.default_rng(seed)
    phones = ["a", "b", "c", "d"]
    splits = {}
    for split, count in zip(("train", "dev", "test"), n):
        rows = []
        for k in range(count):
            seq = [int(i) for i in rng.integers(0, 4, size=int(rng.integers(2, 5)))]
            parts = []
            for j, p in enumerate(seq):
                parts.append(_tone(TONES[p], 0.12, rng))
                if task == "asr" and j == 0:
                    parts.append(0.01 * rng.standard_normal(int(0.1 * SR)))
            wav = np.concatenate(parts).astype(np.float32)
            rel = f"wav/{split}_{k}.wav"
            (root / task / "wav").mkdir(parents=True, exist_ok=True)
            sf.write(root / task / rel, wav, SR)
            row = {"id": f"{split}-{k}", "audio": rel, "sample_rate": SR, "num_samples": wav.size, "speaker": "s"}
            if task == "pr":
                row["phones"] = " ".join(phones[p] for p in seq)
            else:
                letters = "".join("ABCD"[p] for p in seq)
                row["text"] = letters[:1] + " " + letters[1:]
            rows.append(row)
        splits[split] = rows
    write_task_manifest(root / task, task=task, corpus="tones", version="1",
                        label_field="phones" if task == "pr" else "text",
                        labels=phones if task == "pr" else [], splits=splits)
    return root / task


# --------------------------------------------------------------------------- tests


def test_pooled_cache_is_exact_for_the_utterance_head(tmp_path):
    from downstreams import UtteranceHead

    manifest = load_task_manifest(make_class_corpus(tmp_path))
    up = ToneUpstream()
    cache = extract_features(up, manifest, "utterance", root=tmp_path / "cache", progress=False,
                             batch_samples=SR * 2)
    online = OnlineFeatures(up, manifest)
    torch.manual_seed(0)
    head = UtteranceHead(3, 16, 3, proj_dim=8)
    with torch.no_grad():
        head.featurizer.weights.copy_(torch.tensor([0.3, -1.0, 0.7]))
    ids = [u.id for u in manifest.splits["dev"]]
    pooled, _ = cache.batch(ids)
    frames, lengths = online.batch(ids)
    assert pooled.shape == (3, len(ids), 16)
    assert frames.dim() == 4 and int(lengths.min()) < frames.shape[2]  # real padding is involved
    torch.testing.assert_close(head(pooled), head(frames, lengths), rtol=1e-4, atol=1e-5)
    # and the stored mean is the mean over the valid frames only
    manual = frames[:, 0, : lengths[0]].mean(dim=1)
    torch.testing.assert_close(pooled[:, 0], manual, rtol=1e-5, atol=1e-5)


def test_frame_cache_round_trip_is_fp16_and_memory_mapped(tmp_path):
    manifest = load_task_manifest(make_sequence_corpus(tmp_path))
    up = ToneUpstream()
    cache = extract_features(up, manifest, "frame", root=tmp_path / "cache", progress=False,
                             chunk_bytes=20_000)
    assert cache.index["num_chunks"] > 1
    one = cache.get("dev-0")
    assert one.dtype == np.float16 and isinstance(one, np.memmap)
    ids = ["dev-0", "train-3", "test-1"]
    x, lengths = cache.batch(ids)
    ref, ref_len = OnlineFeatures(up, manifest).batch(ids)
    assert lengths.tolist() == ref_len.tolist()
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(x[:, b, :n], ref[:, b, :n], rtol=2e-3, atol=2e-3)  # fp16 rounding
        assert float(x[:, b, n:].abs().sum()) == 0.0


def test_cache_key_changes_with_upstream_weights_and_manifest(tmp_path):
    manifest = load_task_manifest(make_class_corpus(tmp_path))
    a, b = ToneUpstream(), ToneUpstream()
    with torch.no_grad():
        b.proj.bias.add_(0.1)
    assert cache_path(a, manifest, "utterance") != cache_path(b, manifest, "utterance")
    assert cache_path(a, manifest, "utterance") != cache_path(a, manifest, "frame")


def test_plan_batches_respect_the_samples_budget(tmp_path):
    manifest = load_task_manifest(make_class_corpus(tmp_path))
    utts = {u.id: u for u in manifest.utterances()}
    chunks = plan_chunks(ToneUpstream(), list(utts.values()), "utterance", SR * 2, 1 << 20)
    batches = [b for c in chunks for b in c]
    assert sorted(i for b in batches for i in b) == sorted(utts)
    for b in batches:
        longest = max(utts[i].num_samples for i in b)
        assert longest * len(b) <= SR * 2 or len(b) == 1
    lengths = [utts[i].num_samples for b in batches for i in b]
    assert lengths == sorted(lengths, reverse=True)


def test_nan_features_stop_extraction_naming_file_and_layer(tmp_path):
    manifest = load_task_manifest(make_class_corpus(tmp_path))
    with pytest.raises(CacheError, match=r"NaN/Inf features in layer\(s\) \[1\] for .*\.wav"):
        extract_features(ToneUpstream(nan_layer=1), manifest, "utterance", root=tmp_path / "c", progress=False)


def test_frame_count_mismatch_is_reported(tmp_path):
    class Liar(ToneUpstream):
        def _forward(self, wavs, wav_lengths):
            layers, n = super()._forward(wavs, wav_lengths)
            return layers, n - 5

    manifest = load_task_manifest(make_class_corpus(tmp_path))
    with pytest.raises(CacheError, match=r"frames, its declared rule"):
        extract_features(Liar(), manifest, "utterance", root=tmp_path / "c", progress=False)


def test_refuses_when_the_disk_is_too_small(tmp_path, monkeypatch):
    import shutil as _shutil

    manifest = load_task_manifest(make_sequence_corpus(tmp_path))
    monkeypatch.setattr("superbench.cache.shutil.disk_usage",
                        lambda p: _shutil._ntuple_diskusage(10, 10, 100))  # type: ignore[attr-defined]
    with pytest.raises(CacheError, match="not enough disk.*--no-cache"):
        extract_features(ToneUpstream(), manifest, "frame", root=tmp_path / "c", progress=False)


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_cache import ToneUpstream
from superbench.cache import extract_features
from superbench.manifest import load_task_manifest
m = load_task_manifest({task_dir!r})
extract_features(ToneUpstream(sleep={sleep}, counter={counter!r}), m, "frame", root={root!r},
                 progress=False, batch_samples={batch}, chunk_bytes={chunk})
"""


def test_resume_after_kill_minus_9_skips_finished_chunks(tmp_path):
    task_dir = make_sequence_corpus(tmp_path, n=(24, 6, 6))
    manifest = load_task_manifest(task_dir)
    root, counter = tmp_path / "cache", tmp_path / "calls.txt"
    batch, chunk = 16000, 12_000
    code = _CHILD.format(tests=str(Path(__file__).parent), task_dir=str(task_dir), sleep=0.25,
                         counter=str(counter), root=str(root), batch=batch, chunk=chunk)
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    up = ToneUpstream()
    path = cache_path(up, manifest, "frame", root)
    deadline = time.time() + 60
    while len(list(path.glob("chunk_*.json"))) < 2 and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = sorted(path.glob("chunk_*.json"))
    total = len(json.loads((path / "plan.json").read_text())["chunks"])
    assert 2 <= len(done) < total, "the kill should land mid-extraction"
    assert not (path / "index.json").exists()
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.glob("chunk_*.npy")
              if p.with_suffix(".json").exists()}
    plan = json.loads((path / "plan.json").read_text())["chunks"]
    finished_batches = sum(len(plan[int(p.stem.split("_")[1])]) for p in done)
    calls_before = len(counter.read_text().split())

    counter2 = tmp_path / "calls2.txt"
    resumed = extract_features(ToneUpstream(counter=str(counter2)), manifest, "frame", root=root, progress=False)
    calls_after = len(counter2.read_text().split())
    total_batches = sum(len(c) for c in plan)
    assert calls_after == total_batches - finished_batches  # finished chunks not recomputed
    assert calls_before >= finished_batches
    for name, stamp in stamps.items():
        p = path / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp
    assert not list(path.glob(".*.tmp"))

    fresh = extract_features(ToneUpstream(), manifest, "frame", root=tmp_path / "fresh", progress=False,
                             batch_samples=batch, chunk_bytes=chunk)
    ids = [u.id for u in manifest.utterances()]
    a, la = resumed.batch(ids)
    b, lb = fresh.batch(ids)
    assert la.tolist() == lb.tolist()
    assert torch.equal(a, b)

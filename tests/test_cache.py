"""Feature cache: exactness of pooled features, frame round trip, resume after kill -9, safety checks.

Sharing one cache between manifests (keyed by audio) and concurrent writers: tests/test_cache_sharing.py.
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
import torch

from superbench.features.extraction import extract_features, plan_chunks
from superbench.features.keys import AUDIO_KEY_BLOCK, audio_fingerprint, audio_key
from superbench.features.online import OnlineFeatures
from superbench.features.store import CACHE_FORMAT_VERSION, CacheError, cache_path
from superbench.manifest import load_task_manifest
from superbench.testing import SR, ToneUpstream, make_class_corpus, make_sequence_corpus

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
    assert isinstance(cache.get(ids[0]), np.memmap)  # one map per chunk, not one array in memory
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


def test_cache_folder_changes_with_upstream_weights_and_level_only(tmp_path, monkeypatch):
    a, b = ToneUpstream(), ToneUpstream()
    with torch.no_grad():
        b.proj.bias.add_(0.1)
    assert cache_path(a, "utterance") != cache_path(b, "utterance")
    assert cache_path(a, "utterance") != cache_path(a, "frame")
    fp = a.fingerprint()
    folder = tmp_path / f"tone-test-{fp}" / f"frame-v{CACHE_FORMAT_VERSION}"
    assert cache_path(a, "frame", tmp_path) == folder
    monkeypatch.setattr(ToneUpstream, "fingerprint", lambda self: pytest.fail("fingerprint recomputed"))
    assert cache_path(a, "frame", tmp_path, fingerprint=fp) == folder


def test_extraction_hashes_the_weights_at_most_once(tmp_path, monkeypatch):
    manifest = load_task_manifest(make_class_corpus(tmp_path, per_class=(2, 1, 1)))
    up = ToneUpstream()
    fp = up.fingerprint()
    calls = []
    monkeypatch.setattr(ToneUpstream, "fingerprint", lambda self: calls.append(1) or fp)
    cache = extract_features(up, manifest, "utterance", root=tmp_path / "c", progress=False)
    assert len(calls) == 1 and len(cache) == 12
    extract_features(up, manifest, "utterance", root=tmp_path / "c", progress=False, fingerprint=fp)
    assert len(calls) == 1  # given: never computed


def test_audio_key_hashes_every_byte_and_no_path(tmp_path):
    block = AUDIO_KEY_BLOCK
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=2 * block + 300_000, dtype=np.uint8).tobytes()  # blocks + a partial one
    f = tmp_path / "a.wav"
    f.write_bytes(data)
    key = audio_key(f)
    assert len(key) == 32 and audio_key(str(f)) == key
    link = tmp_path / "link.wav"
    link.symlink_to(f)
    g = tmp_path / "moved" / "b.wav"
    g.parent.mkdir()
    g.write_bytes(data)
    assert audio_key(link) == audio_key(g) == key  # the same bytes anywhere: the same features

    def key_of(content: bytes) -> str:
        f.write_bytes(content)
        return audio_key(f)

    keys = {key}
    for pos in (0, 64 << 10, block - 1, block, len(data) // 2, len(data) - (64 << 10) - 1, len(data) - 1):
        changed = bytearray(data)
        changed[pos] ^= 1
        keys.add(key_of(bytes(changed)))  # the middle too, where the sampled key of format v3 was blind
    assert len(keys) == 8
    assert key_of(data + b"\0") not in keys and key_of(data[:-1]) not in keys
    assert audio_key(f, block=4096) == audio_key(f)  # the block size is how it reads, not what it hashes
    assert key_of(b"") != key_of(b"\0")
    with pytest.raises(CacheError, match="cannot read audio"):
        audio_key(tmp_path / "missing.wav")


def test_audio_fingerprint_follows_which_audio_each_utterance_has(tmp_path):
    keys = {"a": "k1", "b": "k2"}
    fp = audio_fingerprint(keys)
    assert audio_fingerprint(dict(reversed(keys.items()))) == fp  # order of the manifest's rows is not audio
    assert audio_fingerprint({"a": "k2", "b": "k1"}) != fp  # two utterances swapped their audio
    assert audio_fingerprint({"a": "k1", "b": "k3"}) != fp
    assert audio_fingerprint({"a": "k1"}) != fp


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
    monkeypatch.setattr("superbench.features.extraction.shutil.disk_usage",
                        lambda p: _shutil._ntuple_diskusage(10, 10, 100))  # type: ignore[attr-defined]
    with pytest.raises(CacheError, match="not enough disk.*--no-cache"):
        extract_features(ToneUpstream(), manifest, "frame", root=tmp_path / "c", progress=False)


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from superbench.testing import ToneUpstream
from superbench.features.extraction import extract_features
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
    path = cache_path(up, "frame", root)
    deadline = time.time() + 60
    while len(list(path.glob("*-?????.json"))) < 2 and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = sorted(path.glob("*-?????.json"))
    (plan_file,) = path.glob("plans/*.json")
    plan = json.loads(plan_file.read_text())["chunks"]
    assert 2 <= len(done) < len(plan), "the kill should land mid-extraction"
    assert {p.stem.split("-")[0] for p in done} == {plan_file.stem[:12]}
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.glob("*-?????.npy")
              if p.with_suffix(".json").exists()}
    finished_batches = sum(len(plan[int(p.stem.split("-")[1])]) for p in done)
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
    assert [p.name for p in path.glob("plans/*.json")] == [plan_file.name]  # the same plan, finished
    assert len(list(path.glob("*-?????.json"))) == len(plan)

    fresh = extract_features(ToneUpstream(), manifest, "frame", root=tmp_path / "fresh", progress=False,
                             batch_samples=batch, chunk_bytes=chunk)
    ids = [u.id for u in manifest.utterances()]
    a, la = resumed.batch(ids)
    b, lb = fresh.batch(ids)
    assert la.tolist() == lb.tolist()
    assert torch.equal(a, b)

"""One feature cache per (upstream, level), keyed by audio: tasks, relabellings, subsets and
concurrent processes over the same files share it, and the upstream runs once per file."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from superbench.features.extraction import extract_features
from superbench.features.keys import audio_keys
from superbench.features.store import CacheError, FeatureCache, cache_path
from superbench.manifest import TaskManifest, load_task_manifest, write_task_manifest
from superbench.testing import SR, ToneUpstream, make_sequence_corpus

log = logging.getLogger(__name__)


def _rows(task_dir: Path) -> dict[str, list[dict]]:
    meta = json.loads((task_dir / "meta.json").read_text())
    return {s: [json.loads(line) for line in (task_dir / f"{s}.jsonl").read_text().splitlines()]
            for s in meta["splits"]}


def _derived_task(src: Path, dst: Path, task: str, label_field: str, labels: list[str], relabel,
                  keep=lambda row: True, rename=lambda uid: uid) -> TaskManifest:
    """A task folder whose rows point (by absolute path) at `src`'s wav files, with new labels."""
    splits = {}
    for split, rows in _rows(src).items():
        out = []
        for row in rows:
            if not keep(row):
                continue
            new = {k: v for k, v in row.items() if k not in ("phones", "text", "label")}
            new.update(id=rename(row["id"]), audio=str((src / row["audio"]).resolve()))
            new[label_field] = relabel(row)
            out.append(new)
        splits[split] = out
    write_task_manifest(dst, task=task, corpus="tones", version="1", label_field=label_field,
                        labels=labels, splits=splits)
    return load_task_manifest(dst)


def _forwarded(counter: Path) -> int:
    """Utterances the counting upstream ran on (it appends each forward's batch size)."""
    return sum(int(n) for n in counter.read_text().split()) if counter.exists() else 0


def _disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _extract(manifest: TaskManifest, root: Path, counter: Path, level: str = "frame", **kw):
    return extract_features(ToneUpstream(counter=str(counter)), manifest, level, root=root, progress=False, **kw)


def test_pr_and_asr_over_the_same_audio_share_one_frame_cache(tmp_path):
    pr_dir = make_sequence_corpus(tmp_path, task="pr", n=(8, 3, 3))
    pr = load_task_manifest(pr_dir)
    asr = _derived_task(pr_dir, tmp_path / "asr", "asr", "text", [],
                        lambda row: "".join(row["phones"].split()).upper())
    assert pr.fingerprint != asr.fingerprint and asr.utterances()[0].text
    root, counter = tmp_path / "cache", tmp_path / "calls.txt"

    a = _extract(pr, root, counter)
    after_pr, forwards_pr = _disk(root), _forwarded(counter)
    b = _extract(asr, root, counter)
    after_asr = _disk(root)
    log.info("cache bytes on disk after PR: %d, after ASR: %d", after_pr, after_asr)
    assert forwards_pr == 14 and _forwarded(counter) == 14  # ASR forwarded nothing
    assert after_asr == after_pr > 14 * 3 * 16 * 2
    assert a.path == b.path == cache_path(ToneUpstream(), "frame", root)
    assert a.nbytes == b.nbytes and a.disk_bytes == b.disk_bytes == a.nbytes + 128 * a.index["num_chunks"]
    ids = [u.id for u in pr.utterances()]
    xa, la = a.batch(ids)
    xb, lb = b.batch(ids)
    assert torch.equal(xa, xb) and torch.equal(la, lb)


def test_relabelled_renamed_and_subset_manifests_extract_nothing(tmp_path):
    pr_dir = make_sequence_corpus(tmp_path, task="pr", n=(8, 3, 3))
    pr = load_task_manifest(pr_dir)
    root, counter = tmp_path / "cache", tmp_path / "calls.txt"
    full = _extract(pr, root, counter)
    assert _forwarded(counter) == 14
    disk = _disk(root)

    relabelled = _derived_task(pr_dir, tmp_path / "pr2", "pr", "phones", ["a", "b", "c", "d"],
                               lambda row: " ".join(reversed(row["phones"].split())),
                               rename=lambda uid: f"fixed-{uid}")
    subset = _derived_task(pr_dir, tmp_path / "pr3", "pr", "phones", ["a", "b", "c", "d"],
                           lambda row: row["phones"], keep=lambda row: row["id"].startswith("train"))
    assert relabelled.fingerprint != pr.fingerprint != subset.fingerprint
    r = _extract(relabelled, root, counter)
    s = _extract(subset, root, counter)
    assert _forwarded(counter) == 14 and _disk(root) == disk  # nothing forwarded, nothing written
    assert len(r) == 14 and len(s) == 8 and "fixed-dev-0" in r and "dev-0" not in s
    x, _ = r.batch(["fixed-dev-0", "fixed-train-7"])
    y, _ = full.batch(["dev-0", "train-7"])
    assert torch.equal(x, y)
    assert s.nbytes < full.nbytes == r.nbytes


def test_superset_extracts_only_the_new_audio_and_pooled_cache_is_memory_mapped(tmp_path):
    pr_dir = make_sequence_corpus(tmp_path, task="pr", n=(8, 3, 3))
    first = _derived_task(pr_dir, tmp_path / "ks1", "ks", "label", ["x"], lambda row: "x",
                          keep=lambda row: not row["id"].startswith("test"))
    everything = _derived_task(pr_dir, tmp_path / "ks2", "ks", "label", ["x"], lambda row: "x")
    root, counter = tmp_path / "cache", tmp_path / "calls.txt"
    _extract(first, root, counter, level="utterance")
    assert _forwarded(counter) == 11
    with pytest.raises(CacheError, match="3 utterance.s. not extracted yet"):
        FeatureCache.open(cache_path(ToneUpstream(), "utterance", root), audio_keys(everything))
    cache = _extract(everything, root, counter, level="utterance")
    assert _forwarded(counter) == 14  # the 3 test utterances only
    assert len(list(cache.path.glob("plans/*.json"))) == 2
    assert isinstance(cache.get("test-2"), np.memmap) and isinstance(cache.get("dev-0"), np.memmap)
    assert cache.get("dev-0").shape == (3, 16) and cache.get("dev-0").dtype == np.float32
    pooled, frames = cache.batch(["test-2", "dev-0"])
    assert pooled.shape == (3, 2, 16) and frames.tolist() == [cache._where[u][2] for u in ("test-2", "dev-0")]
    ref = extract_features(ToneUpstream(), everything, "utterance", root=tmp_path / "fresh", progress=False)
    assert torch.equal(pooled, ref.batch(["test-2", "dev-0"])[0])


def test_overwritten_wav_is_extracted_again_and_only_it(tmp_path):
    pr_dir = make_sequence_corpus(tmp_path, task="pr", n=(8, 3, 3))
    pr = load_task_manifest(pr_dir)
    root, counter = tmp_path / "cache", tmp_path / "calls.txt"
    before = _extract(pr, root, counter)
    old = np.array(before.get("train-3"))
    keys = audio_keys(pr)

    wav_path = pr_dir / "wav" / "train_3.wav"
    wav, _ = sf.read(wav_path, dtype="float32")
    sf.write(wav_path, np.ascontiguousarray(wav[::-1]) * 0.5, SR)  # other audio, same length
    assert sf.info(wav_path).frames == wav.size
    new_keys = audio_keys(pr)
    assert {u for u in keys if keys[u] != new_keys[u]} == {"train-3"}

    after = _extract(pr, root, counter)
    assert _forwarded(counter) == 15  # 14, then exactly the replaced file
    new = np.array(after.get("train-3"))
    assert new.shape == old.shape and not np.array_equal(new, old)
    online, n = ToneUpstream().extract([sf.read(wav_path, dtype="float32")[0]])
    ref = torch.stack([h[0, : int(n[0])] for h in online]).transpose(0, 1).to(torch.float16).numpy()
    assert np.array_equal(new, ref)
    assert np.array_equal(np.array(after.get("dev-1")), np.array(before.get("dev-1")))


_CHILD = """
import hashlib, logging, os, time
logging.basicConfig(level=logging.INFO)
from superbench.testing import ToneUpstream
from superbench.features.extraction import extract_features
from superbench.manifest import load_task_manifest


class Gated(ToneUpstream):
    # The first forward waits for the test's go-ahead: the lock is held until the other process waits on it.
    def _forward(self, wavs, wav_lengths):
        while {gate!r} and not os.path.exists({gate!r}):
            time.sleep(0.02)
        return super()._forward(wavs, wav_lengths)


m = load_task_manifest({task_dir!r})
c = extract_features(Gated(counter={counter!r}), m, "frame", root={root!r},
                     progress=False, batch_samples=16000, chunk_bytes=12_000)
x, n = c.batch(sorted(u.id for u in m.utterances()))
print(hashlib.sha256(x.numpy().tobytes() + n.numpy().tobytes()).hexdigest())
"""


def test_two_processes_extracting_at_once_forward_each_utterance_once(tmp_path):
    task_dir = make_sequence_corpus(tmp_path, task="pr", n=(8, 3, 3))
    root = tmp_path / "cache"
    path = cache_path(ToneUpstream(), "frame", root)
    gate = tmp_path / "go"
    procs, counters = [], []
    for k in range(2):
        counters.append(tmp_path / f"calls{k}.txt")
        code = _CHILD.format(task_dir=str(task_dir), gate=str(gate) if k == 0 else "", counter=str(counters[-1]),
                             root=str(root))
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=dict(os.environ)))
        if k == 0:  # the first holds the lock, stopped in its first forward, before the second starts
            deadline = time.time() + 120
            while not list(path.glob("plans/*.json")) and time.time() < deadline:
                time.sleep(0.02)
    waited = []
    for line in procs[1].stderr:  # the second says it waits for the lock; then the first may go on
        waited.append(line)
        if "another process is extracting" in line:
            gate.touch()
            break
    gate.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert any("another process is extracting" in line for line in waited)  # it really waited for the lock
    assert outs[0][0] == outs[1][0] and len(outs[0][0].strip()) == 64  # the same features in both
    assert _forwarded(counters[0]) == 14 and _forwarded(counters[1]) == 0
    assert not list(path.glob(".*.tmp"))
    assert len(list(path.glob("plans/*.json"))) == 1

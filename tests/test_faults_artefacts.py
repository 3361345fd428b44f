"""Fault injection on what superbench writes: damaged cache chunks and checkpoints are detected and
redone (never used), data-derived names cannot leave the cache root, a full disk names the path,
a row that lies about its length cannot size a batch, and hand-edited rows get their own fingerprint.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import superbench.features.store as cache_mod
import superbench.io as io_mod
from downstreams import ClassificationObjective, UtteranceHead
from superbench.features.extraction import extract_features
from superbench.features.store import CACHE_FORMAT_VERSION, CacheError, cache_path
from superbench.io import atomic_open, atomic_write_text
from superbench.manifest import _rows_fingerprint, load_task_manifest, write_task_manifest
from superbench.recipe import TrainConfig
from superbench.testing import (
    Interrupted,
    InterruptingSource,
    ToneUpstream,
    cached_class_task,
    make_class_corpus,
    make_sequence_corpus,
)
from superbench.training import _save_checkpoint, train

FRAME_CHUNK_BYTES = 20_000  # several chunks for the tiny sequence corpus


def _forwarded(counter: Path) -> int:
    """Utterances the counting upstream ran on."""
    return sum(int(n) for n in counter.read_text().split()) if counter.exists() else 0


def _extract(manifest, root: Path, counter: Path | None = None):
    return extract_features(ToneUpstream(counter=str(counter) if counter else None), manifest, "frame",
                            root=root, progress=False, chunk_bytes=FRAME_CHUNK_BYTES)


@pytest.fixture()
def frame_cache(tmp_path):
    """A frame cache in several chunks, the chunk the damage goes to, and a fresh cache to compare with."""
    manifest = load_task_manifest(make_sequence_corpus(tmp_path))
    cache = _extract(manifest, tmp_path / "cache")
    chunks = sorted(cache.path.glob("*-?????.json"))
    assert len(chunks) > 2
    victim = chunks[1]
    ids = sorted(u.id for u in manifest.utterances())
    fresh, _ = _extract(manifest, tmp_path / "fresh").batch(ids)
    return manifest, cache.path, victim, ids, fresh


def _rerun(tmp_path, manifest, path: Path, victim: Path, ids, fresh, caplog, names: Path) -> None:
    """Re-open as a new process would: the damaged chunk, and only it, is extracted again, same bytes."""
    cache_mod._VERIFIED.clear()  # a new process has verified nothing yet
    counter = tmp_path / "forwards.txt"
    keys = json.loads(victim.read_text())["keys"] if victim.suffix == ".json" and _intact(victim) else None
    with caplog.at_level(logging.WARNING, logger="superbench.features"):
        cache = _extract(manifest, path.parent.parent, counter)
    assert cache.path == path
    assert str(names) in caplog.text  # the log names the damaged file
    again, _ = cache.batch(ids)
    torch.testing.assert_close(again, fresh, rtol=0, atol=0)  # the same features as a fresh cache
    redone = json.loads(victim.read_text())
    assert _forwarded(counter) == len(redone["keys"])  # exactly that chunk's utterances, forwarded again
    if keys is not None:
        assert redone["keys"] == keys


def _intact(sidecar: Path) -> bool:
    try:
        json.loads(sidecar.read_text())
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def test_zeroed_4k_in_a_chunk_is_extracted_again_never_used(tmp_path, frame_cache, caplog):
    manifest, path, victim, ids, fresh = frame_cache
    npy = victim.with_suffix(".npy")
    data = bytearray(npy.read_bytes())
    assert len(data) > 4096 + 256
    data[256:256 + 4096] = bytes(4096)  # past the header: a silent change of the features
    npy.write_bytes(bytes(data))
    _rerun(tmp_path, manifest, path, victim, ids, fresh, caplog, npy)
    assert "checksum mismatch" in caplog.text


def test_truncated_chunk_is_extracted_again(tmp_path, frame_cache, caplog):
    manifest, path, victim, ids, fresh = frame_cache
    npy = victim.with_suffix(".npy")
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    _rerun(tmp_path, manifest, path, victim, ids, fresh, caplog, npy)
    assert "truncated" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "garbled", "no checksum"])
def test_damaged_sidecar_is_extracted_again_naming_it(tmp_path, frame_cache, caplog, damage):
    manifest, path, victim, ids, fresh = frame_cache
    text = victim.read_text()
    if damage == "truncated":
        victim.write_text(text[: len(text) // 2])
    elif damage == "garbled":
        victim.write_bytes(b"\xff\xfe\x00 not json at all")
    else:
        info = json.loads(text)
        del info["npy_blake2b"]
        victim.write_text(json.dumps(info))
    _rerun(tmp_path, manifest, path, victim, ids, fresh, caplog, victim)


def test_opening_a_damaged_cache_without_extraction_names_the_chunk(frame_cache, caplog):
    manifest, path, victim, ids, _ = frame_cache
    from superbench.features.keys import audio_keys
    from superbench.features.store import FeatureCache

    cache_mod._VERIFIED.clear()
    npy = victim.with_suffix(".npy")
    npy.write_bytes(npy.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="superbench.features"), pytest.raises(CacheError, match="re-run"):
        FeatureCache.open(path, audio_keys(manifest))
    assert str(npy) in caplog.text
    assert npy.exists()  # no lock held: reported, not removed


def test_a_chunk_damaged_after_open_is_refused_on_first_read(tmp_path):
    manifest = load_task_manifest(make_sequence_corpus(tmp_path))
    cache = _extract(manifest, tmp_path / "cache")
    uid = manifest.splits["dev"][0].id
    name = cache._where[uid][0]
    npy = cache.path / f"{name}.npy"
    data = bytearray(npy.read_bytes())
    data[-100:] = bytes(100)
    cache_mod._VERIFIED.clear()
    npy.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=str(npy)):
        cache.get(uid)


def test_old_cache_format_is_extracted_again_saying_why(tmp_path, caplog):
    manifest = load_task_manifest(make_class_corpus(tmp_path, per_class=(2, 1, 1)))
    up = ToneUpstream()
    old = cache_path(up, "utterance", tmp_path / "c").parent / "utterance-v2"
    old.mkdir(parents=True)
    (old / "cache.json").write_text(json.dumps({"format_version": 2}))
    with caplog.at_level(logging.INFO, logger="superbench.features"):
        extract_features(up, manifest, "utterance", root=tmp_path / "c", progress=False)
    assert f"format changed (utterance-v2 -> v{CACHE_FORMAT_VERSION}: audio keys now hash every byte" in caplog.text


# --------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "garbled header"])
def test_damaged_checkpoint_restarts_the_trial(tmp_path, caplog, damage):
    cache, data = cached_class_task(tmp_path)
    cfg = TrainConfig(steps=60, batch_size=8, lr=1e-2, eval_interval=20, seed=3, eval_batch_size=5)

    def run(source, checkpoint=None):
        return train(lambda: UtteranceHead(3, 16, 3, proj_dim=16), ClassificationObjective(), source,
                     data("train"), data("dev"), data("test"), cfg, progress=False, checkpoint=checkpoint,
                     checkpoint_key="k")

    whole = run(cache)
    ckpt = tmp_path / "trial.pt"
    with pytest.raises(Interrupted):
        run(InterruptingSource(cache, 50), ckpt)
    raw = bytearray(ckpt.read_bytes())
    if damage == "flipped byte":
        raw[len(raw) * 2 // 3] ^= 0x40  # e.g. an exponent bit of a stored tensor
    elif damage == "truncated":
        raw = raw[: len(raw) - 100]
    else:
        raw[:20] = b"x" * 20
    ckpt.write_bytes(bytes(raw))
    counting = InterruptingSource(cache, 10**6)
    with caplog.at_level(logging.WARNING, logger="superbench.training"):
        restarted = run(counting, ckpt)
    assert counting.calls == 60  # from scratch, not from step 41
    assert f"damaged training checkpoint {ckpt}" in caplog.text
    assert (restarted.dev, restarted.test, restarted.best_step, restarted.layer_weights, restarted.history) == \
        (whole.dev, whole.test, whole.best_step, whole.layer_weights, whole.history)


# --------------------------------------------------------------------------- safe paths

class _NamedTone(ToneUpstream):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


ESCAPES = ["..", "x/../..", "", "../", "../../etc", "/abs", ".", "a/b", "..\\..", "-..", "name\x00"]


@pytest.mark.parametrize("bad", ESCAPES)
def test_names_and_fingerprints_cannot_leave_the_cache_root(tmp_path, bad):
    root = tmp_path / "root"
    for name, fp in [(bad, "abc123"), ("tone", bad), (bad, bad)]:
        path = cache_path(_NamedTone(name), "frame", root, fingerprint=fp)
        assert path.parent.parent == root
        assert os.path.abspath(path).startswith(str(root) + os.sep)
        assert path.parent.name not in ("", ".", "..") and "/" not in path.parent.name
    expected = root / "tone-test-0a1b" / f"frame-v{CACHE_FORMAT_VERSION}"
    assert cache_path(_NamedTone("tone-test"), "frame", root, "0a1b") == expected


def test_extraction_with_escaping_name_and_fingerprint_writes_inside_the_root(tmp_path):
    manifest = load_task_manifest(make_class_corpus(tmp_path / "data", per_class=(2, 1, 1)))
    root = tmp_path / "a" / "b" / "root"
    cache = extract_features(_NamedTone("../.."), manifest, "utterance", root=root, fingerprint="../../x",
                             progress=False)
    assert len(cache) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "data"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b"]
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["root"]
    assert cache.path.parent.parent == root


# --------------------------------------------------------------------------- full disk

class _FullDisk:
    """A file whose writes fail as on a full disk (after a few bytes went through)."""

    def __init__(self, fh, exc):
        self._fh, self._exc = fh, exc

    def write(self, data):
        raise self._exc

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 128 vs 64"),
])
def test_a_full_disk_names_the_path(tmp_path, monkeypatch, exc):
    real = os.fdopen
    monkeypatch.setattr(io_mod.os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k), exc))
    targets = {
        tmp_path / "plain.txt": lambda p: atomic_write_text(p, "x"),
        tmp_path / "trial.pt": lambda p: _save_checkpoint(p, {"w": torch.zeros(3)}),
        tmp_path / "chunk-00000.npy": lambda p: cache_mod._write_npy_atomic(p, np.zeros(5, dtype=np.float32)),
    }
    for path, write in targets.items():
        with pytest.raises(OSError) as info:
            write(path)
        assert info.value.errno == errno.ENOSPC
        assert f"no space left on {path}" in str(info.value)
        assert not path.exists()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the writers' own temp files are gone


def test_other_errors_pass_through_atomic_open(tmp_path):
    with pytest.raises(ValueError, match="boom"), atomic_open(tmp_path / "f", "w"):
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- manifest rows

def _rewrite_rows(task_dir: Path, split: str, edit) -> list[dict]:
    path = task_dir / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


def test_a_row_that_lies_about_num_samples_stops_extraction_naming_the_file(tmp_path):
    task_dir = make_class_corpus(tmp_path, per_class=(2, 1, 1))
    rows = _rewrite_rows(task_dir, "train", lambda rows: rows[0].update(num_samples=rows[0]["num_samples"] * 1000))
    manifest = load_task_manifest(task_dir, check_files=False)  # the header check would catch it at load
    utt = next(u for u in manifest.splits["train"] if u.id == rows[0]["id"])
    counter = tmp_path / "forwards.txt"
    with pytest.raises(CacheError) as info:
        extract_features(ToneUpstream(counter=str(counter)), manifest, "utterance", root=tmp_path / "c",
                         progress=False)
    message = str(info.value)
    real = utt.num_samples // 1000
    assert utt.audio in message and f"num_samples={utt.num_samples}" in message and f"has {real} samples" in message
    assert _forwarded(counter) == 0  # stopped before that batch was padded or run
    # with the header check on, the same lie is a manifest error at load time, as before
    with pytest.raises(Exception, match="num_samples"):
        load_task_manifest(task_dir)


def test_hand_edited_rows_get_the_computed_fingerprint_with_a_warning(tmp_path, caplog):
    task_dir = make_class_corpus(tmp_path / "a", per_class=(2, 1, 1))
    stored = json.loads((task_dir / "meta.json").read_text())["fingerprint"]
    with caplog.at_level(logging.WARNING, logger="superbench.manifest"):
        assert load_task_manifest(task_dir).fingerprint == stored
    assert "fingerprint" not in caplog.text
    edited = _rewrite_rows(task_dir, "dev", lambda rows: rows[0].update(label="c2"))
    with caplog.at_level(logging.WARNING, logger="superbench.manifest"):
        manifest = load_task_manifest(task_dir)
    assert str(task_dir / "meta.json") in caplog.text and "edited" in caplog.text
    assert manifest.fingerprint != stored
    # the same function write_task_manifest uses: writing the edited rows afresh stores this very value
    splits = {s: [json.loads(line) for line in (task_dir / f"{s}.jsonl").read_text().splitlines()]
              for s in ("train", "dev", "test")}
    assert splits["dev"] == edited
    assert manifest.fingerprint == _rows_fingerprint(splits)
    meta = json.loads((task_dir / "meta.json").read_text())
    other = write_task_manifest(tmp_path / "b" / "ks", task="ks", corpus="tones", version="1",
                                label_field="label", labels=meta["labels"], splits=splits)
    assert json.loads((other / "meta.json").read_text())["fingerprint"] == manifest.fingerprint

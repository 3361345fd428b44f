"""Audio identity: features and records follow the audio bytes, not only the manifest rows.

An in-place edit that keeps a file's size and its first and last 64 KiB (what the sampled key of cache
format v3 read) must re-extract the file, and a run over changed audio without --overwrite must run again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from superbench.manifest import load_task_manifest, write_task_manifest
from superbench.records import read_record, record_path, write_record
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import TONES, ToneUpstream, scratch_run_options

SR = 16000
SECONDS = 8.0  # 256 KiB of PCM16 per file: more than its first and last 64 KiB
EDGE = 64 << 10
FAST = {"steps": 40, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}


def _long_tone_corpus(root: Path, per_class: tuple[int, int, int] = (4, 3, 3)) -> Path:
    """KS-style corpus of three tone classes whose files all have the same length (so the same size)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(SECONDS * SR)) / SR
    labels = ["c0", "c1", "c2"]
    splits = {}
    (root / "ks" / "wav").mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "dev", "test"), per_class):
        rows = []
        for c, label in enumerate(labels):
            for k in range(n):
                wav = 0.3 * np.sin(2 * np.pi * TONES[c] * t + rng.uniform(0, 6.28)) + 0.01 * rng.standard_normal(t.size)
                rel = f"wav/{split}_{c}_{k}.wav"
                sf.write(root / "ks" / rel, wav.astype(np.float32), SR, subtype="PCM_16")
                rows.append({"id": f"{split}-{c}-{k}", "audio": rel, "sample_rate": SR, "num_samples": t.size,
                             "label": label})
        splits[split] = rows
    write_task_manifest(root / "ks", task="ks", corpus="long-tones", version="1", label_field="label",
                        labels=labels, splits=splits)
    return root / "ks"


def _edit_middles(task_dir: Path, split: str) -> int:
    """Give every `split` file the middle bytes of the next class's file: size, first and last 64 KiB kept."""
    files = sorted((task_dir / "wav").glob(f"{split}_*.wav"))
    donors = {f: task_dir / "wav" / f"train_{(int(f.stem.split('_')[1]) + 1) % 3}_0.wav" for f in files}
    for f, donor in donors.items():
        raw, other = bytearray(f.read_bytes()), donor.read_bytes()
        assert len(raw) == len(other) > 2 * EDGE
        before = bytes(raw)
        raw[EDGE:-EDGE] = other[EDGE:-EDGE]
        f.write_bytes(bytes(raw))
        assert raw[:EDGE] == before[:EDGE] and raw[-EDGE:] == before[-EDGE:] and raw != before
    return len(files)


def _opts(root: Path, **kw):
    return scratch_run_options(root, **{"overrides": dict(FAST), "lr": 1e-2, **kw})


def test_audio_edited_in_place_keeping_size_head_and_tail_is_extracted_again(tmp_path, caplog):
    task_dir = _long_tone_corpus(tmp_path / "data")
    (before,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path))
    edited = _edit_middles(task_dir, "test")
    with caplog.at_level(logging.INFO, logger="superbench.features"):
        (after,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path, overwrite=True))
    assert f"extracted {edited} utterance(s) of tone-test/ks" in caplog.text  # the edited files only
    (fresh,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path / "fresh"))
    assert (after.test, after.dev) == (fresh.test, fresh.dev)  # scored on the new audio, as a fresh home
    assert after.test != before.test  # the edit matters: the old features would have kept the old score


def test_a_run_over_changed_audio_runs_again_without_overwrite(tmp_path, caplog):
    task_dir = _long_tone_corpus(tmp_path / "data")
    (first,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path))
    path = record_path(tmp_path / "results", first.run_key())
    with caplog.at_level(logging.INFO, logger="superbench"):
        (same,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path))
    assert same == first and "skipping them" in caplog.text  # unchanged audio: skipped as before
    assert "audio bytes changed" not in caplog.text

    _edit_middles(task_dir, "test")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="superbench"):
        (again,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path))
    assert "skipping them" not in caplog.text and "running again" in caplog.text
    assert again.run_key() == first.run_key()  # same rows: the same run key, so old baselines still match
    assert read_record(path) == again != first  # the record was replaced
    (fresh,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path / "fresh"))
    assert (again.test, again.dev, again.audio_fingerprint) == (fresh.test, fresh.dev, fresh.audio_fingerprint)
    assert first.audio_fingerprint and again.audio_fingerprint != first.audio_fingerprint
    assert (f"audio bytes changed since the record (audio {first.audio_fingerprint} -> "
            f"{again.audio_fingerprint}): running again") in caplog.text


def test_records_from_before_audio_fingerprints_still_skip_and_a_moved_corpus_is_the_same_audio(tmp_path, caplog):
    _long_tone_corpus(tmp_path / "data", per_class=(3, 2, 2))
    (first,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path))
    path = record_path(tmp_path / "results", first.run_key())
    old = read_record(path)
    old.audio_fingerprint = ""  # as written before the field existed
    write_record(old, tmp_path / "results")
    with caplog.at_level(logging.INFO, logger="superbench"):
        (kept,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path))
    assert kept == old and "skipping them" in caplog.text

    write_record(first, tmp_path / "results")
    shutil.move(tmp_path / "data", tmp_path / "moved")
    assert load_task_manifest(tmp_path / "moved" / "ks").fingerprint == first.manifest_fingerprint
    caplog.clear()
    with caplog.at_level(logging.INFO):
        (moved,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "moved", _opts(tmp_path))
    assert moved == first and "skipping them" in caplog.text  # same bytes elsewhere: same audio identity

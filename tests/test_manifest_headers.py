"""The manifest checks' one open per file: WAV and FLAC headers parsed from their first bytes agree with
soundfile, other formats fall back to it, and equal-sized files are told apart by their first bytes before
any is hashed whole."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

import superbench.manifest as manifest_module
from superbench.audio import HEADER_BYTES, header_info
from superbench.manifest import ManifestError, find_identical_audio, load_task_manifest, write_task_manifest


@pytest.mark.parametrize(("fmt", "subtype", "channels"), [
    ("WAV", "PCM_16", 1), ("WAV", "PCM_24", 2), ("WAV", "FLOAT", 1), ("WAV", "PCM_U8", 1), ("WAV", "PCM_32", 2),
    ("FLAC", "PCM_16", 1), ("FLAC", "PCM_24", 2)])
def test_header_info_agrees_with_soundfile(tmp_path, fmt, subtype, channels):
    path = tmp_path / f"a.{fmt.lower()}"
    x = np.random.default_rng(0).normal(0, 0.1, (12345, channels)).astype(np.float32)
    sf.write(path, x if channels > 1 else x[:, 0], 22050, subtype=subtype, format=fmt)
    info = sf.info(str(path))
    assert header_info(path.read_bytes()[:HEADER_BYTES], os.path.getsize(path)) == (info.samplerate, info.frames)


def test_header_info_leaves_other_formats_and_truncated_wavs_to_soundfile(tmp_path):
    ogg, wav = tmp_path / "a.ogg", tmp_path / "a.wav"
    sf.write(ogg, np.zeros(4000, np.float32), 16000, format="OGG", subtype="VORBIS")
    sf.write(wav, np.zeros(4000, np.float32), 16000, subtype="PCM_16")
    assert header_info(ogg.read_bytes()[:HEADER_BYTES], os.path.getsize(ogg)) is None
    cut = wav.read_bytes()[:3000]  # the data chunk says more bytes than the file has
    assert header_info(cut, len(cut)) is None
    assert header_info(b"not audio at all", 16) is None


def _tone_rows(root, n, length=1600, same_start=False):
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        x = rng.normal(0, 0.1, length)
        if same_start:
            x[:3000] = 0.0  # the first 4 KiB of every file alike (digital silence), the rest not
        sf.write(root / f"u{i}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
        rows.append({"id": f"u{i}", "audio": str(root / f"u{i}.wav"), "sample_rate": 16000, "num_samples": length,
                     "speaker": "s", "label": "a"})
    return rows


def test_equal_sized_files_are_hashed_whole_only_when_their_first_bytes_agree(tmp_path, monkeypatch):
    rows = _tone_rows(tmp_path, 6)
    write_task_manifest(tmp_path / "ks", task="ks", corpus="t", version="1", label_field="label", labels=["a"],
                        splits={"train": rows[:4], "dev": rows[4:5], "test": rows[5:]})
    whole = []
    real = manifest_module.file_blake2b
    monkeypatch.setattr(manifest_module, "file_blake2b", lambda path, **kw: whole.append(path) or real(path, **kw))
    m = load_task_manifest(tmp_path / "ks")
    assert find_identical_audio(m) == [] and whole == []  # six files of one size, none read whole
    silent = tmp_path / "silent"
    silent.mkdir()
    rows = _tone_rows(silent, 3, length=8000, same_start=True)
    write_task_manifest(silent / "ks", task="ks", corpus="t", version="1", label_field="label", labels=["a"],
                        splits={"train": rows[:1], "dev": rows[1:2], "test": rows[2:]})
    assert find_identical_audio(load_task_manifest(silent / "ks")) == []  # same head, other tails: not a leak
    assert len(set(whole)) == 3  # their first bytes agree: each is then hashed whole


def test_a_missing_file_and_a_lying_header_are_still_reported_with_their_rows(tmp_path):
    rows = _tone_rows(tmp_path, 3)
    rows[1]["num_samples"] = 1599
    rows[2]["audio"] = str(tmp_path / "gone.wav")
    task = tmp_path / "ks"
    write_task_manifest(task, task="ks", corpus="t", version="1", label_field="label", labels=["a"],
                        splits={"train": rows[:1], "dev": rows[1:2], "test": rows[2:]})
    with pytest.raises(ManifestError) as err:
        load_task_manifest(task)
    text = str(err.value)
    assert f"test.jsonl id='u2': {tmp_path / 'gone.wav'}" in text
    assert "dev.jsonl id='u1': 'num_samples' is 1599, the file has 1600" in text


def test_map_in_threads_keeps_the_order_of_its_items():
    from superbench.io import map_in_threads

    items = list(range(103))
    assert map_in_threads(lambda x: x * x, items, 8) == [x * x for x in items]
    assert map_in_threads(str, items[:3], 8) == ["0", "1", "2"]  # too few to cut: in this thread

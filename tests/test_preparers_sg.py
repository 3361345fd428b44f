"""Voicebank-DEMAND and Libri2Mix (separation) preparers on tiny folders in the corpora's real layouts."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recipes.prepare import PrepareError
from recipes.prepare.libri2mix_sep import prepare_libri2mix, subsample
from recipes.prepare.voicebank import DEV_SPEAKERS, prepare_voicebank
from recipes.se import TASK as SE
from recipes.ss import TASK as SS
from superbench.manifest import load_task_manifest

SR = 16000


def _wav(path: Path, n: int = 1600, sr: int = SR, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(len(str(path))).uniform(-0.1, 0.1, (n, channels) if channels > 1 else n)
    sf.write(path, data.astype(np.float32), sr)


def voicebank(root: Path, suffix: str = "_16k") -> Path:
    for name in ("p226_001", "p226_002", "p287_001", "p254_001", "p254_002", "p270_003"):
        for cond in ("clean", "noisy"):
            _wav(root / f"{cond}_trainset_28spk_wav{suffix}" / f"{name}.wav", n=1600 + 10 * len(name))
    for name in ("p232_001", "p257_004"):
        for cond in ("clean", "noisy"):
            _wav(root / f"{cond}_testset_wav{suffix}" / f"{name}.wav")
    return root


def test_voicebank_splits_hold_out_s3prls_dev_speakers(tmp_path):
    folder = prepare_voicebank(voicebank(tmp_path / "vb"), tmp_path / "out")
    manifest = load_task_manifest(folder)
    ids = {split: [u.id for u in rows] for split, rows in manifest.splits.items()}
    assert DEV_SPEAKERS == ("p226", "p287")
    assert ids == {"train": ["p254_001", "p254_002", "p270_003"], "dev": ["p226_001", "p226_002", "p287_001"],
                   "test": ["p232_001", "p257_004"]}
    u = manifest.splits["dev"][0]
    assert u.audio.endswith("noisy_trainset_28spk_wav_16k/p226_001.wav") and u.speaker == "p226"
    assert u.targets["sources"] == [str((tmp_path / "vb" / "clean_trainset_28spk_wav_16k" / "p226_001.wav").resolve())]
    SE.check_manifest(manifest)  # the SE task accepts what the preparer writes


def test_voicebank_names_every_bad_pair_before_writing(tmp_path):
    root = voicebank(tmp_path / "vb", suffix="")  # the folder names without _16k are read too
    (root / "clean_trainset_28spk_wav" / "p254_002.wav").unlink()  # a noisy file without its clean partner
    _wav(root / "clean_trainset_28spk_wav" / "p270_003.wav", n=999)  # another length than its noisy file
    _wav(root / "noisy_testset_wav" / "p257_004.wav", sr=48000)  # the original 48 kHz release
    _wav(root / "clean_testset_wav" / "p999_001.wav")  # a clean file without a noisy one
    with pytest.raises(PrepareError) as info:
        prepare_voicebank(root, tmp_path / "out")
    text = str(info.value)
    assert "4 problem(s)" in text
    assert "noisy_trainset_28spk_wav/p254_002.wav: no partner" in text
    assert "noisy_trainset_28spk_wav/p270_003.wav: 1680 samples, but its partner(s)" in text and "(999 samples)" in text
    assert "noisy_testset_wav/p257_004.wav: 48000 Hz" in text and "resample" in text
    assert "clean_testset_wav/p999_001.wav: no mixture" in text
    assert not (tmp_path / "out").exists()
    folder = prepare_voicebank(root, tmp_path / "out", skip_bad=True)  # or leave them out, logged
    assert [u.id for u in load_task_manifest(folder).splits["train"]] == ["p254_001"]


def libri2mix(root: Path, n: dict[str, int]) -> Path:
    base = root / "wav16k" / "min"
    for i, (split, count) in enumerate(n.items()):
        for k in range(count):
            name = f"{100 + k}-{i}-0001_{200 + k}-2-0002"  # LibriSpeech speakers differ between the splits
            for cond in ("mix_clean", "s1", "s2"):
                _wav(base / split / cond / f"{name}.wav", n=1600 + k)
    return root


def test_libri2mix_takes_train_100_and_subsamples_dev_as_s3prl(tmp_path):
    folder = prepare_libri2mix(libri2mix(tmp_path / "l2m", {"train-100": 3, "dev": 5, "test": 2}), tmp_path / "out")
    manifest = load_task_manifest(folder)
    assert [len(manifest.splits[s]) for s in ("train", "dev", "test")] == [3, 5, 2]  # dev below 1000: all of it
    u = manifest.splits["test"][1]
    base = (tmp_path / "l2m" / "wav16k" / "min" / "test").resolve()
    assert u.audio == str(base / "mix_clean" / f"{u.id}.wav") and u.num_samples == 1601
    assert u.targets["sources"] == [str(base / "s1" / f"{u.id}.wav"), str(base / "s2" / f"{u.id}.wav")]
    SS.check_manifest(manifest)
    # s3prl's subsample.py: random.seed(7); shuffle the sorted ids; the first 1000, sorted
    ids = [f"id{k:05d}" for k in range(3000)]
    random.seed(7)
    expected = sorted(ids)
    random.shuffle(expected)
    assert subsample(ids) == sorted(expected[:1000]) and len(set(subsample(ids))) == 1000


def test_libri2mix_names_missing_partners_and_mismatched_lengths(tmp_path):
    root = libri2mix(tmp_path / "l2m", {"train-100": 2, "dev": 1, "test": 1})
    base = root / "wav16k" / "min"
    (base / "train-100" / "s2" / "100-0-0001_200-2-0002.wav").unlink()
    _wav(base / "test" / "s1" / "100-2-0001_200-2-0002.wav", n=10, channels=1)
    _wav(base / "dev" / "s1" / "100-1-0001_200-2-0002.wav", channels=2)
    with pytest.raises(PrepareError) as info:
        prepare_libri2mix(root, tmp_path / "out")
    text = str(info.value)
    assert "train-100/mix_clean/100-0-0001_200-2-0002.wav: no partner" in text and "s2/100-0-0001_200-2-0002" in text
    assert "test/mix_clean/100-2-0001_200-2-0002.wav: 1600 samples, but its partner(s)" in text
    assert "dev/s1/100-1-0001_200-2-0002.wav: 16000 Hz, 2 channel(s)" in text
    with pytest.raises(FileNotFoundError, match="wav16k/min"):
        prepare_libri2mix(tmp_path / "nowhere", tmp_path / "out")

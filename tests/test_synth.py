"""Scale corpora (`superbench data synth`): each layout is read back by its real preparer, labels are
learnable from the signal, the same seed writes the same bytes and no two files share their bytes."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from recipes.prepare.librispeech import prepare_librispeech
from recipes.prepare.speech_commands import LABELS, prepare_speech_commands
from recipes.prepare.synth import SynthSpec, audio_files, lexicon, phone_tones, synthesize
from recipes.prepare.voxceleb1 import prepare_voxceleb1
from superbench.cli import main
from superbench.manifest import load_task_manifest


def _digests(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in audio_files(root)}


def _spectrum(path: str, bins: int = 64) -> np.ndarray:
    """Mean log power spectrum in `bins` bands: a crude feature a nearest-centroid classifier reads."""
    x, _ = sf.read(path, dtype="float32")
    frames = x[: len(x) // 512 * 512].reshape(-1, 512)
    power = (np.abs(np.fft.rfft(frames * np.hanning(512), axis=1)) ** 2).mean(axis=0)[:256]
    return np.log(power.reshape(bins, -1).mean(axis=1) + 1e-8)


def _nearest_centroid_accuracy(train, test) -> float:
    """train/test: lists of (label, feature); accuracy of the nearest class mean."""
    groups = defaultdict(list)
    for label, f in train:
        groups[label].append(f)
    names = sorted(groups)
    centroids = np.stack([np.mean(groups[n], axis=0) for n in names])
    hits = [names[int(np.argmin(((centroids - f) ** 2).sum(axis=1)))] == label for label, f in test]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def voxceleb(tmp_path_factory):
    root = tmp_path_factory.mktemp("vox")
    synthesize(SynthSpec("voxceleb1", 96, hours=96 * 0.6 / 3600, seed=3, speakers=8), root)
    return root


def test_voxceleb1_layout_is_read_by_its_preparer_and_speakers_are_learnable(voxceleb, tmp_path):
    sid = prepare_voxceleb1(voxceleb, tmp_path)
    manifest = load_task_manifest(sid)
    sizes = {split: len(rows) for split, rows in manifest.splits.items()}
    assert sum(sizes.values()) == 96 and min(sizes.values()) > 0
    assert len(manifest.labels) == 8 and manifest.labels[0] == "id10001"
    rel = manifest.splits["train"][0].audio.split("/wav/")[1]
    assert rel.count("/") == 2 and rel.endswith(".wav")  # idNNNNN/<video>/<nnnnn>.wav
    feats = {s: [(u.label, _spectrum(u.audio)) for u in manifest.splits[s]] for s in ("train", "test")}
    assert _nearest_centroid_accuracy(feats["train"], feats["test"]) >= 0.9  # chance: 1/8


def test_the_same_seed_writes_the_same_bytes_and_no_two_files_share_them(voxceleb, tmp_path):
    again = tmp_path / "again"
    synthesize(SynthSpec("voxceleb1", 96, hours=96 * 0.6 / 3600, seed=3, speakers=8), again)
    first, second = _digests(voxceleb), _digests(again)
    assert first == second
    assert (voxceleb / "iden_split.txt").read_text() == (again / "iden_split.txt").read_text()
    assert len(set(first.values())) == len(first) == 96
    other = tmp_path / "other"
    synthesize(SynthSpec("voxceleb1", 8, hours=8 * 0.6 / 3600, seed=4, speakers=8), other)
    assert not set(_digests(other).values()) & set(first.values())


def test_librispeech_layout_is_read_by_its_preparer_with_every_word_in_the_lexicon(tmp_path):
    root = tmp_path / "libri"
    done = synthesize(SynthSpec("librispeech", 40, hours=40 * 2.0 / 3600, seed=1, speakers=40), root)
    assert done.files == 40 and abs(done.seconds - 80) < 30
    out = prepare_librispeech(root, tmp_path / "m")
    asr, pr = load_task_manifest(out["asr"]), load_task_manifest(out["pr"])
    assert sum(map(len, asr.splits.values())) == sum(map(len, pr.splits.values())) == 40  # no OOV word dropped
    assert set(pr.splits) == {"train", "dev", "test"} and all(pr.splits.values())
    assert {u.speaker for u in asr.splits["dev"]}.isdisjoint({u.speaker for u in asr.splits["train"]})
    # learnable: the first phone slot of each utterance sounds its first phone's tones (whatever the speaker)
    lex = lexicon()
    tones = phone_tones(sorted({p for ps in lex.values() for p in ps}))
    names, grid = list(tones), np.array(list(tones.values()))
    hits = []
    for u in pr.splits["train"]:
        x, sr = sf.read(u.audio, dtype="float32")
        mid = x[int(0.015 * sr): int(0.075 * sr)]
        spectrum = np.abs(np.fft.rfft(mid * np.hanning(len(mid)), n=1 << 15))
        freqs = np.fft.rfftfreq(1 << 15, 1 / sr)
        low = freqs[np.argmax(np.where(freqs < 1100, spectrum, 0))]
        high = freqs[np.argmax(np.where(freqs >= 1100, spectrum, 0))]
        guess = names[int(np.argmin(np.abs(np.log(grid / [low, high])).sum(axis=1)))]
        hits.append(guess == u.phones.split()[0])
    assert np.mean(hits) == 1.0


def test_speech_commands_layout_is_read_by_its_preparer_and_keywords_are_learnable(tmp_path):
    root = tmp_path / "sc"
    synthesize(SynthSpec("speech_commands", 600, seed=2, speakers=20), root)
    assert (root / "validation_list.txt").is_file() and (root / "_background_noise_" / "pink_noise.wav").is_file()
    manifest = load_task_manifest(prepare_speech_commands(root, tmp_path / "m"))
    assert manifest.labels == list(LABELS)
    assert {split: bool(rows) for split, rows in manifest.splits.items()} == {"train": True, "dev": True, "test": True}
    speakers = {split: {u.speaker for u in rows if u.label != "_silence_"} for split, rows in manifest.splits.items()}
    assert speakers["train"].isdisjoint(speakers["dev"] | speakers["test"])  # the corpus' hash rule, by speaker
    words = [(u.label, _spectrum(u.audio)) for u in manifest.splits["train"] + manifest.splits["test"]
             if u.label not in ("_unknown_", "_silence_")]
    assert _nearest_centroid_accuracy(words[::2], words[1::2]) >= 0.9  # chance: 1/10


def test_cli_synth_then_prepare(tmp_path, capsys):
    assert main(["data", "synth", "--layout", "voxceleb1", "--utterances", "12", "--hours", "0.002",
                 "--speakers", "2", "--out", str(tmp_path / "vc"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "voxceleb1 layout (seed 0): 12 files" in out and "superbench data prepare voxceleb1 --root" in out
    assert main(["data", "prepare", "voxceleb1", "--root", str(tmp_path / "vc"), "--out", str(tmp_path / "m")]) == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layout": "timit", "utterances": 3}, "unknown layout 'timit'"),
    ({"layout": "voxceleb1", "utterances": 0}, "utterances must be at least 1"),
    ({"layout": "voxceleb1", "utterances": 3, "hours": 0}, "hours must be positive"),
])
def test_a_spec_that_cannot_be_written_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthSpec(**kwargs)

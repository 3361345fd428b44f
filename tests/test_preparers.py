"""Each real-corpus preparer on a tiny fake corpus in the real layout, built here with short wavs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recipes.prepare import PrepareError
from superbench.cli import main
from superbench.manifest import load_task_manifest


def wav(path: Path, seconds: float = 0.3, sr: int = 16000, fmt: str = "WAV") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, format=fmt)
    return path


# --------------------------------------------------------------------------- Speech Commands

def make_speech_commands(root: Path) -> None:
    for word in ("yes", "no", "bed"):
        for spk in ("aaaa1111", "bbbb2222", "cccc3333"):
            wav(root / word / f"{spk}_nohash_0.wav")
    (root / "validation_list.txt").write_text("yes/bbbb2222_nohash_0.wav\nbed/bbbb2222_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/cccc3333_nohash_0.wav\nno/cccc3333_nohash_0.wav\n")
    wav(root / "_background_noise_" / "white_noise.wav", seconds=12.5)


def test_speech_commands_layout(tmp_path):
    from recipes.prepare.speech_commands import LABELS, prepare_speech_commands

    root = tmp_path / "sc"
    make_speech_commands(root)
    task_dir = prepare_speech_commands(root, tmp_path / "out")
    m = load_task_manifest(task_dir)
    assert m.labels == list(LABELS)
    by = {s: {u.id: u.label for u in rows} for s, rows in m.splits.items()}
    assert by["dev"]["yes-bbbb2222_nohash_0"] == "yes" and by["dev"]["bed-bbbb2222_nohash_0"] == "_unknown_"
    assert by["test"]["no-cccc3333_nohash_0"] == "no"
    assert by["train"]["bed-aaaa1111_nohash_0"] == "_unknown_"
    assert "yes-cccc3333_nohash_0" not in by["train"]  # test files never train
    # 12 one-second clips from 12.5 s of noise: k % 10 == 0 -> dev (k=0, 10), == 1 -> test (k=1, 11)
    silence = {s: sorted(i for i, lab in rows.items() if lab == "_silence_") for s, rows in by.items()}
    assert [len(silence[s]) for s in ("train", "dev", "test")] == [8, 2, 2]
    clip = next(u for u in m.splits["dev"] if u.label == "_silence_")
    assert clip.num_samples == 16000 and Path(clip.audio).is_file()
    assert by["train"]["no-bbbb2222_nohash_0"] == "no"  # only listed files leave train
    assert len([u for u in m.splits["train"] if u.label != "_silence_"]) == 9 - 4
    assert next(u for u in m.splits["train"] if u.id == "bed-cccc3333_nohash_0").speaker == "cccc3333"
    # manifests load back with the same content
    rows = [json.loads(line) for line in (task_dir / "dev.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {u.id for u in m.splits["dev"]}


def test_speech_commands_official_test_folder(tmp_path):
    from recipes.prepare.speech_commands import prepare_speech_commands

    root, test_root = tmp_path / "sc", tmp_path / "sc_test"
    make_speech_commands(root)
    wav(test_root / "yes" / "dddd4444_nohash_0.wav")
    wav(test_root / "_silence_" / "x_nohash_0.wav", seconds=1.0)
    m = load_task_manifest(prepare_speech_commands(root, tmp_path / "out", test_root=test_root))
    assert {u.id for u in m.splits["test"]} == {"testset-yes-dddd4444_nohash_0", "testset-_silence_-x_nohash_0"}
    all_ids = {u.id for rows in m.splits.values() for u in rows}
    assert "yes-cccc3333_nohash_0" not in all_ids  # testing_list files are left out, as s3prl does


def test_speech_commands_bad_inputs_are_reported_by_path(tmp_path):
    from recipes.prepare.speech_commands import prepare_speech_commands

    root = tmp_path / "sc"
    make_speech_commands(root)
    (root / "yes" / "eeee5555_nohash_0.wav").write_bytes(b"")  # zero-length
    (root / "no" / "ffff6666_nohash_0.wav").write_bytes(b"RIFF garbage, not a wav")  # corrupt
    with (root / "validation_list.txt").open("a") as fh:
        fh.write("up/gone_nohash_0.wav\n")  # label file naming a missing file
    with pytest.raises(PrepareError) as err:
        prepare_speech_commands(root, tmp_path / "out")
    msg = str(err.value)
    assert f"{root / 'yes' / 'eeee5555_nohash_0.wav'}: zero-length file" in msg
    assert f"{root / 'no' / 'ffff6666_nohash_0.wav'}: unreadable audio" in msg
    assert f"validation_list.txt:3: names a missing file {root / 'up' / 'gone_nohash_0.wav'}" in msg
    assert not (tmp_path / "out" / "ks" / "meta.json").exists()  # nothing half-written
    m = load_task_manifest(prepare_speech_commands(root, tmp_path / "out", skip_bad=True))
    assert "yes-eeee5555_nohash_0" not in {u.id for rows in m.splits.values() for u in rows}


def test_speech_commands_reads_every_soundfile_format_and_reports_what_it_drops(tmp_path, capsys):
    from recipes.prepare.speech_commands import prepare_speech_commands

    root = tmp_path / "sc"
    make_speech_commands(root)
    wav(root / "yes" / "dddd4444_nohash_0.ogg", fmt="OGG")
    opus = root / "no" / "dddd4444_nohash_0.opus"
    sf.write(str(opus), np.zeros(4800, dtype=np.float32), 48000, format="OGG", subtype="OPUS")
    wav(root / "up" / "dddd4444_nohash_0.flac", fmt="FLAC")
    (root / "no" / "README.md").write_text("not audio")
    with (root / "testing_list.txt").open("a") as fh:
        fh.write("yes/dddd4444_nohash_0.ogg\n")  # a listed .ogg goes to test, not nowhere
    m = load_task_manifest(prepare_speech_commands(root, tmp_path / "out"))
    by = {u.id: (s, u.label, u.sample_rate) for s, rows in m.splits.items() for u in rows}
    assert by["yes-dddd4444_nohash_0"] == ("test", "yes", 16000)
    assert by["no-dddd4444_nohash_0"] == ("train", "no", 48000)
    assert by["up-dddd4444_nohash_0"] == ("train", "up", 16000)
    dropped = m.extra["dropped"]
    assert dropped["file(s) in a format soundfile does not read"] == {"count": 1,
                                                                      "examples": [str(root / "no" / "README.md")]}
    assert dropped["word folder(s) not among the keywords, labelled _unknown_"] == {"count": 1,
                                                                                   "examples": ["bed (3)"]}
    # custom keywords: 'bed' is a class of its own, and the CLI summary says what was dropped and why
    m = load_task_manifest(prepare_speech_commands(root, tmp_path / "out2", words=("yes", "no", "bed")))
    assert m.labels == ["yes", "no", "bed", "_unknown_", "_silence_"] and m.extra["words"] == ["yes", "no", "bed"]
    assert {u.label for u in m.splits["train"] if u.id.startswith("up-")} == {"_unknown_"}
    assert main(["data", "prepare", "speech_commands", "--root", str(root), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert f"ks: 1 file(s) in a format soundfile does not read, e.g. {root / 'no' / 'README.md'}" in out
    assert "ks: 1 word folder(s) not among the keywords, labelled _unknown_, e.g. bed (3)" in out


# --------------------------------------------------------------------------- VoxCeleb1

def test_voxceleb1_iden_split(tmp_path):
    from recipes.prepare.voxceleb1 import prepare_voxceleb1

    root = tmp_path / "vox1"
    lines = []
    for spk in ("id10001", "id10002"):
        for k, split in enumerate("123"):
            rel = f"{spk}/vid{k}/0000{k}.wav"
            wav(root / "wav" / rel)
            lines.append(f"{split} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    m = load_task_manifest(prepare_voxceleb1(root, tmp_path / "out"))
    assert m.labels == ["id10001", "id10002"]
    assert [len(m.splits[s]) for s in ("train", "dev", "test")] == [2, 2, 2]
    assert {(u.id, u.label) for u in m.splits["test"]} == {("id10001-vid2-00002", "id10001"),
                                                          ("id10002-vid2-00002", "id10002")}
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n1 id10003/x/00001.wav\n")
    with pytest.raises(PrepareError, match=r"iden_split.txt:7: names a missing file .*id10003/x/00001.wav"):
        prepare_voxceleb1(root, tmp_path / "out2")


def test_voxceleb1_speaker_only_in_test_follows_the_manifest_rule(tmp_path):
    from recipes.prepare.voxceleb1 import prepare_voxceleb1
    from superbench.manifest import ManifestError

    root = tmp_path / "vox1"
    lines = []
    for spk, split in (("id10001", "1"), ("id10001", "3"), ("id10009", "2"), ("id10009", "3"), ("id10009", "3")):
        rel = f"{spk}/v{len(lines)}/00001.wav"
        wav(root / "wav" / rel)
        lines.append(f"{split} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"1 'label' value\(s\) never in train.jsonl: 'id10009' "
                                            r"\(dev 1, test 2\)"):
        prepare_voxceleb1(root, tmp_path / "out")
    assert not (tmp_path / "out" / "sid" / "meta.json").exists()


# --------------------------------------------------------------------------- IEMOCAP

def make_iemocap(root: Path) -> None:
    emos = ["neu", "hap", "exc", "ang", "sad", "fru"]
    for s in range(1, 6):
        dialog = f"Ses0{s}F_impro01"
        lines = ["% header line", ""]
        for k, emo in enumerate(emos):
            for g in "FM":
                utt = f"{dialog}_{g}{k:03d}"
                wav(root / f"Session{s}" / "sentences" / "wav" / dialog / f"{utt}.wav")
                lines.append(f"[{k}.0000 - {k}.5000]\t{utt}\t{emo}\t[2.5000, 2.5000, 2.5000]")
        path = root / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def test_iemocap_four_classes_five_folds(tmp_path):
    from recipes.prepare.iemocap import prepare_iemocap

    root = tmp_path / "IEMOCAP_full_release"
    make_iemocap(root)
    m = load_task_manifest(prepare_iemocap(root, tmp_path / "out"))
    assert m.labels == ["neutral", "happy", "angry", "sad"] and len(m.folds) == 5
    test1 = m.splits["fold1_test"]
    assert len(test1) == 10  # 5 kept emotions (exc merged, fru dropped) x 2 speakers
    assert sum(u.label == "happy" for u in test1) == 4
    assert {u.speaker for u in test1} == {"Ses01F", "Ses01M"}
    for k in range(1, 6):
        train, dev = m.splits[f"fold{k}_train"], m.splits[f"fold{k}_dev"]
        assert len(train) + len(dev) == 40 and len(dev) == 8  # 20 % of the other sessions
        assert not any(u.id.startswith(f"Ses0{k}") for u in train + dev)


def test_iemocap_label_line_naming_a_missing_wav(tmp_path):
    from recipes.prepare.iemocap import prepare_iemocap

    root = tmp_path / "IEMOCAP_full_release"
    make_iemocap(root)
    gone = root / "Session2" / "sentences" / "wav" / "Ses02F_impro01" / "Ses02F_impro01_M003.wav"
    gone.unlink()
    with pytest.raises(PrepareError, match=f"names Ses02F_impro01_M003, but {gone} is missing"):
        prepare_iemocap(root, tmp_path / "out")


# --------------------------------------------------------------------------- LibriSpeech

def make_librispeech(root: Path, extra_line: str = "") -> None:
    texts = {"train-clean-100": ["HELLO WORLD", "THE CAT'S HAT", "XYZZYQ HELLO"],
             "dev-clean": ["GOOD MORNING"], "test-clean": ["HELLO THERE"]}
    speakers = {"train-clean-100": "19", "dev-clean": "84", "test-clean": "61"}
    for subset, lines in texts.items():
        spk = speakers[subset]
        chapter = root / subset / spk / "198"
        rows = []
        for k, text in enumerate(lines):
            uid = f"{spk}-198-{k:04d}"
            wav(chapter / f"{uid}.flac", fmt="FLAC")
            rows.append(f"{uid} {text}")
        (chapter / f"{spk}-198.trans.txt").write_text("\n".join(rows) + "\n" + extra_line)


def test_librispeech_asr_and_pr(tmp_path):
    from recipes.prepare.librispeech import cmu_phone_set, prepare_librispeech

    root = tmp_path / "LibriSpeech"
    make_librispeech(root)
    dirs = prepare_librispeech(root, tmp_path / "out")
    asr, pr = load_task_manifest(dirs["asr"]), load_task_manifest(dirs["pr"])
    assert [u.text for u in asr.splits["train"]] == ["HELLO WORLD", "THE CAT'S HAT", "XYZZYQ HELLO"]
    assert "'" in asr.labels and " " in asr.labels
    assert pr.labels == cmu_phone_set() and len(pr.labels) == 39
    phones = {u.id: u.phones for u in pr.splits["train"]}
    assert phones["19-198-0000"] == "HH AH L OW W ER L D"  # CMUdict, stress removed
    assert "19-198-0002" not in phones  # OOV word -> utterance dropped from PR
    oov = pr.extra["oov"]["train"]
    assert (oov["oov_tokens"], oov["tokens"], oov["dropped_utterances"]) == (1, 7, 1)
    assert oov["oov_token_rate"] == pytest.approx(1 / 7, abs=1e-6)
    assert pr.splits["test"][0].phones == "HH AH L OW DH EH R"


def test_librispeech_transcript_outside_inventory(tmp_path):
    from recipes.prepare.librispeech import prepare_librispeech

    root = tmp_path / "LibriSpeech"
    make_librispeech(root)
    trans = root / "dev-clean" / "84" / "198" / "84-198.trans.txt"
    trans.write_text(trans.read_text() + "84-198-0001 GOOD MORNING 42!\n")
    with pytest.raises(PrepareError, match=r"84-198.trans.txt:2: 84-198-0001: characters outside the "
                                           r"inventory \['!', '2', '4'\]"):
        prepare_librispeech(root, tmp_path / "out")


# --------------------------------------------------------------------------- CLI and HF datasets

def test_cli_prepare_writes_manifests(tmp_path, capsys):
    root = tmp_path / "sc"
    make_speech_commands(root)
    assert main(["data", "prepare", "speech_commands", "--root", str(root), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "ks" in out and load_task_manifest(tmp_path / "o" / "ks").labels[-1] == "_silence_"
    assert main(["data", "prepare", "voxceleb1", "--root", str(tmp_path / "nowhere")]) == 2


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="optional extra 'datasets' not installed")
def test_hf_dataset_from_disk(tmp_path):
    import datasets

    from recipes.prepare.hf_datasets import prepare_hf_dataset

    src = tmp_path / "src"
    # audio stored as the {bytes, path} struct Audio uses on disk (writing an Audio feature needs torchcodec)
    feats = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                               "intent": datasets.ClassLabel(names=["down", "up"]), "who": datasets.Value("string")})
    parts = {}
    for split in ("train", "validation", "test"):
        rows = {"audio": [], "intent": [], "who": []}
        for label in (0, 1):
            path = wav(src / split / f"{label}.wav", sr=8000)
            rows["audio"].append({"bytes": path.read_bytes(), "path": None})
            rows["intent"].append(label)
            rows["who"].append(f"spk{label}")
        parts[split] = datasets.Dataset.from_dict(rows, features=feats)
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "saved"))
    task_dir = prepare_hf_dataset(str(tmp_path / "saved"), "ks", tmp_path / "out",
                                  columns={"label": "intent", "speaker": "who"})
    m = load_task_manifest(task_dir)
    assert m.labels == ["down", "up"] and len(m.splits["dev"]) == 2
    first = m.splits["train"][0]
    assert (first.label, first.speaker, first.sample_rate, first.num_samples) == ("down", "spk0", 16000, 4800)
    with pytest.raises(PrepareError, match=r"columns \['nope'\] not found"):
        prepare_hf_dataset(str(tmp_path / "saved"), "ks", tmp_path / "out2", columns={"label": "nope"})


def test_hf_dataset_without_the_extra_is_a_clear_error(monkeypatch):
    import builtins

    from recipes.prepare import hf_datasets

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'superbench\[datasets\]'") as err:
        hf_datasets.prepare_hf_dataset("some/dataset", "ks")
    assert isinstance(err.value, PrepareError)  # a ValueError too: the CLI prints one line, exit code 2
    assert main(["data", "prepare", "hf", "--root", "some/dataset", "--task", "ks"]) == 2

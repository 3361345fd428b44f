"""Manifest checks at load: unseen labels, leaked (byte-identical) audio, headers, meta.json fields; file modes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat

import numpy as np
import pytest
import soundfile as sf

from superbench.audio import save_wav
from superbench.io import atomic_write_text
from superbench.manifest import Fold, ManifestError, find_identical_audio, load_task_manifest, write_task_manifest


def _tone(path, hz: float, sr: int = 16000, n: int = 800) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(2 * np.pi * hz * np.arange(n) / sr)).astype(np.float32), sr)


def _rows(task_dir, split, labels, field="label"):
    rows = []
    for i, label in enumerate(labels):
        _tone(task_dir / "wav" / f"{split}{i}.wav", 200 + 50 * i + 500 * (split == "train"))
        rows.append({"id": f"{split}{i}", "audio": f"wav/{split}{i}.wav", "sample_rate": 16000,
                     "num_samples": 800, "speaker": "s", field: label})
    return rows


def _hand_write(task_dir, splits, labels, label_field="label", **meta_extra):
    """A hand-written manifest: split files and meta.json without write_task_manifest."""
    for split, rows in splits.items():
        (task_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"task": "sid", "corpus": "hand", "version": "1", "label_field": label_field, "labels": labels,
            "folds": [{"name": "default", "train": "train", "dev": "dev", "test": "test"}],
            "splits": {s: len(r) for s, r in splits.items()}, "fingerprint": "0" * 16, **meta_extra}
    (task_dir / "meta.json").write_text(json.dumps(meta))
    return task_dir


def test_labels_unseen_in_train_are_an_error_with_counts_and_an_opt_out(tmp_path):
    d = tmp_path / "sid"
    splits = {"train": _rows(d, "train", ["a", "b"]), "dev": _rows(d, "dev", ["a", "c"]),
              "test": _rows(d, "test", ["a", "c", "c", "d"])}
    kw = dict(task="sid", corpus="t", version="1", label_field="label", labels=["a", "b", "c", "d"], splits=splits)
    with pytest.raises(ManifestError, match=r"fold 'default': 2 'label' value\(s\) never in train.jsonl: "
                                            r"'c' \(dev 1, test 2\), 'd' \(test 1\)"):
        write_task_manifest(d, **kw)
    assert not (d / "meta.json").exists()  # refused before anything is written

    _hand_write(d, splits, ["a", "b", "c", "d"])  # the same rows written by hand: refused at load
    with pytest.raises(ManifestError, match=r"'c' \(dev 1, test 2\), 'd' \(test 1\)") as err:
        load_task_manifest(d)
    assert '"allow_unseen_labels": true' in str(err.value)
    _hand_write(d, splits, ["a", "b", "c", "d"], allow_unseen_labels=True)
    assert load_task_manifest(d).allow_unseen_labels

    write_task_manifest(d, **kw, allow_unseen_labels=True)
    assert json.loads((d / "meta.json").read_text())["allow_unseen_labels"] is True
    assert [u.label for u in load_task_manifest(d).splits["test"]] == ["a", "c", "c", "d"]


def test_unseen_rule_is_per_fold_and_only_for_class_labels(tmp_path):
    d = tmp_path / "er"
    a, b = _rows(d, "train", ["x", "y"]), _rows(d, "dev", ["x", "z"])
    # fold2 trains on `b`, which has no 'y'; fold1 is fine
    folds = [Fold("fold1", "train", "train", "train"), Fold("fold2", "dev", "dev", "train")]
    with pytest.raises(ManifestError, match=r"fold 'fold2': 1 'label' value\(s\) never in dev.jsonl: 'y' "
                                            r"\(train 1\)") as err:
        write_task_manifest(d, task="er", corpus="t", version="1", label_field="label", labels=["x", "y", "z"],
                            splits={"train": a, "dev": b}, folds=folds)
    assert "fold1" not in str(err.value)
    # phones are sequences, not classes: a phone only in test is no unseen *label*
    p = tmp_path / "pr"
    splits = {"train": _rows(p, "train", ["a b"], "phones"), "dev": _rows(p, "dev", ["a"], "phones"),
              "test": _rows(p, "test", ["b c"], "phones")}
    write_task_manifest(p, task="pr", corpus="t", version="1", label_field="phones", labels=["a", "b", "c"],
                        splits=splits)
    assert load_task_manifest(p).splits["test"][0].phones == "b c"


def test_byte_identical_audio_in_train_and_test_is_a_warning_naming_the_pairs(tmp_path, caplog, monkeypatch):
    d = tmp_path / "ks"
    splits = {"train": _rows(d, "train", ["a", "b"]), "dev": _rows(d, "dev", ["a"]),
              "test": _rows(d, "test", ["a", "b"])}
    shutil.copy(d / "wav" / "train1.wav", d / "wav" / "test0.wav")  # the leak: a copy under another name
    write_task_manifest(d, task="ks", corpus="t", version="1", label_field="label", labels=["a", "b"], splits=splits)
    with caplog.at_level(logging.WARNING, logger="superbench.manifest"):
        m = load_task_manifest(d)
    assert find_identical_audio(m) == [
        f"test.jsonl id='test0' is byte-identical to train.jsonl id='train1' "
        f"({d / 'wav' / 'test0.wav'} == {d / 'wav' / 'train1.wav'})"]
    assert "1 row(s) with byte-identical audio" in caplog.text and "id='test0'" in caplog.text
    caplog.clear()
    load_task_manifest(d, check_duplicates=False)
    monkeypatch.setenv("SUPERBENCH_DUPLICATE_CHECK", "0")
    load_task_manifest(d)
    assert "byte-identical" not in caplog.text


def test_declared_sample_rate_and_length_are_checked_against_the_header(tmp_path):
    d = tmp_path / "ks"
    splits = {s: _rows(d, s, ["a"]) for s in ("train", "dev", "test")}
    _tone(d / "wav" / "dev0.wav", 300, sr=8000, n=800)  # the row still says 16000
    _tone(d / "wav" / "test0.wav", 300, n=700)  # the row still says 800 samples
    write_task_manifest(d, task="ks", corpus="t", version="1", label_field="label", labels=["a"], splits=splits)
    with pytest.raises(ManifestError) as err:
        load_task_manifest(d)
    msg = str(err.value)
    assert "2 row(s) with a header that disagrees with the row" in msg
    assert f"dev.jsonl id='dev0': 'sample_rate' is 16000, the file says 8000 ({d / 'wav' / 'dev0.wav'})" in msg
    assert f"test.jsonl id='test0': 'num_samples' is 800, the file has 700 ({d / 'wav' / 'test0.wav'})" in msg
    assert load_task_manifest(d, check_files=False).splits["dev"][0].sample_rate == 16000


def test_meta_and_row_fields_are_named_when_missing(tmp_path):
    d = tmp_path / "ks"
    splits = {s: _rows(d, s, ["a"]) for s in ("train", "dev", "test")}
    write_task_manifest(d, task="ks", corpus="t", version="1", label_field="label", labels=["a"], splits=splits)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "fingerprint"}))
    with pytest.raises(ManifestError, match=rf"{d / 'meta.json'}: missing field\(s\) 'fingerprint'"):
        load_task_manifest(d)
    (d / "meta.json").write_text(json.dumps(meta)[:-5])
    with pytest.raises(ManifestError, match=rf"{d / 'meta.json'}: not valid JSON"):
        load_task_manifest(d)
    (d / "meta.json").write_text(json.dumps(meta))
    row = {k: v for k, v in splits["dev"][0].items() if k != "sample_rate"}
    (d / "dev.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ManifestError, match=rf"{d / 'dev.jsonl'}:1: missing field\(s\) 'sample_rate'"):
        load_task_manifest(d)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "record.json", "{}")
        save_wav(tmp_path / "a.wav", np.zeros(400))
    finally:
        os.umask(old)
    for name in ("record.json", "a.wav"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "record.json"]  # no temp file left


def test_save_wav_refuses_to_clip_and_keeps_floats_exactly(tmp_path):
    from superbench.audio import AudioError

    wav = np.array([0.0, 1.5, -0.25, 0.5] * 100, dtype=np.float32)
    with pytest.raises(AudioError, match=r"a.wav: peak 1.5000 is above full scale, PCM_16 would clip it"):
        save_wav(tmp_path / "a.wav", wav)
    assert not (tmp_path / "a.wav").exists()
    save_wav(tmp_path / "a.wav", wav, subtype="FLOAT")
    back, sr = sf.read(tmp_path / "a.wav", dtype="float32")
    assert sr == 16000 and np.array_equal(back, wav) and sf.info(tmp_path / "a.wav").subtype == "FLOAT"


def test_an_utterance_twice_in_a_split_or_with_two_labels_is_refused_naming_rows(tmp_path):
    d = tmp_path / "sid"
    splits = {"train": _rows(d, "train", ["a", "b"]), "dev": _rows(d, "dev", ["a", "b"]),
              "test": _rows(d, "test", ["a", "b"])}
    load_task_manifest(_hand_write(d, splits, ["a", "b"]))  # the clean corpus loads
    twice = {**splits, "test": splits["test"] + [splits["test"][0]]}  # scored twice: 3 predictions for 2 ids
    with pytest.raises(ManifestError, match=r"(?s)an id listed twice in one split.*test\.jsonl id='test0'"):
        load_task_manifest(_hand_write(d, twice, ["a", "b"]))
    relabelled = {**splits, "test": splits["test"] + [splits["train"][0] | {"label": "b"}]}  # id and audio of train0
    with pytest.raises(ManifestError, match=r"(?s)contradictory labels.*test\.jsonl id='train0': label='b' but "
                                            r"train\.jsonl has label='a'"):
        load_task_manifest(_hand_write(d, relabelled, ["a", "b"]))
    with pytest.raises(ManifestError, match="an id listed twice in one split"):
        write_task_manifest(d, task="sid", corpus="t", version="1", label_field="label", labels=["a", "b"],
                            splits=twice)
    # the same utterance in several splits with one label is how folds share rows: accepted
    shared = {**splits, "test": splits["test"] + [splits["train"][0]]}
    assert len(load_task_manifest(_hand_write(d, shared, ["a", "b"])).splits["test"]) == 3

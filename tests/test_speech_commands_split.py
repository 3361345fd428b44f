"""Speech Commands without validation_list.txt / testing_list.txt: the corpus's own file-name hash rule."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recipes.prepare import PrepareError
from superbench.manifest import load_task_manifest

# Speaker ids picked so each split is hit; the expected split is hand-checked against the README formula below.
EXPECTED = {"00000000": "dev", "000c000c": "dev", "00010001": "train", "00020002": "train",
            "000e000e": "test", "00140014": "test"}


def percentage(name: str) -> float:
    """The README's which_set arithmetic, written out here independently of the preparer."""
    stem = name[: name.index("_nohash_")] if "_nohash_" in name else name
    h = int(hashlib.sha1(stem.encode("utf-8")).hexdigest(), 16)
    return (h % 2**27) * (100.0 / (2**27 - 1))


def wav(path: Path, seconds: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def make_corpus(root: Path) -> None:
    for word in ("yes", "no", "bed"):
        for spk in EXPECTED:
            for k in (0, 1):
                wav(root / word / f"{spk}_nohash_{k}.wav")
    wav(root / "_background_noise_" / "white_noise.wav", seconds=12.5)


def test_expected_splits_are_the_readme_formula():
    for spk, split in EXPECTED.items():
        p = percentage(f"{spk}_nohash_0.wav")
        assert split == ("dev" if p < 10 else "test" if p < 20 else "train"), (spk, p)


def test_which_set_matches_hand_computed_splits():
    from recipes.prepare.speech_commands import which_set

    for spk, split in EXPECTED.items():
        for name in (f"{spk}_nohash_0.wav", f"{spk}_nohash_3.wav", f"yes/{spk}_nohash_1.flac"):
            assert which_set(name) == split, name  # same speaker (prefix before _nohash_) -> same split
    # the folder (word) plays no part, only the base name; a name without _nohash_ hashes whole
    assert which_set("/any/dir/bobby_nohash_0.wav") == which_set("bobby_nohash_7.wav")
    p = percentage("bobby")
    assert which_set("bobby") == ("dev" if p < 10 else "test" if p < 20 else "train")


def test_corpus_without_lists_is_split_by_hash(tmp_path, caplog):
    from recipes.prepare.speech_commands import prepare_speech_commands

    root = tmp_path / "sc"
    make_corpus(root)
    with caplog.at_level(logging.WARNING, logger="recipes.prepare.speech_commands"):
        task_dir = prepare_speech_commands(root, tmp_path / "out")
    assert any("no validation_list.txt / testing_list.txt" in r.getMessage() for r in caplog.records)
    m = load_task_manifest(task_dir)
    where = {u.id: s for s, rows in m.splits.items() for u in rows if u.label != "_silence_"}
    assert len(where) == 3 * len(EXPECTED) * 2
    for uid, split in where.items():
        assert split == EXPECTED[uid.split("-")[1].split("_nohash_")[0]], uid
    for split in ("train", "dev", "test"):
        assert any(u.label != "_silence_" for u in m.splits[split]), split
    # silence clips keep their k % 10 rule: 12 clips -> 8 train, 2 dev, 2 test
    assert [sum(u.label == "_silence_" for u in m.splits[s]) for s in ("train", "dev", "test")] == [8, 2, 2]
    meta = json.loads((task_dir / "meta.json").read_text())
    assert meta["extra"]["split_rule"] == ("hash of file name (Speech Commands which_set, 10% validation, "
                                           "10% testing)")
    assert m.extra["split_rule"] == meta["extra"]["split_rule"]


def test_hash_split_with_official_test_folder_leaves_hashed_test_files_out(tmp_path):
    from recipes.prepare.speech_commands import prepare_speech_commands

    root, test_root = tmp_path / "sc", tmp_path / "sc_test"
    make_corpus(root)
    wav(test_root / "yes" / "dddd4444_nohash_0.wav")
    m = load_task_manifest(prepare_speech_commands(root, tmp_path / "out", test_root=test_root))
    assert {u.id for u in m.splits["test"]} == {"testset-yes-dddd4444_nohash_0"}
    all_ids = {u.id for rows in m.splits.values() for u in rows}
    assert "yes-000e000e_nohash_0" not in all_ids
    assert m.extra["dropped"]["hashed-to-test file(s) left out (the test folder is the test set)"]["count"] == 12


@pytest.mark.parametrize("present", ["validation_list.txt", "testing_list.txt"])
def test_one_list_only_is_refused(tmp_path, present):
    from recipes.prepare.speech_commands import prepare_speech_commands

    root = tmp_path / "sc"
    make_corpus(root)
    (root / present).write_text("yes/00000000_nohash_0.wav\n")
    missing = "testing_list.txt" if present == "validation_list.txt" else "validation_list.txt"
    for skip_bad in (False, True):
        with pytest.raises(PrepareError, match=f"{present} is there but .*{missing} is missing") as err:
            prepare_speech_commands(root, tmp_path / "out", skip_bad=skip_bad)
        assert "give both lists, or remove both" in str(err.value)
    assert not (tmp_path / "out" / "ks" / "meta.json").exists()

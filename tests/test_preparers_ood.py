"""The SUPERB-SG part-2 preparers on fake trees: Common Voice (mp3 clips and tsv files) and SBCSAE (mp3
recordings and .trn transcripts) for OOD-ASR, CoVoST 2 (Common Voice 4 English clips and the en-de table) for ST.
soundfile writes MP3 here (libsndfile >= 1.1), so every happy path decodes real mp3s; a corrupt .mp3 tests the
decode error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from recipes.prepare import PrepareError
from recipes.prepare.common_voice import normalize, prepare_common_voice
from recipes.prepare.sbcsae import clean, prepare_sbcsae
from superbench.manifest import load_task_manifest
from superbench.preparers import PREPARERS, PrepareRequest

pytestmark = pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3 (< 1.1)")
HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment\n"


def _mp3(path: Path, seconds: float, rate: int = 48000, channels: int = 1, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, np.repeat(wav[:, None], channels, axis=1).astype(np.float32), rate, format="MP3")


def _cv_tree(root: Path, rows: dict[str, list[tuple[str, str, str]]]) -> Path:
    """rows: split -> (client, sentence, accent); one 1 s mp3 per row."""
    k = 0
    for split, items in rows.items():
        lines = []
        for client, sentence, accent in items:
            name = f"common_voice_es_{k:05d}.mp3"
            _mp3(root / "clips" / name, 1.0, seed=k % 5)
            lines.append(f"{client}\t{name}\t{sentence}\t2\t0\t\t\t{accent}\tes\t\n")
            k += 1
        (root / f"{split}.tsv").write_text(HEADER + "".join(lines), encoding="utf-8")
    return root


def test_common_voice_normalisation_follows_s3prl() -> None:
    assert normalize("¿Qué tal, amigo?  «Bien»", "es") == "QUÉ TAL AMIGO BIEN"
    assert normalize("It’s fine", "es") == "IT'S FINE"
    assert normalize("我们 今天、去 公园。", "zh-CN") == "我们今天去公园"
    assert normalize("我 like 你", "zh-CN") == ""  # a Latin letter drops a Mandarin row
    assert normalize("䴕鸟", "zh-CN") == "" and normalize("箱 abc", "es") == ""
    assert normalize("مرحبا، يا صديقي؟", "ar") == "مرحبا يا صديقي"
    assert normalize("مرحبا OK", "ar") == ""
    assert normalize("ｆｕｌｌ width", "es") == "FULL WIDTH"  # NFKC


def test_common_voice_spanish_writes_mexican_rows_with_the_training_inventory(tmp_path: Path) -> None:
    root = _cv_tree(tmp_path / "es", {
        "train": [("a", "Hola amigo.", "mexicano"), ("b", "Buenos días", "mexicano"), ("c", "Adiós", "andino")],
        "dev": [("d", "hola", "mexicano"), ("d", "Año nuevo", "mexicano")],
        "test": [("e", "buenos días amigo", "mexicano"), ("e", "箱", "mexicano")]})
    folder = PREPARERS.get("common-voice").prepare(PrepareRequest(str(root), tmp_path / "out",
                                                                  options={"language": "es"})) / "ood_es"
    m = load_task_manifest(folder)
    assert (m.task, m.corpus, m.label_field) == ("ood_es", "common-voice", "text")
    assert [u.text for u in m.splits["train"]] == ["HOLA AMIGO", "BUENOS DÍAS"]
    assert [u.text for u in m.splits["dev"]] == ["HOLA"]  # AÑO NUEVO has Ñ, N, U, E, V not in train
    assert [u.text for u in m.splits["test"]] == ["BUENOS DÍAS AMIGO"]
    assert m.labels == sorted(set("HOLAMIGBUENSDÍ"))
    u = m.splits["train"][0]
    assert (u.sample_rate, u.num_samples, u.speaker) == (48000, 48000, "a") and u.audio.endswith(".mp3")
    dropped = json.loads((folder / "meta.json").read_text())["extra"]["dropped"]
    assert dropped["rows with an accent other than 'mexicano' (s3prl's Spanish set)"]["count"] == 1
    assert dropped["dev/test rows with a character no training transcript has"]["count"] == 1
    assert dropped["sentences s3prl's normalisation drops"]["count"] == 1


def test_common_voice_mandarin_and_refusals(tmp_path: Path) -> None:
    root = _cv_tree(tmp_path / "zh", {"train": [("a", "你好 世界", ""), ("b", "世界很大。", "")],
                                      "dev": [("c", "你好", "")], "test": [("d", "世界", "")]})
    folder = prepare_common_voice(root, tmp_path / "out", language="zh-CN")
    m = load_task_manifest(folder)
    assert folder.name == "ood_zh" and [u.text for u in m.splits["train"]] == ["你好世界", "世界很大"]
    with pytest.raises(ValueError, match="choose one of es, zh-CN, ar"):
        prepare_common_voice(root, tmp_path / "out", language="fr")
    (root / "clips" / "common_voice_es_00002.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x17" * 400)
    with pytest.raises(PrepareError, match="common_voice_es_00002.mp3") as err:
        prepare_common_voice(root, tmp_path / "out2", language="zh-CN")
    assert not (tmp_path / "out2").exists()  # nothing written
    assert "1 problem(s)" in str(err.value)
    with pytest.raises(ValueError, match="no usable dev row"):  # --skip-bad leaves the clip out: dev is empty
        prepare_common_voice(root, tmp_path / "out3", language="zh-CN", skip_bad=True)


def test_sbcsae_cleaning_follows_the_preprocess_rules() -> None:
    assert clean("so (H) I said= well, okay.") == "SO I SAID WELL OKAY"
    assert clean("[yeah] right") == "" and clean("<X what X>") == "" and clean("we (laughing") == ""
    assert clean("the XX thing") == "" and clean("a X b") == "" and clean("o") == ""
    assert clean("don’t-know") == "DON'T KNOW" and clean("fifty 50") == ""


def test_sbcsae_segments_split_by_recording(tmp_path: Path) -> None:
    root = tmp_path / "sbcsae"
    trn = {1: ["0.00 1.50\tJOE:\tso (H) we went there.", "1.60 3.00\tJILL:\tright,", "2.90 4.00\t\t[overlap] yes",
               "4.10 20.00\tJOE:\ttoo long", "4.10 5.00\tJOE:\tthe XX thing", "5.10 6.00\tJILL:\twell okay"],
           47: ["0.10 1.00 JOE:\tso there"], 54: ["0.20\t1.20\tJILL:\twe went"]}
    for i, lines in trn.items():
        (root / "trn").mkdir(parents=True, exist_ok=True)
        (root / "trn" / f"SBC{i:03d}.trn").write_text("\n".join(lines) + "\n", encoding="utf-8")
        _mp3(root / "mp3" / f"{i:02d}.mp3", 7.0, rate=22050, channels=2, seed=i % 5)
    folder = prepare_sbcsae(root, tmp_path / "out")
    m = load_task_manifest(folder)
    # "right," (1.6-3.0) overlaps "[overlap] yes" only before cleaning drops that line: it stays
    assert [(u.id, u.text) for u in m.splits["train"]] == [
        ("SBC001_000000-000150", "SO WE WENT THERE"), ("SBC001_000160-000300", "RIGHT"),
        ("SBC001_000509-000600", "WELL OKAY")]  # int(5.1 * 100), as s3prl names it
    assert [u.text for u in m.splits["dev"]] == ["SO THERE"] and [u.text for u in m.splits["test"]] == ["WE WENT"]
    u = m.splits["train"][0]
    assert (u.sample_rate, u.num_samples, u.speaker) == (16000, 24001, "SBC001")
    assert sf.info(u.audio).channels == 1
    (root / "mp3" / "47.mp3").write_bytes(b"\xff\xfb" + b"\x00" * 100)
    with pytest.raises(PrepareError, match="47.mp3"):
        prepare_sbcsae(root, tmp_path / "out2")


def test_sbcsae_drops_overlapping_segments() -> None:
    from recipes.prepare import Dropped
    from recipes.prepare.sbcsae import segments

    path = Path(__file__).parent / "_sbc_tmp.trn"
    try:
        path.write_text("0.0 2.0\tA:\tone two\n1.5 3.0\tB:\tthree four\n3.5 4.0\tA:\tfive six\n")
        assert segments(path, Dropped("t")) == [(3.5, 4.0, "FIVE SIX")]
    finally:
        path.unlink()


# ---------------------------------------------------------------------- CoVoST 2 (speech translation)

COVOST_HEADER = "path\tsentence\ttranslation\tclient_id\tsplit\n"


def _covost_tree(root: Path, rows: list[tuple[str, str, str, str]], clips: bool = True) -> Path:
    """rows: (sentence, translation, client_id, split); one 1 s mp3 per row, named by its position."""
    lines = []
    for k, (sentence, translation, client, split) in enumerate(rows):
        name = f"common_voice_en_{k:05d}.mp3"
        if clips:
            _mp3(root / "clips" / name, 1.0, seed=k % 5)
        lines.append(f"{name}\t{sentence}\t{translation}\t{client}\t{split}\n")
    (root / "covost_v2.en_de.tsv").write_text(COVOST_HEADER + "".join(lines), encoding="utf-8")
    return root


COVOST_ROWS = [("Hello there.", "Hallo zusammen.", "a", "train"), ("Good morning", "Guten Morgen", "b", "train"),
               ("How are you?", "Wie geht es dir?", "c", "dev"), ("Thank you", "Danke", "", "test")]


def test_covost2_writes_the_st_manifest_with_speakers_from_common_voice(tmp_path: Path) -> None:
    root = _covost_tree(tmp_path / "cv4", COVOST_ROWS)
    # the last row's speaker is only in Common Voice's validated.tsv
    (root / "validated.tsv").write_text("client_id\tpath\tsentence\nd\tcommon_voice_en_00003.mp3\tThank you\n",
                                        encoding="utf-8")
    out = PREPARERS.get("covost2").prepare(PrepareRequest(str(root), tmp_path / "out"))
    assert out == tmp_path / "out"
    m = load_task_manifest(out / "st")
    assert (m.task, m.label_field, m.corpus) == ("st", "translation", "covost2")
    assert {s: [u.targets["translation"] for u in m.splits[s]] for s in m.splits} == {
        "train": ["Hallo zusammen.", "Guten Morgen"], "dev": ["Wie geht es dir?"], "test": ["Danke"]}
    (test,) = m.splits["test"]
    assert (test.id, test.speaker, test.targets["text"]) == ("common_voice_en_00003", "d", "Thank you")
    assert (test.sample_rate, test.num_samples) == (48000, 48000) and test.audio.endswith(".mp3")


def test_covost2_names_file_and_line_of_every_bad_row_before_writing(tmp_path: Path) -> None:
    from recipes.prepare.covost2 import prepare_covost2

    rows = [*COVOST_ROWS[:3], ("Thank you", "", "d", "test"), ("Bye", "Tschüss", "e", "valid"),
            ("Later", "Später", "f", "test"), ("Broken", "Kaputt", "g", "test")]
    root = _covost_tree(tmp_path / "cv4", rows)
    (root / "clips" / "common_voice_en_00005.mp3").unlink()
    (root / "clips" / "common_voice_en_00006.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\x17" * 400)
    with pytest.raises(PrepareError) as err:
        prepare_covost2(root, tmp_path / "out")
    text, table = str(err.value), root / "covost_v2.en_de.tsv"
    assert "covost2: 4 problem(s)" in text
    assert f"{table}:5: clip common_voice_en_00003.mp3 has no translation (the German target is empty)" in text
    assert f"{table}:6: split 'valid' is not one of train, dev, test" in text
    assert f"{table}:7: clip {root / 'clips' / 'common_voice_en_00005.mp3'} is missing" in text
    assert f"{table}:8: {root / 'clips' / 'common_voice_en_00006.mp3'}: " in text  # does not decode
    assert not (tmp_path / "out").exists()  # nothing written


def test_covost2_without_its_table_or_a_column_says_the_layout(tmp_path: Path) -> None:
    from recipes.prepare.covost2 import prepare_covost2

    with pytest.raises(FileNotFoundError, match=r"covost_v2.en_de.tsv not found \(CoVoST 2's layout: ROOT/clips"):
        prepare_covost2(tmp_path, tmp_path / "out")
    (tmp_path / "covost_v2.en_de.tsv").write_text("path\tsentence\tsplit\nx.mp3\tHi\ttrain\n", encoding="utf-8")
    with pytest.raises(PrepareError, match="covost_v2.en_de.tsv: no column translation"):
        prepare_covost2(tmp_path, tmp_path / "out")


def test_covost2_says_which_libsndfile_cannot_decode_mp3(tmp_path: Path, monkeypatch) -> None:
    from recipes.prepare import covost2

    monkeypatch.setattr(sf, "available_formats", lambda: {"WAV": "Microsoft WAV"})
    with pytest.raises(PrepareError, match=rf"uses libsndfile {sf.__libsndfile_version__}, which cannot decode mp3 "
                                           r"\(libsndfile >= 1.1 can"):
        covost2.prepare_covost2(_covost_tree(tmp_path, COVOST_ROWS, clips=False), tmp_path / "out")

"""The Hugging Face preparer with the `datasets` version the dev extra installs (5.x here, no torchcodec)."""

from __future__ import annotations

import importlib.util
import io
import json
import logging

import numpy as np
import pytest
import soundfile as sf

from recipes.prepare import PrepareError
from superbench.cli import main
from superbench.manifest import load_task_manifest

datasets = pytest.importorskip("datasets")


def _wav_bytes(x: np.ndarray, sr: int = 16000, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _saved(tmp_path, waves: dict[str, list[tuple[np.ndarray, str]]], audio_feature: bool = False) -> str:
    """A save_to_disk DatasetDict with audio as undecoded {bytes, path} (or a real Audio feature)."""
    feats = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                               "label": datasets.Value("string")})
    parts = {}
    for split, items in waves.items():
        rows = {"audio": [{"bytes": _wav_bytes(x), "path": None} for x, _ in items], "label": [y for _, y in items]}
        parts[split] = datasets.Dataset.from_dict(rows, features=feats)
        if audio_feature:  # casting a struct to Audio stores it as Audio without encoding (no torchcodec)
            parts[split] = parts[split].cast_column("audio", datasets.Audio())
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "saved"))
    return str(tmp_path / "saved")


def _tone(n: int = 4000, peak: float = 0.5) -> np.ndarray:
    x = np.sin(2 * np.pi * 440 * np.arange(n) / 16000)
    return peak * x / np.abs(x).max()


def test_peaks_above_full_scale_are_kept_as_float_not_clipped(tmp_path):
    from recipes.prepare.hf_datasets import prepare_hf_dataset

    hot = _tone(peak=1.5)  # e.g. a float source, or resampling overshoot
    src = _saved(tmp_path, {"train": [(hot, "a"), (_tone(), "b")], "validation": [(_tone(), "a")],
                            "test": [(_tone(), "b")]})
    m = load_task_manifest(prepare_hf_dataset(src, "ks", tmp_path / "out"))
    path = next(u.audio for u in m.splits["train"] if u.label == "a")
    back, sr = sf.read(path, dtype="float32")
    assert sf.info(path).subtype == "FLOAT" and sr == 16000
    assert float(np.abs(back).max()) == pytest.approx(1.5, abs=1e-6)
    assert np.array_equal(back, hot.astype(np.float32))  # bit-exact: no scaling, no clipping
    assert m.extra["audio"] == {"format": "WAV", "subtype": "FLOAT", "sample_rate": 16000, "scale": 1.0,
                                "peaks_above_full_scale": 1}


def test_audio_feature_is_read_undecoded_without_torchcodec(tmp_path):
    from recipes.prepare.hf_datasets import prepare_hf_dataset

    src = _saved(tmp_path, {"train": [(_tone(), "a"), (_tone(), "b")], "validation": [(_tone(), "a")],
                            "test": [(_tone(), "b")]}, audio_feature=True)
    assert isinstance(datasets.load_from_disk(src)["train"].features["audio"], datasets.Audio)
    m = load_task_manifest(prepare_hf_dataset(src, "ks", tmp_path / "out"))
    assert [len(m.splits[s]) for s in ("train", "dev", "test")] == [2, 1, 1]
    if importlib.util.find_spec("torchcodec") is None:  # the situation the preparer is built for
        with pytest.raises(ImportError, match="torchcodec"):
            datasets.load_from_disk(src)["train"][0]  # decoding it the datasets way would fail here


def _audiofolder(root, fmt_of=lambda label: "WAV") -> None:
    for split, per in (("train", 2), ("validation", 1), ("test", 1)):
        for label in ("down", "up"):
            for k in range(per):
                path = root / split / label / f"{label}{k}.{fmt_of(label).lower()}"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, _tone(8000).astype(np.float32), 16000, format=fmt_of(label))
    (root / "train" / "up" / "notes.txt").write_text("not audio")


def test_audiofolder_with_the_installed_datasets(tmp_path, capsys):
    from recipes.prepare.hf_datasets import prepare_hf_dataset

    root = tmp_path / "af"
    _audiofolder(root, fmt_of=lambda label: "FLAC" if label == "up" else "WAV")
    m = load_task_manifest(prepare_hf_dataset(f"audiofolder:{root}", "ks", tmp_path / "out"))
    assert m.labels == ["down", "up"] and [len(m.splits[s]) for s in ("train", "dev", "test")] == [4, 2, 2]
    assert sorted(u.label for u in m.splits["train"]) == ["down", "down", "up", "up"]
    assert all(u.num_samples == 8000 for u in m.utterances())
    # the CLI path prints a summary, with no traceback
    assert main(["data", "prepare", "hf", "--root", f"audiofolder:{root}", "--task", "ks",
                 "--out", str(tmp_path / "cli")]) == 0
    assert "ks" in capsys.readouterr().out


def test_audiofolder_metadata_file(tmp_path):
    from recipes.prepare.hf_datasets import prepare_hf_dataset

    root = tmp_path / "af"
    for split in ("train", "validation", "test"):
        (root / split).mkdir(parents=True)
        lines = []
        for k, word in enumerate(("yes", "no")):
            sf.write(root / split / f"clip{k}.wav", _tone(4000).astype(np.float32), 16000)
            lines.append(json.dumps({"file_name": f"clip{k}.wav", "intent": word, "who": f"spk{k}"}))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    m = load_task_manifest(prepare_hf_dataset(f"audiofolder:{root}", "ks", tmp_path / "out",
                                              columns={"label": "intent", "speaker": "who"}))
    assert {(u.label, u.speaker) for u in m.splits["test"]} == {("yes", "spk0"), ("no", "spk1")}


def test_load_failures_are_one_clear_line_in_the_cli(tmp_path, caplog):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "dataset_dict.json").write_text("{not json")
    with caplog.at_level(logging.ERROR):
        assert main(["data", "prepare", "hf", "--root", str(bad), "--task", "ks", "--out", str(tmp_path / "o")]) == 2
    assert f"error: {bad}: datasets {datasets.__version__} cannot load it" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main(["data", "prepare", "hf", "--root", f"audiofolder:{tmp_path / 'nowhere'}", "--task", "ks"]) == 2
    assert "audiofolder not found" in caplog.text


def test_labels_only_in_test_are_refused_before_decoding(tmp_path):
    from recipes.prepare.hf_datasets import prepare_hf_dataset

    src = _saved(tmp_path, {"train": [(_tone(), "a")], "validation": [(_tone(), "a"), (_tone(), "b")],
                            "test": [(_tone(), "b"), (_tone(), "b"), (_tone(), "c")]})
    with pytest.raises(PrepareError, match=r"'b' \(dev 1, test 2\), 'c' \(test 1\)"):
        prepare_hf_dataset(src, "ks", tmp_path / "out")
    assert not (tmp_path / "out" / "audio").exists()  # refused before any audio was decoded or written
    m = load_task_manifest(prepare_hf_dataset(src, "ks", tmp_path / "out", allow_unseen_labels=True))
    assert m.allow_unseen_labels and m.labels == ["a", "b", "c"]

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from superbench.audio import AudioError, check_waveform, load_audio
from superbench.featurizer import WeightedSum
from superbench.manifest import Fold, ManifestError, load_task_manifest, write_task_manifest
from superbench.records import RecordError, ResultRecord, read_record, write_record
from superbench.registry import DuplicateNameError, Registry, UnknownNameError


def test_registry_refuses_duplicates_and_suggests_near_matches():
    reg = Registry("upstream")
    reg.register("hubert", 1)
    with pytest.raises(DuplicateNameError, match="'hubert' from built-in is already registered"):
        reg.register("hubert", 2)
    with pytest.raises(UnknownNameError, match="did you mean 'hubert'"):
        reg.get("hubret")
    assert reg.get("hubert") == 1


def test_weighted_sum_starts_as_the_plain_average_and_probes_one_layer():
    layers = torch.randn(3, 2, 5, 4)
    ws = WeightedSum(3)
    assert torch.allclose(ws.normalized_weights(), torch.full((3,), 1 / 3))
    assert torch.allclose(ws(layers), layers.mean(0), atol=1e-6)
    with torch.no_grad():
        ws.weights.copy_(torch.tensor([0.0, math.log(3.0), 0.0]))
    # softmax([0, ln3, 0]) = [1/5, 3/5, 1/5]
    assert torch.allclose(ws.normalized_weights(), torch.tensor([0.2, 0.6, 0.2]))
    assert torch.allclose(ws(layers), 0.2 * layers[0] + 0.6 * layers[1] + 0.2 * layers[2], atol=1e-6)
    assert torch.equal(WeightedSum(3, layer=1)(layers), layers[1])
    assert torch.equal(WeightedSum(3, layer="last")(layers), layers[2])
    with pytest.raises(ValueError, match="layers 0..2"):
        WeightedSum(3, layer=3)


def test_audio_policy(tmp_path):
    stereo = np.stack([np.full(8000, 0.5), np.full(8000, -0.1)], axis=1)
    sf.write(tmp_path / "st.wav", stereo, 8000, subtype="FLOAT")
    wav = load_audio(tmp_path / "st.wav")
    assert wav.shape == (16000,)  # resampled 8 kHz -> 16 kHz
    assert abs(float(np.median(wav)) - 0.2) < 1e-3  # channels averaged
    with pytest.raises(AudioError, match="NaN or Inf"):
        check_waveform(np.array([0.0, np.nan] * 300), "x.wav")
    with pytest.raises(AudioError, match="x.wav: 100 samples is shorter"):
        check_waveform(np.zeros(100), "x.wav", min_samples=400)


def _write(tmp_path, rows, labels=("a", "b")):
    (tmp_path / "ks").mkdir(exist_ok=True)
    for r in rows:
        sf.write((tmp_path / "ks" / r["audio"]).resolve(), np.zeros(800, dtype=np.float32), 16000)
    return write_task_manifest(tmp_path / "ks", task="ks", corpus="t", version="1", label_field="label",
                               labels=labels, splits={"train": rows, "dev": rows[:1], "test": rows[:1]},
                               folds=[Fold("default", "train", "dev", "test")])


def test_manifest_round_trip_and_errors(tmp_path):
    rows = [{"id": f"u{i}", "audio": f"../u{i}.wav", "sample_rate": 16000, "num_samples": 800,
             "speaker": "s", "label": "ab"[i % 2]} for i in range(3)]
    m = load_task_manifest(_write(tmp_path, rows))
    assert [u.id for u in m.splits["train"]] == ["u0", "u1", "u2"]
    assert len(m.utterances()) == 3 and m.labels == ["a", "b"]
    bad = rows + [{**rows[0], "id": "u9", "label": "zzz"}, {**rows[0], "id": "u8", "audio": "../gone.wav"}]
    d = write_task_manifest(tmp_path / "ks", task="ks", corpus="t", version="1", label_field="label",
                            labels=["a", "b"], splits={"train": bad, "dev": rows, "test": rows})
    with pytest.raises(ManifestError) as err:
        load_task_manifest(d)
    assert "1 row(s) with missing audio files" in str(err.value) and "gone.wav" in str(err.value)
    (tmp_path / "gone.wav").write_bytes((tmp_path / "u0.wav").read_bytes())
    m = load_task_manifest(d)  # classes are the task kind's business (ManifestError from check_inventory)
    assert m.utterances()[3].label == "zzz" and m.utterances()[3].targets == {"label": "zzz"}
    with pytest.raises(ManifestError, match=r"1 row\(s\) with labels outside the inventory.*\n  train.jsonl "
                                            r"id='u9': 'zzz'"):
        m.check_inventory("label")
    assert not hasattr(m.utterances()[0], "text")  # a field the row lacks is not silently None


def test_record_round_trip_and_refusals(tmp_path):
    rec = ResultRecord(upstream="fbank", upstream_fingerprint="f", task="ks", metric="acc",
                       higher_is_better=True, test=50.0, dev=51.0, seed=0, recipe_version="1")
    path = write_record(rec, tmp_path)
    assert read_record(path) == rec
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "test": float("nan")}))
    with pytest.raises(RecordError, match="test metric is nan"):
        read_record(path)
    # a record describes its task, so another task name reads without any registration ...
    assert data["task_info"]["metric"] == {"name": "acc", "higher_is_better": True, "low": 0.0, "high": 100.0,
                                           "unit": "%"} and data["schema_version"] == 2
    path.write_text(json.dumps({**data, "task": "kss"}))
    assert read_record(path).task_info == rec.task_info
    # ... but one written before records described their task needs it registered
    old = {k: v for k, v in data.items() if k != "task_info"} | {"schema_version": 1}
    path.write_text(json.dumps(old))
    assert read_record(path) == rec  # upgraded on read from the registered task
    path.write_text(json.dumps(old | {"task": "kss"}))
    with pytest.raises(RecordError, match="unknown task 'kss'.*did you mean 'ss', 'ks'.*before records described"):
        read_record(path)


def test_dependencies_are_declared_where_they_are_used():
    """scipy (demo corpus filter) is a core dependency; scikit-learn is test-only; the Kaldi oracle and datasets
    are in the dev extra, so CI runs the cross-checks instead of skipping them."""
    import configparser
    import re
    import subprocess
    import sys
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    def names(text: str) -> set[str]:
        return {re.split(r"[<>=!\[ ]", line.strip())[0] for line in text.splitlines() if line.strip()}

    core, dev = names(cfg["options"]["install_requires"]), names(cfg["options.extras_require"]["dev"])
    assert "scipy" in core and "scikit-learn" not in core
    assert {"scikit-learn", "kaldi-native-fbank", "datasets"} <= dev
    code = ("import sys, superbench.metrics as m, superbench.runner, recipes.prepare.demo; "
            "assert 'sklearn' not in sys.modules, 'core imports scikit-learn'; "
            "print(m.accuracy(['a', 'b', 'a'], ['a', 'a', 'a']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) == pytest.approx(200 / 3)


def test_save_wav_is_atomic(tmp_path, monkeypatch):
    from superbench import audio

    audio.save_wav(tmp_path / "a.wav", np.full(400, 0.25))
    before = (tmp_path / "a.wav").read_bytes()

    def broken_write(fh, *args, **kwargs):
        fh.write(b"RIFF half a file")
        raise OSError("disk full")

    monkeypatch.setattr(audio.sf, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        audio.save_wav(tmp_path / "a.wav", np.zeros(400))
    assert (tmp_path / "a.wav").read_bytes() == before  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temp file left behind


def test_migrate_describes_records_written_before_task_descriptions(tmp_path, capsys):
    from superbench.cli import main

    rec = ResultRecord(upstream="fbank", upstream_fingerprint="f", task="ks", metric="acc",
                       higher_is_better=True, test=50.0, dev=51.0, seed=0, recipe_version="1")
    path = write_record(rec, tmp_path)
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "task_info"} | {"schema_version": 1}
    path.write_text(json.dumps(old))
    orphan = path.with_name("orphan.json")
    orphan.write_text(json.dumps(old | {"task": "pitchx"}))  # its task is registered nowhere: left as it is
    assert main(["results", "migrate", "--results", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1 record(s) now describe their task, 1 left as they were" in out and "unknown task 'pitchx'" in out
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2 and data["task_info"]["metric"]["name"] == "acc"
    assert data["task_info"]["order"] == 2 and data["task_info"]["level"] == "utterance"
    assert json.loads(orphan.read_text()) == old | {"task": "pitchx"}

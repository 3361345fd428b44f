"""The STFT-mask kind (SE/SS): STFT round trip, NPSM/PIT loss by hand, manifest checks, and short runs that
beat the unprocessed input, with their WAVs and per-utterance scores beside the record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from downstreams.stft_mask import STFTConfig, align_frames, npsm_pit_loss, npsm_target
from recipes.se import TASK as SE
from recipes.ss import TASK as SS
from superbench import audio_metrics as am
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest

SR = 16000


def voice(seconds: float, f0: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced harmonic signal with a drifting pitch, cut into syllables; drawn again until PESQ's voice activity
    detector finds speech in it (it misses some of these synthetic voices, and PESQ is undefined without)."""
    while True:
        wav = _voice(seconds, f0, rate, rng)
        try:
            am.pesq_wb(wav, wav)
            return wav
        except ValueError:
            continue


def _voice(seconds: float, f0: float, rate: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    harmonics = sum(np.sin(k * phase) * rng.uniform(0.3, 1.0) / k for k in range(1, 20))
    envelope = 0.05 + np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 6)), 0, None) ** 2
    return 0.2 * harmonics * envelope


def make_corpus(root: Path, task: str, counts: tuple[int, int, int] = (24, 6, 6), seconds: float = 1.2,
                seed: int = 0) -> dict[str, list[dict]]:
    """SE: a voice in white noise at 0 or 5 dB; SS: a low and a high voice summed at 0-5 dB. Rows as the
    preparers write them: `audio` the mixture, `sources` the clean files."""
    rng = np.random.default_rng(seed)
    folder = root / task
    (folder / "wav").mkdir(parents=True)
    splits = {}
    for split, n in zip(("train", "dev", "test"), counts):
        rows = []
        for k in range(n):
            uid = f"{split}-{k}"
            a = voice(seconds, rng.uniform(100, 140), rng.uniform(2.5, 4), rng)
            if task == "se":
                noise = rng.standard_normal(a.size)
                other = noise * np.sqrt((a @ a) / (noise @ noise) / 10 ** (rng.choice([0.0, 5.0]) / 10))
                sources = [a]
            else:
                b = voice(seconds, rng.uniform(220, 280), rng.uniform(2.5, 4), rng)
                b *= np.sqrt((a @ a) / (b @ b) / 10 ** (rng.uniform(0, 5) / 10))
                other, sources = b, [a, b]
            mixture = a + other
            paths = []
            for j, wav in enumerate(sources):
                paths.append(f"wav/{uid}.s{j + 1}.wav")
                sf.write(folder / paths[-1], wav.astype(np.float32), SR, subtype="FLOAT")
            sf.write(folder / f"wav/{uid}.mix.wav", mixture.astype(np.float32), SR, subtype="FLOAT")
            rows.append({"id": uid, "audio": f"wav/{uid}.mix.wav", "sample_rate": SR, "num_samples": len(mixture),
                         "speaker": "synthetic", "sources": paths})
        splits[split] = rows
    write_task_manifest(folder, task=task, corpus="synthetic-voices", version="1", label_field="sources",
                        labels=[], splits=splits)
    return splits


def unprocessed(root: Path, task: str, rows: list[dict], metric: str) -> float:
    """The metric of the mixture itself taken as every source's estimate: the chance level of these tasks."""
    values = []
    for row in rows:
        mix, _ = sf.read(root / task / row["audio"], dtype="float64")
        refs = [sf.read(root / task / p, dtype="float64")[0] for p in row["sources"]]
        values.append(am.utterance_metrics(refs, [mix] * len(refs), mix, (metric,))[metric])
    return float(np.mean(values))


# --------------------------------------------------------------------------- pieces


def test_stft_round_trip_and_frame_count():
    cfg = STFTConfig(hop=160)
    wav = torch.from_numpy(np.random.default_rng(0).standard_normal(16000 + 37))
    spec = cfg.stft(wav)
    assert spec.shape == (cfg.frames(wav.numel()), 257) == (1 + (16000 + 37) // 160, 257)
    np.testing.assert_allclose(cfg.istft(spec, wav.numel()).numpy(), wav.numpy(), atol=1e-9)
    # a mask of ones gives the mixture back; masks are cut, or their last frame repeated, to the STFT's frames
    masks = torch.arange(6.0).reshape(3, 1, 2)
    assert align_frames(masks, 2).tolist() == [[[0.0, 1.0]], [[2.0, 3.0]]]
    assert align_frames(masks, 5)[3:].tolist() == [[[4.0, 5.0]], [[4.0, 5.0]]]


def test_npsm_target_and_pit_loss_by_hand():
    y = torch.tensor([[1 + 0j, 2j]])  # one frame, two bins
    s1 = torch.tensor([[2 + 0j, -1 + 0j]])  # in phase in bin 0, at 90 degrees in bin 1: target |S| relu(cos) = [2, 0]
    s2 = torch.tensor([[-3 + 0j, 1j]])  # opposite phase in bin 0 (0), in phase in bin 1 (1)
    assert npsm_target(y, s1)[0].tolist() == pytest.approx([2.0, 0.0], abs=1e-6)
    assert npsm_target(y, s2)[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    sources = torch.stack([s1, s2])  # (S, T, F)
    # masks (T, S, F): source 0 estimated as [2, 0] exactly, source 1 as [0, 1] exactly -> 0 whatever the order
    exact = torch.tensor([[[2.0, 0.0], [0.0, 0.5]]])
    assert npsm_pit_loss([exact], [y], [sources]).item() == pytest.approx(0.0, abs=1e-6)
    # swapped outputs cost nothing either (PIT); a wrong mask costs its squared error / (frames x sources)
    assert npsm_pit_loss([exact.flip(1)], [y], [sources]).item() == pytest.approx(0.0, abs=1e-6)
    wrong = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])  # estimate of source 0 is [1, 0]: error 1 in bin 0
    assert npsm_pit_loss([wrong], [y], [sources]).item() == pytest.approx(1.0 / 2, abs=1e-6)


def test_check_names_rows_with_bad_sources(tmp_path):
    make_corpus(tmp_path, "se", counts=(2, 1, 1), seconds=0.5)
    (tmp_path / "se" / "wav" / "dev-0.s1.wav").unlink()
    sf.write(tmp_path / "se" / "wav" / "train-1.s1.wav", np.zeros(100, dtype=np.float32), SR)
    task = SE
    with pytest.raises(ManifestError) as info:
        task.check_manifest(load_task_manifest(tmp_path / "se"))
    text = str(info.value)
    assert "dev.jsonl:1 id='dev-0': source" in text and "dev-0.s1.wav cannot be read" in text
    assert "train.jsonl:2 id='train-1'" in text and "has 100 samples" in text


def test_a_missing_metric_package_fails_at_task_load_naming_the_extra(tmp_path, monkeypatch):
    import sys

    make_corpus(tmp_path, "se", counts=(2, 1, 1), seconds=0.5)
    task = SE
    monkeypatch.setitem(sys.modules, "pystoi", None)
    with pytest.raises(am.MissingMetricPackage, match=r"'pystoi'.*superbench\[enhancement\]"):
        task.check_manifest(load_task_manifest(tmp_path / "se"))


# --------------------------------------------------------------------------- short runs


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["se", "ss"])
def test_a_short_run_beats_the_unprocessed_mixture(tmp_path, task_name):
    from superbench.records import record_path
    from superbench.runner import run
    from superbench.testing import ToneUpstream, scratch_run_options

    splits = make_corpus(tmp_path, task_name)
    task = SE if task_name == "se" else SS
    opts = scratch_run_options(tmp_path, profile="ci", keep_audio=2,
                               overrides={"steps": 150, "eval_interval": 50, "lr_grid": [3e-3], "hidden_size": 64})
    (rec,) = run(ToneUpstream(), [task], tmp_path, opts)
    chance_sisdri = unprocessed(tmp_path, task_name, splits["test"], "sisdri")
    assert chance_sisdri == pytest.approx(0.0, abs=1e-9)  # the mixture improves nothing on itself
    sisdri = rec.test if task_name == "ss" else rec.secondary["sisdri"]["test"]
    assert sisdri > 1.0, sisdri
    if task_name == "se":
        noisy_pesq = unprocessed(tmp_path, "se", splits["test"], "pesq")
        assert rec.metric == "pesq" and rec.task_info.metric.unit == "PESQ"
        assert rec.test > noisy_pesq, (rec.test, noisy_pesq)
    # per-utterance units give the record an interval in the metric's own unit
    assert rec.test_ci is not None and rec.test_ci[0] <= rec.test <= rec.test_ci[1]
    assert rec.uncertainty["unit"] == "utterance" and set(rec.uncertainty["secondary"]) == {
        m.name for m in task.secondary_metrics}
    beside = record_path(tmp_path / "results", rec.run_key()).parent
    lines = [json.loads(x) for x in (beside / rec.artifacts["predictions"]).read_text().splitlines()]
    test_rows = [x for x in lines if x["split"] == "test"]
    assert len(test_rows) == 6
    assert np.mean([x[rec.metric] for x in test_rows]) == pytest.approx(rec.test, abs=1e-3)
    names = ["enhanced", "mixture"] if task_name == "se" else ["s1", "s2", "mixture"]
    audio = {k: v for k, v in rec.artifacts.items() if k.startswith("audio/")}
    assert sorted(audio) == sorted(f"audio/test-{k}.{n}" for k in range(2) for n in names)
    wav, sr = sf.read(beside / audio["audio/test-0.mixture"])
    mix, _ = sf.read(tmp_path / task_name / splits["test"][0]["audio"])
    assert sr == SR and np.allclose(wav, mix, atol=1e-6)
    estimate, _ = sf.read(beside / audio[f"audio/test-0.{names[0]}"])
    assert estimate.shape == mix.shape and np.abs(estimate - mix).max() > 1e-3  # something was removed


# --------------------------------------------------------------------------- declarations


def test_superb_profiles_are_s3prls_configs_and_the_head_is_seprnn():
    from downstreams.stft_mask import SepRNNHead

    for task, eval_every in ((SE, 1250), (SS, 2000)):
        recipe = task.load_recipe("superb")
        head, train = recipe.head, recipe.train
        assert (head.rnn_layers, head.hidden_size, head.dropout, head.n_fft, head.win_length) == (3, 896, 0.5, 512, 512)
        assert (train.steps, train.batch_size, train.lr, train.weight_decay, train.grad_clip, train.eval_interval) == (
            150000, 8, 1e-4, 0.01, 1.0, eval_every)
    net = SepRNNHead(num_layers=13, input_dim=768, num_sources=2)
    assert (net.rnn.num_layers, net.rnn.hidden_size, net.rnn.bidirectional, net.rnn.dropout) == (3, 896, True, 0.5)
    assert [tuple(m.weight.shape) for m in net.masks] == [(257, 1792), (257, 1792)]
    net.eval()
    out = net(torch.randn(13, 2, 7, 768), torch.tensor([7, 4]))
    assert out.shape == (2, 7, 2, 257) and (out >= 0).all()  # ReLU masks
    # the packed LSTM never lets padding reach an utterance: its frames match a run of that utterance alone
    x = torch.randn(13, 2, 7, 768)
    together = net(x, torch.tensor([7, 4]))
    alone = net(x[:, 1:, :4], torch.tensor([4]))
    assert torch.allclose(together[1, :4], alone[0], atol=1e-5)


def test_units_of_the_metrics_reach_the_records_and_table_headers():
    from leaderboard.table import _task_header
    from superbench.task_info import MetricInfo, forget_learned, learn

    assert SE.info.metric == MetricInfo("pesq", True, 1.0, 4.65, unit="PESQ")
    assert [(m.name, m.unit) for m in SE.info.secondary] == [("stoi", "%"), ("sisdri", "dB")]
    assert (SS.info.metric.name, SS.info.metric.unit) == ("sisdri", "dB")
    assert MetricInfo("acc", True).label == "ACC%" and MetricInfo("pesq", True, unit="PESQ").label == "PESQ"
    assert MetricInfo("sisdri", True, unit="dB").label == "SI-SDRi dB"
    assert "outside [1, 4.65] for metric 'pesq' (PESQ)" in SE.info.metric.value_problem(4.9)
    learn("se", SE.info)  # what a reader learns from an SE record, without the task registered
    try:
        assert _task_header("se") == "SE PESQ ↑" and _task_header("se/sisdri") == "SE SI-SDRi dB ↑"
        assert _task_header("se/stoi") == "SE STOI% ↑"
    finally:
        forget_learned()


def test_keep_audio_is_a_count_and_adamw_follows_weight_decay(capsys):
    from superbench.cli import main
    from superbench.options import RunOptions

    with pytest.raises(SystemExit) as stop:  # the command line refuses it before any work
        main(["run", "--upstream", "fbank", "--task", "ks", "--data", "nowhere", "--keep-audio", "-1"])
    assert stop.value.code == 2 and "--keep-audio: must be an integer in 0..1000000, got -1" in capsys.readouterr().err
    from superbench.recipe import TrainConfig

    assert RunOptions().execution.keep_audio == 5 and RunOptions.of(keep_audio=0).execution.keep_audio == 0
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match="--keep-audio must be a count"):
            RunOptions.of(keep_audio=bad)
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0, 1\)"):
        TrainConfig(steps=1, batch_size=1, lr=1e-3, eval_interval=1, weight_decay=-0.1)
    from downstreams.stft_mask import SepRNNHead
    from superbench.training import SingleHead, Trial

    def optimiser(weight_decay: float) -> torch.optim.Optimizer:
        cfg = TrainConfig(steps=1, batch_size=1, lr=1e-3, eval_interval=1, weight_decay=weight_decay)
        empty = ([], [])
        return SingleHead(lambda: SepRNNHead(2, 4, 1, 5, 1, 3), None, None, Trial(cfg, empty, empty, empty)).optimizer

    decayed, plain = optimiser(0.01), optimiser(0.0)
    assert type(decayed) is torch.optim.AdamW and decayed.defaults["weight_decay"] == 0.01
    assert type(plain) is torch.optim.Adam and plain.defaults["weight_decay"] == 0

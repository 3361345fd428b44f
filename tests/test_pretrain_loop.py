"""The shared pretraining loop and its data: schedule, resume, curve files, refusals, audio loading."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from upstreams.pretrain import get_family
from upstreams.pretrain.base import PretrainConfig, PretrainFamily
from upstreams.pretrain.data import PretrainAudio, load_pretrain_audio
from upstreams.pretrain.loop import INFO_FILE, STATE_FILE, PretrainError, lr_at, pretrain


class ToyFamily(PretrainFamily):
    """A linear autoencoder on 160-sample frames: enough to test the loop, trains in milliseconds."""

    name, loader, kind, description = "toy", "toy", "generative", "linear frame autoencoder"
    default_lr = 1e-2

    def __init__(self, stop_at_call: int | None = None, poison_at_call: int | None = None) -> None:
        self.calls, self.stop_at_call, self.poison_at_call = 0, stop_at_call, poison_at_call

    def build(self, size: str) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(160, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 160))

    def loss(self, model, wavs, lengths, generator):
        self.calls += 1
        if self.calls == self.stop_at_call:
            raise KeyboardInterrupt
        frames = wavs[:, : wavs.shape[1] // 160 * 160].reshape(wavs.shape[0], -1, 160)
        loss = (model(frames) - frames).pow(2).mean()
        if self.calls == self.poison_at_call:
            loss = loss * float("nan")
        return loss, {"frames": float(frames.shape[1])}

    def save_upstream(self, model, out_dir):
        path = out_dir / "toy.pt"
        torch.save(model.state_dict(), path)
        return path


def toy_audio(n: int = 6, seconds: float = 0.5) -> PretrainAudio:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    wavs = [torch.from_numpy((np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.01 * rng.standard_normal(t.size))
                             .astype(np.float32)) for i in range(n)]
    return PretrainAudio(wavs, "toy", "toyfp")


def cfg(**kw) -> PretrainConfig:
    return PretrainConfig(**{"family": "toy", "steps": 6, "batch_size": 2, "crop_seconds": 0.25, "save_every": 2,
                             **kw})


def test_lr_warms_up_linearly_then_decays_by_cosine_to_zero():
    # 100 steps, 10 % warm-up: 10 warm-up steps reaching the peak at step index 9
    assert lr_at(0, 100, 1.0, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 0.1) == pytest.approx(1.0)  # cosine starts at its top
    assert lr_at(55, 100, 1.0, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr_at(100, 100, 1.0, 0.1) == pytest.approx(0.0)


def test_a_run_writes_weights_curve_and_info(tmp_path):
    result = pretrain(ToyFamily(), toy_audio(), tmp_path, cfg(), progress=False)
    assert (tmp_path / "toy.pt").is_file() and (tmp_path / STATE_FILE).is_file()
    assert (tmp_path / "loss.png").stat().st_size > 1000
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,lr,frames" and len(lines) == 1 + 6
    info = json.loads((tmp_path / INFO_FILE).read_text())
    assert info["steps"] == 6 and info["family"] == "toy" and info["upstream"] == f"toy={tmp_path / 'toy.pt'}"
    assert info["parameters"]["upstream"] == 160 * 8 + 8 + 8 * 160 + 160 == result.parameters
    assert info["config"]["lr"] == 1e-2 and info["data"]["fingerprint"] == "toyfp"
    first = float(lines[1].split(",")[1])
    assert info["first_loss"] == pytest.approx(first, rel=1e-5)


class ModeRecordingFamily(ToyFamily):
    def loss(self, model, wavs, lengths, generator):
        self.modes = getattr(self, "modes", []) + [(torch.are_deterministic_algorithms_enabled(),
                                                    torch.is_deterministic_algorithms_warn_only_enabled())]
        return super().loss(model, wavs, lengths, generator)


@pytest.mark.parametrize("before", [(False, False), (True, False)])
def test_training_uses_deterministic_kernels_and_restores_the_callers_setting(tmp_path, before):
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    try:
        family = ModeRecordingFamily()
        pretrain(family, toy_audio(), tmp_path, cfg(), progress=False)
        assert family.modes == [(True, True)] * 6  # on (an op without such a kernel warns) in every step
        after = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        assert after == before
    finally:
        torch.use_deterministic_algorithms(False)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight = tmp_path / "straight"
    pretrain(ToyFamily(), toy_audio(), straight, cfg(), progress=False)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        pretrain(ToyFamily(stop_at_call=4), toy_audio(), resumed, cfg(), progress=False)  # dies in step 4
    assert torch.load(resumed / STATE_FILE, weights_only=False)["step"] == 2  # the last save
    pretrain(ToyFamily(), toy_audio(), resumed, cfg(), progress=False)
    a, b = torch.load(straight / "toy.pt"), torch.load(resumed / "toy.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # batches, dropout and Adam state all replayed exactly
    assert (straight / "loss.csv").read_text() == (resumed / "loss.csv").read_text()


def test_a_folder_of_another_run_is_refused_naming_what_differs(tmp_path):
    pretrain(ToyFamily(), toy_audio(), tmp_path, cfg(), progress=False)
    with pytest.raises(PretrainError, match=r"other settings \(lr, seed\).*delete .*pretrain-state\.pt"):
        pretrain(ToyFamily(), toy_audio(), tmp_path, cfg(seed=1, lr=0.5), progress=False)


def test_a_non_finite_loss_stops_the_run_and_names_the_step(tmp_path):
    with pytest.raises(PretrainError, match="the loss is nan at step 3; lower --lr"):
        pretrain(ToyFamily(poison_at_call=3), toy_audio(), tmp_path, cfg(), progress=False)


def test_zero_steps_saves_the_random_initialisation(tmp_path):
    pretrain(ToyFamily(), toy_audio(), tmp_path / "a", cfg(steps=0), progress=False)
    info = json.loads((tmp_path / "a" / INFO_FILE).read_text())
    assert info["steps"] == 0 and info["first_loss"] is None and not (tmp_path / "a" / "loss.csv").exists()
    torch.manual_seed(0)
    expected = ToyFamily().build("tiny").state_dict()
    saved = torch.load(tmp_path / "a" / "toy.pt")
    assert all(torch.equal(expected[k], saved[k]) for k in expected)  # the seed-0 init itself


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="--steps must be >= 0"):
        cfg(steps=-1)
    with pytest.raises(ValueError, match="--size must be one of tiny, small"):
        cfg(size="huge")


def test_audio_batches_are_seeded_crops(tmp_path):
    audio = toy_audio(seconds=1.0)
    a = audio.batch(3, 4000, torch.Generator().manual_seed(5))
    b = audio.batch(3, 4000, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and a[1].tolist() == [4000] * 3
    short = PretrainAudio([torch.ones(1000), torch.ones(3000)], "s", "f")
    wavs, lengths = short.batch(4, 2000, torch.Generator().manual_seed(0))
    assert sorted(set(lengths.tolist())) <= [1000, 2000] and wavs.shape[1] == int(lengths.max())


def test_a_folder_of_audio_is_read_and_short_files_left_out(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32), 16000)
    (tmp_path / "sub").mkdir()
    sf.write(tmp_path / "sub" / "b.flac", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(tmp_path / "c.wav", np.zeros(100, dtype=np.float32), 16000)  # too short
    audio = load_pretrain_audio(str(tmp_path))
    assert sorted(w.numel() for w in audio.wavs) == [8000, 16000]
    assert audio.hours == pytest.approx(24000 / 16000 / 3600)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_pretrain_audio(str(tmp_path / "nope"))


def test_unknown_family_suggests_the_closest():
    with pytest.raises(ValueError, match="unknown pretraining family 'hubbert'; did you mean 'hubert'"):
        get_family("hubbert")

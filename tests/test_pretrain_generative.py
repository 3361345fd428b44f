"""The generative pretraining families (upstreams/pretrain/apc.py, tera.py): APC's shifted L1, TERA's seeded
alterations and masked L1, and a few real steps that lower the loss and save a loadable upstream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superbench.upstream import load_upstream
from superbench.validate import validate_upstream
from upstreams.pretrain import get_family
from upstreams.pretrain.apc import apc_loss
from upstreams.pretrain.base import PretrainConfig
from upstreams.pretrain.data import PretrainAudio
from upstreams.pretrain.loop import pretrain
from upstreams.pretrain.tera import alter, masked_l1, tera_config

# ----------------------------------------------------------------------------------------------- APC


def test_apc_loss_is_zero_when_the_prediction_is_the_input_n_frames_ahead():
    feats = torch.randn(2, 12, 4)
    lengths = torch.tensor([12, 9])
    n = 3
    pred = torch.randn(2, 12, 4)  # frames whose target is past the end are free
    pred[:, : 12 - n] = feats[:, n:]
    pred[1, 9 - n:] = 100.0  # beyond utterance 1's valid targets (t + 3 >= 9): not counted
    assert float(apc_loss(pred, feats, lengths, n)) == 0.0
    # shifted by another amount it is not 0
    assert float(apc_loss(pred, feats, lengths, n - 1)) > 0.1


def test_apc_loss_averages_l1_over_valid_targets_only():
    feats = torch.zeros(1, 6, 2)
    pred = torch.zeros(1, 6, 2)
    pred[0, 0] = 1.0  # |1 - 0| on 2 bins for the target frame 2
    # length 5, n 2: targets are frames 2..4 (3 frames x 2 bins), the error sum is 2
    assert float(apc_loss(pred, feats, torch.tensor([5]), 2)) == pytest.approx(2 / 6)
    with pytest.raises(ValueError):
        apc_loss(pred, feats, torch.tensor([5]), 0)


def test_apc_model_is_native_apc_and_causal():
    family = get_family("apc")
    assert (family.name, family.loader, family.kind) == ("apc", "apc", "generative")
    torch.manual_seed(0)
    model = family.build("tiny")
    feats = torch.randn(1, 20, 80)
    out = model(feats, torch.tensor([20]))
    changed = feats.clone()
    changed[0, 10:] += 1.0
    out2 = model(changed, torch.tensor([20]))
    assert torch.equal(out[0, :10], out2[0, :10])  # a prediction never sees its future
    assert not torch.allclose(out[0, 10:], out2[0, 10:])


# ----------------------------------------------------------------------------------------------- TERA


def _task(**kw):
    return {**tera_config("tiny")["task"], **kw}


def test_tera_alterations_are_seeded():
    feats = torch.randn(3, 100, 80)
    lengths = torch.tensor([100, 80, 60])
    a1, m1 = alter(feats, lengths, _task(), torch.Generator().manual_seed(7))
    a2, m2 = alter(feats, lengths, _task(), torch.Generator().manual_seed(7))
    a3, m3 = alter(feats, lengths, _task(), torch.Generator().manual_seed(8))
    assert torch.equal(a1, a2) and torch.equal(m1, m2)
    assert not torch.equal(m1, m3)
    assert torch.equal(feats, feats.clone())  # the input is left as it was


def test_tera_time_masking_covers_fifteen_percent_in_spans_of_seven():
    feats = torch.randn(4, 200, 80) + 5.0  # no frame is 0 before masking
    lengths = torch.tensor([200, 200, 140, 100])
    task = _task(mask_frequency=0, mask_allow_overlap=False)
    for seed in range(6):
        altered, label = alter(feats, lengths, task, torch.Generator().manual_seed(seed))
        frames = label.all(-1)  # time masking labels every bin of a chosen frame
        assert torch.equal(frames, label.any(-1))
        for b, n in enumerate(lengths.tolist()):
            chosen = frames[b].nonzero().view(-1)
            # round(n * 0.15 / 7) non-overlapping spans of 7 frames, all inside the utterance
            assert len(chosen) == round(n * 0.15 / 7) * 7 and int(chosen.max()) < n
            runs = np.diff(np.flatnonzero(np.diff(np.r_[0, frames[b].int().numpy(), 0])))[::2]
            assert set(runs.tolist()) == {7}
            # the chosen frames are zeroed (80 %), swapped (10 %) or kept (10 %); the rest untouched
            assert torch.equal(altered[b, ~frames[b]], feats[b, ~frames[b]])
    # overlapping spans (the published setting) cover at most that many frames
    _, label = alter(feats, lengths, _task(mask_frequency=0), torch.Generator().manual_seed(0))
    assert 0 < int(label.all(-1)[0].sum()) <= round(200 * 0.15 / 7) * 7


def test_tera_frequency_masking_zeroes_a_band_on_every_valid_frame():
    feats = torch.randn(2, 50, 80) + 5.0
    lengths = torch.tensor([50, 30])
    widths = set()
    for seed in range(20):
        altered, label = alter(feats, lengths, _task(mask_proportion=0), torch.Generator().manual_seed(seed))
        for b, n in enumerate(lengths.tolist()):
            bins = label[b, 0].nonzero().view(-1)
            widths.add(len(bins))
            if len(bins):
                assert torch.equal(bins, torch.arange(int(bins[0]), int(bins[0]) + len(bins)))  # one band
                assert bool(label[b, :n][:, bins].all()) and not bool(label[b, n:].any())
                assert bool((altered[b, :, bins] == 0).all())
    assert max(widths) <= 16 and len(widths) > 3  # randint(0, int(0.2 * 80))


def test_tera_loss_counts_only_altered_positions():
    target = torch.randn(2, 10, 4)
    label = torch.zeros(2, 10, 4, dtype=torch.bool)
    label[0, 2:5] = True
    pred = target + 3.0
    pred[label] = target[label]
    assert float(masked_l1(pred, target, label)) == 0.0
    pred[0, 3, 1] += 2.0  # one masked position off by 2: mean over 12 masked values
    assert float(masked_l1(pred, target, label)) == pytest.approx(2 / 12)
    assert float(masked_l1(pred, target, torch.zeros_like(label))) == 0.0


# ----------------------------------------------------------------------------------------------- end to end


def _audio(n: int = 6, seconds: float = 0.6) -> PretrainAudio:
    """Harmonic sweeps with noise: structured enough that a few steps learn something."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    wavs = []
    for i in range(n):
        f0 = 120 + 30 * i + 80 * t
        wav = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 6))
        wav = wav * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
        wavs.append(torch.from_numpy((0.1 * wav).astype(np.float32)))
    return PretrainAudio(wavs, "sweeps", f"sweeps{n}")


@pytest.mark.parametrize("name", ["apc", "tera"])
def test_a_few_steps_lower_the_loss_and_save_a_loadable_upstream(tmp_path, name):
    family = get_family(name)
    cfg = PretrainConfig(family=name, steps=8, batch_size=2, crop_seconds=0.5, save_every=8)
    result = pretrain(family, _audio(), tmp_path, cfg, progress=False)
    losses = [float(x.split(",")[1]) for x in (tmp_path / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])
    assert (tmp_path / f"{name}.ckpt").is_file()
    upstream = load_upstream(f"{family.loader}={tmp_path}")
    checks = validate_upstream(upstream)
    assert all(c.passed for c in checks), [(c.name, c.detail) for c in checks if not c.passed]
    # what loads is the trained encoder, every weight of it
    assert result.parameters == sum(p.numel() for p in upstream.model.parameters())
    trained = torch.load(tmp_path / "pretrain-state.pt", weights_only=False)["model"]
    prefix = {"apc": "apc.", "tera": "transformer."}[name]
    loaded = upstream.model.state_dict()
    assert loaded and all(torch.equal(v, trained[prefix + k]) for k, v in loaded.items())

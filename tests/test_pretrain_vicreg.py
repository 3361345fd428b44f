"""VICReg pretraining family: the three loss terms on hand-checkable cases, seeded views, a short run."""

from __future__ import annotations

import math

import pytest
import torch

from upstreams.pretrain.vicreg import (
    FAMILY,
    Augment,
    augment,
    covariance_term,
    invariance_term,
    variance_term,
    vicreg_loss,
)

PM1 = torch.tensor([1.0, -1.0, 1.0, -1.0])  # unbiased std sqrt(4/3) > 1


def test_variance_zero_when_every_std_at_least_gamma():
    z = torch.stack([PM1, -PM1, 2 * PM1], dim=1)
    assert variance_term(z).item() == 0.0


def test_variance_of_constant_column_is_one_minus_sqrt_eps():
    eps = 1e-4
    z = torch.stack([PM1, torch.full((4,), 3.0)], dim=1)  # one fine column, one constant
    expected = (0.0 + (1.0 - math.sqrt(eps))) / 2
    assert variance_term(z, gamma=1.0, eps=eps).item() == pytest.approx(expected, abs=1e-6)
    assert variance_term(torch.zeros(5, 3)).item() == pytest.approx(1 - math.sqrt(eps), abs=1e-6)


def test_invariance_zero_for_identical_views_and_mse_otherwise():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert invariance_term(a, a.clone()).item() == 0.0
    b = torch.tensor([[1.0, 0.0], [3.0, 7.0]])  # differences 0, 2, 0, -3 -> (4 + 9) / 4
    assert invariance_term(a, b).item() == pytest.approx(13 / 4)


def test_covariance_zero_for_decorrelated_columns():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert covariance_term(z).item() == pytest.approx(0.0, abs=1e-7)


def test_covariance_of_correlated_2d_case():
    # columns x and 2x, x = (1, -1, 1, -1): var(x) = 4/3, cov(x, 2x) = 8/3; two off-diagonal entries
    z = torch.stack([PM1, 2 * PM1], dim=1)
    assert covariance_term(z).item() == pytest.approx(2 * (8 / 3) ** 2 / 2)


def test_vicreg_loss_weights_the_terms():
    x = torch.stack([PM1, 2 * PM1], dim=1)
    y = x + 0.5
    loss, parts = vicreg_loss(x, y)
    assert parts["invariance"].item() == pytest.approx(0.25)
    assert parts["variance"].item() == 0.0
    assert loss.item() == pytest.approx(25 * 0.25 + 2 * (2 * (8 / 3) ** 2 / 2))


def test_augmentations_are_seeded_and_keep_frames_aligned():
    wavs = torch.randn(3, 8000)
    lengths = torch.tensor([8000, 6000, 4000])
    wavs[1, 6000:] = 0
    wavs[2, 4000:] = 0
    aug = Augment()
    v1, l1 = augment(wavs, lengths, torch.Generator().manual_seed(3), aug)
    v2, l2 = augment(wavs, lengths, torch.Generator().manual_seed(3), aug)
    v3, _ = augment(wavs, lengths, torch.Generator().manual_seed(4), aug)
    assert torch.equal(v1, v2) and torch.equal(l1, l2)
    assert not torch.equal(v1, v3)
    assert bool((lengths - l1 >= 0).all()) and bool((lengths - l1 <= aug.max_shift).all())
    for i, n in enumerate(l1.tolist()):
        assert bool((v1[i, n:] == 0).all())  # padding stays zero
    fam_views = FAMILY.views(wavs, lengths, torch.Generator().manual_seed(5))
    again = FAMILY.views(wavs, lengths, torch.Generator().manual_seed(5))
    assert torch.equal(fam_views[0][0], again[0][0]) and torch.equal(fam_views[1][0], again[1][0])


def test_short_run_lowers_the_loss_and_loads_as_hubert(tmp_path):
    from superbench.upstream import load_upstream
    from superbench.validate import validate_upstream
    from upstreams.pretrain.base import PretrainConfig
    from upstreams.pretrain.data import PretrainAudio
    from upstreams.pretrain.loop import pretrain

    gen = torch.Generator().manual_seed(0)
    t = torch.arange(12000) / 16000
    wavs = [0.3 * torch.sin(2 * math.pi * (150 + 60 * k) * t) + 0.05 * torch.randn(12000, generator=gen)
            for k in range(6)]
    audio = PretrainAudio(wavs, "synthetic", "test")
    cfg = PretrainConfig(family="vicreg", steps=6, batch_size=3, crop_seconds=0.4, lr=2e-3, warmup_fraction=0.0)
    result = pretrain(FAMILY, audio, tmp_path / "out", cfg, progress=False)
    losses = [float(line.split(",")[1]) for line in (tmp_path / "out" / "loss.csv").read_text().splitlines()[1:]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    up = load_upstream(f"{FAMILY.loader}={result.upstream_path}")
    assert up.normalize
    checks = validate_upstream(up)
    assert all(c.passed for c in checks), [str(c) for c in checks if not c.passed]

"""The predictive pretraining families (`hubert`, `best-rq`): k-means, the frozen quantizer, masking, the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from upstreams.pretrain import best_rq, hubert
from upstreams.pretrain.base import PretrainConfig
from upstreams.pretrain.best_rq import BestRQFamily, quantize, random_quantizer
from upstreams.pretrain.hubert import HubertFamily, encoder_frames, kmeans, span_mask


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _wavs(n: int = 3, seconds: float = 0.6, seed: int = 0) -> list[torch.Tensor]:
    g = _gen(seed)
    t = torch.arange(int(seconds * 16000)) / 16000
    return [0.3 * torch.sin(2 * math.pi * (200 + 150 * i) * t) + 0.05 * torch.randn(t.shape, generator=g)
            for i in range(n)]


class _MiniHubert(HubertFamily):
    num_units = 8
    kmeans_iterations = 5


class _MiniBestRQ(BestRQFamily):
    codebook_size = 32


# ------------------------------------------------------------------ k-means

def test_kmeans_recovers_well_separated_clusters():
    g = _gen(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    truth = torch.arange(4).repeat_interleave(50)
    x = centres[truth] + 0.1 * torch.randn(200, 2, generator=g)
    found, labels = kmeans(x, 4, _gen(1))
    # every true cluster maps to exactly one found cluster, and the centroids sit on the centres
    mapping = {int(truth[i]): int(labels[i]) for i in range(200)}
    assert len(set(mapping.values())) == 4
    assert all(int(labels[i]) == mapping[int(truth[i])] for i in range(200))
    for true, idx in mapping.items():
        assert torch.allclose(found[idx], centres[true], atol=0.1)


def test_kmeans_is_fixed_by_the_generator():
    x = torch.randn(300, 3, generator=_gen(0))
    a, la = kmeans(x, 5, _gen(7))
    b, lb = kmeans(x, 5, _gen(7))
    assert torch.equal(a, b) and torch.equal(la, lb)


# ------------------------------------------------------------------ masking

def test_span_mask_spans_padding_and_seed():
    lengths = torch.tensor([40, 25, 12])
    m = span_mask(lengths, 40, 0.08, 10, _gen(3))
    assert m.shape == (3, 40)
    for row, n in enumerate(lengths.tolist()):
        assert not m[row, n:].any()  # padding never masked
        assert m[row, :n].sum() >= 10  # at least one whole span
    assert torch.equal(m, span_mask(lengths, 40, 0.08, 10, _gen(3)))
    # an utterance shorter than a span is masked whole
    assert span_mask(torch.tensor([4]), 6, 0.0, 10, _gen(0))[0].tolist() == [True] * 4 + [False] * 2


def test_masked_cross_entropy_counts_masked_frames_only():
    logits = torch.zeros(1, 4, 3)
    logits[0, 0, 0] = logits[0, 1, 1] = 10.0  # frames 0, 1 right; frames 2, 3 badly wrong
    logits[0, 2, 2] = logits[0, 3, 2] = -10.0
    targets = torch.tensor([[0, 1, 2, 2]])
    mask = torch.tensor([[True, True, False, False]])
    loss, extra = hubert.masked_cross_entropy(logits, targets, mask)
    expected = F.cross_entropy(logits[0, :2], targets[0, :2])
    assert torch.isclose(loss, expected) and loss < 1e-3
    assert extra["acc"] == 1.0 and extra["masked"] == 2.0


def test_hubert_loss_ignores_unmasked_frames():
    family = _MiniHubert()
    torch.manual_seed(0)
    model = family.build("tiny")
    family.prepare(model, _wavs(), _gen(1))
    wavs = torch.stack(_wavs(2))
    lengths = torch.tensor([wavs.shape[1], wavs.shape[1] - 3000])
    targets = model.units(wavs, lengths)
    assert targets.shape == (2, int(encoder_frames(lengths).max()))
    # the same masks; targets of unmasked frames changed: the loss does not move
    loss_a, _ = family.loss(model, wavs, lengths, _gen(5))
    mask = hubert.span_mask(encoder_frames(lengths), targets.shape[1], family.mask_prob, family.mask_span, _gen(5))
    original = model.units

    def shuffled(w, n):
        t = original(w, n)
        return torch.where(mask, t, (t + 1) % family.num_units)

    model.units = shuffled
    loss_b, _ = family.loss(model, wavs, lengths, _gen(5))
    assert torch.allclose(loss_a, loss_b)


# ------------------------------------------------------------------ BEST-RQ quantizer

def test_quantizer_fixed_by_seed_and_nearest_code():
    p1, c1 = random_quantizer(160, 16, 64, _gen(0))
    p2, c2 = random_quantizer(160, 16, 64, _gen(0))
    p3, c3 = random_quantizer(160, 16, 64, _gen(1))
    assert torch.equal(p1, p2) and torch.equal(c1, c2)
    assert not torch.equal(p1, p3) and not torch.equal(c1, c3)
    assert torch.allclose(c1.norm(dim=-1), torch.ones(64))
    bound = math.sqrt(6 / (160 + 16))
    assert p1.abs().max() <= bound
    x = torch.randn(50, 160, generator=_gen(2))
    codes = quantize(x, p1, c1)
    z = F.normalize(x @ p1, dim=-1)
    assert torch.equal(codes, torch.cdist(z, c1).argmin(-1))  # cosine == L2 on unit vectors
    assert not torch.equal(codes, quantize(x, p3, c3))


def test_best_rq_targets_fixed_by_seed():
    family = _MiniBestRQ()
    wavs = torch.stack(_wavs(2))
    lengths = torch.tensor([wavs.shape[1]] * 2)
    codes = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = family.build("tiny")
        family.prepare(model, _wavs(), _gen(seed))
        codes.append(model.targets(wavs, lengths))
    assert codes[0].shape == (2, int(encoder_frames(lengths).max()))
    assert torch.equal(codes[0], codes[1])
    assert not torch.equal(codes[0], codes[2])


def test_best_rq_quantizer_does_not_train():
    family = _MiniBestRQ()
    torch.manual_seed(0)
    model = family.build("tiny")
    family.prepare(model, _wavs(), _gen(0))
    frozen = {k: v.clone() for k, v in model.named_buffers() if k in ("projection", "codebook", "feat_mean")}
    names = {n for n, _ in model.named_parameters()}
    assert not names & set(frozen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    wavs = torch.stack(_wavs(2))
    loss, extra = family.loss(model, wavs, torch.tensor([wavs.shape[1]] * 2), _gen(3))
    loss.backward()
    optimizer.step()
    assert extra["masked"] > 0
    for k, v in model.named_buffers():
        if k in frozen:
            assert not v.requires_grad and torch.equal(v, frozen[k])
    assert model.head.weight.grad is not None


def test_unprepared_model_refuses():
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="prepare"):
        _MiniBestRQ().build("tiny").targets(torch.zeros(1, 4000), torch.tensor([4000]))


# ------------------------------------------------------------------ end to end

@pytest.mark.parametrize("module", [hubert, best_rq])
def test_few_steps_lower_the_loss_and_load(module, tmp_path):
    import pandas as pd

    from superbench.upstream import load_upstream
    from superbench.validate import validate_upstream
    from upstreams.pretrain.data import PretrainAudio
    from upstreams.pretrain.loop import pretrain

    family = _MiniHubert() if module is hubert else _MiniBestRQ()
    audio = PretrainAudio(_wavs(4, seconds=0.8), "synthetic", f"test-{module.__name__}")
    cfg = PretrainConfig(family=family.name, steps=8, batch_size=2, crop_seconds=0.5, lr=3e-3,
                         warmup_fraction=0.1)
    result = pretrain(family, audio, tmp_path / "run", cfg, progress=False)
    curve = pd.read_csv(tmp_path / "run" / "loss.csv")["loss"].tolist()
    assert len(curve) == 8
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3
    up = load_upstream(f"{family.loader}={result.upstream_path}")
    checks = validate_upstream(up)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    assert up.num_layers == hubert.encoder_config("tiny").num_hidden_layers + 1

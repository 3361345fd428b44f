"""The contrastive (wav2vec 2.0) and bootstrapping (data2vec) pretraining families: their objectives on
hand-checkable cases, and a few real steps end to end (trained, saved, loaded as an upstream, validated)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from upstreams.pretrain import data2vec as d2v
from upstreams.pretrain import wav2vec2 as w2v

# ---------------------------------------------------------------------- wav2vec 2.0: InfoNCE


def test_info_nce_one_frame_matches_the_hand_computed_loss():
    # one masked frame whose prediction c = (1, 0); candidates: the positive q = (1, 0) (cos 1), and two
    # distractors (0, 1) (cos 0) and (-1, 0) (cos -1); temperature 0.5 -> logits 2, 0, -2
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # frames 0 (positive), 1, 2
    predicted = torch.tensor([[[3.0, 0.0], [9.0, 9.0], [9.0, 9.0]]])  # cosine ignores the norm
    mask = torch.tensor([[True, False, False]])
    negatives = torch.tensor([[[1, 2], [1, 1], [2, 2]]])
    loss = w2v.info_nce(predicted, targets, mask, negatives, temperature=0.5)
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_ignores_a_distractor_identical_to_the_positive():
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # frame 2 quantised to the positive's code
    predicted = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False, False]])
    loss = w2v.info_nce(predicted, targets, mask, torch.tensor([[[1, 2], [0, 0], [0, 0]]]), temperature=1.0)
    expected = -math.log(math.exp(1) / (math.exp(1) + math.exp(0)))  # only (0, 1) competes
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_low_when_the_prediction_is_the_positive_and_chance_when_random():
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(2, 40, 16, generator=g)
    mask = w2v.compute_span_mask(torch.tensor([40, 30]), 40, 0.5, 4, g)
    negatives = w2v.sample_negatives(mask, 10, g)
    perfect = w2v.info_nce(targets, targets, mask, negatives, temperature=0.1)
    random = w2v.info_nce(torch.randn(2, 40, 16, generator=g), targets, mask, negatives, temperature=1e3)
    assert perfect.item() < 0.05
    assert random.item() == pytest.approx(math.log(11), abs=0.01)


def test_span_mask_stays_in_valid_frames_and_is_seeded():
    lengths = torch.tensor([50, 23, 7, 2])
    a = w2v.compute_span_mask(lengths, 50, 0.5, 5, torch.Generator().manual_seed(3))
    b = w2v.compute_span_mask(lengths, 50, 0.5, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    for row, n in enumerate(lengths.tolist()):
        assert not a[row, n:].any()
        assert int(a[row, :n].sum()) >= min(2, n)
    assert 0.25 < a[0].float().mean() < 0.75  # ~ 1 - (1 - p / L)^L of the frames


def test_negative_sampler_never_picks_the_positive_and_stays_in_the_utterance():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([60, 25, 9])
    mask = w2v.compute_span_mask(lengths, 60, 0.5, 5, g)
    negatives = w2v.sample_negatives(mask, 20, g)
    frames = mask.shape[1]
    for row in range(mask.shape[0]):
        masked = set((mask[row].nonzero().flatten() + row * frames).tolist())
        for t in mask[row].nonzero().flatten().tolist():
            picks = set(negatives[row, t].tolist())
            assert row * frames + t not in picks  # never the positive itself
            assert picks <= masked - {row * frames + t}  # other masked (so valid) frames of this utterance
    # uniform over the other masked frames: with many draws every one of them shows up
    many = w2v.sample_negatives(mask[:1], 2000, g)[0, mask[0].nonzero()[0, 0]]
    assert set(many.tolist()) == set(mask[0].nonzero().flatten().tolist()) - {int(mask[0].nonzero()[0, 0])}


# ---------------------------------------------------------------------- data2vec: EMA teacher, targets


@pytest.fixture(scope="module")
def d2v_model():
    torch.manual_seed(0)
    return d2v.FAMILY.build("tiny")


def test_teacher_gets_no_gradient_and_ema_update_is_exact(d2v_model):
    model = d2v_model
    assert all(not p.requires_grad for p in model.teacher.parameters())
    g = torch.Generator().manual_seed(0)
    wavs, lengths = torch.randn(2, 6400, generator=g), torch.tensor([6400, 4800])
    loss, _ = d2v.FAMILY.loss(model, wavs, lengths, g)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.encoder.parameters())
    with torch.no_grad():  # move the student away from the teacher, as an optimiser step would
        for p in model.student.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    before = [p.detach().clone() for p in model.teacher.parameters()]
    student = [p.detach().clone() for p in model.student.encoder.parameters()]
    d2v.FAMILY.after_step(model, 10, 100)
    tau = d2v.tau_at(10, 100)
    assert d2v.TAU_START < tau < d2v.TAU_END
    for t0, s, t1 in zip(before, student, model.teacher.parameters(), strict=True):
        torch.testing.assert_close(t1, tau * t0 + (1 - tau) * s, rtol=2e-7, atol=1e-7)  # float order only


def test_tau_anneals_from_start_to_end():
    assert d2v.tau_at(0, 400) == pytest.approx(d2v.TAU_START)
    assert d2v.tau_at(399, 400) == pytest.approx(d2v.TAU_END)
    assert d2v.tau_at(100, 400) < d2v.tau_at(200, 400)


def test_targets_are_the_mean_of_instance_normalised_top_layers():
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 12, 4, generator=g) * (i + 1) + i for i in range(3)]
    valid = torch.arange(12).unsqueeze(0) < torch.tensor([[12], [7]])
    targets = d2v.data2vec_targets(layers, valid, top_k=2)
    for row, n in enumerate([12, 7]):
        expected = sum(F.instance_norm(h[row: row + 1, :n].transpose(1, 2)).transpose(1, 2)[0] for h in layers[1:]) / 2
        torch.testing.assert_close(targets[row, :n], expected, rtol=1e-4, atol=1e-4)
        assert not targets[row, n:].any()


# ---------------------------------------------------------------------- end to end


def _speechlike_audio():
    """A few seconds of deterministic vowel-like sounds (harmonics under moving formants) with pauses."""
    from upstreams.pretrain.data import PretrainAudio

    g = torch.Generator().manual_seed(0)
    wavs = []
    for _ in range(12):
        n = int(torch.randint(8000, 16000, (1,), generator=g))
        t = torch.arange(n) / 16000
        f0 = 100 + 80 * float(torch.rand((), generator=g))
        formant = 400 + 1500 * torch.rand(4, generator=g)
        segment = (torch.arange(n) * 4 // n).clamp(max=3)
        wav = torch.zeros(n)
        for h in range(1, 25):
            amp = torch.exp(-((h * f0 - formant[segment]) / 250) ** 2)
            wav += amp * torch.sin(2 * math.pi * h * f0 * t)
        wav *= (torch.sin(math.pi * t * 3) ** 2)
        wavs.append((0.1 * wav + 0.003 * torch.randn(n, generator=g)).float())
    return PretrainAudio(wavs, "speechlike", "test")


@pytest.mark.parametrize("family_name", ["wav2vec2", "data2vec"])
def test_a_few_steps_lower_the_loss_and_the_output_loads_as_an_upstream(tmp_path, family_name):
    from superbench.upstream import load_upstream
    from superbench.validate import validate_upstream
    from upstreams.pretrain import get_family
    from upstreams.pretrain.base import PretrainConfig
    from upstreams.pretrain.loop import pretrain

    family = get_family(family_name)
    assert family.loader == family_name
    cfg = PretrainConfig(family=family_name, steps=8, batch_size=4, crop_seconds=0.6, lr=2e-3, warmup_fraction=0.0)
    result = pretrain(family, _speechlike_audio(), tmp_path / "out", cfg, progress=False)
    history = result.info
    assert history["steps"] == 8
    losses = [float(x) for x in (tmp_path / "out" / "loss.csv").read_text().splitlines()[1:] for x in [x.split(",")[1]]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    up = load_upstream(f"{family.loader}={result.upstream_path}")
    assert up.normalize  # trained on normalised waveforms; preprocessor_config.json says so
    assert up.num_layers == family.config("tiny").num_hidden_layers + 1
    checks = validate_upstream(up)
    assert all(c.passed is not False for c in checks), [c for c in checks if c.passed is False]
    # the saved encoder is exactly the trained one
    trained = family.encoder(family.build("tiny"))
    state = torch.load(tmp_path / "out" / "pretrain-state.pt", weights_only=False)["model"]
    prefix = "net.wav2vec2." if family_name == "wav2vec2" else "student."
    trained.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    for name, p in up.model.named_parameters():
        torch.testing.assert_close(p, dict(trained.named_parameters())[name])
    # every saved weight is one the frozen model has (no training-only mask embedding to warn about)
    from safetensors.torch import load_file

    saved = load_file(str(result.upstream_path / "model.safetensors"))
    assert set(saved) == set(up.model.state_dict())

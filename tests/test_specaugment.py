"""SpecAugment on the ASR representation (s3prl's downstream/specaug.py) and the CTC head's feature layer norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from downstreams.ctc import CTCHead, CTCHeadConfig, SpecAugment
from superbench.recipe import RecipeError, build_section
from superbench.tasks import get_task


def _frames(batch: int = 3, t: int = 30, d: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, t, d, generator=torch.Generator().manual_seed(seed)) + 5.0  # no zeros by chance


def test_masks_of_a_single_possible_width_and_start_zero_exactly_that_range():
    # width range [3, 4) -> every mask is 3 wide; 4 channels -> the start is drawn in [0, max(1, 4 - 3)) = {0}
    aug = SpecAugment(time_warp_window=0, freq_mask_width_range=(3, 4), num_freq_mask=2, num_time_mask=0).train()
    x = _frames(d=4)
    out = aug(x, torch.tensor([30, 20, 10]))
    assert torch.equal(out[..., :3], torch.zeros(3, 30, 3))
    assert torch.equal(out[..., 3], x[..., 3])
    # time masks: starts are drawn over the longest utterance (5 frames); width [5, 6) -> frames 0..4 of every
    # utterance, the padding frames 5, 6 past the longest stay as they were
    aug = SpecAugment(time_warp_window=0, num_freq_mask=0, time_mask_width_range=(5, 6), num_time_mask=1).train()
    x = _frames(batch=2, t=7)
    out = aug(x, torch.tensor([5, 3]))
    assert torch.equal(out[:, :5], torch.zeros(2, 5, 12))
    assert torch.equal(out[:, 5:], x[:, 5:])


@pytest.mark.parametrize("axis", ["freq", "time"])
def test_masks_zero_exactly_the_ranges_drawn_from_the_global_rng(axis):
    lengths = torch.tensor([30, 22, 9])
    x = _frames()
    if axis == "freq":
        aug = SpecAugment(time_warp_window=0, freq_mask_width_range=(0, 5), num_freq_mask=3, num_time_mask=0)
        size = x.shape[2]
    else:
        aug = SpecAugment(time_warp_window=0, num_freq_mask=0, time_mask_width_range=(1, 8), num_time_mask=2)
        size = int(lengths.max())
    low, high = aug.freq_mask_width_range if axis == "freq" else aug.time_mask_width_range
    count = aug.num_freq_mask if axis == "freq" else aug.num_time_mask
    torch.manual_seed(7)
    out = aug.train()(x, lengths)
    torch.manual_seed(7)  # s3prl's MaskAlongAxis order: all widths, then all starts
    widths = torch.randint(low, high, (3, count))
    starts = torch.randint(0, max(1, size - int(widths.max())), (3, count))
    expected = x.clone()
    for b in range(3):
        for w, s in zip(widths[b].tolist(), starts[b].tolist()):
            if axis == "freq":
                expected[b, :, s:s + w] = 0.0
            else:
                expected[b, s:s + w, :] = 0.0
    assert torch.equal(out, expected)
    assert (out == 0).any()  # something was masked (widths of 0 alone would make this test vacuous)


def test_time_warp_resizes_both_sides_of_the_drawn_centre_and_skips_short_utterances():
    w = 5
    aug = SpecAugment(time_warp_window=w, num_freq_mask=0, num_time_mask=0).train()
    x = _frames(batch=2, t=30)
    lengths = torch.tensor([30, 10])  # 10 - 5 <= 5: the second utterance is too short to warp
    torch.manual_seed(3)
    out = aug(x, lengths)
    torch.manual_seed(3)
    center = int(torch.randint(w, 30 - w, (1,))[0])
    warped = int(torch.randint(center - w, center + w, (1,))[0]) + 1
    assert w <= center < 30 - w and center - w + 1 <= warped <= center + w
    y = x[0][None, None]
    left = F.interpolate(y[:, :, :center], (warped, 12), mode="bicubic", align_corners=False)[0, 0]
    right = F.interpolate(y[:, :, center:], (30 - warped, 12), mode="bicubic", align_corners=False)[0, 0]
    assert torch.equal(out[0, :warped], left) and torch.equal(out[0, warped:], right)
    assert torch.equal(out[1], x[1])
    # a sequence constant in time stays constant (bicubic weights sum to one): the warp moves, never scales
    flat = torch.ones(1, 40, 4) * 2.5
    assert torch.allclose(aug(flat, torch.tensor([40])), flat, atol=1e-6)


def test_eval_mode_is_untouched_and_the_same_seed_gives_the_same_output():
    aug = SpecAugment()
    x, lengths = _frames(t=60, d=64), torch.tensor([60, 41, 12])
    assert aug.eval()(x, lengths) is x
    aug.train()
    torch.manual_seed(11)
    a = aug(x, lengths)
    torch.manual_seed(11)
    b = aug(x, lengths)
    torch.manual_seed(12)
    c = aug(x, lengths)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)


def test_ctc_head_augments_while_training_only_and_gradients_reach_the_layer_weights():
    torch.manual_seed(0)
    plain = CTCHead(3, 16, 5, proj_dim=8, rnn_dims=(8,), dropout=0.0)
    # narrow frequency masks: s3prl's [0, 50) would blank all 16 channels of this toy upstream
    augmented = CTCHead(3, 16, 5, proj_dim=8, rnn_dims=(8,), dropout=0.0,
                        specaugment=SpecAugment(freq_mask_width_range=(0, 3)))
    augmented.load_state_dict(plain.state_dict())  # SpecAugment has no parameters: same state dict
    features, lengths = torch.randn(3, 2, 40, 16), torch.tensor([40, 33])
    plain.eval(), augmented.eval()
    assert torch.equal(plain(features, lengths), augmented(features, lengths))
    augmented.train()
    torch.manual_seed(1)
    out = augmented(features, lengths)
    assert not torch.equal(out, plain(features, lengths))
    (out * torch.randn(out.shape)).sum().backward()
    assert augmented.featurizer.weights.grad is not None and augmented.featurizer.weights.grad.abs().sum() > 0


def test_head_config_builds_specaugment_with_s3prl_asr_values_and_checks_them():
    assert CTCHeadConfig().make_specaugment() is None
    aug = CTCHeadConfig(specaugment=True).make_specaugment()
    assert (aug.time_warp_window, aug.freq_mask_width_range, aug.num_freq_mask, aug.time_mask_width_range,
            aug.num_time_mask) == (5, (0, 50), 4, (0, 40), 2)  # s3prl downstream/asr/config.yaml `specaug`
    with pytest.raises(RecipeError, match=r"freq_mask_width_range must be \[low, high\).*\[5, 5\]"):
        build_section(CTCHeadConfig, {"specaugment": True, "freq_mask_width_range": [5, 5]}, "asr: head")
    asr = get_task("asr")
    assert asr.load_recipe("superb").head.specaugment is True
    assert asr.load_recipe("fast").head.specaugment is False and asr.load_recipe("ci").head.specaugment is False
    assert all(not get_task("pr").load_recipe(p).head.specaugment for p in ("superb", "fast", "ci"))


def test_feature_layer_norm_feeds_the_head_the_weighted_sum_of_per_layer_layer_norms():
    torch.manual_seed(0)
    head = CTCHead(3, 16, 5, proj_dim=8, feature_layer_norm=True)
    with torch.no_grad():
        head.featurizer.weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
    features = torch.randn(3, 2, 7, 16) * torch.tensor([1.0, 10.0, 0.1])[:, None, None, None] + 3.0
    seen = []
    head.projector.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    head.eval()(features, torch.tensor([7, 5]))
    w = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), dim=0)
    expected = sum(w[i] * F.layer_norm(features[i], (16,)) for i in range(3))
    assert torch.allclose(seen[0], expected, atol=1e-6)
    without = CTCHead(3, 16, 5, proj_dim=8)
    without.load_state_dict(head.state_dict())
    seen.clear()
    without.projector.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    without.eval()(features, torch.tensor([7, 5]))
    assert not torch.allclose(seen[0], expected, atol=1e-3)
    assert build_section(CTCHeadConfig, {"feature_layer_norm": True}, "pr: head").feature_layer_norm is True

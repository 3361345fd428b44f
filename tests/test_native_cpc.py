"""The native `modified_cpc` upstream (upstreams/cpc.py) without s3prl: contract, sizes, frame counts,
pieces against independent computations, and the errors a wrong or missing file gives."""

import numpy as np
import pytest
import torch

from superbench.testing import chirp_wavs
from upstreams.cpc import FACTORIES, ChannelNorm, InstanceNorm, encoder_frames

FACTORY = FACTORIES["modified_cpc"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return FACTORY.write_random_checkpoint(tmp_path_factory.mktemp("cpc") / "cpc.pt", seed=1)


@pytest.mark.parametrize("overrides", [{}, {"normMode": "instanceNorm", "cpc_mode": "reverse", "arMode": "GRU"},
                                       {"normMode": "batchNorm", "arMode": "no_ar"}])
def test_contract_and_sizes(tmp_path, overrides, assert_upstream_contract):
    file = FACTORY.write_random_checkpoint(tmp_path / "c.pt", **overrides)
    # what s3prl's hub reports for this config: 2 hooked modules, hiddenEncoder wide, 160 samples per frame
    assert_upstream_contract(FACTORY(path=str(file)), num_layers=2, hidden_size=32, downsample_rate=160)


def test_frame_counts_follow_the_padded_convolutions(checkpoint):
    up = FACTORY(path=str(checkpoint))
    conv = up.model.gEncoder
    for n in (160, 319, 1000, 16000, 16159, 16160, 25599):
        x = torch.zeros(1, 1, n)
        for i in range(5):
            x = getattr(conv, f"conv{i}")(x)
        assert int(encoder_frames(torch.tensor([n]))[0]) == x.shape[-1] == (n + 1) // 160
        # the contract's rule drops the model's extra last frame only when n + 1 is a multiple of 160
        assert int(up.num_frames(torch.tensor([n]))[0]) == n // 160
    hidden, lengths = up.extract(chirp_wavs((25599, 16000)))
    assert lengths.tolist() == [159, 100]
    assert hidden[0].shape == (2, 159, 32)


def test_channel_norm_against_numpy():
    norm = ChannelNorm(6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 6).view(1, 6, 1))
        norm.bias.copy_(torch.linspace(-1, 1, 6).view(1, 6, 1))
    x = np.random.default_rng(0).standard_normal((2, 6, 5))
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, ddof=1, keepdims=True)  # CPC_audio uses torch's unbiased var
    expected = (x - mean) / np.sqrt(var + 1e-5) * np.linspace(0.5, 1.5, 6)[None, :, None] \
        + np.linspace(-1, 1, 6)[None, :, None]
    got = norm(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_instance_norm_matches_torch_and_takes_one_frame():
    ours, ref = InstanceNorm(4), torch.nn.InstanceNorm1d(4, affine=True)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 4, 9)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(ours(torch.randn(1, 4, 1))).all()


def test_weights_are_loaded(checkpoint, features_with_changed_weights):
    base, changed = features_with_changed_weights(
        FACTORY, checkpoint, lambda state: state["weights"]["gAR.baseNet.weight_hh_l1"].add_(0.5), chirp_wavs((8000,)))
    torch.testing.assert_close(changed[0], base[0])  # the encoder is untouched
    assert (changed[1] - base[1]).abs().max() > 1e-3  # the AR's second level is what was loaded


def test_other_family_and_unsupported_files(tmp_path, assert_format_error):
    """What they look like; any family's file, or a truncated one, naming the file: test_native_registry.py."""
    apc = tmp_path / "apc.ckpt"
    torch.save({"config": {"model": {"paras": {}}}, "model": {"x": torch.zeros(1)}}, apc)
    assert_format_error(FACTORY, apc, "no 'weights'.*APC")
    training = tmp_path / "checkpoint_4.pt"
    torch.save({"gEncoder": {}, "cpcCriterion": {}, "optimizer": {}, "best": None}, training)
    assert_format_error(FACTORY, training, "CPC_audio training checkpoint")
    mfcc = FACTORY.write_random_checkpoint(tmp_path / "mfcc.pt")
    state = torch.load(mfcc, weights_only=True)
    state["config"]["encoder_type"] = "mfcc"
    torch.save(state, mfcc)
    assert_format_error(FACTORY, mfcc, "encoder_type 'mfcc'")
    wrong = FACTORY.write_random_checkpoint(tmp_path / "wrong.pt")
    state = torch.load(wrong, weights_only=True)
    state["config"]["hiddenEncoder"] = state["config"]["hiddenGar"] = 48
    torch.save(state, wrong)
    assert_format_error(FACTORY, wrong, "do not fit")

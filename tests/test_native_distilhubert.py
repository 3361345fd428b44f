"""The native `distilhubert` upstream (upstreams/distilhubert.py) without s3prl: contract, sizes, layer
list, pieces against torch's own implementations, and the errors a wrong or missing file gives."""

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from superbench.testing import chirp_wavs
from upstreams.distilhubert import FACTORIES, SelfAttention, SplitLinear, WeightNormConv, parse_conv_layers

FACTORY = FACTORIES["distilhubert"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return FACTORY.write_random_checkpoint(tmp_path_factory.mktemp("distil") / "distiller.ckpt", seed=1)


@pytest.mark.parametrize("overrides, layers", [
    ({}, 6),  # projected features + 2 layers + 3 heads, as DistilHuBERT
    ({"extractor_mode": "layer_norm", "layer_norm_first": True}, 6),
    ({"task_emb_type": "self-hidden", "out_layer_type": "none", "n_tasks": 3}, 6),
    ({"encoder_layers": 0, "n_tasks": 1, "pred_layer_id": [12]}, 2),
])
def test_contract_and_sizes(tmp_path, overrides, layers, assert_upstream_contract):
    file = FACTORY.write_random_checkpoint(tmp_path / "d.ckpt", **overrides)
    # s3prl's hub: len(hidden_states), hidden size, get_downsample_rates -> 320
    assert_upstream_contract(FACTORY(path=str(file)), num_layers=layers, hidden_size=32, downsample_rate=320,
                             receptive_field=400)


def test_no_waveform_normalisation(tmp_path):
    """The Distiller sees the waveform as is (no per-utterance standardisation, unlike HuBERT Large):
    with a per-frame LayerNorm front end, a DC offset reaches the features; standardising would remove it."""
    up = FACTORY(path=str(FACTORY.write_random_checkpoint(tmp_path / "ln.ckpt", extractor_mode="layer_norm")))
    assert up.config_dict()["normalize"] is False
    wav = chirp_wavs((8000,))[0]
    a, _ = up.extract([wav])
    b, _ = up.extract([wav + 0.5])
    assert (a[0] - b[0]).abs().max() > 1e-3


def test_layer_list_is_features_layers_heads(checkpoint):
    up = FACTORY(path=str(checkpoint))
    model = up.model
    wav = torch.tensor(chirp_wavs((12000,))[0])
    hidden, lengths = up.extract([wav.numpy()])
    feat = model.feature_extractor(wav.unsqueeze(0)).transpose(1, 2)
    proj = model.post_extract_proj(feat)
    torch.testing.assert_close(hidden[0], proj)
    final, layers = model.encoder(proj, None)
    for i, h in enumerate(layers):
        torch.testing.assert_close(hidden[1 + i], h)
    heads = model.output_layer(final)  # (B, T, 3 * 32) -> 3 heads of 32
    for k in range(3):
        torch.testing.assert_close(hidden[3 + k], heads[:, :, k])
    assert lengths.tolist() == [(12000 - 400) // 320 + 1]


def test_conv_layer_spec_parses_like_python():
    text = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    assert parse_conv_layers(text) == eval(text)
    with pytest.raises(ValueError):
        parse_conv_layers("__import__('os').system('true')")


def test_attention_matches_torch_multi_head_attention():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4)
    x = torch.randn(2, 7, 16)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    ours = attn(x, pad)
    ref, _ = F.multi_head_attention_forward(
        x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 16, 4, torch.empty([0]),
        torch.cat((attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias)), None, None, False, 0.0,
        attn.out_proj.weight, attn.out_proj.bias, training=False, key_padding_mask=pad, need_weights=False,
        use_separate_proj_weight=True, q_proj_weight=attn.q_proj.weight, k_proj_weight=attn.k_proj.weight,
        v_proj_weight=attn.v_proj.weight)
    torch.testing.assert_close(ours, ref.transpose(0, 1), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_weight_norm_conv_matches_torch_weight_norm():
    torch.manual_seed(0)
    ours = WeightNormConv(8, 6, 2)
    conv = torch.nn.Conv1d(8, 8, 6, padding=3, groups=2)
    conv = torch.nn.utils.weight_norm(conv, name="weight", dim=2)
    with torch.no_grad():
        ours.weight_g.mul_(1.7)
    conv.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8, 20)
    torch.testing.assert_close(ours(x), conv(x), atol=1e-5, rtol=1e-5)


def test_split_linear_is_one_linear_per_split():
    torch.manual_seed(0)
    split = SplitLinear(4, 3, 5)
    x = torch.randn(2, 6, 12)
    out = split(x)
    for k in range(3):
        expected = x[:, :, 4 * k: 4 * (k + 1)] @ split.weight[k] + split.bias[0, 0, k]
        torch.testing.assert_close(out[:, :, k], expected, atol=1e-5, rtol=1e-5)


def test_weights_are_loaded(checkpoint, features_with_changed_weights):
    base, changed = features_with_changed_weights(
        FACTORY, checkpoint, lambda state: state["Distiller"]["encoder.layers.1.fc1.bias"].add_(0.5),
        chirp_wavs((8000,)))
    for layer in (0, 1):
        torch.testing.assert_close(changed[layer], base[layer])
    assert (changed[2] - base[2]).abs().max() > 1e-3


def test_pickled_objects_of_missing_modules_are_stood_in_for(tmp_path, checkpoint):
    """Old s3prl checkpoints pickle a scheduler from the former top-level `optimizers` module."""
    module = types.ModuleType("optimizers_gone_for_test")

    class Scheduler:
        def __init__(self):
            self.step = 3

    Scheduler.__module__, Scheduler.__qualname__ = module.__name__, "Scheduler"
    module.Scheduler = Scheduler
    sys.modules[module.__name__] = module
    try:
        state = torch.load(checkpoint, weights_only=False)
        state["Scheduler"] = Scheduler()
        old = tmp_path / "old.ckpt"
        torch.save(state, old)
    finally:
        del sys.modules[module.__name__]
    up = FACTORY(path=str(old))
    ref = FACTORY(path=str(checkpoint))
    assert up.fingerprint() == ref.fingerprint()


def test_other_family_and_unsupported_files(tmp_path, checkpoint, assert_format_error):
    """What they look like; any family's file, or a truncated one, naming the file: test_native_registry.py."""
    mockingjay = tmp_path / "mockingjay.ckpt"
    torch.save({"Transformer": {"x": torch.zeros(1)}, "Config": {}, "Settings": {}}, mockingjay)
    assert_format_error(FACTORY, mockingjay, "no 'Distiller'.*Mockingjay")
    cpc = tmp_path / "cpc.pt"
    torch.save({"config": {}, "weights": {"gEncoder.conv0.weight": torch.zeros(1)}}, cpc)
    assert_format_error(FACTORY, cpc, "no 'Distiller', 'Config'")
    for file, change, says in (("sparse.ckpt", {"attention_type": "sparse"}, "attention_type 'sparse'"),
                               ("nosection.ckpt", None, "no 'distiller' section"),
                               ("wrong.ckpt", {"encoder_ffn_embed_dim": 48}, "do not fit")):
        state = torch.load(checkpoint, weights_only=False)
        if change is None:
            state["Config"] = {"runner": {}}
        else:
            state["Config"]["distiller"].update(change)
        torch.save(state, tmp_path / file)
        assert_format_error(FACTORY, tmp_path / file, says)

"""Native `npc` (upstreams/npc.py) in the CPU venv: contract, layer order, the masked-convolution property,
checkpoint errors, weights actually used. The layer-by-layer match with s3prl is test_s3prl_equivalence_npc.py."""

from __future__ import annotations

import pytest
import torch

from superbench.testing import chirp_wavs
from upstreams.apc import HammingFbank, parse_audio_config, tiny_audio_config
from upstreams.npc import FACTORIES, write_random_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("npc") / "npc.ckpt", seed=2)


@pytest.mark.parametrize("paras, layers", [({}, 9), ({"disable_cross_layer": True}, 6),
                                           ({"batch_norm": False, "activate": "tanh", "n_blocks": 2}, 5)])
def test_contract_and_geometry(tmp_path, paras, layers, assert_upstream_contract):
    up = FACTORIES["npc"](path=str(write_random_checkpoint(tmp_path / "npc.ckpt", **paras)))
    # s3prl's hub on these configs: 2 n_blocks + 1 hidden states (n_blocks + 2 with disable_cross_layer)
    assert_upstream_contract(up, num_layers=layers, hidden_size=32, downsample_rate=160, receptive_field=400)


def test_checkpoint_layout_is_s3prls(ckpt):
    loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert set(loaded) == {"config", "model"}
    assert loaded["config"]["model"]["paras"]["n_blocks"] == 4
    keys = set(loaded["model"])
    assert {"blocks.0.conv.weight", "blocks.3.bn2.running_var", "blocks.1.bn1.num_batches_tracked",
            "masked_convs.2.conv_mask", "masked_convs.3.conv.bias", "vq_layers.3.vq_logits.bias",
            "postnet.weight"} <= keys
    # the stored masks zero the centre taps: mask_size 5 + 2 (block 0) ... + 8 (block 3) of kernel 15
    for i in range(4):
        taps = loaded["model"][f"masked_convs.{i}.conv_mask"][0, 0]
        assert int((taps == 0).sum()) == 5 + 2 * (i + 1)


def test_front_end_is_apcs(ckpt):
    up = FACTORIES["npc"](path=str(ckpt))
    reference = HammingFbank(parse_audio_config(tiny_audio_config(), "x", "APC"))
    wav = torch.from_numpy(chirp_wavs((7000,))[0])[None]
    a, _ = up.frontend(wav, torch.tensor([7000]))
    b, _ = reference(wav, torch.tensor([7000]))
    assert torch.equal(a, b)


def test_layer_order_and_the_masked_centre(ckpt):
    """Hidden states come in s3prl's hook order (block i, masked conv i, ..., sum); the NPC feature at frame t
    never sees input frames t-2..t+2 (mask_size 5), but does see farther ones; block 0 sees t-1..t+1."""
    up = FACTORIES["npc"](path=str(ckpt))
    feats = torch.randn(1, 40, 80, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([40])
    with torch.inference_mode():
        states = up.model(feats, lengths)
        bumped = feats.clone()
        bumped[0, 20] += 3.0
        after = up.model(bumped, lengths)
    assert len(states) == 9
    summed = states[1] + states[3] + states[5] + states[7]
    assert torch.allclose(states[8], summed, atol=1e-6)
    diff = (states[8] - after[8]).abs().amax(-1)[0]
    assert float(diff[18:23].max()) == 0.0
    assert float(diff[17]) > 0 and float(diff[23]) > 0
    block0 = (states[0] - after[0]).abs().amax(-1)[0]
    assert float(block0[19:22].min()) > 0 and float(block0[:19].max()) == 0.0 and float(block0[22:].max()) == 0.0


def test_other_family_files_are_format_errors(tmp_path, assert_format_error):
    """What they look like; any family's file, or a truncated one, naming the file: test_native_registry.py."""
    other = tmp_path / "fairseq.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "args": None}, other)
    assert_format_error(FACTORIES["npc"], other, "'config'.*fairseq")
    from upstreams.apc import FACTORIES as APC

    assert_format_error(FACTORIES["npc"], APC["apc"].write_random_checkpoint(tmp_path / "apc.ckpt"), "APC model")
    not_a_dict = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), not_a_dict)
    assert_format_error(FACTORIES["npc"], not_a_dict)


def test_bad_configs_are_format_errors(tmp_path, ckpt, assert_format_error):
    loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
    for change, match in (({"kernel_size": 13}, "kernel_size=13"), ({"dim_bottleneck": 8}, "bottleneck"),
                          ({"activate": "gelu"}, "gelu"), ({"hidden_size": 24}, "do not fit|code_dim")):
        bad = {**loaded, "config": {**loaded["config"], "model": {"paras": {**loaded["config"]["model"]["paras"],
                                                                             **change}}}}
        torch.save(bad, tmp_path / "bad.ckpt")
        assert_format_error(FACTORIES["npc"], tmp_path / "bad.ckpt", f"({match})")


def test_weights_and_batchnorm_statistics_are_used(tmp_path, ckpt):
    wav = chirp_wavs((9000,), seed=4)
    base, _ = FACTORIES["npc"](path=str(ckpt)).extract(wav)
    loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
    loaded["model"]["blocks.2.bn1.running_mean"] += 0.5
    torch.save(loaded, tmp_path / "changed.ckpt")
    up = FACTORIES["npc"](path=str(tmp_path / "changed.ckpt"))
    up.train()  # a frozen upstream: BatchNorm keeps its running statistics anyway
    changed, _ = up.extract(wav)
    for k in range(4):  # blocks 0, 1 and their masked convs come before the change
        assert torch.equal(base[k], changed[k])
    assert float((base[4] - changed[4]).abs().max()) > 1e-3
    assert float((base[8] - changed[8]).abs().max()) > 1e-3

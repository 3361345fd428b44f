"""transformers upstreams: tiny random models of each family, local checkpoints, offline failure."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from superbench.upstream import load_upstream
from superbench.validate import all_passed, format_checks, validate_upstream
from upstreams.hf import SPECS, TINY, HFSpec, WeightsNotFoundError, build_hf_upstream

TINY_NAMES = ["hubert-tiny-random", "wav2vec2-tiny-random", "wavlm-tiny-random", "data2vec-tiny-random"]


def clips(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_models_keep_the_contract(name):
    up = load_upstream(name)
    assert (up.num_layers, up.hidden_size, up.downsample_rate, up.receptive_field) == (3, 32, 320, 400)
    checks = validate_upstream(up)
    assert all_passed(checks), format_checks(checks)


def test_large_style_checkpoint_with_layer_norm_cnn_and_normalisation():
    """Large checkpoints: LayerNorm conv stack, pre-LN transformer, waveform normalisation on."""
    spec = HFSpec("wav2vec2-tiny-large-style", "wav2vec2", None, True,
                  {**TINY, "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True})
    up = build_hf_upstream(spec)
    assert up.normalize and not up.per_utterance_cnn
    checks = validate_upstream(up)
    assert all_passed(checks), format_checks(checks)
    # per-utterance normalisation makes the features independent of the input gain
    wav = clips(12000)[0]
    a, _ = up.extract([wav])
    b, _ = up.extract([wav * 7.0])
    assert max(float((x - y).abs().max()) for x, y in zip(a, b)) < 1e-4


def test_group_norm_models_need_per_utterance_cnn():
    """Without the per-utterance CNN, zero padding would change a base model's features."""
    up = load_upstream("hubert-tiny-random")
    assert up.per_utterance_cnn
    short, long_ = clips(6000, 16000)
    batch = torch.zeros(1, 16000)
    batch[0, :6000] = torch.from_numpy(short)
    naive = up.model.feature_extractor(batch)[0, :, : int(up.num_frames(torch.tensor([6000]))[0])]
    alone = up.model.feature_extractor(batch[:, :6000])[0]
    assert float((naive - alone).abs().max()) > 1e-3  # the problem is real...
    (h_batch, *_), _ = up.extract([short, long_])
    (h_alone, *_), _ = up.extract([short])
    assert torch.allclose(h_batch[0, : h_alone.shape[1]], h_alone[0], atol=1e-5)  # ...and handled


def test_random_init_is_seeded_and_fingerprinted():
    a, b = load_upstream("wavlm-tiny-random"), load_upstream("wavlm-tiny-random")
    c = load_upstream("wavlm-tiny-random", seed=1)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    wav = clips(8000)
    assert torch.equal(a.extract(wav)[0][-1], b.extract(wav)[0][-1])
    assert not torch.allclose(a.extract(wav)[0][-1], c.extract(wav)[0][-1])
    # random init must not disturb the caller's RNG stream
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_upstream("hubert-tiny-random")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name, family", [("hubert-tiny-random", "hubert"), ("data2vec-tiny-random", "data2vec")])
def test_save_pretrained_round_trip_through_local_path(tmp_path, name, family):
    up = load_upstream(name)
    up.model.save_pretrained(tmp_path / "ckpt")
    via_spec = load_upstream(f"{family}={tmp_path / 'ckpt'}")
    via_path = load_upstream(family, path=str(tmp_path / "ckpt"))
    wavs = clips(16000, 5000)
    ref, ref_len = up.extract(wavs)
    for other in (via_spec, via_path):
        assert other.normalize == up.normalize
        hs, lens = other.extract(wavs)
        assert torch.equal(lens, ref_len)
        assert len(hs) == 3 and all(torch.equal(x, y) for x, y in zip(hs, ref))
    assert via_path.state_dict().keys() == up.state_dict().keys()


def test_checkpoint_preprocessor_config_decides_normalisation(tmp_path):
    up = load_upstream("hubert-tiny-random")
    up.model.save_pretrained(tmp_path)
    assert load_upstream("hubert", path=str(tmp_path)).normalize is False  # family default (base)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    assert load_upstream("hubert", path=str(tmp_path)).normalize is True
    assert load_upstream("hubert", path=str(tmp_path), normalize=False).normalize is False


def test_missing_weights_fail_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as err:
        load_upstream("wavlm-large")
    assert time.monotonic() - start < 30
    message = str(err.value)
    for needle in ("microsoft/wavlm-large", "--upstream-path DIR", "wavlm-large=DIR", "hf download"):
        assert needle in message


def test_hub_unreachable_is_detected_without_hanging(monkeypatch):
    import upstreams.hf as hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(WeightsNotFoundError, match="unreachable"):
        hf.build_hf_upstream(SPECS["data2vec"])


def test_bad_local_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_upstream("hubert", path=str(tmp_path))


def test_published_names_map_to_hub_ids_and_sizes():
    expected = {
        "hubert": ("facebook/hubert-base-ls960", 13), "hubert-large": ("facebook/hubert-large-ll60k", 25),
        "wav2vec2": ("facebook/wav2vec2-base", 13), "wav2vec2-large": ("facebook/wav2vec2-large-lv60", 25),
        "wavlm": ("microsoft/wavlm-base", 13), "wavlm-large": ("microsoft/wavlm-large", 25),
        "data2vec": ("facebook/data2vec-audio-base", 13), "data2vec-large": ("facebook/data2vec-audio-large", 25),
    }
    for name, (hub_id, layers) in expected.items():
        assert SPECS[name].hub_id == hub_id
        assert SPECS[name].info().layers == layers


def test_hubert_base_random_is_the_default_config():
    up = load_upstream("hubert-base-random")
    assert (up.num_layers, up.hidden_size, up.receptive_field, up.downsample_rate) == (13, 768, 400, 320)
    hs, lens = up.extract(clips(3200))
    assert len(hs) == 13 and hs[0].shape == (1, 9, 768) and lens.tolist() == [9]


@pytest.mark.parametrize("name", TINY_NAMES)
def test_hidden_states_equal_transformers_output_hidden_states(name):
    """For one unpadded clip the result is exactly what transformers itself returns."""
    up = load_upstream(name)
    wav = clips(9000)[0]
    ours, _ = up.extract([wav])
    x = torch.from_numpy(wav).unsqueeze(0)
    if up.normalize:
        x = torch.nn.functional.layer_norm(x, x.shape[1:])
    with torch.inference_mode():
        theirs = up.model(x, output_hidden_states=True).hidden_states
    assert len(theirs) == len(ours) == 3
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)

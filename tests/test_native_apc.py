"""Native `apc` / `vq_apc` (upstreams/apc.py) in the CPU venv: contract, front end against kaldi-native-fbank,
checkpoint errors, weights actually used. The layer-by-layer match with s3prl is test_s3prl_equivalence_apc.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superbench.testing import chirp_wavs
from superbench.upstream import pad_batch
from upstreams.apc import FACTORIES, parse_audio_config, tiny_audio_config
from upstreams.ssl_checkpoint import CheckpointFormatError

SR = 16000


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("apc")
    return {name: FACTORIES[name].write_random_checkpoint(folder / f"{name}.ckpt", seed=1)
            for name in ("apc", "vq_apc")}


@pytest.mark.parametrize("name", ["apc", "vq_apc"])
def test_contract_and_geometry(ckpts, name, assert_upstream_contract):
    # s3prl's hub on this config: 3 hidden states of hidden_size 32, downsample rate 160
    assert_upstream_contract(FACTORIES[name](path=str(ckpts[name])), num_layers=3, hidden_size=32,
                             downsample_rate=160, receptive_field=400)


def test_checkpoint_layout_is_s3prls(ckpts):
    ckpt = torch.load(ckpts["vq_apc"], map_location="cpu", weights_only=True)
    assert set(ckpt) == {"config", "model"}
    assert set(ckpt["config"]["model"]["paras"]) == {"num_layers", "hidden_size", "dropout", "residual", "vq"}
    assert ckpt["config"]["data"]["audio"]["feat_type"] == "fbank"
    keys = set(ckpt["model"])
    assert {"rnn_layers.0.weight_ih_l0", "rnn_layers.2.bias_hh_l0", "vq_layers.1.vq_logits.weight",
            "vq_layers.0.codebook_CxE.weight", "postnet.bias"} <= keys


def _knf_hamming_fbank(wav: np.ndarray) -> np.ndarray:
    """Kaldi fbank from kaldi-native-fbank set as s3prl's APC calls torchaudio's kaldi.fbank (hamming window)."""
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.mel_opts.num_bins = 80
    opts.mel_opts.low_freq, opts.mel_opts.high_freq = 20.0, 0.0
    opts.use_energy = False
    opts.frame_opts.samp_freq = SR
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.frame_length_ms, opts.frame_opts.frame_shift_ms = 25.0, 10.0
    extractor = knf.OnlineFbank(opts)
    extractor.accept_waveform(SR, wav.tolist())
    extractor.input_finished()
    return np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])


def test_front_end_matches_kaldi_native_fbank(ckpts):
    """Measured on white noise: static log-mels max abs diff 7.4e-5 (values up to ~10); after CMVN 6.1e-5."""
    up = FACTORIES["apc"](path=str(ckpts["apc"]))
    wavs = chirp_wavs((16000, 11111), chirp=0.0, noise=0.1)
    feats, frames = up.frontend(*pad_batch(wavs))
    assert frames.tolist() == [98, 67]
    for i, w in enumerate(wavs):
        ref = _knf_hamming_fbank(w).astype(np.float64)
        n = int(frames[i])
        static = up.frontend.kaldi.frame_features(torch.from_numpy(w)[None])[0].numpy()
        assert static.shape == ref.shape == (n, 80)
        assert float(np.abs(static - ref).max()) < 5e-4
        cmvn = (ref - ref.mean(0)) / (1e-10 + ref.std(0, ddof=1))
        assert float(np.abs(feats[i, :n].numpy() - cmvn).max()) < 1e-3
        assert float(feats[i, n:].abs().sum()) == 0.0  # padded frames are zero, as pad_sequence leaves them


def test_audio_config_options(tmp_path):
    cfg = parse_audio_config({**tiny_audio_config(), "frame_length": 20, "cmvn": False}, "x.ckpt", "APC")
    assert (cfg.window_size, cfg.window_shift, cfg.cmvn, cfg.window) == (320, 160, False, "hamming")
    with pytest.raises(CheckpointFormatError, match="dither"):
        parse_audio_config({**tiny_audio_config(), "dither": 1.0}, "x.ckpt", "APC")
    with pytest.raises(CheckpointFormatError, match="feat_type"):
        parse_audio_config({**tiny_audio_config(), "feat_type": "mfcc"}, "x.ckpt", "APC")


def test_other_family_files_are_format_errors(tmp_path, assert_format_error):
    """What they look like; any family's file, or a truncated one, naming the file: test_native_registry.py."""
    other = tmp_path / "tera.ckpt"
    torch.save({"Transformer": {"a": torch.zeros(1)}, "Settings": {}}, other)
    assert_format_error(FACTORIES["apc"], other, "Mockingjay/TERA")
    from upstreams.npc import write_random_checkpoint

    assert_format_error(FACTORIES["apc"], write_random_checkpoint(tmp_path / "npc.ckpt"), "NPC model")
    no_paras = tmp_path / "no_paras.ckpt"
    torch.save({"config": {"model": {}}, "model": {}}, no_paras)
    assert_format_error(FACTORIES["apc"], no_paras, r"model\.paras")


def test_wrong_weights_and_too_few_layers_are_format_errors(tmp_path, ckpts, assert_format_error):
    ckpt = torch.load(ckpts["apc"], map_location="cpu", weights_only=True)
    ckpt["config"]["model"]["paras"]["hidden_size"] = 48
    torch.save(ckpt, tmp_path / "shape.ckpt")
    assert_format_error(FACTORIES["apc"], tmp_path / "shape.ckpt", "do not fit")
    ckpt = torch.load(ckpts["apc"], map_location="cpu", weights_only=True)
    ckpt["config"]["model"]["paras"]["num_layers"] = 2
    torch.save(ckpt, tmp_path / "two.ckpt")
    assert_format_error(FACTORIES["apc"], tmp_path / "two.ckpt", "at least 3")


def test_weights_are_loaded_and_vq_never_reaches_a_layer(ckpts, features_with_changed_weights):
    def gru(ckpt):
        ckpt["model"]["rnn_layers.1.weight_hh_l0"].add_(0.1)

    def codebook(ckpt):
        ckpt["model"]["vq_layers.0.codebook_CxE.weight"].add_(1.0)

    wav = chirp_wavs((9000,), seed=2)
    factory, file = FACTORIES["vq_apc"], ckpts["vq_apc"]
    base, changed = features_with_changed_weights(factory, file, lambda ckpt: (gru(ckpt), codebook(ckpt)), wav)
    assert torch.equal(base[0], changed[0])  # layer 0 is before the changed GRU
    assert float((base[1] - changed[1]).abs().max()) > 1e-3
    assert float((base[2] - changed[2]).abs().max()) > 1e-3
    _, vq_only = features_with_changed_weights(factory, file, codebook, wav)
    for a, b in zip(base, vq_only):  # s3prl exposes the pre-quantisation feature
        assert torch.allclose(a, b, atol=1e-6)


def test_residual_connection_of_the_upper_layers(ckpts):
    """With residual, layer k (k >= 1) = GRU_k(layer k-1) + layer k-1: checked with the GRUs run by hand."""
    up = FACTORIES["apc"](path=str(ckpts["apc"]))
    wav = torch.from_numpy(chirp_wavs((8000,), seed=3)[0])[None]
    (h0, h1, h2), _ = up(wav, torch.tensor([8000]))
    feats, _ = up.frontend(wav, torch.tensor([8000]))
    with torch.inference_mode():
        g0, _ = up.model.rnn_layers[0](feats)
        g1, _ = up.model.rnn_layers[1](g0)
        g2, _ = up.model.rnn_layers[2](g1 + g0)
    assert torch.allclose(h0, g0, atol=1e-6)
    assert torch.allclose(h1, g1 + g0, atol=1e-6)
    assert torch.allclose(h2, g2 + g1 + g0, atol=1e-6)

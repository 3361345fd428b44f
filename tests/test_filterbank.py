"""Kaldi-compatible fbank/mfcc baselines, checked against hand-computed and independently computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from superbench.upstream import load_upstream
from upstreams.filterbank import FLOAT_EPS, compute_deltas_masked, masked_cmvn

SR = 16000


def kaldi_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_inv(m):
    return 700.0 * (np.exp(np.asarray(m, dtype=np.float64) / 1127.0) - 1.0)


def numpy_logmel_frame(frame: np.ndarray, num_bins: int) -> np.ndarray:
    """An independent, loop-based Kaldi log-mel for one 400-sample frame (Kaldi docs / feature-window.cc)."""
    x = frame.astype(np.float64)
    x = x - x.mean()
    x = np.concatenate([[x[0] - 0.97 * x[0]], x[1:] - 0.97 * x[:-1]])
    n = np.arange(400)
    x = x * (0.5 - 0.5 * np.cos(2 * np.pi * n / 399)) ** 0.85
    power = np.abs(np.fft.rfft(x, 512)) ** 2
    lo, hi = kaldi_mel(20.0), kaldi_mel(8000.0)
    step = (hi - lo) / (num_bins + 1)
    out = np.empty(num_bins)
    for b in range(num_bins):
        left, centre, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
        energy = 0.0
        for k in range(256):  # Kaldi ignores the Nyquist bin
            m = kaldi_mel(k * SR / 512)
            if left < m < right:
                weight = (m - left) / (centre - left) if m <= centre else (right - m) / (right - centre)
                energy += weight * power[k]
        out[b] = math.log(max(energy, FLOAT_EPS))
    return out


@pytest.fixture(scope="module")
def fbank():
    return load_upstream("fbank")


@pytest.fixture(scope="module")
def mfcc():
    return load_upstream("mfcc")


def test_dimensions_and_geometry(fbank, mfcc):
    assert (fbank.num_layers, fbank.hidden_size, fbank.downsample_rate, fbank.receptive_field) == (1, 240, 160, 400)
    assert (mfcc.num_layers, mfcc.hidden_size, mfcc.downsample_rate, mfcc.receptive_field) == (1, 39, 160, 400)


@pytest.mark.parametrize("n, frames", [(400, 1), (559, 1), (560, 2), (16000, 98), (16080, 99), (16239, 99),
                                       (16240, 100)])
def test_frame_count_follows_snip_edges(fbank, n, frames):
    (h,), lengths = fbank.extract([np.random.default_rng(0).standard_normal(n).astype(np.float32)])
    assert lengths.tolist() == [frames]
    assert h.shape == (1, frames, 240)


def test_dc_signal_gives_floor_energies(fbank):
    """A constant signal is all DC: after DC removal every mel energy is the log floor, and CMVN gives 0."""
    wav = torch.full((1, 4000), 0.3)
    static = fbank.frame_features(wav)
    assert torch.allclose(static, torch.full_like(static, math.log(FLOAT_EPS)))
    (h,), _ = fbank.extract([wav[0].numpy()])
    assert float(h.abs().max()) == 0.0


def test_sine_peaks_in_the_kaldi_mel_bin(fbank):
    lo, hi = kaldi_mel(20.0), kaldi_mel(8000.0)
    for target_bin in (10, 30, 55):
        centre_hz = float(kaldi_mel_inv(lo + (target_bin + 1) * (hi - lo) / 81))
        wav = torch.sin(2 * math.pi * centre_hz * torch.arange(8000) / SR).unsqueeze(0)
        static = fbank.frame_features(wav)
        assert int(static[0, 10].argmax()) == target_bin, centre_hz


def test_one_frame_matches_independent_numpy_reference(fbank):
    rng = np.random.default_rng(1)
    wav = (0.1 * rng.standard_normal(1200) + np.sin(np.arange(1200) * 0.07)).astype(np.float32)
    static = fbank.frame_features(torch.from_numpy(wav).unsqueeze(0))[0]
    for t in (0, 2, 5):
        ref = numpy_logmel_frame(wav[t * 160: t * 160 + 400], 80)
        np.testing.assert_allclose(static[t].numpy(), ref, atol=1e-3, rtol=1e-4)


def test_mfcc_is_lifted_orthonormal_dct_of_23_log_mels(mfcc):
    scipy_fft = pytest.importorskip("scipy.fft")
    rng = np.random.default_rng(2)
    wav = (0.1 * rng.standard_normal(2000)).astype(np.float32)
    ceps = mfcc.frame_features(torch.from_numpy(wav).unsqueeze(0))[0].numpy()
    lifter = 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    for t in (0, 4):
        logmel = numpy_logmel_frame(wav[t * 160: t * 160 + 400], 23)
        ref = scipy_fft.dct(logmel, type=2, norm="ortho")[:13] * lifter
        np.testing.assert_allclose(ceps[t], ref, atol=2e-3, rtol=1e-4)


def test_deltas_of_a_linear_ramp_with_replicated_edges():
    slope = 0.5
    x = torch.zeros(2, 10, 1)
    x[0, :, 0] = slope * torch.arange(10) + 3
    x[1, :6, 0] = slope * torch.arange(6) - 1
    x[1, 6:, 0] = 1000.0  # padding garbage must not leak in
    d = compute_deltas_masked(x, torch.tensor([10, 6]), win_length=5)[..., 0]
    # interior: slope; edge frames replicate: t=0 (a + 2*2a)/10 = 0.5a, t=1 (2a + 2*3a)/10 = 0.8a
    expected_full = slope * torch.tensor([0.5, 0.8, 1, 1, 1, 1, 1, 1, 0.8, 0.5])
    assert torch.allclose(d[0], expected_full)
    assert torch.allclose(d[1, :6], slope * torch.tensor([0.5, 0.8, 1, 1, 0.8, 0.5]))


def test_cmvn_uses_valid_frames_only():
    g = torch.Generator().manual_seed(0)
    x = 5 + 3 * torch.randn(2, 20, 4, generator=g)
    x[1, 12:] = 1e6
    y = masked_cmvn(x, torch.tensor([20, 12]))
    for i, n in enumerate((20, 12)):
        assert torch.allclose(y[i, :n].mean(0), torch.zeros(4), atol=1e-5)
        assert torch.allclose(y[i, :n].std(0), torch.ones(4), atol=1e-5)
    assert float(y[1, 12:].abs().max()) == 0.0


def test_fbank_output_is_normalised_per_utterance_in_a_padded_batch(fbank):
    rng = np.random.default_rng(3)
    wavs = [rng.standard_normal(n).astype(np.float32) * s for n, s in ((16000, 0.5), (7000, 0.01))]
    (h,), lengths = fbank.extract(wavs)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(h[i, :n].mean(0), torch.zeros(240), atol=1e-4)
        assert torch.allclose(h[i, :n].std(0), torch.ones(240), atol=1e-3)
        (alone,), _ = fbank.extract([wavs[i]])
        assert torch.allclose(h[i, :n], alone[0], atol=1e-5)


def test_weights_path_is_refused():
    with pytest.raises(ValueError, match="no weights"):
        load_upstream("fbank", path="/tmp/whatever")


def _torchaudio():
    from superbench.torchaudio_compat import is_placeholder

    try:
        import torchaudio.compliance.kaldi  # noqa: F401
        import torchaudio.functional  # noqa: F401
    except Exception:
        return None
    return None if is_placeholder(torchaudio) else torchaudio


@pytest.mark.skipif(_torchaudio() is None, reason="no working torchaudio (optional cross-check)")
@pytest.mark.parametrize("kind", ["fbank", "mfcc"])
def test_matches_torchaudio_kaldi_pipeline(kind):
    ta = _torchaudio()
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(16000, generator=g) + torch.sin(torch.arange(16000) * 0.05)
    if kind == "fbank":
        x = ta.compliance.kaldi.fbank(wav.view(1, -1), sample_frequency=SR, num_mel_bins=80)
    else:
        x = ta.compliance.kaldi.mfcc(wav.view(1, -1), sample_frequency=SR)
    feats = [x]
    for _ in range(2):
        feats.append(ta.functional.compute_deltas(feats[-1].t().unsqueeze(0), win_length=5).squeeze(0).t())
    x = torch.cat(feats, -1)
    x = (x - x.mean(0, keepdim=True)) / (1e-10 + x.std(0, keepdim=True))
    (h,), _ = load_upstream(kind).extract([wav.numpy()])
    assert float((h[0] - x).abs().max()) < 1e-3


def _knf_features(kind: str, wav: np.ndarray) -> np.ndarray:
    """Kaldi features from kaldi-native-fbank (a C++ port of Kaldi's feature code), set to s3prl's baseline."""
    knf = pytest.importorskip("kaldi_native_fbank")
    if kind == "fbank":
        opts, online = knf.FbankOptions(), knf.OnlineFbank
        opts.mel_opts.num_bins = 80
    else:
        opts, online = knf.MfccOptions(), knf.OnlineMfcc
        opts.mel_opts.num_bins, opts.num_ceps, opts.cepstral_lifter = 23, 13, 22.0
    opts.use_energy = False
    opts.frame_opts.samp_freq = SR
    opts.frame_opts.dither = 0.0  # knf's default is 3e-5; torchaudio's (and ours) is 0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.preemph_coeff = 0.97
    opts.frame_opts.remove_dc_offset = True
    opts.mel_opts.low_freq, opts.mel_opts.high_freq = 20.0, 0.0
    extractor = online(opts)
    extractor.accept_waveform(SR, wav.tolist())
    extractor.input_finished()
    return np.stack([extractor.get_frame(i) for i in range(extractor.num_frames_ready)])


def _numpy_deltas(x: np.ndarray) -> np.ndarray:
    """Kaldi/torchaudio deltas, window 5: sum_n n (x[t+n] - x[t-n]) / 10, edges replicated."""
    pad = np.concatenate([x[:1], x[:1], x, x[-1:], x[-1:]])
    return sum(n * (pad[2 + n: len(pad) - 2 + n] - pad[2 - n: len(pad) - 2 - n]) for n in (1, 2)) / 10.0


@pytest.mark.parametrize("kind", ["fbank", "mfcc"])
def test_matches_kaldi_native_fbank(kind):
    """The cross-check that runs everywhere (kaldi-native-fbank is a dev dependency): static features frame by
    frame, then the whole 240/39-d pipeline with numpy deltas and CMVN. Measured max abs diff: static fbank
    3.7e-5, mfcc 7.8e-5 (values up to ~38); full pipeline fbank 4.6e-5, mfcc 1.3e-5."""
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16000) + np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    ref = _knf_features(kind, wav)
    upstream = load_upstream(kind)
    static = upstream.frame_features(torch.from_numpy(wav).unsqueeze(0))[0].numpy()
    assert static.shape == ref.shape == (98, 80 if kind == "fbank" else 13)
    assert float(np.abs(static - ref).max()) < 5e-4
    d1 = _numpy_deltas(ref.astype(np.float64))
    full = np.concatenate([ref, d1, _numpy_deltas(d1)], axis=1)
    full = (full - full.mean(0)) / (1e-10 + full.std(0, ddof=1))
    (h,), _ = upstream.extract([wav])
    assert float(np.abs(h[0].numpy() - full).max()) < 1e-3

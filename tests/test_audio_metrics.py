"""SI-SDR, PESQ and STOI (superbench.audio_metrics) against hand-computed and independently computed values."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from superbench import audio_metrics as am

SR = 16000


def speech_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal: PESQ's voice activity detector finds utterances in it."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2  # syllables with pauses
    return (0.3 * voiced * envelope + 1e-3 * rng.standard_normal(t.size)).astype(np.float64)


def at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    scale = np.sqrt((clean @ clean) / (noise @ noise) / 10 ** (snr_db / 10))
    return clean + scale * noise


# --------------------------------------------------------------------------- SI-SDR


def test_si_sdr_of_a_hand_computed_case():
    # zero-mean reference r = [1, -1, 1, -1]; estimate e = 2r + n with n = [1, 1, -1, -1] (orthogonal to r, zero-mean)
    r = np.array([1.0, -1.0, 1.0, -1.0])
    n = np.array([1.0, 1.0, -1.0, -1.0])
    e = 2 * r + n
    # alpha = <e, r>/||r||^2 = 2; target 2r has energy 16, noise n energy 4: 10 log10(4) dB
    assert am.si_sdr(r, e) == pytest.approx(10 * np.log10(4.0), abs=1e-12)
    # scale invariance and an offset (removed by the zero mean) change nothing
    assert am.si_sdr(r, 7.5 * e + 3.0) == pytest.approx(10 * np.log10(4.0), abs=1e-9)
    # the improvement over a mixture r + 2n (alpha 1, target energy 4, noise 16: -6.02 dB)
    assert am.si_sdr_improvement(r, e, r + 2 * n) == pytest.approx(10 * np.log10(4.0) - 10 * np.log10(0.25))


def lstsq_si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """An independent formula: the target is the least-squares fit of the estimate by the reference (numpy's
    lstsq on the centred signals); SI-SDR the energy ratio of fit and residual."""
    ref = (reference - reference.mean())[:, None]
    est = estimate - estimate.mean()
    coef, *_ = np.linalg.lstsq(ref, est, rcond=None)
    fit = (ref @ coef).ravel()
    return 10 * np.log10(np.sum(fit ** 2) / np.sum((est - fit) ** 2))


def test_si_sdr_matches_an_independent_implementation_on_random_signals():
    rng = np.random.default_rng(3)
    ours, theirs = [], []
    for _ in range(20):
        ref = rng.standard_normal(4000) + 0.3
        est = rng.uniform(0.1, 3) * ref + rng.uniform(0.05, 2) * rng.standard_normal(4000) - 0.1
        ours.append(am.si_sdr(ref, est))
        theirs.append(lstsq_si_sdr(ref, est))
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    fbe = pytest.importorskip("fast_bss_eval")  # the dev extra: a well-kept library's number as a third opinion
    refs = rng.standard_normal((10, 8000))
    ests = refs * rng.uniform(0.5, 2, (10, 1)) + rng.standard_normal((10, 8000)) * rng.uniform(0.1, 1.5, (10, 1))
    expected = np.asarray(fbe.si_sdr(refs, ests, zero_mean=True), dtype=np.float64).ravel()
    np.testing.assert_allclose([am.si_sdr(r, e) for r, e in zip(refs, ests)], expected, atol=1e-3)


def test_si_sdr_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="silent"):
        am.si_sdr(np.ones(100), np.random.default_rng(0).standard_normal(100))
    with pytest.raises(ValueError, match="equal-length"):
        am.si_sdr(np.ones(10), np.ones(11))
    with pytest.raises(ValueError, match="finite"):
        am.si_sdr(np.r_[np.ones(9), np.nan], np.ones(10))


# --------------------------------------------------------------------------- PESQ and STOI


def test_pesq_and_stoi_of_identical_signals_are_their_maxima():
    clean = speech_like()
    assert am.PESQ_WB_MAX == pytest.approx(4.644, abs=1e-3)
    assert am.pesq_wb(clean, clean) == pytest.approx(am.PESQ_WB_MAX, abs=0.01)
    assert am.stoi(clean, clean) == pytest.approx(1.0, abs=1e-6)


def test_pesq_and_stoi_of_white_noise_are_low():
    clean = speech_like()
    noise = np.random.default_rng(1).standard_normal(clean.size)
    assert am.PESQ_WB_RANGE[0] <= am.pesq_wb(clean, 0.3 * noise) < 1.1  # the ITU code's floor for noise is about 1.04
    # STOI has no calibrated floor (envelope correlations of unrelated signals are not 0): noise alone scores
    # low, and below speech buried 5 dB under that noise
    assert am.stoi(clean, noise) < min(0.45, am.stoi(clean, at_snr(clean, noise, -5)))


def test_pesq_stoi_and_si_sdr_rise_with_the_snr_of_a_mixture():
    clean = speech_like(seed=2)
    noise = np.random.default_rng(4).standard_normal(clean.size)
    snrs = [-5, 0, 5, 10, 20]
    mixtures = [at_snr(clean, noise, snr) for snr in snrs]
    pesq = [am.pesq_wb(clean, m) for m in mixtures]
    stoi = [am.stoi(clean, m) for m in mixtures]
    sdr = [am.si_sdr(clean, m) for m in mixtures]
    assert all(np.diff(pesq) > 0) and all(np.diff(stoi) > 0), (pesq, stoi)
    # independent noise at a known SNR: SI-SDR is that SNR, up to the chance correlation of noise and speech
    np.testing.assert_allclose(sdr, snrs, atol=0.2)
    assert am.PESQ_WB_RANGE[0] <= min(pesq) and max(pesq) <= am.PESQ_WB_RANGE[1]


def test_pesq_of_silence_is_a_value_error_not_a_crash():
    with pytest.raises(ValueError, match="PESQ is undefined"):
        am.pesq_wb(np.zeros(SR), np.zeros(SR))
    with pytest.raises(ValueError, match="16000"):
        am.pesq_wb(np.ones(8000), np.ones(8000), sample_rate=8000)


def test_utterance_metrics_average_over_sources():
    a, b = speech_like(seed=5), speech_like(seed=6)[::-1].copy()
    mix = a + b
    got = am.utterance_metrics([a, b], [a + 0.1 * b, b + 0.1 * a], mix, ("sisdri", "stoi"))
    expected = np.mean([am.si_sdr(a, a + 0.1 * b) - am.si_sdr(a, mix), am.si_sdr(b, b + 0.1 * a) - am.si_sdr(b, mix)])
    assert got["sisdri"] == pytest.approx(expected)
    assert got["stoi"] == pytest.approx(50 * (am.stoi(a, a + 0.1 * b) + am.stoi(b, b + 0.1 * a)))
    with pytest.raises(ValueError, match="unknown audio metric"):
        am.utterance_metrics([a], [a], mix, ("sdr",))


def test_a_missing_metric_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)  # what an absent package looks like to `import`
    with pytest.raises(am.MissingMetricPackage, match=r"'pesq'.*pip install 'superbench\[enhancement\]'"):
        am.require_enhancement_metrics()
    with pytest.raises(am.MissingMetricPackage, match="superbench"):
        am.pesq_wb(speech_like(1.0), speech_like(1.0))


def test_a_missing_metric_package_is_a_setup_error_on_the_command_line():
    from superbench.exit_codes import ExitCode, exit_code_for

    # `superbench run` reports it as "error: ..." with exit 2 (a setup problem), not as an internal error
    assert exit_code_for(am.MissingMetricPackage("x")) == ExitCode.USAGE

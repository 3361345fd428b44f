"""Voice-conversion metrics (superbench.vc_metrics) and vocoders (downstreams.vocoders) against hand-computed cases."""

import math
import sys
import warnings

import numpy as np
import pytest
import torch

from downstreams import vocoders as voc
from superbench import vc_metrics as vm


def test_mcd_of_aligned_cepstra_is_the_hand_computed_value():
    x = np.zeros((3, 2))
    y = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    # per frame sqrt(2 * sum d^2): sqrt(2), 2 sqrt(2), 5 sqrt(2); times 10 / ln 10, mean over the three frames
    expected = 10 / math.log(10) * (math.sqrt(2) + 2 * math.sqrt(2) + 5 * math.sqrt(2)) / 3
    assert vm.aligned_mcd(x, y) == pytest.approx(expected, rel=1e-12)
    assert vm.aligned_mcd(y, x) == pytest.approx(expected, rel=1e-12)


def test_mcd_of_a_sequence_with_itself_is_zero_and_time_warping_is_undone():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 40))
    assert vm.dtw_mcd(x, x) == 0.0
    stretched = np.repeat(x, 2, axis=0)  # the same frames, each held twice: DTW aligns them exactly
    assert vm.dtw_mcd(stretched, x) == pytest.approx(0.0, abs=1e-9)
    assert vm.dtw_mcd(x + 0.5, x) > 1.0


def _brute_force_dtw(x, y):
    """Every monotone path from (0, 0) to (n-1, m-1) with steps (1,0), (0,1), (1,1): the least total distance."""
    n, m = len(x), len(y)
    best = math.inf
    def walk(i, j, cost):
        nonlocal best
        cost += float(np.linalg.norm(x[i] - y[j]))
        if (i, j) == (n - 1, m - 1):
            best = min(best, cost)
            return
        for di, dj in ((1, 0), (0, 1), (1, 1)):
            if i + di < n and j + dj < m:
                walk(i + di, j + dj, cost)
    walk(0, 0, 0.0)
    return best


@pytest.mark.parametrize("n,m,seed", [(3, 4, 0), (5, 3, 1), (4, 4, 2), (1, 5, 3)])
def test_dtw_finds_the_brute_force_optimum_and_a_valid_path(n, m, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((m, 3))
    cost, path = vm.dtw_path(x, y)
    assert cost == pytest.approx(_brute_force_dtw(x, y), rel=1e-12)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (n - 1, m - 1)
    steps = {tuple(s) for s in np.diff(path, axis=0)}
    assert steps <= {(1, 0), (0, 1), (1, 1)}
    assert sum(np.linalg.norm(x[i] - y[j]) for i, j in path) == pytest.approx(cost, rel=1e-12)


def test_eer_threshold_on_hand_made_scores():
    # targets 0.9, 0.6, 0.5; non-targets 0.6, 0.1. ROC points (FAR, TAR, threshold): (0, 0, .9), (0, 1/3, .9),
    # (1/2, 2/3, .6), (1/2, 1, .5), (1, 1, .1). FRR - FAR = 1 - FAR - TAR is 2/3 at the second point and -1/6 at the
    # third: FAR = FRR at 0.8 of that segment, FAR 0.4, threshold .9 + 0.8 (.6 - .9) = 0.66.
    labels = [1, 1, 1, 0, 0]
    scores = [0.9, 0.6, 0.5, 0.6, 0.1]
    eer, threshold = vm.eer_threshold(labels, scores)
    assert eer == pytest.approx(40.0)
    assert threshold == pytest.approx(0.66)
    # separable scores: EER 0, the threshold at the lowest target score's point
    assert vm.eer_threshold([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.2]) == pytest.approx((0.0, 0.8))


def test_speaker_trials_pair_every_utterance_of_each_speaker():
    e = {"a": [np.array([1.0, 0.0]), np.array([0.0, 1.0])], "b": [np.array([1.0, 1.0])]}
    labels, scores = vm.speaker_trials(e)
    assert labels.count(1) == 2 * 2 + 1 and labels.count(0) == 2 * 1 + 1 * 2
    assert max(scores) == pytest.approx(1.0) and min(scores) == pytest.approx(0.0)


def test_trimmed_length_matches_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    for n in (1000, 16000, 47999):
        y = np.r_[np.zeros(int(rng.integers(100, 9000))), 0.3 * rng.standard_normal(n),
                  np.zeros(int(rng.integers(10, 9000)))]
        assert vm.trimmed_length(y) == len(librosa.effects.trim(y.astype(np.float32))[0])


def test_normalise_sentence_as_s3prl():
    assert vm.normalise_sentence("  Hello,   world!\tIt's fine. ") == "HELLO WORLD IT'S FINE"


def test_a_missing_vc_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyworld", None)  # what an absent package looks like to `import`
    with pytest.raises(vm.MissingVCPackage, match=r"'pyworld'.*pip install 'superbench\[vc\]'"):
        vm.require_vc_packages()


def _speechlike(fs=16000, seconds=1.0, f0=140.0):
    t = np.arange(int(fs * seconds)) / fs
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / fs
    wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * 0.1
    return wav * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)


def test_conversion_scores_of_a_signal_with_itself_are_perfect():
    pytest.importorskip("pyworld")
    wav = _speechlike()
    s = vm.conversion_scores(wav, wav, 16000)
    assert s["mcd"] == 0.0 and s["f0rmse"] == 0.0 and s["ddur"] == 0.0
    assert s["f0corr"] == pytest.approx(1.0)
    other = vm.conversion_scores(_speechlike(f0=220.0), wav, 16000)
    assert other["mcd"] > 1.0 and other["f0rmse"] > 40.0


# --------------------------------------------------------------------------- vocoders

def test_mel_filterbank_matches_librosa():
    librosa = pytest.importorskip("librosa")
    for cfg in (voc.MelConfig(), voc.MelConfig(sample_rate=16000, n_fft=512, hop=128, n_mels=40, fmin=0, fmax=8000)):
        ours = voc.mel_filterbank(cfg)
        theirs = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                                     fmax=cfg.fmax)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)


def test_griffin_lim_recovers_a_known_signals_magnitude():
    cfg = voc.MelConfig(sample_rate=16000)
    mel = voc.MelSpectrogram(cfg)
    t = np.arange(16000) / 16000
    x = torch.from_numpy(0.5 * np.sin(2 * np.pi * (200 * t + 300 * t ** 2)) + 0.2 * np.sin(2 * np.pi * 1000 * t))
    target = mel.transform.stft(x).abs()

    def convergence(iterations):
        y = voc.griffin_lim(target, mel, iterations)
        got = mel.transform.stft(y).abs()[: target.shape[0]]
        return float(torch.linalg.norm(got - target) / torch.linalg.norm(target))

    start, end = convergence(0), convergence(64)
    assert start > 0.3  # random phases: far from the magnitude
    assert end < 0.2 and end < start / 3
    assert voc.griffin_lim(target, mel, 8).equal(voc.griffin_lim(target, mel, 8))  # seeded: reproducible


def test_log_mel_inverse_round_trip_gives_a_waveform_of_the_mel():
    cfg = voc.MelConfig(sample_rate=16000, gl_iters=32)
    vocoder = voc.GriffinLimVocoder(cfg)
    wav = torch.from_numpy(_speechlike())
    logmel = vocoder.mel(wav)
    out = vocoder(logmel)
    assert out.shape == ((logmel.shape[0] - 1) * cfg.hop,)
    again = vocoder.mel(torch.from_numpy(out))
    n = min(len(again), len(logmel))
    assert float((again[:n] - logmel[:n]).abs().mean()) < 0.3  # log10 units: within a factor 2 on average
    assert "griffin-lim (32 iterations" in vocoder.name


SMALL = {"in_channels": 80, "out_channels": 1, "channels": 32, "kernel_size": 7, "upsample_scales": [8, 8, 2, 2],
         "upsample_kernel_sizes": [16, 16, 4, 4], "resblock_kernel_sizes": [3, 7],
         "resblock_dilations": [[1, 3], [1, 3]],
         "use_additional_convs": True, "bias": True, "nonlinear_activation": "LeakyReLU",
         "nonlinear_activation_params": {"negative_slope": 0.1}, "use_weight_norm": True}


def _weight_normed(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                torch.nn.utils.weight_norm(m)
    return model


def _save_parallel_wavegan_folder(folder, params=SMALL, config_extra=None):
    """A random-init HiFi-GAN in parallel_wavegan's layout: checkpoint-<steps>steps.pkl (weight-normed state dict
    under model/generator), config.yml, stats.h5."""
    import h5py
    import yaml

    torch.manual_seed(0)
    reference = _weight_normed(voc.HiFiGANGenerator(**params))
    for p in reference.parameters():  # weight_g differs from ||v|| after this, so folding is really tested
        p.data.add_(0.01 * torch.randn_like(p))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"generator": reference.state_dict(), "discriminator": {}}, "steps": 400},
               folder / "checkpoint-400steps.pkl")
    torch.save({"model": {"generator": {}, "discriminator": {}}, "steps": 100}, folder / "checkpoint-100steps.pkl")
    config = {"generator_type": "HiFiGANGenerator", "generator_params": params, "sampling_rate": 16000,
              "hop_size": 256, "num_mels": 80, "fft_size": 1024, "fmin": 80, "fmax": 7600, **(config_extra or {})}
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(0)
    mean, scale = rng.standard_normal(80).astype(np.float32), rng.uniform(0.5, 2, 80).astype(np.float32)
    with h5py.File(folder / "stats.h5", "w") as f:
        f["mean"], f["scale"] = mean, scale
    return reference.eval(), torch.from_numpy(mean), torch.from_numpy(scale)


def test_hifigan_checkpoint_round_trip(tmp_path):
    pytest.importorskip("h5py")
    reference, mean, scale = _save_parallel_wavegan_folder(tmp_path / "voc")
    vocoder = voc.make_vocoder(str(tmp_path / "voc"), voc.MelConfig(sample_rate=16000))
    logmel = torch.randn(30, 80)
    with torch.no_grad():
        expected = reference(((logmel - mean) / scale).T.unsqueeze(0)).view(-1).numpy()
    out = vocoder(logmel)
    assert out.shape == (30 * 256,)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert "checkpoint-400steps.pkl" in vocoder.name and vocoder.name.startswith("hifigan voc/")


def test_vocoder_folder_problems_are_named(tmp_path):
    pytest.importorskip("h5py")
    with pytest.raises(FileNotFoundError, match="no checkpoint-\\*.pkl, config.yml, stats.h5"):
        voc.make_vocoder(str(tmp_path), voc.MelConfig(sample_rate=16000))
    _save_parallel_wavegan_folder(tmp_path / "a")
    with pytest.raises(ValueError, match=r"sample_rate 16000 \(task: 24000\)"):
        voc.make_vocoder(str(tmp_path / "a"), voc.MelConfig())
    _save_parallel_wavegan_folder(tmp_path / "b", config_extra={"generator_type": "MelGANGenerator"})
    with pytest.raises(ValueError, match="MelGANGenerator.*not supported"):
        voc.make_vocoder(str(tmp_path / "b"), voc.MelConfig(sample_rate=16000))


def test_fold_weight_norm_equals_torch_weight_norm():
    conv = _weight_normed(torch.nn.ConvTranspose1d(4, 3, 5))
    conv.weight_g.data.mul_(1.7)
    folded = voc.fold_weight_norm(conv.state_dict())
    plain = torch.nn.ConvTranspose1d(4, 3, 5)
    plain.load_state_dict(folded)
    x = torch.randn(2, 4, 9)
    torch.testing.assert_close(plain(x), conv(x))
    assert set(folded) == {"bias", "weight"}


def test_precomputed_reference_features_give_the_same_scores():
    pytest.importorskip("pyworld")
    ref, cvt = _speechlike(), _speechlike(f0=180.0)
    features = vm.world_features(ref, 16000)
    assert vm.conversion_scores(cvt, ref, 16000, reference_features=features) == vm.conversion_scores(cvt, ref, 16000)

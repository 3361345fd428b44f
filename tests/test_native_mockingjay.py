"""Native Mockingjay / TERA upstreams (upstreams/mockingjay.py), without s3prl or torchaudio."""

import copy
import math

import numpy as np
import pytest
import torch

from superbench.testing import chirp_wavs
from upstreams import mockingjay as mj


def _wavs(lengths=(16000, 21111), seed=0):
    return chirp_wavs(lengths, seed)


def _config(**changes):
    cfg = mj.tiny_config("tera")
    for path, value in changes.items():
        section, key = path.split("__")
        cfg[section][key] = value
    return cfg


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mockingjay")
    return {name: mj.FACTORIES[name].write_random_checkpoint(folder / f"{name}.ckpt")
            for name in ("mockingjay", "tera")}


@pytest.mark.parametrize("name", ["mockingjay", "tera"])
def test_random_checkpoint_passes_the_contract(ckpts, name, assert_upstream_contract):
    up = mj.FACTORIES[name](path=str(ckpts[name]))
    # s3prl's hub: num_hidden_layers + 1 hidden states (input representation first), 160 samples per frame
    assert_upstream_contract(up, num_layers=3, hidden_size=32, downsample_rate=160, receptive_field=160)
    layers, lengths = up.extract(_wavs())
    assert len(layers) == 3 and lengths.tolist() == [100, 131]  # n // 160 (s3prl's last centred frame dropped)


@pytest.mark.parametrize("cfg", [
    _config(transformer__pre_layer_norm=True, task__sequence_length=40),
    _config(transformer__share_layer=True,
            audio__input={"feat_type": "linear", "channel": 0, "log": True, "delta": 2, "cmvn": True}),
    _config(audio__input={"feat_type": "mfcc", "channel": 0, "log": False, "delta": 1, "cmvn": False}),
    {**mj.tiny_config("tera"), "audio": {
        "kaldi": {"feat_type": "fbank", "fbank": {"num_mel_bins": 80, "frame_length": 25.0, "frame_shift": 10.0,
                                                  "use_log_fbank": True}},
        "delta": {"order": 2, "win_length": 5}, "cmvn": {"use_cmvn": True}}},
], ids=["preln-chunked", "linear-deltas-shared", "mfcc", "kaldi-fbank"])
def test_other_configs_pass_the_contract(tmp_path, cfg, assert_upstream_contract):
    file = mj.write_random_checkpoint(tmp_path / "x.ckpt", "tera", seed=1, config=cfg)
    # the kaldi front end: snip-edges frames, nothing dropped
    kaldi = {"receptive_field": 400, "downsample_rate": 160} if "kaldi" in cfg["audio"] else {}
    assert_upstream_contract(mj.FACTORIES["tera"](path=str(file)), **kaldi)


# --------------------------------------------------------------------------- preprocessing against numpy


def test_hann_window_is_periodic():
    assert np.allclose(mj.hann_window(400).numpy(), np.hanning(401)[:-1], atol=1e-12)


def test_htk_mel_banks_match_a_hand_computation():
    n_freqs, n_mels, sr = 201, 10, 16000
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(mel(0.0), mel(sr / 2), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0, sr // 2, n_freqs)
    expected = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        left, centre, right = edges[m: m + 3]
        for k, f in enumerate(freqs):
            if left <= f <= centre:
                expected[k, m] = (f - left) / (centre - left)
            elif centre < f <= right:
                expected[k, m] = (right - f) / (right - centre)
    assert np.allclose(mj.htk_mel_banks(n_freqs, n_mels, sr).numpy(), expected, atol=1e-9)
    assert np.isclose(float(mj.htk_mel(1000.0)), 1000.0, atol=0.1)  # the HTK scale's anchor


@pytest.mark.parametrize("n", [1, 2, 5, 150, 401])
def test_reflect_indices_match_numpy(n):
    x = np.arange(n)
    expected = x[np.zeros(n + 400, dtype=int)] if n == 1 else np.pad(x, 200, mode="reflect")
    assert mj.reflect_indices(n, 200).numpy().tolist() == expected.tolist()


def test_power_spectrum_and_log_mel_cmvn_match_numpy():
    wav = _wavs((5000,))[0]
    x = wav.astype(np.float64)
    x = x * (10 ** (-25 / 20)) / (np.sqrt(np.mean(x ** 2)) + 1e-10)
    padded = np.pad(x, 200, mode="reflect")
    frames = np.stack([padded[i: i + 400] for i in range(0, len(padded) - 400 + 1, 160)])
    power = np.abs(np.fft.rfft(frames * np.hanning(401)[:-1], axis=-1)) ** 2
    got = mj.centred_power_spectrum(torch.tensor(x), 400, 160, mj.hann_window(400)).numpy()
    assert got.shape == (5000 // 160 + 1, 201) and np.allclose(got, power, rtol=1e-9, atol=1e-12)
    logmel = np.log(power @ mj.htk_mel_banks(201, 80, 16000).numpy() + 1e-10)
    expected = (logmel - logmel.mean(0)) / (logmel.std(0, ddof=1) + 1e-10)
    front = mj.OnlineFeatures(mj.OnlineFeatureConfig(feat_type="mel", n_mels=80))
    feats, lengths = front(torch.tensor(wav)[None], torch.tensor([5000]))
    assert lengths.tolist() == [32]
    assert np.abs(feats[0].numpy() - expected).max() < 1e-3


def test_position_encoding_matches_the_formula():
    table = mj.position_encoding(7, 6).numpy()
    for pos in range(7):
        for j in range(6):
            angle = pos / 10000 ** (2 * (j // 2) / 6)
            assert math.isclose(table[pos, j], math.sin(angle) if j % 2 == 0 else math.cos(angle), abs_tol=1e-6)


# --------------------------------------------------------------------------- checkpoints


def test_other_family_and_broken_files_are_format_errors(tmp_path, ckpts, assert_format_error):
    """What they look like; any family's file, or a truncated one, naming the file: test_native_registry.py."""
    apc = tmp_path / "apc.ckpt"
    torch.save({"config": {"model": {"paras": {}}}, "model": {"w": torch.zeros(1)}}, apc)
    assert_format_error(mj.FACTORIES["mockingjay"], apc)
    ckpt = torch.load(ckpts["tera"], weights_only=True)
    no_config = tmp_path / "no_config.ckpt"
    torch.save({**ckpt, "Config": {"runner": {}}}, no_config)
    assert_format_error(mj.FACTORIES["tera"], no_config, "transformer")
    wrong_dim = tmp_path / "wrong_dim.ckpt"
    cfg = copy.deepcopy(ckpt["Config"])
    cfg["audio"]["n_mels"] = 40
    torch.save({**ckpt, "Config": cfg}, wrong_dim)
    assert_format_error(mj.FACTORIES["tera"], wrong_dim, "40")


def test_newer_layout_and_old_weight_names_load_the_same(tmp_path, ckpts):
    ckpt = torch.load(ckpts["tera"], weights_only=True)
    reference, _ = mj.FACTORIES["tera"](path=str(ckpts["tera"])).extract(_wavs())
    newer = tmp_path / "newer.ckpt"  # s3prl's newer runner: upstream config under Upstream_Config
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in ckpt["Transformer"].items()}
    torch.save({**ckpt, "Transformer": state, "Config": ckpt["Runner"], "Upstream_Config": ckpt["Config"]}, newer)
    got, _ = mj.FACTORIES["tera"](path=str(newer)).extract(_wavs())
    assert all(torch.equal(a, b) for a, b in zip(reference, got))


def test_weights_are_loaded(ckpts, features_with_changed_weights):
    before, after = features_with_changed_weights(
        mj.FACTORIES["tera"], ckpts["tera"],
        lambda ckpt: ckpt["Transformer"]["encoder.layer.1.output.dense.weight"].add_(0.5), _wavs())
    assert [torch.equal(a, b) for a, b in zip(before, after)] == [True, True, False]


def test_long_inputs_are_chunked_like_s3prl(tmp_path):
    """sequence_length L: an utterance of T > L frames runs as ceil(T / L) equal chunks, each alone."""
    whole = mj.FACTORIES["tera"](path=str(mj.write_random_checkpoint(
        tmp_path / "a.ckpt", "tera", 2, _config(task__sequence_length=0))))
    chunked = mj.FACTORIES["tera"](path=str(mj.write_random_checkpoint(
        tmp_path / "b.ckpt", "tera", 2, _config(task__sequence_length=40))))
    wav = _wavs((16000,))[0]  # 101 centred frames -> 3 chunks of 34, 34, 33
    assert chunked._segments([101]) == [(0, 0, 34), (0, 34, 34), (0, 68, 33)]
    full, _ = whole.extract([wav])
    parts, _ = chunked.extract([wav])
    feats, n = chunked.front_end(torch.tensor(wav)[None], torch.tensor([16000]))
    alone = chunked.model(feats[:, 34:68], torch.tensor([34]))
    assert torch.allclose(parts[-1][0, 34:68], alone[-1][0], atol=1e-5)
    assert not torch.allclose(parts[-1], full[-1], atol=1e-3)

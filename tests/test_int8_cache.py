"""int8 frame caches: half the bytes of float16, every value within half a step of its channel's scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import superbench.preflight as preflight
import superbench.runner as runner
from superbench.audio import load_audio
from superbench.features.extraction import extract_features, feature_bytes
from superbench.features.store import SCALE_ROWS, CacheError, dequantize_int8, quantize_int8
from superbench.manifest import load_task_manifest
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, make_sequence_corpus, scratch_run_options


def test_quantize_round_trip_is_within_half_a_step_per_channel():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(50, 3, 8, generator=g) * torch.logspace(-3, 2, 8)  # channels of very different size
    frames[:, 1, 2] = 0.0  # a silent channel
    block = quantize_int8(frames)
    assert block.dtype == torch.int8 and block.shape == (SCALE_ROWS + 50, 3, 8)
    back = dequantize_int8(block.numpy())
    step = frames.abs().amax(dim=0).numpy() / 127  # (L, D)
    err = np.abs(back - frames.numpy())
    assert (err <= step / 2 + 1e-7 * np.abs(frames.numpy()) + 1e-12).all()
    assert np.array_equal(back[:, 1, 2], np.zeros(50))  # exact where the channel is silent
    # the largest value of each channel is exactly +-127 steps: it comes back up to float rounding
    peak = frames.abs().argmax(dim=0)
    for layer in range(3):
        for ch in range(8):
            t = int(peak[layer, ch])
            assert back[t, layer, ch] == pytest.approx(float(frames[t, layer, ch]), rel=1e-6, abs=1e-12)


def test_int8_cache_halves_the_bytes_and_reads_back_close_to_float(tmp_path):
    make_sequence_corpus(tmp_path, task="pr")
    m = load_task_manifest(tmp_path / "pr")
    up = ToneUpstream()
    half = extract_features(up, m, "frame", root=tmp_path / "c16", progress=False)
    int8 = extract_features(up, m, "frame", root=tmp_path / "c8", progress=False, frame_dtype="int8",
                            fingerprint=up.fingerprint() + "-int8")
    expected = sum(feature_bytes(up, u.num_samples, "frame", "int8") for u in m.utterances())
    assert int8.nbytes == expected and int8.frame_dtype == "int8"
    frames = [int(up.num_frames(torch.tensor([u.num_samples]))[0]) for u in m.utterances()]
    # one byte per value instead of two, plus 4 rows of scales per utterance (these are short: 24-56 frames)
    assert int8.nbytes / half.nbytes == pytest.approx(sum(n + SCALE_ROWS for n in frames) / (2 * sum(frames)))
    assert 0.5 < int8.nbytes / half.nbytes < 0.6
    disk = sum(p.stat().st_size for p in int8.path.glob("*.npy"))
    assert disk < 0.6 * sum(p.stat().st_size for p in half.path.glob("*.npy"))
    utt = m.utterances()[0]
    with torch.inference_mode():
        hidden, n = up.extract([load_audio(utt.audio)])
    exact = torch.stack([h[0, : int(n[0])] for h in hidden], dim=1).numpy()  # (T, L, D) float32
    got = int8.get(utt.id)
    step = np.abs(exact).max(axis=0) / 127
    assert got.dtype == np.float32 and got.shape == exact.shape
    assert (np.abs(got - exact) <= step / 2 + 1e-6).all()
    x, lengths = int8.batch([u.id for u in m.utterances()[:3]])
    assert x.dtype == torch.float32 and x.shape[:2] == (up.num_layers, 3)
    np.testing.assert_array_equal(x[:, 0, : int(lengths[0])].numpy(), got.transpose(1, 0, 2))


def test_runner_keeps_int8_runs_apart_and_leaves_utterance_tasks_alone(tmp_path):
    make_sequence_corpus(tmp_path, task="pr")
    make_class_corpus(tmp_path, task="ks")
    over = {"steps": 10, "eval_interval": 5, "batch_size": 8, "lr_grid": [1e-2]}
    recs = {}
    for dtype in ("fp16", "int8"):
        opts = scratch_run_options(tmp_path, overrides=over, cache_dtype=dtype)
        recs[dtype] = {r.task: r for r in runner.run(ToneUpstream(), [get_task("pr"), get_task("ks")], tmp_path,
                                                     opts)}
    pr16, pr8 = recs["fp16"]["pr"], recs["int8"]["pr"]
    assert pr8.profile == pr16.profile + "+int8" and pr8.features_fingerprint == pr16.features_fingerprint + "-int8"
    assert pr8.run_key() != pr16.run_key()
    assert recs["int8"]["ks"].profile == recs["fp16"]["ks"].profile  # utterance caches are float32 either way
    with pytest.raises(ValueError, match=r"--cache-dtype 'int4': use one of fp16, int8"):
        run(ToneUpstream(), [get_task("pr")], tmp_path, scratch_run_options(tmp_path, cache_dtype="int4"))


def test_a_full_disk_says_whether_int8_would_fit(tmp_path, monkeypatch):
    make_sequence_corpus(tmp_path, task="pr")
    need16 = sum(feature_bytes(ToneUpstream(), u.num_samples, "frame")
                 for u in load_task_manifest(tmp_path / "pr").utterances())
    monkeypatch.setattr(preflight, "free_bytes", lambda path: int(need16 * 0.7))
    with pytest.raises(CacheError, match=r"With --cache-dtype int8 the frame caches take about .* in all \(fits\)"):
        run(ToneUpstream(), [get_task("pr")], tmp_path, scratch_run_options(tmp_path))
    assert not (tmp_path / "cache").exists()

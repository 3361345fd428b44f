"""Contract validator, `superbench upstreams` CLI and the s3prl passthrough (with a stand-in s3prl)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from superbench.cli import main
from superbench.upstream import UPSTREAMS, Upstream, load_upstream
from superbench.validate import all_passed, format_checks, validate_upstream

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- validator

class Framewise(Upstream):
    """A correct reference upstream: per-frame mean and energy."""

    name = "framewise"
    num_layers = 2
    hidden_size = 2
    downsample_rate = 160
    receptive_field = 400

    def _frames(self, wavs):
        return wavs.unfold(1, self.receptive_field, self.downsample_rate)

    def _forward(self, wavs, wav_lengths):
        f = self._frames(wavs)
        h = torch.stack([f.mean(-1), f.pow(2).mean(-1)], -1)
        return [h, 2 * h], self.num_frames(wav_lengths)


class PaddingDependent(Framewise):
    name = "padding-dependent"

    def _forward(self, wavs, wav_lengths):  # normalises over the padded batch: the classic bug
        wavs = (wavs - wavs.mean(1, keepdim=True)) / wavs.std(1, keepdim=True)
        return super()._forward(wavs, wav_lengths)


class Noisy(Framewise):
    name = "noisy"

    def _forward(self, wavs, wav_lengths):
        hs, n = super()._forward(wavs, wav_lengths)
        return [h + torch.rand_like(h) for h in hs], n


class WrongLengths(Framewise):
    name = "wrong-lengths"

    def _forward(self, wavs, wav_lengths):
        hs, _ = super()._forward(wavs, wav_lengths)
        return hs, torch.div(wav_lengths, self.downsample_rate, rounding_mode="floor")


class WrongLayers(Framewise):
    name = "wrong-layers"

    def _forward(self, wavs, wav_lengths):
        hs, n = super()._forward(wavs, wav_lengths)
        return [hs[0].double()], n


class NaNs(Framewise):
    name = "nans"

    def _forward(self, wavs, wav_lengths):
        hs, n = super()._forward(wavs, wav_lengths)
        hs[1][:, 0] = float("nan")
        return hs, n


def by_name(checks):
    return {c.name: c for c in checks}


def test_correct_upstream_passes_every_check():
    checks = validate_upstream(Framewise())
    assert all_passed(checks), format_checks(checks)
    assert [c.name for c in checks] == ["attributes", "forward", "layer count", "shapes and dtype",
                                        "frame lengths", "finite values", "determinism", "batch vs single",
                                        "padding invariance", "too-short input"]


@pytest.mark.parametrize("upstream, failing", [
    (PaddingDependent(), {"batch vs single", "padding invariance"}),
    (Noisy(), {"determinism", "batch vs single", "padding invariance"}),
    (WrongLengths(), {"frame lengths"}),
    (NaNs(), {"finite values"}),
])
def test_each_broken_upstream_fails_exactly_its_checks(upstream, failing):
    checks = by_name(validate_upstream(upstream))
    failed = {name for name, c in checks.items() if c.passed is False}
    assert failed == failing, format_checks(list(checks.values()))


def test_wrong_layer_count_and_dtype_are_reported():
    checks = by_name(validate_upstream(WrongLayers()))
    assert checks["layer count"].passed is False and "1 hidden states, num_layers = 2" in checks["layer count"].detail
    assert checks["shapes and dtype"].passed is False and "float64" in checks["shapes and dtype"].detail


def test_bad_attributes_and_crashing_forward_are_reported_not_raised():
    bad = Framewise()
    bad.hidden_size = 0
    checks = validate_upstream(bad)
    assert checks[0].passed is False and "hidden_size" in checks[0].detail
    assert all(c.passed is None for c in checks[1:])

    class Crashes(Framewise):
        def _forward(self, wavs, wav_lengths):
            raise RuntimeError("kaboom")

    checks = by_name(validate_upstream(Crashes()))
    assert checks["forward"].passed is False and "kaboom" in checks["forward"].detail
    assert checks["too-short input"].passed is True


def test_format_checks_counts_passes():
    text = format_checks(validate_upstream(WrongLengths()))
    assert "FAIL" in text and text.splitlines()[-1] == "9/10 checks passed"


# --------------------------------------------------------------------------- CLI

def test_cli_list_shows_every_built_in(capsys):
    assert main(["upstreams", "list"]) == 0
    out = capsys.readouterr().out
    for name in UPSTREAMS.names():
        assert name in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith("-")}
    assert lines["fbank"][1:4] == ["kaldi", "1", "240"]
    assert lines["hubert-large"][1:5] == ["hubert", "25", "1024", "facebook/hubert-large-ll60k"]
    assert lines["wavlm-tiny-random"][1:4] == ["wavlm", "3", "32"]


def test_cli_validate_exit_codes(tmp_path, capsys):
    assert main(["upstreams", "validate", "mfcc"]) == 0
    assert "10/10 checks passed" in capsys.readouterr().out
    broken = tmp_path / "broken.py"
    broken.write_text(textwrap.dedent('''
        import torch
        from superbench.upstream import Upstream

        class Broken(Upstream):
            name = "broken"
            num_layers, hidden_size, downsample_rate, receptive_field = 1, 1, 160, 400

            def _forward(self, wavs, wav_lengths):
                wavs = wavs / wavs.abs().amax()  # batch-dependent scaling
                f = wavs.unfold(1, 400, 160).mean(-1, keepdim=True)
                return [f], self.num_frames(wav_lengths)
    '''))
    assert main(["upstreams", "validate", f"{broken}:Broken"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "batch vs single" in out


def test_cli_validate_with_upstream_path(tmp_path, capsys):
    load_upstream("wav2vec2-tiny-random").model.save_pretrained(tmp_path)
    assert main(["upstreams", "validate", "wav2vec2", "--upstream-path", str(tmp_path)]) == 0
    assert "10/10 checks passed" in capsys.readouterr().out


def test_cli_unknown_name_is_a_clean_usage_error(caplog):
    assert main(["upstreams", "validate", "hubret"]) == 2
    assert "did you mean 'hubert'" in caplog.text


# --------------------------------------------------------------------------- s3prl passthrough

class FakeS3PRLUpstream(torch.nn.Module):
    """Mimics s3prl.nn.S3PRLUpstream: all hidden states and s3prl-style lengths (n // 320)."""

    calls: list = []

    def __init__(self, name, path_or_url=None, **kwargs):
        super().__init__()
        FakeS3PRLUpstream.calls.append((name, path_or_url, kwargs))
        self.num_layers = 3
        self.hidden_sizes = [4, 4, 4]
        self.downsample_rates = [320, 320, 320]
        self.proj = torch.nn.Linear(320, 4)

    def forward(self, wavs, wavs_len):
        t = int(wavs_len.max()) // 320
        frames = wavs[:, : t * 320].reshape(wavs.shape[0], t, 320)
        h = self.proj(frames)
        lens = wavs_len // 320
        return [h, h * 2, h * 3], [lens] * 3


@pytest.fixture(autouse=True)
def restore_s3prl_and_torchaudio(monkeypatch):
    """Tests here import stand-in s3prl/torchaudio packages; keep them out of other tests."""
    def ours(name: str) -> bool:
        return name.split(".")[0] in ("s3prl", "torchaudio")

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    before = {k: v for k, v in sys.modules.items() if ours(k)}
    yield
    for k in [k for k in sys.modules if ours(k)]:
        del sys.modules[k]
    sys.modules.update(before)


@pytest.fixture
def fake_s3prl(monkeypatch):
    s3prl = types.ModuleType("s3prl")
    nn = types.ModuleType("s3prl.nn")
    nn.S3PRLUpstream = FakeS3PRLUpstream
    s3prl.nn = nn
    monkeypatch.setitem(sys.modules, "s3prl", s3prl)
    monkeypatch.setitem(sys.modules, "s3prl.nn", nn)
    FakeS3PRLUpstream.calls = []
    return nn


def test_s3prl_adapter_maps_layers_and_lengths(fake_s3prl, tmp_path):
    ckpt = tmp_path / "apc.pt"
    ckpt.write_bytes(b"")
    up = load_upstream("s3prl:apc", path=str(ckpt))
    assert FakeS3PRLUpstream.calls == [("apc", str(ckpt), {})]
    assert (up.name, up.num_layers, up.hidden_size, up.downsample_rate) == ("s3prl:apc", 3, 4, 320)
    wav = torch.randn(16000)
    hs, lengths = up.extract([wav.numpy(), wav[:5000].numpy()])
    # s3prl says 16000 // 320 = 50 frames, the frame rule (16000 - 400) // 320 + 1 = 49
    assert lengths.tolist() == [49, 15]
    raw, _ = up.model(wav.unsqueeze(0), torch.tensor([16000]))
    assert torch.equal(hs[2][0, :49], raw[2][0, :49])
    assert float(hs[0][1, 15:].abs().max()) == 0.0
    assert up.fingerprint() != load_upstream("s3prl:tera").fingerprint()


def test_s3prl_adapter_repeats_last_frame_when_s3prl_gives_fewer(fake_s3prl):
    up = load_upstream("s3prl:apc", receptive_field=160)
    hs, lengths = up.extract([torch.randn(6560).numpy()])
    # frame rule (6560 - 160) // 320 + 1 = 21; the stand-in s3prl gives 6560 // 320 = 20
    assert lengths.tolist() == [21] and hs[0].shape == (1, 21, 4)
    assert torch.equal(hs[0][0, 20], hs[0][0, 19])


class GroupNormLikeS3PRLUpstream(FakeS3PRLUpstream):
    """Normalises over the padded time axis, as HuBERT Base's first GroupNorm does in s3prl."""

    def forward(self, wavs, wavs_len):
        hidden, lens = super().forward(wavs, wavs_len)
        return [(h - h.mean(1, keepdim=True)) / (h.std(1, keepdim=True, correction=0) + 1e-5) for h in hidden], lens


def test_s3prl_adapter_runs_each_utterance_alone_by_default(fake_s3prl):
    from superbench.validate import validate_upstream

    fake_s3prl.S3PRLUpstream = GroupNormLikeS3PRLUpstream
    checks = {c.name: c for c in validate_upstream(load_upstream("s3prl:hubert"))}
    assert checks["batch vs single"].passed and checks["padding invariance"].passed
    batched = load_upstream("s3prl:hubert", per_utterance=False)
    assert not {c.name: c for c in validate_upstream(batched)}["batch vs single"].passed
    assert batched.fingerprint() != load_upstream("s3prl:hubert").fingerprint()


def test_s3prl_missing_package_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3prl", None)
    monkeypatch.setitem(sys.modules, "s3prl.nn", None)
    with pytest.raises(RuntimeError, match=r"pip install 'superbench\[s3prl\]'"):
        load_upstream("s3prl:hubert")


def test_torchaudio_shims_for_old_s3prl(monkeypatch):
    from upstreams.s3prl_hub import patch_torchaudio_for_s3prl

    fake_ta = types.ModuleType("torchaudio")  # torchaudio >= 2.9: no backend API, no sox_effects
    monkeypatch.setitem(sys.modules, "torchaudio", fake_ta)
    monkeypatch.delitem(sys.modules, "torchaudio.sox_effects", raising=False)
    added = patch_torchaudio_for_s3prl()
    assert set(added) == {"set_audio_backend", "get_audio_backend", "list_audio_backends", "sox_effects"}
    fake_ta.set_audio_backend("sox_io")  # s3prl calls this at import time
    from torchaudio.sox_effects import apply_effects_tensor  # and imports this

    with pytest.raises(RuntimeError, match="not available"):
        apply_effects_tensor(torch.zeros(1, 10), 16000, [])
    assert patch_torchaudio_for_s3prl() == []  # idempotent


def test_s3prl_imports_with_a_placeholder_when_torchaudio_does_not_load(monkeypatch, tmp_path, caplog):
    # An s3prl-like package that, like s3prl 0.4.18's hub, imports torchaudio for every model at import.
    pkg = tmp_path / "s3prl"
    (pkg / "nn").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nn" / "__init__.py").write_text(
        "import torchaudio\n"
        "torchaudio.set_audio_backend('sox_io')\n"
        "from torchaudio.compliance import kaldi\n"
        "from torchaudio.transforms import MelSpectrogram\n"
        "class Spec(MelSpectrogram):\n    pass\n"
        "def fbank(wav):\n    return kaldi.fbank(wav)\n"
        "S3PRLUpstream = None\n")
    # A torchaudio that fails as PyPI's build does beside a CPU-only torch.
    (tmp_path / "torchaudio").mkdir()
    (tmp_path / "torchaudio" / "__init__.py").write_text(
        "raise OSError('Could not load this library: _torchaudio.abi3.so')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("s3prl", "torchaudio")]:
        monkeypatch.delitem(sys.modules, name)
    from superbench.torchaudio_compat import _TorchaudioStandIn  # a placeholder from `import superbench.upstream`

    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, _TorchaudioStandIn)])
    from upstreams.s3prl_hub import import_s3prl_nn

    with caplog.at_level("WARNING"):
        nn = import_s3prl_nn()
    assert "torchaudio failed to load (OSError: Could not load" in caplog.text
    with pytest.raises(RuntimeError, match=r"kaldi.fbank needs torchaudio, which failed to load \(OSError: Could not"):
        nn.fbank(torch.zeros(1, 400))
    with pytest.raises(RuntimeError, match="torchaudio.transforms.MelSpectrogram needs torchaudio"):
        nn.Spec()
    import torchaudio

    from superbench.torchaudio_compat import is_placeholder
    from upstreams.s3prl_hub import patch_torchaudio_for_s3prl

    assert is_placeholder(torchaudio)

    assert patch_torchaudio_for_s3prl() == []  # idempotent


def test_real_s3prl_hubert_from_a_local_checkpoint(tmp_path):
    """With s3prl installed: a tiny random HuBERT in s3prl's checkpoint format, through the adapter."""
    from dataclasses import asdict

    from superbench.validate import all_passed, validate_upstream
    from upstreams.s3prl_hub import S3PRLNotInstalledError, import_s3prl_nn

    try:
        s3prl_nn = import_s3prl_nn()
    except S3PRLNotInstalledError:
        pytest.skip("s3prl not installed (optional extra)")
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    class Dictionary(list):  # HubertModel only takes len() of fairseq's dictionaries
        pass

    torch.manual_seed(0)
    model_cfg = HubertConfig(label_rate=50.0, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                             encoder_attention_heads=2, final_dim=16, conv_pos=16, conv_pos_groups=4,
                             conv_feature_layers="[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2")
    task_cfg = HubertPretrainingConfig(label_rate=50.0)
    symbols = [list("abcd")]
    model = HubertModel(model_cfg, task_cfg, [Dictionary(s) for s in symbols])
    ckpt = tmp_path / "tiny_hubert.pt"
    torch.save({"task_cfg": asdict(task_cfg), "model_cfg": asdict(model_cfg), "model_weight": model.state_dict(),
                "dictionaries_symbols": symbols}, ckpt)

    up = load_upstream(f"s3prl:hubert_local={ckpt}")
    assert (up.num_layers, up.hidden_size, up.downsample_rate) == (3, 32, 320)
    assert all_passed(validate_upstream(up))
    wav = torch.randn(8000)
    hs, lengths = up.extract([wav.numpy()])
    reference = s3prl_nn.S3PRLUpstream("hubert_local", path_or_url=str(ckpt)).eval()
    with torch.inference_mode():
        ref_hs, _ = reference(wav.unsqueeze(0), torch.tensor([8000]))
    n = int(lengths[0])  # (8000 - 400) // 320 + 1 = 24 frames
    assert n == 24
    for mine, theirs in zip(hs, ref_hs):
        assert torch.allclose(mine[0, :n], theirs[0, :n], atol=1e-5)


def test_a_torchaudio_that_cannot_load_does_not_break_transformers_upstreams(tmp_path):
    # An installed torchaudio (with its dist-info, so transformers counts it as available) whose
    # import fails the way PyPI's build does beside a CPU-only torch.
    (tmp_path / "torchaudio").mkdir()
    (tmp_path / "torchaudio" / "__init__.py").write_text(
        "raise OSError('Could not load this library: _torchaudio.abi3.so')\n")
    (tmp_path / "torchaudio-2.11.0.dist-info").mkdir()
    (tmp_path / "torchaudio-2.11.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.11.0\n")
    code = ("from superbench.upstream import load_upstream\n"
            "import torchaudio\n"
            "from superbench.torchaudio_compat import is_placeholder\n"
            "up = load_upstream('wavlm-tiny-random')\n"
            "hs, lengths = up.extract([__import__('numpy').zeros(800, dtype='float32')])\n"
            "print(is_placeholder(torchaudio), len(hs), lengths.tolist())\n"
            "try:\n    torchaudio.load('x.wav')\nexcept RuntimeError as exc:\n    print(exc)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    first, second = res.stdout.splitlines()[:2]
    assert first == "True 3 [2]"  # (800 - 400) // 320 + 1 frames
    assert second.startswith("torchaudio.load needs torchaudio, which failed to load (OSError: Could not load")

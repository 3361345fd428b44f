"""Third-party upstreams: a class in a loose .py file and a package exposing an entry point."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from superbench.registry import DuplicateNameError, UnknownNameError
from superbench.upstream import UPSTREAMS, load_upstream
from superbench.validate import all_passed, format_checks, validate_upstream

PLUGIN_SOURCE = textwrap.dedent('''
    """A toy upstream: per-frame log energy and zero-crossing rate, two layers."""
    import torch
    from superbench.upstream import Upstream


    class {cls}(Upstream):
        name = "{name}"
        num_layers = 2
        hidden_size = 3
        downsample_rate = 160
        receptive_field = 400

        def __init__(self, path=None, **kw):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))

        def _forward(self, wavs, wav_lengths):
            frames = wavs.unfold(1, self.receptive_field, self.downsample_rate)
            energy = frames.pow(2).mean(-1).clamp_min(1e-8).log()
            zcr = (frames[..., 1:] * frames[..., :-1] < 0).float().mean(-1)
            first = torch.stack([energy, zcr, energy * zcr], -1) * self.scale
            n = self.num_frames(wav_lengths)
            keep = (torch.arange(first.shape[1]) < n.unsqueeze(1)).unsqueeze(-1)
            first = first * keep
            return [first, torch.tanh(first) * keep], n
''')


@pytest.fixture
def fresh_registry():
    """The registry as a fresh process sees it (entry points read again), restored afterwards."""
    with UPSTREAMS.scoped(rescan=True):
        yield UPSTREAMS


def install_fake_distribution(root, module: str, entry_name: str, cls: str) -> None:
    """What `pip install` leaves behind: a module plus a .dist-info with entry_points.txt."""
    (root / f"{module}.py").write_text(PLUGIN_SOURCE.format(cls=cls, name=entry_name))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[superbench.upstreams]\n{entry_name} = {module}:{cls}\n")


def test_plugin_from_a_python_file(tmp_path):
    plugin_dir = tmp_path / "x"
    plugin_dir.mkdir()
    (plugin_dir / "my_up.py").write_text(PLUGIN_SOURCE.format(cls="MyUpstream", name="my-up"))
    up = load_upstream(f"{plugin_dir / 'my_up.py'}:MyUpstream")
    assert up.name == "my-up" and up.num_layers == 2
    checks = validate_upstream(up)
    assert all_passed(checks), format_checks(checks)


def test_plugin_file_errors_name_the_file_and_the_class(tmp_path):
    (tmp_path / "my_up.py").write_text(PLUGIN_SOURCE.format(cls="MyUpstream", name="my-up"))
    with pytest.raises(AttributeError, match="has no 'Nope'.*MyUpstream"):
        load_upstream(f"{tmp_path / 'my_up.py'}:Nope")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_upstream(f"{tmp_path / 'missing.py'}:MyUpstream")


def test_plugin_from_an_entry_point(tmp_path, monkeypatch, fresh_registry):
    install_fake_distribution(tmp_path, "superbench_toy_plugin", "toy-energy", "ToyEnergy")
    monkeypatch.syspath_prepend(str(tmp_path))
    up = load_upstream("toy-energy")
    assert type(up).__name__ == "ToyEnergy"
    assert "entry point superbench_toy_plugin:ToyEnergy" == UPSTREAMS.source("toy-energy")
    assert "fbank" in UPSTREAMS  # built-ins are still there
    checks = validate_upstream(up)
    assert all_passed(checks), format_checks(checks)
    hs, lengths = up.extract([torch.randn(1600).numpy()])
    assert lengths.tolist() == [8] and [h.shape for h in hs] == [(1, 8, 3), (1, 8, 3)]
    sys.modules.pop("superbench_toy_plugin", None)


def test_entry_point_cannot_shadow_a_built_in(tmp_path, monkeypatch, fresh_registry):
    install_fake_distribution(tmp_path, "superbench_evil_plugin", "fbank", "Evil")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DuplicateNameError, match="'fbank'.*superbench_evil_plugin:Evil.*built-in"):
        UPSTREAMS.names()


def test_duplicate_registration_is_refused():
    with pytest.raises(DuplicateNameError, match="already registered"):
        UPSTREAMS.register("hubert", lambda path=None: None)
    assert UPSTREAMS.get("hubert").__name__ == "hubert"  # the built-in survives


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean 'wavlm'") as err:
        load_upstream("wavlmm")
    assert "known:" in str(err.value)
    with pytest.raises(UnknownNameError, match="'data2vec-tiny-random'"):
        load_upstream("data2vec-tiny-randon")

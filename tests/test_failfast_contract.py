"""Item 8: any object that keeps the upstream contract works (wrapped), one that does not is refused in one
line; failed checks say what to look at; an entry point seen twice registers once."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from superbench.cli import main
from superbench.exit_codes import ExitCode
from superbench.options import RunOptions
from superbench.registry import DuplicateNameError
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import make_class_corpus
from superbench.upstream import UPSTREAMS, ContractUpstream, Upstream, as_upstream, load_upstream
from superbench.validate import format_checks, validate_upstream

PLAIN = '''
import torch


class TwoLayerEnergy(torch.nn.Module):
    """Keeps the contract (attributes + forward) without subclassing superbench.upstream.Upstream."""

    name, num_layers, hidden_size, downsample_rate = "two-layer-energy", 2, 2, 160  # receptive_field left out

    def __init__(self, path=None):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([1.0, 0.5]))

    def forward(self, wavs, wav_lengths):
        frames = wavs.unfold(1, 400, 160)
        h = torch.stack([frames.pow(2).mean(-1), frames.abs().mean(-1)], -1) * self.scale
        n = (wav_lengths - 400) // 160 + 1
        return [h, torch.tanh(h)], n


class SubclassEnergy(__import__("superbench.upstream", fromlist=["Upstream"]).Upstream):
    name, num_layers, hidden_size, downsample_rate, receptive_field = "subclass-energy", 2, 2, 160, 400

    def __init__(self, path=None):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([1.0, 0.5]))

    def _forward(self, wavs, wav_lengths):
        frames = wavs.unfold(1, 400, 160)
        h = torch.stack([frames.pow(2).mean(-1), frames.abs().mean(-1)], -1) * self.scale
        return [h, torch.tanh(h)], self.num_frames(wav_lengths)


class NoLayers(torch.nn.Module):
    hidden_size = 2

    def forward(self, wavs, wav_lengths):
        return [wavs], wav_lengths
'''


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "myup.py"
    path.write_text(PLAIN)
    return path


@pytest.mark.parametrize("cls", ["TwoLayerEnergy", "SubclassEnergy"])
def test_plain_module_and_subclass_both_validate_on_the_command_line(plugin, cls, capsys, caplog):
    assert main(["upstreams", "validate", f"{plugin}:{cls}"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "10/10 checks passed" in out and "fingerprint " in out
    wrapped = "not an Upstream subclass, wrapped (defaults: sample_rate=16000, receptive_field=400)"
    assert (wrapped in out) == (cls == "TwoLayerEnergy")
    assert not any(r.exc_info for r in caplog.records)


def test_a_wrapped_module_is_fingerprinted_by_its_weights_and_runs_a_task(plugin, tmp_path):
    up = load_upstream(f"{plugin}:TwoLayerEnergy")
    assert isinstance(up, ContractUpstream) and (up.name, up.num_layers, up.receptive_field) == \
        ("two-layer-energy", 2, 400)
    other = load_upstream(f"{plugin}:TwoLayerEnergy")
    assert other.fingerprint() == up.fingerprint()
    with torch.no_grad():
        other.model.scale.mul_(2)
    assert other.fingerprint() != up.fingerprint()  # the wrapped module's state dict is hashed
    assert as_upstream(up) is up
    make_class_corpus(tmp_path, task="ks")
    opts = RunOptions.of(results_dir=tmp_path / "r", cache_root=tmp_path / "c", progress=False, profile="fast",
                         overrides={"steps": 4, "eval_interval": 2, "batch_size": 8, "lr_grid": [1e-2]})
    (rec,) = run(up, [get_task("ks")], tmp_path, opts)
    assert rec.upstream == "two-layer-energy" and len(rec.layer_weights) == 2
    (again,) = run(load_upstream(f"{plugin}:TwoLayerEnergy").model, [get_task("ks")], tmp_path, opts)
    assert again == rec  # the bare module (wrapped by the runner) is the same run: skipped


def test_an_object_that_breaks_the_contract_is_refused_in_one_line(plugin, caplog, capsys):
    with caplog.at_level(logging.ERROR):
        assert main(["upstreams", "validate", f"{plugin}:NoLayers"]) == ExitCode.USAGE
    (message,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "NoLayers is not an upstream: it has no num_layers; subclass superbench.upstream.Upstream" in message
    assert "\n" not in message and not any(r.exc_info for r in caplog.records)
    checks = validate_upstream(object())  # the library reports instead of raising
    assert checks[0].passed is False and "subclass superbench.upstream.Upstream" in checks[0].detail
    assert all(c.passed is None for c in checks[1:])


class PaddingDependent(Upstream):
    name, num_layers, hidden_size, downsample_rate, receptive_field = "padding-dependent", 1, 1, 160, 400

    def _forward(self, wavs, wav_lengths):
        wavs = (wavs - wavs.mean(1, keepdim=True)) / wavs.std(1, keepdim=True)  # statistics over the padding too
        return [wavs.unfold(1, 400, 160).mean(-1, keepdim=True)], self.num_frames(wav_lengths)


def test_each_failed_check_says_what_to_look_at():
    text = format_checks(validate_upstream(PaddingDependent()))
    lines = text.splitlines()
    failed = [i for i, line in enumerate(lines) if "FAIL" in line]
    assert [lines[i].split()[0] for i in failed] == ["batch", "padding"]
    assert all(lines[i + 1].strip().startswith("-> ") for i in failed)  # a hint right under every failure
    assert "-> frames of the real audio change with padding: zero or mask padded samples" in text
    assert "normalise each clip over its own wav_lengths samples" in text
    assert sum(line.strip().startswith("-> ") for line in lines) == 2 and lines[-1] == "8/10 checks passed"


def test_validate_takes_upstream_like_run_and_check(capsys, caplog):
    assert main(["upstreams", "validate", "--upstream", "mfcc"]) == ExitCode.OK
    assert "10/10 checks passed" in capsys.readouterr().out
    assert main(["upstreams", "validate"]) == ExitCode.USAGE
    assert main(["upstreams", "validate", "mfcc", "--upstream", "fbank"]) == ExitCode.USAGE
    assert "`validate NAME` or `validate --upstream NAME`" in caplog.text


# --------------------------------------------------------------------------- entry points seen twice

SOURCE = ("from superbench.testing import ToneUpstream\n\n"
          "class {cls}(ToneUpstream):\n"
          "    def __init__(self, path=None):\n"
          "        super().__init__()\n")


def _install(site, dist: str, module: str, entry: str, cls: str) -> None:
    """What `pip install` leaves: the module and a .dist-info naming the entry point."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(SOURCE.format(cls=cls))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"  # as pip names it (the stem before '-' is the name)
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[superbench.upstreams]\n{entry} = {module}:{cls}\n")


@pytest.fixture
def fresh_registry():
    with UPSTREAMS.scoped(rescan=True):
        yield UPSTREAMS
    for name in ("superbench_twice", "superbench_other"):
        sys.modules.pop(name, None)


def test_the_same_entry_point_seen_twice_registers_once(tmp_path, monkeypatch, fresh_registry):
    # e.g. the plugin installed into the venv and its development copy on the path under another dist name
    _install(tmp_path / "a", "superbench-twice", "superbench_twice", "twice-tones", "Tones")
    _install(tmp_path / "b", "superbench-twice-dev", "superbench_twice", "twice-tones", "Tones")
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    assert fresh_registry.names().count("twice-tones") == 1
    assert fresh_registry.source("twice-tones") == "entry point superbench_twice:Tones"
    assert load_upstream("twice-tones").num_layers == 3
    from importlib import metadata

    listed = [ep for ep in metadata.entry_points(group="superbench.upstreams") if ep.name == "twice-tones"]
    assert len(listed) == 2  # really listed twice, by two distributions


def test_another_object_under_a_taken_entry_point_name_still_clashes(tmp_path, monkeypatch, fresh_registry):
    _install(tmp_path / "a", "superbench-twice", "superbench_twice", "twice-tones", "Tones")
    _install(tmp_path / "b", "superbench-other", "superbench_other", "twice-tones", "Other")
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    monkeypatch.syspath_prepend(str(tmp_path / "b"))
    with pytest.raises(DuplicateNameError, match="'twice-tones' from entry point .*is already registered"):
        fresh_registry.names()

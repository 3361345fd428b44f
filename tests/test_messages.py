"""Honest messages, said before any work: a plugin that breaks at import names its file, an upstream
without a usable name is refused at load, and SIGTERM stops a command as cleanly as Ctrl-C."""

from __future__ import annotations

import logging
import signal
import textwrap

import pytest

from superbench.cli import main
from superbench.exit_codes import ExitCode
from superbench.registry import PluginImportError, load_object_from_file
from superbench.testing import make_class_corpus
from superbench.upstream import load_upstream

UPSTREAM = textwrap.dedent('''
    from superbench.testing import ToneUpstream


    class Named(ToneUpstream):
        name = {name!r}

        def __init__(self, path=None):
            super().__init__()
''')


def _run(tmp_path, spec: str) -> int:
    make_class_corpus(tmp_path / "data", task="ks")
    return main(["run", "--upstream", spec, "--task", "ks", "--data", str(tmp_path / "data"), "--profile", "fast",
                 "--results", str(tmp_path / "results"), "--no-store", "--no-progress"])


def test_a_plugin_that_raises_at_import_names_its_file(tmp_path, caplog):
    plugin = tmp_path / "boom.py"
    plugin.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(PluginImportError, match=rf"plugin file {plugin} failed to import: RuntimeError: boom"):
        load_object_from_file(f"{plugin}:X")
    with caplog.at_level(logging.ERROR):
        assert _run(tmp_path, f"{plugin}:X") == ExitCode.USAGE
    assert f"error: plugin file {plugin} failed to import: RuntimeError: boom at import" in caplog.text
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name", ["", "  ", 3])
def test_an_upstream_without_a_usable_name_is_refused_at_load(tmp_path, caplog, name):
    plugin = tmp_path / "named.py"
    plugin.write_text(UPSTREAM.format(name=name))
    with pytest.raises(ValueError, match=rf"upstream name is {name!r}, not a non-empty string"):
        load_upstream(f"{plugin}:Named")
    with caplog.at_level(logging.ERROR):
        assert _run(tmp_path, f"{plugin}:Named") == ExitCode.USAGE
    assert "not a non-empty string" in caplog.text and "extracting" not in caplog.text
    assert not (tmp_path / "results").exists()


def test_sigterm_stops_a_command_like_ctrl_c_with_its_own_message(tmp_path, caplog):
    plugin = tmp_path / "stopped.py"  # a stop arriving while the command works (here: while the plugin loads)
    plugin.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    before = signal.getsignal(signal.SIGTERM)
    with caplog.at_level(logging.ERROR):
        assert _run(tmp_path, f"{plugin}:X") == ExitCode.TERMINATED == 143
    assert "terminated (SIGTERM); finished work is kept and a re-run resumes" in caplog.text
    assert "internal error" not in caplog.text and "failed to import" not in caplog.text
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    import subprocess
    import sys

    # `true` exits without reading, long before superbench has started, so every write meets a closed pipe
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m superbench upstreams list | true; "
                          "echo status=${PIPESTATUS[0]}"], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == f"status={int(ExitCode.BROKEN_PIPE)}" == "status=141"
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr and "Exception" not in proc.stderr

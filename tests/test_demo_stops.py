"""Demo synthesis stops cleanly: a full disk is the one disk-full message naming the file (exit 3, not
soundfile's AssertionError); SIGTERM and Ctrl-C end with their own message and no worker traceback; and
a parent killed outright (kill -9) leaves no worker writing the rest of its chunk.

The stop tests run the real command (its forkserver pool included) in a process group of its own."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from recipes.prepare import demo
from superbench.audio import save_wav

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180  # generous: a loaded 2-core machine imports, plans and starts the pool slowly
WORKERS = min(2, os.cpu_count() or 1)  # what `data demo` starts (demo._synthesise)
WORKER_NOISE = ("Traceback", "BrokenPipeError", "KeyboardInterrupt", "ForkServerPoolWorker", "AssertionError")

#: Imported at start-up by every Python process of the command (parent, forkserver, pool workers), via
#: PYTHONPATH: any write into a WAV's temp file fails as on a full disk.
FULL_DISK_FILE = textwrap.dedent('''
    import errno
    import os


    class _FullDisk:
        """A file whose writes fail as on a full disk (everything else is the real file's)."""

        def __init__(self, fh):
            self._fh = fh

        def __getattr__(self, name):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._fh.__exit__(*exc)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
''')
FULL_DISK_HOOK = FULL_DISK_FILE + textwrap.dedent('''
    import re

    _fdopen = os.fdopen


    def _full_fdopen(fd, *args, **kwargs):
        fh = _fdopen(fd, *args, **kwargs)
        return _FullDisk(fh) if re.search(r"\\.wav\\.\\w+\\.tmp$", os.readlink(f"/proc/self/fd/{fd}")) else fh


    os.fdopen = _full_fdopen
''')

linux_only = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")


#: The same full-disk file for the tests in this process: the class the start-up hook defines.
_HOOK_NAMES: dict = {}
exec(FULL_DISK_FILE, _HOOK_NAMES)
_FullDisk = _HOOK_NAMES["_FullDisk"]


@pytest.fixture()
def full_disk(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k)))


def test_a_wav_written_on_a_full_disk_names_the_file(tmp_path, full_disk):
    path = tmp_path / "a.wav"
    with pytest.raises(OSError, match=rf"no space left on {path} \(") as caught:
        save_wav(path, np.zeros(1600))
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp file


def test_a_synthesis_worker_on_a_full_disk_names_the_file(tmp_path, full_disk):
    plan = demo._Plan(demo.SIZES["tiny"], demo.Jitter(), np.random.default_rng(0), "tiny")
    with pytest.raises(OSError, match=rf"no space left on {tmp_path / plan.jobs[0]['path']} \("):
        demo._run_chunk((str(tmp_path), plan.jobs[:2]))


def _start(out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "superbench", "data", "demo", "--size", "tiny", "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)


def _sigint_as_in_a_terminal() -> None:
    # A shell starts a background job (`make test &`) with SIGINT ignored, the child inherits that and Python
    # then installs no KeyboardInterrupt handler: restore the default a terminal's foreground command has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wavs(out: Path) -> int:
    return sum(1 for _ in (out / "audio").rglob("*.wav"))


def _wait_for_synthesis(proc: subprocess.Popen, out: Path) -> int:
    """Poll until the workers have written a first file; returns the count then."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while (count := _wavs(out)) == 0:
        assert proc.poll() is None, f"exited before synthesising: {proc.communicate()[0]}"
        assert time.monotonic() < deadline, "synthesis did not start"
        time.sleep(0.02)
    return count


def _finish(proc: subprocess.Popen) -> str:
    """The command's output, read to its end: every process holding it (the pool's workers, the
    forkserver) has exited when this returns."""
    try:
        return proc.communicate(timeout=START_TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


@linux_only
def test_a_full_disk_during_synthesis_is_the_disk_full_message(tmp_path):
    hook, out = tmp_path / "hook", tmp_path / "demo"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FULL_DISK_HOOK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    proc = _start(out, env)
    output = _finish(proc)
    assert proc.returncode == 3, output
    assert f"failed: [Errno 28] no space left on {out / 'audio'}/" in output
    assert not any(noise in output for noise in WORKER_NOISE + ("internal error", "cffi")), output
    assert _wavs(out) == 0 and not (out / demo.MARKER).exists()


@pytest.mark.parametrize("how", ["SIGTERM to the command", "Ctrl-C in its terminal"])
def test_a_stop_during_synthesis_is_clean_and_stops_the_workers(tmp_path, how):
    out = tmp_path / "demo"
    proc = _start(out)
    _wait_for_synthesis(proc, out)
    if how == "SIGTERM to the command":
        proc.send_signal(signal.SIGTERM)
        code, message = 143, "terminated (SIGTERM); finished work is kept and a re-run resumes"
    else:
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        code, message = 130, "interrupted; finished work is kept and a re-run resumes"
    output = _finish(proc)
    assert proc.returncode == code, output
    assert message in output
    assert not any(noise in output for noise in WORKER_NOISE), output
    left = _wavs(out)
    assert not (out / demo.MARKER).exists()
    time.sleep(0.5)  # every process has exited (see _finish): nothing writes any more
    assert _wavs(out) == left


def test_workers_of_a_killed_command_stop_writing(tmp_path):
    out = tmp_path / "demo"
    proc = _start(out)
    at_kill = _wait_for_synthesis(proc, out)
    proc.kill()  # kill -9: the command cannot terminate its pool
    output = _finish(proc)
    # Without a check, each worker goes on through the rest of its chunk (CHUNK files) before it notices.
    written_after = _wavs(out) - at_kill
    assert written_after < demo.CHUNK * WORKERS // 2, (written_after, output)
    assert not any(noise in output for noise in WORKER_NOISE), output

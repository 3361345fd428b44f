"""kill -9 in the middle of training and in the middle of store writes: nothing is lost or wrong afterwards.

(kill -9 during extraction: tests/test_cache.py::test_resume_after_kill_minus_9_skips_finished_chunks.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from leaderboard.store import ResultStore
from superbench.options import RunOptions
from superbench.records import read_records
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus

# Long enough that the child cannot finish between the first checkpoint and the kill on a fast machine.
OVERRIDES = {"steps": 600, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}

_TRAIN_CHILD = """
import torch
torch.set_num_threads(1)
from pathlib import Path
from superbench.options import RunOptions
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream
opts = RunOptions.of(results_dir=Path({results!r}), cache_root=Path({cache!r}), checkpoint_root=Path({ckpt!r}),
                     progress=False, profile="fast", overrides={overrides!r})
run(ToneUpstream(), [get_task("ks")], Path({data!r}), opts)
"""


def _opts(results: Path, cache: Path, ckpt: Path) -> RunOptions:
    return RunOptions.of(results_dir=results, cache_root=cache, checkpoint_root=ckpt, progress=False, profile="fast",
                         overrides=dict(OVERRIDES))


def test_kill_minus_9_during_training_resumes_to_the_same_record(tmp_path):
    make_class_corpus(tmp_path / "data", task="ks")
    (whole,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data",
                        _opts(tmp_path / "r-whole", tmp_path / "cache", tmp_path / "ck-whole"))

    results, ckpt = tmp_path / "r-killed", tmp_path / "ck-killed"
    code = _TRAIN_CHILD.format(results=str(results), cache=str(tmp_path / "cache"), ckpt=str(ckpt),
                               overrides=OVERRIDES, data=str(tmp_path / "data"))
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    deadline = time.time() + 120
    while not list(ckpt.rglob("*.pt")) and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)  # the first training state is on disk: the kill lands mid-training
    time.sleep(random.Random(7).uniform(0.0, 0.05))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before the kill; make the schedule longer"
    assert not list(results.rglob("*.json")) and list(ckpt.rglob("*"))  # no record yet, training state kept

    (resumed,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(results, tmp_path / "cache", ckpt))
    assert (resumed.test, resumed.dev, resumed.lr, resumed.layer_weights, resumed.trials) == \
        (whole.test, whole.dev, whole.lr, whole.layer_weights, whole.trials)
    assert not any(p.is_file() for p in ckpt.rglob("*"))  # cleared once the record is written


_STORE_CHILD = """
import sys, time
from leaderboard.store import ResultStore
from superbench.records import read_records
records = read_records([{results!r}])
store = ResultStore({db!r})
for i, rec in enumerate(records):
    store.add(rec)
    print(i + 1, flush=True)
    time.sleep(0.05)  # so the parent's kill lands while rows are still being written, on any machine
"""


def test_kill_minus_9_during_store_writes_loses_no_row_and_sync_repairs(tmp_path):
    make_class_corpus(tmp_path / "data", task="sid")
    results = tmp_path / "results"
    opts = RunOptions.of(results_dir=results, cache_root=tmp_path / "cache", checkpoint_root=tmp_path / "ck",
                         progress=False, profile="fast", seeds=40,
                         overrides={"steps": 2, "eval_interval": 2, "batch_size": 4, "lr_grid": [1e-2]})
    records = run(ToneUpstream(), [get_task("sid")], tmp_path / "data", opts)
    assert len(records) == 40 and len(read_records([results])) == 40

    db = tmp_path / "lb.db"
    child = subprocess.Popen([sys.executable, "-c", _STORE_CHILD.format(results=str(results), db=str(db))],
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    acknowledged = 0
    for line in child.stdout:  # kill after a random number of committed rows
        acknowledged = int(line)
        if acknowledged >= random.Random(3).randint(3, 20):
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait()
    assert 3 <= acknowledged < 40

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = ResultStore(db)
    stored = len(store)
    assert acknowledged <= stored < 40  # every acknowledged row survived; the rest are missing, not half
    report = store.sync(results)
    assert (len(report.added), report.already, report.refused) == (40 - stored, stored, [])
    assert {r.run_key() for r in store.records()} == {r.run_key() for r in records}
    again = store.sync(results)
    assert (len(again.added), again.already) == (0, 40)
    assert sorted(r.seed for r in store.records()) == list(range(40))  # rows read back as valid records
    store.close()

"""Two Ray nodes on one machine (`ray start --head` + `ray start --address`), as the README's multi-node
recipe runs them: extraction actors and trial groups land on both nodes, and the records equal the local
executor's. Each node has one CPU and a custom resource of its own; both see one cache folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'superbench[ray]')")


#: No usage report, and no token authentication (Ray 2.5x's default, whose token the driver would need to find):
#: the nodes listen on this machine only.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.is_file() else shutil.which("ray") or "ray"


def _start(args: list[str], temp: str) -> subprocess.Popen:
    """One node, `ray start --block` in a session of its own: stopping it stops only this node's processes
    (a plain `ray stop` would stop every Ray node of this user on the machine)."""
    return subprocess.Popen([_ray_cli(), "start", "--block", "--num-cpus=1", "--disable-usage-stats",
                             f"--temp-dir={temp}", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **RAY_ENV})


def _stop(node: subprocess.Popen) -> None:
    """SIGTERM to the node's session (its raylet, GCS, workers), then SIGKILL to whatever is left of it."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(node.pid, sig)
        except ProcessLookupError:
            return
        try:
            node.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(scope="module")
def two_nodes():
    """The address of a head node (resource node_a) joined by a second node (node_b), one CPU each."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    port = _free_port()
    nodes = [_start(["--head", f"--port={port}", "--include-dashboard=false",
                     "--resources=" + json.dumps({"node_a": 1})], temp)]
    try:
        deadline = time.monotonic() + 90
        while True:  # the head answers before the second node may join
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or nodes[0].poll() is not None:
                    pytest.fail("the Ray head node did not start")
                time.sleep(0.5)
        nodes.append(_start([f"--address=127.0.0.1:{port}", "--resources=" + json.dumps({"node_b": 1})], temp))
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp, ignore_errors=True)


#: The driver, in an interpreter of its own: a process that already ran (and shut down) another Ray
#: instance keeps state that a new connection trips over, as a user's fresh `superbench run` never does.
DRIVER = r"""
import json, sys, time
from pathlib import Path
import ray
import superbench.runner as runner
from superbench.manifest import Fold
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, scratch_run_options

address, root = sys.argv[1], Path(sys.argv[2])
ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
deadline = time.monotonic() + 90
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
names = {n["NodeID"]: "node_a" if "node_a" in n["Resources"] else "node_b" for n in ray.nodes() if n["Alive"]}
folds = [Fold("fold1", "train", "dev", "test"), Fold("fold2", "train", "test", "dev")]
make_class_corpus(root, task="er", folds=folds, per_class=(48, 8, 8))  # 192 clips: several chunks
over = {"steps": 40, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-4, 1e-3]}
made, real = [], runner.make_executor
runner.make_executor = lambda *a, **kw: made.append(real(*a, **kw)) or made[-1]
recs = {}
for executor in ("local", "ray"):
    opts = scratch_run_options(root / executor, overrides=over, seeds=2, executor=executor,
                               address=address if executor == "ray" else None)
    recs[executor] = runner.run(ToneUpstream(), [get_task("er")], root, opts)
cluster = made[-1]
chunks = [p for pool in cluster.pools for p in pool.placements]

def record(r):
    return {"test": r.test, "dev": r.dev, "lr": r.lr, "folds": r.folds, "layer_weights": r.layer_weights,
            "trials": [[t["lr"], t["fold"], t["dev"], t["test"], t["best_step"], t["history"]] for t in r.trials]}

print(json.dumps({
    "nodes": sorted(names.values()), "workers": cluster.workers,
    "chunks": [names[p.node] for p in chunks], "jobs": [names[p.node] for p in cluster.placements],
    "ordered": all(p.submitted <= p.started <= p.opened <= p.finished for p in chunks + cluster.placements),
    "records": {e: [record(r) for r in rs] for e, rs in recs.items()}}))
ray.shutdown()
"""


def test_extraction_and_trial_groups_spread_over_two_nodes_with_the_local_records(two_nodes, tmp_path):
    done = subprocess.run([sys.executable, "-c", DRIVER, two_nodes, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **RAY_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["nodes"] == ["node_a", "node_b"] and got["workers"] == 2
    assert len(got["chunks"]) >= 2 and set(got["chunks"]) == {"node_a", "node_b"}
    assert len(got["jobs"]) == 2 and set(got["jobs"]) == {"node_a", "node_b"}  # one trial group per node
    assert got["ordered"]
    local, remote = got["records"]["local"], got["records"]["ray"]
    assert len(local) == len(remote) == 2
    for a, b in zip(local, remote, strict=True):
        weights_a, weights_b = a.pop("layer_weights"), b.pop("layer_weights")
        assert a == b  # test, dev, lr, folds and every trial's history
        assert weights_a == pytest.approx(weights_b, abs=1e-5)

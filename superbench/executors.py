"""Where the trials of a run train: in this process (`local`) or as Ray tasks on a cluster (`ray`).

The runner cuts the trials still to train into `TrainingJob`s (a job is either one group of trials
trained as one computation, or trials trained one after the other) and hands them to an executor;
whatever runs a job, it returns one `TrainResult` per trial. The runner alone writes trial files,
records and the leaderboard store, so a remote worker never writes anything but its own resumable
checkpoint (on the shared `SUPERBENCH_HOME`), which lets a retried task continue where a killed
one stopped, with identical results.

Ray is an optional extra (`pip install 'superbench[ray]'`), imported only by `RayExecutor`. Frame
features never travel through Ray's object store: a worker opens the feature cache from the shared
cache directory by its path and the manifest's audio keys.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from superbench.downstream import FeatureSource
from superbench.features.store import FeatureCache
from superbench.options import EXECUTORS, check_choice
from superbench.tasks import TaskSetup
from superbench.training import TrainResult, Trial, train
from superbench.trial_group import train_group

log = logging.getLogger(__name__)

@dataclass
class TrainingJob:
    """Trials trained in one place: as one group (`grouped`) or one after the other.

    `checkpoints` holds one path per trial (one after the other) or a single path (the group's);
    `lengths` one list of training lengths per trial (length bucketing), or None.
    """

    setup: TaskSetup
    trials: list[Trial]
    checkpoints: list[Path]
    grouped: bool
    lengths: list[list[int] | None] = field(default_factory=list)
    desc: str = "train"
    progress: bool = True
    device: str = "cpu"
    threads: int | None = None

    def spent_checkpoint(self, i: int) -> Path | None:
        """The checkpoint no longer needed once trial i's result is kept: its own (one after the other),
        the group's after the last trial of a group, else None."""
        if not self.grouped:
            return self.checkpoints[i]
        return self.checkpoints[0] if i == len(self.trials) - 1 else None


def run_job(job: TrainingJob, source: FeatureSource,
            on_result: Callable[[int, TrainResult], None] | None = None) -> list[TrainResult]:
    """Train `job` against `source`; `on_result(i, result)` as each trial (or the group) finishes."""
    before = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)
    try:
        if job.grouped:
            results = train_group(job.setup.make_head, job.setup.stack, job.setup.objective, source, job.trials,
                                  progress=job.progress, desc=job.desc, checkpoint=job.checkpoints[0],
                                  device=job.device)
            for i, result in enumerate(results):
                if on_result is not None:
                    on_result(i, result)
            return results
        results = []
        for i, trial in enumerate(job.trials):
            fit = job.setup.fit or train
            result = fit(job.setup.make_head, job.setup.objective, source, trial.train, trial.dev, trial.test,
                         trial.cfg, progress=job.progress, desc=trial.desc, checkpoint=job.checkpoints[i],
                         checkpoint_key=trial.key, lengths=job.lengths[i] if job.lengths else None,
                         device=job.device)
            if on_result is not None:
                on_result(i, result)
            results.append(result)
        return results
    finally:
        torch.set_num_threads(before)


class LocalExecutor:
    """Jobs one after the other in this process (the default)."""

    name = "local"
    workers = 1

    def extractor_pool(self) -> None:
        """Extraction runs in this process."""
        return None

    def run(self, jobs: Sequence[TrainingJob], source: FeatureSource,
            on_result: Callable[[int, int, TrainResult], None]) -> None:
        for j, job in enumerate(jobs):
            run_job(job, source, lambda i, result, j=j: on_result(j, i, result))


@dataclass(frozen=True)
class Placement:
    """Where and when one piece of remote work ran: a training job or an extraction chunk.

    Kept by the Ray executor and its extractor pool (`placements`), so a multi-node run can be checked
    to have used every node, and its wall time split into start-up (`submitted` to `started`: scheduling,
    a worker's start, the job's arguments), opening the features (`opened`) and the work itself.
    Times are `time.time()` of the driver (`submitted`) and of the worker (the rest): one machine's clock,
    or clocks that agree to well under the seconds these spans take.
    """

    kind: str  # "job" or "chunk"
    node: str  # Ray node id
    pid: int
    submitted: float
    started: float
    opened: float  # the feature cache open (jobs); == started for chunks
    finished: float

    @property
    def startup(self) -> float:
        return self.started - self.submitted

    @property
    def work(self) -> float:
        return self.finished - self.opened


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _remote_job(job: TrainingJob, cache: str, keys: Mapping[str, str], home: str,
                submitted: float = 0.0) -> tuple[list[TrainResult], Placement]:
    """Body of a Ray task: open the shared feature cache, train the job, return its results and where
    and when it ran."""
    started = time.time()
    os.environ.setdefault("SUPERBENCH_HOME", home)
    source = FeatureCache.open(cache, keys)
    opened = time.time()
    results = run_job(job, source)
    return results, Placement("job", _node_id(), os.getpid(), submitted, started, opened, time.time())


class RayExecutor:
    """One Ray task per job (`num_cpus` 1 and `gpus_per_trial` GPUs each); failed tasks are retried.

    `address`: None starts a local Ray instance (`num_cpus` of them), "auto" joins the cluster that
    `ray start` runs on this machine, "ray://HOST:PORT" or "HOST:PORT" a remote one.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, gpus_per_trial: float = 0.0,
                 max_retries: int = 3, gpus_per_extractor: float = 0.0, extract_actors: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ValueError("--executor ray needs Ray: pip install 'superbench[ray]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            _check_reachable(address)  # Ray itself retries an unreachable address for minutes
            try:
                ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = address or "a new local instance"
                raise ValueError(f"--address {where}: cannot connect to Ray ({exc}); start a cluster with "
                                 f"`ray start --head`, or leave --address out to start a local one") from exc
        self.gpus_per_trial = float(gpus_per_trial)
        self.gpus_per_extractor = float(gpus_per_extractor)
        self.extract_actors = extract_actors
        self.max_retries = max_retries
        #: where each training job ran, in the order they finished (see `Placement`)
        self.placements: list[Placement] = []
        #: the extractor pools handed out, whose `placements` say where each chunk was extracted
        self.pools: list[RayExtractorPool] = []
        resources = ray.cluster_resources()
        self.workers = max(1, int(resources.get("CPU", 1)))
        for option, value in (("--gpus-per-trial", gpus_per_trial), ("--gpus-per-extractor", gpus_per_extractor)):
            if value and not resources.get("GPU"):
                raise ValueError(f"{option} {value}: the Ray cluster has no GPU; use 0")

    def extractor_pool(self) -> RayExtractorPool:
        """Actors that extract chunks (one per worker CPU unless `extract_actors` says otherwise)."""
        pool = RayExtractorPool(self.extract_actors or self.workers, self.gpus_per_extractor, threads=1)
        self.pools.append(pool)
        return pool

    def run(self, jobs: Sequence[TrainingJob], source: FeatureSource,
            on_result: Callable[[int, int, TrainResult], None]) -> None:
        if not isinstance(source, FeatureCache):
            raise ValueError("--executor ray reads features from the shared cache: it cannot run with --no-cache")
        path, keys = source.path, source.keys
        ray = self.ray
        task = ray.remote(num_cpus=1, num_gpus=self.gpus_per_trial, max_retries=self.max_retries,
                          retry_exceptions=False)(_remote_job)
        home = os.environ.get("SUPERBENCH_HOME", "")
        pending: dict[Any, int] = {}
        keys_ref = ray.put(dict(keys))  # once in the object store, not once per job
        for j, job in enumerate(jobs):
            ref = task.remote(job, str(path), keys_ref, home, time.time())
            pending[ref] = j
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                j = pending.pop(done[0])
                results, placement = ray.get(done[0])
                self.placements.append(placement)
                for i, result in enumerate(results):
                    on_result(j, i, result)
        except BaseException:
            for ref in pending:  # Ctrl-C or a failed job: stop the rest, their checkpoints stay for the rerun
                ray.cancel(ref, force=True)
            raise


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """ValueError naming --address when nothing answers at HOST:PORT (None and "auto" are Ray's to resolve)."""
    if address is None or address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValueError(f"--address {address}: cannot connect to Ray (nothing answers at {host}:{port}: {exc}); "
                         f"start a cluster with `ray start --head`, or leave --address out to start a local "
                         f"one") from exc


class RayExtractorPool:
    """Feature extraction on Ray actors: each holds the upstream (sent once) and takes chunks of the cache
    plan as they come (`ray.util.ActorPool`), writing them into the cache folder, which every node must see
    (a shared filesystem). The driver keeps the plan, the lock and the final check of the cache."""

    def __init__(self, actors: int = 2, gpus_per_extractor: float = 0.0, threads: int | None = None) -> None:
        import ray

        self.ray, self.actors, self.gpus, self.threads = ray, max(1, int(actors)), float(gpus_per_extractor), threads
        #: (spec, path, kwargs) of `load_upstream`, the variant options and the expected fingerprint: how
        #: workers rebuild an upstream that cannot be pickled (set by the runner)
        self.rebuild: tuple[tuple, dict, str] | None = None
        #: where each chunk was extracted, in the order they finished (see `Placement`)
        self.placements: list[Placement] = []

    def _shipped(self, upstream: Any) -> Any:
        """What the actors receive: the upstream itself when it pickles, else the recipe to rebuild it."""
        from ray import cloudpickle

        try:
            cloudpickle.dumps(upstream)
            return upstream
        except Exception as exc:  # e.g. "Serialization of parametrized modules is only supported through ..."
            if self.rebuild is None:
                raise ValueError(f"{getattr(upstream, 'name', upstream)} cannot be sent to Ray workers ({exc}) and "
                                 f"was not loaded by name: run it with --executor local") from exc
            return self.rebuild

    def run(self, upstream: Any, tasks: Sequence[Any], progress: Callable[[int], Any]) -> None:
        from ray.util import ActorPool

        if not tasks:
            return
        probe = Path(tasks[0].path)
        ray, held = self.ray, self.ray.put(self._shipped(upstream))
        cls = ray.remote(num_cpus=1, num_gpus=self.gpus, max_restarts=3, max_task_retries=3)(_Extractor)
        actors = [cls.remote(held, self.threads) for _ in range(min(self.actors, len(tasks)))]
        missing = [a for a in ray.get([a.sees.remote(str(probe)) for a in actors]) if a]
        if missing:
            raise ValueError(f"Ray workers cannot see the cache folder {probe} ({missing[0]}): SUPERBENCH_HOME "
                             f"(or --cache) must be on a filesystem every node mounts at the same path")
        for n, placement in ActorPool(actors).map_unordered(
                lambda actor, task: actor.extract.remote(task, time.time()), list(tasks)):
            self.placements.append(placement)
            progress(n)


class _Extractor:
    """A Ray actor holding one upstream for the whole extraction."""

    def __init__(self, upstream: Any, threads: int | None) -> None:
        if threads:
            torch.set_num_threads(threads)
        if isinstance(upstream, tuple):  # rebuilt here, and checked to be the very same weights
            from superbench.upstream import load_upstream

            (spec, path, kwargs), options, expected = upstream
            upstream = load_upstream(spec, path, **kwargs).variant(**options)
            if upstream.fingerprint() != expected:
                raise RuntimeError(f"the upstream {spec} rebuilt on a Ray worker has other weights "
                                   f"({upstream.fingerprint()} vs {expected}): is its initialisation seeded?")
        self.upstream = upstream.eval()

    def sees(self, path: str) -> str:
        """'' when this worker sees the cache folder, else why not."""
        return "" if os.path.isdir(path) else f"{path} does not exist on node {os.uname().nodename}"

    def extract(self, task: Any, submitted: float = 0.0) -> tuple[int, Placement]:
        """Extract one chunk; the utterances it held, and where and when it ran."""
        from superbench.features.extraction import extract_chunk

        started = time.time()
        n = extract_chunk(self.upstream, task)
        return n, Placement("chunk", _node_id(), os.getpid(), submitted, started, started, time.time())


def make_executor(name: str, address: str | None = None, num_cpus: int | None = None,
                  gpus_per_trial: float = 0.0, gpus_per_extractor: float = 0.0,
                  extract_actors: int | None = None) -> LocalExecutor | RayExecutor:
    """The executor `--executor` names, checked (and connected) before any work."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, num_cpus, gpus_per_trial, gpus_per_extractor=gpus_per_extractor,
                           extract_actors=extract_actors)
    check_choice("--executor", name, EXECUTORS)
    raise AssertionError(f"executor {name} is a choice without an implementation")

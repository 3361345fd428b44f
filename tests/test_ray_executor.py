"""The Ray executor on a local 2-CPU cluster: same cache bytes, same records, a killed worker retried."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from superbench.executors import LocalExecutor, RayExecutor, TrainingJob, make_executor
from superbench.features.extraction import extract_features
from superbench.features.keys import audio_keys
from superbench.features.store import cache_path
from superbench.manifest import Fold, load_task_manifest
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import CrashOnce, ToneUpstream, make_class_corpus, make_sequence_corpus, scratch_run_options
from superbench.trial_group import Trial

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'superbench[ray]')")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs, shared by this module's tests."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _records_equal(a, b):
    assert (a.test, a.dev, a.lr, a.folds, a.layer_weights) == (b.test, b.dev, b.lr, b.folds, b.layer_weights)
    strip = [{k: v for k, v in t.items()} for t in a.trials]
    assert strip == [{k: v for k, v in t.items()} for t in b.trials]


def test_grouped_trial_grid_on_ray_equals_local(cluster, tmp_path):
    folds = [Fold("fold1", "train", "dev", "test"), Fold("fold2", "train", "test", "dev")]
    make_class_corpus(tmp_path, task="er", folds=folds)
    over = {"steps": 40, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-4, 1e-3]}
    recs = {}
    for executor in ("local", "ray"):
        opts = scratch_run_options(tmp_path / executor, overrides=over, seeds=2, executor=executor)
        recs[executor] = run(ToneUpstream(), [get_task("er")], tmp_path, opts)
    assert [r.seed for r in recs["ray"]] == [0, 1]
    for a, b in zip(recs["local"], recs["ray"], strict=True):
        assert (a.test, a.dev, a.lr, a.folds) == (b.test, b.dev, b.lr, b.folds)
        assert [(t["lr"], t["fold"], t["dev"], t["test"], t["best_step"], t["history"]) for t in a.trials] == \
            [(t["lr"], t["fold"], t["dev"], t["test"], t["best_step"], t["history"]) for t in b.trials]
        assert a.layer_weights == pytest.approx(b.layer_weights, abs=1e-5)


def test_frame_task_trials_and_extraction_on_ray_equal_local(cluster, tmp_path):
    make_sequence_corpus(tmp_path, task="pr")
    over = {"steps": 20, "eval_interval": 10, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}
    recs = {}
    for executor in ("local", "ray"):
        opts = scratch_run_options(tmp_path / executor, overrides=over, executor=executor)
        (recs[executor],) = run(ToneUpstream(), [get_task("pr")], tmp_path, opts)
    _records_equal(recs["local"], recs["ray"])  # trials one at a time: the very same computation
    # the frame cache written by two Ray actors is byte-identical to the one extracted here
    folders = [cache_path(ToneUpstream(), "frame", tmp_path / e / "cache", recs[e].features_fingerprint)
               for e in ("local", "ray")]
    local, remote = ({p.name: p.read_bytes() for p in f.glob("*.npy")} for f in folders)
    assert local.keys() == remote.keys() and len(local) >= 1
    assert all(local[name] == remote[name] for name in local)


def test_a_worker_killed_mid_trial_is_retried_to_the_same_results(cluster, tmp_path):
    make_class_corpus(tmp_path, task="ks")
    manifest = load_task_manifest(tmp_path / "ks")
    task = get_task("ks")
    recipe = task.load_recipe("fast")
    up = ToneUpstream()
    source = extract_features(up, manifest, "utterance", root=tmp_path / "cache", progress=False,
                              keys=audio_keys(manifest))
    setup = task.kind.setup(task, manifest, recipe.head, up.num_layers, up.hidden_size, None)
    rows = manifest.splits

    def data(split):
        return [u.id for u in rows[split]], [setup.target_of(u) for u in rows[split]]

    cfg = dataclasses.replace(recipe.train, steps=60, eval_interval=20, batch_size=8)
    trials = [Trial(dataclasses.replace(cfg, lr=lr), data("train"), data("dev"), data("test"), f"lr {lr}", f"k{lr}")
              for lr in (1e-3, 1e-2)]

    def job(stack, name):
        return TrainingJob(dataclasses.replace(setup, stack=stack), trials, [tmp_path / f"{name}.pt"], grouped=True,
                           progress=False)

    got = {}

    def collect(name):
        return lambda j, i, result: got.setdefault(name, {}).__setitem__(i, result)

    LocalExecutor().run([job(setup.stack, "local")], source, collect("local"))
    marker = tmp_path / "killed"
    RayExecutor().run([job(CrashOnce(setup.stack, marker, after=30), "ray")], source, collect("ray"))
    assert marker.is_file()  # the first attempt died in its 31st update (after the checkpoint of step 20)
    for i in range(len(trials)):
        a, b = got["local"][i], got["ray"][i]
        assert (a.dev, a.test, a.best_step, a.history, a.predictions) == \
            (b.dev, b.test, b.best_step, b.history, b.predictions)
        assert all(torch.equal(a.head_state[k], b.head_state[k]) for k in a.head_state)


def test_ray_refuses_no_cache_before_any_work(cluster, tmp_path):
    make_class_corpus(tmp_path, task="ks")
    opts = scratch_run_options(tmp_path, executor="ray", use_cache=False)
    with pytest.raises(ValueError, match="--executor ray reads features from the shared cache: drop --no-cache"):
        run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    assert not (tmp_path / "cache").exists()


def test_unknown_executor_and_gpus_on_a_cpu_cluster_are_refused(cluster):
    with pytest.raises(ValueError, match=r"--executor 'slurm': use one of local, ray"):
        make_executor("slurm")
    with pytest.raises(ValueError, match=r"--gpus-per-trial 0.25: the Ray cluster has no GPU; use 0"):
        make_executor("ray", gpus_per_trial=0.25)


def test_an_unreachable_address_is_a_clear_error():
    if ray.is_initialized():
        ray.shutdown()
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"--address 127.0.0.1:9: cannot connect to Ray"):
        RayExecutor(address="127.0.0.1:9")
    assert time.monotonic() - start < 120


def test_an_upstream_that_cannot_be_pickled_is_rebuilt_on_the_workers(cluster, tmp_path):
    """HuBERT's positional convolution is weight-norm parametrised (not picklable): workers rebuild it by name
    and check its fingerprint; the cache equals one extracted here with the workers' single thread."""
    from superbench.upstream import load_upstream

    make_class_corpus(tmp_path, task="ks", per_class=(3, 1, 1))
    over = {"steps": 2, "eval_interval": 2, "batch_size": 4, "lr_grid": [1e-3]}
    recs = {}
    for executor in ("local", "ray"):
        up = load_upstream("hubert-tiny-random")
        opts = scratch_run_options(tmp_path / executor, overrides=over, executor=executor, extract_threads=1)
        (recs[executor],) = run(up, [get_task("ks")], tmp_path, opts)
    folders = [cache_path(up, "utterance", tmp_path / e / "cache", recs[e].features_fingerprint)
               for e in ("local", "ray")]
    local, remote = ({p.name: p.read_bytes() for p in f.glob("*.npy")} for f in folders)
    assert local.keys() == remote.keys() and all(local[n] == remote[n] for n in local)


def test_an_interrupted_ray_driver_leaves_a_resumable_run(cluster, tmp_path, monkeypatch):
    """Ctrl-C in the driver after the first finished trial: the rest is cancelled, the finished trial is kept,
    and the rerun trains only what is missing, to the same record as an undisturbed run."""
    import superbench.sweep as sweep_module

    make_sequence_corpus(tmp_path, task="pr")
    over = {"steps": 20, "eval_interval": 10, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}
    (whole,) = run(ToneUpstream(), [get_task("pr")], tmp_path,
                        scratch_run_options(tmp_path / "a", overrides=over, executor="ray"))
    opts = scratch_run_options(tmp_path / "b", overrides=over, executor="ray")
    real_keep, kept = sweep_module._keep_trial, []

    def keep_then_interrupt(*args, **kw):
        kept.append(real_keep(*args, **kw))
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "_keep_trial", keep_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(ToneUpstream(), [get_task("pr")], tmp_path, opts)
    monkeypatch.undo()
    finished = list((tmp_path / "b" / "ckpt").rglob("lr*-default.json"))
    assert len(kept) == 1 and len(finished) == 1  # one trial on disk, the other cancelled
    real_jobs, trained = sweep_module._jobs, []

    def counting_jobs(*args, **kw):
        jobs, parts = real_jobs(*args, **kw)
        trained.extend(t.desc for j in jobs for t in j.trials)
        return jobs, parts

    monkeypatch.setattr(sweep_module, "_jobs", counting_jobs)
    (resumed,) = run(ToneUpstream(), [get_task("pr")], tmp_path, opts)
    assert len(trained) == 1  # only the cancelled trial was trained again
    _records_equal(whole, resumed)

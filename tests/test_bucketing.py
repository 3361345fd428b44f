"""s3prl's length bucketing for the frame-level CTC tasks: buckets, epochs, seed, resume, and the runner's wiring."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import superbench.executors as executors
from downstreams import ClassificationObjective, UtteranceHead
from superbench.features.extraction import extract_features
from superbench.manifest import load_task_manifest
from superbench.recipe import RecipeError, TrainConfig
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import (
    Interrupted,
    InterruptingSource,
    RecordingObjective,
    ToneUpstream,
    make_class_corpus,
    make_sequence_corpus,
    scratch_run_options,
)
from superbench.training import batch_stream as _batches
from superbench.training import length_buckets, train
from superbench.trial_group import Trial, train_group


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 1, "batch_size": 4, "lr": 1.0, "eval_interval": 1, "bucketing": True, **kw})


def _lengths(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(8000, 80000, (n,), generator=g).tolist()


def test_buckets_are_consecutive_runs_of_the_descending_length_order():
    lengths = _lengths(23) + [5000, 5000]  # a tie keeps manifest order
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets = length_buckets(lengths, 4)
    assert [len(b) for b in buckets] == [4] * 6 + [1]  # the shorter last bucket is kept
    assert [i for b in buckets for i in b] == order
    assert buckets[-2][-1] == 23 and buckets[-1] == [24]


def test_full_buckets_above_the_threshold_are_split_in_two_halves():
    lengths = [300] * 8 + [100] * 8 + [50] * 3
    assert [len(b) for b in length_buckets(lengths, 8, halve_above=200)] == [4, 4, 8, 3]
    assert [len(b) for b in length_buckets(lengths, 8, halve_above=0)] == [8, 8, 3]
    # s3prl's ASR rule: the last, partial bucket is never split, even with long utterances
    assert [len(b) for b in length_buckets([300] * 11, 8, halve_above=200)] == [4, 4, 3]


def test_every_epoch_covers_each_utterance_once_in_a_new_bucket_order_fixed_by_the_seed():
    n, bs = 50, 8
    ids, targets, lengths = [f"u{i}" for i in range(n)], list(range(n)), _lengths(n)
    buckets = length_buckets(lengths, bs)
    as_ids = {tuple(f"u{i}" for i in b) for b in buckets}

    def epochs(seed: int, k: int = 4) -> list[list[tuple[str, ...]]]:
        stream = _batches(ids, targets, _cfg(batch_size=bs), torch.Generator().manual_seed(seed), lengths)
        return [[tuple(next(stream)[0]) for _ in buckets] for _ in range(k)]

    runs = epochs(0)
    for epoch in runs:
        assert set(epoch) == as_ids  # every bucket once: each utterance exactly once
        assert Counter(u for batch in epoch for u in batch) == Counter(ids)
    assert len({tuple(e) for e in runs}) == len(runs)  # the bucket order changes every epoch
    assert epochs(0) == runs and epochs(1) != runs  # ... and is fixed by the seed
    stream = _batches(ids, targets, _cfg(batch_size=bs), torch.Generator().manual_seed(0), lengths)
    batch_ids, batch_targets = next(stream)
    assert batch_targets == [int(u[1:]) for u in batch_ids]  # targets travel with their ids


def test_bucketing_needs_lengths_and_excludes_balanced_sampling():
    with pytest.raises(ValueError, match="one length per training utterance"):
        _batches(["a", "b"], [0, 1], _cfg(), torch.Generator())
    with pytest.raises(ValueError, match="one length per training utterance"):
        _batches(["a", "b"], [0, 1], _cfg(), torch.Generator(), [1])
    with pytest.raises(ValueError, match="exclude each other"):
        _cfg(balanced_sampling=True)
    with pytest.raises(ValueError, match="needs bucketing"):
        TrainConfig(steps=1, batch_size=4, lr=1.0, eval_interval=1, bucket_halve_above=2000)
    with pytest.raises(ValueError, match="non-negative"):
        _cfg(bucket_halve_above=-1)


def test_recipes_turn_bucketing_on_for_superb_only():
    for task, halve in (("pr", 300000), ("asr", 2000)):
        assert get_task(task).load_recipe("superb").train.bucketing
        assert get_task(task).load_recipe("superb").train.bucket_halve_above == halve
        assert not any(get_task(task).load_recipe(profile).train.bucketing for profile in ("fast", "ci"))
    assert not get_task("ks").load_recipe("superb").train.bucketing
    assert get_task("pr").load_recipe("fast").with_overrides({"train.bucketing": True}).train.bucketing
    with pytest.raises(RecipeError, match="true or false"):
        get_task("pr").load_recipe("fast").with_overrides({"train.bucketing": "yes"})


def test_an_interrupted_bucketed_run_resumes_to_the_same_result(tmp_path):
    """The bucketed stream is replayed to the saved step: same batches, same losses, same result."""
    manifest = load_task_manifest(make_class_corpus(tmp_path, per_class=(16, 4, 4)))  # 48 training utterances
    cache = extract_features(ToneUpstream(), manifest, "utterance", root=tmp_path / "cache", progress=False)
    index = {name: i for i, name in enumerate(manifest.labels)}

    def data(split):
        return [u.id for u in manifest.splits[split]], [index[u.label] for u in manifest.splits[split]]

    lengths = [u.num_samples for u in manifest.splits["train"]]
    cfg = TrainConfig(steps=30, batch_size=8, lr=1e-2, eval_interval=10, seed=3, eval_batch_size=5, bucketing=True)

    def train_once(source, checkpoint=None, objective=None, lengths=lengths):
        return train(lambda: UtteranceHead(3, 16, 3, proj_dim=16), objective or ClassificationObjective(), source,
                     data("train"), data("dev"), data("test"), cfg, progress=False, checkpoint=checkpoint,
                     checkpoint_key="k", lengths=lengths)

    whole_losses, resumed_losses = (RecordingObjective(ClassificationObjective()) for _ in range(2))
    whole = train_once(cache, objective=whole_losses)
    ckpt = tmp_path / "trial.pt"
    with pytest.raises(Interrupted):
        train_once(InterruptingSource(cache, 25), ckpt)  # dies in step 26 (beyond the 6 buckets of an epoch)
    counting = InterruptingSource(cache, 10**6)
    resumed = train_once(counting, ckpt, objective=resumed_losses)
    assert counting.calls == 10  # steps 21..30 only
    assert resumed_losses.losses == whole_losses.losses[20:]
    assert (resumed.dev, resumed.test, resumed.best_step, resumed.layer_weights, resumed.history) == \
        (whole.dev, whole.test, whole.best_step, whole.layer_weights, whole.history)
    # other lengths make other buckets: the state saved at step 20 is not replayed over them
    other = InterruptingSource(cache, 10**6)
    train_once(other, ckpt, lengths=lengths[::-1])
    assert other.calls == 30


def test_a_trial_group_refuses_bucketing_with_the_reason():
    cfg = _cfg(steps=2, eval_interval=1)
    trial = Trial(cfg, (["a", "b"], [0, 1]), (["a"], [0]), (["b"], [1]))
    with pytest.raises(ValueError, match="utterance-level and never buckets"):
        train_group(lambda: None, lambda heads: None, ClassificationObjective(), None, [trial])


def test_runner_passes_training_lengths_and_never_groups_bucketed_trials(tmp_path, monkeypatch):
    make_sequence_corpus(tmp_path, task="pr")
    manifest = load_task_manifest(tmp_path / "pr")
    real_train, seen = executors.train, []

    def spy(*args, **kw):
        seen.append((args[3][0], kw["lengths"], args[6].bucketing))
        return real_train(*args, **kw)

    monkeypatch.setattr(executors, "train", spy)
    overrides = {"steps": 20, "eval_interval": 10, "batch_size": 8, "lr_grid": [3e-2], "bucketing": True}
    (rec,) = run(ToneUpstream(), [get_task("pr")], tmp_path, scratch_run_options(tmp_path, overrides=overrides))
    assert rec.test <= 100.0
    assert seen == [([u.id for u in manifest.splits["train"]], [u.num_samples for u in manifest.splits["train"]],
                     True)]


def test_can_group_checks_bucketing_for_utterance_level_sources(tmp_path):
    """Even a stackable head on pooled features is trained one at a time when the recipe buckets."""
    make_class_corpus(tmp_path, task="ks")
    calls = []
    real = executors.train_group

    def spy(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    opts = scratch_run_options(tmp_path, overrides={"steps": 10, "eval_interval": 5, "batch_size": 8,
                                                    "lr_grid": [1e-3, 1e-2], "bucketing": True,
                                                    "balanced_sampling": False})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(executors, "train_group", spy)
        (rec,) = run(ToneUpstream(), [get_task("ks")], tmp_path, opts)
    assert not calls and rec.test >= 0

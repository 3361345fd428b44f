"""Trials trained as one batched group equal the same trials trained one at a time (within float rounding)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import superbench.executors as executors
from downstreams.utterance import ClassificationObjective, StackedUtteranceHeads, UtteranceHead
from superbench.manifest import Fold
from superbench.recipe import TrainConfig
from superbench.records import read_record, record_path
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import Interrupted, ToneUpstream, make_class_corpus, scratch_run_options
from superbench.training import TrainingError, train
from superbench.trial_group import (
    StackedAdam,
    Trial,
    clip_stacked_,
    rows_per_update,
    train_group,
)

L, D, C, N = 4, 24, 3, 150


class PooledSource:
    """Well-conditioned pooled features (L, N, D) with a class signal; `batch` like the utterance cache."""

    def __init__(self, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, C, (N,), generator=g)
        self.x = torch.randn(L, N, D, generator=g) + 0.5 * torch.randn(L, C, D, generator=g)[:, self.y]
        self.ids = [f"u{i}" for i in range(N)]
        self.pos = {u: i for i, u in enumerate(self.ids)}

    def batch(self, ids):
        rows = torch.tensor([self.pos[u] for u in ids])
        return self.x[:, rows], torch.full((len(ids),), 7)

    def split(self, a: int, b: int):
        return self.ids[a:b], self.y[a:b].tolist()


def _trials(src: PooledSource, base: TrainConfig) -> list[Trial]:
    """lr grid x 2 seeds x 2 'folds' (different training rows, different dev sets), as a real sweep."""
    folds = [(src.split(0, 90), src.split(90, 120), src.split(120, 150)),
             (src.split(30, 120), src.split(0, 30), src.split(120, 150))]
    return [Trial(dataclasses.replace(base, lr=lr, seed=seed), *fold, desc=f"lr {lr} seed {seed} fold {f}")
            for lr in (3e-4, 3e-3) for seed in (0, 1) for f, fold in enumerate(folds)]


def _head(layer=None):
    return lambda: UtteranceHead(L, D, C, proj_dim=16, layer=layer)


def _assert_same(sequential, grouped):
    for a, b in zip(sequential, grouped, strict=True):
        assert (a.dev, a.test, a.best_step, a.history, a.lr) == (b.dev, b.test, b.best_step, b.history, b.lr)
        assert a.predictions == b.predictions
        assert a.head_state.keys() == b.head_state.keys()
        for name in a.head_state:
            torch.testing.assert_close(a.head_state[name], b.head_state[name], rtol=0, atol=1e-5)
        assert a.layer_weights == pytest.approx(b.layer_weights, abs=2e-6)  # both rounded to 6 decimals


@pytest.mark.parametrize("layer", [None, 2])
@pytest.mark.parametrize(("accum", "balanced"), [(1, True), (2, False)])
def test_group_equals_one_trial_at_a_time(layer, accum, balanced):
    src = PooledSource()
    base = TrainConfig(steps=60, batch_size=8, lr=1e-3, eval_interval=20, grad_accum=accum,
                       balanced_sampling=balanced)
    trials = _trials(src, base)
    objective = ClassificationObjective()
    sequential = [train(_head(layer), objective, src, t.train, t.dev, t.test, t.cfg, progress=False) for t in trials]
    grouped = train_group(_head(layer), StackedUtteranceHeads, objective, src, trials, progress=False)
    _assert_same(sequential, grouped)
    assert len({r.test for r in grouped}) > 1  # the trials really differ (not one result copied)


def test_group_follows_the_lr_schedule_and_balanced_dev_as_training_does():
    src = PooledSource(seed=3)
    base = TrainConfig(steps=40, batch_size=8, lr=1e-3, eval_interval=10, scheduler="linear_schedule_with_warmup",
                       warmup_steps=10, balanced_dev=True)
    trials = _trials(src, base)[:4]
    objective = ClassificationObjective()
    sequential = [train(_head(), objective, src, t.train, t.dev, t.test, t.cfg, progress=False) for t in trials]
    _assert_same(sequential, train_group(_head(), StackedUtteranceHeads, objective, src, trials, progress=False))


@pytest.mark.parametrize("proj_dim", [16, 4])  # 16: through W2 W1 (C (P + B) < B P), 4: layer by layer
def test_hand_written_backward_equals_autograd(proj_dim):
    torch.manual_seed(0)
    heads = [UtteranceHead(L, D, C, proj_dim=proj_dim) for _ in range(3)]
    for h in heads:  # non-zero layer weights and biases, so every term of the backward is exercised
        torch.nn.init.normal_(h.featurizer.weights)
        torch.nn.init.normal_(h.projector.bias)
    stacked = StackedUtteranceHeads(heads)
    x = torch.randn(L, 3, 5, D)  # per-trial rows
    y = torch.randint(0, C, (3, 5))
    loss, grads = stacked.loss_and_grads(x, y)
    shared_loss, shared_grads = stacked.loss_and_grads(x[:, 0], y)  # every trial reads trial 0's rows
    for k, head in enumerate(heads):
        for rows, got_loss, got in ((x[:, k], loss, grads), (x[:, 0], shared_loss, shared_grads)):
            head.zero_grad()
            expected = torch.nn.functional.cross_entropy(head(rows), y[k])
            expected.backward()
            assert got_loss[k].item() == pytest.approx(expected.item(), rel=1e-6)
            params = [head.featurizer.weights, head.projector.weight, head.projector.bias, head.classifier.weight,
                      head.classifier.bias]
            for g, p in zip(got, params, strict=True):
                torch.testing.assert_close(g[k], p.grad, rtol=1e-5, atol=1e-6)


def test_stacked_adam_and_clip_equal_torch_per_trial():
    torch.manual_seed(0)
    lrs = [1e-3, 1e-2, 1e-1]
    stacked = [torch.randn(3, 4, 5), torch.randn(3, 7)]
    singles = [[p[k].clone().requires_grad_() for p in stacked] for k in range(3)]
    optimizers = [torch.optim.Adam(params, lr=lr) for params, lr in zip(singles, lrs)]
    adam = StackedAdam(stacked, lrs)
    for _ in range(25):
        grads = [torch.randn_like(p) * 3 for p in stacked]
        expected_norms = []
        for k in range(3):
            for p, g in zip(singles[k], grads):
                p.grad = g[k].clone()
            expected_norms.append(torch.nn.utils.clip_grad_norm_(singles[k], 1.0).item())
            optimizers[k].step()
        assert clip_stacked_(grads, 1.0).tolist() == pytest.approx(expected_norms, rel=1e-6)
        adam.step(grads)
        for k in range(3):
            for p, single in zip(stacked, singles[k]):
                torch.testing.assert_close(p[k], single.detach(), rtol=1e-6, atol=1e-7)


class DyingHeads(StackedUtteranceHeads):
    """Stacked heads that 'get killed' after `limit` updates (class attribute, reset by the test)."""

    limit: int | None = None
    calls = 0

    def loss_and_grads(self, x, targets):
        DyingHeads.calls += 1
        if DyingHeads.limit is not None and DyingHeads.calls > DyingHeads.limit:
            raise Interrupted
        return super().loss_and_grads(x, targets)


def test_an_interrupted_group_resumes_to_the_same_results(tmp_path):
    src = PooledSource()
    trials = _trials(src, TrainConfig(steps=60, batch_size=8, lr=1e-3, eval_interval=20))
    objective = ClassificationObjective()
    whole = train_group(_head(), StackedUtteranceHeads, objective, src, trials, progress=False)
    checkpoint = tmp_path / "group.pt"
    DyingHeads.limit, DyingHeads.calls = 45, 0
    with pytest.raises(Interrupted):
        train_group(_head(), DyingHeads, objective, src, trials, progress=False, checkpoint=checkpoint)
    assert checkpoint.is_file()  # the state of step 40 is on disk
    DyingHeads.limit, DyingHeads.calls = None, 0
    resumed = train_group(_head(), DyingHeads, objective, src, trials, progress=False, checkpoint=checkpoint)
    assert DyingHeads.calls == 20  # steps 41..60 only
    for a, b in zip(whole, resumed, strict=True):
        assert (a.dev, a.test, a.best_step, a.history, a.predictions) == \
            (b.dev, b.test, b.best_step, b.history, b.predictions)
        assert all(torch.equal(a.head_state[k], b.head_state[k]) for k in a.head_state)


def test_a_non_finite_loss_names_the_trial_and_step():
    src = PooledSource()
    src.x[:, 5] = float("nan")
    trials = _trials(src, TrainConfig(steps=30, batch_size=8, lr=1e-3, eval_interval=10))
    with pytest.raises(TrainingError, match=r"loss is nan at step \d+ \(lr=0\.000\d+\)"):
        train_group(_head(), StackedUtteranceHeads, ClassificationObjective(), src, trials, progress=False)


def test_unequal_batches_are_refused_with_the_reason():
    src = PooledSource()
    cfg = TrainConfig(steps=10, batch_size=64, lr=1e-3, eval_interval=5)
    small = Trial(cfg, src.split(0, 40), src.split(40, 50), src.split(50, 60))
    large = Trial(dataclasses.replace(cfg, seed=1), src.split(0, 100), src.split(100, 120), src.split(120, 150))
    with pytest.raises(ValueError, match=r"equal batches; these read \[40, 64\] rows per update"):
        rows_per_update([small, large])
    with pytest.raises(ValueError, match="must share `steps`"):
        rows_per_update([small, Trial(dataclasses.replace(cfg, steps=11), *([src.split(0, 100)] * 3))])


def test_runner_groups_a_sweep_and_its_records_equal_one_trial_at_a_time(tmp_path, monkeypatch):
    folds = [Fold("fold1", "train", "dev", "test"), Fold("fold2", "train", "test", "dev")]
    make_class_corpus(tmp_path, task="er", per_class=(12, 4, 4), folds=folds)
    groups = []
    real_group = executors.train_group

    def counting(make_head, stack, objective, source, trials, **kw):
        groups.append(len(trials))
        return real_group(make_head, stack, objective, source, trials, **kw)

    monkeypatch.setattr(executors, "train_group", counting)
    # Well-conditioned (small lrs) so float rounding cannot grow into a different score
    over = {"steps": 40, "eval_interval": 20, "batch_size": 8, "lr_grid": [1e-4, 1e-3]}
    records = {}
    for grouped in (True, False):
        opts = scratch_run_options(tmp_path / str(grouped), overrides=over, seeds=2, group_trials=grouped)
        records[grouped] = run(ToneUpstream(), [get_task("er")], tmp_path, opts)
    assert groups == [2 * 2 * 2]  # 2 lrs x 2 seeds x 2 folds in one group; the sequential run made none
    for a, b in zip(records[True], records[False], strict=True):
        assert (a.test, a.dev, a.lr, a.folds) == (b.test, b.dev, b.lr, b.folds)
        assert [(t["lr"], t["fold"], t["dev"], t["test"], t["best_step"], t["history"]) for t in a.trials] == \
            [(t["lr"], t["fold"], t["dev"], t["test"], t["best_step"], t["history"]) for t in b.trials]
        assert a.layer_weights == pytest.approx(b.layer_weights, abs=1e-5)
        on_disk = read_record(record_path(tmp_path / "True" / "results", a.run_key()))
        assert on_disk.artifacts.keys() == {"head.fold1", "head.fold2", "predictions"}

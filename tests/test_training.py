"""Training protocol: determinism, best-dev checkpoint selection, NaN stop, class-balanced sampling."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from downstreams import ClassificationObjective, UtteranceHead
from superbench.recipe import TrainConfig
from superbench.testing import Interrupted, InterruptingSource, RecordingObjective
from superbench.training import TrainingError, train
from superbench.training import batch_stream as _batches


def _run(cache, data, seed, lr=1e-2, steps=60):
    cfg = TrainConfig(steps=steps, batch_size=8, lr=lr, eval_interval=20, seed=seed)
    return train(lambda: UtteranceHead(3, 16, 3, proj_dim=16), ClassificationObjective(), cache,
                 data("train"), data("dev"), data("test"), cfg, progress=False)


def test_same_seed_same_result_and_it_learns(tone_task):
    cache, data = tone_task
    a, b = _run(cache, data, seed=1), _run(cache, data, seed=1)
    assert (a.dev, a.test, a.layer_weights, a.history) == (b.dev, b.test, b.layer_weights, b.history)
    assert a.test > 100 / 3 + 20  # 3 tone classes: far above chance
    c = _run(cache, data, seed=2)
    assert c.layer_weights != a.layer_weights  # the seed really reaches init and batches
    assert abs(sum(a.layer_weights) - 1) < 1e-5


def test_best_dev_checkpoint_is_kept(tone_task):
    cache, data = tone_task
    r = _run(cache, data, seed=0)
    assert r.dev == max(d for _, d in r.history)
    assert r.best_step == next(s for s, d in r.history if d == r.dev)  # first step reaching the best


def test_non_finite_loss_stops_naming_the_step(tone_task):
    cache, data = tone_task

    class Exploding(ClassificationObjective):
        """Finite for the first two training batches, NaN from the third on."""

        calls = 0

        def loss(self, output, lengths, targets):
            self.calls += 1
            return super().loss(output, lengths, targets) * (float("nan") if self.calls >= 3 else 1.0)

    obj = Exploding()
    cfg = TrainConfig(steps=10, batch_size=4, lr=1e-3, eval_interval=5, seed=0)
    with pytest.raises(TrainingError, match="loss is nan at step 3 "):
        train(lambda: UtteranceHead(3, 16, 3, proj_dim=8), obj, cache, data("train"), data("dev"),
              data("test"), cfg, progress=False)


def test_class_balanced_sampling_evens_out_a_skewed_set():
    ids = [str(i) for i in range(100)]
    targets = [0] * 90 + [1] * 10
    cfg = TrainConfig(steps=1, batch_size=50, lr=1.0, eval_interval=1, balanced_sampling=True)
    stream = _batches(ids, targets, cfg, torch.Generator().manual_seed(0))
    counts = Counter(t for _ in range(40) for t in next(stream)[1])
    assert 0.4 < counts[1] / (counts[0] + counts[1]) < 0.6
    plain = _batches(ids, targets, TrainConfig(steps=1, batch_size=50, lr=1.0, eval_interval=1),
                     torch.Generator().manual_seed(0))
    epoch = [t for _ in range(2) for t in next(plain)[1]]
    assert Counter(epoch) == {0: 90, 1: 10}  # an epoch shuffle sees every example once


class DropoutHead(UtteranceHead):
    """Uses the global RNG during training, so a resume must restore it too."""

    def forward(self, x, lengths):
        return super().forward(torch.nn.functional.dropout(x, 0.3, self.training), lengths)


@pytest.mark.parametrize("balanced", [False, True])
def test_interrupted_training_resumes_to_the_same_result(tone_task, tmp_path, balanced):
    cache, data = tone_task
    cfg = TrainConfig(steps=60, batch_size=8, lr=1e-2, eval_interval=20, seed=3, eval_batch_size=5,
                      balanced_sampling=balanced)

    def run(source, checkpoint=None, key="k", objective=None):
        return train(lambda: DropoutHead(3, 16, 3, proj_dim=16), objective or ClassificationObjective(), source,
                     data("train"), data("dev"), data("test"), cfg, progress=False, checkpoint=checkpoint,
                     checkpoint_key=key)

    whole_losses, resumed_losses = (RecordingObjective(ClassificationObjective()) for _ in range(2))
    whole = run(cache, objective=whole_losses)
    ckpt = tmp_path / "trial.pt"
    with pytest.raises(Interrupted):
        run(InterruptingSource(cache, 50), ckpt)  # dies in step 51: the state saved at step 40 survives
    assert ckpt.is_file()
    counting = InterruptingSource(cache, 10**6)
    resumed = run(counting, ckpt, objective=resumed_losses)
    assert counting.calls == 20  # steps 41..60 only
    # same batches, same dropout masks, same parameters: the very same losses, bit for bit
    assert resumed_losses.losses == whole_losses.losses[40:]
    assert (resumed.dev, resumed.test, resumed.best_step, resumed.layer_weights, resumed.history) == \
        (whole.dev, whole.test, whole.best_step, whole.layer_weights, whole.history)
    # a state saved under another key (other data, recipe or seed) is never reused
    other = InterruptingSource(cache, 10**6)
    run(other, ckpt, key="another run")
    assert other.calls == 60


def test_a_checkpoint_of_the_earlier_untyped_format_is_not_resumed(tone_task, tmp_path, caplog):
    """A state saved before TrainState (an untyped dict per path) restarts the trial instead of being misread."""
    import logging
    from dataclasses import asdict

    from superbench.training import _save_checkpoint

    cache, data = tone_task
    cfg = TrainConfig(steps=40, batch_size=8, lr=1e-2, eval_interval=20, seed=3)
    ckpt = tmp_path / "trial.pt"
    _save_checkpoint(ckpt, {"key": "k", "config": asdict(cfg), "train_ids": len(data("train")[0]), "step": 20,
                            "best_dev": 99.0, "best_step": 20, "history": [(20, 99.0)], "seconds": 1.0})
    counting = InterruptingSource(cache, 10**6)
    with caplog.at_level(logging.INFO, logger="superbench.training"):
        result = train(lambda: UtteranceHead(3, 16, 3, proj_dim=16), ClassificationObjective(), counting,
                       data("train"), data("dev"), data("test"), cfg, progress=False, checkpoint=ckpt,
                       checkpoint_key="k")
    assert counting.calls == 40  # trained from step 1, not resumed at 21
    assert "saved in another format" in caplog.text
    assert [step for step, _ in result.history] == [20, 40] and result.dev != 99.0

"""Learning-rate schedule (s3prl's linear_schedule_with_warmup): values per step, validation, exact resume."""

from __future__ import annotations

import pytest
import torch

from downstreams import ClassificationObjective, UtteranceHead
from superbench.recipe import RecipeError, TrainConfig
from superbench.tasks import get_task
from superbench.testing import Interrupted, InterruptingSource
from superbench.training import lr_factor, train


def test_linear_schedule_with_warmup_by_hand():
    # s3prl: LambdaLR(lambda(c) = c / warmup for c < warmup, else (total - c) / (total - warmup)), stepped after
    # every optimiser step, so update k runs with lambda(k - 1)
    cfg = TrainConfig(steps=10, batch_size=1, lr=1.0, eval_interval=1, scheduler="linear_schedule_with_warmup",
                      warmup_steps=4)
    assert [lr_factor(cfg, k) for k in range(1, 11)] == [0.0, 0.25, 0.5, 0.75, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6,
                                                        1 / 6]
    plain = TrainConfig(steps=10, batch_size=1, lr=1.0, eval_interval=1)
    assert plain.scheduler == "none" and {lr_factor(plain, k) for k in range(1, 11)} == {1.0}
    no_warmup = TrainConfig(steps=4, batch_size=1, lr=1.0, eval_interval=1, scheduler="linear_schedule_with_warmup")
    assert [lr_factor(no_warmup, k) for k in range(1, 5)] == [1.0, 0.75, 0.5, 0.25]


def test_sqrt_decay_schedule_with_warmup_by_hand():
    # s3prl: lambda(c) = c / warmup for c < warmup, else 1 / sqrt(max(c, warmup)) (not normalised by the warm-up)
    cfg = TrainConfig(steps=10, batch_size=1, lr=1.0, eval_interval=1, scheduler="sqrt_decay_schedule_with_warmup",
                      warmup_steps=4)
    assert [lr_factor(cfg, k) for k in range(1, 9)] == pytest.approx(
        [0.0, 0.25, 0.5, 0.75, 1 / 2, 1 / 5 ** 0.5, 1 / 6 ** 0.5, 1 / 7 ** 0.5])
    no_warmup = TrainConfig(steps=4, batch_size=1, lr=1.0, eval_interval=1, scheduler="sqrt_decay_schedule_with_warmup")
    assert [lr_factor(no_warmup, k) for k in range(1, 5)] == pytest.approx([1.0, 1.0, 1 / 2 ** 0.5, 1 / 3 ** 0.5])


def test_bad_scheduler_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="scheduler must be one of none, linear_schedule_with_warmup, "
                       "sqrt_decay_schedule_with_warmup, got 'cosine'"):
        TrainConfig(steps=1, batch_size=1, lr=1.0, eval_interval=1, scheduler="cosine")
    with pytest.raises(ValueError, match="warmup_steps=5 needs a scheduler"):
        TrainConfig(steps=1, batch_size=1, lr=1.0, eval_interval=1, warmup_steps=5)
    with pytest.raises(ValueError, match="warmup_steps must be a non-negative integer"):
        TrainConfig(steps=1, batch_size=1, lr=1.0, eval_interval=1, scheduler="linear_schedule_with_warmup",
                    warmup_steps=-1)
    recipe = get_task("ks").load_recipe("ci")
    with pytest.raises(RecipeError, match="scheduler must be one of"):
        recipe.with_overrides({"train.scheduler": "linear"})
    # s3prl's configs all leave their scheduler block commented out: no recipe profile schedules the lr
    for task in ("pr", "asr", "ks", "sid", "er"):
        for profile in ("superb", "fast", "ci"):
            assert get_task(task).load_recipe(profile).train.scheduler == "none"


def _recording_adam(monkeypatch) -> list[float]:
    """The lr of every Adam step that follows (what the optimiser actually used)."""
    lrs: list[float] = []
    step = torch.optim.Adam.step

    def recording(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    return lrs


def test_training_applies_the_schedule_per_optimiser_step(tone_task, monkeypatch):
    cache, data = tone_task
    lrs = _recording_adam(monkeypatch)
    cfg = TrainConfig(steps=12, batch_size=4, grad_accum=2, lr=0.02, eval_interval=6, seed=0,
                      scheduler="linear_schedule_with_warmup", warmup_steps=4)
    train(lambda: UtteranceHead(3, 16, 3, proj_dim=8), ClassificationObjective(), cache, data("train"),
          data("dev"), data("test"), cfg, progress=False)
    expected = [0.02 * f for f in (0, 1 / 4, 2 / 4, 3 / 4, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=0)  # one value per update, not per accumulated batch


def test_interrupted_scheduled_training_resumes_to_the_same_result(tone_task, tmp_path, monkeypatch):
    cache, data = tone_task
    cfg = TrainConfig(steps=60, batch_size=8, lr=2e-2, eval_interval=20, seed=3, eval_batch_size=5,
                      scheduler="linear_schedule_with_warmup", warmup_steps=15)

    def run(source, checkpoint=None):
        return train(lambda: UtteranceHead(3, 16, 3, proj_dim=16), ClassificationObjective(), source,
                     data("train"), data("dev"), data("test"), cfg, progress=False, checkpoint=checkpoint,
                     checkpoint_key="k")

    lrs = _recording_adam(monkeypatch)
    whole = run(cache)
    whole_lrs = list(lrs)
    ckpt = tmp_path / "trial.pt"
    with pytest.raises(Interrupted):
        run(InterruptingSource(cache, 50), ckpt)  # dies in step 51: the state saved at step 40 survives
    lrs.clear()
    counting = InterruptingSource(cache, 10**6)
    resumed = run(counting, ckpt)
    assert counting.calls == 20
    assert lrs == whole_lrs[40:]  # the schedule continues where it stopped, not from warmup
    assert whole_lrs[0] == 0.0 and whole_lrs[15] == pytest.approx(2e-2)
    assert (resumed.dev, resumed.test, resumed.best_step, resumed.layer_weights, resumed.history) == \
        (whole.dev, whole.test, whole.best_step, whole.layer_weights, whole.history)

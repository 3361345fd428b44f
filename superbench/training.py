"""The SUPERB training protocol for one head: Adam, gradient clipping, periodic dev
evaluation, keep the best checkpoint on dev, evaluate that checkpoint on test.

Deterministic given the seed (same seed, same machine -> same score): the seed sets
the head's initialisation, dropout and a private generator that draws the batches.
A non-finite loss stops the run and names the step, instead of training on garbage.

s3prl options a recipe may turn on: a learning-rate schedule per optimiser step (`scheduler`,
s3prl's `linear_schedule_with_warmup` or `sqrt_decay_schedule_with_warmup`; its state is in the checkpoint) and
class-balanced dev accuracy (`balanced_dev`: the objective's `balanced_score` selects checkpoints; test stays plain),
and s3prl's length bucketing of PR/ASR (`bucketing`: batches of neighbours in length order, less padding).

Resumable: with a checkpoint path, the state (head, optimiser, RNG, best-so-far) is
saved atomically at every dev evaluation; a rerun after an interruption continues from
there and ends with the same result as an uninterrupted run (the batch stream is replayed
to the saved step, which costs index draws only). A checkpoint carries the blake2b of its
bytes; one that fails the check (a flipped bit, a torn copy) is never resumed: the trial
starts over, with a warning naming the file.

One loop, `fit_trials`, runs every training: `train` runs it with the `SingleHead` strategy (one
head, torch's optimiser and autograd), `superbench.trial_group.train_group` with a batched strategy
(K stacked heads); the schedule, dev selection (`TrialProgress`), the saved state (`TrainState`) and
its checkpoint format are this module's alone.

What `train` returns beyond the numbers (in memory only, never in `TrainResult.to_dict`): the
best (dev-selected) head's `state_dict` (`head_state`) and that head's predictions
(`predictions = {"dev": [...], "test": [...]}`, in the order of the ids given), so a caller can
keep the head and the per-utterance outputs behind the score. The dev predictions are those of
the dev evaluation that selected the head (kept in the resumable state too), not a re-run.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from superbench.device import to_device
from superbench.downstream import FeatureSource, Head, Objective
from superbench.io import read_sealed, seal_digest, write_sealed
from superbench.recipe import TrainConfig

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step."""


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of `cfg.lr` for optimiser step `step` (1-based), as s3prl's runner applies it.

    s3prl builds a LambdaLR from `schedulers.get_linear_schedule_with_warmup` (num_training_steps =
    total_steps) and calls `scheduler.step()` after each `optimizer.step()`, so update k runs with
    lambda(k - 1): the first update has lr 0 during warmup, exactly as there.
    """
    if cfg.scheduler == "none":
        return 1.0
    current = step - 1
    if current < cfg.warmup_steps:
        return float(current) / float(max(1, cfg.warmup_steps))
    if cfg.scheduler == "sqrt_decay_schedule_with_warmup":
        # s3prl's schedulers.get_sqrt_decay_schedule_with_warmup as written there: 1 / sqrt(step) after the
        # warm-up, not normalised by the warm-up's length (the factor drops from ~1 to 1/sqrt(warmup_steps))
        return 1.0 / math.sqrt(max(current, cfg.warmup_steps, 1))
    return max(0.0, float(cfg.steps - current) / float(max(1, cfg.steps - cfg.warmup_steps)))


def make_scheduler(optimizer: torch.optim.Optimizer,
                   cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The LambdaLR of `cfg.scheduler` on `optimizer` (None for "none"); step it once per optimiser step.

    Its state (the step count) goes into training checkpoints, so a resumed run continues the schedule.
    """
    if cfg.scheduler == "none":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda current: lr_factor(cfg, current + 1))


@dataclass
class TrainResult:
    dev: float
    test: float
    best_step: int
    steps: int
    lr: float
    layer_weights: list[float]
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)
    #: The best (dev-selected) head's state_dict; in memory only (not in `to_dict`), None when not at hand.
    head_state: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    #: That head's predictions {"dev": [...], "test": [...]}; in memory only (not in `to_dict`).
    predictions: dict[str, list] = field(default_factory=dict, repr=False, compare=False)
    #: The objective's secondary metrics of that head, {"dev": {"cer": ...}, "test": {...}}; {} when it has none.
    secondary: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Per-unit scores of that head's test predictions, {metric: UnitScores.to_dict()} (the objective's
    #: `unit_scores`; what the record's confidence interval resamples); {} when the objective has none.
    units: dict[str, dict[str, Any]] = field(default_factory=dict)

    #: Fields kept in memory only: a finished trial's JSON holds the numbers, not weights or outputs.
    MEMORY_ONLY = ("head_state", "predictions")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in self.MEMORY_ONLY}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainResult":
        data = {k: v for k, v in data.items() if k not in cls.MEMORY_ONLY}
        return cls(**{**data, "history": [tuple(h) for h in data.get("history", [])]})


def secondary_scores(objective: Objective, targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """The objective's secondary metrics of one split's predictions, as floats ({} for an objective that
    reports only its main metric)."""
    return {name: float(value) for name, value in objective.secondary_scores(list(targets), list(predictions)).items()}


def secondary_of_best(objective: Objective, dev: tuple[Sequence, Sequence],
                      test: tuple[Sequence, Sequence]) -> dict[str, dict[str, float]]:
    """{"dev": ..., "test": ...} secondary metrics of the selected head from its (targets, predictions)."""
    scores = {role: secondary_scores(objective, *pair) for role, pair in (("dev", dev), ("test", test))}
    return scores if any(scores.values()) else {}


def dev_scorer(objective: Objective, balanced: bool) -> Callable[[list, list], float]:
    """The metric that scores dev: `objective.score`, or its `balanced_score` when `balanced`
    (TrainConfig.balanced_dev); ValueError when the objective has no balanced score."""
    if not balanced:
        return objective.score
    if objective.balanced_score is None:
        raise ValueError(f"balanced_dev is set but {type(objective).__name__} has no balanced_score(targets, "
                         f"predictions); class-balanced dev accuracy is defined for classification only")
    return objective.balanced_score


def length_buckets(lengths: Sequence[int], batch_size: int, halve_above: int = 0) -> list[list[int]]:
    """s3prl's buckets (downstream/asr/dataset.py): indices sorted by descending length (stable: ties keep
    their order), cut into runs of `batch_size`; a full run whose longest utterance is above `halve_above`
    (0: never) becomes two halves. The last, shorter run is kept, so every index is in exactly one bucket."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for s in range(0, len(order), batch_size):
        run = order[s:s + batch_size]
        if halve_above and batch_size >= 2 and len(run) == batch_size and max(lengths[i] for i in run) > halve_above:
            buckets += [run[:batch_size // 2], run[batch_size // 2:]]
        else:
            buckets.append(run)
    return buckets


def batch_stream(ids: Sequence[str], targets: Sequence, cfg: TrainConfig, gen: torch.Generator,
             lengths: Sequence[int] | None = None) -> Iterator[tuple[list[str], list]]:
    """Endless stream of training batches: epoch shuffles, class-balanced draws (KS) or length buckets in
    a new order every epoch (`cfg.bucketing`, from the utterances' `lengths`). Only `gen` draws, so the
    stream is a function of the seed and replays exactly on resume."""
    if cfg.bucketing:
        if lengths is None or len(lengths) != len(ids):
            raise ValueError(f"bucketing needs one length per training utterance ({len(ids)} utterances, "
                             f"{'no' if lengths is None else len(lengths)} lengths)")
        return _bucket_stream(ids, targets, length_buckets(lengths, cfg.batch_size, cfg.bucket_halve_above), gen)
    return _draw_stream(ids, targets, cfg, gen)


def _bucket_stream(ids: Sequence[str], targets: Sequence, buckets: list[list[int]],
                   gen: torch.Generator) -> Iterator[tuple[list[str], list]]:
    """The buckets, reshuffled every epoch (s3prl's DataLoader: batch_size 1 over buckets, shuffle=True)."""
    while True:
        for b in torch.randperm(len(buckets), generator=gen).tolist():
            yield [ids[i] for i in buckets[b]], [targets[i] for i in buckets[b]]


def _draw_stream(ids: Sequence[str], targets: Sequence, cfg: TrainConfig,
                 gen: torch.Generator) -> Iterator[tuple[list[str], list]]:
    """Epoch shuffles (a last partial batch is dropped), or class-balanced draws with replacement."""
    n = len(ids)
    if cfg.balanced_sampling:
        classes = torch.as_tensor(targets, dtype=torch.long)
        counts = torch.bincount(classes).double()
        weights = 1.0 / counts[classes]
        while True:
            idx = torch.multinomial(weights, cfg.batch_size, replacement=True, generator=gen).tolist()
            yield [ids[i] for i in idx], [targets[i] for i in idx]
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n - cfg.batch_size + 1 if n >= cfg.batch_size else 1, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            yield [ids[i] for i in idx], [targets[i] for i in idx]


def predict(head: Head, objective: Objective, source: FeatureSource, ids: Sequence[str],
            batch_size: int = 32) -> list:
    """Predictions of `head` on `ids`, in their order, batches on the head's device (in eval mode, then back)."""
    device = next(head.parameters()).device
    head.eval()
    predictions: list = []
    with torch.no_grad():
        for s in range(0, len(ids), batch_size):
            x, frames = (to_device(t, device) for t in source.batch(ids[s:s + batch_size]))
            predictions.extend(objective.predict(head(x, frames), head.output_lengths(frames)))
    head.train()
    return predictions


def evaluate(head: Head, objective: Objective, source: FeatureSource, ids: Sequence[str],
             targets: Sequence, batch_size: int = 32, balanced: bool = False) -> tuple[float, list]:
    """Metric (percent) and predictions of `head` on `ids`; `balanced` scores with the objective's
    class-balanced metric (dev under TrainConfig.balanced_dev)."""
    score = dev_scorer(objective, balanced)
    predictions = predict(head, objective, source, ids, batch_size)
    return score(list(targets), predictions), predictions


@dataclass
class Trial:
    """One head to train: its config (lr, seed, schedule), its data as (ids, targets) per split, a name for
    messages and its identity (the runner's trial key), which a saved state must match to be resumed."""

    cfg: TrainConfig
    train: tuple[Sequence[str], Sequence]
    dev: tuple[Sequence[str], Sequence]
    test: tuple[Sequence[str], Sequence]
    desc: str = ""
    key: str = ""

    def identity(self) -> dict[str, Any]:
        """What a saved state of this trial must have been saved under (key, config, training-set size)."""
        return {"key": self.key, "config": asdict(self.cfg), "train": len(self.train[0])}


#: TrainConfig fields that may differ between trials trained together: only the learning rate and the seed.
_PER_TRIAL = ("lr", "seed", "lr_grid")


def shared_schedule(trials: Sequence[Trial]) -> TrainConfig:
    """The schedule every trial of one loop follows, or ValueError naming the field that differs."""
    if not trials:
        raise ValueError("a trial group needs at least one trial")
    first = asdict(trials[0].cfg)
    for t in trials[1:]:
        for name, value in asdict(t.cfg).items():
            if name not in _PER_TRIAL and value != first[name]:
                raise ValueError(f"trials of one group must share `{name}` ({first[name]!r} vs {value!r})")
    return trials[0].cfg


def non_finite_loss(desc: str, loss: float, step: int, lr: float) -> TrainingError:
    """The error that stops a trial whose loss is not finite, naming the trial, the step and its lr."""
    return TrainingError(f"{desc}: loss is {loss} at step {step} (lr={lr:g}); "
                         f"try a smaller learning rate or check the features")


@dataclass
class TrialProgress:
    """One trial's dev evaluations so far and the best of them: the head that will be scored on test.

    `best_state` is the strategy's snapshot of that head; `best_predictions` its dev predictions (those
    of the evaluation that selected it, never a re-run). The first evaluation always becomes the best;
    a later one only when strictly better, so ties keep the earliest step.
    """

    history: list[tuple[int, float]] = field(default_factory=list)
    best_dev: float = math.nan
    best_step: int = 0
    best_state: Any = None
    best_predictions: list | None = None

    def observe(self, step: int, dev: float, predictions: list, higher_is_better: bool,
                snapshot: Callable[[], Any]) -> None:
        """Add the dev score of `step`; keep a snapshot of the head when it is the best so far."""
        self.history.append((step, dev))
        better = dev > self.best_dev if higher_is_better else dev < self.best_dev
        if self.best_state is None or better:
            self.best_dev, self.best_step = dev, step
            self.best_state, self.best_predictions = snapshot(), predictions


#: Version of the payload a training checkpoint holds (TrainState.to_payload); a state saved in another
#: format (e.g. before TrainState: untyped dicts, per path) is not resumed, the trial starts over.
TRAIN_STATE_FORMAT = 2


@dataclass
class TrainState:
    """Where a loop is: the last finished step, the time spent, each trial's progress, and the strategy's
    own state (weights, optimiser, RNG) at that step. Saved at every dev evaluation before the last."""

    trials: list[TrialProgress]
    step: int = 0
    seconds: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """Plain containers and tensors only, so `torch.load(weights_only=True)` reads it back."""
        return {"format": TRAIN_STATE_FORMAT, "step": self.step, "seconds": self.seconds, "model": self.model,
                "trials": [{"history": [list(h) for h in t.history], "best_dev": t.best_dev,
                            "best_step": t.best_step, "best_state": t.best_state,
                            "best_predictions": t.best_predictions} for t in self.trials]}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> "TrainState":
        trials = [TrialProgress(history=[(int(s), float(d)) for s, d in t["history"]], best_dev=t["best_dev"],
                                best_step=t["best_step"], best_state=t["best_state"],
                                best_predictions=t["best_predictions"]) for t in data["trials"]]
        return cls(trials=trials, step=int(data["step"]), seconds=float(data["seconds"]), model=data["model"])


class Strategy(Protocol):
    """How the loop's trials compute: one head at a time (`SingleHead`) or K heads stacked into one batched
    computation (`superbench.trial_group.StackedGroup`). The loop owns the schedule, dev selection, the state
    and its checkpoints; a strategy owns the weights, the optimiser and the batch streams."""

    #: Part of the checkpoint key: a state saved by one strategy is never resumed by another.
    name: str

    def identity(self) -> dict[str, Any]:
        """What a saved state must match beyond the trials' own identities ({} when nothing)."""
        ...

    def update(self, first: int, last: int, on_step: Callable[[], Any]) -> float:
        """Optimiser steps `first`..`last` (1-based, inclusive) of every trial; the last loss (for display).
        Raises `TrainingError` (see `non_finite_loss`) on a non-finite loss."""
        ...

    def predict(self, role: str) -> list[list]:
        """Each trial's predictions on its "dev" or "test" split, in the order of its ids."""
        ...

    def snapshot(self, k: int) -> Any:
        """A copy of trial k's head as it is now (what `load_best` takes back)."""
        ...

    def state(self) -> dict[str, Any]:
        """Weights, optimiser and RNG now: what `restore` needs to continue exactly."""
        ...

    def restore(self, state: dict[str, Any], step: int) -> None:
        """Continue from `state`, saved after `step` steps (the batch streams are replayed to there)."""
        ...

    def load_best(self, snapshots: Sequence[Any]) -> None:
        """Put each trial's selected snapshot back, to be scored on test."""
        ...

    def head_state(self, k: int) -> dict[str, torch.Tensor]:
        """Trial k's head as the single head's `state_dict`."""
        ...

    def layer_weights(self, k: int) -> list[float]:
        """Trial k's normalised layer weights."""
        ...


def fit_trials(trials: Sequence[Trial], objective: Objective, build: Callable[[], Strategy], progress: bool = True,
               desc: str = "train", checkpoint: Path | None = None) -> list[TrainResult]:
    """The SUPERB loop over `trials` (one shared schedule), computed by the strategy `build` returns:
    updates up to each dev evaluation, the best dev head of each trial kept, the state saved, each
    selected head scored on test. One TrainResult per trial, in order; a trial's `seconds` is its share
    of the loop's wall time. With `checkpoint`, an interrupted loop resumes from its last evaluation
    and ends with the same results as an uninterrupted one."""
    start = time.perf_counter()
    cfg = shared_schedule(trials)
    dev_score = dev_scorer(objective, cfg.balanced_dev)  # a config the objective cannot score fails before work
    strategy = build()
    key = {"strategy": strategy.name, "trials": [t.identity() for t in trials], **strategy.identity()}
    state = _load_state(checkpoint, key, len(trials)) if checkpoint is not None else None
    if state is None:
        state = TrainState(trials=[TrialProgress() for _ in trials])
    else:
        strategy.restore(state.model, state.step)
        log.info("%s: resuming %d trial(s) at step %d of %d from %s", desc, len(trials), state.step + 1, cfg.steps,
                 checkpoint)
    spent = state.seconds
    # disable=None lets tqdm switch itself off when stderr is not a terminal (CI logs).
    bar = tqdm(total=cfg.steps, initial=state.step, desc=desc, unit="step", disable=None if progress else True,
               leave=False)
    while state.step < cfg.steps:
        step = state.step + 1
        stop = min(cfg.steps, ((step - 1) // cfg.eval_interval + 1) * cfg.eval_interval)
        loss = strategy.update(step, stop, lambda: bar.update(1))
        devs = []
        for k, (trial, predictions) in enumerate(zip(trials, strategy.predict("dev"))):
            devs.append(dev_score(list(trial.dev[1]), predictions))
            state.trials[k].observe(stop, devs[-1], predictions, objective.higher_is_better,
                                    lambda k=k: strategy.snapshot(k))
        state.step = stop
        bar.set_postfix(loss=f"{loss:.3f}", dev=f"{(max if objective.higher_is_better else min)(devs):.1f}")
        log.debug("%s step %d loss %.4f dev %s %s", desc, stop, loss, objective.metric, [round(d, 2) for d in devs])
        if checkpoint is not None and stop < cfg.steps:
            state.seconds, state.model = spent + time.perf_counter() - start, strategy.state()
            _save_checkpoint(checkpoint, {"key": key, **state.to_payload()})
    bar.close()
    strategy.load_best([t.best_state for t in state.trials])
    seconds = (spent + time.perf_counter() - start) / len(trials)
    results = []
    for k, (trial, best, test_predictions) in enumerate(zip(trials, state.trials, strategy.predict("test"))):
        dev_predictions = list(best.best_predictions or [])
        results.append(TrainResult(
            dev=best.best_dev, test=objective.score(list(trial.test[1]), test_predictions), best_step=best.best_step,
            steps=cfg.steps, lr=trial.cfg.lr, layer_weights=[round(w, 6) for w in strategy.layer_weights(k)],
            seconds=seconds, history=list(best.history), head_state=strategy.head_state(k),
            predictions={"dev": dev_predictions, "test": list(test_predictions)},
            secondary=secondary_of_best(objective, (trial.dev[1], dev_predictions), (trial.test[1], test_predictions))))
    return results


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class SingleHead:
    """One head trained alone (any head, any feature level): torch's Adam, the recipe's scheduler, and
    the head's own forward and autograd. The head is initialised on the CPU under the trial's seed, then
    moved to `device`, so its start is the same on every device; dropout draws from torch's global RNG,
    which the state saves (and CUDA's, on a GPU)."""

    name = "single"

    def __init__(self, make_head: Callable[[], Head], objective: Objective, source: FeatureSource,
                 trial: Trial, lengths: Sequence[int] | None = None, device: torch.device | str = "cpu") -> None:
        cfg = self.cfg = trial.cfg
        self.trial, self.objective, self.source, self.lengths = trial, objective, source, lengths
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.head = make_head().to(self.device)
        if not isinstance(self.head, Head):
            raise TypeError(f"{type(self.head).__name__} is not a superbench.head.Head: training reads its "
                            f"output_lengths and layer_weights (subclass Head, which gives both defaults)")
        self.head.train()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.params = [p for p in self.head.parameters() if p.requires_grad]
        # weight_decay > 0: AdamW's decoupled decay (s3prl's SE/SS optimiser); else Adam, as every SUPERB task
        self.optimizer = (torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.weight_decay
                          else torch.optim.Adam(self.params, lr=cfg.lr))
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.stream = batch_stream(list(trial.train[0]), list(trial.train[1]), cfg, gen, lengths)

    def identity(self) -> dict[str, Any]:
        # the buckets depend on the lengths: a state saved over other lengths is not replayed
        return {"train_lengths": seal_digest(repr([int(n) for n in self.lengths or ()]).encode())} \
            if self.cfg.bucketing else {}

    def update(self, first: int, last: int, on_step: Callable[[], Any]) -> float:
        cfg, head = self.cfg, self.head
        for step in range(first, last + 1):
            self.optimizer.zero_grad(set_to_none=True)
            for _ in range(cfg.grad_accum):
                ids, targets = next(self.stream)
                x, frames = (to_device(t, self.device) for t in self.source.batch(ids))
                loss = self.objective.loss(head(x, frames), head.output_lengths(frames), targets)
                if not torch.isfinite(loss):
                    raise non_finite_loss(self.trial.desc, loss.item(), step, cfg.lr)
                (loss / cfg.grad_accum).backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            on_step()
        return loss.item()

    def predict(self, role: str) -> list[list]:
        ids = self.trial.dev[0] if role == "dev" else self.trial.test[0]
        begin = getattr(self.objective, "begin_predictions", None)
        if begin is not None:  # duck-typed objectives may lack the hook
            begin(role)
        return [predict(self.head, self.objective, self.source, list(ids), self.cfg.eval_batch_size)]

    def snapshot(self, k: int) -> dict[str, torch.Tensor]:
        return _cpu_copy(self.head.state_dict())

    def state(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None}

    def restore(self, state: dict[str, Any], step: int) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for _ in range(step * self.cfg.grad_accum):  # replay the batch draws up to the saved step
            next(self.stream)
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:  # dropout masks drawn on the GPU
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def load_best(self, snapshots: Sequence[Any]) -> None:
        self.head.load_state_dict(snapshots[0])

    def head_state(self, k: int) -> dict[str, torch.Tensor]:
        return _cpu_copy(self.head.state_dict())

    def layer_weights(self, k: int) -> list[float]:
        return self.head.layer_weights()


def train(make_head: Callable[[], Head], objective: Objective, source: FeatureSource,
          train_data: tuple[Sequence[str], Sequence], dev_data: tuple[Sequence[str], Sequence],
          test_data: tuple[Sequence[str], Sequence], cfg: TrainConfig, progress: bool = True,
          desc: str = "train", checkpoint: Path | None = None, checkpoint_key: str = "",
          lengths: Sequence[int] | None = None, device: torch.device | str = "cpu") -> TrainResult:
    """Train a fresh head, select the best dev checkpoint, score it on test (`fit_trials` with `SingleHead`).

    `checkpoint` (optional) is where the state is kept between dev evaluations so that an
    interrupted run resumes; a saved state is used only if its `checkpoint_key` and config match.
    `lengths` (one per training utterance, in samples: the manifest's `num_samples`) builds the
    length buckets of `cfg.bucketing`; without bucketing it is not used. The head trains on `device`.
    """
    trial = Trial(cfg, train_data, dev_data, test_data, desc, checkpoint_key)
    (result,) = fit_trials([trial], objective, lambda: SingleHead(make_head, objective, source, trial, lengths, device),
                           progress=progress, desc=desc, checkpoint=checkpoint)
    return result


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save bytes, sealed (superbench.io.write_sealed), so a resume can tell a flipped bit or a torn
    copy from the state it saved."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_sealed(path, buffer.getbuffer())


def _load_checkpoint(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The saved payload if it is intact, in this version's format and belongs to this very run (same key),
    else None: a damaged, older or foreign state is never resumed, the trial starts over."""
    if not path.is_file():
        return None
    try:
        payload = read_sealed(path)
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or damaged: start over rather than fail the run
        log.warning("ignoring damaged training checkpoint %s, the trial restarts from scratch (%s)", path, exc)
        return None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        log.info("ignoring training checkpoint %s: saved in another format (format %s, this version reads %d); "
                 "the trial restarts from scratch", path, state.get("format", 1) if isinstance(state, dict) else "?",
                 TRAIN_STATE_FORMAT)
        return None
    if state.get("key") != key:
        log.info("ignoring training checkpoint %s: it belongs to another configuration", path)
        return None
    return state


def _load_state(path: Path, key: dict[str, Any], trials: int) -> TrainState | None:
    """The TrainState saved at `path` for this key, or None (then the loop starts from scratch)."""
    saved = _load_checkpoint(path, key)
    if saved is None:
        return None
    try:
        state = TrainState.from_payload(saved)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring training checkpoint %s, the trial restarts from scratch (incomplete state: %r)",
                    path, exc)
        return None
    if len(state.trials) != trials:
        log.info("ignoring training checkpoint %s: it holds %d trial(s), not %d", path, len(state.trials), trials)
        return None
    return state

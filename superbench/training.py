"""The SUPERB training protocol for one head: Adam, gradient clipping, periodic dev
evaluation, keep the best checkpoint on dev, evaluate that checkpoint on test.

Deterministic given the seed (same seed, same machine -> same score): the seed sets
the head's initialisation, dropout and a private generator that draws the batches.
A non-finite loss stops the run and names the step, instead of training on garbage.

s3prl options a recipe may turn on: a learning-rate schedule per optimiser step (`scheduler`,
s3prl's `linear_schedule_with_warmup`; its state is in the checkpoint) and class-balanced dev
accuracy (`balanced_dev`: the objective's `balanced_score` selects checkpoints; test stays plain), and
s3prl's length bucketing of PR/ASR (`bucketing`: batches of neighbours in length order, less padding).

Resumable: with a checkpoint path, the state (head, optimiser, RNG, best-so-far) is
saved atomically at every dev evaluation; a rerun after an interruption continues from
there and ends with the same result as an uninterrupted run (the batch stream is replayed
to the saved step, which costs index draws only). A checkpoint carries the blake2b of its
bytes; one that fails the check (a flipped bit, a torn copy) is never resumed: the trial
starts over, with a warning naming the file.

What `train` returns beyond the numbers (in memory only, never in `TrainResult.to_dict`): the
best (dev-selected) head's `state_dict` (`head_state`) and that head's predictions
(`predictions = {"dev": [...], "test": [...]}`, in the order of the ids given), so a caller can
keep the head and the per-utterance outputs behind the score. The dev predictions are those of
the dev evaluation that selected the head (kept in the resumable state too), not a re-run.
"""

from __future__ import annotations

import copy
import hashlib
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
from superbench.io import atomic_open

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step."""


class FeatureSource(Protocol):
    def batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


#: Learning-rate schedules `TrainConfig.scheduler` may name (s3prl's `scheduler.name`, or none at all).
SCHEDULERS = ("none", "linear_schedule_with_warmup")


@dataclass(frozen=True)
class TrainConfig:
    """The SUPERB protocol's knobs for one head (a recipe's `train` section, plus the seed of a trial)."""

    steps: int
    batch_size: int
    lr: float
    eval_interval: int
    lr_grid: tuple[float, ...] = ()  # swept on dev by the runner; empty = `lr` only
    grad_clip: float = 1.0
    grad_accum: int = 1
    balanced_sampling: bool = False  # class-balanced batches (s3prl's KS sampler)
    #: Dev metric that selects checkpoints: class-balanced accuracy (the expectation of s3prl's KS dev
    #: score on its class-balanced WeightedRandomSampler resample); test stays plain accuracy.
    balanced_dev: bool = False
    #: Learning-rate schedule per optimiser step: "none" or s3prl's "linear_schedule_with_warmup".
    scheduler: str = "none"
    warmup_steps: int = 0  # linear_schedule_with_warmup's num_warmup_steps
    eval_batch_size: int = 32
    #: s3prl's length bucketing (PR/ASR): batches are runs of `batch_size` consecutive utterances in
    #: descending length order, the order of those buckets reshuffled every epoch. Needs `train(lengths=...)`.
    bucketing: bool = False
    #: With bucketing, a full bucket whose longest utterance exceeds this many samples is split into two
    #: halves (s3prl's HALF_BATCHSIZE_TIME rule: 2000 for ASR, 300000 for libriphone); 0 never splits.
    bucket_halve_above: int = 0
    seed: int = field(default=0, metadata={"recipe": False})  # from --seeds, never from a recipe

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_interval", "grad_accum", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or any(not x > 0 for x in self.lr_grid):
            raise ValueError(f"lr and lr_grid values must be > 0 (lr {self.lr!r}, lr_grid {list(self.lr_grid)})")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if self.warmup_steps and self.scheduler == "none":
            raise ValueError(f"warmup_steps={self.warmup_steps} needs a scheduler (e.g. linear_schedule_with_warmup)")
        if self.bucketing and self.balanced_sampling:
            raise ValueError("bucketing and balanced_sampling exclude each other "
                             "(length buckets vs class-balanced draws)")
        halve = self.bucket_halve_above
        if isinstance(halve, bool) or not isinstance(halve, int) or halve < 0:
            raise ValueError(f"bucket_halve_above must be a non-negative integer, got {halve!r}")
        if halve and not self.bucketing:
            raise ValueError(f"bucket_halve_above={halve} needs bucketing: true")


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

    #: Fields kept in memory only: a finished trial's JSON holds the numbers, not weights or outputs.
    MEMORY_ONLY = ("head_state", "predictions")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in self.MEMORY_ONLY}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainResult":
        data = {k: v for k, v in data.items() if k not in cls.MEMORY_ONLY}
        return cls(**{**data, "history": [tuple(h) for h in data.get("history", [])]})


class Objective(Protocol):
    """Loss, prediction and metric for one kind of head (the task kinds provide them)."""

    metric: str
    higher_is_better: bool

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor: ...

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list: ...

    def score(self, targets: list, predictions: list) -> float: ...


def secondary_scores(objective: Objective, targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """The objective's secondary metrics (`secondary_scores(targets, predictions)`, e.g. SF's slot-value
    CER) of one split's predictions; {} for an objective that reports only its main metric."""
    scorer = getattr(objective, "secondary_scores", None)
    if not callable(scorer):
        return {}
    return {name: float(value) for name, value in scorer(list(targets), list(predictions)).items()}


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
    scorer = getattr(objective, "balanced_score", None)
    if not callable(scorer):
        raise ValueError(f"balanced_dev is set but {type(objective).__name__} has no balanced_score(targets, "
                         f"predictions); class-balanced dev accuracy is defined for classification only")
    return scorer


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


def _batches(ids: Sequence[str], targets: Sequence, cfg: TrainConfig, gen: torch.Generator,
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


def output_lengths(head: torch.nn.Module, lengths: torch.Tensor) -> torch.Tensor:
    """Frames the head emits per utterance; heads that downsample in time say so via `output_lengths`."""
    fn = getattr(head, "output_lengths", None)
    return fn(lengths) if fn is not None else lengths


def evaluate(head: torch.nn.Module, objective: Objective, source: FeatureSource, ids: Sequence[str],
             targets: Sequence, batch_size: int = 32, balanced: bool = False) -> tuple[float, list]:
    """Metric (percent) and predictions of `head` on `ids`; `balanced` scores with the objective's
    class-balanced metric (dev under TrainConfig.balanced_dev). Batches go to the head's device."""
    score = dev_scorer(objective, balanced)
    device = next(head.parameters()).device
    head.eval()
    predictions: list = []
    with torch.no_grad():
        for s in range(0, len(ids), batch_size):
            x, frames = (to_device(t, device) for t in source.batch(ids[s:s + batch_size]))
            predictions.extend(objective.predict(head(x, frames), output_lengths(head, frames)))
    head.train()
    return score(list(targets), predictions), predictions


def train(make_head: Callable[[], torch.nn.Module], objective: Objective, source: FeatureSource,
          train_data: tuple[Sequence[str], Sequence], dev_data: tuple[Sequence[str], Sequence],
          test_data: tuple[Sequence[str], Sequence], cfg: TrainConfig, progress: bool = True,
          desc: str = "train", checkpoint: Path | None = None, checkpoint_key: str = "",
          lengths: Sequence[int] | None = None, device: torch.device | str = "cpu") -> TrainResult:
    """Train a fresh head, select the best dev checkpoint, score it on test.

    `checkpoint` (optional) is where the state is kept between dev evaluations so that an
    interrupted run resumes; a saved state is used only if its `checkpoint_key` and config match.
    `lengths` (one per training utterance, in samples: the manifest's `num_samples`) builds the
    length buckets of `cfg.bucketing`; without bucketing it is not used. The head trains on `device`
    (initialised on the CPU under the seed first, so its start is the same on every device).
    """
    device = torch.device(device)
    start = time.perf_counter()
    dev_scorer(objective, cfg.balanced_dev)  # a config the objective cannot score fails before any work
    torch.manual_seed(cfg.seed)
    head = make_head().to(device)
    head.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg)
    stream = _batches(list(train_data[0]), list(train_data[1]), cfg, gen, lengths)
    better = (lambda a, b: a > b) if objective.higher_is_better else (lambda a, b: a < b)
    best_dev, best_step, best_state = math.nan, 0, None
    best_predictions: list | None = None  # the dev predictions of the best checkpoint
    history: list[tuple[int, float]] = []
    first_step, spent = 1, 0.0
    key = {"key": checkpoint_key, "config": asdict(cfg), "train_ids": len(train_data[0])}
    if cfg.bucketing:  # the buckets depend on the lengths: a state saved over other lengths is not replayed
        key["train_lengths"] = _digest(repr([int(n) for n in lengths or ()]).encode())
    saved = _load_checkpoint(checkpoint, key) if checkpoint is not None else None
    if saved is not None:
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        best_dev, best_step, best_state = saved["best_dev"], saved["best_step"], saved["best_state"]
        best_predictions = saved.get("best_predictions")  # absent in states saved before predictions were kept
        history, spent = [tuple(h) for h in saved["history"]], saved["seconds"]
        for _ in range(saved["step"] * cfg.grad_accum):  # replay the batch draws up to the saved step
            next(stream)
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:  # dropout masks drawn on the GPU
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        first_step = saved["step"] + 1
        log.info("%s: resuming at step %d of %d from %s", desc, first_step, cfg.steps, checkpoint)
    # disable=None lets tqdm switch itself off when stderr is not a terminal (CI logs).
    bar = tqdm(total=cfg.steps, initial=first_step - 1, desc=desc, unit="step", disable=None if progress else True,
               leave=False)
    for step in range(first_step, cfg.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        for _ in range(cfg.grad_accum):
            ids, targets = next(stream)
            x, frames = (to_device(t, device) for t in source.batch(ids))
            loss = objective.loss(head(x, frames), output_lengths(head, frames), targets)
            if not torch.isfinite(loss):
                raise TrainingError(f"{desc}: loss is {loss.item()} at step {step} (lr={cfg.lr:g}); "
                                    f"try a smaller learning rate or check the features")
            (loss / cfg.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        bar.update(1)
        if step % cfg.eval_interval == 0 or step == cfg.steps:
            dev, dev_predictions = evaluate(head, objective, source, list(dev_data[0]), dev_data[1],
                                            cfg.eval_batch_size, balanced=cfg.balanced_dev)
            history.append((step, dev))
            bar.set_postfix(loss=f"{loss.item():.3f}", dev=f"{dev:.1f}")
            log.debug("%s step %d loss %.4f dev %s %.2f", desc, step, loss.item(), objective.metric, dev)
            if best_state is None or better(dev, best_dev):
                best_dev, best_step = dev, step
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}
                best_predictions = dev_predictions
            if checkpoint is not None and step < cfg.steps:
                _save_checkpoint(checkpoint, {
                    **key, "step": step, "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "best_dev": best_dev, "best_step": best_step,
                    "best_state": best_state, "best_predictions": best_predictions, "history": history,
                    "seconds": spent + time.perf_counter() - start})
    bar.close()
    assert best_state is not None
    head.load_state_dict(best_state)
    test, test_predictions = evaluate(head, objective, source, list(test_data[0]), test_data[1], cfg.eval_batch_size)
    if best_predictions is None:  # resumed from a state that did not keep them: the same head, evaluated again
        _, best_predictions = evaluate(head, objective, source, list(dev_data[0]), dev_data[1], cfg.eval_batch_size)
    weights = head.featurizer.normalized_weights().detach().tolist()
    return TrainResult(dev=best_dev, test=test, best_step=best_step, steps=cfg.steps, lr=cfg.lr,
                       layer_weights=[round(w, 6) for w in weights], seconds=spent + time.perf_counter() - start,
                       history=history, head_state=best_state,
                       predictions={"dev": list(best_predictions), "test": list(test_predictions)},
                       secondary=secondary_of_best(objective, (dev_data[1], best_predictions),
                                                   (test_data[1], test_predictions)))


#: First bytes of a checkpoint: a digest line over the torch.save payload that follows it.
CHECKPOINT_MAGIC = b"superbench-checkpoint v1 blake2b="


def _digest(payload: bytes | memoryview) -> str:
    return hashlib.blake2b(payload, digest_size=32).hexdigest()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save bytes behind a line with their blake2b and size, in one atomic file, so a resume
    can tell a flipped bit or a torn copy from the state it saved (heads are small: held in memory)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    header = CHECKPOINT_MAGIC + f"{_digest(payload)} bytes={len(payload)}\n".encode()
    with atomic_open(path, "wb") as fh:
        fh.write(header)
        fh.write(payload)


def _read_checkpoint(path: Path) -> bytes:
    """The payload of a checkpoint, or ValueError saying why it cannot be trusted."""
    with open(path, "rb") as fh:
        header = fh.readline(200)
        payload = fh.read()
    if not header.startswith(CHECKPOINT_MAGIC) or not header.endswith(b"\n"):
        raise ValueError("no checksum header (not written by this version, or damaged at the start)")
    try:
        digest, size = header[len(CHECKPOINT_MAGIC):].decode("ascii").split()
        nbytes = int(size.removeprefix("bytes="))
    except ValueError as exc:
        raise ValueError(f"garbled checksum header {header[:120]!r}") from exc
    if len(payload) != nbytes:
        raise ValueError(f"{len(payload)} bytes after the header, the header says {nbytes} (truncated?)")
    if _digest(payload) != digest:
        raise ValueError("checksum mismatch (the file changed after it was written)")
    return payload


def _load_checkpoint(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state if it is intact and belongs to this very run (same key and config), else None:
    a damaged state is never resumed, the trial starts over."""
    if not path.is_file():
        return None
    try:
        payload = _read_checkpoint(path)
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or damaged: start over rather than fail the run
        log.warning("ignoring damaged training checkpoint %s, the trial restarts from scratch (%s)", path, exc)
        return None
    if not isinstance(state, dict) or any(state.get(k) != v for k, v in key.items()):
        log.info("ignoring training checkpoint %s: it belongs to another configuration", path)
        return None
    return state

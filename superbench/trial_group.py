"""Train many heads that read the same pooled features as one computation.

A sweep trains one head per (learning rate, seed, fold). For utterance-level tasks each head
sees only an (L, D) vector per utterance, so one update of one head is a few small matrix
products and Python/dispatch overhead dominates; the upstream's single extraction pass is the
real cost. Here the K trials of a sweep are one *group*: their parameters are stacked along a
leading K axis, the pooled features of every utterance are resident as one (L, N, D) tensor on
the device, each trial's batch indices are drawn up front (per evaluation interval), and one
update of the group is one set of batched products, one stacked gradient clip and one stacked
Adam step. Evaluation is fused too: one pass over the union of the trials' dev utterances.

This is not a second training loop: `StackedGroup` is a strategy of `superbench.training.fit_trials`,
the loop `training.train` runs with its `SingleHead`, so the schedule, dev selection, state and
checkpoints are the same code. Trial by trial: each trial's head is initialised under its own seed
exactly as the one-at-a-time path initialises it, draws its batches from its own generator with
the same sampler (`training.batch_stream`), runs all its updates, clips its own gradient norm, has
its own Adam state and learning rate, is evaluated on its own dev set every `eval_interval` updates
and keeps its own best dev checkpoint, which alone is scored on test. Only the floating-point
summation order differs, so batched and one-at-a-time training agree within float tolerance
(tests/test_trial_group.py).

What the task kind provides is a `StackedHeads` (the head's batched forward and backward, e.g.
`downstreams.utterance.StackedUtteranceHeads`); this module owns the stacked optimiser, the
resident features and the batched updates, and knows no task.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from superbench.training import (
    FeatureSource,
    Objective,
    TrainResult,
    Trial,
    batch_stream,
    fit_trials,
    lr_factor,
    non_finite_loss,
    shared_schedule,
)

__all__ = ["CHUNK_ROWS", "StackedAdam", "StackedGroup", "StackedHeads", "Trial", "clip_stacked_", "group_key",
           "resident_bytes", "resident_features", "rows_per_update", "shared_schedule", "train_group"]

log = logging.getLogger(__name__)

#: Rows per chunk when the resident features are built and when a group is evaluated.
CHUNK_ROWS = 1024


class StackedHeads(Protocol):
    """K heads of one architecture as stacked tensors (leading axis K), with a hand-written backward.

    `params` are the trainable tensors (K, ...); `loss_and_grads` takes features (L, K, B, D) or,
    when every trial draws the same rows, (L, B, D), and class targets (K, B); it returns each
    trial's mean loss (K,) and one gradient per tensor of `params`. `outputs` gives (K, U, C) for
    shared (L, U, D) features; `state_dict(k)` is trial k's head in the single head's own format.
    """

    params: list[torch.Tensor]

    def loss_and_grads(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def outputs(self, x: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self, k: int) -> dict[str, torch.Tensor]: ...

    def layer_weights(self, k: int) -> list[float]: ...


def rows_per_update(trials: Sequence[Trial]) -> int:
    """Training rows one update of each trial reads (grad_accum batches), or ValueError when the trials
    differ (a training split smaller than the batch gives smaller batches), as a group needs them equal."""
    cfg = shared_schedule(trials)
    sizes = {cfg.grad_accum * (cfg.batch_size if cfg.balanced_sampling else min(cfg.batch_size, len(t.train[0])))
             for t in trials}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"trials of one group must read equal batches; these read {sorted(sizes)} rows per update "
                         f"(a training split smaller than batch_size {cfg.batch_size})")
    return sizes.pop()


def resident_features(source: FeatureSource, ids: Sequence[str],
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled features of `ids` as one (L, N, D) tensor on `device`, and their frame counts (N,)."""
    parts, lengths = [], []
    for s in range(0, len(ids), CHUNK_ROWS):
        x, n = source.batch(list(ids[s:s + CHUNK_ROWS]))
        if x.dim() != 3:
            raise ValueError(f"grouped training needs pooled (L, B, D) features, the source gives {tuple(x.shape)}")
        parts.append(x.to(device=device, dtype=torch.float32))
        lengths.append(n)
    return torch.cat(parts, dim=1).contiguous(), torch.cat(lengths)


def resident_bytes(num_utterances: int, num_layers: int, hidden_size: int) -> int:
    """Memory the resident features of a group take (float32)."""
    return num_utterances * num_layers * hidden_size * 4


class StackedAdam:
    """Adam (torch's defaults: betas 0.9/0.999, eps 1e-8, no weight decay) on stacked tensors, one lr per trial.

    Runs torch's fused Adam kernel once per trial on that trial's slices (one pass over memory instead of
    eight elementwise passes); it computes the same update as `torch.optim.Adam` up to float rounding.
    """

    def __init__(self, params: list[torch.Tensor], lrs: Sequence[float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = params
        self.lrs = [float(lr) for lr in lrs]
        self.betas, self.eps = betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = [[torch.zeros((), dtype=torch.float32, device=params[0].device) for _ in params]
                      for _ in self.lrs]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor], lr_scale: float = 1.0) -> None:
        """One update of every trial; `lr_scale` is the schedule's factor for this step (shared by the group)."""
        for k, lr in enumerate(self.lrs):
            torch._foreach_add_(self.steps[k], 1)  # as torch.optim.Adam does before its fused kernel
            torch._fused_adam_([p[k] for p in self.params], [g[k] for g in grads], [m[k] for m in self.exp_avg],
                               [v[k] for v in self.exp_avg_sq], [], self.steps[k], lr=lr * lr_scale,
                               beta1=self.betas[0],
                               beta2=self.betas[1], weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)

    def state(self) -> dict:
        return {"steps": [[float(t) for t in row] for row in self.steps],
                "exp_avg": [m.clone() for m in self.exp_avg], "exp_avg_sq": [v.clone() for v in self.exp_avg_sq]}

    def load(self, state: dict) -> None:
        for row, saved in zip(self.steps, state["steps"]):
            for t, value in zip(row, saved):
                t.fill_(value)
        for dst, src in zip(self.exp_avg + self.exp_avg_sq, list(state["exp_avg"]) + list(state["exp_avg_sq"])):
            dst.copy_(src)


@torch.no_grad()
def clip_stacked_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Each trial's gradient scaled as `torch.nn.utils.clip_grad_norm_` scales one head's; returns the (K,) norms."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads])  # (P, K)
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return total


def group_key(trials: Sequence[Trial]) -> str:
    """Identity of a group's saved state: its members' keys and configs, in order."""
    what = [t.identity() for t in trials]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


class StackedGroup:
    """The batched strategy of `training.fit_trials`: K heads stacked (leading axis K) on resident pooled
    features; per update one set of batched products, one stacked clip and one stacked Adam step, each
    trial's batch indices drawn up front per evaluation interval; evaluation one pass over the union of
    the trials' rows. Checks its trials first (equal batches, class targets for balanced sampling)."""

    name = "stacked"

    def __init__(self, make_head: Callable[[], torch.nn.Module], stack: Callable[[list[torch.nn.Module]], StackedHeads],
                 objective: Objective, source: FeatureSource, trials: Sequence[Trial],
                 device: torch.device | str = "cpu", desc: str = "train") -> None:
        self.desc = desc
        cfg = self.cfg = shared_schedule(trials)
        self.per_step = rows_per_update(trials)
        if cfg.balanced_sampling and any(not all(isinstance(y, int) for y in t.train[1]) for t in trials):
            raise ValueError("balanced_sampling needs class-index targets")
        self.trials, self.objective = list(trials), objective
        # Resident features: every utterance any trial reads, once.
        all_ids: list[str] = []
        row: dict[str, int] = {}
        for t in trials:
            for split in (t.train, t.dev, t.test):
                for uid in split[0]:
                    if uid not in row:
                        row[uid] = len(all_ids)
                        all_ids.append(uid)
        self.feats, self.lengths = resident_features(source, all_ids, device)
        # Heads initialised exactly as the one-at-a-time path does it: the trial's seed, then make_head().
        heads = []
        for t in trials:
            torch.manual_seed(t.cfg.seed)
            heads.append(make_head().to(device))  # initialised on the CPU, as one-at-a-time training does
        self.stacked = stack(heads)
        self.optimizer = StackedAdam(self.stacked.params, [t.cfg.lr for t in trials])
        self.streams = [batch_stream([row[u] for u in t.train[0]], list(t.train[1]), t.cfg,
                                     torch.Generator().manual_seed(t.cfg.seed)) for t in trials]
        self.rows = {role: _EvalRows([[row[u] for u in getattr(t, role)[0]] for t in trials], self.feats.device)
                     for role in ("dev", "test")}

    def identity(self) -> dict[str, Any]:
        return {}

    def update(self, first: int, last: int, on_step: Callable[[], Any]) -> float:
        cfg, feats, k_trials, per_step = self.cfg, self.feats, len(self.trials), self.per_step
        span = last - first + 1
        # Draw the indices of every update of the span, for every trial, up front.
        rows_drawn, targets_drawn = [], []
        for stream in self.streams:
            rows_k: list[int] = []
            targets_k: list = []
            for _ in range(span * cfg.grad_accum):
                r, y = next(stream)
                rows_k += r
                targets_k += y
            rows_drawn.append(rows_k)
            targets_drawn.append(targets_k)
        # (span, K, rows): each update's indices contiguous in memory
        index = torch.tensor(rows_drawn, dtype=torch.long).view(k_trials, span, per_step).transpose(0, 1)
        targets = torch.tensor(targets_drawn, dtype=torch.long).view(k_trials, span, per_step).transpose(0, 1)
        shared = bool((index == index[:, :1]).all())  # one seed across an lr grid: the same rows for all trials
        index = index.contiguous().to(feats.device)
        targets = targets.contiguous().to(feats.device)
        for i, step in enumerate(range(first, last + 1)):
            rows = index[i]
            x = (feats.index_select(1, rows[0]) if shared
                 else feats.index_select(1, rows.flatten()).view(feats.shape[0], k_trials, per_step, -1))
            loss, grads = self.stacked.loss_and_grads(x, targets[i])
            if not bool(torch.isfinite(loss).all()):
                bad = int((~torch.isfinite(loss)).nonzero()[0])
                trial = self.trials[bad]
                raise non_finite_loss(trial.desc or self.desc, loss[bad].item(), step, trial.cfg.lr)
            clip_stacked_(grads, cfg.grad_clip)
            self.optimizer.step(grads, lr_factor(cfg, step))
            on_step()
        return loss.mean().item()

    def predict(self, role: str) -> list[list]:
        return self.rows[role].predictions(self.stacked, self.feats, self.lengths, self.objective)

    def snapshot(self, k: int) -> list[torch.Tensor]:
        return [p[k].detach().clone() for p in self.stacked.params]

    def state(self) -> dict[str, Any]:
        return {"params": [p.detach().clone() for p in self.stacked.params], "optimizer": self.optimizer.state()}

    def restore(self, state: dict[str, Any], step: int) -> None:
        with torch.no_grad():
            for p, value in zip(self.stacked.params, state["params"]):
                p.copy_(value)
        self.optimizer.load(state["optimizer"])
        for stream in self.streams:  # replay the batch draws up to the saved step
            for _ in range(step * self.cfg.grad_accum):
                next(stream)

    @torch.no_grad()
    def load_best(self, snapshots: Sequence[Any]) -> None:
        for k, snapshot in enumerate(snapshots):
            for p, value in zip(self.stacked.params, snapshot):
                p[k].copy_(value)

    def head_state(self, k: int) -> dict[str, torch.Tensor]:
        return self.stacked.state_dict(k)

    def layer_weights(self, k: int) -> list[float]:
        return self.stacked.layer_weights(k)


def train_group(make_head: Callable[[], torch.nn.Module], stack: Callable[[list[torch.nn.Module]], StackedHeads],
                objective: Objective, source: FeatureSource, trials: Sequence[Trial], progress: bool = True,
                desc: str = "train", checkpoint: Path | None = None,
                device: torch.device | str = "cpu") -> list[TrainResult]:
    """Train every trial of `trials` at once (`fit_trials` with `StackedGroup`); one TrainResult per trial,
    as `training.train` gives it. `checkpoint` (optional) keeps the group's state between dev evaluations,
    so an interrupted group resumes where it was. A trial's `seconds` is its share of the group's wall time.
    """
    if any(t.cfg.bucketing for t in trials):
        raise ValueError("train.bucketing draws length buckets of frame-level utterances; a trial group is "
                         "utterance-level and never buckets: train these trials one at a time (training.train)")
    def build() -> StackedGroup:
        return StackedGroup(make_head, stack, objective, source, trials, device, desc)

    return fit_trials(trials, objective, build, progress=progress, desc=desc, checkpoint=checkpoint)


class _EvalRows:
    """Each trial's evaluation rows (its dev or test split) as positions in their union, worked out once:
    every utterance is run once for all trials, then each trial takes its own rows."""

    def __init__(self, rows: list[list[int]], device: torch.device) -> None:
        flat = torch.tensor([r for trial in rows for r in trial], dtype=torch.long)
        union, inverse = torch.unique(flat, return_inverse=True)
        self.union = union.to(device)
        self.rows = list(torch.split(flat, [len(trial) for trial in rows]))
        self.picks = list(torch.split(inverse, [len(trial) for trial in rows]))

    @torch.no_grad()
    def predictions(self, stacked: StackedHeads, feats: torch.Tensor, lengths: torch.Tensor,
                    objective: Objective) -> list[list]:
        """Each trial's predictions on its rows, from one pass over the union (in chunks)."""
        parts = [stacked.outputs(feats.index_select(1, self.union[s:s + CHUNK_ROWS]))
                 for s in range(0, len(self.union), CHUNK_ROWS)]
        outputs = torch.cat(parts, dim=1).cpu()  # (K, U, C)
        return [objective.predict(outputs[k, pick], lengths[rows])
                for k, (pick, rows) in enumerate(zip(self.picks, self.rows))]

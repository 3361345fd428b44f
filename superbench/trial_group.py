"""Train many heads that read the same pooled features as one computation.

A sweep trains one head per (learning rate, seed, fold). For utterance-level tasks each head
sees only an (L, D) vector per utterance, so one update of one head is a few small matrix
products and Python/dispatch overhead dominates; the upstream's single extraction pass is the
real cost. Here the K trials of a sweep are one *group*: their parameters are stacked along a
leading K axis, the pooled features of every utterance are resident as one (L, N, D) tensor on
the device, each trial's batch indices are drawn up front (per evaluation interval), and one
update of the group is one set of batched products, one stacked gradient clip and one stacked
Adam step. Evaluation is fused too: one pass over the union of the trials' dev utterances.

The protocol is the one of `superbench.training.train`, trial by trial: each trial's head is
initialised under its own seed exactly as the one-at-a-time path initialises it, draws its
batches from its own generator with the same sampler (`training._batches`), runs all its
updates, clips its own gradient norm, has its own Adam state and learning rate, is evaluated
on its own dev set every `eval_interval` updates and keeps its own best dev checkpoint, which
alone is scored on test. Only the floating-point summation order differs, so batched and
one-at-a-time training agree within float tolerance (tests/test_trial_group.py).

What the task kind provides is a `StackedHeads` (the head's batched forward and backward, e.g.
`downstreams.utterance.StackedUtteranceHeads`); this module owns the loop, the optimiser, the
checkpoints and the bookkeeping, and knows no task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from superbench.training import (
    FeatureSource,
    Objective,
    TrainConfig,
    TrainingError,
    TrainResult,
    _batches,
    _load_checkpoint,
    _save_checkpoint,
    dev_scorer,
    lr_factor,
    secondary_of_best,
)

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


@dataclass
class Trial:
    """One member of a group: its config (lr, seed) and its data as (ids, targets) per split."""

    cfg: TrainConfig
    train: tuple[Sequence[str], Sequence]
    dev: tuple[Sequence[str], Sequence]
    test: tuple[Sequence[str], Sequence]
    desc: str = ""
    key: str = ""  # the trial's identity (the runner's trial key): part of the group's checkpoint key


#: TrainConfig fields a group shares: only the learning rate and the seed may differ between trials.
_PER_TRIAL = ("lr", "seed", "lr_grid")


def shared_schedule(trials: Sequence[Trial]) -> TrainConfig:
    """The schedule every trial of a group follows, or ValueError naming the field that differs."""
    if not trials:
        raise ValueError("a trial group needs at least one trial")
    first = asdict(trials[0].cfg)
    for t in trials[1:]:
        for name, value in asdict(t.cfg).items():
            if name not in _PER_TRIAL and value != first[name]:
                raise ValueError(f"trials of one group must share `{name}` ({first[name]!r} vs {value!r})")
    return trials[0].cfg


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
    what = [{"key": t.key, "config": asdict(t.cfg), "train": len(t.train[0])} for t in trials]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


def train_group(make_head: Callable[[], torch.nn.Module], stack: Callable[[list[torch.nn.Module]], StackedHeads],
                objective: Objective, source: FeatureSource, trials: Sequence[Trial], progress: bool = True,
                desc: str = "train", checkpoint: Path | None = None,
                device: torch.device | str = "cpu") -> list[TrainResult]:
    """Train every trial of `trials` at once; one TrainResult per trial, as `training.train` gives it.

    `checkpoint` (optional) keeps the group's state between dev evaluations, so an interrupted
    group resumes where it was (and ends with the same results as an uninterrupted one).
    A trial's `seconds` is its share of the group's wall time (the group's time divided by K).
    """
    start = time.perf_counter()
    if any(t.cfg.bucketing for t in trials):
        raise ValueError("train.bucketing draws length buckets of frame-level utterances; a trial group is "
                         "utterance-level and never buckets: train these trials one at a time (training.train)")
    cfg = shared_schedule(trials)
    dev_score = dev_scorer(objective, cfg.balanced_dev)  # a config the objective cannot score fails first
    k_trials = len(trials)
    per_step = rows_per_update(trials)
    if cfg.balanced_sampling and any(not all(isinstance(y, int) for y in t.train[1]) for t in trials):
        raise ValueError("balanced_sampling needs class-index targets")
    # Resident features: every utterance any trial reads, once.
    all_ids: list[str] = []
    row: dict[str, int] = {}
    for t in trials:
        for split in (t.train, t.dev, t.test):
            for uid in split[0]:
                if uid not in row:
                    row[uid] = len(all_ids)
                    all_ids.append(uid)
    feats, lengths = resident_features(source, all_ids, device)
    # Heads initialised exactly as the one-at-a-time path does it: the trial's seed, then make_head().
    heads = []
    for t in trials:
        torch.manual_seed(t.cfg.seed)
        heads.append(make_head().to(device))  # initialised on the CPU, as one-at-a-time training does
    stacked = stack(heads)
    optimizer = StackedAdam(stacked.params, [t.cfg.lr for t in trials])
    streams = [_batches([row[u] for u in t.train[0]], list(t.train[1]), t.cfg,
                        torch.Generator().manual_seed(t.cfg.seed)) for t in trials]
    better = (lambda a, b: a > b) if objective.higher_is_better else (lambda a, b: a < b)
    best_dev = [math.nan] * k_trials
    best_step = [0] * k_trials
    best_state: list[list[torch.Tensor] | None] = [None] * k_trials
    best_predictions: list[list | None] = [None] * k_trials
    history: list[list[tuple[int, float]]] = [[] for _ in trials]
    first_step, spent = 1, 0.0
    key = {"key": group_key(trials), "trials": k_trials}
    saved = _load_checkpoint(checkpoint, key) if checkpoint is not None else None
    if saved is not None:
        with torch.no_grad():
            for p, value in zip(stacked.params, saved["params"]):
                p.copy_(value)
        optimizer.load(saved["optimizer"])
        best_dev, best_step, best_state = saved["best_dev"], saved["best_step"], saved["best_state"]
        best_predictions = saved["best_predictions"]
        history, spent = [[tuple(h) for h in hs] for hs in saved["history"]], saved["seconds"]
        for stream in streams:  # replay the batch draws up to the saved step
            for _ in range(saved["step"] * cfg.grad_accum):
                next(stream)
        first_step = saved["step"] + 1
        log.info("%s: resuming %d trials at step %d of %d from %s", desc, k_trials, first_step, cfg.steps, checkpoint)
    dev_rows = _EvalRows([[row[u] for u in t.dev[0]] for t in trials], feats.device)
    bar = tqdm(total=cfg.steps, initial=first_step - 1, desc=desc, unit="step", disable=None if progress else True,
               leave=False)
    step = first_step
    while step <= cfg.steps:
        # Draw the indices of every update up to the next evaluation, for every trial, up front.
        stop = min(cfg.steps, ((step - 1) // cfg.eval_interval + 1) * cfg.eval_interval)
        span = stop - step + 1
        rows_drawn, targets_drawn = [], []
        for stream in streams:
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
        for i in range(span):
            rows = index[i]
            x = (feats.index_select(1, rows[0]) if shared
                 else feats.index_select(1, rows.flatten()).view(feats.shape[0], k_trials, per_step, -1))
            loss, grads = stacked.loss_and_grads(x, targets[i])
            if not bool(torch.isfinite(loss).all()):
                bad = int((~torch.isfinite(loss)).nonzero()[0])
                raise TrainingError(f"{trials[bad].desc or desc}: loss is {loss[bad].item()} at step {step} "
                                    f"(lr={trials[bad].cfg.lr:g}); try a smaller learning rate or check the features")
            clip_stacked_(grads, cfg.grad_clip)
            optimizer.step(grads, lr_factor(cfg, step))
            bar.update(1)
            step += 1
        done = step - 1
        # Fused evaluation: every trial's outputs over the union of dev rows, scored per trial.
        for k, (t, preds) in enumerate(zip(trials, dev_rows.predictions(stacked, feats, lengths, objective))):
            dev = dev_score(list(t.dev[1]), preds)
            history[k].append((done, dev))
            if best_state[k] is None or better(dev, best_dev[k]):
                best_dev[k], best_step[k] = dev, done
                best_state[k] = [p[k].detach().clone() for p in stacked.params]
                best_predictions[k] = preds
        bar.set_postfix(loss=f"{loss.mean().item():.3f}", dev=f"{max(h[-1][1] for h in history):.1f}")
        log.debug("%s step %d loss %s", desc, done, [round(v, 4) for v in loss.tolist()])
        if checkpoint is not None and done < cfg.steps:
            _save_checkpoint(checkpoint, {
                **key, "step": done, "params": [p.detach().clone() for p in stacked.params],
                "optimizer": optimizer.state(), "best_dev": best_dev, "best_step": best_step,
                "best_state": best_state, "best_predictions": best_predictions,
                "history": [[list(h) for h in hs] for hs in history],
                "seconds": spent + time.perf_counter() - start})
    bar.close()
    # Each trial's best head, scored on its test set (one fused pass).
    with torch.no_grad():
        for k in range(k_trials):
            state = best_state[k]
            assert state is not None
            for p, value in zip(stacked.params, state):
                p[k].copy_(value)
    test_rows = _EvalRows([[row[u] for u in t.test[0]] for t in trials], feats.device)
    seconds = (spent + time.perf_counter() - start) / k_trials
    results = []
    for k, (t, test_preds) in enumerate(zip(trials, test_rows.predictions(stacked, feats, lengths, objective))):
        test = objective.score(list(t.test[1]), test_preds)
        results.append(TrainResult(
            dev=best_dev[k], test=test, best_step=best_step[k], steps=cfg.steps, lr=t.cfg.lr,
            layer_weights=[round(w, 6) for w in stacked.layer_weights(k)], seconds=seconds, history=history[k],
            head_state=stacked.state_dict(k),
            predictions={"dev": list(best_predictions[k] or []), "test": list(test_preds)},
            secondary=secondary_of_best(objective, (t.dev[1], best_predictions[k] or []), (t.test[1], test_preds))))
    return results


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

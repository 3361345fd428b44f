"""The one training loop every pretraining family shares: seeded, resumable, with a progress bar and a
saved loss curve.

Layout of an output folder (`--out DIR`):

- what the family's `save_upstream` writes (a `.ckpt`, or a `transformers` checkpoint folder), loadable
  as `LOADER=DIR` (or `FAMILY=DIR`);
- `pretrain-state.pt`: model, optimiser, schedule, RNG states and the loss history, written atomically
  every `save_every` steps, so an interrupted run started again with the same arguments continues from
  there and ends with the same weights as an uninterrupted one;
- `loss.csv` and `loss.png`: the loss per step (plus the family's extra numbers);
- `pretrain.json`: family, config, data, steps, wall time, parameter counts, final loss, how to load it.

Steps 0 saves the random initialisation itself: the baseline a trained model must beat.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from superbench.io import atomic_open, atomic_write_text
from upstreams.pretrain.base import PretrainConfig, PretrainFamily
from upstreams.pretrain.data import PretrainAudio

log = logging.getLogger(__name__)

STATE_FILE = "pretrain-state.pt"
INFO_FILE = "pretrain.json"


class PretrainError(RuntimeError):
    """A pretraining run that cannot go on (non-finite loss, an output folder of another run)."""


@dataclass
class PretrainResult:
    out_dir: Path
    upstream_path: Path
    loader: str
    steps: int
    wall_seconds: float
    final_loss: float
    parameters: int
    info: dict[str, Any]


def lr_at(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up to `peak` over the first `warmup_fraction` of the steps, then cosine decay to 0."""
    warmup = max(1, int(round(total * warmup_fraction)))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _run_key(cfg: PretrainConfig, audio: PretrainAudio) -> dict[str, Any]:
    return {**asdict(cfg), "data": audio.fingerprint}


def _save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def _write_curve(out_dir: Path, history: list[dict[str, float]], title: str) -> None:
    import pandas as pd

    if not history:
        return
    frame = pd.DataFrame(history)
    atomic_write_text(out_dir / "loss.csv", frame.to_csv(index=False, float_format="%.6g"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(frame["step"], frame["loss"], lw=0.8, alpha=0.5, label="loss")
    window = max(1, len(frame) // 20)
    ax.plot(frame["step"], frame["loss"].rolling(window, min_periods=1).mean(), lw=1.6,
            label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=110)
    plt.close(fig)


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Torch's deterministic kernels while a family trains, the caller's setting restored afterwards.

    Without them wav2vec2's pretraining on two CPU threads drifts between identical runs (the loss
    differs in the fifth digit within 100 steps, the scores by up to 3 points after 1200); the other
    families' weights are the same either way. An op with no deterministic kernel only warns.
    """
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def pretrain(family: PretrainFamily, audio: PretrainAudio, out_dir: str | Path, cfg: PretrainConfig,
             progress: bool = True) -> PretrainResult:
    """Train `family` on `audio` for `cfg.steps` steps into `out_dir` (resuming a run found there)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = _run_key(cfg, audio)
    state_path = out / STATE_FILE
    peak_lr = cfg.lr or family.default_lr
    crop = int(round(cfg.crop_seconds * 16000))

    with torch.random.fork_rng(devices=[]), deterministic_algorithms():
        torch.manual_seed(cfg.seed)
        model = family.build(cfg.size)
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=peak_lr,
                                      weight_decay=cfg.weight_decay)
        history: list[dict[str, float]] = []
        step, wall = 0, 0.0
        if state_path.is_file():
            state = torch.load(state_path, map_location="cpu", weights_only=False)
            if state.get("key") != key:
                theirs = state.get("key", {})
                diff = sorted(k for k in set(key) | set(theirs) if key.get(k) != theirs.get(k))
                raise PretrainError(f"{out} holds a pretraining run with other settings ({', '.join(diff)}); "
                                    f"use another --out, or delete {state_path} to start over")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history, step, wall = state["history"], state["step"], state["wall_seconds"]
            log.info("%s: resuming at step %d of %d", out, step, cfg.steps)
        else:
            family.prepare(model, audio.wavs, generator)

        model.train()
        started = time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=step, desc=f"pretrain {family.name}", unit="step",
                   disable=not progress or cfg.steps == 0, dynamic_ncols=True)

        def save() -> None:
            _save_state(state_path, {"key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                                     "history": history, "step": step,
                                     "wall_seconds": wall + time.perf_counter() - started})

        while step < cfg.steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg.steps, peak_lr, cfg.warmup_fraction)
            wavs, lengths = audio.batch(cfg.batch_size, crop, generator)
            loss, extra = family.loss(model, wavs, lengths, generator)
            if not torch.isfinite(loss):
                raise PretrainError(f"{family.name}: the loss is {loss.item()} at step {step + 1}; lower --lr "
                                    f"(now {peak_lr:g}) or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            family.after_step(model, step, cfg.steps)
            step += 1
            history.append({"step": step, "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                            **{k: float(v) for k, v in extra.items()}})
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            if step % cfg.save_every == 0 or step == cfg.steps:
                save()
        bar.close()
        if cfg.steps == 0 and not state_path.is_file():
            save()
        wall += time.perf_counter() - started

    model.eval()
    upstream_path = family.save_upstream(model, out)
    _write_curve(out, history, f"{family.name} ({cfg.size}, seed {cfg.seed})")
    tail = [h["loss"] for h in history[-20:]]
    final = sum(tail) / len(tail) if tail else math.nan
    params = count_parameters(family.encoder(model))
    info = {"family": family.name, "kind": family.kind, "description": family.description,
            "loader": family.loader, "upstream": f"{family.loader}={upstream_path}",
            "config": {**asdict(cfg), "lr": peak_lr}, "data": {"source": audio.source, "fingerprint": audio.fingerprint,
                                                                "utterances": len(audio.wavs),
                                                                "hours": round(audio.hours, 4)},
            "steps": step, "wall_seconds": round(wall, 2), "parameters": {"upstream": params,
                                                                          "trained": count_parameters(model)},
            "first_loss": history[0]["loss"] if history else None, "final_loss": final}
    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2) + "\n")
    return PretrainResult(out, upstream_path, family.loader, step, wall, final, params, info)

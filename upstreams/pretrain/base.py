"""What a self-supervised family is to `superbench pretrain`: a small declaration plus five methods.

A family builds its trainable model (the encoder that will become an upstream, plus whatever heads
its objective needs), computes its loss on a batch of raw waveforms, and saves the encoder in the
format of the upstream that loads it (`loader`: `apc`, `tera`, `hubert`, `wav2vec2`, `data2vec`),
so the same loader serves public and self-trained checkpoints. Everything else (data, seeding,
optimiser, resuming, progress, loss curve) is the shared loop's (`upstreams.pretrain.loop`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

#: Model sizes every family offers; `tiny` trains in minutes on two CPU cores.
SIZES = ("tiny", "small")


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run. Everything here (and the data's fingerprint) identifies the run: a resumed
    run must have the same values, so it ends exactly where an uninterrupted one would."""

    family: str
    steps: int
    size: str = "tiny"
    seed: int = 0
    batch_size: int = 8
    crop_seconds: float = 2.0
    lr: float = 0.0  # 0: the family's default_lr
    warmup_fraction: float = 0.08
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    save_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps}")
        if self.size not in SIZES:
            raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.batch_size < 1 or self.crop_seconds <= 0 or self.save_every < 1:
            raise ValueError(f"batch_size ({self.batch_size}), crop_seconds ({self.crop_seconds}) and "
                             f"save_every ({self.save_every}) must be positive")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


class PretrainFamily(ABC):
    """One self-supervised objective family (its module in `upstreams/pretrain/`)."""

    #: The name `superbench pretrain NAME` takes.
    name: ClassVar[str]
    #: The upstream that loads what `save_upstream` writes (`LOADER=DIR`).
    loader: ClassVar[str]
    #: generative / predictive / contrastive / bootstrapping / regularization.
    kind: ClassVar[str]
    description: ClassVar[str]
    default_lr: ClassVar[float] = 5e-4
    #: Steps `superbench pretrain` takes without `--steps` (and `make families` uses).
    default_steps: ClassVar[int] = 400

    @abstractmethod
    def build(self, size: str) -> torch.nn.Module:
        """The trainable model, randomly initialised (the loop seeds the RNG before calling this)."""

    def prepare(self, model: torch.nn.Module, wavs: list[torch.Tensor], generator: torch.Generator) -> None:
        """One-off work before training on the whole corpus (e.g. k-means targets); state it computes must
        live in the model's buffers, so it is checkpointed with the weights. Default: nothing."""
        return None

    @abstractmethod
    def loss(self, model: torch.nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on a padded batch (B, S) of 16 kHz waveforms with their lengths: (scalar loss,
        extra numbers to log). Random choices (masks, negatives, augmentations) draw from `generator`."""

    def after_step(self, model: torch.nn.Module, step: int, total_steps: int) -> None:
        """Called after each optimiser step (e.g. the EMA teacher update). Default: nothing."""
        return None

    @abstractmethod
    def save_upstream(self, model: torch.nn.Module, out_dir: Path) -> Path:
        """Write the encoder into `out_dir` in `loader`'s format; return the path `LOADER=PATH` takes."""

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module:
        """The part that becomes the upstream (parameter counts); default: the whole model."""
        return model

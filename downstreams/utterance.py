"""Utterance classification (KS, SID, ER): the head, its objective and the task kind.

Head: Linear(D, proj) -> mean pool -> Linear(proj, C).

This is s3prl's `UtteranceLevel` model with `MeanPooling`. Everything before the
pool is linear in the features (weighted sum of layers, then a Linear layer), so
pooling commutes with it: feeding per-layer means over valid frames gives exactly
the same logits as feeding the frames. That is why the feature cache stores only
an (L, D) mean per utterance for these tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from superbench import metrics
from superbench.featurizer import WeightedSum
from superbench.manifest import TaskManifest
from superbench.tasks import Task, TaskSetup


def masked_mean(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of (..., B, T, D) given (B,) lengths."""
    t = frames.shape[-2]
    mask = (torch.arange(t, device=frames.device)[None, :] < lengths[:, None]).to(frames.dtype)  # (B, T)
    summed = (frames * mask[..., None]).sum(dim=-2)
    return summed / lengths.clamp_min(1).to(frames.dtype)[:, None]


class UtteranceHead(torch.nn.Module):
    """Weighted sum of layers -> Linear(D, proj_dim) -> mean pool -> Linear(proj_dim, num_classes)."""

    def __init__(self, num_layers: int, input_dim: int, num_classes: int, proj_dim: int = 256,
                 layer: int | str | None = None) -> None:
        super().__init__()
        self.featurizer = WeightedSum(num_layers, layer=layer)
        self.projector = torch.nn.Linear(input_dim, proj_dim)
        self.classifier = torch.nn.Linear(proj_dim, num_classes)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C) from pooled (L, B, D) features, or from (L, B, T, D) frames plus lengths."""
        x = self.featurizer(features)
        x = self.projector(x)
        if features.dim() == 4:
            if lengths is None:
                raise ValueError("frame input (L, B, T, D) needs lengths")
            x = masked_mean(x, lengths)
        elif features.dim() != 3:
            raise ValueError(f"expected (L, B, D) or (L, B, T, D) features, got shape {tuple(features.shape)}")
        return self.classifier(x)


class ClassificationObjective:
    """Cross-entropy over class indices; accuracy in percent."""

    metric, higher_is_better = "acc", True

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        return F.cross_entropy(output, torch.as_tensor(targets, dtype=torch.long))

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        return output.argmax(dim=-1).tolist()

    def score(self, targets: list, predictions: list) -> float:
        return metrics.accuracy(targets, predictions)


@dataclass(frozen=True)
class UtteranceHeadConfig:
    """A recipe's `head` section for utterance classification."""

    proj_dim: int = 256


class UtteranceClassification:
    """Task kind: one class per utterance from the manifest's label inventory; pooled cache."""

    level = "utterance"
    head_config = UtteranceHeadConfig

    def check(self, task: Task, manifest: TaskManifest) -> None:
        manifest.check_inventory(task.target)

    def setup(self, task: Task, manifest: TaskManifest, head: UtteranceHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None) -> TaskSetup:
        index = {name: i for i, name in enumerate(manifest.labels)}
        field = task.target

        def target_of(u: Any) -> int:
            return index[u.targets[field]]

        return TaskSetup(ClassificationObjective(), target_of,
                         lambda: UtteranceHead(num_layers, hidden_size, len(manifest.labels), proj_dim=head.proj_dim,
                                               layer=layer))

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
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from superbench import metrics
from superbench.downstream import Head, Objective
from superbench.featurizer import WeightedSum
from superbench.manifest import TaskManifest
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores


def correct_bits(ids: Sequence[str], targets: Sequence, predictions: Sequence) -> UnitScores:
    """Per-utterance scores of an accuracy: 1 where the prediction is the target."""
    correct = [int(t == p) for t, p in zip(targets, predictions)]
    return UnitScores.build("proportion", "utterance", ids, {"correct": correct})


def masked_mean(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of (..., B, T, D) given (B,) lengths."""
    t = frames.shape[-2]
    mask = (torch.arange(t, device=frames.device)[None, :] < lengths[:, None]).to(frames.dtype)  # (B, T)
    summed = (frames * mask[..., None]).sum(dim=-2)
    return summed / lengths.clamp_min(1).to(frames.dtype)[:, None]


class UtteranceHead(Head):
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


class ClassificationObjective(Objective):
    """Cross-entropy over class indices; accuracy in percent."""

    metric, higher_is_better = "acc", True

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        return F.cross_entropy(output, torch.as_tensor(targets, dtype=torch.long, device=output.device))

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        return output.argmax(dim=-1).tolist()

    def score(self, targets: list, predictions: list) -> float:
        return metrics.accuracy(targets, predictions)

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Accuracy per utterance: a correct bit each (a proportion)."""
        return {self.metric: correct_bits(ids, targets, predictions)}

    def balanced_score(self, targets: list, predictions: list) -> float:
        """Class-balanced accuracy (mean per-class recall): KS dev, as s3prl's balanced dev resample expects."""
        return metrics.balanced_accuracy(targets, predictions)


@dataclass(frozen=True)
class UtteranceHeadConfig:
    """A recipe's `head` section for utterance classification."""

    proj_dim: int = 256


class UtteranceClassification(TaskKind):
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
                                               layer=layer),
                         stack=StackedUtteranceHeads)


class StackedUtteranceHeads:
    """K `UtteranceHead`s on pooled features as stacked tensors, for `superbench.trial_group.train_group`.

    Forward per trial k: s = sum_l softmax(a_k)_l x_l; h = s W1_k^T + b1_k; o = h W2_k^T + b2_k;
    loss = cross-entropy averaged over the batch. The backward is written out (softmax-CE,
    two linear layers, the softmax of the layer weights): on pooled features the head is a few
    small products, and autograd's bookkeeping would cost more than the arithmetic.
    Weights keep nn.Linear's (out, in) layout, so `state_dict(k)` is an `UtteranceHead` state dict.
    """

    def __init__(self, heads: list[UtteranceHead]) -> None:
        if not heads:
            raise ValueError("no heads to stack")
        first = heads[0].featurizer
        if any(h.featurizer.layer != first.layer or h.featurizer.layer_norm for h in heads):
            raise ValueError("stacked heads must probe the same layer (or all mix layers), without layer norm")
        self.layer = first.layer
        self.num_layers = first.num_layers

        def stack(get):
            return torch.stack([get(h).detach().clone() for h in heads])

        self.a = stack(lambda h: h.featurizer.weights)  # (K, L)
        self.w1 = stack(lambda h: h.projector.weight)  # (K, P, D)
        self.b1 = stack(lambda h: h.projector.bias)  # (K, P)
        self.w2 = stack(lambda h: h.classifier.weight)  # (K, C, P)
        self.b2 = stack(lambda h: h.classifier.bias)  # (K, C)
        self.params = ([self.a] if self.layer is None else []) + [self.w1, self.b1, self.w2, self.b2]

    def _mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(K, B, D) mixed features from (L, B, D) shared or (L, K, B, D) per-trial rows, and the mix weights."""
        if self.layer is not None:
            picked = x[self.layer]
            return (picked.expand(self.w1.shape[0], *picked.shape) if x.dim() == 3 else picked), None
        w = torch.softmax(self.a, dim=-1)  # (K, L)
        if x.dim() == 3:  # shared rows: one (K, L) x (L, B*D) product
            length, b, d = x.shape
            return (w @ x.reshape(length, b * d)).view(-1, b, d), w
        return torch.einsum("kl,lkbd->kbd", w, x), w

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        s, _ = self._mix(x)
        h = torch.baddbmm(self.b1.unsqueeze(1), s, self.w1.transpose(1, 2))
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.w2.transpose(1, 2))

    @torch.no_grad()
    def loss_and_grads(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s, w = self._mix(x)
        batch = s.shape[1]
        classes, proj = self.w2.shape[1], self.w2.shape[2]
        # No nonlinearity between the two Linear layers: logits = (W2 W1) s + (W2 b1 + b2). With fewer classes
        # than the projection (KS 12, ER 4 vs 256), the products through the C x D matrix W2 W1 cost
        # C (P + B) D instead of B P D per update; the gradients of W1, b1 and W2 follow from the same
        # C x D matrix G = d_o^T s. The same function and gradients, in another order of float operations.
        factored = classes * (proj + batch) < batch * proj
        if factored:
            m = torch.bmm(self.w2, self.w1)  # (K, C, D)
            c = torch.baddbmm(self.b2.unsqueeze(2), self.w2, self.b1.unsqueeze(2)).squeeze(2)  # (K, C)
            o = torch.baddbmm(c.unsqueeze(1), s, m.transpose(1, 2))  # (K, B, C)
        else:
            h = torch.baddbmm(self.b1.unsqueeze(1), s, self.w1.transpose(1, 2))  # (K, B, P)
            o = torch.baddbmm(self.b2.unsqueeze(1), h, self.w2.transpose(1, 2))  # (K, B, C)
        loss, d_o = self.loss_and_logit_grad(o, targets)
        g_b2 = d_o.sum(dim=1)  # (K, C)
        if factored:
            g = torch.bmm(d_o.transpose(1, 2), s)  # (K, C, D)
            w2t = self.w2.transpose(1, 2)  # (K, P, C)
            g_w1 = torch.bmm(w2t, g)  # (K, P, D)
            g_b1 = torch.bmm(w2t, g_b2.unsqueeze(2)).squeeze(2)  # (K, P)
            g_w2 = torch.baddbmm(g_b2.unsqueeze(2) * self.b1.unsqueeze(1), g, self.w1.transpose(1, 2))  # (K, C, P)
        else:
            g_w2 = torch.bmm(d_o.transpose(1, 2), h)  # (K, C, P)
            d_h = torch.bmm(d_o, self.w2)  # (K, B, P)
            g_w1 = torch.bmm(d_h.transpose(1, 2), s)  # (K, P, D)
            g_b1 = d_h.sum(dim=1)
        grads = [g_w1, g_b1, g_w2, g_b2]
        if w is not None:
            d_s = torch.bmm(d_o, m) if factored else torch.bmm(d_h, self.w1)  # (K, B, D)
            if x.dim() == 3:
                length, b, d = x.shape
                g_w = d_s.reshape(-1, b * d) @ x.reshape(length, b * d).T  # (K, L)
            else:
                g_w = torch.einsum("kbd,lkbd->kl", d_s, x)
            grads.insert(0, w * (g_w - (w * g_w).sum(dim=-1, keepdim=True)))
        return loss, grads

    def loss_and_logit_grad(self, o: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-trial loss (K,) and its gradient w.r.t. the logits o (K, B, C): batch-mean cross-entropy,
        whose gradient is (softmax - one-hot) / B. A head with another loss on the same logits overrides this."""
        log_p = torch.log_softmax(o, dim=-1)
        loss = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(dim=1)  # (K,)
        d_o = log_p.exp_()
        d_o.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(d_o[..., :1], -1.0)).div_(o.shape[1])
        return loss, d_o

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return {"featurizer.weights": self.a[k].clone(), "projector.weight": self.w1[k].clone(),
                "projector.bias": self.b1[k].clone(), "classifier.weight": self.w2[k].clone(),
                "classifier.bias": self.b2[k].clone()}

    def layer_weights(self, k: int) -> list[float]:
        if self.layer is not None:
            return F.one_hot(torch.tensor(self.layer), self.num_layers).float().tolist()
        return torch.softmax(self.a[k], dim=-1).tolist()

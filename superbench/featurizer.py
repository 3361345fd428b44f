"""Learnable weighted sum of upstream layers, with SUPERB's semantics.

Per-layer weights start at zero (so the initial mix is the plain average), go
through a softmax, and optionally each layer is layer-normalised first (off by
default, as in SUPERB). Two probe modes replace the mix: a fixed layer index
(`--layer K`) or `last`. The normalised weights are exposed for the classic
"which layers does a task use" figure.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


class WeightedSum(torch.nn.Module):
    """Mixes a stack of layers whose layer axis is dim 0: (L, ...) -> (...)."""

    def __init__(self, num_layers: int, layer: int | str | None = None, layer_norm: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if layer == "last":
            layer = num_layers - 1
        if layer is not None:
            layer = int(layer)
            if not 0 <= layer < num_layers:
                raise ValueError(f"layer {layer} out of range: this upstream has layers 0..{num_layers - 1}")
        self.num_layers = num_layers
        self.layer = layer
        self.layer_norm = layer_norm
        self.weights = torch.nn.Parameter(torch.zeros(num_layers), requires_grad=layer is None)

    def normalized_weights(self) -> torch.Tensor:
        if self.layer is not None:
            return F.one_hot(torch.tensor(self.layer), self.num_layers).float()
        return F.softmax(self.weights, dim=0)

    def forward(self, layers: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = layers if isinstance(layers, torch.Tensor) else torch.stack(list(layers))
        if stacked.shape[0] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} layers, got {stacked.shape[0]}")
        if self.layer_norm:
            stacked = F.layer_norm(stacked, stacked.shape[-1:])
        if self.layer is not None:
            return stacked[self.layer]
        w = self.normalized_weights().to(stacked.dtype)
        return torch.tensordot(w, stacked, dims=([0], [0]))

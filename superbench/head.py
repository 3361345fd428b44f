"""What the training loop needs from a downstream head, stated once.

A head is a `torch.nn.Module` called as `head(features, frame_lengths) -> output`, where features
are the upstream's layers, `(B, L, D)` per utterance or `(B, T, L, D)` per frame. Subclass `Head`:

* `featurizer`: the learnable weighted sum over layers (`superbench.featurizer.WeightedSum`), set
  in `__init__`; its softmax weights are what every record reports as `layer_weights`;
* `output_lengths(lengths)`: frames the head emits per utterance (default: as many as it reads;
  a head that downsamples in time says by how much);
* `layer_weights()`: the weights reported (default: the featurizer's softmax weights).
"""

from __future__ import annotations

import torch

from superbench.featurizer import WeightedSum


class Head(torch.nn.Module):
    """Base of every downstream head (see the module docstring)."""

    featurizer: WeightedSum

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames emitted per utterance for `lengths` frames read."""
        return lengths

    def layer_weights(self) -> list[float]:
        """The weighted sum's normalised layer weights, as the record reports them."""
        return self.featurizer.normalized_weights().detach().tolist()

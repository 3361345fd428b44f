"""The downstream contract: what the training loop needs from a head, its objective and its inputs.

A head is a `torch.nn.Module` called as `head(features, frame_lengths) -> output`, where features
are the upstream's layers, `(L, B, D)` per utterance or `(L, B, T, D)` per frame (a `FeatureSource`
gives them). Subclass `Head`:

* `featurizer`: the learnable weighted sum over layers (`superbench.featurizer.WeightedSum`), set
  in `__init__`; its softmax weights are what every record reports as `layer_weights`;
* `output_lengths(lengths)`: frames the head emits per utterance (default: as many as it reads;
  a head that downsamples in time says by how much);
* `layer_weights()`: the weights reported (default: the featurizer's softmax weights).

An `Objective` turns the head's output into a loss, predictions and the task's metric.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from superbench.featurizer import WeightedSum
from superbench.uncertainty import UnitScores


class FeatureSource(Protocol):
    """Where a head's inputs come from (the feature cache, or the upstream run online)."""

    #: "utterance": `batch` gives per-layer means (L, B, D) and frame counts; "frame": frames (L, B, T, D)
    #: zero-padded and their lengths.
    level: str

    def batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


class Head(torch.nn.Module):
    """Base of every downstream head (see the module docstring)."""

    featurizer: WeightedSum

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames emitted per utterance for `lengths` frames read."""
        return lengths

    def layer_weights(self) -> list[float]:
        """The weighted sum's normalised layer weights, as the record reports them."""
        return self.featurizer.normalized_weights().detach().tolist()


class Objective:
    """Loss, prediction and metric for one kind of head (the task kinds provide them): subclass it.

    Required: `metric`, `higher_is_better`, `loss`, `predict`, `score`. Optional members, with defaults:
    `secondary_scores(targets, predictions)` -> {metric: value} of metrics reported beside the main one
    (default: none); `balanced_score(targets, predictions)`, the class-balanced metric that selects
    checkpoints under `TrainConfig.balanced_dev` (default None: not defined for this objective);
    `unit_scores(ids, targets, predictions)`, the per-unit scores behind the test metrics (default: none);
    `begin_predictions(role)`, told before dev or test predictions (default: nothing);
    `shown(target, prediction)`, what the record's predictions file says of an utterance (default: the target
    and the prediction as they are); `waveforms(target, prediction)`, the audio a prediction gives back, for
    kinds whose output is audio (default: none); `scorers()`, what besides the head turned predictions into the
    scores (VC's vocoder and recogniser), kept in the record's `versions` (default: none).
    """

    metric: str
    higher_is_better: bool
    #: The class-balanced dev metric, a method `(targets, predictions) -> float`; None where it is not defined.
    balanced_score: Callable[[list, list], float] | None = None

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        raise NotImplementedError

    def score(self, targets: list, predictions: list) -> float:
        raise NotImplementedError

    def secondary_scores(self, targets: list, predictions: list) -> dict[str, float]:
        """Metrics reported beside the main one (e.g. SF's slot-value CER), in percent; none by default."""
        return {}

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """{metric: per-unit scores} of one test split, main and secondary metrics, whose `value()` is the
        metric `score` gives: what its confidence interval and paired tests resample
        (`superbench.uncertainty`). None by default: such a task's records carry no interval."""
        return {}

    def begin_predictions(self, role: str) -> None:
        """Called before a head's predictions on the "dev" or the "test" split, for objectives that decode
        them differently (speech translation: greedy on dev, beam search on test); nothing by default."""

    def shown(self, target: Any, prediction: Any) -> dict[str, Any] | None:
        """The fields of an utterance's line in the record's predictions file, {"reference", "prediction", any
        per-utterance score}, for predictions that are not plain JSON (SE/SS masks); None: the target and the
        prediction as they are (the default)."""
        return None

    def waveforms(self, target: Any, prediction: Any) -> Mapping[str, Any]:
        """{name: 1-D float audio at 16 kHz} an utterance's prediction gives back (SE/SS: the estimated sources
        and the mixture), written beside the record for `--keep-audio`; {} for kinds whose output is not audio."""
        return {}

    def scorers(self) -> dict[str, str]:
        """{role: identity} of the models besides the head that scored the predictions (a vocoder, a recogniser):
        they change every number, so the record keeps them in `versions`; {} for most kinds."""
        return {}

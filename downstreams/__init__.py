"""Downstream heads: the light models SUPERB trains on top of frozen upstream layers.

Every head owns its `WeightedSum` featurizer (trained jointly) and takes layers
stacked on dim 0: utterance heads accept (L, B, D) pooled features or
(L, B, T, D) frames with lengths; CTC heads take (L, B, T, D) frames.
"""

from downstreams.ctc import CTCHead, CTCVocab
from downstreams.utterance import UtteranceHead

__all__ = ["CTCHead", "CTCVocab", "UtteranceHead"]

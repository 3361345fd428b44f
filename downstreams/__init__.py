"""Downstream heads and the task kinds built on them.

Every head owns its `WeightedSum` featurizer (trained jointly) and takes layers
stacked on dim 0: utterance heads accept (L, B, D) pooled features or
(L, B, T, D) frames with lengths; CTC heads take (L, B, T, D) frames. A task kind
(`UtteranceClassification`, `CTCTranscription`) pairs a head with its objective and
says how targets come from a manifest; task declarations pick one.
"""

from downstreams.ctc import CTCHead, CTCHeadConfig, CTCObjective, CTCTranscription, CTCVocab
from downstreams.utterance import ClassificationObjective, UtteranceClassification, UtteranceHead, UtteranceHeadConfig

__all__ = ["CTCHead", "CTCHeadConfig", "CTCObjective", "CTCTranscription", "CTCVocab", "ClassificationObjective",
           "UtteranceClassification", "UtteranceHead", "UtteranceHeadConfig"]
from downstreams.diarization import DiarizationHead, DiarizationObjective, SpeakerDiarization  # noqa: E402,F401  (SD)
from downstreams.intent import IntentClassification, IntentObjective  # noqa: E402,F401  (IC; after the heads it reuses)
from downstreams.qbe import QbEDetection, QbEObjective  # noqa: E402,F401  (QbE; DTW, nothing trained)
from downstreams.seq2seq import Seq2SeqTranslation, TranslationObjective  # noqa: E402,F401  (ST)
from downstreams.slot_filling import SlotFilling, SlotFillingObjective  # noqa: E402,F401  (SF; reuses the CTC head)
from downstreams.verification import SpeakerVerification, VerificationObjective, XVectorHead  # noqa: E402,F401  (SV)

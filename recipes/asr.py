"""SUPERB ASR: speech recognition on LibriSpeech, character CTC with a BiLSTM head, no language model."""

from pathlib import Path

from downstreams import CTCTranscription
from superbench.task_info import ERROR_RATE
from superbench.tasks import PaperReference, Task

TASK = Task(name="asr", description="Automatic speech recognition: CTC over characters", metric="wer",
            higher_is_better=False, target="text", kind=CTCTranscription(unit="chars"),
            recipe=Path(__file__).with_suffix(".yaml"), order=6,
            paper_reference=PaperReference(fbank=23.18, sota=3.62),
            metric_range=ERROR_RATE)

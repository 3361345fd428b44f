"""SUPERB PR: phoneme recognition on LibriSpeech, CTC over the phones of the manifest's inventory."""

from pathlib import Path

from downstreams import CTCTranscription
from superbench.task_info import ERROR_RATE
from superbench.tasks import PaperReference, Task

TASK = Task(name="pr", description="Phoneme recognition: CTC over phones", metric="per", higher_is_better=False,
            target="phones", kind=CTCTranscription(unit="phones"), recipe=Path(__file__).with_suffix(".yaml"),
            order=1,
            paper_reference=PaperReference(fbank=82.01, sota=3.53),
            metric_range=ERROR_RATE)

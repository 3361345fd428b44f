"""SUPERB SD: two-speaker diarization on Libri2Mix, frame-level speaker activity (LSTM head, PIT-BCE), DER."""

from pathlib import Path

from downstreams.diarization import SpeakerDiarization
from superbench.task_info import ERROR_RATE
from superbench.tasks import PaperReference, Task

TASK = Task(name="sd", description="Speaker diarization: who speaks when in two-speaker mixtures", metric="der",
            higher_is_better=False, target="segments", kind=SpeakerDiarization(num_speakers=2),
            recipe=Path(__file__).with_suffix(".yaml"), order=10,
            paper_reference=PaperReference(fbank=10.05, sota=5.62),
            metric_range=ERROR_RATE)

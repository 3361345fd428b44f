"""SUPERB SID: closed-set speaker identification on VoxCeleb1."""

from pathlib import Path

from downstreams import UtteranceClassification
from superbench.task_info import PERCENT
from superbench.tasks import PaperReference, Task

TASK = Task(name="sid", description="Speaker identification: closed set", metric="acc", higher_is_better=True,
            target="label", kind=UtteranceClassification(), recipe=Path(__file__).with_suffix(".yaml"), order=4,
            paper_reference=PaperReference(fbank=20.058174, sota=90.3),
            metric_range=PERCENT)

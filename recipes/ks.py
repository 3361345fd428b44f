"""SUPERB KS: keyword spotting on Speech Commands v1.0 (10 words + unknown + silence)."""

from pathlib import Path

from downstreams import UtteranceClassification
from superbench.task_info import PERCENT
from superbench.tasks import PaperReference, Task

TASK = Task(name="ks", description="Keyword spotting: 10 words + unknown + silence", metric="acc",
            higher_is_better=True, target="label", kind=UtteranceClassification(),
            recipe=Path(__file__).with_suffix(".yaml"), order=2,
            paper_reference=PaperReference(fbank=41.3826674, sota=96.66),
            metric_range=PERCENT)

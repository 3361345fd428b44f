"""SUPERB ER: emotion recognition on IEMOCAP, four classes, the mean over leave-one-session-out folds."""

from pathlib import Path

from downstreams import UtteranceClassification
from superbench.task_info import PERCENT
from superbench.tasks import PaperReference, Task

TASK = Task(name="er", description="Emotion recognition: 4 classes, mean over folds", metric="acc",
            higher_is_better=True, target="label", kind=UtteranceClassification(),
            recipe=Path(__file__).with_suffix(".yaml"), order=5,
            paper_reference=PaperReference(fbank=48.23672168, sota=67.62),
            metric_range=PERCENT)

"""SUPERB IC: intent classification on Fluent Speech Commands (action, object and location all right)."""

from pathlib import Path

from downstreams import IntentClassification
from superbench.task_info import PERCENT
from superbench.tasks import PaperReference, Task

TASK = Task(name="ic", description="Intent classification: action, object and location all right", metric="acc",
            higher_is_better=True, target="intent", kind=IntentClassification(),
            recipe=Path(__file__).with_suffix(".yaml"), order=3,
            # The leaderboard's points: its FBANK re-run (9.65; the paper's Table 3 row says 9.10), HuBERT Large.
            paper_reference=PaperReference(fbank=9.649354219, sota=98.76),
            metric_range=PERCENT)

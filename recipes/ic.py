"""SUPERB IC: intent classification on Fluent Speech Commands (action, object and location all right)."""

from pathlib import Path

from downstreams import IntentClassification
from superbench.tasks import SUPERB_PAPER, PaperReference, Task

#: SUPERB paper Table 3: FBANK 9.10, HuBERT Large 98.76.
PAPER_TABLE_3 = f"{SUPERB_PAPER} (FBANK 9.10, HuBERT Large 98.76)"

TASK = Task(name="ic", description="Intent classification: action, object and location all right", metric="acc",
            higher_is_better=True, target="intent", kind=IntentClassification(),
            recipe=Path(__file__).with_suffix(".yaml"), order=3,
            paper_reference=PaperReference(fbank=9.10, sota=98.76, source=PAPER_TABLE_3))

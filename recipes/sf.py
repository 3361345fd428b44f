"""SUPERB SF: slot filling on Audio SNIPS, CTC over characters and slot tokens (s3prl ctc/snips.yaml).

Slot-type F1 selects the checkpoint and the learning rate (s3prl's first metric); the slot-value CER of
that head is reported beside it. Paper points: SUPERB paper (Yang et al., Interspeech 2021) Table 3,
FBANK 69.64 F1 / 52.94 CER, HuBERT Large 89.81 F1 / 21.76 CER, the leaderboard's reference points
(`superbench.tasks.SUPERB_LEADERBOARD`).
"""

from pathlib import Path

from downstreams import SlotFilling
from superbench.task_info import ERROR_RATE, PERCENT
from superbench.tasks import PaperReference, SecondaryMetric, Task

TASK = Task(name="sf", description="Slot filling: CTC over characters and slot tokens (Audio SNIPS)", metric="f1",
            higher_is_better=True, target="slots", kind=SlotFilling(), recipe=Path(__file__).with_suffix(".yaml"),
            order=8, paper_reference=PaperReference(fbank=69.64, sota=89.81),
            secondary_metrics=(SecondaryMetric("cer", higher_is_better=False, range=ERROR_RATE,
                                               paper_reference=PaperReference(fbank=52.94, sota=21.76)),),
            metric_range=PERCENT)

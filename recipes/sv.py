"""SUPERB SV (ASV): speaker verification on VoxCeleb1, x-vector head with AM-softmax, EER over trial pairs.

Paper points: SUPERB paper (Yang et al., Interspeech 2021) Table 3, ASV EER: FBANK 9.56, best row HuBERT Base
5.11 (the leaderboard's reference points, `superbench.tasks.SUPERB_LEADERBOARD`).
"""

from pathlib import Path

from downstreams import SpeakerVerification
from superbench.task_info import PERCENT
from superbench.tasks import PaperReference, Task

TASK = Task(name="sv", description="Speaker verification: unseen speakers, cosine-scored trial pairs", metric="eer",
            higher_is_better=False, target="label", kind=SpeakerVerification(),
            recipe=Path(__file__).with_suffix(".yaml"), order=9,
            paper_reference=PaperReference(fbank=9.56, sota=5.11),
            metric_range=PERCENT)

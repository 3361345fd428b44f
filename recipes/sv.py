"""SUPERB SV (ASV): speaker verification on VoxCeleb1, x-vector head with AM-softmax, EER over trial pairs.

Paper points: SUPERB paper (Yang et al., Interspeech 2021) Table 3, ASV EER: FBANK 9.56, best row HuBERT Base
5.11 (not re-checked against a stored copy of the paper or the leaderboard, see `SV_SOURCE`).
"""

from pathlib import Path

from downstreams import SpeakerVerification
from superbench.tasks import SUPERB_PAPER, PaperReference, Task

SV_SOURCE = f"{SUPERB_PAPER} (ASV EER of FBANK and of HuBERT Base; not re-verified against a stored copy)"

TASK = Task(name="sv", description="Speaker verification: unseen speakers, cosine-scored trial pairs", metric="eer",
            higher_is_better=False, target="label", kind=SpeakerVerification(),
            recipe=Path(__file__).with_suffix(".yaml"), order=9,
            paper_reference=PaperReference(fbank=9.56, sota=5.11, source=SV_SOURCE))

"""SUPERB QbE: query-by-example spoken term detection on QUESST 2014 (English subset), DTW on one layer, MTWV.

MTWV is stored in percent (100 x the maximum term-weighted value), so the SUPERB paper's fractions are x100
here: FBANK 0.0058 -> 0.58, best row HuBERT Base 0.0736 -> 7.36 (SUPERB paper, Yang et al., Interspeech 2021,
Table 3, as the leaderboard's reference points; `superbench.tasks.SUPERB_LEADERBOARD`).
"""

from pathlib import Path

from downstreams.qbe import QbEDetection
from superbench.tasks import PaperReference, Task

#: 100 is perfect; one operating point's TWV is at least -beta (-1249 % with QUESST's beta of 12.49), and the
#: maximum over thresholds is at least 0 ("detect nothing").
MTWV_RANGE = (-1250.0, 100.0)

TASK = Task(name="qbe", description="Query-by-example spoken term detection: DTW over one layer, no training",
            metric="mtwv", higher_is_better=True, target="role", kind=QbEDetection(),
            recipe=Path(__file__).with_suffix(".yaml"), order=7,
            paper_reference=PaperReference(fbank=0.58, sota=7.36),
            metric_range=MTWV_RANGE)

"""SUPERB-SG SE: speech enhancement on Voicebank-DEMAND, one STFT mask (BLSTM head, NPSM loss), PESQ/STOI/SI-SDRi.

Reference points of superbench's own SG score (leaderboard/score.py; SUPERB-SG defines no overall score): the
SUPERB leaderboard's FBANK row (PESQ 2.55, STOI 93.6) and its best row, WavLM Large (PESQ 2.70043, STOI 94.49);
SE counts PESQ and STOI, as SUPERB-SG's table reports it.
"""

from pathlib import Path

from downstreams.stft_mask import STFTMasking
from superbench.audio_metrics import PESQ_WB_RANGE, SISDRI_RANGE
from superbench.tasks import SUPERB_SG_REFERENCE, PaperReference, SecondaryMetric, Task

TASK = Task(name="se", description="Speech enhancement: a mask over the noisy STFT gives back clean speech",
            metric="pesq", higher_is_better=True, target="sources",
            kind=STFTMasking(num_sources=1, metric="pesq", secondary=("stoi", "sisdri")),
            recipe=Path(__file__).with_suffix(".yaml"), order=11, metric_range=PESQ_WB_RANGE, metric_unit="PESQ",
            paper_reference=PaperReference(fbank=2.55, sota=2.70043, source=SUPERB_SG_REFERENCE),
            secondary_metrics=(SecondaryMetric("stoi", True, range=(-100.0, 100.0), unit="%",
                                               paper_reference=PaperReference(fbank=93.6, sota=94.49,
                                                                              source=SUPERB_SG_REFERENCE)),
                               SecondaryMetric("sisdri", True, range=SISDRI_RANGE, unit="dB")))

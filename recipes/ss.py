"""SUPERB-SG SS: two-speaker separation on Libri2Mix, two STFT masks with PIT (BLSTM head, NPSM loss), SI-SDRi.

Reference points of superbench's own SG score (leaderboard/score.py; SUPERB-SG defines no overall score): the
SUPERB leaderboard's FBANK row (SI-SDRi 9.2341 dB) and its best row, WavLM Large (11.1938 dB); SS counts SI-SDRi
only, as SUPERB-SG's table reports it (STOI and PESQ are shown, not scored).
"""

from pathlib import Path

from downstreams.stft_mask import STFTMasking
from superbench.audio_metrics import PESQ_WB_RANGE, SISDRI_RANGE
from superbench.tasks import SUPERB_SG_REFERENCE, PaperReference, SecondaryMetric, Task

TASK = Task(name="ss", description="Source separation: two masks over a two-speaker mixture's STFT",
            metric="sisdri", higher_is_better=True, target="sources",
            kind=STFTMasking(num_sources=2, metric="sisdri", secondary=("stoi", "pesq")),
            recipe=Path(__file__).with_suffix(".yaml"), order=12, metric_range=SISDRI_RANGE, metric_unit="dB",
            paper_reference=PaperReference(fbank=9.2341, sota=11.1938, source=SUPERB_SG_REFERENCE),
            secondary_metrics=(SecondaryMetric("stoi", True, range=(-100.0, 100.0), unit="%"),
                               SecondaryMetric("pesq", True, range=PESQ_WB_RANGE, unit="PESQ")))

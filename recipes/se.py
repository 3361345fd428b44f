"""SUPERB-SG SE: speech enhancement on Voicebank-DEMAND, one STFT mask (BLSTM head, NPSM loss), PESQ/STOI/SI-SDRi."""

from pathlib import Path

from downstreams.stft_mask import STFTMasking
from superbench.audio_metrics import PESQ_WB_RANGE, SISDRI_RANGE
from superbench.tasks import SecondaryMetric, Task

TASK = Task(name="se", description="Speech enhancement: a mask over the noisy STFT gives back clean speech",
            metric="pesq", higher_is_better=True, target="sources",
            kind=STFTMasking(num_sources=1, metric="pesq", secondary=("stoi", "sisdri")),
            recipe=Path(__file__).with_suffix(".yaml"), order=11, metric_range=PESQ_WB_RANGE, metric_unit="PESQ",
            secondary_metrics=(SecondaryMetric("stoi", True, range=(-100.0, 100.0), unit="%"),
                               SecondaryMetric("sisdri", True, range=SISDRI_RANGE, unit="dB")))

"""SUPERB-SG VC: any-to-one voice conversion (VCC2020 task 1), a Taco2-AR decoder per target speaker, MCD/WER/ASV.

One fold per target speaker (TEF1, TEF2, TEM1, TEM2 on VCC2020): one model each, the reported numbers the mean
over targets, as SUPERB-SG. MCD is the main metric (it selects the checkpoint, lower is better); WER (of a
recogniser of the converted speech), ASV accept rate and DDUR are reported beside it; F0RMSE and F0CORR, undefined
for an utterance without voiced frames on either side, are kept per utterance in the predictions file. The task
has no reference points in the SUPERB or SG score: its WER and ASV depend on the vocoder and the recogniser,
which are not the paper's by default (leaderboard/published/superb-sg-vc-paper.csv says so for the paper's row).
"""

from pathlib import Path

from downstreams.vc import VoiceConversion
from superbench.task_info import ERROR_RATE, PERCENT, UNBOUNDED
from superbench.tasks import SecondaryMetric, Task

TASK = Task(name="vc", description="Voice conversion: a source speaker's utterance in the target speaker's voice",
            metric="mcd", higher_is_better=False, target="conversion", kind=VoiceConversion(),
            recipe=Path(__file__).with_suffix(".yaml"), order=18, metric_range=(0.0, 1000.0), metric_unit="dB",
            secondary_metrics=(SecondaryMetric("wer", False, range=ERROR_RATE, unit="%"),
                               SecondaryMetric("asv", True, range=PERCENT, unit="%"),
                               SecondaryMetric("ddur", False, range=UNBOUNDED, unit="s")))

"""SUPERB-SG OOD-ASR, spontaneous English: SBCSAE (s3prl ctc/sbcsae.yaml), character CTC, WER."""

from recipes.superb_sg import ood_task

TASK = ood_task(__file__, "Out-of-domain ASR: spontaneous English (SBCSAE), CTC over characters")

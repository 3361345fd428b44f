"""SUPERB-SG OOD-ASR, Arabic: Common Voice 7.0 `ar` (s3prl ctc/cv_config/cv_ar.yaml), character CTC, WER."""

from recipes.superb_sg import ood_task

TASK = ood_task(__file__, "Out-of-domain ASR: Arabic (Common Voice 7.0), CTC over characters")

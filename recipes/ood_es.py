"""SUPERB-SG OOD-ASR, Spanish: Common Voice 7.0 `es` (s3prl ctc/cv_config/cv_es.yaml), character CTC, WER."""

from recipes.superb_sg import ood_task

TASK = ood_task(__file__, "Out-of-domain ASR: Spanish (Common Voice 7.0), CTC over characters")

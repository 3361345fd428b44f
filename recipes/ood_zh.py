"""SUPERB-SG OOD-ASR, Mandarin: Common Voice 7.0 `zh-CN` (s3prl ctc/cv_config/cv_zh.yaml), character CTC, CER."""

from recipes.superb_sg import ood_task

TASK = ood_task(__file__, "Out-of-domain ASR: Mandarin (Common Voice 7.0 zh-CN), CTC over characters", metric="cer")

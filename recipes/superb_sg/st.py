"""SUPERB-SG speech translation: CoVoST 2 English -> German (s3prl speech_translation/config.yaml), BLEU."""

from recipes.superb_sg import st_task

TASK = st_task(__file__)

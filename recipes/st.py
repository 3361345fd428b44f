"""SUPERB-SG speech translation: CoVoST 2 English -> German (s3prl speech_translation/config.yaml), BLEU.

The sequence-to-sequence kind (`downstreams.seq2seq.Seq2SeqTranslation`: s2t_transformer encoder-decoder,
character sentencepiece vocabulary, beam search on test), case-sensitive detokenised BLEU. Its manifest's
target field is `translation`; it needs `pip install 'superbench[translation]'` (sentencepiece, sacrebleu).
Data: `superbench data prepare covost2 --root DIR` (Common Voice 4 English clips + `covost_v2.en_de.tsv`).

Reference points of superbench's own SG score (leaderboard/score.py; SUPERB-SG defines no overall score): the
SUPERB leaderboard's FBANK row (BLEU 2.32) and its best row, WavLM Large (26.5748), from its public.json.
"""

from pathlib import Path

from downstreams.seq2seq import Seq2SeqTranslation
from recipes.superb_sg import ST_ORDER
from superbench.task_info import PERCENT
from superbench.tasks import SUPERB_SG_REFERENCE, PaperReference, Task

TASK = Task(name="st", description="Speech translation: English speech to German text (CoVoST 2 en-de), "
            "encoder-decoder Transformer, BLEU", metric="bleu", higher_is_better=True, target="translation",
            kind=Seq2SeqTranslation(), recipe=Path(__file__).with_suffix(".yaml"), order=ST_ORDER,
            metric_range=PERCENT, paper_reference=PaperReference(fbank=2.32, sota=26.5748, source=SUPERB_SG_REFERENCE))

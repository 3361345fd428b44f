"""SUPERB-SG out-of-domain ASR and speech translation, staged: declared and runnable by file, not yet built-in tasks.

Four tasks on the CTC kind (`downstreams.ctc.CTCTranscription`, character CTC with s3prl's RNNs head),
after s3prl's `downstream/ctc/cv_config/cv_{es,zh,ar}.yaml` and `downstream/ctc/sbcsae.yaml`:

- `ood_es`: Spanish, Common Voice 7.0 (WER);
- `ood_zh`: Mandarin, Common Voice 7.0 zh-CN (CER: transcripts have no spaces);
- `ood_ar`: Arabic, Common Voice 7.0 (WER);
- `ood_sbcsae`: spontaneous American English, the Santa Barbara Corpus (WER).

Run one by its file, e.g. `superbench run --upstream fbank --task recipes/superb_sg/ood_es.py:TASK`.
They are not built-ins yet because a built-in is part of `--task all`, whose CI baseline has no rows for
them. Data: `superbench data prepare common-voice --root CV/es --option language=es` (or zh-CN, ar)
and `superbench data prepare sbcsae --root SBCSAE`; the offline demo corpus has a part for each
Common Voice task (`recipes/prepare/demo_ood_*.py`, eSpeak NG voices of the language) and none for SBCSAE
(eSpeak has no spontaneous speech to imitate). The character inventory is that of the training
transcripts (`inventory="train"`): a dev or test transcript with another character is refused before
extraction, naming its file and line.

- `st`: speech translation, English speech to German text (CoVoST 2 en-de, s3prl's `speech_translation`), on the
  sequence-to-sequence kind (`downstreams.seq2seq.Seq2SeqTranslation`: s2t_transformer encoder-decoder, character
  sentencepiece vocabulary, beam search on test), case-sensitive detokenised BLEU. Its manifest's target field is
  `translation`; it needs `pip install 'superbench[translation]'` (sentencepiece, sacrebleu).
"""

from __future__ import annotations

from pathlib import Path

from downstreams import CTCTranscription
from downstreams.seq2seq import Seq2SeqTranslation
from superbench.task_info import ERROR_RATE, PERCENT
from superbench.tasks import Task

#: The staged out-of-domain ASR tasks (the CTC kind), by name.
OOD_TASKS = ("ood_es", "ood_zh", "ood_ar", "ood_sbcsae")
#: The staged tasks, by name (each `recipes/superb_sg/<name>.py:TASK`): OOD-ASR, then speech translation.
STAGED_TASKS = (*OOD_TASKS, "st")


_DECLARED: dict[str, Task] = {}


def ood_task(module_file: str, description: str, metric: str = "wer") -> Task:
    """The task declared by `recipes/superb_sg/<name>.py` (recipe: the YAML beside it). One object per
    name, however often the file is loaded (`--task FILE:TASK` executes it again), so the registry
    sees the same task when it is named twice in one process."""
    path = Path(module_file)
    if path.stem not in _DECLARED:
        _DECLARED[path.stem] = Task(name=path.stem, description=description, metric=metric,
                                    higher_is_better=False, target="text",
                                    kind=CTCTranscription(unit="chars", inventory="train"),
                                    recipe=path.resolve().with_suffix(".yaml"), metric_range=ERROR_RATE)
    return _DECLARED[path.stem]


def st_task(module_file: str) -> Task:
    """The speech translation task of `recipes/superb_sg/st.py` (one object per process, as `ood_task`)."""
    path = Path(module_file)
    if path.stem not in _DECLARED:
        _DECLARED[path.stem] = Task(name=path.stem, description="Speech translation: English speech to German text "
                                    "(CoVoST 2 en-de), encoder-decoder Transformer, BLEU",
                                    metric="bleu", higher_is_better=True, target="translation",
                                    kind=Seq2SeqTranslation(), recipe=path.resolve().with_suffix(".yaml"),
                                    metric_range=PERCENT)
    return _DECLARED[path.stem]

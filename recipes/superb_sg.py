"""Shared declarations of the SUPERB-SG speech translation and out-of-domain ASR tasks (a helper module: it
declares no `TASK` itself, so task discovery passes over it).

Four OOD-ASR tasks on the CTC kind (`downstreams.ctc.CTCTranscription`, character CTC with s3prl's RNNs head),
after s3prl's `downstream/ctc/cv_config/cv_{es,zh,ar}.yaml` and `downstream/ctc/sbcsae.yaml`, one group named
`OOD_ASR_GROUP` (`--task ood_asr` runs the four):

- `ood_es`: Spanish, Common Voice 7.0 (WER);
- `ood_zh`: Mandarin, Common Voice 7.0 zh-CN (CER: transcripts have no spaces);
- `ood_ar`: Arabic, Common Voice 7.0 (WER);
- `ood_sbcsae`: spontaneous American English, the Santa Barbara Corpus (WER).

Data: `superbench data prepare common-voice --root CV/es --option language=es` (or zh-CN, ar) and
`superbench data prepare sbcsae --root SBCSAE`; the offline demo corpus has a part for each Common Voice task
(`recipes/prepare/demo_ood_*.py`, eSpeak NG voices of the language) and none for SBCSAE (eSpeak has no
spontaneous speech to imitate: `--task all|ood_asr --data demo` skips it and says so). The character inventory
is that of the training transcripts (`inventory="train"`): a dev or test transcript with another character is
refused before extraction, naming its file and line.

`st` (`recipes/st.py`): speech translation, English speech to German text (CoVoST 2 en-de, s3prl's
`speech_translation`), on the sequence-to-sequence kind (`downstreams.seq2seq.Seq2SeqTranslation`). Its
manifest's target field is `translation`; it needs `pip install 'superbench[translation]'`.
"""

from __future__ import annotations

from pathlib import Path

from downstreams import CTCTranscription
from superbench.task_info import ERROR_RATE
from superbench.tasks import Task

#: The task group of the out-of-domain ASR tasks: `--task ood_asr` expands to them (`superbench.tasks.task_groups`).
OOD_ASR_GROUP = "ood_asr"
#: The out-of-domain ASR tasks (the CTC kind), by name, in column order.
OOD_TASKS = ("ood_es", "ood_zh", "ood_ar", "ood_sbcsae")
#: SUPERB-SG's tasks of this part: OOD-ASR, then speech translation.
SG_PART2_TASKS = (*OOD_TASKS, "st")
#: Table columns: after SUPERB's ten tasks and SE/SS (11, 12), speech translation, then the OOD-ASR tasks.
ST_ORDER = 13


def ood_task(module_file: str, description: str, metric: str = "wer") -> Task:
    """The OOD-ASR task declared by `recipes/<name>.py` (recipe: the YAML beside it), in group `OOD_ASR_GROUP`."""
    path = Path(module_file)
    return Task(name=path.stem, description=description, metric=metric, higher_is_better=False, target="text",
                kind=CTCTranscription(unit="chars", inventory="train"), recipe=path.with_suffix(".yaml"),
                order=ST_ORDER + 1 + OOD_TASKS.index(path.stem), metric_range=ERROR_RATE, group=OOD_ASR_GROUP)

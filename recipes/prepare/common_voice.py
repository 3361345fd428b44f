"""Common Voice (7.0, as SUPERB-SG) -> the OOD-ASR manifest of one language: `ood_es`, `ood_zh` or `ood_ar`.

The standard layout of one language's folder (`--language es|zh-CN|ar`, default es):

    ROOT/clips/common_voice_es_19612345.mp3 ...
    ROOT/train.tsv  ROOT/dev.tsv  ROOT/test.tsv    (columns client_id, path, sentence, up_votes, ..., accent, ...)

As s3prl's `downstream/ctc/corpus/common_voice_preprocess.py` (SUPERB-SG's OOD-ASR recipe):

- Spanish keeps only the rows whose `accent` is `mexicano` (the column `accents` of later releases is read too);
- each sentence is normalised: Unicode NFKC, upper case, ASCII punctuation except the apostrophe and a list of
  CJK, Arabic and typographic marks (`REMOVED`) replaced by spaces, `’` read as `'`, the bopomofo `ㄧ` as `一`,
  runs of spaces collapsed, then stripped; Mandarin drops its spaces;
- a sentence is dropped (empty after normalising) when: Mandarin or Arabic has a Latin letter or an apostrophe;
  Mandarin has one of s3prl's stray foreign characters (`ZH_EXCEPTIONS`), Spanish one of `ES_EXCEPTIONS`.

Unlike s3prl, the mp3s are not converted to 16 kHz wav files: rows point at the clips, read by soundfile
(libsndfile >= 1.1 decodes MPEG layer III: the `soundfile` wheel bundles libsndfile 1.2, check with
`soundfile.available_formats()["MP3"]`) and resampled to 16 kHz on load, as any audio. Every clip is decoded
once here: one that does not decode, or whose decoded length disagrees with its header, is an error naming the
file, before anything is written (`--skip-bad` leaves them out). The speaker is `client_id`. The character
inventory is the training transcripts'; a dev or test row with another character is left out (s3prl maps it
to <unk>) and counted in meta.json `extra.dropped`, as are the rows the rules above drop.
"""

from __future__ import annotations

import csv
import re
import string
import unicodedata
from pathlib import Path
from typing import Any

from recipes.prepare import Dropped, PrepareError, Problems, default_out, probe_audio
from superbench.manifest import write_task_manifest
from superbench.preparers import Preparer, PrepareRequest

#: Common Voice language -> the task it prepares.
TASKS = {"es": "ood_es", "zh-CN": "ood_zh", "ar": "ood_ar"}
#: Spanish: the accent s3prl keeps.
SPANISH_ACCENT = "mexicano"
#: s3prl's rm_punctuation: string.punctuation without the apostrophe, then these marks (spaces among them).
REMOVED = string.punctuation.replace("'", "") + (
    "\u300c\u300d\u3001\u22ef\u3002\u300a\u300b\u4e36\u2013\u2014\u2015\u2018\u201c\u201d\u300e\u300f\u301c\u30fc"
    "\u30fb\u262d\xab\xbb\u060c\u061b\u061f\u2010\u2212\xa1\xbf\u02d0 \u0301\xb7\xd7 \u0303 \u030c\u2500\u3008\u3009")
TRANSLATION = str.maketrans(REMOVED + "\u2019" + "\u3127", " " * len(REMOVED) + "'" + "\u4e00")
ES_EXCEPTIONS = frozenset("しらゴミムラ消箱良")
ZH_EXCEPTIONS = frozenset("ΜИТオカドヤ䴕")


def normalize(sentence: str, language: str) -> str:
    """s3prl's `normalize`: the transcript of a Common Voice sentence, or "" when the row is dropped."""
    sent = unicodedata.normalize("NFKC", sentence).upper().translate(TRANSLATION)
    sent = re.sub(" +", " ", sent)
    if language == "zh-CN":
        sent = sent.replace(" ", "")
        if any(c.isascii() and c.isalpha() or c == "'" for c in sent) or ZH_EXCEPTIONS & set(sent):
            return ""
    if language == "ar" and any(c.isascii() and c.isalpha() or c == "'" for c in sent):
        return ""
    if language == "es" and ES_EXCEPTIONS & set(sent):
        return ""
    return sent.strip()


def decode_check(path: Path, problems: Problems) -> dict[str, Any] | None:
    """Header and a full decode of one clip: its sample rate and length, or None after recording the problem."""
    import soundfile as sf

    info = probe_audio(path, problems)
    if info is None:
        return None
    try:
        frames = len(sf.read(str(path), dtype="float32", always_2d=True)[0])
    except Exception as exc:  # libsndfile reports a damaged mp3 with several exception types
        problems.add(f"{path}: the mp3 does not decode ({str(exc).strip()[:120]})")
        return None
    if frames != info["num_samples"]:
        problems.add(f"{path}: decodes to {frames} samples, its header says {info['num_samples']}")
        return None
    return info


def _read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (Common Voice's layout: ROOT/clips/*.mp3 and ROOT/train.tsv, "
                                f"dev.tsv, test.tsv of one language)")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    absent = {"client_id", "path", "sentence"} - set(rows[0] if rows else {})
    if rows and absent:
        raise PrepareError(f"{path}: no column {', '.join(sorted(absent))} (Common Voice's tsv has client_id, path, "
                           f"sentence, ...)")
    return rows


def prepare_common_voice(root: str | Path, out: str | Path | None = None, language: str = "es",
                         skip_bad: bool = False) -> Path:
    """ROOT (one language's folder) -> OUT/ood_<lang>; returns that folder."""
    if language not in TASKS:
        raise ValueError(f"Common Voice language {language!r} is not a SUPERB-SG OOD-ASR language; "
                         f"choose one of {', '.join(TASKS)}")
    root, task = Path(root), TASKS[language]
    out = Path(out) if out else default_out("common-voice")
    problems, dropped = Problems(f"common-voice ({language})", skip_bad), Dropped(f"common-voice ({language})")
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "dev", "test"):
        tsv = root / f"{split}.tsv"
        rows = []
        for n, row in enumerate(_read_tsv(tsv), 2):
            where = f"{tsv}:{n}"
            if language == "es":
                accent = row.get("accent", row.get("accents"))
                if accent is None:
                    raise PrepareError(f"{tsv}: no accent column; s3prl's Spanish set keeps the rows whose accent "
                                       f"is {SPANISH_ACCENT!r}")
                if accent != SPANISH_ACCENT:
                    dropped.add(f"rows with an accent other than {SPANISH_ACCENT!r} (s3prl's Spanish set)", where)
                    continue
            text = normalize(row["sentence"] or "", language)
            if not text:
                dropped.add("sentences s3prl's normalisation drops", f"{where} {row['sentence']!r}")
                continue
            clip = root / "clips" / row["path"]
            info = decode_check(clip, problems)
            if info is None:
                continue
            rows.append({"id": Path(row["path"]).stem, "audio": str(clip.resolve()), "speaker": row["client_id"],
                         **info, "text": text})
        splits[split] = rows
    problems.raise_if_any()
    inventory = sorted({c for row in splits["train"] for c in row["text"] if not c.isspace()})
    for split in ("dev", "test"):
        kept = []
        for row in splits[split]:
            outside = sorted(set(row["text"]) - set(inventory) - {" "})
            if outside:
                dropped.add("dev/test rows with a character no training transcript has", f"{split} {row['id']} "
                            f"{''.join(outside)!r}")
            else:
                kept.append(row)
        splits[split] = kept
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"{root}: no usable {split} row")
    return write_task_manifest(out / task, task=task, corpus="common-voice", version=language, label_field="text",
                               labels=inventory, splits=splits,
                               extra={"language": language, "layout": "ROOT/clips/*.mp3, ROOT/{train,dev,test}.tsv",
                                      "normalisation": "s3prl ctc/corpus/common_voice_preprocess.py normalize",
                                      **({"accent": SPANISH_ACCENT} if language == "es" else {}),
                                      "dropped": dropped.report()})


def _prepare(request: PrepareRequest) -> Path:
    language = request.options.get("language") or "es"
    return prepare_common_voice(request.root, request.out, language=language, skip_bad=request.skip_bad).parent


PREPARER = Preparer("common-voice", prepare=_prepare, writes="ood_es, ood_zh, ood_ar (one per --language)",
                    options={"language": "the Common Voice language: es (default), zh-CN or ar"})

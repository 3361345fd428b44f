"""CoVoST 2 English -> German -> the speech translation manifest `st` (SUPERB-SG's ST, s3prl's
`speech_translation`).

The standard layout: the Common Voice 4 English release, with CoVoST 2's translation table beside it,

    ROOT/clips/common_voice_en_19612345.mp3 ...
    ROOT/validated.tsv                         (Common Voice: client_id, path, sentence, ...)
    ROOT/covost_v2.en_de.tsv                   (CoVoST 2: path, sentence, translation, client_id, split)

`split` is `train`, `dev` or `test` (CoVoST 2's own splits, which s3prl uses as they are). A row's speaker is its
`client_id`, or, where the CoVoST table has none (the table as released leaves it to Common Voice), the
`client_id` of its clip in `validated.tsv`. The German `translation` is the target, kept as written (BLEU is
case-sensitive and detokenised); the English `sentence` is kept as `text`.

Every clip is decoded once here with soundfile: libsndfile >= 1.1 decodes MPEG layer III (the `soundfile` wheel
bundles libsndfile 1.2; `soundfile.available_formats()["MP3"]` says whether yours does). Bad input is reported
before anything is written, every problem at once, each naming the table's file and line: a row whose
translation is empty (no target to learn), a split other than train/dev/test, a clip that is missing or does
not decode, a speaker found nowhere (`--skip-bad` leaves those rows out instead).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from recipes.prepare import PrepareError, Problems, default_out
from recipes.prepare.common_voice import decode_check
from superbench.manifest import write_task_manifest
from superbench.preparers import Preparer, PrepareRequest

TASK = "st"
#: CoVoST 2's table of one language pair, in ROOT.
TABLE = "covost_v2.en_de.tsv"
#: The columns the table must have (`client_id` may also come from Common Voice's `validated.tsv`).
COLUMNS = ("path", "sentence", "translation", "split")
SPLITS = ("train", "dev", "test")
LAYOUT = f"ROOT/clips/*.mp3, ROOT/validated.tsv (Common Voice 4 English), ROOT/{TABLE} (CoVoST 2)"


def require_mp3() -> None:
    """Refuse, before reading anything, a libsndfile that cannot decode the clips (it needs >= 1.1)."""
    import soundfile as sf

    if "MP3" not in sf.available_formats():
        raise PrepareError(f"covost2: this soundfile ({sf.__version__}) uses libsndfile "
                           f"{sf.__libsndfile_version__}, which cannot decode mp3 (libsndfile >= 1.1 can; "
                           f"`pip install -U soundfile` bundles 1.2)")


def _read_table(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a tab-separated table with a header (Common Voice and CoVoST quote nothing)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (CoVoST 2's layout: {LAYOUT})")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(n, row) for n, row in enumerate(reader, 2)]


def _speakers(root: Path) -> dict[str, str]:
    """Clip -> client_id from Common Voice's `validated.tsv` (empty when the file is absent)."""
    path = root / "validated.tsv"
    if not path.is_file():
        return {}
    return {row["path"]: row["client_id"] for _, row in _read_table(path) if row.get("path") and row.get("client_id")}


def prepare_covost2(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT (Common Voice 4 English + CoVoST 2's en-de table) -> OUT/st; returns that folder."""
    require_mp3()
    root = Path(root)
    out = Path(out) if out else default_out("covost2")
    table = root / TABLE
    rows = _read_table(table)
    header = set(rows[0][1]) if rows else set()
    absent = [c for c in COLUMNS if c not in header]
    if absent:
        raise PrepareError(f"{table}: no column {', '.join(absent)} (CoVoST 2's table has "
                           f"{', '.join(COLUMNS)}, and client_id)")
    speakers = {} if "client_id" in header and all(r.get("client_id") for _, r in rows) else _speakers(root)
    problems = Problems("covost2", skip_bad)
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    seen: dict[str, int] = {}
    for n, row in rows:
        where = f"{table}:{n}"
        clip_name = (row.get("path") or "").strip()
        translation = (row.get("translation") or "").strip()
        split = (row.get("split") or "").strip()
        bad = []
        if not clip_name:
            bad.append("no clip path")
        elif clip_name in seen:
            bad.append(f"clip {clip_name} already listed on line {seen[clip_name]}")
        if not translation:
            bad.append(f"clip {clip_name or '?'} has no translation (the German target is empty)")
        if split not in SPLITS:
            bad.append(f"split {split!r} is not one of {', '.join(SPLITS)}")
        speaker = (row.get("client_id") or "").strip() or speakers.get(clip_name, "")
        if clip_name and not speaker:
            bad.append(f"clip {clip_name} has no client_id, here or in {root / 'validated.tsv'}")
        if bad:
            problems.add(f"{where}: {'; '.join(bad)}")
            continue
        seen[clip_name] = n
        clip = root / "clips" / clip_name
        if not clip.is_file():
            problems.add(f"{where}: clip {clip} is missing")
            continue
        found = Problems("covost2")
        info = decode_check(clip, found)
        if info is None:
            problems.add(f"{where}: {'; '.join(found.items)}")
            continue
        splits[split].append({"id": Path(clip_name).stem, "audio": str(clip.resolve()), "speaker": speaker, **info,
                              "translation": translation, "text": (row.get("sentence") or "").strip()})
    problems.raise_if_any()
    for split, kept in splits.items():
        if not kept:
            raise PrepareError(f"{table}: no usable {split} row")
    return write_task_manifest(out / TASK, task=TASK, corpus="covost2", version="2", label_field="translation",
                               labels=[], splits=splits,
                               extra={"source_language": "en", "target_language": "de", "layout": LAYOUT,
                                      "splits": "CoVoST 2's own (the table's split column)",
                                      "target": "the translation as written (case-sensitive, detokenised BLEU)"})


def _prepare(request: PrepareRequest) -> Path:
    return prepare_covost2(request.root, request.out, skip_bad=request.skip_bad).parent


PREPARER = Preparer("covost2", prepare=_prepare, writes="st (CoVoST 2 English -> German)")

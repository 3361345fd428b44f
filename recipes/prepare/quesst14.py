"""QUESST 2014 -> QbE manifest: the English subset SUPERB uses, scored against the whole ground truth.

Layout (quesst14Database.tgz): ROOT/Audio/*.wav (documents), ROOT/dev_queries/*.wav, ROOT/eval_queries/*.wav
and ROOT/scoring/ with language_key_{utterances,dev,eval}.lst ("<path> <language>" per line) and the NIST STD
ground truth groundtruth_quesst14_{dev,eval}/ (*.ecf.xml, *.rttm, *.tlist.xml, as score-TWV-Cnxe.sh reads them).

English subset as s3prl's quesst14_dtw/dataset.py selects it: the lines of the language keys whose language
is `nnenglish`, the path's first component dropped (re.sub(r"^.*?/", "", path)) and the rest taken under ROOT.
Document ids and query ids (= term ids) are the file stems.

Ground truth: per query split, the RTTM's LEXEME lines (field 2 the document, field 6 the term) of the terms
in the TLIST. English terms' occurrences in manifest documents become `hit` lines, their occurrences elsewhere
`missed` counts; terms with occurrences whose queries are not in the manifest (the other languages) are
`unscored_terms` and the ECF's excerpt count is `documents`, so MTWV is what QUESST's scorer gives s3prl's
English-only output (see downstreams/qbe.py).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from recipes.prepare import PrepareError, Problems, audio_row, default_out, simple_preparer
from superbench.io import atomic_write_text
from superbench.manifest import Fold, write_task_manifest

ENGLISH = "nnenglish"
#: Query split of the manifest -> (language key of its queries, ground-truth folder).
QUERY_SPLITS = {"dev": ("language_key_dev.lst", "groundtruth_quesst14_dev"),
                "test": ("language_key_eval.lst", "groundtruth_quesst14_eval")}
DOCS_KEY = "language_key_utterances.lst"


def _english_paths(root: Path, lst: Path, problems: Problems) -> list[tuple[Path, str]]:
    """(audio path, "file:line") of the English lines of a language key."""
    if not lst.is_file():
        raise FileNotFoundError(f"QUESST 2014 language key not found: {lst}")
    out = []
    for n, line in enumerate(lst.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            problems.add(f"{lst}:{n}: expected '<audio path> <language>', got {line!r}")
            continue
        if parts[1] == ENGLISH:
            out.append((root / re.sub(r"^.*?/", "", parts[0]), f"{lst}:{n}"))
    return out


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise PrepareError(f"{folder}: expected exactly one {pattern} (the ground truth score-TWV-Cnxe.sh reads), "
                           f"found {len(found)}")
    return found[0]


def _xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise PrepareError(f"{path}: not valid XML ({exc})") from exc


def _read_truth(folder: Path) -> tuple[dict[str, set[str]], int]:
    """({term: documents it occurs in}, ECF document count) of one ground-truth folder (trials are per file:
    a term occurring twice in a document is one target trial)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"QUESST 2014 ground truth not found: {folder}")
    ecf, rttm, tlist = _one(folder, "*.ecf.xml"), _one(folder, "*.rttm"), _one(folder, "*.tlist.xml")
    excerpts = {Path(e.get("audio_filename", "")).stem for e in _xml(ecf).iter("excerpt")}
    excerpts.discard("")
    if not excerpts:
        raise PrepareError(f"{ecf}: no <excerpt audio_filename=...> elements (the documents terms are tried against)")
    terms = {t.get("termid") for t in _xml(tlist).iter("term")} - {None}
    if not terms:
        raise PrepareError(f"{tlist}: no <term termid=...> elements")
    occurrences: dict[str, set[str]] = defaultdict(set)
    bad = []
    for n, line in enumerate(rttm.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] != "LEXEME":
            continue
        if len(parts) < 6:
            bad.append(f"{rttm}:{n}: a LEXEME line needs 'LEXEME <file> <channel> <tbeg> <dur> <term> ...', "
                       f"got {line.strip()!r}")
            continue
        if parts[5] in terms:
            occurrences[parts[5]].add(Path(parts[1]).stem)
    if bad:
        raise PrepareError(f"quesst14: {len(bad)} malformed ground-truth line(s):\n  " + "\n  ".join(bad[:10]))
    return dict(occurrences), len(excerpts)


def prepare_quesst14(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT = the extracted quesst14Database folder; writes OUT/qbe (docs, dev and test splits + ground truth)."""
    root = Path(root)
    out = Path(out) if out else default_out("quesst14")
    scoring = root / "scoring"
    problems = Problems("quesst14", skip_bad)
    splits: dict[str, list[dict]] = {"docs": [], "dev": [], "test": []}
    for path, where in _english_paths(root, scoring / DOCS_KEY, problems):
        if not path.is_file():
            problems.add(f"{where}: names a missing file {path}")
            continue
        row = audio_row(path.stem, path, "", problems, role="doc")
        if row:
            splits["docs"].append(row)
    for split, (key, _) in QUERY_SPLITS.items():
        for path, where in _english_paths(root, scoring / key, problems):
            if not path.is_file():
                problems.add(f"{where}: names a missing file {path}")
                continue
            row = audio_row(path.stem, path, "", problems, role="query", term=path.stem)
            if row:
                splits[split].append(row)
    problems.raise_if_any()
    folder = out / "qbe"
    folder.mkdir(parents=True, exist_ok=True)
    docs = {r["id"] for r in splits["docs"]}
    names, summary = [], {}
    for split, (_, gt) in QUERY_SPLITS.items():
        occurrences, documents = _read_truth(scoring / gt)
        ours = {r["term"] for r in splits[split]}
        lines = [f"# QUESST 2014 {gt}, English queries of the manifest; generated by recipes/prepare/quesst14.py",
                 f"documents {documents}",
                 f"unscored_terms {sum(1 for t, where in occurrences.items() if where and t not in ours)}"]
        for term in sorted(ours & set(occurrences)):
            lines += [f"hit {term} {d}" for d in sorted(occurrences[term] & docs)]
            if occurrences[term] - docs:
                lines.append(f"missed {term} {len(occurrences[term] - docs)}")
        name = f"groundtruth_{split}.txt"
        atomic_write_text(folder / name, "\n".join(lines) + "\n")
        names.append(name)
        summary[split] = {"queries": len(ours), "terms_with_occurrences": len(occurrences), "documents": documents}
    return write_task_manifest(folder, task="qbe", corpus="quesst14", version="2014", label_field="role", labels=[],
                               splits=splits, folds=[Fold("default", train="docs", dev="dev", test="test")],
                               sidecars=names, extra={"subset": "English (nnenglish) queries and documents, "
                                                                "as s3prl quesst14_dtw", "ground_truth": summary})


PREPARER = simple_preparer("quesst14", prepare_quesst14, "qbe")

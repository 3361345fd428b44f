"""Audio SNIPS -> SF manifest, from the layout s3prl's `downstream/ctc/corpus/snips.py` reads.

ROOT/all.iob.snips.txt (written by s3prl's preprocess/snips_preprocess.py), one utterance a line:

    <uid> BOS W1 W2 ... Wn EOS<TAB>O s1 s2 ... sn <intent>

words upper case, `s_i` the bare slot name of word i (`artist`, `timeRange`) or `O`; audio in
ROOT/{train,valid,test}/<uid>.wav; the speaker is the uid up to its first `-` (`Aditi-snips-valid-0`).
The words become slot markup exactly as s3prl's `CharacterTextSlotEncoder.encode` tokenises them: the
words `? ! . , ; -` (and any substring of "?!.,;-", as its `in` test) are dropped, `&` becomes `AND`, and
a run of consecutive words with the same slot name is one slot (`B-x` before its first word, `E-x` after
its last). Splits as s3prl's snips.yaml: train = `train/` of TRAIN_SPEAKERS, dev = `valid/` of
VALID_SPEAKERS, test = `test/` of TEST_SPEAKERS; other speakers' files, and wav files without a
transcript line (s3prl skips them too), are left out and counted in meta.json `extra.dropped`.

Bad input (a line without the tab, without BOS/EOS, with a label count that does not match its words,
with markup that does not parse, a duplicate uid, unreadable audio) is reported by file and line before
anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from downstreams.slot_filling import SlotMarkupError, is_tag, parse_slots
from recipes.prepare import Dropped, PrepareError, Problems, audio_row, default_out, simple_preparer
from superbench.manifest import write_task_manifest

log = logging.getLogger(__name__)

TRANSCRIPTS = "all.iob.snips.txt"
#: s3prl downstream/ctc/snips.yaml (commit ec8064b): the speakers of each split.
TRAIN_SPEAKERS = ("Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli")
VALID_SPEAKERS = ("Aditi", "Amy", "Geraint", "Nicole")
TEST_SPEAKERS = ("Brian", "Emma", "Raveena", "Russell")
#: manifest split -> (folder under ROOT, speakers)
SPLITS = {"train": ("train", TRAIN_SPEAKERS), "dev": ("valid", VALID_SPEAKERS), "test": ("test", TEST_SPEAKERS)}


def iob_to_markup(words: list[str], labels: list[str]) -> str:
    """s3prl's character-slot tokenisation of one utterance, written as slot markup (see the module doc)."""
    out: list[str] = []
    last = len(words) - 1
    for i, (word, label) in enumerate(zip(words, labels)):
        if word in "?!.,;-":
            continue
        if word == "&":
            word = "AND"
        if label != "O" and (i == 0 or labels[i - 1] != label):
            out.append(f"B-{label}")
        out.append(word)
        if label != "O" and (i == last or labels[i + 1] != label):
            out.append(f"E-{label}")
    return " ".join(out)


def parse_line(line: str) -> tuple[str, str, str]:
    """(uid, slot markup, intent) of one all.iob.snips.txt line; ValueError saying what is wrong."""
    uid, _, rest = line.strip().partition(" ")
    if not uid or not rest:
        raise ValueError("expected '<uid> BOS ... EOS<TAB>O ... <intent>'")
    if rest.count("\t") != 1:
        raise ValueError(f"expected one tab between the words and the slot labels, found {rest.count(chr(9))}")
    sentence, iob = rest.split("\t")
    words, labels = sentence.strip().split(" "), iob.strip().split(" ")
    if len(words) < 2 or words[0] != "BOS" or words[-1] != "EOS":
        raise ValueError("the words must start with BOS and end with EOS")
    if len(labels) < 2 or labels[0] != "O":
        raise ValueError("the slot labels must start with O (for BOS) and end with the intent")
    words, intent, labels = words[1:-1], labels[-1], labels[1:-1]
    if len(words) != len(labels):
        raise ValueError(f"{len(words)} word(s) but {len(labels)} slot label(s)")
    if not words:
        raise ValueError("no words between BOS and EOS")
    tagged = [w for w in words if is_tag(w)]
    if tagged:
        raise ValueError(f"word(s) {tagged[:3]} look like slot tags (B-/E- prefix)")
    bad = [lab for lab in labels if lab != "O" and (any(c in lab for c in ":;") or not lab.strip())]
    if bad:
        raise ValueError(f"slot name(s) {bad[:3]} hold ':' or ';'")
    markup = iob_to_markup(words, labels)
    try:
        parse_slots(markup)
    except SlotMarkupError as exc:
        raise ValueError(f"slot markup {markup!r} does not parse: {exc}") from None
    if not markup:
        raise ValueError("nothing left after dropping punctuation")
    return uid, markup, intent


def read_transcripts(path: Path, problems: Problems) -> dict[str, tuple[str, str, int]]:
    """uid -> (markup, intent, line number); malformed lines and duplicate uids go to `problems`."""
    out: dict[str, tuple[str, str, int]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            uid, markup, intent = parse_line(line)
        except ValueError as exc:
            problems.add(f"{path}:{n}: {exc}")
            continue
        if uid in out:
            problems.add(f"{path}:{n}: uid {uid!r} already on line {out[uid][2]}")
            continue
        out[uid] = (markup, intent, n)
    return out


def prepare_snips(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """Index an Audio SNIPS folder (s3prl layout, see the module doc); returns OUT/sf."""
    root = Path(root)
    out = Path(out) if out else default_out("snips")
    path = root / TRANSCRIPTS
    if not path.is_file():
        raise FileNotFoundError(f"Audio SNIPS transcript file not found: {path} (s3prl's "
                                f"preprocess/snips_prepare_data.sh writes it)")
    problems = Problems("snips", skip_bad)
    dropped = Dropped("snips")
    transcripts = read_transcripts(path, problems)
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, (folder, speakers) in SPLITS.items():
        if not (root / folder).is_dir():
            raise FileNotFoundError(f"Audio SNIPS split folder not found: {root / folder}")
        rows = []
        for wav in sorted((root / folder).rglob("*.wav")):
            uid = wav.stem
            speaker = uid.split("-")[0]
            if uid not in transcripts:
                dropped.add(f"wav files without a line in {TRANSCRIPTS}", str(wav))
                continue
            if speaker not in speakers:
                dropped.add(f"utterances of speakers outside s3prl's {folder} speaker list", uid)
                continue
            markup, intent, _ = transcripts[uid]
            row = audio_row(uid, wav, speaker, problems, slots=markup, intent=intent)
            if row:
                rows.append(row)
        splits[split] = rows
    problems.raise_if_any()
    empty = [f"{SPLITS[s][0]}/ (speakers {', '.join(SPLITS[s][1])})" for s, rows in splits.items() if not rows]
    if empty:
        raise PrepareError(f"snips: no usable utterance in {'; '.join(empty)} under {root}")
    chars, tags = set(), set()
    for rows in splits.values():
        for r in rows:
            for token in r["slots"].split():
                if is_tag(token):
                    tags.add(token)
                else:
                    chars.update(token)
    reasons = dropped.report()
    log.info("snips: %s utterances (train/dev/test)", "/".join(str(len(splits[s])) for s in SPLITS))
    return write_task_manifest(out / "sf", task="sf", corpus="snips", version="audio-snips-s3prl",
                               label_field="slots", labels=sorted(chars) + sorted(tags), splits=splits,
                               extra={"speakers": {s: list(spk) for s, (_, spk) in SPLITS.items()},
                                      "markup": "s3prl CharacterTextSlotEncoder tokenisation as B-<slot> ... "
                                                "E-<slot> markup", "dropped": reasons})


PREPARER = simple_preparer("snips", prepare_snips, "sf")

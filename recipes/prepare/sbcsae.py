"""SBCSAE, the Santa Barbara Corpus of Spoken American English -> the `ood_sbcsae` manifest (SUPERB-SG OOD-ASR).

s3prl's `downstream/ctc/sbcsae.yaml` reads the tsv files of vectominist/SBCSAE-preprocess (its README points
there); this preparer applies the same rules to the corpus as that repository downloads it:

    ROOT/mp3/01.mp3 ... 60.mp3          (media.talkbank.org/ca/SBCSAE)
    ROOT/trn/SBC001.trn ... SBC060.trn  (the UCSB transcripts: "t1 t2<TAB>SPEAKER:<TAB>text" and variants)

- splits by recording: 1-46 train, 47-53 dev, 54-60 test;
- a transcript line becomes a segment when it lasts 0.1 to 15 s; lines that overlap an earlier kept segment
  (ordered by end time) are dropped together with the segments they overlap (cross-talk);
- transcript conventions are cleaned as there: a line with `[` `]` (overlap) or `<` `>` (uncertain hearing)
  is dropped; `(...)` comments (breaths, laughter, vocal noises) are removed, and a line with an unmatched
  parenthesis dropped; `=` (lengthening) removed; the marks `.,-%?!@+~_*#&"` become spaces, `’` an
  apostrophe; upper case, spaces collapsed; a line with `XX` or a lone `X` (unintelligible) or any
  character outside A-Z, space and apostrophe is dropped, and so is a transcript of one character;
- the recording is decoded (an mp3 that does not decode is an error naming it, before anything is written),
  down-mixed to mono, resampled to 16 kHz (soxr HQ; s3prl's script uses librosa's kaiser_best) and each segment
  written as a 16 kHz float WAV `OUT/ood_sbcsae/wav/SBC<rec>_<start cs>-<end cs>.wav` (samples from
  floor(16000 t1) to floor(16000 t2) inclusive, as there).

A recording whose transcript is absent is skipped (logged); a transcript without its mp3 is a problem. The
speaker of a row is its recording. What the rules drop is counted in meta.json `extra.dropped`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from recipes.prepare import Dropped, Problems, default_out
from superbench.manifest import write_task_manifest
from superbench.preparers import Preparer, PrepareRequest

TASK = "ood_sbcsae"
SAMPLE_RATE = 16000
MIN_SECONDS, MAX_SECONDS = 0.1, 15.0
SPLITS = {"train": range(1, 47), "dev": range(47, 54), "test": range(54, 61)}
MARKS = ".,-%?!@+~_*#&\""
_SPACES = str.maketrans(MARKS + "\u2019", " " * len(MARKS) + "'")
_ALLOWED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


def clean(text: str) -> str:
    """A transcript line's text as the ASR target, or "" when the line is dropped (see the module doc)."""
    if any(c in text for c in "[]<>"):
        return ""
    text = re.sub(r"\([^)]*\)", "", text)
    if "(" in text or ")" in text:
        return ""
    text = " ".join(text.replace("=", "").translate(_SPACES).split()).upper()
    if "XX" in text or " X " in f" {text} " or not set(text) <= _ALLOWED:
        return ""
    return text if len(text) > 1 else ""


def parse_line(line: str) -> tuple[float, float, str] | None:
    """(start, end, text) of a .trn line in any of its layouts, or None for a line without times."""
    fields = line.strip("\t\n").split("\t")
    try:
        if len(fields) == 4:
            try:
                start, end = float(fields[0]), float(fields[1])
            except ValueError:
                start, end = (float(t) for t in fields[0].split(" ")[:2])
            return start, end, fields[3]
        times = fields[0].split(" ")
        if len(fields) == 2 and len(times) >= 2:
            return float(times[0]), float(times[1]), fields[1]
        if len(fields) == 3 and len(times) == 2:
            return float(times[0]), float(times[1]), fields[2]
    except ValueError:
        return None
    return None


def segments(trn: Path, dropped: Dropped) -> list[tuple[float, float, str]]:
    """The recording's kept segments (start, end, transcript), overlapping ones removed, by end time."""
    found = []
    for n, line in enumerate(trn.read_text(encoding="utf-8", errors="ignore").splitlines(), 1):
        parsed = parse_line(line)
        if parsed is None:
            continue
        start, end, raw = parsed
        if not MIN_SECONDS <= end - start <= MAX_SECONDS:
            continue
        text = clean(raw)
        if not text:
            dropped.add("transcript lines the cleaning rules drop", f"{trn.name}:{n}")
            continue
        found.append((start, end, text))
    found.sort(key=lambda s: s[1])
    kept: list[tuple[float, float, str]] = []
    for seg in found:
        overlapped = False
        while kept and seg[0] < kept[-1][1]:
            dropped.add("segments overlapping another one", f"{trn.name} {kept[-1][0]:.2f}-{kept[-1][1]:.2f}")
            kept.pop()
            overlapped = True
        if overlapped:
            dropped.add("segments overlapping another one", f"{trn.name} {seg[0]:.2f}-{seg[1]:.2f}")
        else:
            kept.append(seg)
    return kept


def decode(path: Path, problems: Problems) -> Any:
    """The recording as mono float64 at 16 kHz, or None after recording why it is unusable."""
    import numpy as np
    import soundfile as sf
    import soxr

    if not path.is_file():
        problems.add(f"{path}: missing audio file (the transcript has no recording)")
        return None
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # libsndfile reports a damaged mp3 with several exception types
        problems.add(f"{path}: the mp3 does not decode ({str(exc).strip()[:120]})")
        return None
    if len(data) == 0:
        problems.add(f"{path}: audio has 0 samples")
        return None
    mono = data.mean(axis=1)
    return mono if rate == SAMPLE_RATE else np.asarray(soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ"))


def prepare_sbcsae(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT in the layout of the module doc -> OUT/ood_sbcsae (segments written under its wav/)."""
    from superbench.audio import save_wav

    root = Path(root)
    out = Path(out) if out else default_out("sbcsae")
    problems, dropped = Problems("sbcsae", skip_bad), Dropped("sbcsae")
    if not (root / "trn").is_dir():
        raise FileNotFoundError(f"{root / 'trn'} not found (SBCSAE's layout: ROOT/mp3/NN.mp3, ROOT/trn/SBCNNN.trn)")
    planned: dict[str, list[tuple[int, list[tuple[float, float, str]]]]] = {}
    audio: dict[int, Any] = {}
    for split, recordings in SPLITS.items():
        planned[split] = []
        for i in recordings:
            trn = root / "trn" / f"SBC{i:03d}.trn"
            if not trn.is_file():
                dropped.add("recordings without a transcript", trn.name)
                continue
            segs = segments(trn, dropped)
            wav = decode(root / "mp3" / f"{i:02d}.mp3", problems)
            if wav is not None:
                audio[i] = wav
                planned[split].append((i, segs))
    problems.raise_if_any()
    folder = out / TASK
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, recordings in planned.items():
        rows = []
        for i, segs in recordings:
            for start, end, text in segs:
                clip = audio[i][int(start * SAMPLE_RATE): int(end * SAMPLE_RATE) + 1]
                if len(clip) == 0:
                    dropped.add("segments past the end of the recording", f"SBC{i:03d} {start:.2f}-{end:.2f}")
                    continue
                name = f"SBC{i:03d}_{int(start * 100):06d}-{int(end * 100):06d}"
                save_wav(folder / "wav" / f"{name}.wav", clip, SAMPLE_RATE, subtype="FLOAT")
                rows.append({"id": name, "audio": f"wav/{name}.wav", "sample_rate": SAMPLE_RATE,
                             "num_samples": len(clip), "speaker": f"SBC{i:03d}", "text": text})
        if not rows:
            raise ValueError(f"{root}: no usable {split} segment (recordings {SPLITS[split].start}-"
                             f"{SPLITS[split].stop - 1})")
        splits[split] = rows
    inventory = sorted({c for row in splits["train"] for c in row["text"] if c != " "})
    return write_task_manifest(folder, task=TASK, corpus="sbcsae", version="1", label_field="text",
                               labels=inventory, splits=splits,
                               extra={"layout": "ROOT/mp3/NN.mp3, ROOT/trn/SBCNNN.trn",
                                      "splits": {s: f"{r.start}-{r.stop - 1}" for s, r in SPLITS.items()},
                                      "rules": "vectominist/SBCSAE-preprocess (s3prl ctc/sbcsae.yaml)",
                                      "dropped": dropped.report()})


def _prepare(request: PrepareRequest) -> Path:
    return prepare_sbcsae(request.root, request.out, skip_bad=request.skip_bad).parent


PREPARER = Preparer("sbcsae", prepare=_prepare, writes="ood_sbcsae")

"""IEMOCAP -> ER manifest: four classes, five leave-one-session-out folds.

Labels come from Session*/dialog/EmoEvaluation/*.txt lines
`[start - end]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[v, a, d]`; audio is
Session*/sentences/wav/<dialog>/<utterance>.wav. Classes: neutral, happy (excited merged in),
angry, sad; everything else is left out. Fold k tests on session k; its dev set is a seeded
random 20 % of the other four sessions' utterances (s3prl's emotion recipe: valid_ratio 0.2,
random_split), the rest trains. Speaker = session + gender of the utterance (e.g. Ses01F).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from recipes.prepare import Problems, audio_row, default_out, leave_one_group_out, simple_preparer
from superbench.manifest import write_task_manifest

EMOTIONS = ("neutral", "happy", "angry", "sad")
LABEL_MAP = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
VALID_RATIO = 0.2
_LINE = re.compile(r"^\[[\d.]+\s*-\s*[\d.]+\]\s+(Ses\d\d[FM]_\S+)\s+(\w+)\s+\[")


def prepare_iemocap(root: str | Path, out: str | Path | None = None, seed: int = 0,
                    valid_ratio: float = VALID_RATIO, skip_bad: bool = False) -> Path:
    """Index IEMOCAP_full_release; returns OUT/er."""
    root = Path(root)
    out = Path(out) if out else default_out("iemocap")
    problems = Problems("iemocap", skip_bad)
    sessions: list[list[dict]] = []
    for s in range(1, 6):
        session = root / f"Session{s}"
        if not session.is_dir():
            raise FileNotFoundError(f"IEMOCAP session folder not found: {session}")
        rows = []
        for label_file in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            for line in label_file.read_text(errors="replace").splitlines():
                m = _LINE.match(line)
                if not m or m.group(2) not in LABEL_MAP:
                    continue
                utt = m.group(1)
                wav = session / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"
                if not wav.is_file():
                    problems.add(f"{label_file}: names {utt}, but {wav} is missing")
                    continue
                speaker = utt[:5] + utt.rsplit("_", 1)[1][0]  # Ses01 + gender of the speaking actor
                row = audio_row(utt, wav, speaker, problems, label=LABEL_MAP[m.group(2)])
                if row:
                    rows.append(row)
        if not rows:
            problems.add(f"{session}: no usable labelled utterances")
        sessions.append(rows)
    problems.raise_if_any()
    splits, folds = leave_one_group_out(sessions, np.random.default_rng(seed), valid_ratio)
    return write_task_manifest(out / "er", task="er", corpus="iemocap", version="full_release",
                               label_field="label", labels=EMOTIONS, splits=splits, folds=folds,
                               extra={"merge": {"exc": "happy"}, "dev_policy":
                                      f"seeded ({seed}) random {valid_ratio:.0%} of the training sessions"})


PREPARER = simple_preparer("iemocap", prepare_iemocap, "er")

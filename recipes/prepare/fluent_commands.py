"""Fluent Speech Commands -> IC manifest, the SUPERB/s3prl way.

Layout (the corpus as distributed, and as s3prl's fluent_commands expert reads it):
ROOT/data/{train,valid,test}_data.csv with a header naming at least `path, speakerId, action, object,
location` (the distributed files also have an unnamed index column and `transcription`, both kept
out of the key columns), and `path` relative to ROOT (`wavs/speakers/<speakerId>/<uuid>.wav`).
train -> train, valid -> dev, test -> test, as in s3prl.

Rows: `intent` = "action|object|location" (the task's label), plus the three slot fields and the
`transcription` when present. meta.json `labels` = the intents, sorted; `extra["slots"]` = each
slot's values seen in training (what the head outputs, as s3prl builds them from train_data.csv).

Refused before anything is written, naming file and line: a CSV line with the wrong number of
fields, an empty slot value or one containing the separator `|`, a missing or unreadable wav, a
duplicate path, and a dev/test line whose slot value or intent never occurs in train_data.csv
(s3prl would fail on it with a KeyError). With `skip_bad=True` those lines are left out and logged.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from recipes.prepare import PrepareError, Problems, audio_row, default_out, simple_preparer
from superbench.manifest import write_task_manifest

log = logging.getLogger(__name__)

SLOTS = ("action", "object", "location")
SEPARATOR = "|"
CSV_FILES = {"train": "train_data.csv", "dev": "valid_data.csv", "test": "test_data.csv"}
REQUIRED_COLUMNS = ("path", "speakerId") + SLOTS


def _read_csv(path: Path, problems: Problems) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each well-formed line of one split file; malformed lines go to `problems`."""
    if not path.is_file():
        raise FileNotFoundError(f"Fluent Speech Commands split file not found: {path} (expected ROOT/data/"
                                f"{', '.join(CSV_FILES.values())})")
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise PrepareError(f"{path}: empty file (expected a header with {', '.join(REQUIRED_COLUMNS)})")
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise PrepareError(f"{path}:1: header lacks column(s) {', '.join(missing)} (got {', '.join(header)})")
        for fields in reader:
            n = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                problems.add(f"{path}:{n}: expected {len(header)} fields ({', '.join(header)}), got {len(fields)}: "
                             f"{','.join(fields)!r}")
                continue
            row = {h: f.strip() for h, f in zip(header, fields)}
            bad = [f"{slot} {row[slot]!r}" for slot in SLOTS if not row[slot] or SEPARATOR in row[slot]]
            if bad:
                problems.add(f"{path}:{n}: slot value(s) empty or containing {SEPARATOR!r}: {', '.join(bad)}")
                continue
            if not row["path"]:
                problems.add(f"{path}:{n}: empty path")
                continue
            out.append((n, row))
    return out


def prepare_fluent_commands(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT/data/*_data.csv + ROOT/wavs/speakers/... -> OUT/ic (default OUT: $SUPERBENCH_HOME/data/fluent_commands)."""
    root = Path(root)
    out = Path(out) if out else default_out("fluent_commands")
    problems = Problems("fluent_commands", skip_bad)
    lines = {split: _read_csv(root / "data" / name, problems) for split, name in CSV_FILES.items()}
    train_values = {slot: {row[slot] for _, row in lines["train"]} for slot in SLOTS}
    train_intents = {tuple(row[s] for s in SLOTS) for _, row in lines["train"]}
    splits: dict[str, list[dict[str, Any]]] = {}
    seen_paths: dict[str, str] = {}
    for split, rows in lines.items():
        csv_path = root / "data" / CSV_FILES[split]
        kept = []
        for n, row in rows:
            where = f"{csv_path}:{n}"
            values = tuple(row[s] for s in SLOTS)
            if split != "train":
                unseen = [f"{s} {v!r}" for s, v in zip(SLOTS, values) if v not in train_values[s]]
                if unseen:
                    problems.add(f"{where}: {', '.join(unseen)} never in {CSV_FILES['train']} (the head has no "
                                 "output for it)")
                    continue
                if values not in train_intents:
                    problems.add(f"{where}: intent {SEPARATOR.join(values)!r} never in {CSV_FILES['train']}")
                    continue
            rel = row["path"]
            if rel in seen_paths:
                problems.add(f"{where}: path {rel} already listed at {seen_paths[rel]}")
                continue
            seen_paths[rel] = where
            wav = root / rel
            if not wav.is_file():
                problems.add(f"{where}: names a missing file {wav}")
                continue
            speaker = row["speakerId"]
            labels = {"intent": SEPARATOR.join(values), **dict(zip(SLOTS, values))}
            if row.get("transcription"):
                labels["transcription"] = row["transcription"]
            item = audio_row(f"{speaker}-{Path(rel).stem}", wav, speaker, problems, **labels)
            if item:
                kept.append(item)
        splits[split] = kept
    problems.raise_if_any()
    labels = sorted({r["intent"] for rows in splits.values() for r in rows})
    slots = {slot: sorted({r[slot] for r in splits["train"]}) for slot in SLOTS}
    log.info("fluent_commands: %s utterances, %d intents", {s: len(r) for s, r in splits.items()}, len(labels))
    return write_task_manifest(out / "ic", task="ic", corpus="fluent_speech_commands", version="1.0",
                               label_field="intent", labels=labels, splits=splits,
                               extra={"slots": slots, "slot_order": list(SLOTS), "separator": SEPARATOR})


PREPARER = simple_preparer("fluent_commands", prepare_fluent_commands, "ic")

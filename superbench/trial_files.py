"""The files of one (lr, fold) trial under the checkpoint folder, sealed so a damaged one is never reused.

Each finished trial writes its head and predictions before its `.json` (a trial without them is
trained again, deterministically), and every file a rerun reuses carries its blake2b
(`superbench.io.write_sealed`): one that fails the check is logged with its path and trained again.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from superbench.io import read_sealed, write_sealed
from superbench.training import TrainResult

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrialFiles:
    """One (lr, fold) trial's files in its run's checkpoint folder, each sealed (superbench.io.write_sealed):
    `<stem>.head.pt` (the dev-selected head), `<stem>.predictions.jsonl` and, written last because it says the
    trial is finished, `<stem>.json` (its key and numbers); `<stem>.pt` is its training state while it trains
    alone. A finished trial is reused only when all three files hold the bytes written: a flipped bit or a torn
    copy is logged with the file's path and the trial is trained again (deterministically: the same record)."""

    stem: Path

    def _file(self, suffix: str) -> Path:
        return self.stem.with_name(self.stem.name + suffix)

    @property
    def json(self) -> Path:
        return self._file(".json")

    @property
    def head(self) -> Path:
        return self._file(".head.pt")

    @property
    def predictions(self) -> Path:
        return self._file(".predictions.jsonl")

    @property
    def audio(self) -> Path:
        """Folder of the waveforms the head gives back (kinds whose output is audio; `--keep-audio`)."""
        return self._file(".audio")

    @property
    def checkpoint(self) -> Path:
        """Its resumable state while it trains alone."""
        return self._file(".pt")

    def save(self, key: str, result: TrainResult, predictions: str) -> None:
        """Head and predictions first, then the .json that says the trial is finished."""
        buffer = io.BytesIO()
        torch.save(result.head_state, buffer)
        write_sealed(self.head, buffer.getbuffer())
        write_sealed(self.predictions, predictions.encode("utf-8"))
        write_sealed(self.json, (json.dumps({"key": key, "result": result.to_dict()}) + "\n").encode("utf-8"))

    def read(self, path: Path) -> bytes | None:
        """The payload of one of these files if its seal holds; else None, with a warning naming the file."""
        try:
            return read_sealed(path)
        except (OSError, ValueError) as exc:
            log.warning("%s: damaged finished-trial file, not reused (%s)", path, exc)
            return None

    def load(self, key: str) -> TrainResult | None:
        """The trial finished before an interruption (same key, all its files intact), else None."""
        if not self.json.is_file():
            return None
        missing = [p.name for p in (self.head, self.predictions) if not p.is_file()]
        if missing:
            log.info("%s: finished trial without %s (kept since); training it again", self.json, ", ".join(missing))
            return None
        payload = self.read(self.json)
        if payload is None:
            return None
        try:
            saved = json.loads(payload)
            if saved.get("key") != key:
                return None
            result = TrainResult.from_dict(saved["result"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: unreadable finished trial, training it again (%r)", self.json, exc)
            return None
        if any(self.read(p) is None for p in (self.head, self.predictions)):
            return None
        return result

"""The audio a pretraining run learns from: the demo corpus's training audio, or a folder of files.

Only training splits of the demo's tasks are used (their dev/test audio stays unseen, as SUPERB's test
sets are unseen by the public models' pretraining). Waveforms are held in memory: the demo is small,
and a folder meant for `--size tiny` runs should be too.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from superbench.audio import load_audio
from superbench.manifest import load_task_manifest
from superbench.preparers import resolve_generated

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass
class PretrainAudio:
    """Waveforms (float32, 16 kHz) and what identifies them."""

    wavs: list[torch.Tensor]
    source: str
    fingerprint: str

    @property
    def hours(self) -> float:
        return sum(int(w.numel()) for w in self.wavs) / 16000 / 3600

    def batch(self, batch_size: int, crop: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` random utterances, each cropped at a random offset to at most `crop` samples,
        zero-padded into (B, S) with their lengths."""
        picks = torch.randint(len(self.wavs), (batch_size,), generator=generator).tolist()
        pieces = []
        for i in picks:
            wav = self.wavs[i]
            n = int(wav.numel())
            start = int(torch.randint(n - crop + 1, (1,), generator=generator)) if n > crop else 0
            pieces.append(wav[start: start + crop])
        lengths = torch.tensor([p.numel() for p in pieces], dtype=torch.long)
        out = torch.zeros(batch_size, int(lengths.max()))
        for row, piece in enumerate(pieces):
            out[row, : piece.numel()] = piece
        return out, lengths


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f).encode())
        h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def demo_training_files(demo_root: Path) -> list[Path]:
    """Distinct audio files of every training split (each fold's `train`) of the demo's task manifests."""
    files: dict[str, Path] = {}
    for meta in sorted(demo_root.glob("*/meta.json")):
        manifest = load_task_manifest(meta.parent, check_files=False)
        for split in sorted({fold.train for fold in manifest.folds}):
            for u in manifest.splits.get(split, []):
                files.setdefault(u.audio, Path(u.audio))
    return [files[k] for k in sorted(files)]


def load_pretrain_audio(data: str, min_samples: int = 4000) -> PretrainAudio:
    """`demo` (the default demo corpus, made if missing), `demo:SIZE`, or a folder searched for audio files.

    Files shorter than `min_samples` (a quarter second) are left out: no family can mask or predict
    much in them.
    """
    root = resolve_generated(data)  # `demo`, `demo:SIZE` or a plugin's generated corpus
    if root is not None:
        files = demo_training_files(root)
        source = f"{data} ({root}, training splits)"
    else:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data {data}: not a folder (give `demo`, `demo:SIZE` or a folder of "
                                    f"{'/'.join(AUDIO_SUFFIXES)} files)")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        source = str(root)
    if not files:
        raise FileNotFoundError(f"--data {data}: no audio files found")
    wavs = [torch.from_numpy(load_audio(f)) for f in files]
    kept = [w for w in wavs if w.numel() >= min_samples]
    if not kept:
        raise ValueError(f"--data {data}: every file is shorter than {min_samples} samples")
    if len(kept) < len(wavs):
        log.info("left out %d file(s) shorter than %d samples", len(wavs) - len(kept), min_samples)
    return PretrainAudio(kept, source, _fingerprint(files))

"""`--no-cache`: features computed by the upstream on every batch, as s3prl does (the benchmark baseline)."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from superbench.device import Compute, to_device
from superbench.features.extraction import compute_for, load_wav_for
from superbench.manifest import TaskManifest
from superbench.upstream import Upstream, pad_batch

log = logging.getLogger(__name__)


class OnlineFeatures:
    """`--no-cache`: run the upstream on every batch, as s3prl does (the benchmark baseline).

    Waveforms are kept in memory after the first read, so this measures the upstream, not the disk.
    Returns frames (L, B, T, D) for every task; the utterance heads pool them themselves.
    """

    level = "frame"

    def __init__(self, upstream: Upstream, manifest: TaskManifest, compute: Compute | None = None) -> None:
        self.upstream = upstream.eval()
        self.compute = compute_for(upstream, compute)
        self._utts = {u.id: u for u in manifest.utterances()}
        self._wavs: dict[str, np.ndarray] = {}

    def batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        wavs = []
        for uid in ids:
            if uid not in self._wavs:
                self._wavs[uid] = load_wav_for(self._utts[uid], self.upstream.receptive_field)
            wavs.append(self._wavs[uid])
        batch, lengths = pad_batch(wavs)
        device = self.compute.device
        with torch.inference_mode(), self.compute.autocast():
            hidden, frame_lengths = self.upstream(to_device(batch, device), lengths)
            x = torch.stack([h.float() for h in hidden])
        return x.clone(), torch.as_tensor(frame_lengths, dtype=torch.long, device=device).clone()

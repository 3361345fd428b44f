"""Test dummies that plugin authors need too: a tiny deterministic upstream and tiny corpora.

They live in the library (not in a test file) so a plugin package's tests can score a task
or an upstream end to end in seconds: `ToneUpstream` is a 3-layer, 16-dim upstream of log
band energies; `make_class_corpus` / `make_sequence_corpus` write prepared task folders of
tones (utterance classes, or sequences of tone "phones") that any head learns quickly;
`scratch_run_options` keeps a test run's results, cache and checkpoints in one folder;
`InterruptingSource` dies mid-training like a killed run, to test resuming; `chirp_wavs` makes
seeded test utterances (a chirp plus noise) of given lengths, e.g. to compare an upstream with a
reference implementation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile as sf
import torch

from superbench.features.extraction import extract_features
from superbench.features.store import FeatureCache
from superbench.manifest import Fold, load_task_manifest, write_task_manifest
from superbench.options import RunOptions
from superbench.upstream import Upstream

SR = 16000
TONES = [300.0, 500.0, 800.0, 1200.0, 1800.0, 2600.0]


class ToneUpstream(Upstream):
    """Tiny deterministic upstream: 16 log band energies per 25 ms frame, plus a random tanh layer."""

    name = "tone-test"
    num_layers = 3
    hidden_size = 16
    downsample_rate = 160
    receptive_field = 400

    def __init__(self, sleep: float = 0.0, counter: str | None = None, nan_layer: int | None = None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(16, 16)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(16, 16, generator=g) * 0.3)
            self.proj.bias.zero_()
        self.sleep, self.counter, self.nan_layer = sleep, counter, nan_layer

    def config_dict(self) -> dict[str, Any]:
        """A NaN-injecting dummy makes other features, so it is another fingerprint (another cache folder:
        the cache is keyed by audio content, and another test's tones may already be cached)."""
        base = super().config_dict()
        return base if self.nan_layer is None else {**base, "nan_layer": self.nan_layer}

    def _forward(self, wavs, wav_lengths):
        if self.counter:
            with open(self.counter, "a") as fh:
                fh.write(f"{wavs.shape[0]}\n")
        if self.sleep:
            time.sleep(self.sleep)
        frames = wavs.unfold(1, self.receptive_field, self.downsample_rate)  # (B, T, 400)
        spec = torch.fft.rfft(frames * torch.hann_window(400, device=frames.device), dim=-1).abs() ** 2
        bands = torch.stack([b.sum(-1) for b in spec[..., 1:193].chunk(16, dim=-1)], dim=-1)
        h0 = (torch.log(bands + 1e-6) + 4.0) / 4.0  # roughly unit scale
        h1 = torch.tanh(self.proj(h0))
        h2 = torch.tanh(self.proj(h1))
        layers = [h0, h1, h2]
        if self.nan_layer is not None:
            layers[self.nan_layer] = layers[self.nan_layer].clone()
            layers[self.nan_layer][0, 0, 0] = float("nan")
        return layers, self.num_frames(wav_lengths)


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) + 0.01 * rng.standard_normal(t.size))


def chirp_wavs(lengths: Sequence[int], seed: int = 0, chirp: float = 0.3, noise: float = 0.05,
               sample_rate: int = SR) -> list[np.ndarray]:
    """Seeded float32 test utterances of `lengths` samples: a rising chirp (200 Hz, +1500 Hz per second) of
    amplitude `chirp` plus white noise of standard deviation `noise` (`chirp=0`: noise alone). One generator
    serves all of them, so the same call gives the same audio."""
    rng = np.random.default_rng(seed)
    wavs = []
    for n in lengths:
        t = np.arange(int(n)) / sample_rate
        wav = chirp * np.sin(2 * np.pi * (200 + 1500 * t) * t) + noise * rng.standard_normal(int(n))
        wavs.append(wav.astype(np.float32))
    return wavs


def make_class_corpus(root: Path, task: str = "ks", n_classes: int = 3, per_class: tuple = (12, 4, 4),
                      seed: int = 0, label_field: str = "label", folds: list[Fold] | None = None) -> Path:
    """Utterance task: class c is a tone at TONES[c] of random length (0.3-0.8 s), its name in `label_field`;
    `folds` (e.g. ER-style cross-validation over the same three splits) defaults to one train/dev/test fold."""
    rng = np.random.default_rng(seed)
    labels = [f"c{i}" for i in range(n_classes)]
    splits = {}
    for split, n in zip(("train", "dev", "test"), per_class):
        rows = []
        for c in range(n_classes):
            for k in range(n):
                wav = _tone(TONES[c], rng.uniform(0.3, 0.8), rng).astype(np.float32)
                rel = f"wav/{split}_{c}_{k}.wav"
                (root / task / "wav").mkdir(parents=True, exist_ok=True)
                sf.write(root / task / rel, wav, SR)
                rows.append({"id": f"{split}-{c}-{k}", "audio": rel, "sample_rate": SR, "num_samples": wav.size,
                             "speaker": f"s{k % 3}", label_field: labels[c]})
        splits[split] = rows
    write_task_manifest(root / task, task=task, corpus="tones", version="1", label_field=label_field,
                        labels=labels, splits=splits, folds=folds)
    return root / task


def cached_class_task(root: Path) -> tuple[FeatureCache, Callable[[str], tuple[list[str], list[int]]]]:
    """`make_class_corpus` under `root`, its ToneUpstream utterance cache, and `data(split)` -> (ids, class
    indices): what `training.train` takes, for tests of the training loop."""
    manifest = load_task_manifest(make_class_corpus(Path(root)))
    cache = extract_features(ToneUpstream(), manifest, "utterance", root=Path(root) / "cache", progress=False)
    index = {name: i for i, name in enumerate(manifest.labels)}

    def data(split: str) -> tuple[list[str], list[int]]:
        rows = manifest.splits[split]
        return [u.id for u in rows], [index[u.label] for u in rows]

    return cache, data


def make_sequence_corpus(root: Path, task: str = "pr", n: tuple = (24, 6, 6), seed: int = 0) -> Path:
    """Frame task: a 'phone' is a 0.12 s tone; PR labels are phone names, ASR text uses one letter per tone
    and a 0.1 s silence after the first (one-letter) word."""
    rng = np.random.default_rng(seed)
    phones = ["a", "b", "c", "d"]
    splits = {}
    for split, count in zip(("train", "dev", "test"), n):
        rows = []
        for k in range(count):
            seq = [int(i) for i in rng.integers(0, 4, size=int(rng.integers(2, 5)))]
            parts = []
            for j, p in enumerate(seq):
                parts.append(_tone(TONES[p], 0.12, rng))
                if task == "asr" and j == 0:
                    parts.append(0.01 * rng.standard_normal(int(0.1 * SR)))
            wav = np.concatenate(parts).astype(np.float32)
            rel = f"wav/{split}_{k}.wav"
            (root / task / "wav").mkdir(parents=True, exist_ok=True)
            sf.write(root / task / rel, wav, SR)
            row = {"id": f"{split}-{k}", "audio": rel, "sample_rate": SR, "num_samples": wav.size, "speaker": "s"}
            if task == "pr":
                row["phones"] = " ".join(phones[p] for p in seq)
            else:
                letters = "".join("ABCD"[p] for p in seq)
                row["text"] = letters[:1] + " " + letters[1:]
            rows.append(row)
        splits[split] = rows
    write_task_manifest(root / task, task=task, corpus="tones", version="1",
                        label_field="phones" if task == "pr" else "text",
                        labels=phones if task == "pr" else [], splits=splits)
    return root / task


def scratch_run_options(root: Path, **options: Any) -> RunOptions:
    """RunOptions for a quick run whose results, cache and checkpoints all live under `root`
    (fast profile, no progress bars); `options` set or replace any option, by its name in its part
    (`seeds=2`, `cache_dtype="int8"`, `executor="ray"`: `RunOptions.of`)."""
    base: dict[str, Any] = dict(results_dir=Path(root) / "results", cache_root=Path(root) / "cache",
                                checkpoint_root=Path(root) / "ckpt", progress=False, profile="fast")
    return RunOptions.of(**{**base, **options})


class RecordingObjective:
    """Wraps an objective and keeps every training loss value (`losses`), e.g. to compare a resumed run
    with an uninterrupted one loss by loss; everything else is the wrapped objective's."""

    def __init__(self, objective: Any) -> None:
        self.objective, self.losses = objective, []

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        value = self.objective.loss(output, lengths, targets)
        self.losses.append(value.item())
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self.objective, name)


class Interrupted(Exception):
    """Raised by `InterruptingSource` where a real run would have been killed."""


class InterruptingSource:
    """A feature source that dies after `n` training batches (recognised by their size), like a killed
    run; `calls` counts the training batches it served. Dev/test batches pass through."""

    def __init__(self, source: Any, n: int, train_batch_size: int = 8) -> None:
        self.source, self.n, self.train_batch_size, self.calls = source, n, train_batch_size, 0
        self.level = source.level

    def batch(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(ids) == self.train_batch_size:
            self.calls += 1
            if self.calls > self.n:
                raise Interrupted
        return self.source.batch(ids)


class CrashOnce:
    """A stack factory (`TaskSetup.stack`) whose heads kill their process (`os._exit`) after `after`
    updates, once: the first to get there leaves `marker`, later attempts train normally. For tests of an
    executor retrying a worker that died mid-trial; picklable by reference, so a Ray worker can build it."""

    def __init__(self, stack: Callable[[list[torch.nn.Module]], Any], marker: Path, after: int) -> None:
        self.stack, self.marker, self.after = stack, Path(marker), after

    def __call__(self, heads: list[torch.nn.Module]) -> Any:
        inner, marker, after = self.stack(heads), self.marker, self.after
        real = inner.loss_and_grads
        calls = [0]

        def loss_and_grads(x: torch.Tensor, targets: torch.Tensor) -> Any:
            calls[0] += 1
            if calls[0] > after and not marker.exists():
                marker.write_text("killed once\n")
                os._exit(1)
            return real(x, targets)

        inner.loss_and_grads = loss_and_grads
        return inner

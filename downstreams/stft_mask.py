"""STFT-mask heads (SUPERB-SG speech enhancement and source separation): the head gives back a waveform.

What s3prl does (downstream/enhancement_stft and separation_stft: configs/cfg_voicebank.yaml, configs/cfg.yaml,
model.py, loss.py, expert.py, dataset.py), and what is reproduced here:

* STFT (`dataset.py`, librosa): n_fft 512, win_length 512, periodic Hann window, centred frames, hop = the
  upstream's downsample rate, so STFT frame t and upstream frame t describe the same moment. Computed here in
  torch (`torch.stft`, reflect padding as librosa < 0.10) from the audio, for the mixture and each source.
* Head (`model.py` `SepRNN`): the weighted sum of the upstream's layers -> a 3-layer bidirectional LSTM of 896
  units per direction with dropout 0.5 between layers (on packed sequences, so padding never reaches an
  utterance) -> dropout 0.5 -> per source a Linear(1792, 257) + ReLU: one mask per source over the 257 bins.
  s3prl cuts or zero-pads the upstream's frames to the STFT's frame count before the LSTM (`match_length`,
  at most 5 frames apart); here the head emits masks for the upstream's frames and the objective repeats the
  last mask frame (or drops extra ones) to the STFT's count.
* Loss (`loss.py` `MSELoss`, mask_type NPSM): per utterance and source, the squared error between the masked
  mixture magnitude m|Y| and the non-negative phase-sensitive target |S| ReLU(cos(angle Y - angle S)), summed
  over bins and frames, summed over sources, divided by the utterance's STFT frames; the minimum over source
  permutations (PIT; one source for SE), summed over the batch and divided by (sources x batch).
* Waveforms (`expert.py`): the masked mixture STFT, with the mixture's (noisy) phase, through the inverse STFT
  at the mixture's length. s3prl's `postprocess` (zeroing an impulse in the last 512 samples) is not applied.
* Metrics (asteroid's `get_metrics`, per utterance, averaged over utterances): PESQ (wide-band), STOI and
  SI-SDR improvement over the mixture (`superbench.audio_metrics`); for SS the estimates are put in the
  source order of the best mean SI-SDR first (asteroid's `compute_permutation=True`), and each metric is the
  mean over the two sources. STOI is reported x100 (percent), as SUPERB-SG's tables.

A manifest row's `audio` is the mixture (noisy speech for SE); its target field holds the list of the
clean source files, paths relative to the manifest folder (or absolute), one per source, each as long as
the mixture and at its sample rate. A prediction is the masks of one utterance, (frames, sources, bins),
float16; `waveforms` turns it back into audio, and `superbench run --keep-audio N` writes the first N test
utterances' waveforms beside the record.
"""

from __future__ import annotations

import itertools
import logging
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from superbench import audio_metrics
from superbench.downstream import Head, Objective
from superbench.featurizer import WeightedSum
from superbench.manifest import ManifestError, TaskManifest, format_problems
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: Upper bound of the waveforms kept in memory between steps (bytes of float32 samples).
AUDIO_CACHE_BYTES = 2 * 1024 ** 3


# --------------------------------------------------------------------------- STFT

@dataclass(frozen=True)
class STFTConfig:
    """s3prl's `datarc` STFT: n_fft, win_length, Hann window, centred; the hop is the upstream's frame shift."""

    hop: int
    n_fft: int = 512
    win_length: int = 512

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def frames(self, num_samples: int) -> int:
        """STFT frames of a centred transform of `num_samples` samples."""
        return 1 + num_samples // self.hop

    def window(self, like: torch.Tensor) -> torch.Tensor:
        """The periodic Hann window (scipy's and librosa's "hann") on `like`'s device, in its real dtype."""
        dtype = like.real.dtype if like.is_complex() else like.dtype
        return torch.hann_window(self.win_length, periodic=True, device=like.device, dtype=dtype)

    def stft(self, wav: torch.Tensor, pad_mode: str = "reflect") -> torch.Tensor:
        """Complex STFT (..., frames, bins) of (..., samples) audio; `pad_mode` of the centring padding."""
        spec = torch.stft(wav, self.n_fft, hop_length=self.hop, win_length=self.win_length,
                          window=self.window(wav), center=True, pad_mode=pad_mode, return_complex=True)
        return spec.transpose(-1, -2)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Audio of `length` samples from a complex STFT (..., frames, bins).

        When the hop exceeds n_fft / 2 (a 20 ms upstream: hop 320, n_fft 512) the frames of a centred transform
        reach only hop * (n // hop) + n_fft / 2 samples; torch pads the rest (fewer than hop - n_fft / 2
        samples) with zeros, as intended here, and its warning about it is silenced."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The length of signal is shorter than the length parameter")
            return torch.istft(spec.transpose(-1, -2), self.n_fft, hop_length=self.hop, win_length=self.win_length,
                               window=self.window(spec), center=True, length=length)


def npsm_target(mixture: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """|S| ReLU(cos(angle Y - angle S)): the part of the source's magnitude in phase with the mixture."""
    return source.abs() * F.relu(torch.cos(torch.angle(mixture) - torch.angle(source)))


def align_frames(masks: torch.Tensor, frames: int) -> torch.Tensor:
    """Masks (T, ...) cut or padded (by repeating the last frame) to `frames` frames."""
    if masks.shape[0] >= frames:
        return masks[:frames]
    return torch.cat([masks, masks[-1:].expand(frames - masks.shape[0], *masks.shape[1:])])


def npsm_pit_loss(masks: Sequence[torch.Tensor], mixtures: Sequence[torch.Tensor],
                  sources: Sequence[torch.Tensor]) -> torch.Tensor:
    """s3prl's MSE/NPSM loss with PIT over a batch: masks[i] (T_i, S, F) aligned to mixtures[i] (T_i, F) complex,
    sources[i] (S, T_i, F) complex."""
    total = masks[0].new_zeros(())
    num_sources = masks[0].shape[1]
    for m, y, s in zip(masks, mixtures, sources):
        magnitude = y.abs()
        targets = npsm_target(y.unsqueeze(0), s)  # (S, T, F)
        estimates = m.permute(1, 0, 2) * magnitude.unsqueeze(0)  # (S, T, F)
        per_perm = [sum(((estimates[k] - targets[j]) ** 2).sum() for k, j in enumerate(perm))
                    for perm in itertools.permutations(range(num_sources))]
        total = total + torch.stack(per_perm).min() / y.shape[0]
    return total / (num_sources * len(masks))


# --------------------------------------------------------------------------- head

class SepRNNHead(Head):
    """Weighted sum -> bidirectional LSTM -> dropout -> per source Linear + ReLU mask (s3prl `SepRNN`)."""

    def __init__(self, num_layers: int, input_dim: int, num_sources: int, bins: int = 257, rnn_layers: int = 3,
                 hidden_size: int = 896, dropout: float = 0.5, layer: int | str | None = None,
                 feature_layer_norm: bool = False) -> None:
        super().__init__()
        self.featurizer = WeightedSum(num_layers, layer=layer, layer_norm=feature_layer_norm)
        self.rnn = torch.nn.LSTM(input_dim, hidden_size, rnn_layers, batch_first=True,
                                 dropout=dropout if rnn_layers > 1 else 0.0, bidirectional=True)
        self.drop = torch.nn.Dropout(dropout)
        self.masks = torch.nn.ModuleList(torch.nn.Linear(2 * hidden_size, bins) for _ in range(num_sources))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Masks (B, T, sources, bins) from (L, B, T, D) frames."""
        if features.dim() != 4:
            raise ValueError(f"expected (L, B, T, D) frames, got shape {tuple(features.shape)}")
        x = self.featurizer(features).float()
        t = x.shape[1]
        packed = pack_padded_sequence(x, lengths.cpu().clamp_min(1), batch_first=True, enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=t)
        y = self.drop(y)
        return torch.stack([F.relu(linear(y)) for linear in self.masks], dim=2)


# --------------------------------------------------------------------------- objective

class _AudioCache:
    """Waveforms read from disk, kept while they fit in `budget` bytes (training reads each file many times)."""

    def __init__(self, budget: int = AUDIO_CACHE_BYTES) -> None:
        self.budget, self.used, self.items = budget, 0, {}

    def get(self, path: str) -> np.ndarray:
        wav = self.items.get(path)
        if wav is None:
            import soundfile as sf

            wav, sr = sf.read(path, dtype="float32", always_2d=False)
            if sr != SAMPLE_RATE or wav.ndim != 1:
                raise ValueError(f"{path}: {sr} Hz, {wav.ndim} channel axis/axes; the STFT-mask tasks read "
                                 f"mono {SAMPLE_RATE} Hz audio")
            if self.used + wav.nbytes <= self.budget:
                self.items[path] = wav
                self.used += wav.nbytes
        return wav


class MaskObjective(Objective):
    """NPSM/PIT loss on masks; metrics of the waveforms the masks give back (see the module docstring).

    A target is {"id", "mixture": path, "sources": [paths]}; a prediction is a (frames, sources, bins) float16
    tensor of masks. `metric` is the main metric's name (SE: "pesq", SS: "sisdri"), `secondary` the others.
    """

    def __init__(self, stft: STFTConfig, num_sources: int, metric: str, secondary: Sequence[str]) -> None:
        audio_metrics.require_enhancement_metrics()  # a clear error at task load, never mid-run
        self.stft, self.num_sources = stft, num_sources
        self.metric, self.secondary = metric, tuple(secondary)
        self.higher_is_better = True
        self.audio = _AudioCache()
        self._scored: dict[int, tuple[weakref.ref, dict[str, float]]] = {}

    # loss
    def _spectra(self, target: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        mixture = torch.from_numpy(self.audio.get(target["mixture"])).to(device)
        sources = torch.stack([torch.from_numpy(self.audio.get(p)).to(device) for p in target["sources"]])
        return self.stft.stft(mixture), self.stft.stft(sources)

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        masks, mixtures, sources = [], [], []
        for out, n, target in zip(output, lengths.tolist(), targets):
            y, s = self._spectra(target, output.device)
            masks.append(align_frames(out[:max(int(n), 1)], y.shape[0]))
            mixtures.append(y)
            sources.append(s)
        return npsm_pit_loss(masks, mixtures, sources)

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        return [out[:max(int(n), 1)].to(torch.float16).cpu().clone() for out, n in zip(output, lengths.tolist())]

    # waveforms and metrics
    def estimates(self, target: dict[str, Any], prediction: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
        """(estimated sources in the order of the target's sources, the mixture) as float64 audio."""
        mixture = self.audio.get(target["mixture"])
        y = self.stft.stft(torch.from_numpy(mixture).double())
        masks = align_frames(prediction.double(), y.shape[0])  # (T, S, F)
        estimates = [self.stft.istft(y * masks[:, k], len(mixture)).numpy() for k in range(masks.shape[1])]
        references = [self.audio.get(p).astype(np.float64) for p in target["sources"]]
        if len(estimates) > 1:  # the source order of the best mean SI-SDR (asteroid's compute_permutation)
            best = max(itertools.permutations(range(len(estimates))),
                       key=lambda perm: np.mean([audio_metrics.si_sdr(references[j], estimates[k])
                                                 for j, k in enumerate(perm)]))
            estimates = [estimates[k] for k in best]
        return estimates, mixture.astype(np.float64)

    def waveforms(self, target: dict[str, Any], prediction: torch.Tensor) -> dict[str, np.ndarray]:
        """The estimated sources ("enhanced" for one source, "s1", "s2", ... for several) and the "mixture"."""
        estimates, mixture = self.estimates(target, prediction)
        names = ["enhanced"] if len(estimates) == 1 else [f"s{k + 1}" for k in range(len(estimates))]
        return {**dict(zip(names, estimates)), "mixture": mixture}

    def utterance_scores(self, target: dict[str, Any], prediction: torch.Tensor) -> dict[str, float]:
        """Every metric of this objective for one utterance (computed once per prediction object)."""
        key = id(prediction)
        hit = self._scored.get(key)
        if hit is not None and hit[0]() is prediction:
            return hit[1]
        estimates, mixture = self.estimates(target, prediction)
        references = [self.audio.get(p).astype(np.float64) for p in target["sources"]]
        try:
            scores = audio_metrics.utterance_metrics(references, estimates, mixture, (self.metric, *self.secondary),
                                                     SAMPLE_RATE)
        except ValueError as exc:
            raise ValueError(f"utterance {target['id']}: {exc}") from exc
        if len(self._scored) > 200_000:
            self._scored = {k: v for k, v in self._scored.items() if v[0]() is not None}
        self._scored[key] = (weakref.ref(prediction), scores)
        return scores

    def _per_utterance(self, name: str, targets: list, predictions: list) -> list[float]:
        if len(targets) != len(predictions) or not targets:
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        if name == self.metric:  # dev scoring computes the main metric only (PESQ is the slow one)
            return [self._main(t, p) for t, p in zip(targets, predictions)]
        return [self.utterance_scores(t, p)[name] for t, p in zip(targets, predictions)]

    def _main(self, target: dict[str, Any], prediction: torch.Tensor) -> float:
        hit = self._scored.get(id(prediction))
        if hit is not None and hit[0]() is prediction:
            return hit[1][self.metric]
        estimates, mixture = self.estimates(target, prediction)
        references = [self.audio.get(p).astype(np.float64) for p in target["sources"]]
        try:
            return audio_metrics.utterance_metrics(references, estimates, mixture, (self.metric,), SAMPLE_RATE)[
                self.metric]
        except ValueError as exc:
            raise ValueError(f"utterance {target['id']}: {exc}") from exc

    def score(self, targets: list, predictions: list) -> float:
        return float(np.mean(self._per_utterance(self.metric, targets, predictions)))

    def secondary_scores(self, targets: list, predictions: list) -> dict[str, float]:
        return {name: float(np.mean(self._per_utterance(name, targets, predictions))) for name in self.secondary}

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Per utterance each metric in its own unit (statistic "mean"): the record's interval resamples them."""
        return {name: UnitScores.build("mean", "utterance", ids,
                                       {"value": self._per_utterance(name, targets, predictions)})
                for name in (self.metric, *self.secondary)}

    def shown(self, target: dict[str, Any], prediction: torch.Tensor) -> dict[str, Any]:
        """What the record's predictions file says of one utterance: its files and its scores (not the masks)."""
        return {"reference": {"mixture": target["mixture"], "sources": target["sources"]},
                "prediction": {"frames": int(prediction.shape[0])},
                **{name: round(v, 4) for name, v in self.utterance_scores(target, prediction).items()}}


# --------------------------------------------------------------------------- task kind

@dataclass(frozen=True)
class MaskHeadConfig:
    """A recipe's `head` section for STFT-mask tasks (s3prl's `modelrc` and the STFT part of `datarc`)."""

    rnn_layers: int = 3
    hidden_size: int = 896
    dropout: float = 0.5
    n_fft: int = 512
    win_length: int = 512
    #: Layer-normalise each upstream layer before the weighted sum (s3prl's upstream_feature_normalize).
    feature_layer_norm: bool = False

    def __post_init__(self) -> None:
        if self.rnn_layers < 1 or self.hidden_size < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"rnn_layers >= 1, hidden_size >= 1 and 0 <= dropout < 1 needed, got {self.rnn_layers}, "
                             f"{self.hidden_size}, {self.dropout}")
        if self.n_fft < 2 or not 1 <= self.win_length <= self.n_fft:
            raise ValueError(f"n_fft >= 2 and 1 <= win_length <= n_fft needed, got {self.n_fft}, {self.win_length}")


def source_paths(manifest: TaskManifest, value: Any) -> list[str]:
    """A row's source files as absolute paths (relative ones are relative to the manifest folder)."""
    return [str(p if Path(p).is_absolute() else (manifest.root / p).resolve()) for p in value]


class STFTMasking(TaskKind):
    """Task kind: masks over the mixture's STFT, one per source (SE: 1, SS: 2), NPSM/PIT loss, audio metrics.

    `metric` is the main metric (selects checkpoint and lr), `secondary` the metrics reported beside it; both
    name `superbench.audio_metrics.UTTERANCE_METRICS`. `check` refuses rows without the right number of source
    files, source files that are missing, of another length or sample rate than the mixture (naming the row).
    """

    level = "frame"
    head_config = MaskHeadConfig
    wants_frame_rate = True

    def __init__(self, num_sources: int, metric: str, secondary: Sequence[str] = ()) -> None:
        if num_sources < 1:
            raise ValueError(f"num_sources must be >= 1, got {num_sources}")
        unknown = sorted({metric, *secondary} - set(audio_metrics.UTTERANCE_METRICS))
        if unknown:
            raise ValueError(f"unknown audio metric(s) {unknown}; known: {sorted(audio_metrics.UTTERANCE_METRICS)}")
        self.num_sources, self.metric, self.secondary = num_sources, metric, tuple(secondary)

    def check(self, task: Task, manifest: TaskManifest) -> None:
        import soundfile as sf

        audio_metrics.require_enhancement_metrics()
        bad = []
        for split, rows in manifest.splits.items():
            for line, u in enumerate(rows, 1):
                where = f"{manifest.root / f'{split}.jsonl'}:{line} id={u.id!r}"
                value = u.targets.get(task.target)
                if not isinstance(value, list) or len(value) != self.num_sources or not all(
                        isinstance(p, str) for p in value):
                    bad.append(f"{where}: {task.target!r} must list {self.num_sources} source file(s), got {value!r}")
                    continue
                if u.sample_rate != SAMPLE_RATE:
                    bad.append(f"{where}: mixture at {u.sample_rate} Hz; the STFT-mask tasks need {SAMPLE_RATE} Hz")
                for path in source_paths(manifest, value):
                    try:
                        info = sf.info(path)
                    except Exception as exc:  # missing or unreadable: named, with the others, before any work
                        bad.append(f"{where}: source {path} cannot be read ({type(exc).__name__})")
                        continue
                    if info.samplerate != SAMPLE_RATE or info.frames != u.num_samples or info.channels != 1:
                        bad.append(f"{where}: source {path} has {info.frames} samples at {info.samplerate} Hz, "
                                   f"{info.channels} channel(s); the mixture {u.num_samples} at {SAMPLE_RATE} Hz, mono")
        if bad:
            raise ManifestError(f"{manifest.root}: invalid manifest\n"
                                + format_problems(f"unusable {task.target!r} sources", bad))

    def setup(self, task: Task, manifest: TaskManifest, head: MaskHeadConfig, num_layers: int, hidden_size: int,
              layer: int | str | None, downsample_rate: int | None = None, sample_rate: int = SAMPLE_RATE
              ) -> TaskSetup:
        if downsample_rate is None:
            raise ValueError(f"task {task.name}: the STFT hop is the upstream's frame shift, so setup() needs "
                             f"downsample_rate= (the runner passes it to kinds with wants_frame_rate)")
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"task {task.name}: the upstream reads {sample_rate} Hz audio; the STFT-mask tasks are "
                             f"{SAMPLE_RATE} Hz")
        stft = STFTConfig(hop=int(downsample_rate), n_fft=head.n_fft, win_length=head.win_length)
        objective = MaskObjective(stft, self.num_sources, self.metric, self.secondary)
        field = task.target

        def target_of(u: Any) -> dict[str, Any]:
            return {"id": u.id, "mixture": u.audio, "sources": source_paths(manifest, u.targets[field])}

        return TaskSetup(objective, target_of,
                         lambda: SepRNNHead(num_layers, hidden_size, self.num_sources, stft.bins, head.rnn_layers,
                                            head.hidden_size, head.dropout, layer, head.feature_layer_norm))

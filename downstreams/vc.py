"""Any-to-one voice conversion (SUPERB-SG VC): a Taco2-AR decoder from the source's frames to the target's log-mel.

What s3prl does (downstream/a2o-vc-vcc2020: config.yaml, model.py, expert.py, dataset.py, vc_evaluate.py), and
what is reproduced here:

* One model per target speaker, trained on that speaker's own speech (input: the upstream's frames of the
  target's utterance; output: its log-mel), so at test time any source speaker's frames come out in the target's
  voice. Here each target speaker is one *fold* of the manifest (train, dev and test splits of its own), so the
  runner trains one head per target and reports the mean over targets, as SUPERB-SG does over TEF1..TEM2.
* Head (`model.py` `Model`, encoder_type taco2, ar true): the weighted sum of the upstream's layers, resampled
  in time (nearest, `F.interpolate`) by sample_rate / hop * upstream_rate / 16000 to the mel frame rate ->
  Taco2 encoder (Linear(D, 512) -> 3 x [Conv1d(512, 5) -> BatchNorm -> ReLU -> dropout 0.5] -> one BLSTM of
  hidden_dim / 2 per direction) -> per mel frame, autoregressively: the prenet (2 x [Linear 256 + ReLU] with
  dropout 0.5 applied in training *and* inference, as Tacotron 2) of the previous frame, concatenated with the
  encoder state, through 2 LSTMP cells (LSTMCell(hidden_dim) -> dropout 0.2 -> tanh(Linear(hidden_dim,
  hidden_dim)); s3prl's `lstmp_proj_dim` is unused by its code, so the projection keeps hidden_dim) -> a
  Linear to the n_mels log-mel (`standardised_output`: to the standardised log-mel, de-standardised with the
  target speaker's statistics; the fast profile's choice). Teacher forcing in training; the previous frame is
  standardised with the target speaker's training statistics before the prenet (the first step sees zeros). No
  reduction factor and no stop token: the output has the (resampled) input's frame count, as s3prl's.
* Loss (`expert.py` `Loss`): L1 between prediction and target log-mel, both standardised with the target
  speaker's training mean and scale (sklearn StandardScaler), over the frames both have.
* Waveforms: a vocoder (`downstreams.vocoders`): Griffin-Lim by default (64 iterations, s3prl's training-time
  samples), or a local HiFi-GAN folder in parallel_wavegan's layout (`head.vocoder: DIR`).
* Metrics (`superbench.vc_metrics`, s3prl's `vc_evaluate.py`): MCD against the target's real utterance of the
  same sentence (main metric, lower is better), WER of a recogniser (`head.asr`), ASV accept rate at the EER
  threshold of the real test utterances and DDUR; F0RMSE and F0CORR per utterance in the predictions file (NaN
  where a side has no voiced frame). Checkpoints are chosen on dev MCD, computed alone during training, on the
  target's held-out utterances reconstructed from its own speech.

A manifest row's target field (`conversion`) is {"target_speaker": name, "reference": path (test rows: the
target's real utterance of the row's sentence; absent on train/dev rows, whose own audio is the target),
"text": transcript (dev and test rows, for WER), "f0_range": [low, high] Hz (optional, the target's F0 search range for
MCD/F0 analysis)}. The row's `speaker` is who speaks its audio.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from downstreams.ctc import edit_counts
from downstreams.vocoders import MelConfig, MelSpectrogram, make_vocoder
from superbench import vc_metrics
from superbench.audio import TARGET_SAMPLE_RATE, load_audio, resample
from superbench.downstream import Head, Objective
from superbench.featurizer import WeightedSum
from superbench.manifest import ManifestError, TaskManifest, format_problems
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores

log = logging.getLogger(__name__)

#: Seed of the prenet's dropout masks at inference (Tacotron 2 keeps that dropout on): a prediction is
#: reproducible for the same head and batch.
PRENET_SEED = 0


@dataclass(frozen=True)
class VCHeadConfig(MelConfig):
    """A recipe's `head` section for voice conversion: s3prl's `fbank_config` (the mel settings, inherited from
    `MelConfig`, so the section stays flat) and `modelrc`, the vocoder and the recogniser that score the output."""

    hidden_dim: int = 1024
    econv_layers: int = 3
    econv_chans: int = 512
    econv_filts: int = 5
    encoder_dropout: float = 0.5
    prenet_layers: int = 2
    prenet_dim: int = 256
    prenet_dropout: float = 0.5
    lstmp_layers: int = 2
    lstmp_dropout: float = 0.2
    #: "griffin-lim" or the folder of a HiFi-GAN checkpoint in parallel_wavegan's layout.
    vocoder: str = "griffin-lim"
    #: "pocketsphinx" (its bundled US-English model) or the folder of a wav2vec 2.0 CTC model (transformers).
    asr: str = "pocketsphinx"
    #: Layer-normalise each upstream layer before the weighted sum (s3prl's upstream_feature_normalize).
    feature_layer_norm: bool = False
    #: The output layer predicts the standardised log-mel, de-standardised with the target speaker's statistics
    #: (False: it predicts the raw log-mel, as s3prl's). The loss is the same; True starts from the speaker's mean
    #: frame instead of 0 and scales each band's step by its spread, so a short schedule learns in hundreds of
    #: updates what the raw output needs thousands for (its bias climbs to a log-mel mean at about lr per update).
    standardised_output: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()  # the mel settings
        if min(self.hidden_dim, self.econv_chans, self.prenet_dim, self.lstmp_layers) < 1 or self.econv_filts % 2 == 0:
            raise ValueError("hidden_dim, econv_chans, prenet_dim and lstmp_layers must be >= 1 and econv_filts odd")
        if self.hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (a BLSTM of hidden_dim / 2 per direction), "
                             f"got {self.hidden_dim}")
        for name in ("encoder_dropout", "prenet_dropout", "lstmp_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def mel(self) -> MelConfig:
        """The mel settings alone (what a vocoder's identity and its checks see)."""
        return MelConfig(**{f.name: getattr(self, f.name) for f in fields(MelConfig)})


# --------------------------------------------------------------------------- head

class Taco2Encoder(torch.nn.Module):
    """s3prl's `Taco2Encoder` (ESPnet Tacotron 2): Linear -> conv blocks with batch norm -> one BLSTM."""

    def __init__(self, input_dim: int, cfg: VCHeadConfig) -> None:
        super().__init__()
        self.input_layer = torch.nn.Linear(input_dim, cfg.econv_chans)
        self.convs = torch.nn.ModuleList(torch.nn.Sequential(
            torch.nn.Conv1d(cfg.econv_chans, cfg.econv_chans, cfg.econv_filts, padding=(cfg.econv_filts - 1) // 2,
                            bias=False),
            torch.nn.BatchNorm1d(cfg.econv_chans), torch.nn.ReLU(), torch.nn.Dropout(cfg.encoder_dropout))
            for _ in range(cfg.econv_layers))
        for block in self.convs:
            torch.nn.init.xavier_uniform_(block[0].weight, torch.nn.init.calculate_gain("relu"))
        self.blstm = torch.nn.LSTM(cfg.econv_chans, cfg.hidden_dim // 2, 1, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.input_layer(x).transpose(1, 2)
        for block in self.convs:
            x = block(x)
        packed = pack_padded_sequence(x.transpose(1, 2), lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.blstm(packed)
        return pad_packed_sequence(y, batch_first=True, total_length=x.shape[2])[0]


class Taco2ARHead(Head):
    """Weighted sum -> time resampling -> Taco2 encoder; the autoregressive decoder runs in `VCEncoding.decode`."""

    def __init__(self, num_layers: int, input_dim: int, cfg: VCHeadConfig, resample_ratio: float,
                 layer: int | str | None = None) -> None:
        super().__init__()
        if resample_ratio <= 0:
            raise ValueError(f"resample ratio must be positive, got {resample_ratio}")
        self.featurizer = WeightedSum(num_layers, layer=layer, layer_norm=cfg.feature_layer_norm)
        self.cfg, self.resample_ratio = cfg, float(resample_ratio)
        self.encoder = Taco2Encoder(input_dim, cfg)
        self.prenet = torch.nn.ModuleList(torch.nn.Linear(cfg.n_mels if i == 0 else cfg.prenet_dim, cfg.prenet_dim)
                                          for i in range(cfg.prenet_layers))
        prev_dim = cfg.prenet_dim if cfg.prenet_layers else cfg.n_mels
        self.cells = torch.nn.ModuleList(torch.nn.LSTMCell(cfg.hidden_dim + prev_dim if i == 0 else cfg.hidden_dim,
                                                           cfg.hidden_dim) for i in range(cfg.lstmp_layers))
        self.projections = torch.nn.ModuleList(torch.nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
                                               for _ in range(cfg.lstmp_layers))
        self.proj = torch.nn.Linear(cfg.hidden_dim, cfg.n_mels)
        # The target speaker's log-mel statistics (s3prl's target_mean / target_scale buffers), set by the
        # objective from the fold's training utterances before the first update, kept in every checkpoint.
        self.register_buffer("target_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("target_scale", torch.ones(cfg.n_mels))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.floor(lengths.double() * self.resample_ratio).long().clamp_min(1)

    def set_stats(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        self.target_mean.copy_(mean)
        self.target_scale.copy_(scale)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> "VCEncoding":
        if features.dim() != 4:
            raise ValueError(f"expected (L, B, T, D) frames, got shape {tuple(features.shape)}")
        x = self.featurizer(features).float()
        out_lengths = self.output_lengths(lengths).to(x.device)
        x = F.interpolate(x.transpose(1, 2), scale_factor=self.resample_ratio).transpose(1, 2)
        width = int(out_lengths.max())
        if x.shape[1] < width:  # floor(T * ratio) of the longest row is what interpolate gives; guard rounding
            x = F.pad(x, (0, 0, 0, width - x.shape[1]))
        states = self.encoder(x[:, :width], out_lengths)
        return VCEncoding(states, out_lengths, self)

    def prenet_forward(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        p = self.cfg.prenet_dropout
        layers = list(self.prenet) or [None]
        for linear in layers:
            if linear is not None:
                x = F.relu(linear(x))
            if self.training or generator is None:
                x = F.dropout(x, p, training=True)
            elif p > 0:
                keep = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) >= p
                x = x * keep / (1 - p)
        return x

    def decode(self, states: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        """(B, T, n_mels) log-mel from encoder states (B, T, H): teacher forcing on `teacher` (B, T, n_mels), or
        fed back its own frames when None (inference; the prenet's dropout masks then come from a seeded
        generator)."""
        b, t_max, _ = states.shape
        h = self.cfg.hidden_dim
        z = [states.new_zeros(b, h) for _ in self.cells]
        c = [states.new_zeros(b, h) for _ in self.cells]
        prev = states.new_zeros(b, self.cfg.n_mels)
        generator = None if self.training else torch.Generator().manual_seed(PRENET_SEED)
        dropout = self.cfg.lstmp_dropout
        out = []
        for t in range(t_max):
            x = torch.cat([states[:, t], self.prenet_forward(prev, generator)], dim=1)
            for i, (cell, projection) in enumerate(zip(self.cells, self.projections)):
                new_z, c[i] = cell(x if i == 0 else z[i - 1], (z[i], c[i]))
                z[i] = torch.tanh(projection(F.dropout(new_z, dropout, training=self.training)))
            frame = self.proj(z[-1])
            if self.cfg.standardised_output:
                frame = frame * self.target_scale + self.target_mean
            out.append(frame)
            prev = (teacher[:, t] if teacher is not None else frame)
            prev = (prev - self.target_mean) / self.target_scale
        return torch.stack(out, dim=1)


class VCEncoding:
    """What the head gives the objective: the encoder states, their frame counts and the decoder to run."""

    def __init__(self, states: torch.Tensor, lengths: torch.Tensor, head: Taco2ARHead) -> None:
        self.states, self.lengths, self.head = states, lengths, head

    def __len__(self) -> int:
        return self.states.shape[0]

    def decode(self, teacher: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.decode(self.states, teacher)


# --------------------------------------------------------------------------- objective

class ConversionObjective(Objective):
    """L1 on standardised log-mel in training; vocoded predictions scored by `superbench.vc_metrics`.

    A target is the dict `VoiceConversion.setup` builds per row; a prediction is the (frames, n_mels) log-mel.
    """

    metric = "mcd"
    higher_is_better = False
    #: Reported beside MCD; F0RMSE and F0CORR (NaN for an utterance without voiced frames, as s3prl's) stay in
    #: the predictions file, per utterance.
    SECONDARY = ("wer", "asv", "ddur")

    def __init__(self, cfg: VCHeadConfig, train_audio: dict[str, list[str]], real_audio: dict[str, list[str]]) -> None:
        vc_metrics.require_vc_packages()  # a clear error at task load, never mid-run
        self.cfg, self.mel = cfg, MelSpectrogram(cfg.mel)
        self.vocoder = make_vocoder(cfg.vocoder, cfg.mel)
        if cfg.asr != "pocketsphinx" and not (Path(cfg.asr).expanduser() / "config.json").is_file():
            raise FileNotFoundError(f"head.asr {cfg.asr!r}: not 'pocketsphinx' nor a wav2vec 2.0 CTC folder "
                                    f"(no config.json there)")
        self.train_audio, self.real_audio = train_audio, real_audio
        self._mels: dict[str, torch.Tensor] = {}
        self._stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._scored: dict[int, tuple[weakref.ref, dict[str, Any]]] = {}
        self._embeddings: dict[str, np.ndarray] = {}
        self._world: dict[tuple[str, tuple[float, float]], vc_metrics.WorldFeatures] = {}
        self._asr: Any = None
        self._encoder: Any = None
        self._threshold: tuple[float, float] | None = None

    # targets and statistics
    def target_mel(self, path: str) -> torch.Tensor:
        mel = self._mels.get(path)
        if mel is None:
            mel = self.mel(torch.from_numpy(load_audio(path, self.cfg.sample_rate)))
            self._mels[path] = mel
        return mel

    def stats(self, speaker: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale (population std; 1 where it is 0, as StandardScaler) of the speaker's training log-mel."""
        if speaker not in self._stats:
            paths = self.train_audio.get(speaker)
            if not paths:
                raise ValueError(f"no training utterances of target speaker {speaker!r}")
            frames = torch.cat([self.target_mel(p) for p in paths]).double()
            scale = frames.std(dim=0, unbiased=False)
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            self._stats[speaker] = (frames.mean(dim=0).float(), scale.float())
        return self._stats[speaker]

    # training
    def loss(self, output: VCEncoding, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        mean, scale = self.stats(targets[0]["target_speaker"])
        device = output.states.device
        output.head.set_stats(mean.to(device), scale.to(device))
        b, t_max, _ = output.states.shape
        teacher = torch.zeros(b, t_max, self.cfg.n_mels, device=device)
        valid = torch.zeros(b, t_max, dtype=torch.bool, device=device)
        for i, (target, n) in enumerate(zip(targets, lengths.tolist())):
            mel = self.target_mel(target["reference"])[:t_max].to(device)
            teacher[i, :len(mel)] = mel
            valid[i, :min(len(mel), int(n))] = True
        predicted = output.decode(teacher)
        return ((predicted - teacher) / scale.to(device)).abs()[valid].mean()

    def predict(self, output: VCEncoding, lengths: torch.Tensor) -> list:
        predicted = output.decode(None)
        return [predicted[i, :max(int(n), 1)].float().cpu().clone() for i, n in enumerate(lengths.tolist())]

    # waveforms and metrics
    def converted(self, prediction: torch.Tensor) -> np.ndarray:
        """The vocoder's waveform of a predicted log-mel, clipped to [-1, 1] as a 16-bit file would be."""
        return np.clip(self.vocoder(prediction), -1.0, 1.0)

    def waveforms(self, target: dict[str, Any], prediction: torch.Tensor) -> dict[str, np.ndarray]:
        """The converted utterance, its source and the target's real utterance of the sentence, at 16 kHz."""
        return {"converted": self._to16k(self.converted(prediction)),
                "source": load_audio(target["source"], TARGET_SAMPLE_RATE).astype(np.float64),
                "target": load_audio(target["reference"], TARGET_SAMPLE_RATE).astype(np.float64)}

    def _to16k(self, wav: np.ndarray) -> np.ndarray:
        sr = self.vocoder.sample_rate
        return wav if sr == TARGET_SAMPLE_RATE else resample(wav, sr, TARGET_SAMPLE_RATE).astype(np.float64)

    def _reference(self, target: dict[str, Any]) -> np.ndarray:
        return load_audio(target["reference"], self.vocoder.sample_rate).astype(np.float64)

    def _scores(self, target: dict[str, Any], wav: np.ndarray) -> dict[str, Any]:
        """MCD, F0RMSE, F0CORR and DDUR of a converted waveform; the reference's WORLD analysis is done once."""
        key = (target["reference"], self._f0_range(target))
        ref = self._reference(target)
        if key not in self._world:
            self._world[key] = vc_metrics.world_features(ref, self.vocoder.sample_rate, key[1])
        try:
            return vc_metrics.conversion_scores(wav, ref, self.vocoder.sample_rate, key[1], self._world[key])
        except ValueError as exc:
            raise ValueError(f"utterance {target['id']}: {exc}") from exc

    def _f0_range(self, target: dict[str, Any]) -> tuple[float, float]:
        return tuple(target.get("f0_range") or vc_metrics.DEFAULT_F0_RANGE)  # type: ignore[return-value]

    def _cached(self, prediction: torch.Tensor) -> dict[str, Any] | None:
        hit = self._scored.get(id(prediction))
        return hit[1] if hit is not None and hit[0]() is prediction else None

    def _store(self, prediction: torch.Tensor, scores: dict[str, Any]) -> dict[str, Any]:
        if len(self._scored) > 200_000:
            self._scored = {k: v for k, v in self._scored.items() if v[0]() is not None}
        self._scored[id(prediction)] = (weakref.ref(prediction), scores)
        return scores

    def _mcd(self, target: dict[str, Any], prediction: torch.Tensor) -> float:
        hit = self._cached(prediction)
        if hit is not None:
            return hit["mcd"]
        return self._scores(target, self.converted(prediction))["mcd"]

    def speaker_encoder(self) -> vc_metrics.SpeakerEncoder:
        if self._encoder is None:
            self._encoder = vc_metrics.SpeakerEncoder()
        return self._encoder

    def recogniser(self) -> vc_metrics.Recogniser:
        if self._asr is None:
            self._asr = vc_metrics.make_recogniser(self.cfg.asr)
        return self._asr

    def embedding(self, path: str) -> np.ndarray:
        if path not in self._embeddings:
            self._embeddings[path] = self.speaker_encoder().embed(load_audio(path, TARGET_SAMPLE_RATE),
                                                                 TARGET_SAMPLE_RATE)
        return self._embeddings[path]

    def threshold(self) -> float:
        """The ASV threshold at the EER of every pair of the test splits' real utterances (computed once)."""
        if self._threshold is None:
            embeddings = {spk: [self.embedding(p) for p in paths] for spk, paths in self.real_audio.items()}
            labels, scores = vc_metrics.speaker_trials(embeddings)
            self._threshold = vc_metrics.eer_threshold(labels, scores)
            log.info("ASV threshold %.4f at EER %.2f %% over %d real utterances of %d speakers",
                     self._threshold[1], self._threshold[0], sum(map(len, embeddings.values())), len(embeddings))
        return self._threshold[1]

    def utterance_scores(self, target: dict[str, Any], prediction: torch.Tensor) -> dict[str, Any]:
        """MCD, F0RMSE, F0CORR, DDUR, ASV accept (100 or 0), the recogniser's transcript and its word errors."""
        hit = self._cached(prediction)
        if hit is not None and "asv" in hit:
            return hit
        wav = self.converted(prediction)
        scores = self._scores(target, wav)
        wav16k = self._to16k(wav)
        similarity = vc_metrics.cosine(self.speaker_encoder().embed(wav16k, TARGET_SAMPLE_RATE),
                                       self.embedding(target["reference"]))
        scores["asv"] = 100.0 if similarity > self.threshold() else 0.0
        scores["similarity"] = similarity
        scores["transcript"] = self.recogniser().transcribe(wav16k)
        return self._store(prediction, scores)

    def _references(self, targets: list) -> list[str]:
        return [vc_metrics.normalise_sentence(t.get("text") or "") for t in targets]

    def _per_utterance(self, name: str, targets: list, predictions: list) -> list[float]:
        if len(targets) != len(predictions) or not targets:
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        if name == self.metric:  # dev scoring computes MCD only (it selects the checkpoint)
            return [self._mcd(t, p) for t, p in zip(targets, predictions)]
        return [float(self.utterance_scores(t, p)[name]) for t, p in zip(targets, predictions)]

    def score(self, targets: list, predictions: list) -> float:
        return float(np.mean(self._per_utterance(self.metric, targets, predictions)))

    def _wer_units(self, ids: Sequence[str], targets: list, predictions: list) -> UnitScores:
        hyps = [self.utterance_scores(t, p)["transcript"] for t, p in zip(targets, predictions)]
        return edit_counts(ids, self._references(targets), hyps)

    def secondary_scores(self, targets: list, predictions: list) -> dict[str, float]:
        out = {"wer": self._wer_units([t["id"] for t in targets], targets, predictions).value()}
        for name in ("asv", "ddur"):
            out[name] = float(np.mean(self._per_utterance(name, targets, predictions)))
        return out

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Per utterance MCD, ASV accept and DDUR (statistic "mean"), word errors and reference words (WER)."""
        out = {name: UnitScores.build("mean", "utterance", ids, {"value": self._per_utterance(name, targets,
                                                                                            predictions)})
               for name in (self.metric, "asv", "ddur")}
        out["wer"] = self._wer_units(ids, targets, predictions)
        return out

    def shown(self, target: dict[str, Any], prediction: torch.Tensor) -> dict[str, Any]:
        """What the record's predictions file says of one utterance: its files, transcripts and scores."""
        s = self.utterance_scores(target, prediction)
        return {"reference": {k: target.get(k) for k in ("source", "reference", "target_speaker", "text")},
                "prediction": {"frames": int(prediction.shape[0]), "transcript": s["transcript"]},
                **{k: (round(float(v), 4) if np.isfinite(v) else None) for k, v in s.items()
                   if k not in ("transcript",)}}

    def scorers(self) -> dict[str, str]:
        """What turned predictions into scores, beside the head: vocoder, recogniser, speaker encoder."""
        return {"vc_vocoder": self.vocoder.name, "vc_asr": self.recogniser().name,
                "vc_asv": self.speaker_encoder().name}


# --------------------------------------------------------------------------- task kind

class VoiceConversion(TaskKind):
    """Task kind: any-to-one voice conversion, one fold per target speaker (see the module docstring).

    `check` refuses a row whose target field is not a dict with a `target_speaker`, a dev or test row without a
    `text`, a test row without a readable `reference` file, and a fold whose rows name more than one target
    speaker (naming the rows)."""

    level = "frame"
    head_config = VCHeadConfig
    wants_frame_rate = True
    checks_targets = True

    def check(self, task: Task, manifest: TaskManifest) -> None:
        import soundfile as sf

        vc_metrics.require_vc_packages()
        bad: list[str] = []
        test_splits = {fold.test for fold in manifest.folds}
        scored_splits = test_splits | {fold.dev for fold in manifest.folds}
        for split, rows in manifest.splits.items():
            for line, u in enumerate(rows, 1):
                where = f"{manifest.root / f'{split}.jsonl'}:{line} id={u.id!r}"
                value = u.targets.get(task.target)
                if not isinstance(value, dict) or not isinstance(value.get("target_speaker"), str):
                    bad.append(f"{where}: {task.target!r} must be a mapping with a 'target_speaker', got {value!r}")
                    continue
                f0 = value.get("f0_range")
                if f0 is not None and not (isinstance(f0, list) and len(f0) == 2 and 0 < f0[0] < f0[1]):
                    bad.append(f"{where}: f0_range must be [low, high] Hz, got {f0!r}")
                if split in scored_splits and (not isinstance(value.get("text"), str) or not value["text"].strip()):
                    bad.append(f"{where}: a dev or test row needs the sentence's 'text' (for WER)")
                if split in test_splits:
                    ref = value.get("reference")
                    if not isinstance(ref, str):
                        bad.append(f"{where}: a test row needs the target's real utterance as 'reference'")
                        continue
                    path = reference_path(manifest, ref)
                    try:
                        sf.info(path)
                    except Exception as exc:  # missing or unreadable: named, with the others, before any work
                        bad.append(f"{where}: reference {path} cannot be read ({type(exc).__name__})")
        for fold in manifest.folds:
            speakers = {str(u.targets.get(task.target, {}).get("target_speaker"))
                        for split in (fold.train, fold.dev, fold.test) for u in manifest.splits[split]
                        if isinstance(u.targets.get(task.target), dict)}
            if len(speakers) > 1:
                bad.append(f"fold {fold.name!r}: one model per target speaker, but its rows name {sorted(speakers)}")
        if bad:
            raise ManifestError(f"{manifest.root}: invalid manifest\n"
                                + format_problems(f"unusable {task.target!r} targets", bad))

    def setup(self, task: Task, manifest: TaskManifest, head: VCHeadConfig, num_layers: int, hidden_size: int,
              layer: int | str | None, downsample_rate: int | None = None, sample_rate: int = TARGET_SAMPLE_RATE
              ) -> TaskSetup:
        if downsample_rate is None:
            raise ValueError(f"task {task.name}: the decoder's frame rate follows the upstream's, so setup() needs "
                             f"downsample_rate= (the runner passes it to kinds with wants_frame_rate)")
        ratio = head.sample_rate / head.hop * downsample_rate / sample_rate
        field = task.target

        def target_of(u: Any) -> dict[str, Any]:
            value = u.targets[field]
            ref = value.get("reference")
            return {"id": u.id, "source": u.audio, "speaker": u.speaker, "target_speaker": value["target_speaker"],
                    "reference": reference_path(manifest, ref) if ref else u.audio, "text": value.get("text"),
                    "f0_range": value.get("f0_range")}

        train_audio: dict[str, list[str]] = {}
        real_audio: dict[str, list[str]] = {}
        for fold in manifest.folds:
            for u in manifest.splits[fold.train]:
                t = target_of(u)
                train_audio.setdefault(t["target_speaker"], []).append(t["reference"])
            for u in manifest.splits[fold.test]:
                t = target_of(u)
                real_audio.setdefault(u.speaker or f"source of {u.id}", []).append(t["source"])
                real_audio.setdefault(t["target_speaker"], []).append(t["reference"])
        real_audio = {spk: sorted(set(paths)) for spk, paths in real_audio.items()}
        objective = ConversionObjective(head, {k: sorted(set(v)) for k, v in train_audio.items()}, real_audio)
        return TaskSetup(objective, target_of, lambda: Taco2ARHead(num_layers, hidden_size, head, ratio, layer))


def reference_path(manifest: TaskManifest, value: str) -> str:
    """A row's reference file as an absolute path (a relative one is relative to the manifest folder)."""
    return str(value if Path(value).is_absolute() else (manifest.root / value).resolve())

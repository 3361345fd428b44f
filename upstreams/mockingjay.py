"""Native `mockingjay` and `tera` upstreams: s3prl's Transformer encoders, in torch only.

TERA is Mockingjay's architecture pretrained with other alterations (time + frequency + magnitude
instead of time masking only), so one module serves both. What is matched from s3prl v0.4.18:

* `s3prl/upstream/mockingjay/{expert.py, builder.py, model.py, hubconf.py, options.yaml}` and
  `s3prl/upstream/tera/*` (which re-export Mockingjay's expert and builder);
* the preprocessing they call: `s3prl/upstream/baseline/preprocessor.py` (`OnlinePreprocessor`,
  torchaudio `Spectrogram` / `MelScale` / `MFCC`) for the published checkpoints, and
  `s3prl/upstream/baseline/extracter.py` (`torchaudio.compliance.kaldi` + deltas + CMVN) for
  checkpoints whose audio config has a `kaldi` section (e.g. `tera_fbankBase_*`).

Checkpoint (s3prl's `.ckpt`, as `builder.py` reads it): a dict with `Transformer` (the
`TransformerModel` state dict), `SpecHead` (the pretraining head, unused here) and the upstream config
(`transformer`, `task`, `audio` sections) under `Config` (older files; the runner config is then under
`Runner`) or under `Upstream_Config` (newer files; `Config` then holds the runner config). Old
`gamma`/`beta` weight names are renamed to `weight`/`bias` as s3prl does. A file that keeps its config
under `Settings: {Config: ...}` (the pre-s3prl Mockingjay repository) is read too, which s3prl cannot.
`write_random_checkpoint` writes the older layout (`Config` = upstream config, `Runner`, `Step`).

Hub names: `mockingjay` (s3prl's default, `mockingjay_origin`: Large, 12 layers) and `tera` (default,
`tera_960hr`: Base, 3 layers). s3prl's other variants (100 h / 960 h Base, fbank TERA, ...) load with
`mockingjay=PATH` / `tera=PATH`: the architecture and front end come from each file's own config.

Hidden states (s3prl's expert with its default options: `output_hidden_states`, all layers):
`num_hidden_layers + 1` of them, `hidden_size` wide, in s3prl's order:

0. the input representation: `LayerNorm(Linear(features) + sinusoidal position encoding)`;
1..N. the output of each Transformer layer.

With `pre_layer_norm` every one of them goes through the encoder's own `LayerNorm[i]`, as in s3prl.

Preprocessing, for the published (`OnlinePreprocessor`) configs, per utterance on its unpadded audio:

* the waveform scaled to `target_level` dB (`wav * 10 ** (target_level / 20) / (rms + 1e-10)`);
* centred STFT (`n_fft = 2 * (n_freq - 1)`, `win_ms`/`hop_ms`, periodic Hann window, reflect padding),
  power spectrum; `linear` is that, `mel` multiplies it by an HTK-scale triangular filterbank (0 Hz to
  Nyquist, no area normalisation, as torchaudio's `MelScale`), `mfcc` is torchaudio's MFCC (128 HTK mel
  bands, `log(mel + 1e-6)`, orthonormal DCT-II);
* `log(x + 1e-10)` when `log`, `delta` rounds of regression deltas (window 5, edges replicated),
  per-utterance CMVN `(x - mean) / (std + 1e-10)` (unbiased std) when `cmvn`.

Kaldi configs use `upstreams.filterbank.KaldiFeatures` (same settings as torchaudio's
`compliance.kaldi` defaults, deltas, CMVN); they get no decibel normalisation, as in s3prl.

Long inputs: when the config's `task.sequence_length` L > 0 and an utterance has more than L frames,
s3prl cuts it into `ceil(T / L)` equal chunks (`torch.chunk`) and runs each alone, position encoding
restarting at 0; the same is done here, per utterance.

Frame rate: 100 Hz (hop 160 samples). The centred STFT gives `n // 160 + 1` frames, one more than any
snip-edges rule allows, so the upstream declares `receptive_field = downsample_rate = 160`
(`frames = n // 160`) and drops s3prl's last frame (centred on the last sample, mostly reflect padding);
the Transformer still sees every frame s3prl sees. Kaldi configs follow snip-edges exactly
(`receptive_field` 400, nothing dropped).

Differences, by design: padding never matters (features and chunking are computed per utterance,
and the Transformer masks padded frames), whereas s3prl runs a batch's STFT and chunking over the padded
batch, so its shorter utterances' last frames and chunk boundaries depend on their batch-mates; an
utterance shorter than half an STFT window is reflect-padded periodically (torch's reflect padding
refuses it); a single-frame utterance gets CMVN features 0 (s3prl: NaN). The model runs in eval mode
(s3prl's expert leaves dropout on until `.eval()`).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from superbench.upstream import Upstream
from upstreams.filterbank import (
    KaldiFeatureConfig,
    KaldiFeatures,
    compute_deltas_masked,
    dct_matrix,
    masked_cmvn,
)
from upstreams.ssl_checkpoint import (
    CheckpointFormatError,
    PublishedCheckpoint,
    load_weights,
    published_factory,
    read_checkpoint,
    seeded,
)

log = logging.getLogger(__name__)

EXPECTED = "a Mockingjay/TERA checkpoint (s3prl .ckpt with 'Transformer' and 'Config')"

_HF = "https://huggingface.co/s3prl"
PUBLISHED: dict[str, PublishedCheckpoint] = {
    "mockingjay": PublishedCheckpoint(
        "mockingjay",
        f"{_HF}/mockingjay/resolve/main/mockingjay_logMelLinearLarge_T_AdamW_b32_500k_360hr_drop1/states-500000.ckpt",
        "s3prl .ckpt", "Mockingjay Large (12 x 768) on LibriSpeech 360 h, 80-dim log-mel in, linear target"),
    "tera": PublishedCheckpoint(
        "tera",
        f"{_HF}/tera/resolve/main/tera_logMelBase_T_F_M_AdamW_b32_1m_960hr_drop1/states-1000000.ckpt",
        "s3prl .ckpt", "TERA Base (3 x 768) on LibriSpeech 960 h, time + frequency + magnitude alteration"),
}

#: (layers incl. the input representation, hidden size) of each published default.
PUBLISHED_SHAPES = {"mockingjay": (13, 768), "tera": (4, 768)}



# --------------------------------------------------------------------------- preprocessing helpers


def hann_window(size: int) -> torch.Tensor:
    """Periodic Hann window (torch.hann_window's default, which torchaudio and s3prl use), float64."""
    n = torch.arange(size, dtype=torch.float64)
    return 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / size)


def htk_mel(freq: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale, 2595 log10(1 + f / 700) (torchaudio's default `mel_scale="htk"`)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def htk_mel_inverse(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)


def htk_mel_banks(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                  f_max: float | None = None) -> torch.Tensor:
    """Triangular filters equally spaced on the HTK mel scale, (n_freqs, n_mels), no normalisation.

    Same construction as torchaudio's `melscale_fbanks(norm=None, mel_scale="htk")`: the FFT bins sit at
    `linspace(0, sample_rate // 2, n_freqs)` and each filter rises from its left to its centre frequency
    and falls to its right one.
    """
    f_max = float(sample_rate // 2) if f_max is None else float(f_max)
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(float(htk_mel(f_min)), float(htk_mel(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = htk_mel_inverse(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def reflect_indices(length: int, pad: int) -> torch.Tensor:
    """Sample indices of `x` reflect-padded by `pad` on both sides (numpy's "reflect", any length >= 1)."""
    idx = torch.arange(-pad, length + pad)
    if length == 1:
        return torch.zeros_like(idx)
    period = 2 * (length - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx < length, idx, period - idx)


def centred_power_spectrum(wav: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """|STFT|^2 of one 1-D waveform, (frames, n_fft // 2 + 1), as `torch.stft(center=True, pad_mode="reflect")`.

    `window` (win_length samples) is zero-padded to `n_fft` around the centre, as torch.stft does.
    """
    win = window.shape[0]
    if win < n_fft:
        left = (n_fft - win) // 2
        window = torch.nn.functional.pad(window, (left, n_fft - win - left))
    padded = wav[reflect_indices(wav.shape[0], n_fft // 2).to(wav.device)]
    frames = padded.unfold(0, n_fft, hop)  # (1 + n // hop, n_fft)
    spec = torch.fft.rfft(frames * window.to(frames.dtype))
    return spec.real.pow(2) + spec.imag.pow(2)


@lru_cache(maxsize=16)
def _sinusoid_table(length: int, hidden_size: int) -> torch.Tensor:
    """s3prl's position table (`get_sinusoid_table`): pos / 10000^(2 (j // 2) / H), sin on even j, cos on odd."""
    j = np.arange(hidden_size)
    angles = np.arange(length, dtype=np.float64)[:, None] / np.power(10000, 2 * (j // 2) / hidden_size)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    with torch.inference_mode(False):  # a cached table must stay usable outside inference mode
        return torch.tensor(angles, dtype=torch.float32)


def position_encoding(length: int, hidden_size: int) -> torch.Tensor:
    """(length, hidden_size) sinusoidal encoding, cached by length rounded up to 256 frames."""
    rounded = max(256, -(-length // 256) * 256)
    return _sinusoid_table(rounded, hidden_size)[:length]


# --------------------------------------------------------------------------- front ends


FEAT_TYPES = ("linear", "mel", "mfcc")


@dataclass(frozen=True)
class OnlineFeatureConfig:
    """s3prl's `OnlinePreprocessor` settings for the model input (the config's `audio` section)."""

    feat_type: str = "mel"
    log: bool = True
    delta: int = 0
    cmvn: bool = True
    sample_rate: int = 16000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_freq: int = 201
    n_mels: int = 80
    n_mfcc: int = 13
    target_level: float = -25.0
    eps: float = 1e-10

    @property
    def win_length(self) -> int:
        return round(self.win_ms * self.sample_rate / 1000)

    @property
    def hop_length(self) -> int:
        return round(self.hop_ms * self.sample_rate / 1000)

    @property
    def n_fft(self) -> int:
        return (self.n_freq - 1) * 2

    @property
    def base_dim(self) -> int:
        return {"linear": self.n_freq, "mel": self.n_mels, "mfcc": self.n_mfcc}[self.feat_type]

    @property
    def dim(self) -> int:
        return self.base_dim * (self.delta + 1)


class OnlineFeatures(nn.Module):
    """The `OnlinePreprocessor` input features, per utterance on its own (unpadded) audio."""

    MFCC_N_MELS = 128  # torchaudio MelSpectrogram's default, which s3prl's MFCC transform keeps
    MFCC_LOG_OFFSET = 1e-6

    def __init__(self, config: OnlineFeatureConfig) -> None:
        super().__init__()
        self.config = config
        if config.win_length > config.n_fft:
            raise ValueError(f"window {config.win_length} longer than n_fft {config.n_fft}")
        self.register_buffer("window", hann_window(config.win_length).float(), persistent=False)
        n_stft = config.n_fft // 2 + 1
        if config.feat_type == "mel":
            banks = htk_mel_banks(n_stft, config.n_mels, config.sample_rate)
            self.register_buffer("banks", banks.float(), persistent=False)
        elif config.feat_type == "mfcc":
            banks = htk_mel_banks(n_stft, self.MFCC_N_MELS, config.sample_rate)
            self.register_buffer("banks", banks.float(), persistent=False)
            self.register_buffer("dct", dct_matrix(self.MFCC_N_MELS, config.n_mfcc).float(), persistent=False)

    def normalise_level(self, wav: torch.Tensor) -> torch.Tensor:
        """Scale to `target_level` dB RMS, as s3prl's `_normalize_wav_decibel` (over the whole utterance)."""
        rms = wav.pow(2).mean().pow(0.5)
        return wav * ((10 ** (self.config.target_level / 20)) / (rms + 1e-10))

    def static(self, wav: torch.Tensor) -> torch.Tensor:
        """(frames, base_dim) features of one level-normalised utterance, before log/deltas/CMVN."""
        cfg = self.config
        power = centred_power_spectrum(wav, cfg.n_fft, cfg.hop_length, self.window)
        if cfg.feat_type == "linear":
            return power
        mel = power @ self.banks
        if cfg.feat_type == "mel":
            return mel
        return (mel + self.MFCC_LOG_OFFSET).log() @ self.dct

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        feats = [self.static(self.normalise_level(wavs[i, :n])) for i, n in enumerate(wav_lengths.tolist())]
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        x = nn.utils.rnn.pad_sequence(feats, batch_first=True)
        if cfg.log:
            x = (x + cfg.eps).log()
        parts = [x]
        for _ in range(cfg.delta):
            parts.append(compute_deltas_masked(parts[-1], lengths, 5))
        x = torch.cat(parts, dim=-1)
        if cfg.cmvn:
            x = masked_cmvn(x, lengths, cfg.eps)
        return x, lengths


class KaldiFrontEnd(nn.Module):
    """s3prl's `get_extracter` (torchaudio.compliance.kaldi + Delta + CMVN) on the project's filterbank code."""

    def __init__(self, config: KaldiFeatureConfig) -> None:
        super().__init__()
        self.features = KaldiFeatures("kaldi", config)
        self.config = config

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers, lengths = self.features._forward(wavs, wav_lengths)
        return layers[0], lengths


# --------------------------------------------------------------------------- the Transformer (s3prl's model.py)


@dataclass(frozen=True)
class TransformerSettings:
    """The `transformer` section of the config that shapes the model (dropouts play no part in eval)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    share_layer: bool = False
    pre_layer_norm: bool = False


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": _gelu, "relu": torch.relu, "swish": lambda x: x * torch.sigmoid(x)}


class TFLayerNorm(nn.Module):
    """LayerNorm with the epsilon inside the square root (s3prl's `TransformerLayerNorm`)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.eps)) + self.bias


class InputRepresentations(nn.Module):
    def __init__(self, cfg: TransformerSettings, input_dim: int) -> None:
        super().__init__()
        self.spec_transform = nn.Linear(input_dim, cfg.hidden_size)
        self.LayerNorm = TFLayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, spec: torch.Tensor, pos_enc: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.spec_transform(spec) + pos_enc)


class SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerSettings) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"hidden size {cfg.hidden_size} is not a multiple of {cfg.num_attention_heads} heads")
        self.heads = cfg.num_attention_heads
        self.head_size = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_size).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)
        # padded keys are left out entirely (a lone utterance has none); s3prl adds -10000 to them
        scores = scores.masked_fill(key_padding[:, None, None, :], torch.finfo(scores.dtype).min)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return context.permute(0, 2, 1, 3).reshape(*x.shape[:-1], self.heads * self.head_size)


class SelfOutput(nn.Module):
    """`dense -> + residual -> LayerNorm` (the LayerNorm is skipped, and used before, with pre-LN)."""

    def __init__(self, cfg: TransformerSettings, in_size: int) -> None:
        super().__init__()
        self.pre_layer_norm = cfg.pre_layer_norm
        self.dense = nn.Linear(in_size, cfg.hidden_size)
        self.LayerNorm = TFLayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = self.dense(x) + residual
        return x if self.pre_layer_norm else self.LayerNorm(x)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerSettings) -> None:
        super().__init__()
        self.pre_layer_norm = cfg.pre_layer_norm
        self.self = SelfAttention(cfg)
        self.output = SelfOutput(cfg, cfg.hidden_size)
        if self.pre_layer_norm:
            self.LayerNorm = self.output.LayerNorm  # an alias, also in the state dict, as in s3prl

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        h = self.self(self.LayerNorm(x) if self.pre_layer_norm else x, key_padding)
        return self.output(h, x)


class Intermediate(nn.Module):
    def __init__(self, cfg: TransformerSettings) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerSettings) -> None:
        super().__init__()
        self.pre_layer_norm = cfg.pre_layer_norm
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = SelfOutput(cfg, cfg.intermediate_size)
        if self.pre_layer_norm:
            self.LayerNorm = self.output.LayerNorm

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, key_padding)
        return self.output(self.intermediate(self.LayerNorm(a) if self.pre_layer_norm else a), a)


class Encoder(nn.Module):
    def __init__(self, cfg: TransformerSettings) -> None:
        super().__init__()
        self.pre_layer_norm = cfg.pre_layer_norm
        layer = TransformerLayer(cfg)
        self.layer = nn.ModuleList([layer if cfg.share_layer else copy.deepcopy(layer)
                                    for _ in range(cfg.num_hidden_layers)])
        if self.pre_layer_norm:
            self.LayerNorm = nn.ModuleList([TFLayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
                                            for _ in range(cfg.num_hidden_layers + 1)])

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> list[torch.Tensor]:
        states = []
        for i, layer in enumerate(self.layer):
            states.append(self.LayerNorm[i](x) if self.pre_layer_norm else x)
            x = layer(x, key_padding)
        states.append(self.LayerNorm[-1](x) if self.pre_layer_norm else x)
        return states


class TransformerModel(nn.Module):
    """s3prl's `TransformerModel` (state-dict compatible): every hidden state, input representation first."""

    def __init__(self, cfg: TransformerSettings, input_dim: int) -> None:
        super().__init__()
        self.settings = cfg
        self.input_representations = InputRepresentations(cfg, input_dim)
        self.encoder = Encoder(cfg)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        time = feats.shape[1]
        key_padding = torch.arange(time, device=feats.device)[None, :] >= lengths.to(feats.device)[:, None]
        pos = position_encoding(time, self.settings.hidden_size).to(feats.device)
        return self.encoder(self.input_representations(feats, pos), key_padding)


class SpecHead(nn.Module):
    """s3prl's `TransformerSpecPredictionHead` (pretraining only; built to write random checkpoints)."""

    def __init__(self, cfg: TransformerSettings, output_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = TFLayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.output = nn.Linear(cfg.hidden_size, output_dim)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """s3prl's head: `output(LayerNorm(act(dense(hidden))))`, the reconstructed frames (pretraining only)."""
        return self.output(self.LayerNorm(self.act(self.dense(hidden))))


# --------------------------------------------------------------------------- reading the checkpoint


def _fail(file: Path, what: str) -> CheckpointFormatError:
    return CheckpointFormatError(f"{file}: expected {EXPECTED}, but {what}")


def upstream_config(ckpt: Mapping[str, Any], file: Path) -> dict[str, Any]:
    """The upstream config (`transformer`, `task`, `audio`), wherever this checkpoint generation keeps it."""
    for key in ("Config", "Upstream_Config"):
        value = ckpt.get(key)
        if isinstance(value, Mapping) and "transformer" in value:
            return dict(value)
    settings = ckpt.get("Settings")
    if isinstance(settings, Mapping) and isinstance(settings.get("Config"), Mapping) \
            and "transformer" in settings["Config"]:
        return dict(settings["Config"])
    raise _fail(file, "neither its 'Config' nor its 'Upstream_Config' has a 'transformer' section")


def transformer_settings(config: Mapping[str, Any], file: Path) -> TransformerSettings:
    section = config["transformer"]
    if not isinstance(section, Mapping):
        raise _fail(file, "its 'transformer' config is not a mapping")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in required if k not in section]
    if missing:
        raise _fail(file, f"its 'transformer' config has no {', '.join(missing)}")
    act = str(section.get("hidden_act", "gelu"))
    if act not in ACTIVATIONS:
        raise _fail(file, f"its hidden_act {act!r} is none of {sorted(ACTIVATIONS)}")
    try:
        return TransformerSettings(
            hidden_size=int(section["hidden_size"]), num_hidden_layers=int(section["num_hidden_layers"]),
            num_attention_heads=int(section["num_attention_heads"]),
            intermediate_size=int(section["intermediate_size"]), hidden_act=act,
            layer_norm_eps=float(section.get("layer_norm_eps", 1e-12)),
            share_layer=bool(section.get("share_layer", False)),
            pre_layer_norm=bool(section.get("pre_layer_norm", False)))
    except (TypeError, ValueError) as exc:
        raise _fail(file, f"its 'transformer' config has a bad value: {exc}") from exc


KALDI_KINDS = {"fbank": "num_mel_bins", "mfcc": "num_ceps"}
KALDI_OPTIONS = {"num_mel_bins", "num_ceps", "frame_length", "frame_shift", "use_log_fbank", "use_energy",
                 "low_freq", "high_freq", "preemphasis_coefficient", "remove_dc_offset", "window_type",
                 "cepstral_lifter", "dither"}


def kaldi_front_end_config(audio: Mapping[str, Any], file: Path) -> KaldiFeatureConfig:
    """The `audio: {kaldi, delta, cmvn}` of an extracter config as the project's `KaldiFeatureConfig`."""
    kaldi = audio["kaldi"]
    kind = str(kaldi.get("feat_type", "fbank"))
    if kind not in KALDI_KINDS:
        raise _fail(file, f"its kaldi feat_type {kind!r} is not supported natively (fbank or mfcc)")
    opts = dict(kaldi.get(kind) or {})
    unknown = sorted(set(opts) - KALDI_OPTIONS)
    if unknown or not opts.get("use_log_fbank", True) or float(opts.get("dither", 0.0)) != 0.0 \
            or opts.get("window_type", "povey") != "povey":
        raise _fail(file, f"its kaldi {kind} options {opts} are not supported natively")
    base = KaldiFeatureConfig(kind=kind) if kind == "fbank" else KaldiFeatureConfig(kind="mfcc", num_mel_bins=23)
    delta = dict(audio.get("delta") or {})
    cmvn = dict(audio.get("cmvn") or {})
    return KaldiFeatureConfig(
        kind=kind, num_mel_bins=int(opts.get("num_mel_bins", base.num_mel_bins)),
        num_ceps=int(opts.get("num_ceps", base.num_ceps)),
        cepstral_lifter=float(opts.get("cepstral_lifter", base.cepstral_lifter)),
        use_energy=bool(opts.get("use_energy", False)),
        frame_length_ms=float(opts.get("frame_length", 25.0)), frame_shift_ms=float(opts.get("frame_shift", 10.0)),
        preemphasis=float(opts.get("preemphasis_coefficient", 0.97)),
        remove_dc_offset=bool(opts.get("remove_dc_offset", True)),
        low_freq=float(opts.get("low_freq", 20.0)), high_freq=float(opts.get("high_freq", 0.0)),
        delta_order=int(delta.get("order", 2)), delta_win_length=int(delta.get("win_length", 5)),
        cmvn=bool(cmvn.get("use_cmvn", False)), cmvn_eps=float(cmvn.get("eps", 1e-10)))


def online_front_end_config(audio: Mapping[str, Any], file: Path) -> OnlineFeatureConfig:
    """The model-input part of an `OnlinePreprocessor` audio config."""
    feat = audio.get("input")
    if not isinstance(feat, Mapping):
        raise _fail(file, "its 'audio' config has neither 'kaldi' nor 'input' (the s3prl expert needs on-the-fly "
                          "feature extraction)")
    feat_type = str(feat.get("feat_type", ""))
    if feat_type not in FEAT_TYPES:
        raise _fail(file, f"its input feat_type {feat_type!r} is none of {FEAT_TYPES}")
    if "target_level" not in audio:
        raise _fail(file, "its 'audio' config has no target_level")
    return OnlineFeatureConfig(
        feat_type=feat_type, log=bool(feat.get("log", False)), delta=int(feat.get("delta", 0)),
        cmvn=bool(feat.get("cmvn", False)), sample_rate=int(audio.get("sample_rate", 16000)),
        win_ms=float(audio.get("win_ms", 25)), hop_ms=float(audio.get("hop_ms", 10)),
        n_freq=int(audio.get("n_freq", 201)), n_mels=int(audio.get("n_mels", 40)),
        n_mfcc=int(audio.get("n_mfcc", 13)), target_level=float(audio["target_level"]))


def _renamed(state: Mapping[str, Any]) -> dict[str, Any]:
    """Old TF-style `gamma`/`beta` names as `weight`/`bias` (s3prl's `load_model` does the same)."""
    out = {}
    for key, value in state.items():
        key = str(key)
        if "gamma" in key:
            key = key.replace("gamma", "weight")
        if "beta" in key:
            key = key.replace("beta", "bias")
        out[key] = value
    return out


# --------------------------------------------------------------------------- the upstream


class MockingjayUpstream(Upstream):
    """A Mockingjay/TERA checkpoint: front end from its `audio` config, Transformer from its `transformer` config."""

    def __init__(self, name: str, file: Path, ckpt: Mapping[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.file = Path(file)
        config = upstream_config(ckpt, self.file)
        for section in ("task", "audio"):
            if not isinstance(config.get(section), Mapping):
                raise _fail(self.file, f"its config has no {section!r} section")
        if "sequence_length" not in config["task"]:
            raise _fail(self.file, "its 'task' config has no sequence_length")
        self.settings = transformer_settings(config, self.file)
        self.max_input_length = int(config["task"]["sequence_length"])
        audio = config["audio"]
        self.front_end: OnlineFeatures | KaldiFrontEnd
        if "kaldi" in audio:
            kcfg = kaldi_front_end_config(audio, self.file)
            self.front_end = KaldiFrontEnd(kcfg)
            input_dim = kcfg.base_dim * (kcfg.delta_order + 1)
            self.downsample_rate, self.receptive_field, self.centred = kcfg.window_shift, kcfg.window_size, False
            self.front_end_config: dict[str, Any] = {"kaldi": vars(kcfg).copy()}
        else:
            ocfg = online_front_end_config(audio, self.file)
            self.front_end = OnlineFeatures(ocfg)
            input_dim = ocfg.dim
            # centred frames: n // hop + 1 of them; the contract's closest rule is n // hop (see module doc)
            self.downsample_rate = self.receptive_field = ocfg.hop_length
            self.centred = True
            self.front_end_config = {"online": vars(ocfg).copy()}
        state = ckpt["Transformer"]
        if not isinstance(state, Mapping):
            raise _fail(self.file, "its 'Transformer' entry is not a state dict")
        state = _renamed(state)
        weight = state.get("input_representations.spec_transform.weight")
        if weight is not None and tuple(weight.shape) != (self.settings.hidden_size, input_dim):
            raise _fail(self.file, f"its input layer takes {tuple(weight.shape)[1:]} features, while its audio "
                                   f"config gives {input_dim}")
        self.model = TransformerModel(self.settings, input_dim)
        load_weights(self.model, state, self.file, "a Mockingjay/TERA Transformer")
        self.model.eval()
        self.num_layers = self.settings.num_hidden_layers + 1
        self.hidden_size = self.settings.hidden_size

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "transformer": vars(self.settings).copy(),
                "sequence_length": self.max_input_length, "front_end": self.front_end_config,
                "centred": self.centred}

    def _segments(self, lengths: list[int]) -> list[tuple[int, int, int]]:
        """(utterance, start, length) of the pieces s3prl runs one by one (`torch.chunk` of long inputs)."""
        pieces = []
        for i, total in enumerate(lengths):
            size = total
            if 0 < self.max_input_length < total:
                size = -(-total // math.ceil(total / self.max_input_length))
            pieces.extend((i, start, min(size, total - start)) for start in range(0, total, size))
        return pieces

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, feat_lengths = self.front_end(wavs, wav_lengths)
        pieces = self._segments(feat_lengths.tolist())
        longest = max(n for _, _, n in pieces)
        batch = feats.new_zeros(len(pieces), longest, feats.shape[-1])
        for k, (i, start, n) in enumerate(pieces):
            batch[k, :n] = feats[i, start: start + n]
        states = self.model(batch, torch.tensor([n for _, _, n in pieces]))
        frame_lengths = self.num_frames(wav_lengths)
        t_max = int(frame_lengths.max())
        layers = []
        for state in states:
            out = state.new_zeros(feats.shape[0], t_max, state.shape[-1])
            for k, (i, start, n) in enumerate(pieces):
                keep = min(n, int(frame_lengths[i]) - start)  # drops the centred STFT's extra last frame
                if keep > 0:
                    out[i, start: start + keep] = state[k, :keep]
            layers.append(out)
        return layers, frame_lengths


# --------------------------------------------------------------------------- random checkpoints and factories


def tiny_config(family: str) -> dict[str, Any]:
    """A tiny upstream config in the published layout (s3prl/pretrain/{mockingjay,tera}/config_model*.yaml)."""
    transformer = {"input_dim": -1, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                   "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
                   "share_layer": False, "pre_layer_norm": False}
    mel = {"feat_type": "mel", "channel": 0, "log": True, "delta": 0, "cmvn": True}
    target = {**mel, "feat_type": "linear"} if family == "mockingjay" else {**mel, "channel": 1}
    task = {"loss": "L1", "sequence_length": 500 if family == "mockingjay" else 1500,
            "position_encoding_size": 32, "mask_proportion": 0.15, "mask_consecutive_min": 7,
            "mask_consecutive_max": 7, "mask_allow_overlap": True, "mask_bucket_ratio": 1.5,
            "mask_frequency": 0 if family == "mockingjay" else 0.2, "noise_proportion": 0.0}
    audio = {"target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 80, "n_mfcc": 13,
             "input": mel, "target": target}
    return {"transformer": transformer, "task": task, "audio": audio}


def _target_dim(audio: Mapping[str, Any], input_dim: int) -> int:
    target = audio.get("target", audio.get("input", {})) if "kaldi" not in audio else {}
    kind = target.get("feat_type")
    if kind is None:
        return input_dim
    base = {"linear": int(audio.get("n_freq", 201)), "mel": int(audio.get("n_mels", 40)),
            "mfcc": int(audio.get("n_mfcc", 13))}[kind]
    return base * (int(target.get("delta", 0)) + 1)


def write_random_checkpoint(path: str | Path, family: str = "mockingjay", seed: int = 0,
                            config: Mapping[str, Any] | None = None) -> Path:
    """A random-init checkpoint in s3prl's `.ckpt` layout, loadable by s3prl's `mockingjay_local`/`tera_local`.

    `config` (an upstream config; default `tiny_config(family)`) lets tests write other shapes (pre-LN,
    chunking, a kaldi front end). The Transformer is initialised as s3prl initialises it (normal(0, 0.02)
    weights) but with random LayerNorm and bias values too, so that a test sees every weight.
    """
    cfg = copy.deepcopy(dict(config) if config is not None else tiny_config(family))
    file = Path(path)
    settings = transformer_settings(cfg, file)
    if "kaldi" in cfg["audio"]:
        kcfg = kaldi_front_end_config(cfg["audio"], file)
        input_dim = kcfg.base_dim * (kcfg.delta_order + 1)
    else:
        input_dim = online_front_end_config(cfg["audio"], file).dim
    std = float(cfg["transformer"].get("initializer_range", 0.02))
    with seeded(seed):
        model = TransformerModel(settings, input_dim)
        head = SpecHead(settings, _target_dim(cfg["audio"], input_dim))
        for module in (model, head):
            for name, param in module.named_parameters():
                with torch.no_grad():
                    if name.endswith("LayerNorm.weight"):
                        param.uniform_(0.8, 1.2)
                    elif name.endswith("bias"):
                        param.normal_(0.0, std)
                    else:
                        param.normal_(0.0, max(std, 1.0 / math.sqrt(param.shape[-1])))
    return save_checkpoint(model, head, cfg, file)


def save_checkpoint(model: nn.Module | Mapping[str, torch.Tensor], head: nn.Module | Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], path: str | Path, runner: Mapping[str, Any] | None = None,
                    step: int = 0) -> Path:
    """Write a `TransformerModel` and its `SpecHead` (modules or state dicts) with their upstream `config`
    (`transformer`, `task`, `audio`) in s3prl's older `.ckpt` layout (`Config` = upstream config, `Runner`,
    `Step`), which `mockingjay=PATH` / `tera=PATH` (and s3prl's `mockingjay_local`/`tera_local`) load."""

    def tensors(obj: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = obj.state_dict() if isinstance(obj, nn.Module) else dict(obj)
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    if runner is None:
        runner = {"runner": {"total_steps": step, "gradient_clipping": 5.0, "gradient_accumulate_steps": 1,
                             "log_step": 2500, "save_step": 10000, "max_keep": 2},
                  "optimizer": {"name": "AdamW", "lr": 2.0e-4, "warmup_proportion": 0.07},
                  "pretrain_expert": {"datarc": {"num_workers": 8, "train_batch_size": 32, "max_timestep": 0}}}
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"SpecHead": tensors(head), "Transformer": tensors(model), "Config": copy.deepcopy(dict(config)),
                "Runner": copy.deepcopy(dict(runner)), "Step": int(step)}, file)
    return file


def _make_factory(name: str) -> Callable[..., Upstream]:
    family = "tera" if name.startswith("tera") else "mockingjay"
    layers, hidden = PUBLISHED_SHAPES[name]
    return published_factory(
        name, PUBLISHED[name],
        lambda file: MockingjayUpstream(name, file,
                                        read_checkpoint(file, expected=EXPECTED, required=("Transformer",))),
        family="mockingjay (masked acoustic model)" if family == "mockingjay" else "tera (masked reconstruction)",
        layers=layers, hidden_size=hidden,
        write_random_checkpoint=lambda path, seed=0: write_random_checkpoint(path, family, seed))


FACTORIES: dict[str, Callable[..., Upstream]] = {name: _make_factory(name) for name in PUBLISHED}

"""Log-mel spectrograms and the vocoders that turn them back into speech (SUPERB-SG voice conversion).

* Log-mel (s3prl `a2o-vc-vcc2020/utils.py` `logmelspectrogram`, from ESPnet): the magnitude of a centred STFT
  (periodic Hann window, reflect padding), through librosa's Slaney-style mel filterbank (`mel_filterbank`,
  written here in numpy; area-normalised triangles on the Slaney mel scale), log10 with a floor of 1e-10.
* Griffin-Lim (`griffin_lim`): the fast variant with momentum 0.99 from random phases, as `librosa.griffinlim`
  that s3prl calls, in torch, with a seeded generator so a prediction always gives the same waveform; the mel
  magnitude is taken back to a linear one by the filterbank's pseudo-inverse (s3prl `logmelspc_to_linearspc`).
* A neural vocoder from a local folder in the `parallel_wavegan` package's layout (`checkpoint-<steps>steps.pkl`,
  `config.yml`, `stats.h5`): the HiFi-GAN generator (`HiFiGANGenerator`, parallel_wavegan's module names, so its
  state dict loads as saved, weight norm folded into plain weights), fed the log-mel standardised with the
  folder's `stats.h5` mean and scale. Its mel settings must be the task's.

Every vocoder has a `name` that says which one it is (with a digest of the files for a neural one): it changes
every VC number, so records keep it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from downstreams.stft_mask import STFTConfig

#: Floor of the mel magnitude before the log (ESPnet's eps).
MEL_FLOOR = 1e-10


@dataclass(frozen=True)
class MelConfig:
    """s3prl's `fbank_config`: sample rate, FFT size, hop, window length (None: the FFT size), mel bands and
    their frequency range, Griffin-Lim iterations."""

    sample_rate: int = 24000
    n_fft: int = 1024
    hop: int = 256
    win_length: int | None = None
    n_mels: int = 80
    fmin: float = 80.0
    fmax: float = 7600.0
    gl_iters: int = 64

    def __post_init__(self) -> None:
        if self.sample_rate < 1000 or self.n_fft < 16 or not 1 <= self.hop <= self.n_fft or self.n_mels < 1:
            raise ValueError(f"implausible mel settings: {self}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"mel band range must satisfy 0 <= fmin < fmax <= sample_rate / 2, got {self.fmin}, "
                             f"{self.fmax} at {self.sample_rate} Hz")
        if self.win_length is not None and not 1 <= self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be within 1..n_fft, got {self.win_length}")

    @property
    def window_length(self) -> int:
        return self.win_length or self.n_fft

    def frames(self, num_samples: int) -> int:
        """Frames of a centred STFT of `num_samples` samples."""
        return 1 + num_samples // self.hop


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (librosa, htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    mels = f / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / log_step, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """(n_mels, n_fft / 2 + 1) triangles on Slaney's mel scale, each normalised to unit area (librosa's
    `filters.mel` defaults: htk=False, norm="slaney")."""
    bins = np.linspace(0.0, cfg.sample_rate / 2, 1 + cfg.n_fft // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(cfg.fmin), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class MelSpectrogram:
    """Log10-mel spectrogram (T, n_mels) of a waveform, and its inverse to a linear magnitude (T, bins); `transform`
    is the STFT both sides use (the STFT-mask tasks' `STFTConfig`, a periodic Hann window of the window length)."""

    def __init__(self, cfg: MelConfig) -> None:
        self.cfg = cfg
        self.transform = STFTConfig(hop=cfg.hop, n_fft=cfg.n_fft, win_length=cfg.window_length)
        basis = mel_filterbank(cfg)
        self.basis = torch.from_numpy(basis).float()
        self.inverse = torch.from_numpy(np.linalg.pinv(basis)).float()

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        magnitude = self.transform.stft(wav.float()).abs()
        return torch.log10(torch.clamp(magnitude @ self.basis.to(magnitude).T, min=MEL_FLOOR))

    def linear_magnitude(self, logmel: torch.Tensor) -> torch.Tensor:
        """s3prl's `logmelspc_to_linearspc`: 10^logmel through the filterbank's pseudo-inverse, floored."""
        mel = torch.pow(10.0, logmel.float())
        return torch.clamp(mel @ self.inverse.to(mel).T, min=MEL_FLOOR)


def griffin_lim(magnitude: torch.Tensor, mel: MelSpectrogram, iterations: int, momentum: float = 0.99,
                seed: int = 0) -> torch.Tensor:
    """A waveform whose STFT magnitude approaches `magnitude` (frames, bins): librosa's fast Griffin-Lim (random
    initial phases from a generator seeded with `seed`, the momentum-accelerated projection, constant padding
    inside the loop as librosa's `griffinlim`)."""
    s = magnitude.double()
    gen = torch.Generator().manual_seed(seed)
    angles = torch.polar(torch.ones_like(s), 2 * np.pi * torch.rand(s.shape, generator=gen, dtype=s.dtype))
    previous = torch.zeros_like(angles)
    length = (s.shape[0] - 1) * mel.cfg.hop
    stft = mel.transform
    for _ in range(iterations):
        rebuilt = stft.stft(stft.istft(s * angles, length), pad_mode="constant")[: s.shape[0]]
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    return stft.istft(s * angles, length)


class Vocoder(Protocol):
    """Log10-mel (T, n_mels) -> waveform at `sample_rate`; `name` identifies it in records."""

    name: str
    sample_rate: int

    def __call__(self, logmel: torch.Tensor) -> np.ndarray: ...


class GriffinLimVocoder:
    """Griffin-Lim over the linear magnitude the log-mel's pseudo-inverse gives (s3prl's training-time samples)."""

    def __init__(self, cfg: MelConfig) -> None:
        self.mel, self.sample_rate = MelSpectrogram(cfg), cfg.sample_rate
        self.name = (f"griffin-lim ({cfg.gl_iters} iterations, momentum 0.99, {cfg.sample_rate} Hz, n_fft {cfg.n_fft}, "
                     f"hop {cfg.hop}, {cfg.n_mels} mels {cfg.fmin:g}-{cfg.fmax:g} Hz)")

    def __call__(self, logmel: torch.Tensor) -> np.ndarray:
        wav = griffin_lim(self.mel.linear_magnitude(logmel.detach().cpu()), self.mel, self.mel.cfg.gl_iters)
        return wav.numpy().astype(np.float64)


# --------------------------------------------------------------------------- HiFi-GAN (parallel_wavegan layout)

def _act(name: str, params: dict[str, Any]) -> torch.nn.Module:
    return getattr(torch.nn, name)(**params)


class HiFiGANResidualBlock(torch.nn.Module):
    """parallel_wavegan's HiFi-GAN residual block: per dilation act -> dilated conv (-> act -> conv), plus the input."""

    def __init__(self, kernel_size: int, channels: int, dilations: Sequence[int], bias: bool,
                 use_additional_convs: bool, act: str, act_params: dict[str, Any]) -> None:
        super().__init__()
        self.use_additional_convs = use_additional_convs
        self.convs1 = torch.nn.ModuleList(
            torch.nn.Sequential(_act(act, act_params),
                                torch.nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, bias=bias,
                                                padding=(kernel_size - 1) // 2 * d)) for d in dilations)
        if use_additional_convs:
            self.convs2 = torch.nn.ModuleList(
                torch.nn.Sequential(_act(act, act_params),
                                    torch.nn.Conv1d(channels, channels, kernel_size, 1, bias=bias,
                                                    padding=(kernel_size - 1) // 2)) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, conv in enumerate(self.convs1):
            xt = conv(x)
            if self.use_additional_convs:
                xt = self.convs2[k](xt)
            x = xt + x
        return x


class HiFiGANGenerator(torch.nn.Module):
    """parallel_wavegan's `HiFiGANGenerator` (same parameter names and defaults), without weight norm: a
    checkpoint's weight_g / weight_v pairs are folded into plain weights on load (`fold_weight_norm`)."""

    def __init__(self, in_channels: int = 80, out_channels: int = 1, channels: int = 512, kernel_size: int = 7,
                 upsample_scales: Sequence[int] = (8, 8, 2, 2), upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4),
                 resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
                 resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
                 use_additional_convs: bool = True, bias: bool = True, nonlinear_activation: str = "LeakyReLU",
                 nonlinear_activation_params: dict[str, Any] | None = None, use_weight_norm: bool = True,
                 use_causal_conv: bool = False) -> None:
        super().__init__()
        if use_causal_conv:
            raise ValueError("the causal HiFi-GAN variant (use_causal_conv: true) is not supported")
        if len(upsample_scales) != len(upsample_kernel_sizes) or len(resblock_kernel_sizes) != len(resblock_dilations):
            raise ValueError("upsample_scales / upsample_kernel_sizes and resblock_kernel_sizes / resblock_dilations "
                             "must have equal lengths")
        params = dict(nonlinear_activation_params or {"negative_slope": 0.1})
        self.hop = int(np.prod(upsample_scales))
        self.num_blocks = len(resblock_kernel_sizes)
        self.input_conv = torch.nn.Conv1d(in_channels, channels, kernel_size, 1, padding=(kernel_size - 1) // 2)
        self.upsamples = torch.nn.ModuleList()
        self.blocks = torch.nn.ModuleList()
        for i, (scale, kernel) in enumerate(zip(upsample_scales, upsample_kernel_sizes)):
            self.upsamples.append(torch.nn.Sequential(
                _act(nonlinear_activation, params),
                torch.nn.ConvTranspose1d(channels // 2 ** i, channels // 2 ** (i + 1), kernel, scale,
                                         padding=scale // 2 + scale % 2, output_padding=scale % 2)))
            for k, dilations in zip(resblock_kernel_sizes, resblock_dilations):
                self.blocks.append(HiFiGANResidualBlock(k, channels // 2 ** (i + 1), dilations, bias,
                                                        use_additional_convs, nonlinear_activation, params))
        self.output_conv = torch.nn.Sequential(
            torch.nn.LeakyReLU(),
            torch.nn.Conv1d(channels // 2 ** len(upsample_scales), out_channels, kernel_size, 1,
                            padding=(kernel_size - 1) // 2),
            torch.nn.Tanh())

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, T) -> (B, out_channels, T * hop)."""
        c = self.input_conv(c)
        for i, upsample in enumerate(self.upsamples):
            c = upsample(c)
            c = sum(self.blocks[i * self.num_blocks + j](c) for j in range(self.num_blocks)) / self.num_blocks
        return self.output_conv(c)


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every weight-norm pair (`<name>.weight_g`, `<name>.weight_v`, torch's `weight_norm` over
    dim 0) replaced by the plain `<name>.weight` = g * v / ||v||, the norm over all but the first axis."""
    out = {}
    for key, value in state.items():
        stem, dot, leaf = key.rpartition(".")
        if leaf == "weight_g":
            continue
        if leaf == "weight_v":
            g = state[f"{stem}{dot}weight_g"]
            norm = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
            out[f"{stem}{dot}weight"] = g * value / norm
        else:
            out[key] = value
    return out


def _steps(path: Path) -> int:
    found = re.search(r"(\d+)", path.stem)
    return int(found.group(1)) if found else -1


class NeuralVocoder:
    """A HiFi-GAN generator from a local folder in parallel_wavegan's layout (see the module docstring); the
    checkpoint with the most steps is used."""

    SUPPORTED = ("HiFiGANGenerator",)

    def __init__(self, folder: str | Path, cfg: MelConfig) -> None:
        import yaml

        from superbench.vc_metrics import _import, files_digest

        path = Path(folder).expanduser()
        checkpoints = sorted(path.glob("checkpoint-*.pkl"), key=_steps)
        missing = [name for name, ok in (("checkpoint-*.pkl", bool(checkpoints)),
                                          ("config.yml", (path / "config.yml").is_file()),
                                          ("stats.h5", (path / "stats.h5").is_file())) if not ok]
        if missing:
            raise FileNotFoundError(f"vocoder folder {path}: no {', '.join(missing)} (a parallel_wavegan folder holds "
                                    f"checkpoint-<steps>steps.pkl, config.yml and stats.h5)")
        checkpoint = checkpoints[-1]
        config = yaml.safe_load((path / "config.yml").read_text()) or {}
        kind = config.get("generator_type", "ParallelWaveGANGenerator")
        if kind not in self.SUPPORTED:
            raise ValueError(f"{path / 'config.yml'}: generator_type {kind!r} is not supported; supported: "
                             f"{', '.join(self.SUPPORTED)}")
        theirs = {"sample_rate": config.get("sampling_rate"), "hop": config.get("hop_size"),
                  "n_mels": config.get("num_mels"), "n_fft": config.get("fft_size"),
                  "fmin": config.get("fmin"), "fmax": config.get("fmax")}
        clash = {k: (v, getattr(cfg, k)) for k, v in theirs.items()
                 if v is not None and float(v) != float(getattr(cfg, k))}
        if clash:
            raise ValueError(f"{path / 'config.yml'}: the vocoder's mel settings differ from the task's "
                             + ", ".join(f"{k} {a} (task: {b})" for k, (a, b) in clash.items()))
        self.generator = HiFiGANGenerator(**config.get("generator_params", {}))
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        weights = state["model"]["generator"] if "model" in state else state
        self.generator.load_state_dict(fold_weight_norm(weights))
        self.generator.eval()
        with _import("h5py").File(path / "stats.h5", "r") as stats:
            self.mean = torch.from_numpy(np.asarray(stats["mean"][()], dtype=np.float32))
            self.scale = torch.from_numpy(np.asarray(stats["scale"][()], dtype=np.float32))
        self.sample_rate = cfg.sample_rate
        self.name = (f"hifigan {path.name}/{checkpoint.name} "
                     f"(files {files_digest([checkpoint, path / 'config.yml', path / 'stats.h5'])})")

    def __call__(self, logmel: torch.Tensor) -> np.ndarray:
        c = (logmel.detach().float().cpu() - self.mean) / self.scale
        with torch.no_grad():
            wav = self.generator(c.T.unsqueeze(0))
        return wav.view(-1).numpy().astype(np.float64)


def make_vocoder(spec: str, cfg: MelConfig) -> Vocoder:
    """"griffin-lim" (the default) or the path of a parallel_wavegan-layout HiFi-GAN folder."""
    if spec == "griffin-lim":
        return GriffinLimVocoder(cfg)
    return NeuralVocoder(spec, cfg)

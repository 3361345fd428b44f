"""Hand-crafted baselines: `fbank` (240-dim) and `mfcc` (39-dim), as in s3prl's `baseline` upstream.

What is matched (s3prl/upstream/baseline/{extracter.py, fbank.yaml, mfcc.yaml}, which call
`torchaudio.compliance.kaldi.{fbank,mfcc}` with the defaults below on the raw float waveform):

* waveform used as given (no int16 rescaling), 16 kHz, dither 0 (torchaudio's default);
* 25 ms frames every 10 ms with `snip_edges` (frames = (n - 400) // 160 + 1), DC offset removed per
  frame, pre-emphasis 0.97 (first sample replicated), povey window (Hann ** 0.85), zero-padded to a
  512-point FFT, power spectrum;
* triangular mel filters on the Kaldi mel scale 1127 ln(1 + f / 700) between 20 Hz and Nyquist,
  log with a floor of float32 eps;
* fbank: 80 log-mel bins; mfcc: 23 bins -> orthonormal DCT-II -> 13 cepstra -> lifter 22,
  `use_energy` False (c0 kept);
* deltas and delta-deltas with `torchaudio.functional.compute_deltas` semantics (window 5, edges
  replicated, denominator 10);
* per-utterance CMVN, `(x - mean) / (1e-10 + std)` with the unbiased std, as s3prl's CMVN module.

Differences, by design: everything is computed in torch (no torchaudio); for a padded batch the
deltas replicate each utterance's own last valid frame and the CMVN statistics use valid frames
only, so the result never depends on batch-mates. An utterance with a single frame has no defined
std; it gets std 0 (features equal to 0) instead of s3prl's NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from superbench.upstream import Upstream, UpstreamFactory, UpstreamInfo

FLOAT_EPS = float(torch.finfo(torch.float32).eps)  # Kaldi/torchaudio log floor


@dataclass(frozen=True)
class KaldiFeatureConfig:
    """The settings of one Kaldi-style front end; defaults are Kaldi's (and torchaudio's)."""

    kind: str = "fbank"  # "fbank" or "mfcc"
    num_mel_bins: int = 80
    num_ceps: int = 13
    cepstral_lifter: float = 22.0
    use_energy: bool = False
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    sample_rate: int = 16000
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means Nyquist + high_freq
    delta_order: int = 2
    delta_win_length: int = 5
    cmvn: bool = True
    cmvn_eps: float = 1e-10

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()

    @property
    def base_dim(self) -> int:
        return self.num_mel_bins if self.kind == "fbank" else self.num_ceps


FBANK = KaldiFeatureConfig(kind="fbank", num_mel_bins=80)
MFCC = KaldiFeatureConfig(kind="mfcc", num_mel_bins=23, num_ceps=13, cepstral_lifter=22.0, use_energy=False)


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def kaldi_mel_banks(num_bins: int, fft_size: int, sample_rate: int, low_freq: float,
                    high_freq: float) -> torch.Tensor:
    """Triangular filters equally spaced on the Kaldi mel scale, shape (num_bins, fft_size // 2 + 1)."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"bad mel range: low_freq={low_freq}, high_freq={high_freq}, nyquist={nyquist}")
    mel_low, mel_high = float(mel_scale(low_freq)), float(mel_scale(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    # Kaldi leaves the Nyquist bin out of every filter
    mel = mel_scale(sample_rate / fft_size * torch.arange(fft_size // 2, dtype=torch.float64)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))


def dct_matrix(num_mel_bins: int, num_ceps: int) -> torch.Tensor:
    """Orthonormal DCT-II, (num_mel_bins, num_ceps), as Kaldi's MFCC uses it."""
    n = torch.arange(num_mel_bins, dtype=torch.float64)
    k = torch.arange(num_ceps, dtype=torch.float64).unsqueeze(1)
    dct = torch.cos(math.pi / num_mel_bins * (n + 0.5) * k) * math.sqrt(2.0 / num_mel_bins)
    dct[0] = math.sqrt(1.0 / num_mel_bins)
    return dct.t()


def povey_window(size: int) -> torch.Tensor:
    n = torch.arange(size, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / (size - 1))).pow(0.85)


def compute_deltas_masked(x: torch.Tensor, lengths: torch.Tensor, win_length: int = 5) -> torch.Tensor:
    """Regression deltas over time for (B, T, D), replicating each utterance's own edge frames.

    Same numbers as `torchaudio.functional.compute_deltas(mode="replicate")` on each unpadded
    utterance: d_t = sum_k k (x_{t+k} - x_{t-k}) / (2 sum_k k^2), k = 1..N, N = (win_length - 1) // 2.
    """
    if win_length < 3:
        raise ValueError(f"delta window must be >= 3, got {win_length}")
    n = (win_length - 1) // 2
    denom = n * (n + 1) * (2 * n + 1) / 3
    time = torch.arange(x.shape[1], device=x.device)
    last = (lengths.to(x.device) - 1).clamp_min(0).unsqueeze(1)  # (B, 1)
    out = torch.zeros_like(x)
    for k in range(1, n + 1):
        fwd = torch.minimum(time.unsqueeze(0) + k, last)
        bwd = (time.unsqueeze(0) - k).clamp_min(0)
        bwd = torch.minimum(bwd, last)
        gather = lambda idx: torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # noqa: E731
        out = out + k * (gather(fwd) - gather(bwd))
    return out / denom


def masked_cmvn(x: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-utterance mean/variance normalisation using valid frames only (unbiased std, as s3prl)."""
    dtype = x.dtype
    x = x.double()  # float64 statistics: constant features centre to exactly 0 instead of rounding noise
    mask = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.to(x.device).unsqueeze(1)).unsqueeze(-1)
    count = lengths.to(x.dtype).clamp_min(1).view(-1, 1, 1)
    mean = (x * mask).sum(1, keepdim=True) / count
    centred = (x - mean) * mask
    var = centred.pow(2).sum(1, keepdim=True) / (count - 1).clamp_min(1)
    std = torch.where(count > 1, var.sqrt(), torch.zeros_like(var))
    return (centred / (eps + std)).to(dtype)


class KaldiFeatures(Upstream):
    """A one-layer upstream computing Kaldi-compatible features + deltas + CMVN."""

    def __init__(self, name: str, config: KaldiFeatureConfig) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.num_layers = 1
        self.hidden_size = config.base_dim * (config.delta_order + 1)
        self.downsample_rate = config.window_shift
        self.receptive_field = config.window_size
        self.register_buffer("window", povey_window(config.window_size).float(), persistent=False)
        banks = kaldi_mel_banks(config.num_mel_bins, config.fft_size, config.sample_rate,
                                config.low_freq, config.high_freq)
        self.register_buffer("mel_banks", banks.t().float(), persistent=False)  # (F, bins)
        if config.kind == "mfcc":
            lifter = 1.0 + 0.5 * config.cepstral_lifter * torch.sin(
                math.pi * torch.arange(config.num_ceps, dtype=torch.float64) / config.cepstral_lifter)
            dct = dct_matrix(config.num_mel_bins, config.num_ceps) * lifter.unsqueeze(0)
            self.register_buffer("dct", dct.float(), persistent=False)
        elif config.kind != "fbank":
            raise ValueError(f"unknown Kaldi feature kind {config.kind!r} (fbank or mfcc)")

    def specific_variant(self, **options: Any) -> KaldiFeatures:
        """`cmvn=False`: the same features without per-utterance CMVN.

        Per-utterance CMVN makes every utterance's mean feature zero, and the utterance heads
        mean-pool, so with CMVN the baseline is at chance by construction. The official SUPERB
        leaderboard therefore re-ran FBANK without CMVN for KS, SID and ER; those recipes ask for
        this variant, and the cache fingerprint says which one ran.
        """
        cmvn = options.get("cmvn")
        if cmvn is None or bool(cmvn) == self.config.cmvn:
            return self
        return KaldiFeatures(self.name, replace(self.config, cmvn=bool(cmvn)))

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), **asdict(self.config)}

    def frame_features(self, wavs: torch.Tensor) -> torch.Tensor:
        """Static features (fbank log-mel or MFCC) for every snip_edges frame of a padded batch."""
        cfg = self.config
        frames = wavs.unfold(1, cfg.window_size, cfg.window_shift)  # (B, T, W)
        if cfg.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        log_energy = None
        if cfg.kind == "mfcc" and cfg.use_energy:
            log_energy = frames.pow(2).sum(-1).clamp_min(FLOAT_EPS).log()  # raw energy, pre-window
        if cfg.preemphasis:
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = frames - cfg.preemphasis * previous
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=cfg.fft_size).abs().pow(2)
        logmel = (spectrum @ self.mel_banks).clamp_min(FLOAT_EPS).log()
        if cfg.kind == "fbank":
            return logmel
        ceps = logmel @ self.dct
        if log_energy is not None:
            ceps[..., 0] = log_energy
        return ceps

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        frame_lengths = self.num_frames(wav_lengths)
        feats = self.frame_features(wavs)
        parts = [feats]
        for _ in range(self.config.delta_order):
            parts.append(compute_deltas_masked(parts[-1], frame_lengths, self.config.delta_win_length))
        feats = torch.cat(parts, dim=-1)
        if self.config.cmvn:
            feats = masked_cmvn(feats, frame_lengths, self.config.cmvn_eps)
        else:
            valid = (torch.arange(feats.shape[1], device=feats.device).unsqueeze(0)
                     < frame_lengths.to(feats.device)[:, None])
            feats = feats * valid.unsqueeze(-1)
        return [feats.contiguous()], frame_lengths


def fbank(path: str | None = None, **overrides: Any) -> KaldiFeatures:
    """s3prl's `fbank` baseline: 80 log-mel + Δ + ΔΔ, CMVN -> 240 dims."""
    if path:
        raise ValueError("fbank has no weights; drop the path / NAME=DIR part")
    return KaldiFeatures("fbank", KaldiFeatureConfig(**{**asdict(FBANK), **overrides}))


def mfcc(path: str | None = None, **overrides: Any) -> KaldiFeatures:
    """s3prl's `mfcc` baseline: 13 cepstra + Δ + ΔΔ, CMVN -> 39 dims."""
    if path:
        raise ValueError("mfcc has no weights; drop the path / NAME=DIR part")
    return KaldiFeatures("mfcc", KaldiFeatureConfig(**{**asdict(MFCC), **overrides}))


FACTORIES = {
    "fbank": UpstreamFactory(fbank, UpstreamInfo(family="kaldi", layers=1, hidden_size=240, source="computed",
                                                 description="80 log-mel + deltas, CMVN (s3prl baseline)")),
    "mfcc": UpstreamFactory(mfcc, UpstreamInfo(family="kaldi", layers=1, hidden_size=39, source="computed",
                                               description="13 MFCC + deltas, CMVN (s3prl baseline)")),
}

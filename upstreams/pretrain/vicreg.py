"""VICReg on audio, the regularization family: DeLoRes-style Variance-Invariance-Covariance regularisation.

VICReg (Bardes, Ponce & LeCun, ICLR 2022) learns without negatives, targets or a teacher: two augmented
views of the same input go through one encoder and an expander MLP, and the loss asks that

- the two views' embeddings agree (**invariance**: the mean squared error between them),
- every embedding dimension keeps a standard deviation of at least `gamma` = 1 over the batch
  (**variance**: a hinge on `sqrt(var + eps)`, which is what stops the collapse to a constant), and
- the dimensions are decorrelated (**covariance**: the squared off-diagonal covariances, over the dimension),

weighted lambda = mu = 25, nu = 1 as in VICReg. DeLoRes (Ghosh, Seth, Umesh & Manocha, 2022: "DeLoRes: Decorrelating
latent spaces for low-resource audio representation learning") applies this objective to audio.

Choices made here (the issue leaves the architecture open; DeLoRes publishes none usable here):

- **Encoder.** A small `transformers` HubertModel (a HuBERT-*architecture* CNN + transformer; nothing of
  HuBERT's objective), so the output is a `save_pretrained` folder that `hubert=DIR` (and `vicreg=DIR`
  through `pretrain.json`) loads with all its layers. The CNN uses `feat_extract_norm="layer"` (a per-frame
  LayerNorm, so a padded batch gives the frames each utterance gives alone, in training as in the
  upstream), and waveforms are normalised per utterance (`do_normalize: true` in the saved
  `preprocessor_config.json`, which the upstream reads).
- **Views.** Both views come from the same crop and stay aligned frame for frame: a random gain, additive
  white noise at a random SNR, a sub-frame time shift (under half a frame hop, so frame t of one view
  still covers frame t of the other) and a few zeroed time spans (the encoder must fill a masked span
  in from its context to agree with the other view there). All randomness comes from the loop's generator.
- **Frame-level VICReg.** Rather than DeLoRes's one embedding per clip (mean pooling), the loss is applied
  per frame: the valid frames of the batch are the samples of the variance and covariance terms and the
  frame pairs of the two views the invariance pairs. With a batch of 8 clips, mean pooling gives 8 samples
  for a 256x256 covariance, and teaches clip-level invariances only; aligned frames give ~800 samples a
  step and keep the frame-level (phonetic) information that SUPERB's PR/ASR probe.
  `utterance_weight` adds the pooled (DeLoRes) loss on top (0 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from upstreams.pretrain.hubert import HubertEncoderFamily

#: HubertConfig overrides per size (`tiny`: ~0.25 M encoder parameters, a 2-4 minute run on two CPU cores).
SIZE_CONFIGS = {
    "tiny": dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=192,
                 conv_dim=(32, 32, 64, 64, 64, 64, 64), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                 conv_stride=(5, 2, 2, 2, 2, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    "small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
                  conv_dim=(128,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8),
}
COMMON_CONFIG = dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=False,
                     hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                     final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0)
EXPANDER_DIMS = {"tiny": 256, "small": 512}


# ----------------------------------------------------------------------------- the three terms

def invariance_term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error between paired embeddings (N, D) of the two views."""
    return F.mse_loss(a, b)


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Mean over dimensions of `relu(gamma - sqrt(var + eps))`, the variance over the N rows of (N, D)
    (unbiased, as VICReg's `x.var(dim=0)`)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal entries of the (D, D) covariance of z (N, D), divided by D."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / max(1, n - 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


@dataclass(frozen=True)
class VICRegWeights:
    invariance: float = 25.0  # lambda
    variance: float = 25.0  # mu
    covariance: float = 1.0  # nu
    gamma: float = 1.0
    eps: float = 1e-4


def vicreg_loss(x: torch.Tensor, y: torch.Tensor,
                w: VICRegWeights = VICRegWeights()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg's loss on paired embeddings x, y (N, D): the variance term averaged over the two views, the
    covariance term summed over them (as the reference implementation)."""
    inv = invariance_term(x, y)
    var = 0.5 * (variance_term(x, w.gamma, w.eps) + variance_term(y, w.gamma, w.eps))
    cov = covariance_term(x) + covariance_term(y)
    loss = w.invariance * inv + w.variance * var + w.covariance * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


# ----------------------------------------------------------------------------- augmentations

@dataclass(frozen=True)
class Augment:
    """What a view is made of (per utterance, each drawn independently)."""

    gain_db: float = 6.0  # gain uniform in +- gain_db
    snr_db: tuple[float, float] = (5.0, 30.0)  # white noise at an SNR uniform in this range
    noise_prob: float = 0.8
    max_shift: int = 160  # samples dropped at the start: under half the 320-sample hop keeps frames aligned
    mask_spans: int = 3  # up to this many zeroed spans
    mask_seconds: float = 0.08  # each at most this long
    sample_rate: int = 16000


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def augment(wavs: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator,
            aug: Augment = Augment()) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented view of a padded batch (B, S): gain, noise at a random SNR, a sub-frame shift to the
    left (its length shrinks by the shift) and zeroed time spans; padding stays zero. All draws from
    `generator`, in a fixed order, so the same generator state gives the same view."""
    out = torch.zeros_like(wavs)
    new_lengths = lengths.clone()
    max_span = max(1, int(aug.mask_seconds * aug.sample_rate))
    for i, n in enumerate(lengths.tolist()):
        shift = int(torch.randint(aug.max_shift + 1, (), generator=generator)) if aug.max_shift > 0 else 0
        shift = min(shift, max(0, n - 1))
        x = wavs[i, shift:n].clone()
        m = x.numel()
        x = x * 10.0 ** (_uniform(generator, -aug.gain_db, aug.gain_db) / 20.0)
        if float(torch.rand((), generator=generator)) < aug.noise_prob:
            snr = _uniform(generator, *aug.snr_db)
            power = x.pow(2).mean().clamp_min(1e-10)
            noise = torch.randn(m, generator=generator)
            x = x + noise * torch.sqrt(power / 10.0 ** (snr / 10.0))
        spans = int(torch.randint(aug.mask_spans + 1, (), generator=generator)) if aug.mask_spans > 0 else 0
        for _ in range(spans):
            width = int(torch.randint(1, max_span + 1, (), generator=generator))
            start = int(torch.randint(max(1, m - width + 1), (), generator=generator))
            x[start: start + width] = 0.0
        out[i, :m] = x
        new_lengths[i] = m
    return out, new_lengths


def normalize_waveforms(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples (the upstream's `do_normalize`)."""
    out = torch.zeros_like(wavs)
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = F.layer_norm(wavs[i, :n], (n,))
    return out


# ----------------------------------------------------------------------------- model

class Expander(nn.Sequential):
    """VICReg's expander: (Linear, BatchNorm, ReLU) x (layers - 1), then Linear."""

    def __init__(self, in_dim: int, dim: int, layers: int = 2) -> None:
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(d, dim), nn.BatchNorm1d(dim), nn.ReLU()]
            d = dim
        mods.append(nn.Linear(d, dim))
        super().__init__(*mods)


class VICRegModel(nn.Module):
    def __init__(self, size: str) -> None:
        super().__init__()
        from transformers import HubertConfig, HubertModel

        config = HubertConfig(**{**COMMON_CONFIG, **SIZE_CONFIGS[size]})
        self.encoder = HubertModel(config)
        self.expander = Expander(config.hidden_size, EXPANDER_DIMS[size])
        self.utterance_expander = Expander(config.hidden_size, EXPANDER_DIMS[size])

    def frames(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, T, H) and the frame counts (B,)."""
        wavs = wavs[:, : int(lengths.max())]
        mask = (torch.arange(wavs.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).long()
        hidden = self.encoder(wavs, attention_mask=mask).last_hidden_state
        frames = self.encoder._get_feat_extract_output_lengths(lengths).long().clamp(max=hidden.shape[1])
        return hidden, frames


class VICRegFamily(HubertEncoderFamily):
    """VICReg (DeLoRes-style) on two aligned augmented views; frame-level, plus optional pooled loss."""

    name = "vicreg"
    kind = "regularization"
    description = ("VICReg / DeLoRes: variance-invariance-covariance regularisation between two augmented, "
                   "frame-aligned views (tiny HuBERT-architecture encoder)")
    default_lr = 1e-3
    default_steps = 900

    def __init__(self, weights: VICRegWeights = VICRegWeights(), aug: Augment = Augment(),
                 utterance_weight: float = 0.0) -> None:
        self.weights = weights
        self.aug = aug
        self.utterance_weight = utterance_weight

    def build(self, size: str) -> nn.Module:
        return VICRegModel(size)

    def views(self, wavs: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator
              ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """The two normalised views (wavs, lengths) of a batch."""
        a, la = augment(wavs, lengths, generator, self.aug)
        b, lb = augment(wavs, lengths, generator, self.aug)
        return (normalize_waveforms(a, la), la), (normalize_waveforms(b, lb), lb)

    def loss(self, model: nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        (a, la), (b, lb) = self.views(wavs, lengths, generator)
        # one encoder pass over both views (the per-frame LayerNorm CNN makes the padding harmless)
        width = max(a.shape[1], b.shape[1])
        both = torch.cat([F.pad(a, (0, width - a.shape[1])), F.pad(b, (0, width - b.shape[1]))])
        hidden, frames = model.frames(both, torch.cat([la, lb]))
        batch = wavs.shape[0]
        ha, hb = hidden[:batch], hidden[batch:]
        common = torch.minimum(frames[:batch], frames[batch:])
        valid = torch.arange(hidden.shape[1]).unsqueeze(0) < common.unsqueeze(1)
        za, zb = model.expander(ha[valid]), model.expander(hb[valid])
        loss, parts = vicreg_loss(za, zb, self.weights)
        logs = {k: float(v) for k, v in parts.items()}
        logs["std"] = float(za.detach().std(dim=0).mean())
        if self.utterance_weight > 0:
            weights = valid.unsqueeze(-1).float()
            pa = (ha * weights).sum(1) / common.clamp_min(1).unsqueeze(1)
            pb = (hb * weights).sum(1) / common.clamp_min(1).unsqueeze(1)
            u_loss, _ = vicreg_loss(model.utterance_expander(pa), model.utterance_expander(pb), self.weights)
            loss = loss + self.utterance_weight * u_loss
            logs["utterance_loss"] = float(u_loss.detach())
        return loss, logs


FAMILY = VICRegFamily()

__all__ = ["FAMILY", "VICRegFamily", "VICRegModel", "VICRegWeights", "Augment", "augment", "invariance_term",
           "variance_term", "covariance_term", "vicreg_loss", "normalize_waveforms"]

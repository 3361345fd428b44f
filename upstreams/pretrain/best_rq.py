"""BEST-RQ (Chiu et al. 2022), trained small: masked prediction of random-projection-quantised log-mel frames.

Targets come from a frozen random-projection quantizer, never trained:

* 80 log-mel bins (the project's `fbank` front end, `upstreams.filterbank`, 10 ms frames, without
  per-utterance CMVN) standardised per bin with corpus statistics computed in `prepare`;
* two consecutive 10 ms frames (2t, 2t + 1) stacked into one 160-dim vector per 20 ms encoder frame t
  (frame 2t covers exactly the encoder frame's window; an utterance's last odd frame, when missing,
  repeats its last frame);
* projected to 16 dims by a Xavier-uniform random matrix, l2-normalised, and assigned the index of the
  nearest of 512 l2-normalised Gaussian codebook vectors (largest cosine = smallest L2 between unit
  vectors).

Matrix, codebook and statistics are buffers (checkpointed, never in the optimiser) drawn in `prepare`
from the run's generator, so the targets are fixed by the seed. The encoder then sees spans of its
input masked and predicts the code of each masked frame (a linear softmax head, cross-entropy on the
masked frames only).

Deviation from the paper, so the result loads as a HuBERT upstream (`loader = "hubert"`; `best-rq=DIR`
also loads it through `pretrain.json`): the paper's encoder is a Conformer on log-mel features with
masked frames replaced by noise; here it is the same tiny `transformers` HuBERT-architecture encoder
as the `hubert` family (CNN front end on the waveform), and masking replaces spans of the projected CNN
features (the transformer's input) with the model's `masked_spec_embed`. Masking: each valid frame
starts a span of 10 frames (200 ms) with probability 0.04 (the paper: 0.01 per 10 ms frame, 400 ms
spans; shorter spans and more starts suit 2 s crops).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from upstreams.pretrain.hubert import (
    HubertEncoderFamily,
    build_encoder,
    corpus_frames,
    encode_masked,
    encoder_frames,
    masked_cross_entropy,
)

STACK = 2  # 10 ms log-mel frames per 20 ms encoder frame


def random_quantizer(input_dim: int, code_dim: int, codebook_size: int, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(projection (input_dim, code_dim) Xavier-uniform, codebook (codebook_size, code_dim) unit-norm)."""
    bound = math.sqrt(6.0 / (input_dim + code_dim))
    projection = (torch.rand(input_dim, code_dim, generator=generator) * 2 - 1) * bound
    codebook = F.normalize(torch.randn(codebook_size, code_dim, generator=generator), dim=-1)
    return projection, codebook


def quantize(stacked: torch.Tensor, projection: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook vector of each l2-normalised projected frame: (..., D) -> (...)."""
    z = F.normalize(stacked @ projection, dim=-1)
    return (z @ codebook.t()).argmax(-1)


class BestRQPretrainModel(torch.nn.Module):
    """The encoder, its code-prediction head, and the frozen quantizer (buffers)."""

    def __init__(self, size: str, codebook_size: int = 512, code_dim: int = 16, mel_bins: int = 80) -> None:
        super().__init__()
        self.encoder = build_encoder(size)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, codebook_size)
        self.register_buffer("projection", torch.zeros(mel_bins * STACK, code_dim))
        self.register_buffer("codebook", torch.zeros(codebook_size, code_dim))
        self.register_buffer("feat_mean", torch.zeros(mel_bins))
        self.register_buffer("feat_std", torch.ones(mel_bins))
        self.register_buffer("prepared", torch.zeros((), dtype=torch.bool))
        from upstreams.filterbank import fbank

        self.fbank = fbank(cmvn=False, delta_order=0)  # 80 log-mel bins; no parameters or persistent buffers

    def raw_logmel(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-mel (B, M, 80), valid 10 ms frames (B,))."""
        with torch.no_grad():
            feats, frames = self.fbank._forward(wavs, lengths)
            return feats[0], frames

    def stacked_frames(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Standardised log-mel, two 10 ms frames per encoder frame: (B, T, 160), T = the longest row's frames."""
        feats, frames = self.raw_logmel(wavs, lengths)
        feats = (feats - self.feat_mean) / self.feat_std
        t = int(encoder_frames(lengths).max())
        index = torch.arange(t * STACK).view(t, STACK)  # frames 2t, 2t + 1
        index = torch.minimum(index.unsqueeze(0), (frames - 1).clamp_min(0).view(-1, 1, 1))  # own last frame
        picked = torch.gather(feats, 1, index.reshape(len(feats), -1, 1).expand(-1, -1, feats.shape[-1]))
        return picked.reshape(len(feats), t, -1)

    def targets(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The code of every encoder frame, (B, T)."""
        if not bool(self.prepared):
            raise RuntimeError("best-rq: no quantizer yet; call prepare() first")
        with torch.no_grad():
            return quantize(self.stacked_frames(wavs, lengths), self.projection, self.codebook)


class BestRQFamily(HubertEncoderFamily):
    name = "best-rq"
    kind = "predictive"
    description = "masked prediction of random-projection-quantised log-mel frames (BEST-RQ; HuBERT encoder)"
    default_lr = 1e-3
    default_steps = 800
    codebook_size = 512
    code_dim = 16
    mask_prob = 0.04
    mask_span = 10

    def build(self, size: str) -> torch.nn.Module:
        return BestRQPretrainModel(size, self.codebook_size, self.code_dim)

    def prepare(self, model: torch.nn.Module, wavs: list[torch.Tensor], generator: torch.Generator) -> None:
        x = corpus_frames(wavs, lambda w, n: model.raw_logmel(w, n)[0], model.fbank.num_frames).double()
        mean, std = x.mean(0), x.std(0)
        projection, codebook = random_quantizer(model.projection.shape[0], model.projection.shape[1],
                                                model.codebook.shape[0], generator)
        with torch.no_grad():
            model.feat_mean.copy_(mean.float())
            model.feat_std.copy_(std.float().clamp_min(1e-5))
            model.projection.copy_(projection)
            model.codebook.copy_(codebook)
            model.prepared.fill_(True)

    def loss(self, model: torch.nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        targets = model.targets(wavs, lengths)
        hidden, mask, valid = encode_masked(model.encoder, wavs, lengths, self.mask_prob, self.mask_span,
                                            generator)
        loss, extra = masked_cross_entropy(model.head(hidden), targets, mask)
        extra["codes_used"] = float(targets[valid].unique().numel())
        return loss, extra


FAMILY = BestRQFamily()

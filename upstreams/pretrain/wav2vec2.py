"""wav2vec 2.0 (Baevski et al. 2020), the contrastive family: a small `transformers` Wav2Vec2 trained with
InfoNCE against its own Gumbel-quantised CNN features plus the codebook diversity loss.

Spans of the CNN features are replaced by a learned mask embedding; at every masked frame the transformer's
output (projected) must pick the frame's quantised target out of `num_negatives` distractors, quantised
targets of other masked frames of the same utterance (cosine similarity / temperature, cross-entropy with
the positive first). The diversity loss pushes the softmax over each codebook group towards uniform use,
so the codebook does not collapse. The Gumbel temperature is annealed 2 -> 0.5 over the run (held in a
buffer, so a resumed run anneals exactly as an uninterrupted one).

Masks and negatives are drawn from the loop's generator (`compute_span_mask`, `sample_negatives`; not
transformers' numpy-RNG helpers); the Gumbel noise and dropout draw from torch's global RNG, which the loop
seeds and checkpoints.

Waveforms are normalised per utterance (zero mean, unit variance over the valid samples) and the CNN uses
`feat_extract_norm="layer"` (a LayerNorm per frame, so zero padding changes no valid frame); the saved folder
is a `Wav2Vec2Model` `save_pretrained` plus a `preprocessor_config.json` with `do_normalize: true`, so
`wav2vec2=DIR` runs it as it was trained.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from upstreams.pretrain.base import PretrainFamily

#: A standard wav2vec 2.0 CNN (400-sample receptive field, 320-sample hop: 50 frames a second), narrow.
CNN = dict(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                 conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                 num_codevector_groups=2, num_codevectors_per_group=64, codevector_dim=64,
                 proj_codevector_dim=64),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                  conv_dim=(128,) * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8,
                  num_codevector_groups=2, num_codevectors_per_group=160, codevector_dim=128,
                  proj_codevector_dim=128),
}

#: Shared by every size: the CNN, padding-invariant norms, light dropout. `mask_time_prob` > 0 only so the
#: model has its mask embedding: masks always come from `compute_span_mask`, never transformers' own.
COMMON = dict(**CNN, feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=False,
              hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
              feat_quantizer_dropout=0.0, layerdrop=0.0, apply_spec_augment=True, mask_time_prob=0.05,
              mask_feature_prob=0.0, contrastive_logits_temperature=0.1, diversity_loss_weight=0.1)

MASK_PROB = 0.5  # fraction of frames starting a span (spans overlap: ~45-50% of frames end up masked)
MASK_LENGTH = 5  # frames per span (100 ms)
NUM_NEGATIVES = 50
GUMBEL_START, GUMBEL_END = 2.0, 0.5


# ---------------------------------------------------------------------- seeded masking and sampling

def compute_span_mask(frame_lengths: torch.Tensor, num_frames: int, mask_prob: float, mask_length: int,
                      generator: torch.Generator, min_masked: int = 2) -> torch.Tensor:
    """(B, T) bool mask of time spans, like wav2vec 2.0's: in an utterance of n valid frames,
    round(mask_prob * n / mask_length) span starts (probabilistic rounding) drawn without replacement from
    the positions where a whole span fits, each masking `mask_length` frames; spans may overlap. Only valid
    frames are masked, and at least `min_masked` of each (non-empty) utterance (the contrastive loss needs a
    positive and a distractor)."""
    lengths = [int(n) for n in frame_lengths.tolist()]
    mask = torch.zeros(len(lengths), num_frames, dtype=torch.bool)
    for row, n in enumerate(lengths):
        if n <= 0:
            continue
        span = min(mask_length, n)
        starts_available = n - span + 1
        draw = float(torch.rand((), generator=generator))
        count = int(mask_prob * n / span + draw)
        count = max(1, min(count, starts_available))
        starts = torch.randperm(starts_available, generator=generator)[:count]
        for s in starts.tolist():
            mask[row, s: s + span] = True
        shortfall = min(min_masked, n) - int(mask[row, :n].sum())
        if shortfall > 0:  # a very short utterance: mask a few more frames at random
            free = (~mask[row, :n]).nonzero().flatten()
            extra = free[torch.randperm(len(free), generator=generator)[:shortfall]]
            mask[row, extra] = True
    return mask


def sample_negatives(mask: torch.Tensor, num_negatives: int, generator: torch.Generator) -> torch.Tensor:
    """(B, T, K) indices into the flattened (B*T) frames: for every masked frame, K distractors drawn
    uniformly (with replacement) from the *other* masked frames of the same utterance. Unmasked rows hold
    their own index (never read). An utterance with a single masked frame has no distractor: its row holds
    the positive's own index, which `info_nce` scores as -inf (so that frame's loss is 0)."""
    batch, frames = mask.shape
    own = torch.arange(batch * frames).view(batch, frames)
    out = own.unsqueeze(-1).expand(batch, frames, num_negatives).clone()
    for row in range(batch):
        positions = mask[row].nonzero().flatten()
        m = len(positions)
        if m < 2:
            continue
        # uniform over the other m-1 masked frames: draw in [0, m-2], shift past the positive's own slot
        drawn = torch.randint(m - 1, (m, num_negatives), generator=generator)
        slot = torch.arange(m).unsqueeze(1)
        drawn = drawn + (drawn >= slot).long()
        out[row, positions] = positions[drawn] + row * frames
    return out


def info_nce(predicted: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Mean over masked frames of -log softmax(cos(c_t, [q_t, q_n1..q_nK]) / temperature)[0].

    predicted, targets: (B, T, D); mask: (B, T) bool; negatives: (B, T, K) flat indices (`sample_negatives`).
    A distractor identical to the positive (same index, or the same quantised vector) is scored -inf.
    """
    batch, frames, dim = targets.shape
    flat_targets = targets.reshape(batch * frames, dim)
    flat_index = torch.arange(batch * frames, device=targets.device).view(batch, frames)
    c = predicted[mask]  # (M, D)
    pos = targets[mask]  # (M, D)
    neg_idx = negatives[mask]  # (M, K)
    neg = flat_targets[neg_idx]  # (M, K, D)
    candidates = torch.cat([pos.unsqueeze(1), neg], dim=1)  # (M, 1+K, D)
    logits = F.cosine_similarity(c.unsqueeze(1).float(), candidates.float(), dim=-1) / temperature
    same = (neg_idx == flat_index[mask].unsqueeze(1)) | (neg == pos.unsqueeze(1)).all(-1)
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


# ---------------------------------------------------------------------- shared helpers

def normalize_waveforms(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid samples (s3prl's layer_norm); padding zeroed."""
    out = torch.zeros_like(wavs)
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = F.layer_norm(wavs[i, :n], (n,))
    return out


def sample_mask(lengths: torch.Tensor) -> torch.Tensor:
    return torch.arange(int(lengths.max())).unsqueeze(0) < lengths.unsqueeze(1)


def save_encoder(encoder: torch.nn.Module, out_dir: Path) -> None:
    """`save_pretrained` of a copy without the training-only mask embedding (and `mask_time_prob` 0), so loading
    it as a frozen feature extractor reports no unexpected weights."""
    frozen = copy.deepcopy(encoder)
    frozen.config.mask_time_prob = 0.0
    if "masked_spec_embed" in frozen._parameters:
        del frozen.masked_spec_embed
    frozen.save_pretrained(str(out_dir))


def write_preprocessor_config(out_dir: Path, do_normalize: bool = True) -> None:
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=do_normalize,
                             return_attention_mask=True).save_pretrained(str(out_dir))


# ---------------------------------------------------------------------- the family

class Wav2Vec2Pretrainer(torch.nn.Module):
    """`Wav2Vec2ForPreTraining` (encoder, quantiser, projections) plus the run's progress (for annealing)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers import Wav2Vec2ForPreTraining

        self.net = Wav2Vec2ForPreTraining(config)
        self.register_buffer("progress", torch.zeros(()))  # fraction of the run done, set by after_step

    def gumbel_temperature(self) -> float:
        return GUMBEL_START * (GUMBEL_END / GUMBEL_START) ** float(self.progress)


class Wav2Vec2Family(PretrainFamily):
    name = "wav2vec2"
    loader = "wav2vec2"
    kind = "contrastive"
    description = ("wav2vec 2.0: InfoNCE between masked-frame outputs and Gumbel-quantised CNN features "
                   "(distractors from the same utterance) + codebook diversity")
    default_lr = 1e-3
    default_steps = 1200
    mask_prob = MASK_PROB
    mask_length = MASK_LENGTH
    num_negatives = NUM_NEGATIVES

    def config(self, size: str):
        from transformers import Wav2Vec2Config

        return Wav2Vec2Config(**SIZES[size], **COMMON, num_negatives=self.num_negatives,
                              architectures=["Wav2Vec2Model"])

    def build(self, size: str) -> torch.nn.Module:
        return Wav2Vec2Pretrainer(self.config(size))

    def loss(self, model: torch.nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        net = model.net
        net.set_gumbel_temperature(model.gumbel_temperature())
        wavs = normalize_waveforms(wavs, lengths)
        frame_lengths = net.wav2vec2._get_feat_extract_output_lengths(lengths).long()
        frames = int(net.wav2vec2._get_feat_extract_output_lengths(torch.tensor(wavs.shape[1])))
        mask = compute_span_mask(frame_lengths, frames, self.mask_prob, self.mask_length, generator)
        negatives = sample_negatives(mask, self.num_negatives, generator)
        attention = sample_mask(lengths).long()
        out = net(wavs, attention_mask=attention, mask_time_indices=mask)
        contrastive = info_nce(out.projected_states, out.projected_quantized_states, mask, negatives,
                               net.config.contrastive_logits_temperature)
        codes = net.config.num_codevectors_per_group * net.config.num_codevector_groups
        diversity = (codes - out.codevector_perplexity) / codes
        loss = contrastive + net.config.diversity_loss_weight * diversity
        return loss, {"contrastive": float(contrastive.detach()), "diversity": float(diversity.detach()),
                      "perplexity": float(out.codevector_perplexity.detach()),
                      "masked": float(mask.sum()) / max(1, int(frame_lengths.sum()))}

    def after_step(self, model: torch.nn.Module, step: int, total_steps: int) -> None:
        model.progress.fill_(min(1.0, (step + 1) / max(1, total_steps)))

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.net.wav2vec2

    def save_upstream(self, model: torch.nn.Module, out_dir: Path) -> Path:
        out = Path(out_dir)
        save_encoder(model.net.wav2vec2, out)
        write_preprocessor_config(out, do_normalize=True)
        return out


FAMILY = Wav2Vec2Family()

__all__ = ["FAMILY", "Wav2Vec2Family", "compute_span_mask", "sample_negatives", "info_nce"]

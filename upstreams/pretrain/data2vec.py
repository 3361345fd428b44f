"""data2vec (Baevski et al. 2022), the bootstrapping family: a small `transformers` Data2VecAudio student
regresses, at masked frames, what an exponential-moving-average teacher makes of the unmasked input.

One step: the CNN and feature projection run once on the (normalised) waveforms. The teacher (an EMA copy
of the student's transformer encoder: positional convolutions, LayerNorm and layers; `ema_transformer_only`
in fairseq's data2vec audio) sees those features unmasked, without gradient and without dropout; its top
`top_k` layer outputs are each instance-normalised over time (valid frames only) and averaged into the
targets. The student sees the same features with spans replaced by its mask embedding; a linear head on
its final output regresses the targets at the masked frames (mean squared error). After each optimiser
step `after_step` moves the teacher towards the student: teacher <- tau * teacher + (1 - tau) * student,
tau annealed linearly from `tau_start` to `tau_end` over the run (0.99 -> 0.999: a few hundred steps are
far fewer than the paper's 0.999 -> 0.9999 schedule was made for).

The teacher lives inside the trainable model (parameters with requires_grad False, so the loop's optimiser
leaves them alone and its checkpoint keeps them); the saved upstream is the student alone
(`Data2VecAudioModel.save_pretrained`, `do_normalize: true`), loaded by `data2vec=DIR`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from upstreams.pretrain.base import PretrainFamily
from upstreams.pretrain.wav2vec2 import (
    CNN,
    compute_span_mask,
    normalize_waveforms,
    save_encoder,
    write_preprocessor_config,
)

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                 conv_dim=(32,) * 7, num_conv_pos_embeddings=3, conv_pos_kernel_size=9,
                 num_conv_pos_embedding_groups=4),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                  conv_dim=(128,) * 7, num_conv_pos_embeddings=5, conv_pos_kernel_size=19,
                  num_conv_pos_embedding_groups=16),
}

#: `mask_time_prob` > 0 only so the model has its mask embedding (masks come from `compute_span_mask`);
#: no dropout on the projected features, which the teacher shares with the student.
COMMON = dict(**CNN, conv_bias=True, hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
              feat_proj_dropout=0.0, layerdrop=0.0, apply_spec_augment=True, mask_time_prob=0.05,
              mask_feature_prob=0.0)

#: Shorter, sparser spans and the top two layers than the paper's (0.65, 10, all eight): at this size and
#: a few minutes of training, the paper's settings leave the student predicting the mean target (PR no better
#: than the random init, measured); these learn (see the README's family table).
MASK_PROB = 0.5
MASK_LENGTH = 5
TAU_START, TAU_END = 0.99, 0.999


def masked_instance_norm(x: torch.Tensor, valid: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, T, C) normalised per utterance and channel over its valid frames (`valid`: (B, T) bool), like
    `F.instance_norm` on each unpadded utterance; padded frames come out 0."""
    m = valid.unsqueeze(-1).to(x.dtype)
    n = m.sum(1, keepdim=True).clamp(min=1)
    mean = (x * m).sum(1, keepdim=True) / n
    var = (((x - mean) * m) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * m


def data2vec_targets(layer_outputs: list[torch.Tensor], valid: torch.Tensor, top_k: int) -> torch.Tensor:
    """The mean of the top `top_k` layer outputs, each instance-normalised over time."""
    chosen = layer_outputs[-top_k:]
    return sum(masked_instance_norm(h, valid) for h in chosen) / len(chosen)


def tau_at(step: int, total: int, start: float = TAU_START, end: float = TAU_END) -> float:
    """EMA decay after optimiser step `step` (0-based) of `total`: linear from `start` to `end`."""
    if total <= 1:
        return end
    return start + (end - start) * min(1.0, step / (total - 1))


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, tau: float) -> None:
    """teacher <- tau * teacher + (1 - tau) * student, parameter by parameter (buffers copied)."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(tau).add_(s.detach(), alpha=1.0 - tau)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


class Data2VecPretrainer(torch.nn.Module):
    """Student `Data2VecAudioModel`, its regression head, and the EMA teacher of its encoder."""

    def __init__(self, config: Any, top_k: int) -> None:
        super().__init__()
        from transformers import Data2VecAudioModel

        self.student = Data2VecAudioModel(config)
        self.head = torch.nn.Linear(config.hidden_size, config.hidden_size)
        self.teacher = copy.deepcopy(self.student.encoder)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.top_k = int(top_k)

    def teacher_layers(self, features: torch.Tensor, frame_valid: torch.Tensor | None) -> list[torch.Tensor]:
        """Every layer output of the teacher encoder on unmasked projected features (no gradient)."""
        captured: list[torch.Tensor] = []
        handles = [layer.register_forward_hook(lambda _m, _a, out: captured.append(out[0] if isinstance(
            out, tuple) else out)) for layer in self.teacher.layers]
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            with torch.no_grad():
                self.teacher(features.detach().clone(), attention_mask=frame_valid)
        finally:
            for h in handles:
                h.remove()
            self.teacher.train(was_training)
        return captured

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Student predictions and teacher targets (B, T, H), and the frames' validity (B, T)."""
        student = self.student
        cnn = student.feature_extractor(wavs).transpose(1, 2)
        frame_lengths = student._get_feat_extract_output_lengths(lengths).long()
        valid = torch.arange(cnn.shape[1]).unsqueeze(0) < frame_lengths.unsqueeze(1)
        projected, _ = student.feature_projection(cnn)
        frame_valid = None if bool(valid.all()) else valid
        targets = data2vec_targets(self.teacher_layers(projected, frame_valid), valid, self.top_k)
        masked = projected.clone()
        if mask is not None:
            masked[mask] = student.masked_spec_embed.to(masked.dtype)
        out = student.encoder(masked, attention_mask=frame_valid)
        return {"predicted": self.head(out.last_hidden_state), "targets": targets, "valid": valid}


class Data2VecFamily(PretrainFamily):
    name = "data2vec"
    loader = "data2vec"
    kind = "bootstrapping"
    description = ("data2vec: regress (masked frames) the instance-normalised mean of an EMA teacher's top "
                   "layers on the unmasked input")
    default_lr = 1e-3
    default_steps = 1200
    mask_prob = MASK_PROB
    mask_length = MASK_LENGTH
    top_k: int | None = 2  # None: every layer

    def config(self, size: str):
        from transformers import Data2VecAudioConfig

        return Data2VecAudioConfig(**SIZES[size], **COMMON, architectures=["Data2VecAudioModel"])

    def build(self, size: str) -> torch.nn.Module:
        config = self.config(size)
        return Data2VecPretrainer(config, self.top_k or config.num_hidden_layers)

    def loss(self, model: torch.nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        wavs = normalize_waveforms(wavs, lengths)
        student = model.student
        frame_lengths = student._get_feat_extract_output_lengths(lengths).long()
        frames = int(student._get_feat_extract_output_lengths(torch.tensor(wavs.shape[1])))
        mask = compute_span_mask(frame_lengths, frames, self.mask_prob, self.mask_length, generator)
        out = model(wavs, lengths, mask)
        predicted, targets = out["predicted"][mask], out["targets"][mask]
        loss = F.mse_loss(predicted, targets)
        with torch.no_grad():
            target_std = targets.std(0).mean()
            pred_std = predicted.std(0).mean()
        return loss, {"target_std": float(target_std), "pred_std": float(pred_std),
                      "masked": float(mask.sum()) / max(1, int(frame_lengths.sum()))}

    def after_step(self, model: torch.nn.Module, step: int, total_steps: int) -> None:
        ema_update(model.teacher, model.student.encoder, tau_at(step, total_steps))

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.student

    def save_upstream(self, model: torch.nn.Module, out_dir: Path) -> Path:
        out = Path(out_dir)
        save_encoder(model.student, out)
        write_preprocessor_config(out, do_normalize=True)
        return out


FAMILY = Data2VecFamily()

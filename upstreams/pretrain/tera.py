"""`superbench pretrain tera`: TERA (Liu, Li & Lee, IEEE/ACM TASLP 2021), which covers Mockingjay.

A Transformer encoder (s3prl's `TransformerModel`, `upstreams.mockingjay`) reads 80-dim log-mel frames
(s3prl's `OnlinePreprocessor`: level-normalised waveform, centred 25/10 ms STFT, HTK mel, log, per-utterance
CMVN; `upstreams.mockingjay.OnlineFeatures`) whose copy has been altered, and a prediction head
(`SpecHead`: dense, GELU, LayerNorm, linear) reconstructs the clean frames. The alterations follow
s3prl's `pretrain/mockingjay/task.py` (`generate_masked_acoustic_model_data`), per utterance:

* time: `round(length * 0.15 / 7)` span starts drawn without replacement from `0 .. length - 8`
  (spans may overlap), each span 7 frames; with probability 0.8 the spans are zeroed, 0.1 replaced by
  other random spans of the same utterance, 0.1 left as they are (Mockingjay's alteration);
* frequency: a band of `randint(0, int(0.2 * 80))` consecutive mel bins at a random start, zeroed on
  every frame (TERA's addition);
* magnitude (optional, `noise_proportion`, 0 by default as in the published tiny configs): with that
  probability the whole batch gets Gaussian noise of std 0.2.

Loss: L1 between the head's output and the clean features over the altered positions only (the chosen
frames on all bins, the chosen band on all valid frames), as s3prl's `masked_select` L1.
All randomness draws from the loop's generator.

Saved as s3prl's TERA `.ckpt` (`Transformer`, `SpecHead`, `Config` with `transformer`/`task`/`audio`) at
`DIR/tera.ckpt` with `upstreams.mockingjay.save_checkpoint`, so `tera=DIR` loads it (the input
representation and every layer as hidden states).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from upstreams.mockingjay import (
    OnlineFeatures,
    SpecHead,
    TransformerModel,
    online_front_end_config,
    save_checkpoint,
    tiny_config,
    transformer_settings,
)
from upstreams.pretrain.base import PretrainFamily

#: size -> transformer section (s3prl's TERA Base is 3 x 768, 12 heads, 3072).
TERA_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 192, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 768},
    "small": {"hidden_size": 384, "num_hidden_layers": 3, "num_attention_heads": 6, "intermediate_size": 1536},
}


def tera_config(size: str, **task: Any) -> dict[str, Any]:
    """The upstream config (`transformer`, `task`, `audio`) of a TERA of `size`, published layout."""
    cfg = tiny_config("tera")
    cfg["transformer"].update(TERA_SIZES[size])
    cfg["task"]["position_encoding_size"] = cfg["transformer"]["hidden_size"]
    cfg["task"].update(task)
    return cfg


class TERAPretrainModel(nn.Module):
    """Front end (no parameters), the `TransformerModel` that is saved, and the `SpecHead`."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        where = Path("<tera pretrain>")
        settings = transformer_settings(config, where)
        audio = online_front_end_config(config["audio"], where)
        self.frontend = OnlineFeatures(audio)
        self.transformer = TransformerModel(settings, audio.dim)
        self.head = SpecHead(settings, audio.dim)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        """s3prl's `init_Transformer_weights`: normal(0, 0.02) linear weights, zero biases."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)

    def features(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.frontend(wavs, lengths)

    def forward(self, feats: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.transformer(feats, frame_lengths)[-1])


def _spans(starts: torch.Tensor, width: int) -> torch.Tensor:
    return (starts.unsqueeze(1) + torch.arange(width)).reshape(-1)


def alter(feats: torch.Tensor, frame_lengths: torch.Tensor, task: dict[str, Any],
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """TERA's alterations of a padded batch (B, T, F): (altered copy, bool mask of the positions the loss
    counts). `task` holds s3prl's keys (mask_proportion, mask_consecutive_min/max, mask_allow_overlap,
    mask_bucket_ratio, mask_frequency, noise_proportion)."""

    def uniform() -> float:
        return float(torch.rand((), generator=generator))

    def randint(low: int, high: int) -> int:  # inclusive, as random.randint
        return int(torch.randint(low, high + 1, (), generator=generator))

    altered = feats.clone()
    label = torch.zeros_like(feats, dtype=torch.bool)
    num_bins = feats.shape[-1]
    for b, length in enumerate(frame_lengths.tolist()):
        if task["mask_proportion"] > 0:
            width = randint(int(task["mask_consecutive_min"]), int(task["mask_consecutive_max"]))
            start_max = max(length - width - 1, 0)
            count = round(length * task["mask_proportion"] / width)
            if task.get("mask_allow_overlap", True):
                starts = torch.randperm(start_max + 1, generator=generator)[:count]
            else:
                bucket = round(width * task["mask_bucket_ratio"])
                first = randint(0, min(width, start_max))
                candidates = torch.arange(first, start_max + 1, bucket)
                starts = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
            frames = _spans(starts, width)
            dice = uniform()
            if dice < 0.8:
                altered[b, frames] = 0
            elif dice < 0.9:
                other = _spans(torch.randperm(start_max + 1, generator=generator)[: len(starts)], width)
                altered[b, frames] = feats[b, other]
            label[b, frames] = True
        if task["mask_frequency"] > 0:
            band = randint(0, int(num_bins * task["mask_frequency"]))
            start = int(torch.randperm(num_bins - band, generator=generator)[0])
            altered[b, :, start: start + band] = 0
            label[b, :length, start: start + band] = True
    label[torch.arange(feats.shape[1])[None, :] >= frame_lengths[:, None]] = False
    if task.get("noise_proportion", 0) > 0 and uniform() < task["noise_proportion"]:
        noise = torch.randn(feats.shape, generator=generator) * 0.2
        altered = altered + noise
    return altered, label


def masked_l1(pred: torch.Tensor, target: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean L1 over the positions `label` marks (0 when none is)."""
    if not bool(label.any()):
        return (pred * 0).sum()
    return (pred - target).abs().masked_select(label).mean()


class TERAFamily(PretrainFamily):
    name = "tera"
    loader = "tera"
    kind = "generative"
    description = "reconstruct time- and frequency-masked log-mel frames with a Transformer (L1 on altered positions)"
    default_lr = 1e-3
    default_steps = 300

    def build(self, size: str) -> TERAPretrainModel:
        return TERAPretrainModel(tera_config(size))

    def loss(self, model: nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        feats, frame_lengths = model.features(wavs, lengths)
        altered, label = alter(feats, frame_lengths, model.config["task"], generator)
        pred = model(altered, frame_lengths)
        loss = masked_l1(pred, feats, label)
        return loss, {"masked_fraction": float(label.float().mean())}

    def save_upstream(self, model: nn.Module, out_dir: Path) -> Path:
        save_checkpoint(model.transformer, model.head, model.config, Path(out_dir) / "tera.ckpt")
        return Path(out_dir)

    def encoder(self, model: nn.Module) -> nn.Module:
        return model.transformer


FAMILY = TERAFamily()

"""`superbench pretrain apc`: Autoregressive Predictive Coding (Chung, Hsu, Tang & Glass, Interspeech 2019).

A unidirectional GRU stack reads 80-dim log-mel frames (s3prl's APC front end: Kaldi fbank with a hamming
window, 25/10 ms, per-utterance CMVN; `upstreams.apc.HammingFbank`) and a linear postnet predicts, from
the last layer's output at frame t, the input frame t + n. The loss is the L1 distance, averaged over
the valid frames t + n < length and the mel bins (s3prl's `pretrain/apc/pretrain_expert.py` uses
`L1Loss` over the padded batch; padding is left out here). Because the GRUs are causal, running them over
the whole utterance and dropping the last n predictions is what s3prl's "input = features[:, :-n]" does.

n: the paper's phone-classification sweep is best at n = 3 for the 3-layer model (n in 1..20); s3prl's
`config_model.yaml` trains with `n_future: 5`. PR is the target here, so n = 3 (`APCFamily.n_future`);
the value is written to the checkpoint's `task.n_future`.

The model *is* `upstreams.apc.APCModel` (s3prl's module names: `rnn_layers`, `postnet`), saved with
`upstreams.apc.save_checkpoint` as s3prl's `.ckpt` at `DIR/apc.ckpt`, so `apc=DIR` loads it (three
hidden states: GRU layers 0, 1 and the last). s3prl's dropout (0.1 between layers) is kept in the config
but not applied: a few hundred steps on minutes of audio do not overfit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from upstreams.apc import APCModel, HammingFbank, frame_mask, parse_audio_config, save_checkpoint, tiny_audio_config
from upstreams.pretrain.base import PretrainFamily

#: size -> model.paras (s3prl's published APC is 3 x 512, residual).
APC_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"num_layers": 3, "hidden_size": 256, "dropout": 0.1, "residual": True},
    "small": {"num_layers": 3, "hidden_size": 512, "dropout": 0.1, "residual": True},
}


class APCPretrainModel(nn.Module):
    """The front end (no parameters) and the `APCModel` (GRUs + postnet) that is saved."""

    def __init__(self, paras: dict[str, Any], audio: dict[str, Any]) -> None:
        super().__init__()
        self.paras = dict(paras)
        self.audio = dict(audio)
        self.frontend = HammingFbank(parse_audio_config(audio, "<apc pretrain>", "an APC config"))
        self.apc = APCModel(int(audio["feat_dim"]), int(paras["hidden_size"]), int(paras["num_layers"]),
                            bool(paras["residual"]))

    def features(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.frontend(wavs, lengths)

    def forward(self, feats: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """The postnet's prediction at every frame (B, T, feat_dim), from the last GRU layer."""
        return self.apc.postnet(self.apc(feats, frame_lengths)[-1])


def apc_loss(pred: torch.Tensor, feats: torch.Tensor, frame_lengths: torch.Tensor, n_future: int) -> torch.Tensor:
    """Mean L1 between the prediction at frame t and frame t + n, over frames with t + n < length."""
    if n_future < 1:
        raise ValueError(f"n_future must be >= 1, got {n_future}")
    total = feats.shape[1]
    if total <= n_future:
        raise ValueError(f"APC needs more than n_future={n_future} frames, got {total}")
    valid = frame_mask(frame_lengths - n_future, total - n_future, feats.device).unsqueeze(-1)
    diff = (pred[:, : total - n_future] - feats[:, n_future:]).abs() * valid
    return diff.sum() / (valid.sum() * feats.shape[-1]).clamp(min=1)


class APCFamily(PretrainFamily):
    name = "apc"
    loader = "apc"
    kind = "generative"
    description = "predict the log-mel frame n=3 steps ahead with a unidirectional GRU stack (L1)"
    default_lr = 2e-3
    default_steps = 300
    n_future = 3

    def build(self, size: str) -> APCPretrainModel:
        return APCPretrainModel(APC_SIZES[size], tiny_audio_config())

    def loss(self, model: nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        feats, frame_lengths = model.features(wavs, lengths)
        pred = model(feats, frame_lengths)
        loss = apc_loss(pred, feats, frame_lengths, self.n_future)
        return loss, {}

    def save_upstream(self, model: nn.Module, out_dir: Path) -> Path:
        config = {"model": {"paras": dict(model.paras)},
                  "task": {"sequence_length": 1500, "n_future": self.n_future},
                  "data": {"audio": dict(model.audio)}}
        save_checkpoint(model.apc, config, Path(out_dir) / "apc.ckpt")
        return Path(out_dir)

    def encoder(self, model: nn.Module) -> nn.Module:
        return model.apc


FAMILY = APCFamily()

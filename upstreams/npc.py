"""`npc`: Non-autoregressive Predictive Coding (masked convolutions on log-mels), native in torch.

What is matched from s3prl 0.4.18 (`s3prl/upstream/npc/{expert.py, npc.py, vq.py, audio.py, hubconf.py}`):

* checkpoint: s3prl's `.ckpt`, a dict with `config` (`model.paras`: kernel_size, mask_size, n_blocks,
  hidden_size, dropout, residual, batch_norm, activate, disable_cross_layer, optional vq
  {codebook_size, code_dim, gumbel_temperature}; `data.audio` as APC's) and `model` (the NPC state dict:
  `blocks.{i}.{conv,linear,bn1,bn2}.*`, `masked_convs.{i}.conv.*` and the stored `masked_convs.{i}.conv_mask`,
  `vq_layers.{g}.*`, `postnet.*`). Every weight is loaded (strictly); the stored conv masks are used.
* preprocessing (audio.py, the same code as APC's): Kaldi fbank with a hamming window, `feat_dim` mel bins,
  25 ms / 10 ms snip_edges frames, per-utterance CMVN; see `upstreams.apc`.
* layers (expert.py's hooks, in the order they fire during the forward pass, which interleaves them):
  `block 0, masked conv 0, block 1, masked conv 1, ..., block N-1, masked conv N-1, feature`:
  each ConvBlock's output (conv3 -> BN -> act -> conv1 -> BN [+ residual] -> act), each masked
  ConvBlock's output (tanh of the masked convolution of that block's output), and the model's
  `output[1]`, the sum of the masked-conv outputs (the pre-VQ feature). 2 N + 1 hidden states of
  `hidden_size` (9 for the published 4-block model); with `disable_cross_layer` only the last block has
  a masked conv: N + 2 states. The preprocessed features are not a hidden state; VQ never reaches one.
* frame rate: 100 Hz (downsample 160, receptive field 400 samples), s3prl's own expert count (the
  convolutions keep the length; `S3PRLUpstream` then pads to ceil(n / 160) by repeating the last frame).

Difference, by design: s3prl convolves the zero-padded batch, so a short utterance's last frames see its
batch-mates' padding through the second and later blocks (the padding is zero only at the input). Here
every block's output is zeroed beyond each utterance's length before the next convolution, which gives
exactly what s3prl gives for the utterance alone (the reference the equivalence test uses). Dropout off
and BatchNorm on its running statistics (inference) whatever `train()` is asked. NPC models with an
auto-encoder bottleneck (`dim_bottleneck`) are refused: their last state has another width, and no
published checkpoint has one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from superbench.upstream import Upstream
from upstreams.apc import (
    HF_BASE,
    HammingFbank,
    audio_section,
    build_vq_layers,
    checkpoint_state_dict,
    frame_mask,
    model_paras,
    parse_audio_config,
    tiny_audio_config,
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

EXPECTED = "an NPC checkpoint (s3prl .ckpt)"

PUBLISHED = {
    "npc": PublishedCheckpoint("npc", f"{HF_BASE}/npc_360hr.ckpt", "s3prl .ckpt",
                               "NPC, 4 conv blocks x 512 + masked convs, LibriSpeech 360 h (s3prl's default npc)"),
    "npc_360hr": PublishedCheckpoint("npc_360hr", f"{HF_BASE}/npc_360hr.ckpt", "s3prl .ckpt",
                                     "NPC, 4 conv blocks x 512 + masked convs, LibriSpeech 360 h"),
    "npc_960hr": PublishedCheckpoint("npc_960hr", f"{HF_BASE}/npc_960hr.ckpt", "s3prl .ckpt",
                                     "NPC, 4 conv blocks x 512 + masked convs, LibriSpeech 960 h"),
}

NPC_PARAS = {"hidden_size", "n_blocks", "dropout", "residual", "kernel_size", "mask_size", "vq", "batch_norm",
             "activate", "disable_cross_layer", "dim_bottleneck"}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


class ConvBlock(nn.Module):
    """s3prl's NPC ConvBlock: conv (k=3) -> [BN] -> act -> 1x1 conv -> [BN] -> (+ input) -> act, on (B, C, T)."""

    def __init__(self, input_size: int, hidden_size: int, residual: bool, batch_norm: bool, activate: str) -> None:
        super().__init__()
        self.residual = residual
        self.act = ACTIVATIONS[activate]()
        self.conv = nn.Conv1d(input_size, hidden_size, kernel_size=3, stride=1, padding=1)
        self.linear = nn.Conv1d(hidden_size, hidden_size, kernel_size=1, stride=1, padding=0)
        self.batch_norm = batch_norm
        if batch_norm:
            self.bn1 = nn.BatchNorm1d(hidden_size)
            self.bn2 = nn.BatchNorm1d(hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.batch_norm:
            out = self.bn1(out)
        out = self.linear(self.act(out))
        if self.batch_norm:
            out = self.bn2(out)
        if self.residual:
            out = out + x
        return self.act(out)


class MaskConvBlock(nn.Module):
    """s3prl's masked ConvBlock: a 'same' convolution whose centre taps are zeroed by the stored `conv_mask`,
    then tanh; (B, C, T) in, (B, T, C) out."""

    def __init__(self, hidden_size: int, kernel_size: int, mask_size: int) -> None:
        super().__init__()
        self.pad_size = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(hidden_size, hidden_size, kernel_size=kernel_size, padding=self.pad_size)
        head = (kernel_size - mask_size) // 2
        mask = torch.ones_like(self.conv.weight)
        mask[:, :, head:head + mask_size] = 0
        self.register_buffer("conv_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.conv1d(x, self.conv_mask * self.conv.weight, self.conv.bias, padding=self.pad_size)
        return torch.tanh(y.transpose(1, 2))


class NPCModel(nn.Module):
    """The NPC network with s3prl's module names: `blocks`, `masked_convs` (None where disabled),
    optional `vq_layers`, `postnet`."""

    def __init__(self, input_size: int, hidden_size: int, n_blocks: int, residual: bool, kernel_size: int,
                 mask_size: int, vq: Mapping[str, Any] | None = None, batch_norm: bool = True,
                 activate: str = "relu", disable_cross_layer: bool = False, file: Path | str = "") -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        masked: list[nn.Module | None] = []
        current_mask = mask_size
        for i in range(n_blocks):
            blocks.append(ConvBlock(input_size if i == 0 else hidden_size, hidden_size,
                                    residual and i > 0, batch_norm, activate))
            current_mask += 2
            keep = not disable_cross_layer or i == n_blocks - 1
            masked.append(MaskConvBlock(hidden_size, kernel_size, current_mask) if keep else None)
        self.blocks = nn.ModuleList(blocks)
        self.masked_convs = nn.ModuleList(masked)
        if vq is not None:
            self.vq_layers = build_vq_layers(vq, hidden_size, file)
        self.postnet = nn.Linear(hidden_size, input_size)

    def forward(self, feats: torch.Tensor, frame_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states in s3prl's hook order; each block's output is zeroed past each utterance's end
        before the next convolution, as if every utterance ran alone."""
        mask = frame_mask(frame_lengths, feats.shape[1], feats.device).unsqueeze(1)  # (B, 1, T)
        x = feats.transpose(1, 2) * mask
        states: list[torch.Tensor] = []
        feature = None
        for block, masked_conv in zip(self.blocks, self.masked_convs):
            x = block(x) * mask
            states.append(x.transpose(1, 2))
            if masked_conv is not None:
                m = masked_conv(x) * mask.transpose(1, 2)
                states.append(m)
                feature = m if feature is None else feature + m
        states.append(feature)
        return states


class NPCUpstream(Upstream):
    """NPC from an s3prl `.ckpt`: every ConvBlock, every masked ConvBlock and the summed feature."""

    def __init__(self, name: str, file: Path, ckpt: Mapping[str, Any]) -> None:
        super().__init__()
        self.name = name
        paras = model_paras(ckpt["config"], file, EXPECTED)
        if "num_layers" in paras and "n_blocks" not in paras:
            raise CheckpointFormatError(f"{file}: expected {EXPECTED}, but model.paras ({', '.join(sorted(paras))}) "
                                        "is an APC model's; load it as `apc` or `vq_apc`")
        unknown = sorted(set(paras) - NPC_PARAS)
        missing = sorted({"hidden_size", "n_blocks", "residual", "kernel_size", "mask_size"} - set(paras))
        if unknown or missing:
            raise CheckpointFormatError(f"{file}: expected {EXPECTED}; model.paras "
                                        + (f"has unknown {unknown} " if unknown else "")
                                        + (f"lacks {missing}" if missing else ""))
        if paras.get("dim_bottleneck") is not None:
            raise CheckpointFormatError(f"{file}: NPC with an auto-encoder bottleneck (dim_bottleneck) is not "
                                        "supported: its feature has another width than the other layers")
        hidden, n_blocks = int(paras["hidden_size"]), int(paras["n_blocks"])
        kernel, mask_size = int(paras["kernel_size"]), int(paras["mask_size"])
        activate = paras.get("activate", "relu")
        if (n_blocks < 1 or kernel % 2 != 1 or mask_size % 2 != 1 or kernel - (mask_size + 2 * n_blocks) <= 0
                or activate not in ACTIVATIONS):
            raise CheckpointFormatError(
                f"{file}: NPC config s3prl would refuse: n_blocks={n_blocks}, kernel_size={kernel}, "
                f"mask_size={mask_size}, activate={activate!r} (odd sizes, a mask narrower than the kernel "
                f"in every block, relu or tanh)")
        self.frontend = HammingFbank(parse_audio_config(audio_section(ckpt["config"]), file, EXPECTED))
        disable_cross = bool(paras.get("disable_cross_layer", False))
        self.model = NPCModel(self.frontend.config.num_mel_bins, hidden, n_blocks, bool(paras["residual"]), kernel,
                              mask_size, paras.get("vq"), bool(paras.get("batch_norm", True)), activate,
                              disable_cross, file)
        state = checkpoint_state_dict(ckpt, file, EXPECTED)
        for key, value in self.model.state_dict().items():  # checkpoints older than torch 0.4.1 lack these
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = value
        load_weights(self.model, state, file, EXPECTED)
        self.model.eval()
        self.paras = paras
        self.num_layers = n_blocks + 2 if disable_cross else 2 * n_blocks + 1
        self.hidden_size = hidden
        self.downsample_rate = self.frontend.config.window_shift
        self.receptive_field = self.frontend.config.window_size

    def train(self, mode: bool = True) -> NPCUpstream:
        """Frozen upstream: BatchNorm keeps its running statistics whatever the caller asks."""
        return super().train(False)

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "frontend": asdict(self.frontend.config), "paras": self.paras}

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, frame_lengths = self.frontend(wavs, wav_lengths)
        return self.model(feats, frame_lengths), frame_lengths


TINY_PARAS: dict[str, Any] = {
    "kernel_size": 15, "mask_size": 5, "n_blocks": 4, "hidden_size": 32, "dropout": 0.1, "residual": True,
    "batch_norm": True, "activate": "relu", "disable_cross_layer": False,
    "vq": {"codebook_size": [8, 8, 8, 8], "code_dim": [8, 8, 8, 8], "gumbel_temperature": 1.0},
}


def write_random_checkpoint(path: str | Path, seed: int = 0, **paras: Any) -> Path:
    """A tiny random NPC in s3prl's `.ckpt` layout ({config: {model: {paras}, task, data: {audio}}, model}),
    loadable by s3prl's `npc_local`. BatchNorm statistics are randomised too, so they matter in tests.
    `paras` overrides the tiny model's settings (e.g. disable_cross_layer=True)."""
    paras = {**TINY_PARAS, **paras}
    audio = tiny_audio_config()
    with seeded(seed):
        model = NPCModel(audio["feat_dim"], paras["hidden_size"], paras["n_blocks"], paras["residual"],
                         paras["kernel_size"], paras["mask_size"], paras.get("vq"), paras["batch_norm"],
                         paras["activate"], paras["disable_cross_layer"])
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                nn.init.normal_(module.weight, 1.0, 0.1)
                nn.init.normal_(module.bias, 0.0, 0.1)
    config = {"model": {"paras": paras}, "task": {"sequence_length": 1500, "n_future": 5}, "data": {"audio": audio}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config, "model": model.state_dict()}, path)
    return path


def _make_factory(name: str) -> Callable[..., Upstream]:
    return published_factory(
        name, PUBLISHED[name],
        lambda file: NPCUpstream(name, file, read_checkpoint(file, expected=EXPECTED, required=("config", "model"))),
        family="npc (generative)", layers=9, hidden_size=512, write_random_checkpoint=write_random_checkpoint)


FACTORIES: dict[str, Callable[..., Upstream]] = {name: _make_factory(name) for name in PUBLISHED}

"""`apc` and `vq_apc`: Autoregressive Predictive Coding (a GRU stack on log-mels), native in torch.

What is matched from s3prl 0.4.18 (`s3prl/upstream/apc/{expert.py, apc.py, vq.py, audio.py, hubconf.py}`,
`s3prl/upstream/vq_apc/{expert.py, hubconf.py}`; VQ-APC is the same expert on a checkpoint whose
`config["model"]["paras"]` has a `vq` section):

* checkpoint: s3prl's `.ckpt`, a dict with `config` (`model.paras`: num_layers, hidden_size, dropout,
  residual, optional vq {codebook_size, code_dim, gumbel_temperature}; `data.audio`: feat_type 'fbank',
  feat_dim, frame_length, frame_shift, decode_wav, cmvn) and `model` (the APC state dict:
  `rnn_layers.{i}.{weight,bias}_{ih,hh}_l0`, `vq_layers.{g}.vq_logits.*`, `vq_layers.{g}.codebook_CxE.weight`,
  `postnet.*`). Every weight is loaded (strictly), even those that never reach a hidden state.
* preprocessing (audio.py): `torchaudio.compliance.kaldi.fbank` on the float waveform as given, 16 kHz,
  **hamming** window (0.54 - 0.46 cos), `feat_dim` mel bins, the checkpoint's frame length/shift
  (25 ms / 10 ms, snip_edges: frames = (n - 400) // 160 + 1), and torchaudio's other defaults (dither 0,
  DC offset removed, pre-emphasis 0.97, 512-point power spectrum, Kaldi mel scale 20 Hz..Nyquist, log
  floored at float32 eps); then, when `cmvn` is true, per-utterance CMVN (x - mean) / (1e-10 + std),
  unbiased std. No deltas. Built on `upstreams.filterbank` (`KaldiFeatures.frame_features` with its
  window swapped for a hamming one, `masked_cmvn`).
* layers (expert.py's hooks, in the order they fire): 3 hidden states of `hidden_size`:
  0. the output of GRU layer 0 (the input of `rnn_layers[1]`);
  1. the output of GRU layer 1, plus its input when `residual` (the input of `rnn_layers[2]`);
  2. the output of the last GRU layer, plus its input when `residual` (the model's `output[1]`).
  The preprocessed features are *not* a hidden state. For VQ-APC the last layer is taken before the
  VQ layer (s3prl returns the pre-quantisation feature; the codes only feed the training postnet), so
  the VQ weights never change the features. With more than 3 GRU layers s3prl still exposes only
  these three (layers 0, 1 and the last); fewer than 3 layers cannot be loaded by s3prl and are refused.
* frame rate: 100 Hz (downsample 160, receptive field 400 samples for 25/10 ms), the Kaldi snip_edges
  count, which is s3prl's own expert count; `S3PRLUpstream` then pads each layer to ceil(n / 160) frames
  by repeating the last one, and those extra frames are not produced here.

Differences, by design: the GRUs run on the padded batch (they are causal, so valid frames never see
padding) instead of packed sequences, and CMVN uses each utterance's valid frames, so a batch gives the
same frames as each utterance alone, as s3prl's per-utterance preprocessing does. Dropout is off
(inference). An utterance of a single frame gets CMVN features 0 instead of s3prl's NaN.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from superbench.upstream import Upstream
from upstreams.filterbank import KaldiFeatureConfig, KaldiFeatures, masked_cmvn
from upstreams.ssl_checkpoint import (
    CheckpointFormatError,
    PublishedCheckpoint,
    load_weights,
    published_factory,
    read_checkpoint,
    seeded,
)

log = logging.getLogger(__name__)

HF_BASE = "https://huggingface.co/leo19941227/apc_series/resolve/main"
EXPECTED = "an APC/VQ-APC checkpoint (s3prl .ckpt)"

PUBLISHED = {
    "apc": PublishedCheckpoint("apc", f"{HF_BASE}/apc_360hr.ckpt", "s3prl .ckpt",
                               "APC, 3 GRU layers x 512, LibriSpeech 360 h (s3prl's default apc)"),
    "apc_360hr": PublishedCheckpoint("apc_360hr", f"{HF_BASE}/apc_360hr.ckpt", "s3prl .ckpt",
                                     "APC, 3 GRU layers x 512, LibriSpeech 360 h"),
    "apc_960hr": PublishedCheckpoint("apc_960hr", f"{HF_BASE}/apc_960hr.ckpt", "s3prl .ckpt",
                                     "APC, 3 GRU layers x 512, LibriSpeech 960 h"),
    "vq_apc": PublishedCheckpoint("vq_apc", f"{HF_BASE}/vq_apc_360hr.ckpt", "s3prl .ckpt",
                                  "VQ-APC, 3 GRU layers x 512 + VQ, LibriSpeech 360 h (s3prl's default vq_apc)"),
    "vq_apc_360hr": PublishedCheckpoint("vq_apc_360hr", f"{HF_BASE}/vq_apc_360hr.ckpt", "s3prl .ckpt",
                                        "VQ-APC, 3 GRU layers x 512 + VQ, LibriSpeech 360 h"),
    "vq_apc_960hr": PublishedCheckpoint("vq_apc_960hr", f"{HF_BASE}/vq_apc_960hr.ckpt", "s3prl .ckpt",
                                        "VQ-APC, 3 GRU layers x 512 + VQ, LibriSpeech 960 h"),
}

# --------------------------------------------------------------------------- front end (audio.py)

#: `torchaudio.compliance.kaldi.fbank` keyword -> (KaldiFeatureConfig field or None, the only value
#: supported when the field is None). s3prl passes whatever else `data.audio` holds to kaldi.fbank.
_FBANK_KWARGS: dict[str, tuple[str | None, Any]] = {
    "frame_length": ("frame_length_ms", None),
    "frame_shift": ("frame_shift_ms", None),
    "preemphasis_coefficient": ("preemphasis", None),
    "remove_dc_offset": ("remove_dc_offset", None),
    "low_freq": ("low_freq", None),
    "high_freq": ("high_freq", None),
    "dither": (None, 0.0),
    "snip_edges": (None, True),
    "round_to_power_of_two": (None, True),
    "use_energy": (None, False),
    "use_log_fbank": (None, True),
    "use_power": (None, True),
    "vtln_warp": (None, 1.0),
}
#: Keys of `data.audio` that s3prl's `create_transform` consumes itself.
_TRANSFORM_KEYS = ("feat_type", "feat_dim", "decode_wav", "cmvn")


def hamming_window(size: int) -> torch.Tensor:
    """Kaldi's / torchaudio's hamming window (symmetric), which s3prl's APC and NPC front end uses."""
    n = torch.arange(size, dtype=torch.float64)
    return 0.54 - 0.46 * torch.cos(2 * math.pi * n / (size - 1))


def parse_audio_config(audio: Any, file: Path | str, expected: str) -> KaldiFeatureConfig:
    """The front-end settings of a checkpoint's `config["data"]["audio"]`, as s3prl's `create_transform`
    reads them; anything it would pass to `kaldi.fbank` that is not implemented here is refused."""
    if not isinstance(audio, Mapping):
        raise CheckpointFormatError(f"{file}: expected {expected}; its config has no data.audio section")
    for key in ("feat_type", "feat_dim"):
        if key not in audio:
            raise CheckpointFormatError(f"{file}: expected {expected}; config data.audio has no {key!r}")
    if audio["feat_type"] != "fbank":
        raise CheckpointFormatError(f"{file}: data.audio.feat_type is {audio['feat_type']!r}; s3prl's APC/NPC "
                                    "front end only implements 'fbank'")
    fields: dict[str, Any] = {"kind": "fbank", "num_mel_bins": int(audio["feat_dim"]), "window": "hamming",
                              "delta_order": 0, "cmvn": bool(audio.get("cmvn", True))}
    for key, value in audio.items():
        if key in _TRANSFORM_KEYS:
            continue
        if key not in _FBANK_KWARGS:
            raise CheckpointFormatError(f"{file}: data.audio option {key!r}={value!r} is not supported by the "
                                        f"native front end (supported: {', '.join(sorted(_FBANK_KWARGS))})")
        field, only = _FBANK_KWARGS[key]
        if field is None:
            if value != only:
                raise CheckpointFormatError(f"{file}: data.audio option {key}={value!r} is not supported "
                                            f"(only {only!r})")
        else:
            fields[field] = type(getattr(KaldiFeatureConfig, field))(value)
    config = KaldiFeatureConfig(**fields)
    if config.window_size < 2 or config.window_shift < 1:
        raise CheckpointFormatError(f"{file}: data.audio frame_length/frame_shift give a window of "
                                    f"{config.window_size} and a shift of {config.window_shift} samples")
    return config


class HammingFbank(nn.Module):
    """s3prl's APC/NPC `FeatureExtractor`: Kaldi fbank with a hamming window, then per-utterance CMVN.

    Returns (B, T, feat_dim) with padded frames set to 0 (as `pad_sequence` leaves them) and the frame counts.
    """

    def __init__(self, config: KaldiFeatureConfig) -> None:
        super().__init__()
        self.config = config
        self.kaldi = KaldiFeatures("fbank", config)
        self.kaldi.window = hamming_window(config.window_size).float()  # replaces its (povey) buffer

    def num_frames(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        return self.kaldi.num_frames(wav_lengths)

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frame_lengths = self.num_frames(wav_lengths)
        feats = self.kaldi.frame_features(wavs)
        if self.config.cmvn:
            return masked_cmvn(feats, frame_lengths, self.config.cmvn_eps), frame_lengths
        return feats * frame_mask(frame_lengths, feats.shape[1], feats.device).unsqueeze(-1), frame_lengths


def frame_mask(frame_lengths: torch.Tensor, total: int, device: torch.device | None = None) -> torch.Tensor:
    """(B, T) float mask of the valid frames, on `device` (the features'; the lengths may be on the CPU)."""
    device = device if device is not None else frame_lengths.device
    time = torch.arange(total, device=device)
    return (time.unsqueeze(0) < frame_lengths.to(device).unsqueeze(1)).float()


# --------------------------------------------------------------------------- model (apc.py, vq.py)


class VQLayer(nn.Module):
    """The weights of s3prl's VQ layer (logits + codebook). At inference s3prl takes the arg-max code,
    which only feeds the training postnet, so no hidden state goes through this layer."""

    def __init__(self, code_dim: int, codebook_size: int) -> None:
        super().__init__()
        self.vq_logits = nn.Linear(code_dim, codebook_size)
        self.codebook_CxE = nn.Linear(codebook_size, code_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The arg-max code's embedding (s3prl's `testing=True` path)."""
        logits = self.vq_logits(x)
        onehot = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(x.dtype)
        return self.codebook_CxE(onehot)


def build_vq_layers(vq: Mapping[str, Any], hidden_size: int, file: Path | str) -> nn.ModuleList:
    """The N-group VQ layers of a `vq` config section (APC and NPC share the layout)."""
    try:
        sizes, dims = list(vq["codebook_size"]), list(vq["code_dim"])
    except (KeyError, TypeError) as exc:
        raise CheckpointFormatError(f"{file}: model.paras.vq needs codebook_size and code_dim lists") from exc
    if len(sizes) != len(dims) or sum(dims) != hidden_size:
        raise CheckpointFormatError(f"{file}: model.paras.vq code_dim {dims} must have one entry per codebook "
                                    f"({sizes}) and sum to hidden_size {hidden_size}")
    return nn.ModuleList(VQLayer(int(d), int(s)) for s, d in zip(sizes, dims))


class APCModel(nn.Module):
    """The APC network with s3prl's module names: `rnn_layers` (GRUs), optional `vq_layers`, `postnet`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, residual: bool,
                 vq: Mapping[str, Any] | None = None, file: Path | str = "") -> None:
        super().__init__()
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.rnn_layers = nn.ModuleList(nn.GRU(s, hidden_size, batch_first=True) for s in sizes)
        self.residual = residual
        if vq is not None:
            self.vq_layers = build_vq_layers(vq, hidden_size, file)
        self.postnet = nn.Linear(hidden_size, input_size)

    def forward(self, feats: torch.Tensor, frame_lengths: torch.Tensor) -> list[torch.Tensor]:
        """Every GRU layer's output (B, T, H), residual added, padded frames 0. GRUs are causal, so
        running them over the zero-padded tail leaves the valid frames as packed sequences give them."""
        mask = frame_mask(frame_lengths, feats.shape[1], feats.device).unsqueeze(-1)
        outputs = []
        x = feats
        for i, rnn in enumerate(self.rnn_layers):
            y, _ = rnn(x)
            if self.residual and i > 0:
                y = y + x
            x = y * mask
            outputs.append(x)
        return outputs


def model_paras(config: Any, file: Path, expected: str) -> dict[str, Any]:
    """`config["model"]["paras"]` (s3prl builds the model from it), or a format error naming the file."""
    if not isinstance(config, Mapping):
        raise CheckpointFormatError(f"{file}: expected {expected}; its 'config' is a {type(config).__name__}")
    model = config.get("model")
    paras = model.get("paras") if isinstance(model, Mapping) else None
    if not isinstance(paras, Mapping):
        raise CheckpointFormatError(f"{file}: expected {expected}; its config has no model.paras section")
    return dict(paras)


def checkpoint_state_dict(ckpt: Mapping[str, Any], file: Path, expected: str) -> dict[str, torch.Tensor]:
    """The checkpoint's `model` state dict, checked to hold only tensors before it is loaded."""
    state = ckpt["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointFormatError(f"{file}: expected {expected}; its 'model' entry is not a state dict")
    return dict(state)


def audio_section(config: Mapping[str, Any]) -> Any:
    """`config["data"]["audio"]`, or None when the checkpoint has none."""
    data = config.get("data")
    return data.get("audio") if isinstance(data, Mapping) else None


APC_PARAS = {"num_layers", "hidden_size", "dropout", "residual", "vq"}


class APCUpstream(Upstream):
    """APC / VQ-APC from an s3prl `.ckpt`: three hidden states (see the module docstring)."""

    def __init__(self, name: str, file: Path, ckpt: Mapping[str, Any]) -> None:
        super().__init__()
        self.name = name
        paras = model_paras(ckpt["config"], file, EXPECTED)
        if "n_blocks" in paras or "kernel_size" in paras:
            raise CheckpointFormatError(f"{file}: expected {EXPECTED}, but model.paras ({', '.join(sorted(paras))}) "
                                        "is an NPC model's; load it as `npc`")
        unknown = sorted(set(paras) - APC_PARAS)
        missing = sorted({"num_layers", "hidden_size", "residual"} - set(paras))
        if unknown or missing:
            raise CheckpointFormatError(f"{file}: expected {EXPECTED}; model.paras "
                                        + (f"has unknown {unknown} " if unknown else "")
                                        + (f"lacks {missing}" if missing else ""))
        num_layers, hidden = int(paras["num_layers"]), int(paras["hidden_size"])
        if num_layers < 3:
            raise CheckpointFormatError(f"{file}: APC with {num_layers} GRU layer(s); s3prl's APC upstream hooks "
                                        "rnn_layers[1] and rnn_layers[2], so it needs at least 3")
        self.frontend = HammingFbank(parse_audio_config(audio_section(ckpt["config"]), file, EXPECTED))
        feat_dim = self.frontend.config.num_mel_bins
        self.model = APCModel(feat_dim, hidden, num_layers, bool(paras["residual"]), paras.get("vq"), file)
        load_weights(self.model, checkpoint_state_dict(ckpt, file, EXPECTED), file, EXPECTED)
        self.model.eval()
        self.paras = paras
        self.num_layers = 3
        self.hidden_size = hidden
        self.downsample_rate = self.frontend.config.window_shift
        self.receptive_field = self.frontend.config.window_size

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "frontend": asdict(self.frontend.config), "paras": self.paras}

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats, frame_lengths = self.frontend(wavs, wav_lengths)
        outputs = self.model(feats, frame_lengths)
        return [outputs[0], outputs[1], outputs[-1]], frame_lengths


# --------------------------------------------------------------------------- factories


def tiny_audio_config() -> dict[str, Any]:
    """`data.audio` as the published configs have it (s3prl/pretrain/*/config_model.yaml)."""
    return {"feat_type": "fbank", "feat_dim": 80, "frame_length": 25, "frame_shift": 10, "decode_wav": False,
            "cmvn": True}


def _write_apc_checkpoint(path: str | Path, seed: int, vq: bool) -> Path:
    """A tiny random APC (or VQ-APC) in s3prl's `.ckpt` layout: {config: {model: {paras}, task, data: {audio}},
    model: state dict}, loadable by s3prl's `apc_local`."""
    paras: dict[str, Any] = {"num_layers": 3, "hidden_size": 32, "dropout": 0.1, "residual": True}
    if vq:
        paras["vq"] = {"codebook_size": [16, 8], "code_dim": [16, 16], "gumbel_temperature": 0.5}
    audio = tiny_audio_config()
    with seeded(seed):
        model = APCModel(audio["feat_dim"], paras["hidden_size"], paras["num_layers"], paras["residual"],
                         paras.get("vq"))
    config = {"model": {"paras": paras}, "task": {"sequence_length": 1500, "n_future": 5}, "data": {"audio": audio}}
    return save_checkpoint(model, config, path)


def save_checkpoint(model: nn.Module | Mapping[str, torch.Tensor], config: Mapping[str, Any], path: str | Path) -> Path:
    """Write `model` (an `APCModel` or its state dict) with its s3prl `config` ({model: {paras}, task, data:
    {audio}}) as s3prl's APC `.ckpt` ({config, model}), which `apc=PATH` (and s3prl's `apc_local`) loads."""
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dict(config), "model": {k: v.detach().cpu().clone() for k, v in state.items()}}, path)
    return path


def _make_factory(name: str, vq: bool) -> Callable[..., Upstream]:
    def load(file: Path) -> Upstream:
        upstream = APCUpstream(name, file, read_checkpoint(file, expected=EXPECTED, required=("config", "model")))
        if vq != hasattr(upstream.model, "vq_layers"):  # s3prl's apc and vq_apc share one expert too
            log.info("%s: %s is a%s checkpoint", name, file, "n APC (no VQ)" if vq else " VQ-APC")
        return upstream

    return published_factory(name, PUBLISHED[name], load, family="apc (generative)", layers=3, hidden_size=512,
                             write_random_checkpoint=lambda path, seed=0: _write_apc_checkpoint(path, seed, vq))


FACTORIES: dict[str, Callable[..., Upstream]] = {
    name: _make_factory(name, name.startswith("vq_")) for name in PUBLISHED
}

"""`modified_cpc`: Modified CPC (Rivière et al. 2020, CPC_audio), native torch.

Matched from s3prl v0.4.18 `s3prl/upstream/cpc/`: `hubconf.py` (the `modified_cpc` URL, a CPC_audio hub
checkpoint), `expert.py` (what is loaded and which modules are hooked), `feature_loader.py` (`getEncoder`,
`getAR`, `loadArgs`: the checkpoint's `config` overrides the defaults of `cpc_default_config.py`), and
`model.py` (`CPCEncoder`, `ChannelNorm`, `CPCAR`, `CPCModel`).

Checkpoint format (CPC_audio's torch-hub file): a dict with `config` (the training arguments as a plain
dict: `hiddenEncoder`, `hiddenGar`, `normMode`, `arMode`, `nLevelsGRU`, `cpc_mode`, `encoder_type`, ...;
keys it lacks take CPC_audio's defaults) and `weights` (the state dict of `CPCModel`: `gEncoder.conv0..4`,
`gEncoder.batchNorm0..4`, `gAR.baseNet.*`). Keys outside `gEncoder.` / `gAR.` are ignored, as s3prl's
`strict=False` load ignores them; missing model weights are an error here (s3prl would leave them random).

Hidden states (s3prl's hooks, in order): 0 = the CNN encoder's output (`gEncoder`, 5 strided convolutions,
each followed by the normalisation of `normMode` and ReLU; 256-d for the published model), 1 = the
autoregressive network's output (`gAR`, an LSTM/GRU/RNN of `nLevelsGRU` levels; 256-d). Both sizes must be
equal (they are in every published CPC checkpoint).

Frame rate: 100 Hz (downsample_rate 160). The padded convolutions give floor((n + 1) / 160) frames for n
samples. The contract's rule with receptive_field = 160 (a frame-count parameter, not the encoder's true
receptive field; the contract wants it >= downsample_rate) gives floor(n / 160): the same except when
n + 1 is a multiple of 160, where the model's one extra last frame is dropped. s3prl's hub reports
ceil(n / 160) frames and fills the difference by repeating the last frame; those repeats are not made here.

Preprocessing: none (the raw waveform goes into the first convolution; no normalisation).

Padding: the convolutions pad with zeros at every layer, so a batch zeroes each layer's input beyond that
utterance's valid length, which reproduces the lone utterance exactly (ChannelNorm and eval-mode BatchNorm
are per frame). `instanceNorm` encoders (normalising over time) run per utterance; the forward AR is causal,
so padding after the valid frames cannot reach them; `cpc_mode: reverse` runs the AR per utterance.

Differences from s3prl: with `samplingType: sequential`, s3prl's CPCAR carries its hidden state over from
the previous call (features depend on what was extracted before); here every call starts from zeros.
`encoder_type` mfcc/lfb (torchaudio transforms) and `arMode: transformer` (its module is absent from s3prl
too) are not supported and are reported as such.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from superbench.upstream import Upstream
from upstreams.ssl_checkpoint import (
    CheckpointFormatError,
    PublishedCheckpoint,
    guess_format,
    load_weights,
    published_factory,
    read_checkpoint,
    resolve_checkpoint,
    seeded,
)

log = logging.getLogger(__name__)

MODIFIED_CPC = PublishedCheckpoint(
    "modified_cpc", "https://dl.fbaipublicfiles.com/librilight/CPC_checkpoints/60k_epoch4-d0f474de.pt",
    "CPC_audio hub checkpoint (.pt with 'config' and 'weights')",
    "Modified CPC trained on Libri-light 60k h (CPC_audio)")

EXPECTED = "a CPC_audio checkpoint (.pt with 'config' and 'weights', as s3prl's modified_cpc loads)"

#: CPC_audio's defaults for the arguments that shape the model (`cpc_default_config.py`); a checkpoint's
#: `config` overrides them key by key, as s3prl's `loadArgs` does.
DEFAULT_CONFIG: dict[str, Any] = {
    "hiddenEncoder": 256, "hiddenGar": 256, "nPredicts": 12, "negativeSamplingExt": 128, "learningRate": 2e-4,
    "schedulerStep": -1, "schedulerRamp": None, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-08,
    "sizeWindow": 20480, "nEpoch": 200, "samplingType": "samespeaker", "nLevelsPhone": 1, "cpc_mode": None,
    "encoder_type": "cpc", "normMode": "layerNorm", "onEncoder": False, "random_seed": None,
    "speakerEmbedding": 0, "arMode": "LSTM", "nLevelsGRU": 1, "rnnMode": "transformer", "dropout": False,
    "abspos": False,
}

#: (kernel, stride, padding) of CPCEncoder's five convolutions.
ENCODER_CONVS = ((10, 5, 3), (8, 4, 2), (4, 2, 1), (4, 2, 1), (4, 2, 1))
NORM_MODES = ("layerNorm", "instanceNorm", "batchNorm", "ID")
AR_MODES = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}

#: The tiny architecture `write_random_checkpoint` uses (a 2-level LSTM like the published model).
TINY_CONFIG = {"hiddenEncoder": 32, "hiddenGar": 32, "nLevelsGRU": 2, "arMode": "LSTM", "normMode": "layerNorm"}


class ChannelNorm(nn.Module):
    """CPC_audio's "layerNorm": per frame, over channels, with the unbiased variance."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class InstanceNorm(nn.Module):
    """`nn.InstanceNorm1d(affine=True)` (same weights), also defined for a single frame (torch refuses it)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)


def _norm_layer(mode: str, channels: int) -> nn.Module:
    if mode == "layerNorm":
        return ChannelNorm(channels)
    if mode == "instanceNorm":
        return InstanceNorm(channels)
    if mode == "batchNorm":
        return nn.BatchNorm1d(channels)
    return nn.Identity()


class CPCEncoder(nn.Module):
    """The strided CNN; attribute names follow CPC_audio's so its state dict loads as is."""

    def __init__(self, hidden: int, norm_mode: str) -> None:
        super().__init__()
        in_ch = 1
        for i, (k, s, p) in enumerate(ENCODER_CONVS):
            setattr(self, f"conv{i}", nn.Conv1d(in_ch, hidden, k, stride=s, padding=p))
            setattr(self, f"batchNorm{i}", _norm_layer(norm_mode, hidden))
            in_ch = hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, S) -> (B, C, T). With `lengths` (samples), each layer's input beyond an utterance's valid
        length is zeroed, which is what that utterance's own zero padding would give."""
        for i, (k, s, p) in enumerate(ENCODER_CONVS):
            if lengths is not None:
                x = x * (torch.arange(x.shape[-1], device=x.device) < lengths.unsqueeze(1)).unsqueeze(1)
                lengths = torch.div(lengths + 2 * p - k, s, rounding_mode="floor") + 1
            x = F.relu(getattr(self, f"batchNorm{i}")(getattr(self, f"conv{i}")(x)))
        return x


class CPCAR(nn.Module):
    """The autoregressive network (`gAR.baseNet`); `reverse` runs it backwards in time."""

    def __init__(self, dim_in: int, dim_out: int, levels: int, mode: str, reverse: bool) -> None:
        super().__init__()
        self.baseNet = AR_MODES[mode](dim_in, dim_out, num_layers=levels, batch_first=True)
        self.reverse = reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reverse:
            x = torch.flip(x, [1])
        x = self.baseNet(x)[0]
        return torch.flip(x, [1]) if self.reverse else x


class CPCModel(nn.Module):
    """`gEncoder` + `gAR`, named as in CPC_audio's `CPCModel`."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        hidden = int(config["hiddenEncoder"])
        self.gEncoder = CPCEncoder(hidden, str(config["normMode"]))
        if config["arMode"] == "no_ar":
            self.gAR: nn.Module = nn.Identity()
        else:
            self.gAR = CPCAR(hidden, int(config["hiddenGar"]), int(config["nLevelsGRU"]), str(config["arMode"]),
                             reverse=config.get("cpc_mode") == "reverse")


def model_config(raw: Mapping[str, Any], file: Path | str) -> dict[str, Any]:
    """The defaults overridden by the checkpoint's config; unsupported architectures are reported here."""
    config = {**DEFAULT_CONFIG, **dict(raw)}
    problems = []
    if config["encoder_type"] != "cpc":
        problems.append(f"encoder_type {config['encoder_type']!r} (only the CNN encoder 'cpc' is supported "
                        "natively; run it through `s3prl:cpc_local`)")
    if config["normMode"] not in NORM_MODES:
        problems.append(f"normMode {config['normMode']!r} (known: {', '.join(NORM_MODES)})")
    if config["arMode"] not in (*AR_MODES, "no_ar"):
        problems.append(f"arMode {config['arMode']!r} (supported: {', '.join(AR_MODES)}, no_ar)")
    for key in ("hiddenEncoder", "hiddenGar", "nLevelsGRU"):
        if not isinstance(config[key], int) or isinstance(config[key], bool) or config[key] < 1:
            problems.append(f"{key} = {config[key]!r} (a positive integer expected)")
    if problems:
        raise CheckpointFormatError(f"{file}: unsupported CPC configuration: " + "; ".join(problems))
    if config["arMode"] != "no_ar" and config["hiddenGar"] != config["hiddenEncoder"]:
        raise CheckpointFormatError(
            f"{file}: hiddenEncoder {config['hiddenEncoder']} != hiddenGar {config['hiddenGar']}: the two hidden "
            "states would have different sizes, which one upstream cannot expose")
    if config["samplingType"] == "sequential":
        log.warning("%s: samplingType 'sequential': s3prl carries the AR state between calls; the native "
                    "upstream starts every call from zeros", file)
    return config


def read_cpc_checkpoint(file: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, model weights) of a CPC_audio hub checkpoint, or a CheckpointFormatError naming the file."""
    obj = read_checkpoint(file, EXPECTED)
    if "weights" not in obj or "config" not in obj:
        if "gEncoder" in obj and "cpcCriterion" in obj:
            hint = ("it looks like a CPC_audio training checkpoint (checkpoint_N.pt, weights under 'gEncoder' and "
                    "the config in checkpoint_args.json beside it)")
        else:
            guess = guess_format(obj)
            hint = f"it looks like {guess}" if guess else "it is not a CPC checkpoint"
        missing = ", ".join(repr(k) for k in ("config", "weights") if k not in obj)
        raise CheckpointFormatError(f"{file}: expected {EXPECTED}, but it has no {missing} (top-level keys: "
                                    f"{', '.join(sorted(map(str, obj))[:8]) or 'none'}); {hint}")
    raw, weights = obj["config"], obj["weights"]
    if not isinstance(raw, Mapping):
        raise CheckpointFormatError(f"{file}: 'config' is a {type(raw).__name__}, expected a dict of CPC_audio "
                                    "arguments")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointFormatError(f"{file}: 'weights' is not a state dict of tensors")
    model_weights = {k: v for k, v in weights.items() if k.startswith(("gEncoder.", "gAR."))}
    if not model_weights:
        raise CheckpointFormatError(f"{file}: 'weights' holds no gEncoder./gAR. weights (keys: "
                                    f"{', '.join(sorted(weights)[:5]) or 'none'})")
    return model_config(raw, file), model_weights


class CPCUpstream(Upstream):
    """Modified CPC: the CNN encoder's output and the AR network's output, 100 Hz."""

    downsample_rate = 160
    receptive_field = 160

    def __init__(self, name: str, config: Mapping[str, Any], model: CPCModel, source: str = "") -> None:
        super().__init__()
        self.name = name
        self.config = dict(config)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source = source
        self.num_layers = 2
        self.hidden_size = int(config["hiddenEncoder"])
        self.per_utterance_encoder = config["normMode"] == "instanceNorm"
        self.per_utterance_ar = config.get("cpc_mode") == "reverse"

    def config_dict(self) -> dict[str, Any]:
        keys = ("hiddenEncoder", "hiddenGar", "normMode", "arMode", "nLevelsGRU", "cpc_mode", "encoder_type")
        return {**super().config_dict(), "family": "cpc", **{k: self.config.get(k) for k in keys}}

    def _encode(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> torch.Tensor:
        if not self.per_utterance_encoder:
            return self.model.gEncoder(wavs.unsqueeze(1), wav_lengths).transpose(1, 2)
        outs = [self.model.gEncoder(wav[:n].view(1, 1, -1))[0].transpose(0, 1)
                for wav, n in zip(wavs, wav_lengths.tolist())]
        return nn.utils.rnn.pad_sequence(outs, batch_first=True)

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        frame_lengths = self.num_frames(wav_lengths)
        model_lengths = encoder_frames(wav_lengths)  # >= frame_lengths: one more when n + 1 = 160 k
        device = wavs.device
        wavs = wavs[:, : int(wav_lengths.max())]
        encoded = self._encode(wavs, wav_lengths.to(device))
        if encoded.shape[1] != int(model_lengths.max()):
            raise RuntimeError(f"{self.name}: encoder gave {encoded.shape[1]} frames, expected "
                               f"{int(model_lengths.max())}")
        if self.per_utterance_ar:  # reversed in time: each utterance's AR starts at its own last frame
            ar = torch.zeros(encoded.shape[0], encoded.shape[1], self.hidden_size, device=device)
            for i, n in enumerate(model_lengths.tolist()):
                ar[i, :n] = self.model.gAR(encoded[i: i + 1, :n])[0]
        else:
            ar = self.model.gAR(encoded.contiguous())
        t = int(frame_lengths.max())
        keep = (torch.arange(t, device=device).unsqueeze(0) < frame_lengths.to(device).unsqueeze(1)).unsqueeze(-1)
        return [(h[:, :t] * keep).float().contiguous() for h in (encoded, ar)], frame_lengths


def encoder_frames(wav_lengths: torch.Tensor) -> torch.Tensor:
    """Frames CPCEncoder's padded convolutions give for `wav_lengths` samples (floor((n + 1) / 160))."""
    lengths = torch.as_tensor(wav_lengths, dtype=torch.long)
    for k, s, p in ENCODER_CONVS:
        lengths = torch.div(lengths + 2 * p - k, s, rounding_mode="floor") + 1
    return lengths


def load_cpc(path: str | Path | None = None, published: PublishedCheckpoint = MODIFIED_CPC) -> CPCUpstream:
    """Build the model from the checkpoint's own config and load its weights."""
    file = resolve_checkpoint(published, path)
    config, weights = read_cpc_checkpoint(file)
    model = CPCModel(config)
    load_weights(model, weights, file, "CPC_audio's CPCModel")
    log.debug("%s: loaded %s (%s, %s x%d)", published.name, file, config["normMode"], config["arMode"],
              config["nLevelsGRU"])
    return CPCUpstream(published.name, config, model, source=str(file))


def write_random_checkpoint(path: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """A tiny random-init CPC_audio hub checkpoint (`config` + `weights`), loadable by s3prl's `cpc_local`."""
    config = {**DEFAULT_CONFIG, **TINY_CONFIG, **overrides}
    with seeded(seed):
        model = CPCModel(model_config(config, path))
        for name, p in model.named_parameters():  # ChannelNorm starts at 1/0: move it so a test sees it
            if "batchNorm" in name:
                p.data.add_(0.1 * torch.randn_like(p))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": config, "weights": model.state_dict()}, path)
    return path


FACTORIES: dict[str, Callable[..., Upstream]] = {"modified_cpc": published_factory(
    "modified_cpc", MODIFIED_CPC, lambda file: load_cpc(file, MODIFIED_CPC), family="cpc (contrastive)", layers=2,
    hidden_size=256, write_random_checkpoint=write_random_checkpoint)}

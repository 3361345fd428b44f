"""Native wav2vec and vq-wav2vec upstreams (torch only: no s3prl, no fairseq).

Matched from s3prl v0.4.18: `s3prl/upstream/wav2vec/{expert.py, wav2vec_model.py, convert.py,
hubconf.py}` and `s3prl/upstream/vq_wav2vec/{expert.py, hubconf.py}` (vq-wav2vec uses wav2vec's
expert and model; only the checkpoint differs).

Checkpoints. s3prl's hub entries (`wav2vec`, `vq_wav2vec`, `vq_wav2vec_kmeans`, ...) download
s3prl's *converted* form of the fairseq files from huggingface.co/s3prl/converted_ckpts: a dict
`{"task_cfg", "model_cfg", "model_weight"}` whose `model_cfg` holds fairseq's `Wav2VecConfig`
fields (missing ones take that dataclass's defaults). The original fairseq `.pt` files
(dl.fbaipublicfiles.com) are read too: `{"args": argparse.Namespace, "model": ...}` (missing
arguments take fairseq's `base_wav2vec_architecture` defaults, as s3prl's legacy expert does) or
`{"cfg": {"model": ...}, "model": ...}`. Which form a file is in is detected from its keys. The
random-checkpoint writer writes the converted form (what the default URLs serve).

Model (built from the checkpoint's own config; inference path only): the convolutional feature
extractor (conv without bias, GroupNorm(1, C), ReLU/GELU, optional skip connections and log
compression `log(|x| + 1)`), the vector quantizer for vq-wav2vec (Gumbel: argmax of the weight
projection's logits per group, in eval mode; k-means: grouped 1x1 conv + GroupNorm, nearest
codeword per group), then the causal convolutional aggregator (left padding of k - 1 frames by
replication, or zeros with `agg_zero_pad`; conv, GroupNorm(1, C), activation, scaled residual with
`skip_connections_agg`). The prediction head (`wav2vec_predictions`) and `project_features` are
training-only and their weights are ignored. A GRU aggregator is refused (s3prl's expert hooks
`feature_aggregator.conv_layers`, which a GRU model lacks).

Hidden states (s3prl's hooks, in their firing order), 1 + number of aggregator layers (13 for the
published models, all 512-d):

0. `z`: the feature extractor's output (before vector quantization, also for vq-wav2vec);
1..L-1: the input of aggregator layer 1..L-1 (the output of layer 0..L-2 after its residual);
L. `c`: the aggregator's output (s3prl's `default`).

Frames: 10 ms (downsample rate = the product of the feature strides, 160); the receptive field is
the feature extractor's (465 samples for the published stacks), so an utterance of n samples gives
`(n - 465) // 160 + 1` frames, which is exactly what the convolutions produce. s3prl's
`S3PRLUpstream` reports `ceil(n / 160)` frames instead, padding with copies of the last frame;
those extra copies are not produced here. The aggregator is causal and keeps the frame count.

Preprocessing: none (the raw waveform; the expert ignores `task_cfg.normalize`).

Difference from s3prl: every GroupNorm (feature extractor, aggregator, k-means projection)
normalises over time. s3prl runs a zero-padded batch through them, so its features of an utterance
depend on the lengths of its batch-mates; here each utterance is normalised over its own valid
frames only, which is what s3prl gives for that utterance alone (a batch of one).
"""

from __future__ import annotations

import argparse
import ast
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from superbench.upstream import Upstream
from upstreams.hf import conv_geometry
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

CONVERTED_BASE = "https://huggingface.co/s3prl/converted_ckpts/resolve/main"
FAIRSEQ_BASE = "https://dl.fbaipublicfiles.com/fairseq/wav2vec"
EXPECTED = "a wav2vec / vq-wav2vec checkpoint (s3prl's converted .pt or fairseq's .pt)"
CONVERTED_KEYS = ("task_cfg", "model_cfg", "model_weight")
#: State-dict prefixes of training-only modules (the prediction head, projected targets).
TRAINING_ONLY = ("wav2vec_predictions.", "project_features.")

#: hub name -> (converted URL file, fairseq file, description, kind of random checkpoint)
_MODELS: dict[str, tuple[str, str, str, str]] = {
    "wav2vec": ("wav2vec_large.pt", "wav2vec_large.pt", "wav2vec Large (LibriSpeech 960 h)", "none"),
    "wav2vec_large": ("wav2vec_large.pt", "wav2vec_large.pt", "wav2vec Large (LibriSpeech 960 h)", "none"),
    "vq_wav2vec": ("vq-wav2vec.pt", "vq-wav2vec.pt", "vq-wav2vec, Gumbel-softmax quantizer", "gumbel"),
    "vq_wav2vec_gumbel": ("vq-wav2vec.pt", "vq-wav2vec.pt", "vq-wav2vec, Gumbel-softmax quantizer", "gumbel"),
    "vq_wav2vec_kmeans": ("vq-wav2vec_kmeans.pt", "vq-wav2vec_kmeans.pt", "vq-wav2vec, k-means quantizer",
                          "kmeans"),
}

PUBLISHED: dict[str, PublishedCheckpoint] = {
    name: PublishedCheckpoint(name, f"{CONVERTED_BASE}/{conv}", "s3prl converted fairseq .pt", desc)
    for name, (conv, _, desc, _) in _MODELS.items()
}
#: The original fairseq files (s3prl's `legacy=True`); looked for when the converted one is absent.
PUBLISHED_FAIRSEQ: dict[str, PublishedCheckpoint] = {
    name: PublishedCheckpoint(name, f"{FAIRSEQ_BASE}/{orig}", "fairseq .pt", desc)
    for name, (_, orig, desc, _) in _MODELS.items()
}

# --------------------------------------------------------------------------- configuration

#: fairseq's `Wav2VecConfig` defaults (the converted and `cfg` forms), inference-relevant fields only.
DATACLASS_DEFAULTS: dict[str, Any] = {
    "conv_feature_layers": "[(512, 10, 5), (512, 8, 4), (512, 4, 2), (512, 4, 2), (512, 4, 2), (512, 1, 1), "
                           "(512, 1, 1), (512, 1, 1)]",
    "conv_aggregator_layers": "[(512, 2, 1), (512, 3, 1), (512, 4, 1), (512, 5, 1), (512, 6, 1), (512, 7, 1), "
                              "(512, 8, 1), (512, 9, 1), (512, 10, 1), (512, 11, 1), (512, 12, 1), (512, 13, 1)]",
    "aggregator": "cnn", "no_conv_bias": False, "agg_zero_pad": False, "skip_connections_feat": False,
    "skip_connections_agg": True, "residual_scale": 0.5, "log_compression": True,
    "non_affine_group_norm": False, "activation": "relu", "vq_type": "none", "vq_vars": 320, "vq_groups": 2,
    "vq_dim": 0, "vq_depth": 1, "combine_groups": False,
}
#: fairseq's `base_wav2vec_architecture` defaults (an `args` Namespace lacking a field).
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    **DATACLASS_DEFAULTS,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 8, 4)] + [(512, 4, 2)] * 3",
    "conv_aggregator_layers": "[(512, 3, 1)] * 9", "skip_connections_agg": False, "log_compression": False,
}


def parse_layer_spec(text: Any, field: str, file: Path | str) -> tuple[tuple[int, int, int], ...]:
    """fairseq's layer strings ("[(512, 10, 5)] + [(512, 4, 2)] * 3") as (dim, kernel, stride) triples.

    fairseq `eval`s them; only list/tuple literals, `+` and `*` are accepted here.
    """
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")

    try:
        layers = value(ast.parse(str(text), mode="eval")) if isinstance(text, str) else text
        triples = tuple((int(d), int(k), int(s)) for d, k, s in layers)
    except (SyntaxError, ValueError, TypeError) as exc:
        raise CheckpointFormatError(f"{file}: {field} = {text!r} is not a list of (dim, kernel, stride): "
                                    f"{exc}") from exc
    if not triples or any(d <= 0 or k <= 0 or s <= 0 for d, k, s in triples):
        raise CheckpointFormatError(f"{file}: {field} = {text!r} has no layers or a non-positive size")
    return triples


@dataclass(frozen=True)
class Wav2VecArch:
    """What shapes the features: the inference-relevant part of fairseq's `Wav2VecConfig`."""

    feature_layers: tuple[tuple[int, int, int], ...]
    aggregator_layers: tuple[tuple[int, int, int], ...]
    skip_connections_feat: bool
    skip_connections_agg: bool
    residual_scale: float
    log_compression: bool
    non_affine_group_norm: bool
    activation: str
    conv_bias: bool
    agg_zero_pad: bool
    vq_type: str
    vq_vars: int
    vq_groups: int
    vq_dim: int
    vq_depth: int
    combine_groups: bool

    @property
    def embed(self) -> int:
        return self.feature_layers[-1][0]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], defaults: Mapping[str, Any], file: Path | str) -> Wav2VecArch:
        """Read a fairseq model config (dict), filling what it lacks from `defaults`; refuse what s3prl can't run."""
        merged = {**defaults, **{k: v for k, v in cfg.items() if v is not None or k not in defaults}}

        def get(key: str, kind: type) -> Any:
            try:
                return kind(merged[key])
            except (TypeError, ValueError) as exc:
                raise CheckpointFormatError(f"{file}: model config {key} = {merged[key]!r} is not "
                                            f"a {kind.__name__}") from exc

        if str(merged.get("aggregator", "cnn")) != "cnn":
            raise CheckpointFormatError(f"{file}: aggregator {merged['aggregator']!r} is not supported (only 'cnn'; "
                                        f"s3prl's wav2vec expert hooks the conv aggregator's layers)")
        activation = get("activation", str)
        if activation not in ("relu", "gelu"):
            raise CheckpointFormatError(f"{file}: unknown activation {activation!r} (relu or gelu)")
        vq_type = "none" if merged.get("vq_type") is None else get("vq_type", str)
        if vq_type not in ("none", "gumbel", "kmeans"):
            raise CheckpointFormatError(f"{file}: unknown vq_type {vq_type!r} (none, gumbel or kmeans)")
        arch = cls(
            feature_layers=parse_layer_spec(merged["conv_feature_layers"], "conv_feature_layers", file),
            aggregator_layers=parse_layer_spec(merged["conv_aggregator_layers"], "conv_aggregator_layers", file),
            skip_connections_feat=get("skip_connections_feat", bool),
            skip_connections_agg=get("skip_connections_agg", bool),
            residual_scale=get("residual_scale", float), log_compression=get("log_compression", bool),
            non_affine_group_norm=get("non_affine_group_norm", bool), activation=activation,
            conv_bias=not get("no_conv_bias", bool), agg_zero_pad=get("agg_zero_pad", bool), vq_type=vq_type,
            vq_vars=get("vq_vars", int), vq_groups=get("vq_groups", int), vq_dim=get("vq_dim", int),
            vq_depth=get("vq_depth", int), combine_groups=get("combine_groups", bool),
        )
        arch.check(file)
        return arch

    def check(self, file: Path | str) -> None:
        """Refuse configs whose layers could not share one hidden size or frame rate (as s3prl's featurizer needs)."""
        sizes = {self.embed} | {d for d, _, _ in self.aggregator_layers}
        if len(sizes) != 1:
            raise CheckpointFormatError(
                f"{file}: feature extractor ({self.embed}) and aggregator layers "
                f"({[d for d, _, _ in self.aggregator_layers]}) differ in size; the hidden states must share one")
        if any(s != 1 for _, _, s in self.aggregator_layers):
            raise CheckpointFormatError(f"{file}: aggregator strides {[s for _, _, s in self.aggregator_layers]} "
                                        f"are not all 1 (s3prl's expert assumes one 10 ms frame rate)")
        if self.vq_type != "none":
            vq_dim = self.vq_dim if self.vq_dim > 0 else self.embed
            if vq_dim != self.embed or self.vq_groups <= 0 or vq_dim % self.vq_groups or self.vq_vars <= 0:
                raise CheckpointFormatError(
                    f"{file}: vq_dim {vq_dim} must equal the feature size {self.embed} (the aggregator's input) "
                    f"and split into {self.vq_groups} groups of {self.vq_vars} codewords")
            if self.vq_type == "kmeans" and self.embed % self.vq_groups:
                raise CheckpointFormatError(f"{file}: {self.embed} channels do not split into {self.vq_groups} "
                                            f"groups for the k-means projection")


def _other_family(cfg: Mapping[str, Any]) -> str | None:
    """A model config of another fairseq family (wav2vec 2.0, HuBERT, data2vec), or None."""
    name = cfg.get("_name", cfg.get("arch"))
    if name is not None and str(name) not in ("wav2vec", "vq_wav2vec"):
        return f"a {name!r} model"
    if "conv_aggregator_layers" not in cfg and ("encoder_layers" in cfg or "extractor_mode" in cfg):
        return "a transformer model (wav2vec 2.0 / HuBERT style)"
    return None


def parse_checkpoint(ckpt: Mapping[str, Any], file: Path) -> tuple[str, Wav2VecArch, dict[str, torch.Tensor]]:
    """(format, architecture, weights) of a converted or fairseq checkpoint dict."""
    if all(k in ckpt for k in CONVERTED_KEYS):
        fmt, cfg, weights, defaults = "s3prl converted", ckpt["model_cfg"], ckpt["model_weight"], DATACLASS_DEFAULTS
    elif "model" in ckpt and ckpt.get("cfg") is not None:
        cfg_root = ckpt["cfg"]
        cfg = cfg_root.get("model") if isinstance(cfg_root, Mapping) else None
        if cfg is None and isinstance(cfg_root, Mapping) and "args" in cfg_root:  # fairseq keeps old args here
            cfg = cfg_root["args"]
        fmt, weights, defaults = "fairseq cfg", ckpt["model"], DATACLASS_DEFAULTS
        if isinstance(cfg, argparse.Namespace):
            cfg, defaults = vars(cfg), ARCHITECTURE_DEFAULTS
    elif "model" in ckpt and ckpt.get("args") is not None:
        args = ckpt["args"]
        cfg = vars(args) if isinstance(args, argparse.Namespace) else args
        fmt, weights, defaults = "fairseq args", ckpt["model"], ARCHITECTURE_DEFAULTS
    else:
        hint = guess_format(ckpt)
        raise CheckpointFormatError(
            f"{file}: expected {EXPECTED}: keys {', '.join(CONVERTED_KEYS)} or 'model' with 'args'/'cfg'; "
            f"top-level keys are {', '.join(sorted(map(str, ckpt))[:8]) or 'none'}"
            + (f"; it looks like {hint}" if hint else ""))
    if not isinstance(cfg, Mapping):
        raise CheckpointFormatError(f"{file}: the model config is a {type(cfg).__name__}, expected a dict "
                                    f"of fairseq's Wav2VecConfig fields ({fmt} form)")
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointFormatError(f"{file}: the weights ({fmt} form) are not a state dict of tensors")
    other = _other_family(cfg)
    if other:
        raise CheckpointFormatError(f"{file}: expected {EXPECTED}, but its config describes {other}")
    if not any(k.startswith("feature_aggregator.") for k in weights):
        raise CheckpointFormatError(f"{file}: expected {EXPECTED}, but its weights have no feature_aggregator "
                                    f"(e.g. {', '.join(list(weights)[:3])})")
    arch = Wav2VecArch.from_config(cfg, defaults, file)
    return fmt, arch, {k: v for k, v in weights.items() if not k.startswith(TRAINING_ONLY)}


# --------------------------------------------------------------------------- model

def group_norm_per_utterance(x: torch.Tensor, lengths: list[int], norm: nn.GroupNorm) -> torch.Tensor:
    """GroupNorm of (B, C, T) over each utterance's own `lengths[i]` frames (padded frames become 0).

    fairseq's GroupNorms normalise over time, so statistics over padding would leak into valid frames.
    """
    if all(n == x.shape[-1] for n in lengths):
        return F.group_norm(x.float(), norm.num_groups, norm.weight, norm.bias, norm.eps)
    out = torch.zeros_like(x, dtype=torch.float32)
    for i, n in enumerate(lengths):
        out[i: i + 1, :, :n] = F.group_norm(x[i: i + 1, :, :n].float(), norm.num_groups, norm.weight, norm.bias,
                                            norm.eps)
    return out


class FeatureExtractor(nn.Module):
    """fairseq's ConvFeatureExtractionModel (key names kept: `conv_layers.{i}.0` conv, `.2` GroupNorm)."""

    def __init__(self, arch: Wav2VecArch) -> None:
        super().__init__()
        self.arch = arch
        layers, in_dim = [], 1
        for dim, k, s in arch.feature_layers:
            layers.append(nn.Sequential(nn.Conv1d(in_dim, dim, k, stride=s, bias=False), nn.Identity(),
                                        nn.GroupNorm(1, dim, affine=not arch.non_affine_group_norm)))
            in_dim = dim
        self.conv_layers = nn.ModuleList(layers)
        self.activation = F.gelu if arch.activation == "gelu" else F.relu

    def _run(self, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        x = x.unsqueeze(1)
        for layer, (_, k, s) in zip(self.conv_layers, self.arch.feature_layers):
            residual = x
            lengths = [(n - k) // s + 1 for n in lengths]
            x = self.activation(group_norm_per_utterance(layer[0](x), lengths, layer[2]))
            if self.arch.skip_connections_feat and x.shape[1] == residual.shape[1]:
                step = residual.shape[2] // x.shape[2]  # fairseq's subsampling of the residual
                x = (x + residual[..., ::step][..., : x.shape[2]]) * math.sqrt(self.arch.residual_scale)
        if self.arch.log_compression:
            x = (x.abs() + 1).log()
        return x

    def forward(self, wavs: torch.Tensor, lengths: list[int], frames: list[int]) -> torch.Tensor:
        """(B, C, T) features of a padded batch; each utterance's frames depend on its own samples only."""
        if not self.arch.skip_connections_feat:
            return self._run(wavs, lengths)
        # The skip connections subsample the residual by a step fairseq takes from the tensor's
        # length: run each utterance alone so that padding cannot change it.
        out = wavs.new_zeros(len(lengths), self.arch.embed, max(frames))
        for i, n in enumerate(lengths):
            out[i, :, : frames[i]] = self._run(wavs[i: i + 1, :n], [n])[0]
        return out


class GumbelQuantizer(nn.Module):
    """fairseq's GumbelVectorQuantizer in eval mode: per group, the codeword of the largest logit."""

    def __init__(self, arch: Wav2VecArch) -> None:
        super().__init__()
        dim, groups, num_vars = arch.embed, arch.vq_groups, arch.vq_vars
        var_dim = (arch.vq_dim if arch.vq_dim > 0 else dim) // groups
        self.groups, self.num_vars, self.combine_groups = groups, num_vars, arch.combine_groups
        self.vars = nn.Parameter(torch.zeros(1, (1 if arch.combine_groups else groups) * num_vars, var_dim))
        if arch.vq_depth > 1:
            inner = dim * 2  # fairseq's weight_proj_factor for wav2vec
            act = nn.GELU() if arch.activation == "gelu" else nn.ReLU()
            blocks = [nn.Sequential(nn.Linear(dim if i == 0 else inner, inner), act) for i in range(arch.vq_depth - 1)]
            self.weight_proj = nn.Sequential(*blocks, nn.Linear(inner, groups * num_vars))
        else:
            self.weight_proj = nn.Linear(dim, groups * num_vars)

    def forward(self, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        bsz, dim, tsz = x.shape
        logits = self.weight_proj(x.transpose(1, 2).reshape(-1, dim)).view(bsz * tsz, self.groups, self.num_vars)
        index = logits.argmax(dim=-1)  # (B*T, G)
        if not self.combine_groups:
            index = index + torch.arange(self.groups, device=x.device) * self.num_vars
        codewords = self.vars[0][index]  # (B*T, G, var_dim)
        return codewords.reshape(bsz, tsz, -1).transpose(1, 2)


class KmeansQuantizer(nn.Module):
    """fairseq's KmeansVectorQuantizer: grouped projection + GroupNorm, then the nearest codeword per group."""

    def __init__(self, arch: Wav2VecArch) -> None:
        super().__init__()
        dim, groups = arch.embed, arch.vq_groups
        self.groups, self.num_vars, self.combine_groups = groups, arch.vq_vars, arch.combine_groups
        self.var_dim = (arch.vq_dim if arch.vq_dim > 0 else dim) // groups
        self.embedding = nn.Parameter(torch.zeros(arch.vq_vars, 1 if arch.combine_groups else groups, self.var_dim))
        self.projection = nn.Sequential(nn.Conv1d(dim, dim, kernel_size=1, groups=groups, bias=False),
                                        nn.GroupNorm(groups, dim))

    def forward(self, x: torch.Tensor, lengths: list[int], chunk: int = 256) -> torch.Tensor:
        bsz, _, tsz = x.shape
        ze = group_norm_per_utterance(self.projection[0](x), lengths, self.projection[1])
        ze = ze.view(bsz, self.groups, self.var_dim, tsz).permute(0, 3, 1, 2).reshape(bsz * tsz, self.groups, -1)
        book = self.embedding.expand(self.num_vars, self.groups, self.var_dim)
        index = torch.empty(bsz * tsz, self.groups, dtype=torch.long, device=x.device)
        for start in range(0, bsz * tsz, chunk):  # fairseq's exact distances, a few frames at a time
            part = ze[start: start + chunk]
            index[start: start + chunk] = (part.unsqueeze(0) - book.unsqueeze(1)).norm(dim=-1, p=2).argmin(dim=0)
        codewords = torch.stack([book[index[:, g], g] for g in range(self.groups)], dim=1)
        return codewords.reshape(bsz, tsz, -1).transpose(1, 2)


class Aggregator(nn.Module):
    """fairseq's causal ConvAggegator (keys `conv_layers.{i}.1` conv, `.3` GroupNorm); returns every hooked state."""

    def __init__(self, arch: Wav2VecArch) -> None:
        super().__init__()
        self.arch = arch
        layers, in_dim = [], arch.embed
        for dim, k, s in arch.aggregator_layers:
            layers.append(nn.Sequential(nn.Identity(), nn.Conv1d(in_dim, dim, k, stride=s, bias=arch.conv_bias),
                                        nn.Identity(), nn.GroupNorm(1, dim, affine=not arch.non_affine_group_norm)))
            in_dim = dim
        self.conv_layers = nn.ModuleList(layers)
        self.activation = F.gelu if arch.activation == "gelu" else F.relu
        self.scale = math.sqrt(arch.residual_scale)

    def forward(self, x: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        """[input of layer 1, ..., input of the last layer, output] as (B, C, T)."""
        states = []
        for i, (layer, (_, k, _)) in enumerate(zip(self.conv_layers, self.arch.aggregator_layers)):
            if i > 0:
                states.append(x)
            padded = F.pad(x, (k - 1, 0)) if self.arch.agg_zero_pad else F.pad(x, (k - 1, 0), mode="replicate")
            y = self.activation(group_norm_per_utterance(layer[1](padded), lengths, layer[3]))
            x = (y + x) * self.scale if self.arch.skip_connections_agg else y
        states.append(x)
        return states


class Wav2VecModel(nn.Module):
    """The inference path of fairseq's Wav2VecModel; module names follow its state dict."""

    def __init__(self, arch: Wav2VecArch) -> None:
        super().__init__()
        self.arch = arch
        self.feature_extractor = FeatureExtractor(arch)
        if arch.vq_type == "gumbel":
            self.vector_quantizer: nn.Module | None = GumbelQuantizer(arch)
        elif arch.vq_type == "kmeans":
            self.vector_quantizer = KmeansQuantizer(arch)
        else:
            self.vector_quantizer = None
        self.feature_aggregator = Aggregator(arch)

    def forward(self, wavs: torch.Tensor, lengths: list[int], frames: list[int]) -> list[torch.Tensor]:
        """Hidden states as (B, T, C): z, the aggregator's inner layer inputs, c."""
        z = self.feature_extractor(wavs, lengths, frames)
        x = z if self.vector_quantizer is None else self.vector_quantizer(z, frames)
        states = [z] + self.feature_aggregator(x, frames)
        return [s.transpose(1, 2).contiguous() for s in states]


# --------------------------------------------------------------------------- upstream

class Wav2VecUpstream(Upstream):
    """wav2vec / vq-wav2vec: z, the aggregator's layers, c (see the module docstring)."""

    def __init__(self, name: str, file: Path, ckpt: Mapping[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.format, self.arch, weights = parse_checkpoint(ckpt, file)
        self.model = Wav2VecModel(self.arch)
        load_weights(self.model, weights, file, EXPECTED)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_layers = len(self.arch.aggregator_layers) + 1
        self.hidden_size = self.arch.embed
        kernels = [k for _, k, _ in self.arch.feature_layers]
        strides = [s for _, _, s in self.arch.feature_layers]
        self.receptive_field, self.downsample_rate = conv_geometry(kernels, strides)

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "family": "wav2vec", "architecture": asdict(self.arch),
                "per_utterance_group_norm": True}

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        frame_lengths = self.num_frames(wav_lengths)
        lengths = [int(n) for n in wav_lengths.tolist()]
        device = next(self.model.parameters()).device
        wavs = wavs[:, : max(lengths)].to(device)
        valid = torch.arange(wavs.shape[1], device=device).unsqueeze(0) < wav_lengths.to(device).unsqueeze(1)
        hidden = self.model(wavs * valid, lengths, [int(n) for n in frame_lengths.tolist()])
        t_max = int(frame_lengths.max())
        if hidden[0].shape[1] != t_max:
            raise RuntimeError(f"{self.name}: the conv stack gave {hidden[0].shape[1]} frames, the frame rule "
                               f"says {t_max}")
        return hidden, frame_lengths


# --------------------------------------------------------------------------- random checkpoints

def tiny_model_cfg(vq_type: str = "none", **overrides: Any) -> dict[str, Any]:
    """A tiny fairseq `Wav2VecConfig` (as s3prl's converter stores it): 32 channels, 160x downsampling,
    465-sample receptive field, 4 aggregator layers (5 hidden states)."""
    cfg: dict[str, Any] = {
        "_name": "wav2vec", "prediction_steps": 3, "sample_distance": None, "cross_sample_negatives": 0,
        "num_negatives": 2,
        "conv_feature_layers": "[(32, 10, 5), (32, 8, 4), (32, 4, 2), (32, 4, 2), (32, 4, 2), (32, 1, 1)]",
        "conv_aggregator_layers": "[(32, 2, 1), (32, 3, 1), (32, 4, 1), (32, 5, 1)]",
        "dropout": 0.0, "dropout_features": 0.0, "dropout_agg": 0.0, "aggregator": "cnn", "gru_dim": 32,
        "no_conv_bias": False, "agg_zero_pad": False, "skip_connections_feat": False, "skip_connections_agg": True,
        "residual_scale": 0.5, "log_compression": True, "balanced_classes": False, "infonce": False,
        "project_features": "none", "non_affine_group_norm": False, "offset": "auto", "activation": "relu",
        "vq_type": vq_type, "vq_vars": 16, "vq_groups": 2, "vq_dim": 0, "vq_depth": 1, "combine_groups": False,
        "vq_temp": [2.0, 0.5, 0.999995], "vq_gamma": 0.25,
    }
    if vq_type == "gumbel":  # as the published vq-wav2vec: GELU, 2-layer projection, shared codebook
        cfg.update(activation="gelu", vq_depth=2, combine_groups=True)
    elif vq_type == "kmeans":
        cfg.update(activation="gelu")
    cfg.update(overrides)
    return cfg


def tiny_task_cfg() -> dict[str, Any]:
    """The task section of a converted checkpoint (fairseq's audio_pretraining; unused by the features)."""
    return {"_name": "audio_pretraining", "data": "", "sample_rate": 16000, "normalize": False,
            "enable_padding": False, "max_sample_size": 150000, "min_sample_size": None}


def random_weights(model_cfg: Mapping[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """A full fairseq-style state dict (prediction head included, as fairseq's strict loading needs)."""
    arch = Wav2VecArch.from_config(model_cfg, DATACLASS_DEFAULTS, "<random>")
    with seeded(seed):
        model = Wav2VecModel(arch)
        for module in model.modules():
            if isinstance(module, nn.GroupNorm) and module.affine:  # not 1/0, so that loading them matters
                nn.init.normal_(module.weight, 1.0, 0.1)
                nn.init.normal_(module.bias, 0.0, 0.1)
        if isinstance(model.vector_quantizer, GumbelQuantizer):
            nn.init.uniform_(model.vector_quantizer.vars)
        elif isinstance(model.vector_quantizer, KmeansQuantizer):
            nn.init.normal_(model.vector_quantizer.embedding)
        state = dict(model.state_dict())
        steps = int(model_cfg.get("prediction_steps", 12))
        head = nn.ConvTranspose2d(arch.aggregator_layers[-1][0], arch.embed, (1, steps))
        state.update({f"wav2vec_predictions.project_to_steps.{k}": v for k, v in head.state_dict().items()})
    return {k: v.clone() for k, v in state.items()}


def write_random_checkpoint(path: str | Path, seed: int = 0, vq_type: str = "none", **overrides: Any) -> Path:
    """A tiny random-init checkpoint in s3prl's converted form (what the hub's default URLs serve)."""
    model_cfg = tiny_model_cfg(vq_type, **overrides)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"task_cfg": tiny_task_cfg(), "model_cfg": model_cfg, "model_weight": random_weights(model_cfg, seed)},
               path)
    return path


# --------------------------------------------------------------------------- factories

def _resolve(name: str, path: str | None) -> Path:
    """The converted file (or, when only that is known locally, fairseq's original)."""
    if path is not None:
        return resolve_checkpoint(PUBLISHED[name], path)
    try:
        return resolve_checkpoint(PUBLISHED[name], None)
    except FileNotFoundError as first:
        try:
            return resolve_checkpoint(PUBLISHED_FAIRSEQ[name], None)
        except FileNotFoundError:
            raise first from None


def _make_factory(name: str) -> Callable[..., Upstream]:
    vq_type = _MODELS[name][3]

    def load(file: Path) -> Upstream:
        upstream = Wav2VecUpstream(name, file, read_checkpoint(file, expected=EXPECTED))
        if upstream.arch.vq_type != vq_type:  # s3prl's wav2vec and vq_wav2vec share one expert too
            log.info("%s: %s has vq_type %r", name, file, upstream.arch.vq_type)
        return upstream

    return published_factory(name, PUBLISHED[name], load, family="wav2vec (contrastive, CPC-style)", layers=13,
                             hidden_size=512, resolve=lambda path: _resolve(name, path),
                             write_random_checkpoint=lambda path, seed=0: write_random_checkpoint(path, seed, vq_type))


FACTORIES: dict[str, Callable[..., Upstream]] = {name: _make_factory(name) for name in _MODELS}

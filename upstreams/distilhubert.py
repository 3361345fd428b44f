"""`distilhubert`: DistilHuBERT (Chang et al. 2022), s3prl's Distiller, native torch.

Matched from s3prl v0.4.18 `s3prl/upstream/distiller/`: `hubconf.py` (the `distilhubert` /
`distilhubert_base` URL), `builder.py` (the `.ckpt` is a dict whose `Config["distiller"]` builds the model
and whose `Distiller` holds its state dict; padding mask from the waveform lengths), `model.py`
(`DistillerConfig` defaults, `DistillerModel`: conv front end, `post_extract_proj`, encoder, the
`expand-last` prediction heads), `module.py` (`TransformerEncoder`, `TransformerSentenceEncoderLayer`,
`SplitLinear`) and `expert.py` (the hidden-state list), plus the conv front end from
`s3prl/upstream/wav2vec2/wav2vec2_model.py` (`ConvFeatureExtractionModel`, `SamePad`, `get_activation_fn`).

Hidden states, in s3prl's order (`[feat_final] + layer_hidden + prediction heads`): 0 = the projected CNN
features as they enter the encoder (`post_extract_proj`; padded frames zeroed), 1..L = the output of each
transformer layer (L = `encoder_layers`, 2 for DistilHuBERT), then one per prediction head (`n_tasks`, 3
for DistilHuBERT: the heads trained to predict HuBERT layers 4, 8, 12). DistilHuBERT: 6 x 768.
With `task_emb_type: self-hidden` the heads are `[feat_final] + layer_hidden` again, as in s3prl.

Frame rate: 50 Hz (downsample_rate 320, receptive_field 400 for the standard conv stack; both computed
from `extractor_conv_feature_layers`). The model's own frame count is the contract's rule; s3prl's hub
reports ceil(n / 320) frames and repeats the last frame to get there; those repeats are not made here.

Preprocessing: none. The waveform is not normalised (s3prl's Distiller feeds it as is).

Padding: with `extractor_mode: default` the first convolution's GroupNorm normalises over time, so the conv
front end runs per utterance on the unpadded audio (see `upstreams/hf.py`); with `layer_norm` it runs
batched. Padded frames are zeroed before the positional convolution and masked out of attention, which is
what a lone utterance sees. The model runs in eval mode (no dropout); note that s3prl's `S3PRLUpstream`
leaves its Distiller in train mode after construction unless the caller calls `.eval()`.

Unsupported (reported as CheckpointFormatError): task embeddings other than `expand-last`/`self-hidden`
(they multiply the batch by the number of tasks), sparse/dynamic attention (fairseq modules), and heads whose
`final_dim` differs from `encoder_embed_dim` (one upstream has one hidden size).
"""

from __future__ import annotations

import argparse
import ast
import logging
import math
import operator
import pickle
import types
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

DISTILHUBERT = PublishedCheckpoint(
    "distilhubert",
    "https://huggingface.co/leo19941227/distilhubert/resolve/main/distilhubert_ls960_4-8-12.ckpt",
    "s3prl .ckpt ('Distiller' weights + 'Config')",
    "DistilHuBERT: 2-layer student of HuBERT Base (LibriSpeech 960 h), heads for layers 4, 8, 12")

EXPECTED = "a DistilHuBERT checkpoint (s3prl .ckpt with 'Distiller' and 'Config')"

#: `DistillerConfig`'s defaults for what shapes the forward pass (a key the config lacks takes these).
DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "extractor_conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_pos": 128, "conv_pos_groups": 16, "encoder_layers": 1, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_norm_first": False, "attention_type": "original", "final_dim": 768, "out_layer_type": "expand-last",
    "out_layer_inter_dim": -1, "n_tasks": 12, "task_emb_type": "expand-last",
}

#: A tiny Distiller with DistilHuBERT's layout (conv geometry, 2 layers, 3 heads, a projection after the CNN).
TINY_DISTILLER: dict[str, Any] = {
    "extractor_mode": "default",
    "extractor_conv_feature_layers": "[(24,10,5)] + [(24,3,2)] * 4 + [(24,2,2)] * 2",
    "extractor_dropout": 0.0, "feature_grad_mult": 0.1, "conv_pos": 16, "conv_pos_groups": 4,
    "encoder_layers": 2, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2,
    "activation_fn": "gelu", "layer_norm_first": False, "attention_type": "original", "dropout": 0.1,
    "attention_dropout": 0.1, "activation_dropout": 0.1, "encoder_layerdrop": 0.0, "final_dim": 32,
    "out_layer_type": "expand-last", "n_tasks": 3, "task_emb_type": "expand-last", "loss_type": "l1",
    "feat_pen_loss": 0.0, "cosine_loss": 1.0, "pred_layer_id": [4, 8, 12], "init_teacher_conv_layers": True,
    "init_teacher_encoder_layers": True,
}


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "gelu": lambda x: F.gelu(x.float()).type_as(x), "gelu_accurate": _gelu_tanh,
    "gelu_fast": _gelu_tanh, "tanh": torch.tanh, "linear": lambda x: x,
}

_BINOPS = {ast.Add: operator.add, ast.Mult: operator.mul}


def parse_conv_layers(text: str) -> list[tuple[int, int, int]]:
    """`extractor_conv_feature_layers` ("[(512,10,5)] + [(512,3,2)] * 4"): lists of (dim, kernel, stride)
    joined by + and repeated by *, evaluated without `eval`."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")

    layers = value(ast.parse(str(text), mode="eval").body)
    if not isinstance(layers, list) or not layers or not all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) and v > 0 for v in t) for t in layers):
        raise ValueError("not a list of (dim, kernel, stride) tuples")
    return layers


# ------------------------------------------------------------------------------------------------ modules

class TransposeLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class ConvFeatureExtractor(nn.Module):
    """wav2vec 2.0's conv front end; submodule indices follow fairseq's so the state dict loads as is."""

    def __init__(self, layers: list[tuple[int, int, int]], mode: str) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_d = 1
        for i, (dim, k, stride) in enumerate(layers):
            conv = nn.Conv1d(in_d, dim, k, stride=stride, bias=False)
            if mode == "layer_norm":
                norm: nn.Module = nn.Sequential(TransposeLast(), nn.LayerNorm(dim), TransposeLast())
                block = nn.Sequential(conv, nn.Identity(), norm, nn.GELU())
            elif i == 0:  # "default": GroupNorm (one group per channel, over time) on the first layer only
                block = nn.Sequential(conv, nn.Identity(), nn.GroupNorm(dim, dim, affine=True), nn.GELU())
            else:
                block = nn.Sequential(conv, nn.Identity(), nn.GELU())
            self.conv_layers.append(block)
            in_d = dim

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, C, T)."""
        x = wav.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv(nn.Module):
    """The positional convolution with `weight_norm(dim=2)`, kept as `weight_g`/`weight_v` like s3prl's."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(dim, dim // groups, kernel) * math.sqrt(4 / (kernel * dim)))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.groups, self.padding = groups, kernel // 2
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class SamePad(nn.Module):
    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class SelfAttention(nn.Module):
    """fairseq's MultiheadAttention (q/k/v/out projections), self-attention with a key padding mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"encoder_embed_dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D); key_padding (B, T) True at padded frames."""
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                             attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """`TransformerSentenceEncoderLayer` (post- or pre-LayerNorm), eval mode."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim = int(cfg["encoder_embed_dim"])
        self.self_attn = SelfAttention(dim, int(cfg["encoder_attention_heads"]))
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, int(cfg["encoder_ffn_embed_dim"]))
        self.fc2 = nn.Linear(int(cfg["encoder_ffn_embed_dim"]), dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = ACTIVATIONS[str(cfg["activation_fn"])]
        self.layer_norm_first = bool(cfg["layer_norm_first"])

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), key_padding)
            return x + self.fc2(self.activation(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.self_attn(x, key_padding))
        return self.final_layer_norm(x + self.fc2(self.activation(self.fc1(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        dim, kernel = int(cfg["encoder_embed_dim"]), int(cfg["conv_pos"])
        self.pos_conv = nn.Sequential(WeightNormConv(dim, kernel, int(cfg["conv_pos_groups"])), SamePad(kernel),
                                      nn.GELU())
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(int(cfg["encoder_layers"])))
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = bool(cfg["layer_norm_first"])

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(final output, each layer's output); padded frames of `x` must already be zero."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        hidden = []
        for layer in self.layers:
            x = layer(x, key_padding)
            hidden.append(x)
        return (self.layer_norm(x) if self.layer_norm_first else x), hidden


class SplitLinear(nn.Module):
    """N independent linear maps over the N chunks of the last dimension (s3prl's `SplitLinear`)."""

    def __init__(self, in_dim: int, splits: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.splits = in_dim, splits
        if splits > 1:
            bound = in_dim ** -0.5
            self.weight = nn.Parameter(torch.empty(splits, in_dim, out_dim).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(1, 1, splits, out_dim).uniform_(-bound, bound))
        else:
            self.layer = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, N * Din) -> (B, T, N, Dout)."""
        if self.splits == 1:
            return self.layer(x).unsqueeze(2)
        x = x.reshape(x.shape[0], x.shape[1], self.splits, self.in_dim)
        return torch.einsum("btki,kio->btko", x, self.weight) + self.bias


class Distiller(nn.Module):
    """`DistillerModel` for `expand-last` / `self-hidden` task embeddings, with s3prl's state-dict names."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.conv_spec = parse_conv_layers(cfg["extractor_conv_feature_layers"])
        self.feature_extractor = ConvFeatureExtractor(self.conv_spec, str(cfg["extractor_mode"]))
        feat_dim, dim = self.conv_spec[-1][0], int(cfg["encoder_embed_dim"])
        self.post_extract_proj = nn.Linear(feat_dim, dim) if feat_dim != dim else None
        self.encoder: nn.Module = TransformerEncoder(cfg) if int(cfg["encoder_layers"]) > 0 else nn.GELU()
        self.n_tasks = int(cfg["n_tasks"])
        if cfg["out_layer_type"] == "expand-last":
            inter = int(cfg["out_layer_inter_dim"])
            inter = inter if inter > 0 else dim
            self.output_layer: nn.Module | None = nn.Sequential(
                nn.Linear(dim, inter * self.n_tasks), nn.GELU(),
                SplitLinear(inter, self.n_tasks, int(cfg["final_dim"])))
        else:
            self.output_layer = None

    def hidden_states(self, feat: torch.Tensor, frame_mask: torch.Tensor) -> list[torch.Tensor]:
        """CNN features (B, T, C), valid-frame mask (B, T) -> s3prl's hidden-state list."""
        x = self.post_extract_proj(feat) if self.post_extract_proj is not None else feat
        x = x * frame_mask.unsqueeze(-1)  # s3prl zeroes padded frames (in place, so also in feat_final)
        if isinstance(self.encoder, TransformerEncoder):
            key_padding = None if bool(frame_mask.all()) else ~frame_mask
            final, layers = self.encoder(x, key_padding)
        else:
            final, layers = self.encoder(x), []
        if self.cfg["task_emb_type"] == "self-hidden":
            heads = [x] + layers
        else:
            assert self.output_layer is not None
            heads = list(self.output_layer(final).unbind(2))
        return [x] + layers + heads


# ----------------------------------------------------------------------------------------------- loading

def distiller_config(config: Any, file: Path | str) -> dict[str, Any]:
    """`Config["distiller"]` over `DistillerConfig`'s defaults, checked for what the native model supports."""
    if not isinstance(config, Mapping) or not isinstance(config.get("distiller"), Mapping):
        raise CheckpointFormatError(f"{file}: 'Config' has no 'distiller' section (expected s3prl's Distiller "
                                    f"pretraining config; found {type(config).__name__} with keys "
                                    f"{', '.join(map(str, config)) if isinstance(config, Mapping) else '-'})")
    cfg = {**DEFAULTS, **dict(config["distiller"])}
    problems = []
    try:
        parse_conv_layers(cfg["extractor_conv_feature_layers"])
    except (ValueError, SyntaxError) as exc:
        problems.append(f"extractor_conv_feature_layers {cfg['extractor_conv_feature_layers']!r}: {exc}")
    if cfg["extractor_mode"] not in ("default", "layer_norm"):
        problems.append(f"extractor_mode {cfg['extractor_mode']!r}")
    if cfg["attention_type"] != "original":
        problems.append(f"attention_type {cfg['attention_type']!r} (needs fairseq; only 'original' is native)")
    if str(cfg["activation_fn"]) not in ACTIVATIONS:
        problems.append(f"activation_fn {cfg['activation_fn']!r}")
    if cfg["task_emb_type"] == "expand-last":
        if cfg["out_layer_type"] != "expand-last":
            problems.append(f"out_layer_type {cfg['out_layer_type']!r} with task_emb_type 'expand-last'")
        elif int(cfg["final_dim"]) != int(cfg["encoder_embed_dim"]):
            problems.append(f"final_dim {cfg['final_dim']} != encoder_embed_dim {cfg['encoder_embed_dim']} (the "
                            "heads and the layers would have different sizes)")
    elif cfg["task_emb_type"] == "self-hidden":
        heads_ok = int(cfg["n_tasks"]) == int(cfg["encoder_layers"]) + 1
        if cfg["out_layer_type"] not in ("none", "self-hidden") or not heads_ok:
            problems.append("task_emb_type 'self-hidden' needs out_layer_type 'none' or 'self-hidden' and "
                            "n_tasks = encoder_layers + 1")
    else:
        problems.append(f"task_emb_type {cfg['task_emb_type']!r} (supported: expand-last, self-hidden)")
    if problems:
        raise CheckpointFormatError(f"{file}: unsupported Distiller configuration: " + "; ".join(problems))
    return cfg


class _StubUnpickler(pickle.Unpickler):
    """Resolves globals it cannot import (an old scheduler pickled from s3prl's former `optimizers` module)
    to inert stand-ins, so the tensors and plain values of the checkpoint can still be read."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            log.debug("stubbing unpicklable global %s.%s", module, name)
            return type(name, (), {"__module__": module, "__setstate__": lambda self, state: None,
                                   "__init__": lambda self, *a, **k: None})


_stub_pickle = types.ModuleType("superbench_stub_pickle")
_stub_pickle.Unpickler = _StubUnpickler  # type: ignore[attr-defined]
_stub_pickle.load = lambda f, **kw: _StubUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_stub_pickle.__dict__.update({k: getattr(pickle, k) for k in ("UnpicklingError", "HIGHEST_PROTOCOL", "loads")})


def _read(file: Path) -> dict[str, Any]:
    try:
        return read_checkpoint(file, EXPECTED)
    except CheckpointFormatError as exc:
        if not isinstance(exc.__cause__, (ModuleNotFoundError, AttributeError)):
            raise
        log.warning("%s pickles classes that are not importable here (%s); reading it with stand-ins for them",
                    file, exc.__cause__)
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(file, map_location="cpu", weights_only=False, pickle_module=_stub_pickle)
        except Exception:
            raise exc from None
        if not isinstance(obj, Mapping):
            raise exc from None
        return dict(obj)


def read_distiller_checkpoint(file: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model config, `Distiller` state dict) of an s3prl Distiller checkpoint."""
    obj = _read(file)
    missing = [k for k in ("Distiller", "Config") if k not in obj]
    if missing:
        guess = guess_format(obj)
        raise CheckpointFormatError(
            f"{file}: expected {EXPECTED}, but it has no {', '.join(map(repr, missing))} (top-level keys: "
            f"{', '.join(sorted(map(str, obj))[:8]) or 'none'})" + (f"; it looks like {guess}" if guess else ""))
    weights = obj["Distiller"]
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointFormatError(f"{file}: 'Distiller' is not a state dict of tensors")
    return distiller_config(obj["Config"], file), dict(weights)


class DistillerUpstream(Upstream):
    """DistilHuBERT-style Distiller: projected CNN features, each layer, each prediction head; 50 Hz."""

    def __init__(self, name: str, model: Distiller, source: str = "") -> None:
        super().__init__()
        self.name = name
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.source = source
        cfg = model.cfg
        self.hidden_size = int(cfg["encoder_embed_dim"])
        layers = int(cfg["encoder_layers"])
        heads = layers + 1 if cfg["task_emb_type"] == "self-hidden" else int(cfg["n_tasks"])
        self.num_layers = 1 + layers + heads
        self.receptive_field, self.downsample_rate = conv_geometry([k for _, k, _ in model.conv_spec],
                                                                   [s for _, _, s in model.conv_spec])
        self.per_utterance_cnn = cfg["extractor_mode"] == "default"

    def config_dict(self) -> dict[str, Any]:
        keys = ("extractor_mode", "extractor_conv_feature_layers", "encoder_layers", "encoder_attention_heads",
                "layer_norm_first", "activation_fn", "n_tasks", "task_emb_type", "conv_pos", "conv_pos_groups")
        return {**super().config_dict(), "family": "distiller", "normalize": False,
                **{k: self.model.cfg.get(k) for k in keys}}

    def _cnn(self, wavs: torch.Tensor, wav_lengths: torch.Tensor, frames: int) -> torch.Tensor:
        extractor = self.model.feature_extractor
        if not self.per_utterance_cnn:
            return extractor(wavs).transpose(1, 2)[:, :frames]
        out = [extractor(wav[:n].unsqueeze(0))[0].transpose(0, 1) for wav, n in zip(wavs, wav_lengths.tolist())]
        return nn.utils.rnn.pad_sequence(out, batch_first=True)

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        frame_lengths = self.num_frames(wav_lengths)
        device = wavs.device
        wavs = wavs[:, : int(wav_lengths.max())]
        feat = self._cnn(wavs, wav_lengths, int(frame_lengths.max()))
        if feat.shape[1] != int(frame_lengths.max()):
            raise RuntimeError(f"{self.name}: CNN gave {feat.shape[1]} frames, the frame rule says "
                               f"{int(frame_lengths.max())}")
        frame_mask = torch.arange(feat.shape[1], device=device).unsqueeze(0) < frame_lengths.to(device).unsqueeze(1)
        hidden = self.model.hidden_states(feat, frame_mask)
        keep = frame_mask.unsqueeze(-1)
        return [(h * keep).float().contiguous() for h in hidden], frame_lengths


def load_distiller(path: str | Path | None = None, published: PublishedCheckpoint = DISTILHUBERT) -> DistillerUpstream:
    """Build the Distiller from the checkpoint's `Config` and load its `Distiller` weights."""
    file = resolve_checkpoint(published, path)
    cfg, weights = read_distiller_checkpoint(file)
    model = Distiller(cfg)
    load_weights(model, weights, file, "s3prl's DistillerModel")
    return DistillerUpstream(published.name, model, source=str(file))


def write_random_checkpoint(path: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """A tiny random-init Distiller checkpoint in s3prl's pretraining format (loadable by `distiller_local`)."""
    distiller = {**TINY_DISTILLER, **overrides}
    config = {"distiller": distiller, "teacher": {"model": "hubert_base", "n_layers": 12},
              "task": {"sequence_length": 250000}, "audio": {"target_level": None}}
    with seeded(seed):
        model = Distiller(distiller_config(config, path))
        for name, p in model.named_parameters():  # norms start at 1/0 and biases at 0: make every weight count
            if p.dim() == 1 or name.endswith("weight_g"):
                p.data.add_(0.1 * torch.randn_like(p))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"Distiller": model.state_dict(), "Config": config, "Step": 0,
                "Args": argparse.Namespace(upstream="distiller", config=None)}, path)
    return path


FACTORIES: dict[str, Callable[..., Upstream]] = {"distilhubert": published_factory(
    "distilhubert", DISTILHUBERT, lambda file: load_distiller(file, DISTILHUBERT),
    family="distiller (distilled HuBERT)", layers=6, hidden_size=768, write_random_checkpoint=write_random_checkpoint)}

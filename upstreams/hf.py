"""HuBERT / wav2vec 2.0 / WavLM / data2vec upstreams through Hugging Face transformers.

Every hidden state is returned: the projected CNN features as they enter the transformer,
then the output of each transformer layer (13 for Base, 25 for Large), with layerdrop and
time masking off and the model in eval mode.

Padding invariance (a padded batch gives the same frames as each utterance alone):

* Base checkpoints use `feat_extract_norm == "group"`: the first convolution's GroupNorm
  normalises over time, so zero padding changes every frame. The CNN therefore runs per
  utterance on the unpadded audio; the frames are then padded and the projection and
  transformer run as one batch with a frame-level attention mask (padded frames are zeroed
  before the positional convolution, which is what a lone utterance's zero padding sees).
* data2vec's positional embedding is a stack of convolutions with LayerNorm in between, so
  padding leaks into valid frames after the first layer; its transformer also runs per
  utterance (likewise any checkpoint with `conv_pos_batch_norm`).
* Waveforms are normalised per utterance over valid samples only (s3prl's
  `F.layer_norm(wav, wav.shape)`) when normalisation is on: an explicit `normalize=` keyword
  wins, else the checkpoint's `preprocessor_config.json` `do_normalize`, else the family
  default s3prl uses (off for HuBERT/wav2vec 2.0/WavLM Base, on for Large and data2vec).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from superbench.upstream import Upstream, UpstreamFactory, UpstreamInfo

log = logging.getLogger(__name__)

FAMILY_CLASSES = {
    "hubert": ("HubertConfig", "HubertModel"),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}

# Config overrides that make a checkpoint a deterministic feature extractor.
FROZEN_OVERRIDES = {"layerdrop": 0.0, "mask_time_prob": 0.0, "mask_feature_prob": 0.0}


@dataclass(frozen=True)
class HFSpec:
    """What a built-in name stands for."""

    name: str
    family: str
    hub_id: str | None = None  # None: random initialisation from `random_config`
    normalize: bool = False  # family default when the checkpoint does not say
    random_config: dict[str, Any] | None = None
    seed: int = 0
    description: str = ""

    def info(self) -> UpstreamInfo:
        """Listing metadata without building the model (sizes come from the config class)."""
        if self.random_config is not None:
            config_cls, _ = _transformers_classes(self.family)
            cfg = config_cls(**self.random_config)
            layers, hidden = cfg.num_hidden_layers + 1, cfg.hidden_size
        else:  # the published checkpoints: Base 12 x 768, Large 24 x 1024
            layers, hidden = (25, 1024) if self.name.endswith("-large") else (13, 768)
        return UpstreamInfo(family=self.family, layers=layers, hidden_size=hidden,
                            source=self.hub_id or "random init", description=self.description)


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
TINY_DATA2VEC = {**TINY, "num_conv_pos_embeddings": 2, "conv_pos_kernel_size": 5}

SPECS: dict[str, HFSpec] = {s.name: s for s in [
    HFSpec("hubert", "hubert", "facebook/hubert-base-ls960", False, description="HuBERT Base (LS-960)"),
    HFSpec("hubert-large", "hubert", "facebook/hubert-large-ll60k", True, description="HuBERT Large (LL-60k)"),
    HFSpec("wav2vec2", "wav2vec2", "facebook/wav2vec2-base", False, description="wav2vec 2.0 Base (LS-960)"),
    HFSpec("wav2vec2-large", "wav2vec2", "facebook/wav2vec2-large-lv60", True,
           description="wav2vec 2.0 Large (LV-60)"),
    HFSpec("wavlm", "wavlm", "microsoft/wavlm-base", False, description="WavLM Base"),
    HFSpec("wavlm-large", "wavlm", "microsoft/wavlm-large", True, description="WavLM Large"),
    HFSpec("data2vec", "data2vec", "facebook/data2vec-audio-base", True, description="data2vec Audio Base"),
    HFSpec("data2vec-large", "data2vec", "facebook/data2vec-audio-large", True,
           description="data2vec Audio Large"),
    HFSpec("hubert-tiny-random", "hubert", None, False, TINY, description="tiny random HuBERT (tests)"),
    HFSpec("wav2vec2-tiny-random", "wav2vec2", None, False, TINY, description="tiny random wav2vec 2.0 (tests)"),
    HFSpec("wavlm-tiny-random", "wavlm", None, False, TINY, description="tiny random WavLM (tests)"),
    HFSpec("data2vec-tiny-random", "data2vec", None, True, TINY_DATA2VEC,
           description="tiny random data2vec (tests)"),
    HFSpec("hubert-base-random", "hubert", None, False, {},
           description="HuBERT Base architecture, random weights (benchmarks)"),
]}


class WeightsNotFoundError(FileNotFoundError):
    """Checkpoint files are neither local nor downloadable; the message says how to get them."""


def _transformers_classes(family: str) -> tuple[type, type]:
    import transformers

    config_name, model_name = FAMILY_CLASSES[family]
    return getattr(transformers, config_name), getattr(transformers, model_name)


def conv_geometry(kernels: Any, strides: Any) -> tuple[int, int]:
    """(receptive_field, downsample_rate) in samples of a stack of unpadded 1-D convolutions."""
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (int(k) - 1) * jump
        jump *= int(s)
    return field, jump


class HFUpstream(Upstream):
    """A transformers speech encoder exposing every hidden state, padding-invariant."""

    def __init__(self, name: str, model: torch.nn.Module, family: str, normalize: bool,
                 source: str = "") -> None:
        super().__init__()
        self.name = name
        self.family = family
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.normalize = bool(normalize)
        self.source = source
        cfg = model.config
        self.hidden_size = int(cfg.hidden_size)
        self.num_layers = int(cfg.num_hidden_layers) + 1
        self.receptive_field, self.downsample_rate = conv_geometry(cfg.conv_kernel, cfg.conv_stride)
        self.per_utterance_cnn = getattr(cfg, "feat_extract_norm", "layer") == "group"
        self.per_utterance_encoder = family == "data2vec" or bool(getattr(cfg, "conv_pos_batch_norm", False))

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "family": self.family, "normalize": self.normalize,
                "architecture": type(self.model).__name__}

    # ------------------------------------------------------------------ forward
    def _cnn(self, wavs: torch.Tensor, wav_lengths: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Padded (B, T, C) conv features; each utterance's frames depend only on its own samples."""
        extractor = self.model.feature_extractor
        if not self.per_utterance_cnn:
            return extractor(wavs).transpose(1, 2)
        frames = []
        for wav, n in zip(wavs, wav_lengths.tolist()):
            frames.append(extractor(wav[:n].unsqueeze(0))[0].transpose(0, 1))
        out = torch.zeros(len(frames), int(frame_lengths.max()), frames[0].shape[1], dtype=frames[0].dtype,
                          device=frames[0].device)
        for i, f in enumerate(frames):
            out[i, : f.shape[0]] = f
        return out

    def _encode(self, features: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Projection + transformer; returns the input of every layer and the final output."""
        projected = self.model.feature_projection(features)
        if isinstance(projected, tuple):  # wav2vec2/WavLM/data2vec also return the normed CNN features
            projected = projected[0]
        captured: list[torch.Tensor] = []

        def grab(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])

        handles = [layer.register_forward_pre_hook(grab, with_kwargs=True) for layer in self.model.encoder.layers]
        try:
            with warnings.catch_warnings():  # WavLM's torch attention mixes bool/float masks
                warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
                out = self.model.encoder(projected, attention_mask=mask)
        finally:
            for h in handles:
                h.remove()
        last = out[0] if isinstance(out, tuple) else out.last_hidden_state
        return captured + [last]

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        frame_lengths = self.num_frames(wav_lengths)
        wavs = wavs[:, : int(wav_lengths.max())]  # surplus padding would only add frames to drop
        device = wavs.device  # the model's; lengths may come on the CPU (the upstream contract)
        valid = torch.arange(wavs.shape[1], device=device).unsqueeze(0) < wav_lengths.to(device).unsqueeze(1)
        wavs = wavs * valid
        if self.normalize:
            wavs = wavs.clone()
            for i, n in enumerate(wav_lengths.tolist()):
                wavs[i, :n] = F.layer_norm(wavs[i, :n], (n,))
        features = self._cnn(wavs, wav_lengths, frame_lengths)
        if features.shape[1] != int(frame_lengths.max()):
            raise RuntimeError(f"{self.name}: CNN gave {features.shape[1]} frames, the frame rule "
                               f"says {int(frame_lengths.max())}; is the conv stack non-standard?")
        frame_mask = (torch.arange(features.shape[1], device=device).unsqueeze(0)
                      < frame_lengths.to(device).unsqueeze(1))
        if self.per_utterance_encoder:
            per_utt = [self._encode(features[i: i + 1, :n], None) for i, n in enumerate(frame_lengths.tolist())]
            hidden = []
            for layer in range(len(per_utt[0])):
                h = torch.zeros(len(per_utt), features.shape[1], self.hidden_size, device=device,
                                dtype=per_utt[0][layer].dtype)
                for i, states in enumerate(per_utt):
                    h[i, : states[layer].shape[1]] = states[layer][0]
                hidden.append(h)
        else:
            hidden = self._encode(features, frame_mask if not bool(frame_mask.all()) else None)
        if len(hidden) != self.num_layers:
            raise RuntimeError(f"{self.name}: expected {self.num_layers} hidden states, got {len(hidden)}")
        keep = frame_mask.unsqueeze(-1)
        return [(h * keep).float().contiguous() for h in hidden], frame_lengths


# ---------------------------------------------------------------------- loading

def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe so a machine without internet fails in seconds instead of retrying."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _missing_weights_message(name: str, hub_id: str, reason: str) -> str:
    return (f"upstream {name!r}: the weights of {hub_id} are not available ({reason}). "
            f"On a machine with internet, run `hf download {hub_id} --local-dir DIR` "
            f"(or `python -c \"from transformers import AutoModel; "
            f"AutoModel.from_pretrained('{hub_id}').save_pretrained('DIR')\"`), copy DIR here and pass "
            f"`--upstream-path DIR` or the spec `{name}=DIR`.")


def _read_do_normalize(source: str, local_only: bool) -> bool | None:
    """`do_normalize` from the checkpoint's feature-extractor config, if it has one."""
    path = Path(source) / "preprocessor_config.json"
    if not path.is_file():
        try:
            from transformers.utils import cached_file

            found = cached_file(source, "preprocessor_config.json", local_files_only=local_only,
                                _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except Exception:  # no cache entry, bad repo id...: fall back to the family default
            found = None
        if not found:
            return None
        path = Path(found)
    try:
        value = json.loads(path.read_text()).get("do_normalize")
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    return None if value is None else bool(value)


def _from_pretrained(spec: HFSpec, source: str, local_only: bool) -> torch.nn.Module:
    _, model_cls = _transformers_classes(spec.family)
    return model_cls.from_pretrained(source, local_files_only=local_only, **FROZEN_OVERRIDES)


def build_hf_upstream(spec: HFSpec, path: str | None = None, normalize: bool | None = None,
                      seed: int | None = None) -> HFUpstream:
    """Build `spec` from a local directory, the local HF cache / Hub, or a seeded random init."""
    if path is not None:
        directory = Path(path).expanduser()
        if not directory.exists():
            fetch = f" (fetch it with `hf download {spec.hub_id} --local-dir {directory}`)" if spec.hub_id else ""
            raise WeightsNotFoundError(f"upstream {spec.name!r}: checkpoint directory {directory} does not exist"
                                       f"{fetch}")
        if not (directory / "config.json").is_file():
            raise WeightsNotFoundError(
                f"upstream {spec.name!r}: {directory} is not a checkpoint directory (no config.json); "
                f"expected what `save_pretrained` or `hf download --local-dir` writes")
        model = _from_pretrained(spec, str(directory), local_only=True)
        checkpoint_norm = _read_do_normalize(str(directory), local_only=True)
        source = str(directory)
    elif spec.hub_id is not None:
        try:
            model = _from_pretrained(spec, spec.hub_id, local_only=True)
            local_only = True
        except (OSError, ValueError) as exc:
            if _offline():
                raise WeightsNotFoundError(_missing_weights_message(
                    spec.name, spec.hub_id, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")) from exc
            if not _hub_reachable():
                raise WeightsNotFoundError(_missing_weights_message(
                    spec.name, spec.hub_id, "not in the local Hugging Face cache and the Hub is unreachable")) from exc
            log.info("downloading %s from the Hugging Face Hub", spec.hub_id)
            model = _from_pretrained(spec, spec.hub_id, local_only=False)
            local_only = False
        checkpoint_norm = _read_do_normalize(spec.hub_id, local_only=local_only)
        source = spec.hub_id
    else:
        config_cls, model_cls = _transformers_classes(spec.family)
        config = config_cls(**{**(spec.random_config or {}), **FROZEN_OVERRIDES})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed if seed is None else seed)
            model = model_cls(config)
        checkpoint_norm = None
        source = f"random init (seed {spec.seed if seed is None else seed})"
    if normalize is None:
        normalize = spec.normalize if checkpoint_norm is None else checkpoint_norm
    log.debug("%s: loaded from %s, waveform normalisation %s", spec.name, source, "on" if normalize else "off")
    return HFUpstream(spec.name, model, spec.family, normalize, source=source)


def _make_factory(spec: HFSpec) -> UpstreamFactory:
    def build(path: str | None = None, **kwargs: Any) -> HFUpstream:
        return build_hf_upstream(spec, path=path, **kwargs)

    # `info` is computed when listed (sizes come from the transformers config class)
    return UpstreamFactory(build, info=spec.info, name=spec.name.replace("-", "_"),
                           doc=f"{spec.description} ({spec.hub_id or 'random initialisation'}).")


FACTORIES = {spec.name: _make_factory(spec) for spec in SPECS.values()}

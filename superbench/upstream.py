"""The upstream contract, in three lines:

    An upstream has `name`, `sample_rate` (16000), `num_layers`, `hidden_size`,
    `downsample_rate` and `receptive_field` (both in input samples), and
    `forward(wavs (B, S) float32, wav_lengths (B,) int64)
        -> (list of num_layers tensors (B, T, hidden_size), frame_lengths (B,))`.

Frame counts follow one rule for every upstream (it is Kaldi's snip_edges rule
and also what the wav2vec 2.0 convolution stack computes):

    frames(n) = (n - receptive_field) // downsample_rate + 1,   n >= receptive_field

Padding must not matter: the frames inside `frame_lengths` must equal what the
upstream gives for the same utterance alone (within float tolerance).
`forward` runs under `torch.inference_mode`: upstreams are frozen.
`superbench.validate.validate_upstream` checks all of this on synthetic audio.

Subclassing `Upstream` is the easy way, not a requirement: `as_upstream` wraps any object
with `num_layers`, `hidden_size` and `forward` (HEAR-style), fingerprints its state dict and
gives the optional attributes their defaults (`OPTIONAL_ATTRIBUTES`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from superbench.registry import Registry, load_object_from_file
from superbench.torchaudio_compat import guard_broken_torchaudio

# Before any upstream (built-in or plugin) imports transformers: a torchaudio that is installed but
# cannot load (PyPI's build beside a CPU-only torch) must not take those upstreams down with it.
# Here rather than in the package: only code that loads models pays for importing torchaudio.
guard_broken_torchaudio()

log = logging.getLogger(__name__)


#: Variant options every upstream offers, handled by `Upstream.variant` around `specific_variant`.
GENERIC_OPTIONS = ("gain_db",)

#: How `load_upstream` built each upstream it returned (see `Upstream.load_spec`); weak, so the
#: entry goes with the upstream.
_LOAD_SPECS: weakref.WeakKeyDictionary[torch.nn.Module, tuple] = weakref.WeakKeyDictionary()


class Upstream(torch.nn.Module):
    """Base class for upstreams; subclasses implement `_forward` (padded batch in, all layers out)
    and may override `specific_variant` (their own recipe options)."""

    name: str = "upstream"
    sample_rate: int = 16000
    num_layers: int = 1
    hidden_size: int = 0
    downsample_rate: int = 160
    receptive_field: int = 400
    #: The local checkpoint directory or file the weights were loaded from ("" for a built-in or hub model),
    #: kept in every record, so weights from `NAME=DIR` never pass for the published model of that name.
    source: str = ""

    def num_frames(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        """The documented frame-count rule; short inputs are the caller's error (see audio.check_waveform)."""
        wav_lengths = torch.as_tensor(wav_lengths, dtype=torch.long)
        frames = torch.div(wav_lengths - self.receptive_field, self.downsample_rate,
                           rounding_mode="floor") + 1
        return frames.clamp_min(0)

    def forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.inference_mode():
            wavs = torch.as_tensor(wavs, dtype=torch.float32)
            if wavs.dim() != 2:
                raise ValueError(f"wavs must be (batch, samples), got shape {tuple(wavs.shape)}")
            wav_lengths = torch.as_tensor(wav_lengths, dtype=torch.long)
            short = (wav_lengths < self.receptive_field).nonzero().flatten().tolist()
            if short:
                raise ValueError(
                    f"{self.name}: utterance(s) at batch index {short} shorter than the receptive "
                    f"field ({self.receptive_field} samples)")
            return self._forward(wavs, wav_lengths)

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def variant(self, **options: Any) -> Upstream:
        """The upstream a recipe asks for (its `upstream:` section, e.g. `cmvn=False`).

        The generic options (`GENERIC_OPTIONS`: `gain_db`, the waveform scaled by 10 ** (gain_db / 20)
        before `forward`, see `GainUpstream`) are handled here for every upstream; the rest go to
        `specific_variant`. Override `specific_variant`, not this, to offer variants.
        """
        gain_db = options.pop("gain_db", None)
        return GainUpstream.wrap(self.specific_variant(**options), gain_db)

    def specific_variant(self, **options: Any) -> Upstream:
        """This upstream's own variants (never sees `GENERIC_OPTIONS`); by default none.

        Options this upstream does not offer leave it unchanged: recipes state what a task
        wants from the upstreams that have the option.
        """
        return self

    @property
    def load_spec(self) -> tuple | None:
        """`(spec, path, kwargs)` that `load_upstream` built this upstream from, or None when it was built
        otherwise: how to build it again elsewhere (a Ray worker) when it cannot be pickled
        (weight-norm parametrisations, as in wav2vec 2.0 / HuBERT's positional convolution)."""
        return _LOAD_SPECS.get(self)

    def config_dict(self) -> dict[str, Any]:
        """What, besides the weights, makes the features what they are (part of the fingerprint)."""
        return {"name": self.name, "num_layers": self.num_layers, "hidden_size": self.hidden_size,
                "downsample_rate": self.downsample_rate, "receptive_field": self.receptive_field}

    def fingerprint(self) -> str:
        """Content hash of config and weights: cache keys and result provenance use it."""
        h = hashlib.sha256(json.dumps(self.config_dict(), sort_keys=True, default=str).encode())
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def extract(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pad a list of 1-D waveforms and run `forward`; a convenience for callers and tests."""
        batch, lengths = pad_batch(wavs)
        return self(batch, lengths)


class GainUpstream(Upstream):
    """An upstream run on its input scaled by a gain in decibels (s3prl's Speech Commands loader applies
    sox `gain -3.0` to every waveform). Its fingerprint differs from the inner upstream's (the gain is in
    `config_dict`), so the audio-keyed feature cache and the records tell the two apart."""

    def __init__(self, inner: Upstream, gain_db: float) -> None:
        super().__init__()
        if not math.isfinite(gain_db):
            raise ValueError(f"gain_db must be a finite number of decibels, got {gain_db!r}")
        self.inner, self.gain_db = inner, float(gain_db)
        self.scale = 10.0 ** (self.gain_db / 20.0)
        for attr in ("name", "sample_rate", "num_layers", "hidden_size", "downsample_rate", "receptive_field"):
            setattr(self, attr, getattr(inner, attr))

    @classmethod
    def wrap(cls, upstream: Upstream, gain_db: float | None) -> Upstream:
        """`upstream` itself for no gain (None or 0 dB), else `upstream` behind that gain."""
        if gain_db is None or float(gain_db) == 0.0:
            return upstream
        return cls(upstream, float(gain_db))

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.inner(wavs * self.scale, wav_lengths)

    def num_frames(self, wav_lengths: torch.Tensor) -> torch.Tensor:
        return self.inner.num_frames(wav_lengths)

    def variant(self, **options: Any) -> Upstream:
        """The inner upstream's variant behind this gain, or behind the `gain_db` given (it replaces
        this one: a recipe's gain is relative to the model's input, not to another variant's)."""
        gain_db = options.pop("gain_db", self.gain_db)
        inner = self.inner.variant(**options)
        if inner is self.inner and gain_db is not None and float(gain_db) == self.gain_db:
            return self
        return GainUpstream.wrap(inner, gain_db)

    def config_dict(self) -> dict[str, Any]:
        return {**self.inner.config_dict(), "gain_db": self.gain_db}


def pad_batch(wavs: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D waveforms into (B, S) plus their lengths."""
    tensors = [torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in wavs]
    lengths = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
    batch = torch.zeros(len(tensors), int(lengths.max()) if len(tensors) else 0)
    for i, t in enumerate(tensors):
        batch[i, : t.shape[0]] = t
    return batch, lengths


# --------------------------------------------------------------------------- plain objects

#: What an object must have to be an upstream without subclassing `Upstream`.
REQUIRED_ATTRIBUTES = ("num_layers", "hidden_size")
#: Attributes an object may leave out, and the value it then gets (`name` defaults to its class name).
OPTIONAL_ATTRIBUTES = {"sample_rate": Upstream.sample_rate, "downsample_rate": Upstream.downsample_rate,
                       "receptive_field": Upstream.receptive_field}


class ContractUpstream(Upstream):
    """An object that keeps the contract without subclassing `Upstream`, made into one.

    The object's `forward(wavs, wav_lengths)` runs under `Upstream.forward` (inference mode, the
    too-short check); an `nn.Module` is a submodule, so its state dict is in the fingerprint.
    """

    def __init__(self, model: Any, defaulted: Sequence[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.name = str(getattr(model, "name", None) or type(model).__name__)
        for attr in (*REQUIRED_ATTRIBUTES, *OPTIONAL_ATTRIBUTES):
            value = getattr(model, attr, None)
            setattr(self, attr, OPTIONAL_ATTRIBUTES[attr] if value is None else value)
        #: Optional attributes the object does not declare (so they carry the defaults).
        self.defaulted = tuple(defaulted)
        source = getattr(model, "source", None)  # the plain-object contract: where its weights came from, if said
        self.source = str(source) if isinstance(source, (str, Path)) else ""

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        run = self.model if isinstance(self.model, torch.nn.Module) else self.model.forward  # Modules: hooks too
        hidden, frame_lengths = run(wavs, wav_lengths)
        return list(hidden), torch.as_tensor(frame_lengths)

    def specific_variant(self, **options: Any) -> Upstream:
        """The object's own `variant(**options)` (optional in the plain-object contract), as an upstream."""
        make = getattr(self.model, "variant", None)
        if not callable(make):
            return self
        other = make(**options)
        return self if other is self.model else as_upstream(other)

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "class": type(self.model).__qualname__}


def as_upstream(obj: Any, what: str | None = None) -> Upstream:
    """`obj` as an `Upstream`: itself if it subclasses one, wrapped if it keeps the contract,
    else a one-line ValueError (said at load, not as a traceback in the middle of a run)."""
    name = getattr(obj, "name", None)
    if (isinstance(obj, Upstream) or name is not None) and not (isinstance(name, str) and name.strip()):
        raise ValueError(f"{what or type(obj).__name__}: upstream name is {name!r}, not a non-empty string "
                         f"(the name identifies its results)")
    if isinstance(obj, Upstream):
        if type(obj).variant is not Upstream.variant and not isinstance(obj, GainUpstream):
            log.warning("%s overrides Upstream.variant: recipes' generic options (%s) reach it unhandled; "
                        "override specific_variant instead", what or type(obj).__name__, ", ".join(GENERIC_OPTIONS))
        return obj
    what = what or type(obj).__name__
    missing = [a for a in REQUIRED_ATTRIBUTES if getattr(obj, a, None) is None]
    if not callable(getattr(obj, "forward", None)):
        missing.append("forward(wavs, wav_lengths)")
    if missing:
        raise ValueError(f"{what} is not an upstream: it has no {', '.join(missing)}; subclass "
                         f"superbench.upstream.Upstream, or give it num_layers, hidden_size and "
                         f"forward(wavs, wav_lengths) -> (list of layers, frame_lengths)")
    defaulted = [a for a in OPTIONAL_ATTRIBUTES if getattr(obj, a, None) is None]
    if defaulted:
        log.info("%s does not declare %s; using %s", what, ", ".join(defaulted),
                 ", ".join(f"{a}={OPTIONAL_ATTRIBUTES[a]}" for a in defaulted))
    if not isinstance(obj, torch.nn.Module):
        log.warning("%s is not a torch.nn.Module: its fingerprint covers its attributes only, not its weights",
                    what)
    return ContractUpstream(obj, defaulted)


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class UpstreamInfo:
    """What `superbench upstreams list` shows for a name, known without building the model."""

    family: str = ""  # "" = not declared (the listing shows "-", or "plugin" for a plugin's entry)
    layers: int | str = "?"  # hidden layers the upstream returns (a text such as "per model" when it varies)
    hidden_size: int | str = "?"
    source: str = ""  # where the weights come from (a URL, a hub id, "computed"); "" = the registering package
    description: str = ""


class UpstreamFactory:
    """A registry entry that builds an upstream and can say what it is before building it.

    Calling it builds the upstream (`factory(path=None, **kw)`, or `factory(ARG, path=...)` for a
    parametrised family). Members, all optional:
      `info`: an `UpstreamInfo`, or a zero-argument callable returning one (computed when listed,
      e.g. sizes read from a config class); default: an `UpstreamInfo()` of unknowns;
      `write_random_checkpoint(path, seed=0) -> Path`: writes a tiny random-init checkpoint in the
      format the published weights come in (`superbench upstreams random-checkpoint`); default None.
    Any other callable (a class, a function) may be registered too: `describe_factory` reads a class's
    `num_layers` / `hidden_size` when it declares them.
    """

    def __init__(self, build: Callable[..., Any], info: UpstreamInfo | Callable[[], UpstreamInfo] | None = None,
                 write_random_checkpoint: Callable[..., Any] | None = None, name: str | None = None,
                 doc: str | None = None) -> None:
        self.build = build
        self._info = info
        self.write_random_checkpoint = write_random_checkpoint
        self.__name__ = name or getattr(build, "__name__", type(self).__name__)
        self.__doc__ = doc if doc is not None else build.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.build(*args, **kwargs)

    @property
    def info(self) -> UpstreamInfo:
        """The listing metadata (see the class docstring)."""
        if self._info is None:
            return UpstreamInfo()
        return self._info if isinstance(self._info, UpstreamInfo) else self._info()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__})"


def describe_factory(factory: Any) -> UpstreamInfo:
    """What a registered entry says about itself: an `UpstreamFactory`'s `info`, else the contract sizes a
    class declares (`num_layers`, `hidden_size` as class attributes), else unknowns."""
    if isinstance(factory, UpstreamFactory):
        return factory.info
    sizes = {"layers": getattr(factory, "num_layers", None), "hidden_size": getattr(factory, "hidden_size", None)}
    return UpstreamInfo(**{k: v for k, v in sizes.items() if isinstance(v, int) and v})


#: Upstream factories by name, `(path=None, **kw) -> Upstream`; a parametrised family (e.g. `s3prl`)
#: takes its argument first: `s3prl:HUBNAME` calls `UPSTREAMS.get("s3prl")("HUBNAME", path=...)`.
UPSTREAMS: Registry[Callable[..., Upstream]] = Registry("upstream", entry_point_group="superbench.upstreams")


def load_upstream(spec: str, path: str | None = None, **kwargs: Any) -> Upstream:
    """Build an upstream from a spec.

    `NAME` (built-in or entry point), `NAME=DIR` (same family, weights from a local
    directory), `path/to/file.py:ClassName` (an unpackaged plugin) or `FAMILY:ARG`
    for a parametrised family such as `s3prl:HUBNAME`. What it builds may be any object that keeps
    the contract (see `as_upstream`).
    """
    given = (spec, path, dict(kwargs))
    if "=" in spec and path is None:
        spec, path = spec.split("=", 1)
    if ":" in spec:
        head, arg = spec.split(":", 1)
        if head.endswith(".py"):
            factory = load_object_from_file(spec)
            upstream = as_upstream(factory(path=path, **kwargs) if path else factory(**kwargs), spec)
        else:
            upstream = as_upstream(UPSTREAMS.get(head)(arg, path=path, **kwargs), spec)
    else:
        factory = UPSTREAMS.get(spec)
        upstream = as_upstream(factory(path=path, **kwargs) if path else factory(**kwargs), spec)
    _LOAD_SPECS[upstream] = given
    return upstream

"""Typed, versioned recipes: every hyper-parameter of a run, validated when loaded.

A recipe file (YAML) has a header and named profiles; each profile has three
sections, each loaded into a dataclass so a typo fails before any work, with a
did-you-mean:

    version: "1"                      # recorded in every result; bump it when numbers may change
    task: ks
    reference: s3prl downstream/speech_commands/config.yaml
    deviations: [...]                 # every difference from SUPERB, in words
    profiles:
      superb:                         # s3prl's configuration; also `fast` (demo) and `ci` (smoke)
        description: ...
        upstream: {cmvn: false}       # UpstreamOptions: variants an upstream may offer (cmvn, gain_db)
        head: {proj_dim: 256}         # the task kind's head config
        train: {steps: 200000, batch_size: 32, lr: 1.0e-4, eval_interval: 5000, ...}   # TrainConfig

Overrides (`Recipe.with_overrides`) name `section.key` (or a bare key that only one
section has); the profile of an overridden recipe carries a digest of them, so such
numbers are never mistaken for the recipe's own.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

#: Learning-rate schedules `TrainConfig.scheduler` may name (s3prl's `scheduler.name`, or none at all).
SCHEDULERS = ("none", "linear_schedule_with_warmup", "sqrt_decay_schedule_with_warmup")


@dataclass(frozen=True)
class TrainConfig:
    """The SUPERB protocol's knobs for one head (a recipe's `train` section, plus the seed of a trial)."""

    steps: int
    batch_size: int
    lr: float
    eval_interval: int
    lr_grid: tuple[float, ...] = ()  # swept on dev by the runner; empty = `lr` only
    grad_clip: float = 1.0
    grad_accum: int = 1
    balanced_sampling: bool = False  # class-balanced batches (s3prl's KS sampler)
    #: Dev metric that selects checkpoints: class-balanced accuracy (the expectation of s3prl's KS dev
    #: score on its class-balanced WeightedRandomSampler resample); test stays plain accuracy.
    balanced_dev: bool = False
    #: Learning-rate schedule per optimiser step: "none", s3prl's "linear_schedule_with_warmup" or its
    #: "sqrt_decay_schedule_with_warmup" (speech translation).
    scheduler: str = "none"
    warmup_steps: int = 0  # the schedule's num_warmup_steps
    eval_batch_size: int = 32
    #: s3prl's length bucketing (PR/ASR): batches are runs of `batch_size` consecutive utterances in
    #: descending length order, the order of those buckets reshuffled every epoch. Needs `train(lengths=...)`.
    bucketing: bool = False
    #: With bucketing, a full bucket whose longest utterance exceeds this many samples is split into two
    #: halves (s3prl's HALF_BATCHSIZE_TIME rule: 2000 for ASR, 300000 for libriphone); 0 never splits.
    bucket_halve_above: int = 0
    #: Decoupled weight decay: > 0 trains with AdamW (s3prl's `optimizer: AdamW` for SE/SS, torch's default decay
    #: 0.01), 0 with Adam (every SUPERB task). Heads trained as a stacked group use Adam: such a recipe trains
    #: its trials one at a time.
    weight_decay: float = 0.0
    seed: int = field(default=0, metadata={"recipe": False})  # from --seeds, never from a recipe

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_interval", "grad_accum", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or any(not x > 0 for x in self.lr_grid):
            raise ValueError(f"lr and lr_grid values must be > 0 (lr {self.lr!r}, lr_grid {list(self.lr_grid)})")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if self.warmup_steps and self.scheduler == "none":
            raise ValueError(f"warmup_steps={self.warmup_steps} needs a scheduler (e.g. linear_schedule_with_warmup)")
        if self.bucketing and self.balanced_sampling:
            raise ValueError("bucketing and balanced_sampling exclude each other "
                             "(length buckets vs class-balanced draws)")
        if not 0 <= self.weight_decay < 1:
            raise ValueError(f"weight_decay must be in [0, 1), got {self.weight_decay!r}")
        halve = self.bucket_halve_above
        if isinstance(halve, bool) or not isinstance(halve, int) or halve < 0:
            raise ValueError(f"bucket_halve_above must be a non-negative integer, got {halve!r}")
        if halve and not self.bucketing:
            raise ValueError(f"bucket_halve_above={halve} needs bucketing: true")


HEADER_KEYS = ("version", "task", "reference", "deviations", "profiles")
PROFILE_KEYS = ("description", "upstream", "head", "train")
SECTIONS = ("upstream", "head", "train")


class RecipeError(ValueError):
    """A recipe file is missing, malformed, or asked for something it does not define."""


@dataclass(frozen=True)
class UpstreamOptions:
    """Variants a recipe asks of the upstream (`Upstream.variant(**options)`); None = the upstream's default.

    An upstream that does not offer an option runs unchanged: the recipe states what the task
    wants from upstreams that have it (e.g. the FBANK/MFCC baselines' per-utterance CMVN).
    """

    cmvn: bool | None = None
    #: Gain in dB on the waveform before the upstream (every upstream; e.g. -3.0 as s3prl's KS loader).
    gain_db: float | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Recipe:
    """One profile of a task's recipe."""

    task: str
    version: str
    profile: str
    upstream: UpstreamOptions
    head: Any  # the task kind's head-config dataclass
    train: TrainConfig
    description: str = ""
    reference: str = ""
    deviations: tuple[str, ...] = ()
    source: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def profile_label(self) -> str:
        """The profile as results record it: "fast", or "fast+<digest>" when overridden."""
        if not self.overrides:
            return self.profile
        digest = hashlib.sha256(json.dumps(self.overrides, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.profile}+{digest[:8]}"

    def lrs(self, lr: float | None = None, sweep: bool = True) -> list[float]:
        """Learning rates to try: a fixed one, the grid (selected on dev), or the recipe's single lr."""
        if lr is not None:
            return [float(lr)]
        if sweep and self.train.lr_grid:
            return list(self.train.lr_grid)
        return [self.train.lr]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Recipe:
        """A copy with `section.key` (or unambiguous bare `key`) values replaced, validated again."""
        if not overrides:
            return self
        sections = {name: _section_values(getattr(self, name)) for name in SECTIONS}
        resolved: dict[str, Any] = {}
        for key, value in overrides.items():
            section, _, name = key.rpartition(".")
            if not section:
                owners = [s for s in SECTIONS if name in sections[s]]
                if len(owners) != 1:
                    known = [f"{s}.{k}" for s in SECTIONS for k in sections[s]]
                    raise RecipeError(f"unknown recipe override {key!r}{_did_you_mean(key, known)}; "
                                      f"known: {', '.join(known)}")
                section = owners[0]
            if section not in sections or name not in sections[section]:
                known = [f"{s}.{k}" for s in SECTIONS for k in sections[s]]
                raise RecipeError(f"unknown recipe override {key!r}{_did_you_mean(key, known)}")
            sections[section][name] = value
            resolved[f"{section}.{name}"] = value
        where = f"{self.source} (profile {self.profile!r} with overrides)"
        return dataclasses.replace(
            self, upstream=build_section(UpstreamOptions, sections["upstream"], f"{where}: upstream"),
            head=build_section(type(self.head), sections["head"], f"{where}: head"),
            train=build_section(TrainConfig, sections["train"], f"{where}: train"),
            overrides={**self.overrides, **resolved})


def _recipe_fields(cls: type) -> list[dataclasses.Field]:
    """The fields a recipe may set (a field with metadata {"recipe": False}, like the seed, is not one)."""
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("recipe", True)]


def _section_values(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in _recipe_fields(type(section))}


def _did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a field's annotation; ints are accepted for floats, lists for tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0])
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, where) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(value)  # YAML reads "1e-4" (no dot) as a string
            except (TypeError, ValueError):
                raise RecipeError(f"{where} must be a number, got {value!r}") from None
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _refuse_unknown(where: str, keys: Iterable[str], allowed: Sequence[str], what: str = "key(s)") -> None:
    """The one "unknown key" error of recipes: the keys, a did-you-mean for each, and what is allowed."""
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        hints = "".join(_did_you_mean(k, list(allowed)) for k in unknown)
        raise RecipeError(f"{where}: unknown {what} {unknown}{hints}; allowed: {', '.join(allowed)}")


def build_section(cls: type, data: Mapping[str, Any] | None, where: str) -> Any:
    """Load a mapping into dataclass `cls`: unknown keys (did-you-mean), missing required keys and
    wrong types are a RecipeError naming `where`; the dataclass's own checks run too."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    _refuse_unknown(where, data, [f.name for f in _recipe_fields(cls)])
    required = [f.name for f in _recipe_fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise RecipeError(f"{where}: missing required key(s) {missing}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}: {exc}") from exc


def read_recipe_file(path: str | Path) -> dict[str, Any]:
    """The raw YAML of a recipe, with its header checked."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level")
    _refuse_unknown(str(path), data, HEADER_KEYS, what="top-level key(s)")
    for key in ("version", "profiles"):
        if key not in data:
            raise RecipeError(f"{path}: missing {key!r}")
    if not isinstance(data["profiles"], dict) or not data["profiles"]:
        raise RecipeError(f"{path}: 'profiles' must map profile names to settings")
    return data


def load_recipe(path: str | Path, profile: str, *, task: str, head_config: type) -> Recipe:
    """One profile of the recipe at `path`, every section validated into its dataclass."""
    data = read_recipe_file(path)
    if data.get("task", task) != task:
        raise RecipeError(f"{path}: declares task {data['task']!r}, expected {task!r}")
    profiles = data["profiles"]
    if profile not in profiles:
        raise RecipeError(f"{path}: no profile {profile!r}{_did_you_mean(profile, list(profiles))}; "
                          f"available: {', '.join(profiles)}")
    settings = profiles[profile] or {}
    where = f"{path}: profile {profile!r}"
    if not isinstance(settings, dict):
        raise RecipeError(f"{where}: expected a mapping with sections {', '.join(SECTIONS)}")
    _refuse_unknown(where, settings, PROFILE_KEYS)
    if "train" not in settings:
        raise RecipeError(f"{where}: missing the 'train' section")
    return Recipe(task=task, version=str(data["version"]), profile=profile,
                  upstream=build_section(UpstreamOptions, settings.get("upstream"), f"{where}: upstream"),
                  head=build_section(head_config, settings.get("head"), f"{where}: head"),
                  train=build_section(TrainConfig, settings["train"], f"{where}: train"),
                  description=str(settings.get("description", "")), reference=str(data.get("reference", "")),
                  deviations=tuple(str(d) for d in data.get("deviations", []) or []), source=str(path))

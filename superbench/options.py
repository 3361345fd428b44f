"""How a run is configured, in five frozen parts, each checked once when it is built.

- `RunIdentity`: what is measured (profile, seeds, layer, learning rate, recipe overrides); it decides the
  records' run keys.
- `ComputeOptions`: where and at which numerics (device, upstream precision, frame cache dtype, threads);
  precision and an int8 frame cache change the features, so they tag fingerprints and profiles
  (`feature_tags`).
- `ExecutionOptions`: how the trials run (feature cache or online, local or Ray and its resources, grouped
  trials, redoing recorded seeds).
- `RunPaths`: where files go (results, feature cache, checkpoints; None: the defaults of superbench.paths).
- `RunHooks`: what the caller sees (progress bars, the plan, a callback per record).

`RunOptions` holds one of each, every part defaulted, so `RunOptions(identity=RunIdentity(seeds=3))`
works; `RunOptions.of(seeds=3, cache_root=...)` and `opts.replace(layer="all")` take the parts' field
names flat, for scripts and tests. `--layer` is one `LayerChoice`, parsed here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union, get_args

#: Precision of the upstream forward (heads always train in float32).
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: Storage of frame caches: float16, or int8 with per-utterance/layer/channel scales.
CacheDtype = Literal["fp16", "int8"]
CACHE_DTYPES: tuple[str, ...] = get_args(CacheDtype)
#: Where trials train: this process, or Ray tasks (superbench.executors).
ExecutorName = Literal["local", "ray"]
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)

#: Most seeds one run trains (each is a full sweep); a larger count is a typo, not a plan.
MAX_SEEDS = 1000


@dataclass(frozen=True)
class LayerChoice:
    """Which upstream layer(s) a run probes: None, the learned weighted sum of all layers (the default);
    "last" or an index K, a single-layer probe; "all", one single-layer probe per layer, a record each.
    `value` is what a record, a run key and a head take (never "all": `probes` expands it)."""

    value: int | Literal["last", "all"] | None = None

    def __post_init__(self) -> None:
        value = self.value
        if value is None or value in ("last", "all"):
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"--layer must be an integer, 'last' or 'all', got {value!r}")
        if value < 0:
            raise ValueError(f"--layer {value} is out of range: a layer index is 0 or more")

    @classmethod
    def parse(cls, value: Union["LayerChoice", int, str, None]) -> "LayerChoice":
        """A LayerChoice from the command line's text ("3", "last", "all") or a library value (3, None)."""
        if isinstance(value, LayerChoice):
            return value
        if isinstance(value, str) and value not in ("last", "all"):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"--layer must be an integer, 'last' or 'all', got {value!r}") from None
        return cls(value)

    @property
    def every(self) -> bool:
        """Whether this is `all`: one probe per layer."""
        return self.value == "all"

    def probes(self, num_layers: int, upstream: str) -> list["LayerChoice"]:
        """The single probes this choice runs on an upstream of `num_layers` layers, checked against it
        (before a long extraction, not after)."""
        if self.every:
            return [LayerChoice(k) for k in range(num_layers)]
        if isinstance(self.value, int) and self.value >= num_layers:
            raise ValueError(f"--layer {self.value} is out of range: upstream {upstream} has {num_layers} layers, "
                             f"0..{num_layers - 1} (or use --layer last / --layer all)")
        return [self]


def check_choice(option: str, value: object, choices: tuple[str, ...]) -> None:
    """ValueError naming the option and its choices when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{option} {value!r}: use one of {', '.join(choices)}")


def _positive_or_none(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


@dataclass(frozen=True)
class RunIdentity:
    """What a run measures: each of these is part of the records' run keys (or of their profile)."""

    profile: str = "superb"
    seeds: int = 1
    #: Single-layer probe instead of the weighted sum (a LayerChoice; 3, "last" or "all" are parsed into one).
    layer: LayerChoice = field(default_factory=LayerChoice)
    lr: float | None = None  # fixed learning rate (no sweep)
    lr_sweep: bool = True
    #: Recipe values to override ({"train.steps": 50}; a bare key names the one section that has it).
    #: The record's profile then reads "<profile>+<digest>", so such numbers are never the recipe's.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: Where the upstream's weights were loaded from (a local directory or file), recorded as `upstream_source`;
    #: "" takes the upstream's own `source` attribute where it has one.
    upstream_source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", LayerChoice.parse(self.layer))
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or not 1 <= self.seeds <= MAX_SEEDS:
            raise ValueError(f"seeds must be an integer in 1..{MAX_SEEDS}, got {self.seeds!r}")


@dataclass(frozen=True)
class ComputeOptions:
    """Where the upstream and the heads run and at which numerics."""

    #: auto|cpu|cuda|cuda:N|mps (superbench.device), checked against the machine before work.
    device: str = "auto"
    #: Precision of the upstream forward; not fp32: other features, so fingerprints and profiles carry it.
    precision: Precision = "fp32"
    #: Frame caches (PR/ASR) as float16, or int8 (half the bytes; the numbers change a little, so the cache
    #: fingerprint and the record's profile carry it: "+int8"). Utterance caches are float32 either way.
    cache_dtype: CacheDtype = "fp16"
    #: torch intra-op threads while the upstream extracts / while heads train; None leaves torch's setting.
    #: Separate because the best count differs (a large upstream scales with cores, a small head does not).
    extract_threads: int | None = None
    train_threads: int | None = None

    def __post_init__(self) -> None:
        check_choice("--precision", self.precision, PRECISIONS)
        check_choice("--cache-dtype", self.cache_dtype, CACHE_DTYPES)
        _positive_or_none("extract_threads", self.extract_threads)
        _positive_or_none("train_threads", self.train_threads)

    def feature_tags(self, level: str) -> tuple[str, ...]:
        """What makes these features other features than fp32 float16-cache ones, for a task of `level`:
        appended to the cache fingerprint ("-bf16") and the record's profile ("+bf16")."""
        tags = () if self.precision == "fp32" else (self.precision,)
        if self.cache_dtype != "fp16" and level == "frame":  # utterance caches are float32 either way
            tags += (self.cache_dtype,)
        return tags


@dataclass(frozen=True)
class ExecutionOptions:
    """How the trials of a run are carried out; none of it changes a number."""

    use_cache: bool = True  # extract once into the feature cache; False: the upstream runs inside training
    overwrite: bool = False  # redo seeds already recorded
    executor: ExecutorName = "local"
    #: Ray cluster: None starts a local one, "auto" joins the one on this machine, "HOST:PORT" a remote one.
    address: str | None = None
    #: CPUs of a local Ray instance started by the run (None: all of this machine's).
    ray_cpus: int | None = None
    #: GPUs per Ray trial task (fractions pack several heads on one GPU, e.g. 0.25).
    gpus_per_trial: float = 0.0
    #: GPUs per Ray extraction actor, and how many actors (None: one per CPU of the cluster).
    gpus_per_extractor: float = 0.0
    extract_actors: int | None = None
    #: Train all trials of a task (lr grid x seeds x folds) as one batched computation where the kind allows it.
    group_trials: bool = True
    #: Above this many bytes of pooled features, trials train one at a time instead of as a resident group.
    max_resident_bytes: int = 8 * 1024 ** 3
    #: Tasks whose heads give back audio (SE, SS): the first N test utterances' waveforms are written beside the
    #: record (WAV files listed in its artifacts), so one can listen; 0 keeps none.
    keep_audio: int = 5

    def __post_init__(self) -> None:
        check_choice("--executor", self.executor, EXECUTORS)
        if isinstance(self.keep_audio, bool) or not isinstance(self.keep_audio, int) or self.keep_audio < 0:
            raise ValueError(f"--keep-audio must be a count of utterances, 0 or more, got {self.keep_audio!r}")


@dataclass(frozen=True)
class RunPaths:
    """Where a run's files go; None takes superbench.paths' default ($SUPERBENCH_HOME/...)."""

    results_dir: Path | None = None  # None: $SUPERBENCH_RESULTS or $SUPERBENCH_HOME/results
    cache_root: Path | None = None  # None: $SUPERBENCH_HOME/features
    checkpoint_root: Path | None = None  # None: $SUPERBENCH_HOME/checkpoints


@dataclass(frozen=True)
class RunHooks:
    """What the caller sees of a run."""

    progress: bool = True
    #: Log the plan (superbench.plan: hours, cache bytes, probed extraction time, grid) before extracting.
    show_plan: bool = False
    #: Called with each record once it is written (the CLI adds it to the leaderboard store).
    on_record: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class RunOptions:
    """Everything a run takes besides the upstream, the tasks and the data: one of each part."""

    identity: RunIdentity = field(default_factory=RunIdentity)
    compute: ComputeOptions = field(default_factory=ComputeOptions)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    paths: RunPaths = field(default_factory=RunPaths)
    hooks: RunHooks = field(default_factory=RunHooks)

    @classmethod
    def of(cls, **values: Any) -> "RunOptions":
        """Options from the parts' field names, flat (`seeds=2, cache_root=..., executor="ray"`)."""
        return cls().replace(**values)

    def replace(self, **values: Any) -> "RunOptions":
        """A copy with some of the parts' fields changed, named flat; each changed part is checked again."""
        changes: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in _PART_OF:
                raise TypeError(f"RunOptions has no option {name!r}")
            changes.setdefault(_PART_OF[name], {})[name] = value
        return dataclasses.replace(self, **{part: dataclasses.replace(getattr(self, part), **fields_)
                                            for part, fields_ in changes.items()})


#: Part of RunOptions each flat option name belongs to (the names are unique across parts).
_PART_OF: dict[str, str] = {}
for _part, _cls in (("identity", RunIdentity), ("compute", ComputeOptions), ("execution", ExecutionOptions),
                    ("paths", RunPaths), ("hooks", RunHooks)):
    for _f in dataclasses.fields(_cls):
        assert _f.name not in _PART_OF, f"option {_f.name} in two parts"
        _PART_OF[_f.name] = _part

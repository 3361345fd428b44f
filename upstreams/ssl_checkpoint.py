"""Published self-supervised checkpoints: where each one lives, where it is looked for, how it is read.

The native SSL upstreams (`apc`, `tera`, `wav2vec`, ...) read the files their users already have,
in the format they were published in: s3prl's `.ckpt` (a dict with the model's own config and its
weights), fairseq's `.pt`, or s3prl's converted form of a fairseq file. Nothing here imports s3prl,
fairseq or torchaudio.

Where `NAME` (without `=PATH`) looks for its file, in order:

1. `$SUPERBENCH_CHECKPOINTS/<file name>` (a folder you keep checkpoints in);
2. s3prl's download cache (`~/.cache/s3prl/download/<sha256(url)>.<file name>`), so a file s3prl
   fetched once serves here too.

When neither has it, the error says the URL to fetch and how to point at the file
(`--upstream NAME=PATH`). Reading failures (not a checkpoint, a truncated download, another
family's file) are `CheckpointFormatError`s that name the file and what was expected, never a
`KeyError` from a state dict.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pickle
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch

from superbench.upstream import UpstreamFactory, UpstreamInfo

log = logging.getLogger(__name__)

#: A folder searched for published checkpoints by file name before s3prl's cache.
CHECKPOINT_DIR_ENV = "SUPERBENCH_CHECKPOINTS"
#: Where s3prl 0.4.x keeps what it downloads.
S3PRL_CACHE = Path.home() / ".cache" / "s3prl" / "download"


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint file for a published model; the message says where to get it."""


class CheckpointFormatError(ValueError):
    """A file that is not the checkpoint a family expects; the message names the file and the format."""


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One public checkpoint: the hub name it answers to, its download URL and its file format."""

    name: str
    url: str
    fmt: str  # e.g. "s3prl .ckpt", "fairseq .pt"
    description: str = ""

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def s3prl_cache_path(self, cache: Path | None = None) -> Path:
        """The path s3prl's downloader gives this URL."""
        digest = hashlib.sha256(self.url.encode()).hexdigest()
        return (cache or S3PRL_CACHE) / f"{digest}.{self.filename}"

    def candidates(self) -> list[Path]:
        found = []
        folder = os.environ.get(CHECKPOINT_DIR_ENV, "").strip()
        if folder:
            found.append(Path(folder).expanduser() / self.filename)
        found.append(self.s3prl_cache_path())
        return found

    def how_to_get(self) -> str:
        return (f"download {self.url} (e.g. `curl -L -o {self.filename} {self.url}`), then pass "
                f"`--upstream {self.name}=PATH/{self.filename}`, or put it in ${CHECKPOINT_DIR_ENV}")


def resolve_checkpoint(published: PublishedCheckpoint, path: str | os.PathLike | None) -> Path:
    """The file to load: `path` when given (it must exist), else the first known location that has it."""
    if path is not None:
        file = Path(path).expanduser()
        if not file.exists():
            raise CheckpointNotFoundError(
                f"upstream {published.name!r}: checkpoint {file} does not exist; {published.how_to_get()}")
        if file.is_dir():
            return _checkpoint_in_folder(published, file)
        return file
    for candidate in published.candidates():
        if candidate.is_file():
            log.info("%s: using %s", published.name, candidate)
            return candidate
    looked = ", ".join(str(c) for c in published.candidates())
    raise CheckpointNotFoundError(
        f"upstream {published.name!r}: no checkpoint found (looked in {looked}); {published.how_to_get()}")


def _checkpoint_in_folder(published: PublishedCheckpoint, folder: Path) -> Path:
    """The checkpoint file inside a folder (e.g. what `superbench pretrain` wrote): the published file
    name, `NAME.ckpt` / `NAME.pt`, or the folder's only `.ckpt` / `.pt` file besides pretraining state."""
    for candidate in (published.filename, f"{published.name}.ckpt", f"{published.name}.pt"):
        if (folder / candidate).is_file():
            return folder / candidate
    files = sorted(p for p in folder.iterdir() if p.suffix in (".ckpt", ".pt") and not p.name.startswith("pretrain-"))
    if len(files) == 1:
        return files[0]
    found = f"found {', '.join(p.name for p in files)}" if files else "found no .ckpt or .pt file"
    raise CheckpointNotFoundError(
        f"upstream {published.name!r}: {folder} is a folder and {found}; pass the file itself "
        f"(`{published.name}=PATH/FILE`) or keep one checkpoint named {published.name}.ckpt in it")


def _torch_load(file: Path) -> Any:
    """`torch.load` that only trusts tensors, containers and `argparse.Namespace` (fairseq's `args`)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text or "weights_only" in text:
            # A checkpoint holding other Python objects (an old fairseq `args`, an s3prl Runner
            # config); s3prl itself loads these in full. Only tensors and plain values are kept.
            log.warning("%s holds Python objects beyond tensors; loading it in full, as s3prl does "
                        "(load only checkpoints you trust)", file)
            return torch.load(file, map_location="cpu", weights_only=False)
        raise


def read_checkpoint(file: Path, expected: str, required: Iterable[str] = ()) -> dict[str, Any]:
    """Load `file` and check it is a dict with the `required` top-level keys.

    `expected` names the format in errors ("an APC checkpoint (s3prl .ckpt)"). A file that is not a
    torch checkpoint at all, a truncated download, or a dict without the keys raises
    `CheckpointFormatError` naming the file, what was expected and, where it can tell, what the
    file looks like instead.
    """
    try:
        obj = _torch_load(file)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ModuleNotFoundError,
            AttributeError, ValueError, OSError) as exc:
        raise CheckpointFormatError(
            f"{file}: cannot be read as {expected}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]} "
            f"(a truncated download or not a torch checkpoint?)") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"{file}: expected {expected}, a dict of config and weights; "
                                    f"found a {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        hint = guess_format(obj)
        looks = f"; it looks like {hint}" if hint else ""
        raise CheckpointFormatError(
            f"{file}: expected {expected}, but it has no {', '.join(repr(k) for k in missing)} "
            f"(top-level keys: {', '.join(sorted(map(str, obj))[:8]) or 'none'}){looks}")
    return dict(obj)


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], file: Path, expected: str,
                 strict: bool = True) -> None:
    """`module.load_state_dict(state)` with a readable error naming the file when the weights do not fit."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing and strict:
        problems.append(f"missing {len(missing)} weights (e.g. {', '.join(missing[:3])})")
    if unexpected and strict:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} of another shape (e.g. {'; '.join(wrong[:3])})")
    if problems:
        raise CheckpointFormatError(f"{file}: the weights do not fit {expected} built from its own config: "
                                    + ", ".join(problems))
    module.load_state_dict(state, strict=strict)


#: (format description, test on the loaded dict): used to say what a wrongly given file looks like.
FORMAT_SIGNATURES: list[tuple[str, Callable[[Mapping[str, Any]], bool]]] = [
    ("a fairseq checkpoint (.pt)", lambda d: "model" in d and ("args" in d or "cfg" in d)),
    ("s3prl's converted fairseq checkpoint", lambda d: {"task_cfg", "model_cfg", "model_weight"} <= set(d)),
    ("an s3prl Mockingjay/TERA checkpoint", lambda d: "Transformer" in d),
    ("an s3prl DistilHuBERT checkpoint", lambda d: "Distiller" in d),
    ("an s3prl APC/VQ-APC/NPC checkpoint", lambda d: "config" in d and "model" in d),
    ("a Hugging Face / plain state dict", lambda d: all(isinstance(v, torch.Tensor) for v in d.values())),
]


def guess_format(obj: Mapping[str, Any]) -> str | None:
    """A short description of what a checkpoint dict looks like, or None."""
    for description, test in FORMAT_SIGNATURES:
        try:
            if test(obj):
                return description
        except Exception:  # a signature must never turn a good error into a worse one
            continue
    return None


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """A context in which module construction draws from `seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class PublishedFactory(UpstreamFactory):
    """The registry entry of a published model: an `UpstreamFactory` that also names its `published` file."""

    def __init__(self, build: Callable[..., Any], published: PublishedCheckpoint, **kwargs: Any) -> None:
        super().__init__(build, **kwargs)
        self.published = published


def published_factory(name: str, published: PublishedCheckpoint, load: Callable[[Path], Any], *, family: str,
                      layers: int, hidden_size: int, write_random_checkpoint: Callable[..., Path],
                      resolve: Callable[[str | None], Path] | None = None) -> PublishedFactory:
    """The registry entry of a published model: `factory(path=None)` finds the file (`resolve`, by default
    `resolve_checkpoint(published, path)`) and builds the upstream with `load(file)`; it carries what
    `superbench upstreams list` shows (`info`, for the published model) and `random-checkpoint` writes."""

    def build(path: str | None = None, **kwargs: Any) -> Any:
        if kwargs:
            raise ValueError(f"upstream {name!r} takes no options (got {', '.join(sorted(kwargs))}): everything "
                             f"comes from its checkpoint")
        return load(resolve(path) if resolve is not None else resolve_checkpoint(published, path))

    info = UpstreamInfo(family=family, layers=layers, hidden_size=hidden_size, source=published.url,
                        description=published.description)
    return PublishedFactory(build, published, info=info, write_random_checkpoint=write_random_checkpoint,
                            name=name, doc=f"s3prl's `{name}`: {published.description}.")

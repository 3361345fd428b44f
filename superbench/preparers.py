"""Corpus preparers: what turns a corpus into superbench manifests, looked up by corpus name.

A preparer is a `Preparer` registered in `PREPARERS`, which reads the `superbench.preparers`
entry-point group: the built-ins (`recipes.prepare`, one module per corpus) and a plugin package's
corpora arrive the same way, and `superbench data prepare CORPUS` only looks the name up. A corpus is
either read from disk (`prepare`) or made without a download (`ensure`, the demo), or both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from superbench.registry import Registry


@dataclass(frozen=True)
class PrepareRequest:
    """What `superbench data prepare` was asked: the corpus folder (or id), where to write, and the
    corpus-specific options given (name -> text, only those the user set)."""

    root: str
    out: Path | None = None  # None: the preparer's default ($SUPERBENCH_HOME/data/CORPUS)
    skip_bad: bool = False  # leave out unreadable or missing files (logged) instead of failing
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Preparer:
    """One corpus. Members, all but `name` optional:

    `prepare(request) -> Path`: write manifests for the corpus on disk; returns the output root (one
    `<task>/meta.json` folder per task it writes); None: `data prepare` does not offer the corpus.
    `ensure(size) -> Path`: make the corpus once (no download) and return its root, so that
    `--data NAME` / `--data NAME:SIZE` names it (`size` None: the default); None: not a generated corpus.
    `writes`: the tasks it writes, for the help text. `options`: the options `prepare` reads from
    `request.options` (name -> help), so a given option it does not read is reported.
    """

    name: str
    prepare: Callable[[PrepareRequest], Path] | None = None
    ensure: Callable[[str | None], Path] | None = None
    writes: str = ""
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


#: Corpus preparers by corpus name (built-ins and plugins, through `superbench.preparers` entry points).
PREPARERS: Registry[Preparer] = Registry("corpus preparer", entry_point_group="superbench.preparers")


def resolve_generated(spec: str) -> Path | None:
    """The root of the generated corpus a `--data` value names (`demo`, `demo:tiny`), made if missing;
    None when `spec` names none (a folder): commands accept a generated corpus without knowing its code."""
    name, colon, size = spec.partition(":")
    if not name or name not in PREPARERS:
        return None
    ensure = PREPARERS.get(name).ensure
    if ensure is None:
        return None
    return ensure(size if colon else None)

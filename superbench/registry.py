"""One registry type for everything that is looked up by name (upstreams, tasks).

Names are unique: registering a taken name is refused rather than silently
shadowing a built-in, and an unknown name fails with near-match suggestions so a
typo on the command line costs seconds, not a stack trace.
"""

from __future__ import annotations

import difflib
import logging
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class RegistryError(LookupError):
    """Base class for registry failures; the message is meant for end users."""


class DuplicateNameError(RegistryError):
    pass


class UnknownNameError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object map with entry-point discovery.

    `entry_point_group` plugins are loaded lazily, the first time the registry is
    read, so importing superbench never imports a user's model code.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None,
                 loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._loader = loader
        self._loaded = False

    def register(self, name: str, obj: T, source: str = "built-in") -> T:
        if not name or name != name.strip():
            raise RegistryError(f"invalid {self.kind} name {name!r}")
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered (by {self._sources[name]}); "
                f"pick another name")
        self._items[name] = obj
        self._sources[name] = source
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        """`@REGISTRY.decorator("name")` for built-ins."""
        def wrap(obj: T) -> T:
            return self.register(name, obj)
        return wrap

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._loader is not None:
            self._loader()
        if self.entry_point_group:
            for ep in metadata.entry_points(group=self.entry_point_group):
                if ep.name in self._items:
                    raise DuplicateNameError(
                        f"{self.kind} {ep.name!r} from entry point {ep.value!r} clashes with "
                        f"the one registered by {self._sources[ep.name]}")
                try:
                    obj = ep.load()
                except Exception as exc:  # a broken plugin must not break the tool
                    log.warning("could not load %s plugin %r (%s): %s", self.kind, ep.name, ep.value, exc)
                    continue
                self.register(ep.name, obj, source=f"entry point {ep.value}")

    def get(self, name: str) -> T:
        self._ensure_loaded()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (f"unknown {self.kind} {name!r}{hint} "
                f"(known: {', '.join(self.names()) or 'none'})")

    def source(self, name: str) -> str:
        self._ensure_loaded()
        return self._sources[name]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

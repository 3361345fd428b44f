"""One registry type for everything that is looked up by name (upstreams, tasks).

Names are unique: registering a taken name is refused rather than silently
shadowing a built-in, and an unknown name fails with near-match suggestions so a
typo on the command line costs seconds, not a stack trace.

Built-ins and plugins arrive the same way, through an entry-point group read the
first time the registry is used (so importing superbench imports no model or task
code). An entry point names one object, registered under the entry point's name,
or a mapping of names to objects (a family, such as the project's built-in tasks),
each registered under its own name. `register_lazy` adds a "module:attr" placeholder
imported on first use; `scoped()` lets tests and notebooks register temporarily.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import logging
import pkgutil
import types
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class RegistryError(LookupError):
    """Base class for registry failures; the message is meant for end users."""


class DuplicateNameError(RegistryError):
    pass


class UnknownNameError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class PluginAttributeError(UnknownNameError, AttributeError):
    """`file.py:NAME` where the file has no NAME: a usage error with a did-you-mean, not a traceback."""


class PluginImportError(ValueError):
    """A plugin file that raises while it is imported: a usage error naming the file, found before any work."""


class _Lazy:
    """Placeholder for an object named "module:attr", imported the first time it is asked for."""

    def __init__(self, target: str) -> None:
        self.target = target

    def load(self) -> object:
        module, _, attr = self.target.partition(":")
        obj: object = importlib.import_module(module)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj


class Registry(Generic[T]):
    """Name -> object map with entry-point discovery (see the module docstring)."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T | _Lazy] = {}
        self._sources: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, obj: T, source: str = "built-in") -> T:
        """Add `obj` under `name`; a taken name is refused."""
        self._add(name, obj, source)
        return obj

    def register_lazy(self, name: str, target: str, source: str = "built-in") -> None:
        """Add a placeholder for "module:attr", imported only when `name` is first looked up."""
        self._add(name, _Lazy(target), source)

    def _add(self, name: str, obj: T | _Lazy, source: str) -> None:
        if not name or name != name.strip():
            raise RegistryError(f"invalid {self.kind} name {name!r}")
        if name in self._items:
            raise DuplicateNameError(
                f"{self.kind} {name!r} from {source} is already registered (by {self._sources[name]}); "
                f"pick another name")
        self._items[name] = obj
        self._sources[name] = source

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not self.entry_point_group:
            return
        def own_first(ep: metadata.EntryPoint) -> tuple[bool, str]:  # built-ins claim their names first
            return (getattr(getattr(ep, "dist", None), "name", "") != "superbench", ep.name)

        seen: set[tuple[str, str]] = set()
        for ep in sorted(metadata.entry_points(group=self.entry_point_group), key=own_first):
            # The same entry point listed twice (a plugin installed into the venv that is also on the path,
            # an editable install beside its build) is one plugin; only another object under a taken name clashes.
            if (ep.name, ep.value) in seen:
                log.debug("%s entry point %s = %s listed twice; registered once", self.kind, ep.name, ep.value)
                continue
            seen.add((ep.name, ep.value))
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the tool
                log.warning("could not load %s plugin %r (%s): %s", self.kind, ep.name, ep.value, exc)
                continue
            family = obj if isinstance(obj, Mapping) else {ep.name: obj}
            dist = getattr(getattr(ep, "dist", None), "name", "")
            source = "built-in" if dist == "superbench" else f"entry point {ep.value}"
            for name, item in family.items():
                self._add(name, item, source)

    def get(self, name: str) -> T:
        self._ensure_loaded()
        try:
            obj = self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None
        if isinstance(obj, _Lazy):
            try:
                loaded = obj.load()
            except Exception as exc:
                raise RegistryError(f"{self.kind} {name!r} could not be loaded from {obj.target} "
                                    f"({type(exc).__name__}: {exc})") from exc
            self._items[name] = loaded
            obj = loaded
        return obj  # type: ignore[return-value]

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, object) for every entry, loading placeholders."""
        for name in self.names():
            yield name, self.get(name)

    @contextmanager
    def scoped(self, rescan: bool = False) -> Iterator["Registry[T]"]:
        """Registrations made inside the block are undone at its end (tests, notebooks).

        `rescan=True` starts the block as a fresh process would: entries read again from the
        entry points (e.g. a plugin package installed since) and nothing registered by hand.
        """
        self._ensure_loaded()
        saved = (self._items, self._sources, self._loaded)
        if rescan:
            self._items, self._sources, self._loaded = {}, {}, False
        else:
            self._items, self._sources = dict(self._items), dict(self._sources)
        try:
            yield self
        finally:
            self._items, self._sources, self._loaded = saved

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


def declared_in(package: str, path: Iterable[str], attribute: str, *,
                subpackages: bool = True) -> Iterator[tuple[str, Any]]:
    """(module name, value) of `attribute` in every module of a package that declares it, in name order:
    how built-ins are found by convention (a task module's `TASK`, an upstream module's `FACTORIES`, a
    preparer's `PREPARER`), so adding one is adding its module. Modules without it are helpers."""
    for info in pkgutil.iter_modules(path):
        if info.ispkg and not subpackages:
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        value = getattr(module, attribute, None)
        if value is not None:
            yield module.__name__, value


def load_object_from_file(spec: str) -> Any:
    """`path/to/file.py:NAME` -> that module-level object: plugins (upstreams, tasks) not installed."""
    file_name, _, attr = spec.rpartition(":")
    file_path = Path(file_name)
    if not file_path.is_file():
        raise FileNotFoundError(f"plugin file not found: {file_path}")
    module_name = f"superbench_plugin_{hashlib.sha1(str(file_path.resolve()).encode()).hexdigest()[:10]}"
    module_spec = importlib.util.spec_from_file_location(module_name, file_path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the plugin's own error, said with the file it came from
        raise PluginImportError(f"plugin file {file_path} failed to import: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        # What the file defines is worth suggesting; the modules, classes and functions it imports are not.
        def own(value: Any) -> bool:
            if isinstance(value, types.ModuleType) or type(value).__module__ == "__future__":
                return False
            return not isinstance(value, (type, types.FunctionType)) or value.__module__ == module_name

        names = [n for n, v in vars(module).items() if not n.startswith("_") and own(v)]
        close = difflib.get_close_matches(attr, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise PluginAttributeError(f"{file_path} has no {attr!r}{hint} (it defines: "
                                   f"{', '.join(sorted(names)) or 'nothing public'})") from None

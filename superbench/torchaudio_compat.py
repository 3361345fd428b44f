"""Keep a broken optional torchaudio from breaking superbench.

PyPI's torchaudio only loads beside the CUDA build of torch; installed next to the CPU wheel (for
instance pulled in by `superbench[s3prl]`), `import torchaudio` raises OSError. transformers
imports torchaudio whenever it is installed, so that error would take down every transformers
upstream although none of them needs torchaudio. `guard_broken_torchaudio` (run when
`superbench.upstream` is imported) puts a placeholder package in its place: imports succeed, and any use of a
torchaudio name raises an error carrying the original load failure. A working torchaudio, or none
at all, is left alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types
from typing import Any

log = logging.getLogger(__name__)

PLACEHOLDER_VERSION = "0+unavailable"

# torchaudio's audio-backend API, gone in 2.9, which s3prl 0.4.18 calls while importing its hub.
BACKEND_NOOPS: dict[str, Any] = {
    "set_audio_backend": lambda backend=None: None,
    "get_audio_backend": lambda: None,
    "list_audio_backends": lambda: ["soundfile"],
}


def is_torchaudio_module(name: str) -> bool:
    return name == "torchaudio" or name.startswith("torchaudio.")


class _Unavailable(type):
    """Metaclass of the placeholders for torchaudio names: any use raises, attribute access nests."""

    def __getattr__(cls, name: str) -> Any:
        return _placeholder(cls.__qualname__, name, cls._why)

    def __call__(cls, *_args: Any, **_kwargs: Any) -> Any:
        origin = next(c for c in cls.__mro__ if "_why" in vars(c))  # the torchaudio name, not a subclass
        raise RuntimeError(f"{origin.__qualname__} needs torchaudio, which {cls._why}; superbench itself "
                           f"does not (its fbank/mfcc and transformers upstreams run without it)")


def _placeholder(owner: str, name: str, why: str) -> type:
    """`owner.name` as a placeholder class; dunders (__file__, __all__, ...), which tools probe on
    every module and class, stay missing."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(name, (), {"__qualname__": f"{owner}.{name}", "_why": why})


class _TorchaudioStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `torchaudio` and every `torchaudio.*` submodule as placeholder packages."""

    def __init__(self, why: str) -> None:
        self.why = why

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if is_torchaudio_module(fullname):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__version__ = PLACEHOLDER_VERSION
        module.__getattr__ = lambda name: _placeholder(spec.name, name, self.why)  # type: ignore[attr-defined]
        if spec.name == "torchaudio":  # s3prl 0.4.18 calls these at import time
            vars(module).update(BACKEND_NOOPS)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install_torchaudio_stand_in(why: str) -> None:
    """Make `import torchaudio` (and its submodules) succeed with placeholders that fail on use."""
    for name in [m for m in sys.modules if is_torchaudio_module(m)]:
        del sys.modules[name]  # drop what a failed import left behind
    if not any(isinstance(f, _TorchaudioStandIn) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchaudioStandIn(why))
    log.info("torchaudio %s; a placeholder stands in (code that uses torchaudio fails when it does)", why)


def is_placeholder(module: types.ModuleType) -> bool:
    """True for the stand-in package rather than a real torchaudio."""
    return isinstance(getattr(getattr(module, "__spec__", None), "loader", None), _TorchaudioStandIn)


def load_failure(exc: BaseException) -> str:
    """How to say that importing torchaudio failed, e.g. 'failed to load (OSError: ...)'."""
    if isinstance(exc, ModuleNotFoundError) and exc.name == "torchaudio":
        return "is not installed"
    return f"failed to load ({type(exc).__name__}: {str(exc)[:200]})"


def guard_broken_torchaudio() -> str | None:
    """Install the placeholder if torchaudio is installed but does not import; returns why, or None."""
    if "torchaudio" in sys.modules:
        return None  # already imported (real or placeholder)
    try:
        if importlib.util.find_spec("torchaudio") is None:
            return None
        import torchaudio  # noqa: F401  (transformers would import it anyway)
    except Exception as exc:
        why = load_failure(exc)
        install_torchaudio_stand_in(why)
        return why
    return None

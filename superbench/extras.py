"""Optional packages of an extra (`pip install 'superbench[NAME]'`), imported when a task needs them.

A task kind whose metric or model needs a package outside the core imports it through `import_from_extra`,
so a missing one is an ImportError naming the package and the extra to install (the command line reports it
as a setup error, exit 2), raised when the task loads rather than as a traceback mid-run.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any


class MissingExtraPackage(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def import_from_extra(module: str, packages: Mapping[str, str], extra: str, needs: str,
                      error: type[MissingExtraPackage] = MissingExtraPackage) -> Any:
    """Import `module`, one of `packages` (module -> PyPI distribution) of the extra `extra`; `needs` says who
    needs it ("the audio metrics need"); a missing package raises `error` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise error(
            f"{needs} the Python package {packages[module]!r}, which is not installed ({exc}); "
            f"install the extra: pip install 'superbench[{extra}]' (or pip install {' '.join(packages.values())})"
        ) from exc


def require_extra(packages: Mapping[str, str], extra: str, needs: str,
                  error: type[MissingExtraPackage] = MissingExtraPackage) -> None:
    """Import every package of the extra now: `error` naming the extra when one is missing."""
    for module in packages:
        import_from_extra(module, packages, extra, needs, error)

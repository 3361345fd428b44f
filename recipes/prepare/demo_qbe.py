"""Demo corpus part for QBE (placeholder while the task is built: plans nothing, writes nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "qbe"


def plan(p: Any) -> None:
    return None


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path | None:
    return None

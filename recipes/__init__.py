"""The built-in SUPERB tasks: one declaration module and one versioned recipe YAML per task.

`recipes/<task>.py` declares the task (`TASK = Task(...)`: metric, direction, the manifest
field it learns, its kind, its recipe file); `recipes/<task>.yaml` holds every
hyper-parameter, profile by profile (see `superbench.recipe`). `BUILTIN_TASKS` collects
every module here that declares a `TASK`, and the `superbench.tasks` entry point names
it, so adding a task is adding those two files. `recipes.prepare` holds the corpus
preparers.
"""

from __future__ import annotations

from typing import Any

from superbench.registry import declared_in


def _builtin_tasks() -> dict[str, Any]:
    # `recipes.prepare` is a package of preparers, not a task
    return {task.name: task for _, task in declared_in(__name__, __path__, "TASK", subpackages=False)}


def __getattr__(name: str) -> Any:
    # Built on first use (PEP 562): importing a preparer does not import every task's head code.
    if name == "BUILTIN_TASKS":
        return _builtin_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

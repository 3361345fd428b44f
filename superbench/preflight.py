"""Checks before any work, so a mistake costs seconds: every task's data folder, writable output
folders, and the free disk for the features still to extract."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

from superbench.features.store import CacheError
from superbench.io import free_bytes, human_bytes
from superbench.options import RunOptions
from superbench.paths import cache_dir, checkpoints_dir
from superbench.plan import task_estimates
from superbench.records import record_path
from superbench.task_plan import TaskPlan
from superbench.tasks import Task, in_task_order

log = logging.getLogger(__name__)


def check_task_folders(tasks: Sequence[Task], data_root: Path) -> None:
    """Every requested task has a prepared folder; otherwise name the missing ones and the tasks there are."""
    root = Path(data_root)
    missing = [t.name for t in tasks if not (root / t.name / "meta.json").is_file()]
    if not missing:
        return
    present = in_task_order(p.parent.name for p in root.glob("*/meta.json")) if root.is_dir() else []
    hint = (f"it has {', '.join(present)}: run those with `--task {','.join(present)}`, or prepare the others"
            if present else "it has no prepared task folder; prepare them")
    raise FileNotFoundError(f"data root {root} has no folder for task(s) {', '.join(missing)} "
                            f"(<task>/meta.json); {hint} with `superbench data prepare`")


def check_writable(folder: Path, what: str, hint: str) -> None:
    """Create `folder` if missing and write and remove a file there: an output folder that cannot be written
    (read-only, immutable, a file where the folder should be) is a usage error before any work, not a
    failure after hours of extraction and training."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".superbench-write-check-"):
            pass
    except OSError as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else exc.strerror or str(exc)
        raise PermissionError(f"the {what} {folder} cannot be written ({why}); {hint}") from None


def check_output_folders(plans: Sequence[TaskPlan], opts: RunOptions) -> None:
    """The folders the records and the trials' checkpoints of `plans` go to can be written (when there is
    anything to train)."""
    folders = {record_path(p.results, p.keys[seed]).parent: "results folder" for p in plans for seed in p.todo}
    if not folders:
        return
    for folder, what in folders.items():
        check_writable(folder, what, "fix its permissions or choose another with --results")
    check_writable(Path(opts.paths.checkpoint_root or checkpoints_dir()), "checkpoints folder",
                   "fix its permissions or point SUPERBENCH_HOME at a writable folder")


def cache_bytes_needed(plans: Sequence[TaskPlan], opts: RunOptions) -> dict[str, int]:
    """Bytes of features still to extract, per task: audio already cached counts nothing, and audio
    shared by several tasks counts once per cache folder (upstream variant and level)."""
    if not opts.execution.use_cache:
        return {}
    need: dict[str, int] = {}
    for plan, estimate in zip(plans, task_estimates(plans, opts)):
        if plan.todo:
            need[plan.task.name] = need.get(plan.task.name, 0) + estimate.cache_bytes
    return need


def check_disk(plans: Sequence[TaskPlan], opts: RunOptions) -> None:
    """Refuse a run whose features cannot fit, before the first extraction (the cache checks each task
    again when it starts, against what is free then)."""
    need = cache_bytes_needed(plans, opts)
    total = sum(need.values())
    if not total:
        return
    root = Path(opts.paths.cache_root or cache_dir())
    free = free_bytes(root)
    per_task = ", ".join(f"{task} {human_bytes(n)}" for task, n in need.items() if n)
    log.info("features to extract: about %s (%s) into %s, %s free", human_bytes(total), per_task, root,
             human_bytes(free))
    if total > 0.95 * free:
        hint = ""
        if opts.compute.cache_dtype == "fp16" and any(p.task.level == "frame" and p.todo for p in plans):
            int8 = sum(cache_bytes_needed(plans, opts.replace(cache_dtype="int8")).values())
            fits = "fits" if int8 <= 0.95 * free else "does not fit either"
            hint = f" With --cache-dtype int8 the frame caches take about {human_bytes(int8)} in all ({fits})."
        raise CacheError(f"not enough disk for the feature cache: this run needs about {human_bytes(total)} "
                         f"({per_task}) in {root}, only {human_bytes(free)} free.{hint} Free some space, point "
                         f"SUPERBENCH_HOME at a larger disk, run fewer tasks, or use --no-cache")

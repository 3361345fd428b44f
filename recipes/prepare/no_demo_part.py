"""The built-in tasks the offline demo corpus has no part for, and why (kept apart from `recipes.prepare.demo`,
whose source is part of the corpus version: this list says what the corpus lacks, not how it is made).

`--task all` or a task group run on the demo skips such a task with its reason (`tasks_with_demo_parts`); named on
its own it fails as any task without data does (its folder is missing, and the error lists the tasks the data root
has).
"""

from __future__ import annotations

from collections.abc import Iterable

from superbench.tasks import Task

#: Task name -> why the demo has no part for it.
NO_DEMO_PART: dict[str, str] = {
    "ood_sbcsae": "SBCSAE is spontaneous conversation (fillers, repairs, overlapping talk), which eSpeak's read "
                  "speech cannot stand in for",
}


def tasks_with_demo_parts(tasks: list[Task], named: Iterable[str]) -> tuple[list[Task], list[str]]:
    """(the tasks to run on the demo corpus, one note per task skipped): a task in `NO_DEMO_PART` that came in
    through `all` or a group, not by its own name in `named`, is left out, its note giving the reason."""
    named = {n.strip().lower() for n in named}
    skipped = [t for t in tasks if t.name in NO_DEMO_PART and t.name not in named]
    notes = [f"{t.name}: skipped, the demo corpus has no part for it ({NO_DEMO_PART[t.name]})" for t in skipped]
    return [t for t in tasks if t not in skipped], notes

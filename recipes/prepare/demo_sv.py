"""Demo corpus part for SV: many training speakers, unseen speakers for dev and test, balanced trial lists.

Training speakers (several utterances each) teach the x-vector head to tell voices apart; dev and test
speakers are never trained on (as VoxCeleb1's test speakers), a few utterances each. Each held-out split's
trial list has every same-speaker pair of its utterances (targets) and as many different-speaker pairs
(non-targets), drawn without repetition, so chance is an EER of 50 %. Sentences come from this module's own
word lists (not the shared GRAMMAR pool, whose draws the other tasks depend on); every draw is from `p.rng`,
after the first five tasks', in a fixed order.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

TASK = "sv"
ORDER = 3  # draw order among the demo's parts (see recipes.prepare.demo)

#: (train speakers, utterances each), (dev speakers, utterances each), (test speakers, utterances each).
SIZES: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "tiny": ((8, 3), (3, 3), (3, 3)),
    "default": ((24, 5), (8, 4), (8, 4)),
    "large": ((100, 8), (20, 6), (20, 6)),
}

#: A phrase is "NAME VERB the ADJ THING PLACE" (words that the shared GRAMMAR does not use).
WORDS: dict[str, tuple[str, ...]] = {
    "name": ("anna", "peter", "maria", "james", "laura", "oliver", "sophie", "daniel", "emma", "victor"),
    "verb": ("carried", "painted", "opened", "bought", "dropped", "borrowed", "cleaned", "wrapped"),
    "adj": ("heavy", "golden", "wooden", "broken", "purple", "tiny", "strange", "empty"),
    "thing": ("basket", "lamp", "window", "letter", "bottle", "garden gate", "umbrella", "piano"),
    "place": ("near the river", "after lunch", "in the kitchen", "on monday", "by the station",
              "before dinner", "at the market", "under the bridge"),
}


def _phrase(p: Any) -> str:
    pick = lambda k: WORDS[k][int(p.rng.integers(len(WORDS[k])))]  # noqa: E731
    return f"{pick('name')} {pick('verb')} the {pick('adj')} {pick('thing')} {pick('place')}"


def _trials(p: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Every same-speaker pair of `rows` and as many distinct different-speaker pairs, in a drawn order."""
    pairs = list(combinations(range(len(rows)), 2))
    targets = [(1, i, j) for i, j in pairs if rows[i]["speaker"] == rows[j]["speaker"]]
    others = [(0, i, j) for i, j in pairs if rows[i]["speaker"] != rows[j]["speaker"]]
    chosen = sorted(p.rng.choice(len(others), size=min(len(targets), len(others)), replace=False).tolist())
    trials = targets + [others[k] for k in chosen]
    return [f"{label} {rows[i]['id']} {rows[j]['id']}" for k in p.rng.permutation(len(trials)).tolist()
            for label, i, j in [trials[k]]]


def plan(p: Any) -> None:
    sizes = SIZES[p.size]
    p.sv_trials = {}
    for split, (speakers, per_speaker) in zip(("train", "dev", "test"), sizes):
        for spk in p._speakers(speakers, f"sv-{split}-"):
            for k in range(per_speaker):
                job = p._job(f"{spk.id}-{k:02d}", "sv", _phrase(p), spk)
                p._row(TASK, split, job, spk, label=spk.id)
        if split != "train":
            p.sv_trials[split] = _trials(p, p.rows[TASK][split])


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path:
    from downstreams.verification import TRIAL_FILES
    from superbench.io import atomic_write_text
    from superbench.manifest import write_task_manifest

    folder = out / TASK
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in p.sv_trials.items():  # sidecars first: the manifest fingerprint reads them
        atomic_write_text(folder / TRIAL_FILES[split], "".join(line + "\n" for line in lines))
    splits = {s: fill(r) for s, r in p.rows[TASK].items()}
    speakers = sorted({r["label"] for rows in splits.values() for r in rows})
    # dev/test speakers are never training speakers: that is the task, so unseen labels are allowed
    return write_task_manifest(folder, task=TASK, label_field="label", labels=speakers, splits=splits,
                               allow_unseen_labels=True, sidecars=list(TRIAL_FILES.values()),
                               extra={**extra_common, "sv_words": WORDS,
                                      "trials": "per held-out split: every same-speaker pair and as many "
                                                "different-speaker pairs, drawn without repetition"},
                               **common)

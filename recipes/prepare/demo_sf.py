"""Demo corpus part for SF: spoken assistant queries with slot annotations, SNIPS style.

Queries come from a few intents' templates whose `{slot}` holes are filled from small value lists
(artists, services, genres, cities, times, party sizes, playlists); the row's `slots` field is the
transcript in slot markup, upper case like s3prl's SNIPS text (`PLAY B-artist THE BEATLES E-artist ON
B-service SPOTIFY E-service`), eSpeak NG speaks the plain words. Speakers are disjoint between
train/dev/test. Train cycles through every template and, slot by slot, through every value before
repeating one, and dev/test draw only templates and values seen in train, so every token of dev/test
(character or slot tag) occurs in train. All draws come from the demo plan's generator, in a fixed order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from superbench.manifest import write_task_manifest

TASK = "sf"
ORDER = 2  # draw order among the demo's parts (see recipes.prepare.demo)

#: Intent -> templates; `{slot}` is a hole filled from SLOT_VALUES[slot] and wrapped in B-slot/E-slot.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "PlayMusic": ("play {artist} on {service}", "play some {genre} music", "i want to hear {artist}"),
    "GetWeather": ("what is the weather in {city} at {time}", "will it rain in {city} {time}"),
    "BookRestaurant": ("book a table for {party_size} in {city}", "book a table for {party_size} at {time}"),
    "AddToPlaylist": ("add {artist} to my {playlist} playlist", "put this song on {playlist}"),
}
SLOT_VALUES: dict[str, tuple[str, ...]] = {
    "artist": ("the beatles", "adele", "queen", "madonna", "bob marley", "elvis presley"),
    "service": ("spotify", "youtube", "deezer", "pandora"),
    "genre": ("jazz", "rock", "blues", "reggae", "classical"),
    "city": ("paris", "london", "berlin", "tokyo", "madrid", "chicago"),
    "time": ("noon", "midnight", "tonight", "tomorrow", "seven o'clock", "this evening"),
    "party_size": ("two", "three", "four", "five", "six"),
    "playlist": ("workout", "road trip", "sunday morning", "party"),
}
#: (speakers, utterances) per split (train, dev, test), by demo size.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "tiny": ((4, 2, 2), (40, 8, 8)),
    "default": ((20, 5, 5), (160, 30, 30)),
    "large": ((60, 10, 10), (1500, 200, 200)),
}


def _templates() -> list[tuple[str, str]]:
    return [(intent, t) for intent, ts in TEMPLATES.items() for t in ts]


def fill_template(template: str, values: dict[str, str]) -> tuple[str, str]:
    """(plain text, slot markup, upper case) of a template with its holes filled by `values`."""
    plain, markup = [], []
    for word in template.split():
        if word.startswith("{") and word.endswith("}"):
            slot = word[1:-1]
            value = values[slot]
            plain.append(value)
            markup.append(f"B-{slot} {value.upper()} E-{slot}")
        else:
            plain.append(word)
            markup.append(word.upper())
    return " ".join(plain), " ".join(markup)


def _slots_of(template: str) -> list[str]:
    return [w[1:-1] for w in template.split() if w.startswith("{")]


class _Cycle:
    """Values of one slot in shuffled rounds: each value once per round (train's coverage)."""

    def __init__(self, values: tuple[str, ...], rng: Any) -> None:
        self.values, self.rng, self.queue = values, rng, []

    def next(self) -> str:
        if not self.queue:
            self.queue = [self.values[i] for i in self.rng.permutation(len(self.values))]
        return self.queue.pop()


def plan(p: Any) -> None:
    """Speakers, queries and jobs for the three splits (rows under p.rows["sf"])."""
    (n_spk, n_utt) = SIZES[p.size]
    templates = _templates()
    cycles = {slot: _Cycle(values, p.rng) for slot, values in SLOT_VALUES.items()}
    seen_values: dict[str, list[str]] = {slot: [] for slot in SLOT_VALUES}
    seen_templates: list[int] = []
    for si, split in enumerate(("train", "dev", "test")):
        spks = p._speakers(n_spk[si], "sf")
        if split == "train":
            # every template once per round, rounds shuffled
            rounds = [p.rng.permutation(len(templates)).tolist() for _ in range(-(-n_utt[si] // len(templates)))]
            order = [i for r in rounds for i in r][:n_utt[si]]
        else:
            order = [seen_templates[int(p.rng.integers(len(seen_templates)))] for _ in range(n_utt[si])]
        for k, t in enumerate(order):
            intent, template = templates[t]
            values = {}
            for slot in _slots_of(template):
                if split == "train":
                    values[slot] = cycles[slot].next()
                    if values[slot] not in seen_values[slot]:
                        seen_values[slot].append(values[slot])
                else:
                    pool = seen_values[slot]
                    values[slot] = pool[int(p.rng.integers(len(pool)))]
            if split == "train" and t not in seen_templates:
                seen_templates.append(t)
            text, markup = fill_template(template, values)
            spk = spks[k % len(spks)]
            job = p._job(f"sf-{split}-{k:05d}", "sf", text, spk)
            p._row(TASK, split, job, spk, slots=markup, intent=intent)


def inventory(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Characters (sorted) then slot tags (sorted) of every row's markup: the manifest's `labels`."""
    chars, tags = set(), set()
    for split_rows in rows.values():
        for row in split_rows:
            for token in row["slots"].split():
                if token[:2] in ("B-", "E-") and len(token) > 2:
                    tags.add(token)
                else:
                    chars.update(token)
    return sorted(chars) + sorted(tags)


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path | None:
    rows = {s: fill(r) for s, r in p.rows[TASK].items()}
    labels = inventory(rows)
    train_tokens = set(inventory({"train": rows["train"]}))
    unseen = sorted(set(labels) - train_tokens)
    if unseen:  # cannot happen by construction (see the module doc); a change that breaks it must fail here
        raise AssertionError(f"demo SF: dev/test tokens never in train: {unseen}")
    return write_task_manifest(out / TASK, task=TASK, label_field="slots", labels=labels, splits=rows,
                               extra={**extra_common, "templates": TEMPLATES, "slot_values": SLOT_VALUES,
                                      "markup": "upper-case words, B-<slot> ... E-<slot> around each slot value"},
                               **common)

"""Demo corpus part for IC: spoken commands in the manner of Fluent Speech Commands.

An intent is an (action, object, location) triple as in FSC (actions activate / deactivate /
increase / decrease / change language / bring; objects lights, lamp, heat, volume, music, shoes,
socks, newspaper, juice, languages; locations kitchen / bedroom / washroom / none). Each intent
has several phrasings built from templates ("turn on the lights in the kitchen", "kitchen lights
on", "switch on the kitchen lights"), so the head must map different word sequences to one intent
and one word ("lights", "kitchen") to several intents. As in FSC the test speakers are held out:
the speaker pools of train, dev and test are disjoint. Every intent occurs in every split, so every
dev/test intent (and slot value) is seen in training. Sizes: `tiny` 8 intents, `default` 10 (about
7 minutes of audio), `large` all 30. The first ten intents differ by their objects: the SUPERB head
mean-pools its input, and on a mean-pooled spectrum (fbank) "lights on" and "lights off" are nearly
the same point, so a demo made of FSC's on/off and up/down pairs leaves fbank at chance (22 such
intents measured 3 % against 4.5 % chance); `large` adds those harder contrasts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "ic"
ORDER = 1  # draw order among the demo's parts (see recipes.prepare.demo)
SLOTS = ("action", "object", "location")
SEPARATOR = "|"

#: Phrasings of each action on an object (and with a location), "{o}" the object's words, "{l}" the location.
_ON = ("turn on the {o}", "switch on the {o}", "{o} on please")
_ON_AT = ("turn on the {o} in the {l}", "switch on the {l} {o}", "{l} {o} on")
_OFF = ("turn off the {o}", "switch off the {o}", "{o} off please")
_OFF_AT = ("turn off the {o} in the {l}", "switch off the {l} {o}", "{l} {o} off")
_UP = ("turn up the {o}", "increase the {o}", "more {o} please")
_UP_AT = ("turn up the {o} in the {l}", "increase the {l} {o}", "more {o} in the {l}")
_DOWN = ("turn down the {o}", "decrease the {o}", "less {o} please")
_DOWN_AT = ("turn down the {o} in the {l}", "decrease the {l} {o}", "less {o} in the {l}")
_BRING = ("bring me my {o}", "fetch my {o}", "go get my {o}")
_PLAY = ("play the {o}", "start the {o}", "put on some {o}")
_STOP = ("stop the {o}", "pause the {o}", "turn the {o} off")
_LANGUAGE = ("change the language", "switch languages", "use another language")
_LANGUAGE_TO = ("change the language to {o}", "switch to {o}", "set my language to {o}")


def _intent(action: str, obj: str, location: str, templates: tuple[str, ...]) -> tuple[tuple[str, str, str], list[str]]:
    return (action, obj, location), [t.format(o=obj, l=location) for t in templates]


#: Every intent with its phrasings, in the order sizes take them (`tiny` the first 8, `default` the first 22).
INTENTS: list[tuple[tuple[str, str, str], list[str]]] = [
    # tiny and default: intents whose objects differ, so a mean-pooled spectrum (fbank) can tell them apart
    _intent("activate", "lights", "none", _ON),
    _intent("increase", "heat", "none", _UP),
    _intent("bring", "shoes", "none", _BRING),
    _intent("change language", "none", "none", _LANGUAGE),
    _intent("decrease", "volume", "none", _DOWN),
    _intent("activate", "music", "none", _PLAY),
    _intent("bring", "newspaper", "none", _BRING),
    _intent("deactivate", "lamp", "none", _OFF),
    # default adds
    _intent("bring", "juice", "none", _BRING),
    _intent("activate", "lights", "kitchen", _ON_AT),
    # large adds FSC's harder contrasts: the same object on/off, up/down, in another room
    _intent("deactivate", "lights", "none", _OFF),
    _intent("decrease", "heat", "none", _DOWN),
    _intent("increase", "volume", "none", _UP),
    _intent("deactivate", "lights", "kitchen", _OFF_AT),
    _intent("activate", "lights", "bedroom", _ON_AT),
    _intent("deactivate", "lights", "bedroom", _OFF_AT),
    _intent("deactivate", "music", "none", _STOP),
    _intent("activate", "lamp", "none", _ON),
    _intent("bring", "socks", "none", _BRING),
    _intent("increase", "heat", "washroom", _UP_AT),
    _intent("decrease", "heat", "bedroom", _DOWN_AT),
    _intent("change language", "German", "none", _LANGUAGE_TO),
    _intent("activate", "lights", "washroom", _ON_AT),
    _intent("deactivate", "lights", "washroom", _OFF_AT),
    _intent("increase", "heat", "kitchen", _UP_AT),
    _intent("decrease", "heat", "kitchen", _DOWN_AT),
    _intent("increase", "heat", "bedroom", _UP_AT),
    _intent("decrease", "heat", "washroom", _DOWN_AT),
    _intent("change language", "English", "none", _LANGUAGE_TO),
    _intent("change language", "Korean", "none", _LANGUAGE_TO),
]

#: size -> (number of intents, speakers per split (train, dev, test), utterances per intent per split).
SIZES: dict[str, tuple[int, tuple[int, int, int], tuple[int, int, int]]] = {
    "tiny": (8, (6, 2, 2), (4, 1, 1)),
    "default": (10, (30, 6, 6), (24, 6, 6)),
    "large": (30, (80, 12, 12), (40, 8, 8)),
}


#: size -> phrasings used per intent (the first ones): one in `default`, where each intent is one command said
#: by many voices, so that fbank's mean spectrum can learn it from a few minutes of audio; all in `large`.
PHRASINGS = {"tiny": 3, "default": 1, "large": 3}


def intent_name(values: tuple[str, str, str]) -> str:
    return SEPARATOR.join(values)


def plan(p: Any) -> None:
    """Speakers per split, then per (split, intent, k): a speaker, a phrasing and the synthesis job."""
    n_intents, n_speakers, per_intent = SIZES[p.size]
    intents = INTENTS[:n_intents]
    for si, split in enumerate(("train", "dev", "test")):
        spks = p._speakers(n_speakers[si], "ic")
        for i, (values, phrasings) in enumerate(intents):
            for k in range(per_intent[si]):
                spk = spks[int(p.rng.integers(len(spks)))]
                text = phrasings[int(p.rng.integers(min(len(phrasings), PHRASINGS[p.size])))]
                job = p._job(f"ic-{split}-{i:02d}-{k:03d}", "ic", text, spk)
                p._row("ic", split, job, spk, intent=intent_name(values), transcription=text,
                       **dict(zip(SLOTS, values)))


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path | None:
    from superbench.manifest import write_task_manifest

    rows = p.rows.get("ic")
    if not rows:
        return None
    splits = {s: fill(r) for s, r in rows.items()}
    labels = sorted({r["intent"] for r in splits["train"]})
    slots = {slot: sorted({r[slot] for r in splits["train"]}) for slot in SLOTS}
    return write_task_manifest(out / "ic", task="ic", label_field="intent", labels=labels, splits=splits,
                               extra={**extra_common, "slots": slots, "slot_order": list(SLOTS),
                                      "separator": SEPARATOR, "speakers": "disjoint between train, dev and test"},
                               **common)

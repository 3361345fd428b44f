"""Demo corpus part for `st` (SUPERB-SG speech translation, English speech to German text).

English sentences, spoken by the demo's English voices (`p._speakers`, `p._job`, each utterance jittered and put
in coloured noise as every demo job), each with its German translation from a bilingual template grammar: every
template is written once as an English/German pair (`TEMPLATES`), and its slots are filled from one lexicon entry
that holds both languages (`NOUNS`, `ADJECTIVES`, `VERBS`, `NUMBERS`, `ADVERBS`), so every pair is a correct
translation. German is kept simple and correct: nouns carry their gender (the article and the adjective ending
follow from it: nominative and accusative after the definite article, strong plural without one), verbs are in
the present tense, third person singular or plural, all transitive with an accusative object; an adverb of time
at the head of a sentence moves the German verb before the subject (verb second).

The grammar produces 796,284 distinct sentence pairs (each English sentence has exactly one German
translation): 50,544 "the ADJ NOUN VERB the NOUN", 454,896 "NUMBER ADJ NOUNS VERB the NOUN", 216 "the NOUN is ADJ",
37,908 "the NOUN VERB NUMBER NOUNS" and 252,720 "ADVERB the ADJ NOUN VERB the NOUN" (`count_pairs()`). The default
size uses 360 of them (300 train, 30 dev, 30 test), tiny 20, large 3,600. Sentences are distinct across the
corpus, and a dev or test translation only uses German words of the training translations. Speakers are disjoint
between train, dev and test (test voices are never trained on). Every draw is from `p.rng`, after the earlier
parts', so their corpus is unchanged. Rows carry `translation` (German, the target) and `transcript` (English).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "st"
ORDER = 11  # draw order among the demo's parts (see recipes.prepare.demo)

#: Per size: (sentence pairs per split, speakers per split), splits train/dev/test.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "tiny": ((12, 4, 4), (3, 2, 2)),
    "default": ((300, 30, 30), (20, 4, 4)),
    "large": ((3000, 300, 300), (60, 10, 10)),
}

#: English singular, English plural, German gender (m/f/n), German singular, German plural. Strong nouns only
#: (no -n in the accusative singular).
NOUNS: tuple[tuple[str, str, str, str, str], ...] = (
    ("dog", "dogs", "m", "Hund", "Hunde"),
    ("cat", "cats", "f", "Katze", "Katzen"),
    ("house", "houses", "n", "Haus", "Häuser"),
    ("man", "men", "m", "Mann", "Männer"),
    ("woman", "women", "f", "Frau", "Frauen"),
    ("child", "children", "n", "Kind", "Kinder"),
    ("bird", "birds", "m", "Vogel", "Vögel"),
    ("horse", "horses", "n", "Pferd", "Pferde"),
    ("teacher", "teachers", "m", "Lehrer", "Lehrer"),
    ("car", "cars", "n", "Auto", "Autos"),
    ("book", "books", "n", "Buch", "Bücher"),
    ("ship", "ships", "n", "Schiff", "Schiffe"),
    ("tree", "trees", "m", "Baum", "Bäume"),
    ("flower", "flowers", "f", "Blume", "Blumen"),
    ("apple", "apples", "m", "Apfel", "Äpfel"),
    ("table", "tables", "m", "Tisch", "Tische"),
    ("door", "doors", "f", "Tür", "Türen"),
    ("garden", "gardens", "m", "Garten", "Gärten"),
)
#: English, German stem (regular endings: -e / -en; none ends in -e).
ADJECTIVES: tuple[tuple[str, str], ...] = (
    ("old", "alt"), ("small", "klein"), ("big", "groß"), ("red", "rot"), ("new", "neu"), ("fast", "schnell"),
    ("quiet", "ruhig"), ("young", "jung"), ("black", "schwarz"), ("white", "weiß"), ("brown", "braun"),
    ("green", "grün"),
)
#: English 3rd singular, English plural, German 3rd singular, German 3rd plural (present, accusative object).
VERBS: tuple[tuple[str, str, str, str], ...] = (
    ("sees", "see", "sieht", "sehen"), ("finds", "find", "findet", "finden"), ("carries", "carry", "trägt", "tragen"),
    ("watches", "watch", "beobachtet", "beobachten"), ("paints", "paint", "malt", "malen"),
    ("hears", "hear", "hört", "hören"), ("knows", "know", "kennt", "kennen"),
    ("looks for", "look for", "sucht", "suchen"), ("visits", "visit", "besucht", "besuchen"),
    ("washes", "wash", "wäscht", "waschen"), ("buys", "buy", "kauft", "kaufen"),
    ("draws", "draw", "zeichnet", "zeichnen"), ("likes", "like", "mag", "mögen"),
)
NUMBERS: tuple[tuple[str, str], ...] = (
    ("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf"), ("six", "sechs"), ("seven", "sieben"),
    ("eight", "acht"), ("nine", "neun"), ("ten", "zehn"),
)
ADVERBS: tuple[tuple[str, str], ...] = (
    ("today", "heute"), ("now", "jetzt"), ("in the morning", "am Morgen"), ("in the evening", "am Abend"),
    ("on Sunday", "am Sonntag"),
)
#: Definite article, nominative and accusative singular, by gender.
ARTICLE = {"m": ("der", "den"), "f": ("die", "die"), "n": ("das", "das")}

#: (weight, English, German): slots {adj} {noun} {verb} {noun2} {num} {adv}; in German {Art}/{art2} is the
#: subject's nominative / the object's accusative article, {adj_nom}/{adj_acc}/{adj_pl} the declined adjective.
TEMPLATES: tuple[tuple[float, str, str], ...] = (
    (0.35, "the {adj} {noun} {verb} the {noun2}", "{Art} {adj_nom} {Noun} {verb} {art2} {Noun2}"),
    (0.20, "{num} {adj} {nouns} {verb_pl} the {noun2}", "{Num} {adj_pl} {Nouns} {verb_pl} {art2} {Noun2}"),
    (0.10, "the {noun} is {adj}", "{Art} {Noun} ist {adj_pred}"),
    (0.15, "the {noun} {verb} {num} {nouns2}", "{Art} {Noun} {verb} {num} {Nouns2}"),
    (0.20, "{adv} the {adj} {noun} {verb} the {noun2}", "{Adv} {verb} {art} {adj_nom} {Noun} {art2} {Noun2}"),
)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def render(template: int, slots: dict[str, int]) -> tuple[str, str]:
    """The (English, German) pair of `TEMPLATES[template]` with lexicon entries `slots` (an index per slot)."""
    _, en, de = TEMPLATES[template]
    n = NOUNS[slots.get("noun", 0)]
    n2 = NOUNS[slots.get("noun2", 0)]
    a = ADJECTIVES[slots.get("adj", 0)]
    v = VERBS[slots.get("verb", 0)]
    num = NUMBERS[slots.get("num", 0)]
    adv = ADVERBS[slots.get("adv", 0)]
    english = en.format(adj=a[0], noun=n[0], nouns=n[1], noun2=n2[0], nouns2=n2[1], verb=v[0], verb_pl=v[1],
                        num=num[0], adv=adv[0])
    german = de.format(Art=_cap(ARTICLE[n[2]][0]), art=ARTICLE[n[2]][0], art2=ARTICLE[n2[2]][1], Noun=n[3],
                       Nouns=n[4], Noun2=n2[3], Nouns2=n2[4], adj_nom=a[1] + "e", adj_pl=a[1] + "e", adj_pred=a[1],
                       verb=v[2], verb_pl=v[3], num=num[1], Num=_cap(num[1]), Adv=_cap(adv[1]))
    return _cap(english) + ".", german + "."


def template_slots(template: int) -> dict[str, int]:
    """The slots of a template and the size of each one's lexicon."""
    _, en, _ = TEMPLATES[template]
    sizes = {"adj": len(ADJECTIVES), "noun": len(NOUNS), "nouns": len(NOUNS), "noun2": len(NOUNS),
             "nouns2": len(NOUNS), "verb": len(VERBS), "verb_pl": len(VERBS), "num": len(NUMBERS),
             "adv": len(ADVERBS)}
    alias = {"nouns": "noun", "nouns2": "noun2", "verb_pl": "verb"}
    out: dict[str, int] = {}
    for name, size in sizes.items():
        if "{" + name + "}" in en:
            out[alias.get(name, name)] = size
    return out


def count_pairs() -> dict[str, int]:
    """Distinct sentence pairs per template (English text, the product of its slots' lexicon sizes)."""
    import math

    return {TEMPLATES[t][1]: math.prod(template_slots(t).values()) for t in range(len(TEMPLATES))}


def parse(english: str) -> tuple[int, dict[str, int]] | None:
    """The template and lexicon entries of an English sentence the grammar produces (None if it produces none)."""
    import re

    options = {"adj": [a[0] for a in ADJECTIVES], "noun": [n[0] for n in NOUNS], "nouns": [n[1] for n in NOUNS],
               "noun2": [n[0] for n in NOUNS], "nouns2": [n[1] for n in NOUNS], "verb": [v[0] for v in VERBS],
               "verb_pl": [v[1] for v in VERBS], "num": [n[0] for n in NUMBERS], "adv": [a[0] for a in ADVERBS]}
    alias = {"nouns": "noun", "nouns2": "noun2", "verb_pl": "verb"}
    for t, (_, en, _) in enumerate(TEMPLATES):
        pattern = re.sub(r"\\{(\w+)\\}", lambda m: f"(?P<{m.group(1)}>" + "|".join(map(re.escape, options[m.group(1)]))
                         + ")", re.escape(en))
        match = re.fullmatch(pattern, english[:1].lower() + english[1:].removesuffix("."))
        if match:
            return t, {alias.get(k, k): options[k].index(v) for k, v in match.groupdict().items()}
    return None


def _draw(p: Any) -> tuple[str, str]:
    weights = [w for w, _, _ in TEMPLATES]
    t = int(p.rng.choice(len(TEMPLATES), p=[w / sum(weights) for w in weights]))
    return render(t, {name: int(p.rng.integers(size)) for name, size in template_slots(t).items()})


def plan(p: Any) -> None:
    """Per split: its speakers (disjoint), then distinct sentence pairs and one job per pair."""
    counts, n_speakers = SIZES[p.size]
    seen: set[str] = set()
    train_words: set[str] = set()
    for si, split in enumerate(("train", "dev", "test")):
        spks = p._speakers(n_speakers[si], f"st-{split}-")
        pairs: list[tuple[str, str]] = []
        for _ in range(200 * counts[si] + 1000):
            if len(pairs) == counts[si]:
                break
            english, german = _draw(p)
            words = set(german.rstrip(".").split())
            if english in seen or (split != "train" and not words <= train_words):
                continue
            seen.add(english)
            pairs.append((english, german))
            if split == "train":
                train_words |= words
        if len(pairs) < counts[si]:
            raise ValueError("the st demo grammar ran out of distinct sentences; reduce the size")
        for k, (english, german) in enumerate(pairs):
            spk = spks[k % len(spks)]
            job = p._job(f"st-{split}-{k:05d}", TASK, english, spk)
            p._row(TASK, split, job, spk, translation=german, transcript=english)


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path:
    from superbench.manifest import write_task_manifest

    splits = {s: fill(r) for s, r in p.rows[TASK].items()}
    return write_task_manifest(out / TASK, task=TASK, label_field="translation", labels=[], splits=splits,
                               extra={**extra_common, "source_language": "en", "target_language": "de",
                                      "templates": [[en, de] for _, en, de in TEMPLATES],
                                      "speakers": "disjoint between train, dev and test",
                                      "vocabulary": "dev and test translations use only the training translations' "
                                                    "words"},
                               **common)

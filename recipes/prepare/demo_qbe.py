"""Demo corpus part for QbE: spoken single-word queries searched in short spoken sentences.

One document collection (split `docs`, as QUESST's dev and eval queries search one collection): sentences
spoken by document voices, each holding at most one search term, a few holding each term and some holding
none. Dev and test queries are different terms, each spoken once by query voices that speak no document and
differ between dev and test, so a match must bridge speakers. The ground truth (`groundtruth_dev.txt`,
`groundtruth_test.txt`: "hit <term> <document>") is a sidecar of the manifest. Terms and fillers are this
module's own words (not the shared GRAMMAR pool, whose draws the other tasks depend on); every draw is from
`p.rng`, after the earlier tasks', in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK = "qbe"
ORDER = 4  # draw order among the demo's parts (see recipes.prepare.demo)


@dataclass(frozen=True)
class QbESize:
    terms: int  # per query split (dev and test each)
    docs_per_term: int  # documents holding each term
    distractors: int  # documents holding no term
    query_speakers: int  # per query split
    doc_speakers: int


SIZES: dict[str, QbESize] = {
    "tiny": QbESize(terms=3, docs_per_term=2, distractors=4, query_speakers=2, doc_speakers=3),
    "default": QbESize(terms=8, docs_per_term=3, distractors=16, query_speakers=4, doc_speakers=8),
    "large": QbESize(terms=20, docs_per_term=4, distractors=40, query_speakers=8, doc_speakers=20),
}

#: Search terms (two-syllable nouns); dev and test draw disjoint sets.
TERMS = ("garden", "window", "doctor", "river", "pocket", "basket", "kitchen", "letter", "mountain", "blanket",
         "candle", "pencil", "rabbit", "monkey", "castle", "bottle", "tiger", "ladder", "carpet", "button",
         "hammer", "engine", "dragon", "forest", "island", "jacket", "lemon", "mirror", "napkin", "parrot",
         "rocket", "saddle", "tunnel", "violin", "wallet", "zebra", "camera", "planet", "pillow", "spider")
#: Document fillers, never terms.
WORDS: dict[str, tuple[str, ...]] = {
    "subject": ("my sister", "the farmer", "our neighbour", "a stranger", "the old man", "his cousin"),
    "verb": ("found", "painted", "moved", "cleaned", "watched", "wanted", "sold", "fixed"),
    "adj": ("small", "green", "quiet", "heavy", "broken", "shiny", "dusty", "little"),
    "noun": ("table", "house", "car", "road", "chair", "door", "boat", "wall", "street", "field"),
}


def _pick(p: Any, key: str) -> str:
    return WORDS[key][int(p.rng.integers(len(WORDS[key])))]


def _sentence(p: Any, thing: str) -> str:
    """A short sentence with `thing` as its object, in one of two word orders."""
    subject, verb, adj, place = _pick(p, "subject"), _pick(p, "verb"), _pick(p, "adj"), _pick(p, "noun")
    if p.rng.random() < 0.5:
        return f"{subject} {verb} the {adj} {thing} near the {place}"
    return f"near the {place} {subject} {verb} the {adj} {thing}"


def plan(p: Any) -> None:
    size = SIZES[p.size]
    order = p.rng.permutation(len(TERMS)).tolist()
    terms = {"dev": [TERMS[k] for k in order[:size.terms]],
             "test": [TERMS[k] for k in order[size.terms:2 * size.terms]]}
    doc_speakers = p._speakers(size.doc_speakers, "qbe-doc-")
    contents = [t for split in ("dev", "test") for t in terms[split] for _ in range(size.docs_per_term)]
    contents += [None] * size.distractors
    p.qbe_hits = {"dev": [], "test": []}
    split_of = {t: split for split in terms for t in terms[split]}
    for k, idx in enumerate(p.rng.permutation(len(contents)).tolist()):
        term = contents[idx]
        spk = doc_speakers[k % len(doc_speakers)]
        thing = term if term is not None else _pick(p, "noun")
        job = p._job(f"qbe-doc-{k:04d}", "qbe", _sentence(p, thing), spk)
        p._row(TASK, "docs", job, spk, role="doc")
        if term is not None:
            p.qbe_hits[split_of[term]].append(f"hit {term} {job['id']}")
    for split in ("dev", "test"):
        speakers = p._speakers(size.query_speakers, f"qbe-{split}-")
        for k, term in enumerate(terms[split]):
            spk = speakers[k % len(speakers)]
            job = p._job(f"qbe-{split}-{term}", "qbe", term, spk)
            p._row(TASK, split, job, spk, role="query", term=term)


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path:
    from downstreams.qbe import groundtruth_file
    from superbench.io import atomic_write_text
    from superbench.manifest import Fold, write_task_manifest

    folder = out / TASK
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for split, lines in p.qbe_hits.items():  # sidecars first: the manifest fingerprint reads them
        name = groundtruth_file(split)
        atomic_write_text(folder / name, f"# QbE demo ground truth, {split} queries: hit <term> <document>\n"
                          + "".join(line + "\n" for line in lines))
        names.append(name)
    splits = {s: fill(r) for s, r in p.rows[TASK].items()}
    return write_task_manifest(folder, task=TASK, label_field="role", labels=[], splits=splits,
                               folds=[Fold("default", train="docs", dev="dev", test="test")], sidecars=names,
                               extra={**extra_common, "qbe_terms": TERMS, "qbe_words": WORDS,
                                      "layout": "documents in docs.jsonl (the fold's train split), dev and test "
                                                "queries in dev.jsonl and test.jsonl; ground truth in sidecars"},
                               **common)

"""Demo corpus part for `ood_es` (SUPERB-SG out-of-domain ASR, Spanish), and what the other languages' parts share.

Cross-lingual ASR on eSpeak NG's own voice for the language (`es` here; `cmn` in demo_ood_zh.py, `ar` in
demo_ood_ar.py): sentences from a small grammar written for the language, transcribed in its native script
and normalised as the common-voice preparer normalises Common Voice (NFKC, upper case, no punctuation;
Mandarin without spaces). A speaker is an eSpeak voice variant of that language with a base pitch, rate and
pitch range, each utterance jittered around them and put in coloured noise as every demo job. Speakers are
disjoint between train, dev and test (test voices are never trained on); sentences are distinct, and a dev
or test sentence only uses characters that the training sentences have (the task's inventory is the
training transcripts'). Every draw is from `p.rng`, after the earlier parts', so their corpus is unchanged.
SBCSAE (spontaneous conversation) has no demo part.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

TASK = "ood_es"
ORDER = 8  # draw order among the demo's parts (see recipes.prepare.demo)
VOICE = "es"  # eSpeak NG's language

#: Per size: (sentences per split, speakers per split), splits train/dev/test; the zh and ar parts use it too.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "tiny": ((24, 6, 6), (4, 2, 2)),
    "default": ((240, 30, 30), (16, 4, 4)),
    "large": ((2000, 200, 200), (40, 8, 8)),
}

#: "DET NOUN ADJ VERB DET NOUN ADJ [PLACE]" (masculine nouns, so every pick agrees).
GRAMMAR: dict[str, tuple[str, ...]] = {
    "det": ("el", "un", "mi", "tu", "este"),
    "noun": ("gato", "perro", "niño", "caballo", "barco", "árbol", "maestro", "pájaro", "libro", "coche"),
    "adj": ("rojo", "pequeño", "grande", "viejo", "nuevo", "blanco", "negro", "tranquilo"),
    "verb": ("ve", "busca", "sigue", "lleva", "mira", "tiene", "quiere", "encuentra"),
    "place": ("", "", "en la casa", "por la mañana", "cerca del río", "en el jardín"),
}


def spanish_sentence(pick: Any) -> str:
    words = [pick("det"), pick("noun"), pick("adj"), pick("verb"), pick("det"), pick("noun"), pick("adj"),
             pick("place")]
    return " ".join(w for w in words if w)


def transcript(text: str, voice: str) -> str:
    """The label of a spoken sentence: NFKC, upper case, spaces collapsed; no spaces for Mandarin."""
    text = " ".join(unicodedata.normalize("NFKC", text).upper().split())
    return text.replace(" ", "") if voice == "cmn" else text


def plan_language(p: Any, task: str, voice: str, sentence: Any, grammar: dict, sizes: dict) -> None:
    """Speakers (voice variants of `voice`), then distinct sentences and one job per sentence, per split."""
    from recipes.prepare.demo import Speaker
    from recipes.prepare.espeak import list_variants

    counts, n_speakers = sizes[p.size]
    variants = list_variants()
    order = p.rng.permutation(len(variants)).tolist()
    j = p.jit
    speakers, k = {}, 0
    for si, split in enumerate(("train", "dev", "test")):
        speakers[split] = []
        for _ in range(n_speakers[si]):
            variant = variants[order[k % len(variants)]]
            speakers[split].append(Speaker(f"{task}-{split}-{k:03d}", variant, voice,
                                           int(p.rng.integers(*j.speaker_pitch)), int(p.rng.integers(*j.speaker_rate)),
                                           int(p.rng.integers(*j.speaker_range))))
            k += 1
    pick = lambda key: grammar[key][int(p.rng.integers(len(grammar[key])))]  # noqa: E731
    seen: set[str] = set()
    train_chars: set[str] = set()
    for si, split in enumerate(("train", "dev", "test")):
        texts: list[str] = []
        for _ in range(200 * counts[si] + 1000):
            if len(texts) == counts[si]:
                break
            text = sentence(pick)
            chars = set(transcript(text, voice)) - {" "}
            if text in seen or (split != "train" and not chars <= train_chars):
                continue
            seen.add(text)
            texts.append(text)
            if split == "train":
                train_chars |= chars
        if len(texts) < counts[si]:
            raise ValueError(f"the {task} demo grammar ran out of distinct sentences; reduce the size")
        for n, text in enumerate(texts):
            spk = speakers[split][n % len(speakers[split])]
            job = p._job(f"{task}-{split}-{n:05d}", task, text, spk)
            p._row(task, split, job, spk, text=transcript(text, voice))


def write_language(p: Any, out: Path, fill: Any, common: dict, extra_common: dict, task: str, voice: str,
                   grammar: dict) -> Path:
    from superbench.manifest import write_task_manifest

    splits = {s: fill(r) for s, r in p.rows[task].items()}
    chars = sorted({c for row in splits["train"] for c in row["text"] if not c.isspace()})
    return write_task_manifest(out / task, task=task, label_field="text", labels=chars, splits=splits,
                               extra={**extra_common, "voice": voice, "grammar": grammar,
                                      "inventory": "the training transcripts' characters"}, **common)


def plan(p: Any) -> None:
    plan_language(p, TASK, VOICE, spanish_sentence, GRAMMAR, SIZES)


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path:
    return write_language(p, out, fill, common, extra_common, TASK, VOICE, GRAMMAR)

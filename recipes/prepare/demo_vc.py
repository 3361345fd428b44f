"""Demo corpus part for VC: target voices with their own training speech, source voices reading unseen sentences.

As VCC2020 task 1, each target speaker has training utterances of its own sentences and a few held-out ones for
dev, and the test sentences, unseen in any training or dev utterance, are read by every source voice and by
every target voice (parallel: the target's reading is the reference for MCD and ASV, its text for WER). Sources
never appear in training (any-to-one conversion). Every utterance is an ordinary demo job (eSpeak NG,
per-speaker voice and prosody jitter) rendered near-clean (its own noise 80 dB below the speech). Sentences are
distinct within the part (`distinct_sentences`), so no test sentence is ever said in training. Every draw is from
`p.rng` in `plan`, after the other parts' draws.

One fold per target speaker (train_<t>, dev_<t>, test_<t>): the task trains one model per target. meta.json's
`extra.unconverted` holds, per target, the scores of the source utterances taken unconverted (MCD against the
target's reading, ASV accept rate, WER of the recogniser): what a conversion must beat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "vc"
ORDER = 12  # draw order among the demo's parts (see recipes.prepare.demo)
SAMPLE_RATE = 16000
CLEAN_SNR_DB = 80.0

#: Per size: (target voices, training and dev utterances per target, source voices, test sentences).
SIZES: dict[str, tuple[int, tuple[int, int], int, int]] = {
    "tiny": (1, (6, 2), 2, 2),
    "default": (2, (60, 6), 3, 6),
    "large": (4, (110, 10), 4, 25),  # VCC2020 task 1's counts
}


def distinct_sentences(p: Any, n: int, used: set[str]) -> list[str]:
    """`n` sentences never said in this part (`used`, updated): from the demo's pool of distinct sentences while
    it lasts (tiny and default sizes), then drawn from the grammar, skipping those already said here (the large
    size, whose other tasks take the whole pool)."""
    from recipes.prepare.demo_sd import _sentence

    out = p._take_sentences(min(n, len(p._sentences)))
    used.update(out)
    while len(out) < n:
        sentence = _sentence(p)
        if sentence not in used:
            used.add(sentence)
            out.append(sentence)
    return out


def plan(p: Any) -> None:
    """Targets and their training/dev sentences, then sources, then the test sentences each voice reads."""
    n_targets, (n_train, n_dev), n_sources, n_test = SIZES[p.size]
    targets = p._speakers(n_targets, "vc-tgt-")
    items: dict[str, Any] = {"targets": [], "sources": []}
    used: set[str] = set()
    for t in targets:
        entry: dict[str, Any] = {"speaker": t.id, "train": [], "dev": []}
        for split, n in (("train", n_train), ("dev", n_dev)):
            for k, text in enumerate(distinct_sentences(p, n, used)):
                job = p._job(f"{t.id}-{split}-{k:03d}", "vc", text, t)
                job["snr_db"] = CLEAN_SNR_DB
                entry[split].append(job)
        items["targets"].append(entry)
    sources = p._speakers(n_sources, "vc-src-")
    sentences = distinct_sentences(p, n_test, used)
    readings: dict[str, list[dict[str, Any]]] = {}
    for spk in [*targets, *sources]:
        readings[spk.id] = []
        for k, text in enumerate(sentences):
            job = p._job(f"{spk.id}-test-{k:03d}", "vc", text, spk)
            job["snr_db"] = CLEAN_SNR_DB
            readings[spk.id].append(job)
    items["sources"] = [s.id for s in sources]
    items["sentences"] = sentences
    items["readings"] = readings
    p.vc_items = items


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path | None:
    from superbench.manifest import Fold, write_task_manifest

    items = getattr(p, "vc_items", None)
    if not items:
        return None

    def row(job: dict[str, Any], speaker: str, **conversion: Any) -> dict[str, Any]:
        """A manifest row of `job`'s audio, spoken by `speaker`; `conversion` is its target field."""
        return {"id": job["id"], "audio": f"../{job['path']}", "sample_rate": SAMPLE_RATE, "speaker": speaker,
                "conversion": conversion}

    splits: dict[str, list[dict[str, Any]]] = {}
    folds = []
    for entry in items["targets"]:
        t = entry["speaker"]
        for split in ("train", "dev"):
            splits[f"{split}_{t}"] = fill([row(j, t, target_speaker=t, text=j["text"].upper()) for j in entry[split]])
        test = fill([row(job, src, target_speaker=t, reference=f"../{ref['path']}", text=items["sentences"][k].upper())
                     for src in items["sources"]
                     for k, (job, ref) in enumerate(zip(items["readings"][src], items["readings"][t]))])
        for r in test:  # a source reading is converted to every target: one row per (reading, target)
            r["id"] = f"{r['id']}-to-{t}"
        splits[f"test_{t}"] = test
        folds.append(Fold(t, f"train_{t}", f"dev_{t}", f"test_{t}"))
    (out / TASK).mkdir(parents=True, exist_ok=True)  # the rows' paths are relative to it
    return write_task_manifest(
        out / TASK, task=TASK, label_field="conversion", labels=[], splits=splits, folds=folds,
        extra={**extra_common, "targets": [e["speaker"] for e in items["targets"]], "sources": items["sources"],
               "test_sentences": "unseen in every training and dev utterance; read by every source and target",
               "unconverted": unconverted(splits, folds, out / TASK)},
        **common)


def unconverted(splits: dict[str, list[dict[str, Any]]], folds: list[Any], root: Path) -> dict[str, Any]:
    """Per target, the source utterances scored as if they were the conversion (MCD, ASV accept rate, WER):
    the level a conversion must beat; {} without the `vc` extra."""
    from superbench.vc_metrics import MissingVCPackage, unconverted_scores

    rows = [(r["audio"], r["speaker"], r["conversion"]["reference"], r["conversion"]["target_speaker"],
             r["conversion"]["text"]) for fold in folds for r in splits[fold.test]]
    try:
        return unconverted_scores([(str(root / a), s, str(root / ref), t, text) for a, s, ref, t, text in rows])
    except MissingVCPackage:
        return {}

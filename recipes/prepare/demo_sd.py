"""Demo corpus part for SD: two-speaker mixtures with overlap, built from synthesised single-speaker sentences.

A mixture has speaker A's sentence from the start, speaker B's sentence starting somewhere between a quarter
of the way into A's speech and a little after it ends (so overlaps run from most of A's sentence to none), and
in half the mixtures A's second sentence starting 40-110 % of the way into B's speech: turn taking with
overlapped speech, like a Libri2Mix mixture but with more turns. Each source is an ordinary demo job (eSpeak
NG, per-speaker voice, gain jitter, coloured noise; SNR drawn in 10-30 dB here, as two sources' noises add up).
The reference turns are where each source's speech is: its file minus the lead and trail silence the
synthesis put around the speech (one turn per sentence, like the one-turn-per-utterance RTTM of
LibriSpeech that Libri2Mix uses). The mixtures are summed in `write`, after synthesis, from the sources on
disk; every relative position is drawn in `plan` from `p.rng`, after the other tasks' draws, so the corpus is
deterministic. Speakers are disjoint between train, dev and test.

meta.json's `extra.trivial_der` holds each split's DER of the trivial systems: "always both speakers"
(both outputs active over the whole mixture) and "no speaker" (100 %).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "sd"
ORDER = 5  # draw order among the demo's parts (see recipes.prepare.demo)
SAMPLE_RATE = 16000

#: Per size: (mixtures per split, speakers per split), splits train/dev/test.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "tiny": ((8, 3, 3), (4, 2, 2)),
    "default": ((48, 12, 12), (12, 5, 5)),
    "large": ((400, 80, 80), (60, 16, 16)),
}
#: Where B's speech starts, as a fraction of A's first sentence's speech; A's second sentence, of B's.
B_START = (0.25, 1.05)
A2_START = (0.4, 1.1)
A2_PROBABILITY = 0.5
SNR_DB = (10.0, 30.0)


def _sentence(p: Any) -> str:
    from recipes.prepare.demo import GRAMMAR

    pick = lambda k: GRAMMAR[k][int(p.rng.integers(len(GRAMMAR[k])))]  # noqa: E731
    return " ".join(pick(part) for part in ("det", "adj", "noun", "verb", "det", "adj", "noun"))


def _source(p: Any, uid: str, spk: Any) -> dict[str, Any]:
    job = p._job(uid, "sd-src", _sentence(p), spk)
    job["snr_db"] = float(p.rng.uniform(*SNR_DB))  # drawn after the job's own draws: the order stays fixed
    return job


def plan(p: Any) -> None:
    """Per split: its speakers, then per mixture two of them, their sentences and relative positions."""
    counts, n_speakers = SIZES[p.size]
    p.sd_mixtures = {}
    for si, split in enumerate(("train", "dev", "test")):
        spks = p._speakers(n_speakers[si], f"sd-{split}-")
        mixtures = []
        for k in range(counts[si]):
            a, b = (spks[int(i)] for i in p.rng.choice(len(spks), size=2, replace=False))
            uid = f"sd-{split}-{k:04d}"
            sources = [{"job": _source(p, f"{uid}-a1", a), "speaker": a.id},
                       {"job": _source(p, f"{uid}-b1", b), "speaker": b.id,
                        "start": float(p.rng.uniform(*B_START))}]
            if p.rng.random() < A2_PROBABILITY:
                sources.append({"job": _source(p, f"{uid}-a2", a), "speaker": a.id,
                                "start": float(p.rng.uniform(*A2_START))})
            mixtures.append({"id": uid, "speakers": (a.id, b.id), "sources": sources})
        p.sd_mixtures[split] = mixtures


def _speech_span(job: dict[str, Any], num_samples: int) -> tuple[int, int]:
    """Samples of a source file that hold speech: all but the lead and trail silence of `demo._render`."""
    return int(job["lead"] * SAMPLE_RATE), num_samples - int(job["trail"] * SAMPLE_RATE)


def mix(out: Path, mixture: dict[str, Any]) -> tuple[Any, list[list]]:
    """The mixture's waveform and its reference turns [speaker, start_s, end_s], from the sources on disk.

    Source 0 starts at sample 0; source i > 0 is placed so that its speech starts `start` x (speech length of
    source i - 1) after the speech of source i - 1 starts."""
    import numpy as np
    import soundfile as sf

    placed, turns = [], []
    prev_speech = (0, 0)
    for i, src in enumerate(mixture["sources"]):
        wav, sr = sf.read(out / src["job"]["path"], dtype="float64")
        if sr != SAMPLE_RATE:
            raise ValueError(f"{src['job']['path']}: {sr} Hz, expected {SAMPLE_RATE}")
        lo, hi = _speech_span(src["job"], len(wav))
        if i == 0:
            offset = 0
        else:
            begin = prev_speech[0] + int(round(src["start"] * (prev_speech[1] - prev_speech[0])))
            offset = max(0, begin - lo)
        placed.append((offset, wav))
        prev_speech = (offset + lo, offset + hi)
        turns.append([src["speaker"], round((offset + lo) / SAMPLE_RATE, 3), round((offset + hi) / SAMPLE_RATE, 3)])
    total = max(offset + len(wav) for offset, wav in placed)
    out_wav = np.zeros(total)
    for offset, wav in placed:
        out_wav[offset:offset + len(wav)] += wav
    peak = float(np.max(np.abs(out_wav)))
    if peak > 0.99:
        out_wav *= 0.99 / peak
    return out_wav, sorted(turns, key=lambda t: (t[1], t[0]))


def trivial_der(rows: list[dict[str, Any]]) -> dict[str, float]:
    """DER (percent) of "always both speakers" and "no speaker" on manifest rows."""
    from downstreams.diarization import corpus_der

    refs = [r["segments"] for r in rows]
    both = [[["x", 0.0, r["num_samples"] / r["sample_rate"]], ["y", 0.0, r["num_samples"] / r["sample_rate"]]]
            for r in rows]
    return {"always_both_speakers": round(corpus_der(refs, both).der, 2),
            "no_speaker": round(corpus_der(refs, [[] for _ in rows]).der, 2)}


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path | None:
    from superbench.audio import save_wav
    from superbench.manifest import write_task_manifest

    mixtures = getattr(p, "sd_mixtures", None)
    if not mixtures:
        return None
    folder = out / "audio" / "sd"
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, items in mixtures.items():
        rows = []
        for m in items:
            wav, turns = mix(out, m)
            save_wav(folder / f"{m['id']}.wav", wav, SAMPLE_RATE)
            rows.append({"id": m["id"], "audio": f"../audio/sd/{m['id']}.wav", "sample_rate": SAMPLE_RATE,
                         "num_samples": int(len(wav)), "speaker": "+".join(m["speakers"]), "segments": turns})
        splits[split] = rows
    return write_task_manifest(out / TASK, task=TASK, label_field="segments", labels=[], splits=splits,
                               extra={**extra_common, "speakers": "disjoint between train, dev and test",
                                      "mixing": {"b_start": B_START, "a2_start": A2_START,
                                                 "a2_probability": A2_PROBABILITY, "source_snr_db": SNR_DB},
                                      "trivial_der": {s: trivial_der(r) for s, r in splits.items()}},
                               **common)

"""Demo corpus part for SS: two-speaker mixtures of demo voices, the second speaker 0-5 dB below the first.

As the SD part, each source is an ordinary demo job (eSpeak NG, per-speaker voice), here rendered near-clean
(its own noise 80 dB below the speech). As Libri2Mix's `min` mode, both sources are cut to the shorter one and
summed from the same start; the second is scaled to an SNR against the first drawn uniformly in 0-5 dB. The
mixture is `mix_clean` (no noise). Speakers are disjoint between train, dev and test. Every draw is from
`p.rng` in `plan`, after the other parts' draws.

meta.json's `extra.mixture_input` holds each split's metrics of the unprocessed mixture taken as both
estimates (SI-SDR, STOI, PESQ): the chance level of the task (its SI-SDRi is 0 by definition).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "ss"
ORDER = 7  # draw order among the demo's parts (see recipes.prepare.demo)
SAMPLE_RATE = 16000

#: Per size: (mixtures per split, speakers per split), splits train/dev/test.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "tiny": ((8, 3, 3), (4, 2, 2)),
    "default": ((480, 20, 40), (40, 5, 8)),  # 120 train mixtures: SI-SDRi 0.5 [-0.5, 1.5] dB
    "large": ((1000, 100, 100), (60, 12, 12)),
}
LEVEL_DB = (0.0, 5.0)
CLEAN_SNR_DB = 80.0


def plan(p: Any) -> None:
    """Per split: its speakers, then per mixture two of them, their sentences and the second one's level."""
    from recipes.prepare.demo_sd import _sentence

    counts, n_speakers = SIZES[p.size]
    p.ss_items = {}
    for si, split in enumerate(("train", "dev", "test")):
        spks = p._speakers(n_speakers[si], f"ss-{split}-")
        items = []
        for k in range(counts[si]):
            a, b = (spks[int(i)] for i in p.rng.choice(len(spks), size=2, replace=False))
            uid = f"ss-{split}-{k:04d}"
            jobs = [p._job(f"{uid}-s1", "ss-src", _sentence(p), a), p._job(f"{uid}-s2", "ss-src", _sentence(p), b)]
            for job in jobs:
                job["snr_db"] = CLEAN_SNR_DB
            items.append({"id": uid, "jobs": jobs, "speakers": (a.id, b.id),
                          "level_db": float(p.rng.uniform(*LEVEL_DB))})
        p.ss_items[split] = items


def mix(s1: Any, s2: Any, level_db: float) -> tuple[Any, Any, Any]:
    """(s1, s2, mixture): cut to the shorter, s2 at `level_db` below s1, all scaled alike below clipping."""
    import numpy as np

    n = min(len(s1), len(s2))
    s1, s2 = s1[:n], s2[:n]
    s2 = s2 * np.sqrt(np.mean(s1 ** 2) / np.mean(s2 ** 2) / 10 ** (level_db / 10))
    mixture = s1 + s2
    peak = float(np.max(np.abs(np.concatenate([mixture, s1, s2]))))
    scale = 0.99 / peak if peak > 0.99 else 1.0
    return s1 * scale, s2 * scale, mixture * scale


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path | None:
    import soundfile as sf

    from recipes.prepare.demo_se import input_metrics
    from superbench.audio import save_wav
    from superbench.manifest import write_task_manifest

    items = getattr(p, "ss_items", None)
    if not items:
        return None
    folder = out / "audio" / "ss"
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, entries in items.items():
        rows = []
        for e in entries:
            s1, s2 = (sf.read(out / job["path"], dtype="float64")[0] for job in e["jobs"])
            s1, s2, mixture = mix(s1, s2, e["level_db"])
            for name, wav in (("s1", s1), ("s2", s2), ("mix", mixture)):
                save_wav(folder / f"{e['id']}.{name}.wav", wav, SAMPLE_RATE)
            rows.append({"id": e["id"], "audio": f"../audio/ss/{e['id']}.mix.wav", "sample_rate": SAMPLE_RATE,
                         "num_samples": len(mixture), "speaker": "+".join(e["speakers"]),
                         "sources": [f"../audio/ss/{e['id']}.s1.wav", f"../audio/ss/{e['id']}.s2.wav"],
                         "level_db": round(e["level_db"], 3)})
        splits[split] = rows
    (out / TASK).mkdir(parents=True, exist_ok=True)  # the rows' paths are relative to it
    return write_task_manifest(
        out / TASK, task=TASK, label_field="sources", labels=[], splits=splits,
        extra={**extra_common, "speakers": "disjoint between train, dev and test", "level_db": list(LEVEL_DB),
               "mode": "min (cut to the shorter source), mix_clean",
               "mixture_input": {s: input_metrics(r, out / TASK, ("stoi", "pesq")) for s, r in splits.items()}},
        **common)

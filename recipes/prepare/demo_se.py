"""Demo corpus part for SE: demo speech mixed with synthesised noise at 0, 5, 10 or 15 dB.

Each utterance is an ordinary demo job (eSpeak NG, per-speaker voice, gain jitter) rendered near-clean (its own
coloured noise 80 dB below the speech, inaudible), then mixed in `write` with one of three noises, drawn per
utterance: `coloured` (stationary noise of a spectral slope between white and brown, demo._coloured_noise),
`babble` (three other utterances of the same split summed, circularly shifted: speech-shaped, non-stationary)
and `bursts` (coloured noise switched on and off in 50-400 ms bursts: non-stationary). The SNR, drawn from
{0, 5, 10, 15} dB, is that of the whole clean file against the whole noise. Speakers are disjoint between
train, dev and test, so test voices are never trained on. The clean file is the reference (`sources`); both
files are scaled by the same factor when the mixture would clip. Every draw is from `p.rng` in `plan`, after
the other parts' draws, so the corpus is deterministic.

meta.json's `extra.noisy_input` holds each split's metrics of the unprocessed noisy input (PESQ, STOI, SI-SDR):
the chance level of the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASK = "se"
ORDER = 6  # draw order among the demo's parts (see recipes.prepare.demo)
SAMPLE_RATE = 16000

#: Per size: (utterances per split, speakers per split), splits train/dev/test.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "tiny": ((8, 3, 3), (3, 2, 2)),
    "default": ((480, 20, 40), (40, 5, 8)),  # 120 train utterances: PESQ +0.07 [-0.05, 0.17] over the input
    "large": ((1000, 100, 100), (60, 12, 12)),
}
SNRS_DB = (0.0, 5.0, 10.0, 15.0)
NOISES = ("coloured", "babble", "bursts")
#: The near-clean rendering: the demo job's own noise this far below the speech.
CLEAN_SNR_DB = 80.0


def _sentence(p: Any) -> str:
    from recipes.prepare.demo_sd import _sentence as sentence

    return sentence(p)


def plan(p: Any) -> None:
    """Per split: its speakers, then per utterance a sentence, a noise kind, an SNR and the noise's seed."""
    counts, n_speakers = SIZES[p.size]
    p.se_items = {}
    for si, split in enumerate(("train", "dev", "test")):
        spks = p._speakers(n_speakers[si], f"se-{split}-")
        items = []
        for k in range(counts[si]):
            spk = spks[k % len(spks)]
            job = p._job(f"se-{split}-{k:04d}", "se-clean", _sentence(p), spk)
            job["snr_db"] = CLEAN_SNR_DB
            items.append({"id": job["id"], "job": job, "speaker": spk.id,
                          "noise": NOISES[int(p.rng.integers(len(NOISES)))],
                          "snr_db": float(SNRS_DB[int(p.rng.integers(len(SNRS_DB)))]),
                          "seed": int(p.rng.integers(2**31))})
        p.se_items[split] = items


def noise_for(kind: str, n: int, seed: int, others: list[Any]) -> Any:
    """Unit-power noise of `n` samples: coloured, babble (from `others`, clean waveforms) or bursts."""
    import numpy as np

    from recipes.prepare.demo import _coloured_noise

    rng = np.random.default_rng(seed)
    if kind == "babble" and others:
        picks = rng.choice(len(others), size=min(3, len(others)), replace=False)
        noise = np.zeros(n)
        for i in picks:
            other = np.resize(others[int(i)], n)  # repeated to length
            noise += np.roll(other, int(rng.integers(n)))
    else:
        noise = _coloured_noise(rng, n, float(rng.uniform(0.0, 2.0)))
        if kind == "bursts":
            gate = np.zeros(n)
            t = int(rng.integers(0, SAMPLE_RATE // 5))
            while t < n:
                length = int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
                gate[t:t + length] = 1.0
                t += length + int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
            noise = noise * gate
    power = float(np.mean(noise ** 2))
    return noise / np.sqrt(power) if power > 0 else noise


def mix(clean: Any, noise: Any, snr_db: float) -> tuple[Any, Any]:
    """(clean, noisy) with the noise at `snr_db` below the clean file's power, both scaled alike below clipping."""
    import numpy as np

    noisy = clean + noise * np.sqrt(np.mean(clean ** 2) / 10 ** (snr_db / 10))
    peak = max(float(np.max(np.abs(noisy))), float(np.max(np.abs(clean))))
    scale = 0.99 / peak if peak > 0.99 else 1.0
    return clean * scale, noisy * scale


def input_metrics(rows: list[dict[str, Any]], root: Path, names: tuple[str, ...]) -> dict[str, float]:
    """Mean metrics of the unprocessed mixture taken as the estimate of every source (the chance level), over the
    utterances where they are defined (`undefined`: how many were not, e.g. no speech found by PESQ); {} without
    the metric packages (`superbench[enhancement]`)."""
    import numpy as np
    import soundfile as sf

    from superbench.audio_metrics import MissingMetricPackage, si_sdr, utterance_metrics

    values: dict[str, list[float]] = {n: [] for n in (*names, "sisdr")}
    undefined = 0
    for row in rows:
        mixture = sf.read(root / row["audio"], dtype="float64")[0]
        refs = [sf.read(root / s, dtype="float64")[0] for s in row["sources"]]
        try:
            scores = utterance_metrics(refs, [mixture] * len(refs), mixture, names)
        except MissingMetricPackage:
            return {}
        except ValueError:
            undefined += 1
            continue
        scores["sisdr"] = float(np.mean([si_sdr(r, mixture) for r in refs]))
        for name, value in scores.items():
            values[name].append(value)
    return {**{n: round(float(np.mean(v)), 4) for n, v in values.items() if v}, "undefined": undefined}


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path | None:
    import soundfile as sf

    from superbench.audio import save_wav
    from superbench.manifest import write_task_manifest

    items = getattr(p, "se_items", None)
    if not items:
        return None
    folder = out / "audio" / "se"
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, entries in items.items():
        cleans = [sf.read(out / e["job"]["path"], dtype="float64")[0] for e in entries]
        rows = []
        for k, (e, clean) in enumerate(zip(entries, cleans)):
            others = [c for j, c in enumerate(cleans) if j != k]
            clean, noisy = mix(clean, noise_for(e["noise"], len(clean), e["seed"], others), e["snr_db"])
            save_wav(folder / f"{e['id']}.clean.wav", clean, SAMPLE_RATE)
            save_wav(folder / f"{e['id']}.noisy.wav", noisy, SAMPLE_RATE)
            rows.append({"id": e["id"], "audio": f"../audio/se/{e['id']}.noisy.wav", "sample_rate": SAMPLE_RATE,
                         "num_samples": len(noisy), "speaker": e["speaker"],
                         "sources": [f"../audio/se/{e['id']}.clean.wav"], "noise": e["noise"], "snr_db": e["snr_db"]})
        splits[split] = rows
    (out / TASK).mkdir(parents=True, exist_ok=True)  # the rows' paths are relative to it
    return write_task_manifest(
        out / TASK, task=TASK, label_field="sources", labels=[], splits=splits,
        extra={**extra_common, "speakers": "disjoint between train, dev and test", "snr_db": list(SNRS_DB),
               "noises": {"coloured": "stationary, slope white..brown", "babble": "3 other utterances of the split",
                          "bursts": "coloured noise in 50-400 ms bursts"},
               "noisy_input": {s: input_metrics(r, out / TASK, ("pesq", "stoi")) for s, r in splits.items()}},
        **common)

"""Libri2Mix (Cosentino et al., 2020), 16 kHz `min`, `mix_clean` -> SS manifest (SUPERB-SG source separation).

The corpus as LibriMix's generator writes it (s3prl's separation_stft/scripts/LibriMix/data_prepare.py reads
this layout):

    ROOT/wav16k/min/{train-100,dev,test}/{mix_clean,s1,s2}/<mixture id>.wav

ROOT may also be the `wav16k/min` folder itself. Splits as s3prl: train-100 trains, dev is subsampled to 1,000
mixtures exactly as s3prl's scripts/LibriMix/subsample.py does (the sorted ids shuffled by Python's
`random.seed(7)`, the first 1,000 kept, sorted), test is the whole test set. A row's `audio` is the mix_clean
file, its `sources` the s1 and s2 files of the same name. Every triple is checked before anything is written
(`recipes.prepare.paired_audio`): a file without its partners, a source of another length than its mixture,
audio that is not mono 16 kHz, each named.
"""

from __future__ import annotations

import random
from pathlib import Path

from recipes.prepare import Problems, default_out, simple_preparer
from recipes.prepare.paired_audio import paired_rows
from superbench.manifest import write_task_manifest

SPLITS = {"train": "train-100", "dev": "dev", "test": "test"}
#: s3prl's subsample.py: --sample 1000 --seed 7.
DEV_SIZE, DEV_SEED = 1000, 7


def subsample(ids: list[str], size: int = DEV_SIZE, seed: int = DEV_SEED) -> list[str]:
    """s3prl's subsample.py: sort, shuffle with Python's random seeded `seed`, keep the first `size`, sort."""
    chosen = sorted(ids)
    random.Random(seed).shuffle(chosen)  # the same Mersenne Twister stream as random.seed(seed); random.shuffle
    return sorted(chosen[:size])


def _base(root: Path) -> Path:
    for candidate in (root / "wav16k" / "min", root):
        if (candidate / "test" / "mix_clean").is_dir():
            return candidate
    raise FileNotFoundError(f"{root}: no wav16k/min/{{train-100,dev,test}}/{{mix_clean,s1,s2}} folders (Libri2Mix, "
                            f"16 kHz, min mode)")


def prepare_libri2mix(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT in the layout of the module doc -> OUT/ss; returns OUT/ss."""
    root = Path(root)
    base = _base(root)
    out = Path(out) if out else default_out("libri2mix")
    problems = Problems("libri2mix", skip_bad)
    splits = {}
    for split, folder in SPLITS.items():
        where = base / folder
        keep = lambda name: True  # noqa: E731
        if split == "dev":  # drawn from the s1 ids, as subsample.py (before any pair is checked)
            kept = set(subsample([p.stem for p in (where / "s1").glob("*.wav")]))
            keep = kept.__contains__
        splits[split] = paired_rows(where / "mix_clean", [where / "s1", where / "s2"], problems, keep)
    problems.raise_if_any()
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"{base / SPLITS[split]}: no usable mixture")
    return write_task_manifest(out / "ss", task="ss", corpus="libri2mix", version="16k-min-mix_clean",
                               label_field="sources", labels=[], splits=splits,
                               extra={"layout": "LibriMix generator output, wav16k/min", "mixture": "mix_clean",
                                      "sources": ["s1", "s2"], "dev": f"{DEV_SIZE} of dev, s3prl subsample.py "
                                                                        f"(seed {DEV_SEED})"})


PREPARER = simple_preparer("libri2mix", prepare_libri2mix, "ss")

"""VoxCeleb1 -> SID manifest: iden_split.txt (1 train, 2 dev, 3 test), speaker = first path component."""

from __future__ import annotations

from pathlib import Path

from recipes.prepare import Problems, audio_row, default_out
from superbench.manifest import write_task_manifest

SPLITS = {"1": "train", "2": "dev", "3": "test"}


def prepare_voxceleb1(root: str | Path, out: str | Path | None = None, split_file: str | Path | None = None,
                      skip_bad: bool = False) -> Path:
    """ROOT/wav/idXXXXX/<video>/<n>.wav plus iden_split.txt (in ROOT unless `split_file`); returns OUT/sid."""
    root = Path(root)
    out = Path(out) if out else default_out("voxceleb1")
    split_file = Path(split_file) if split_file else root / "iden_split.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"VoxCeleb1 identification split not found: {split_file}")
    wav_root = root / "wav" if (root / "wav").is_dir() else root
    problems = Problems("voxceleb1", skip_bad)
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for n, line in enumerate(split_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in SPLITS:
            problems.add(f"{split_file}:{n}: expected '<1|2|3> <path>', got {line!r}")
            continue
        rel = parts[1]
        path = wav_root / rel
        if not path.is_file():
            problems.add(f"{split_file}:{n}: names a missing file {path}")
            continue
        speaker = rel.split("/")[0]
        row = audio_row(rel.removesuffix(".wav").replace("/", "-"), path, speaker, problems, label=speaker)
        if row:
            splits[SPLITS[parts[0]]].append(row)
    problems.raise_if_any()
    labels = sorted({r["label"] for rows in splits.values() for r in rows})
    # speakers in dev/test but not in train: the manifest's one rule refuses them (ManifestError, before writing)
    return write_task_manifest(out / "sid", task="sid", corpus="voxceleb1", version="1.1", label_field="label",
                               labels=labels, splits=splits)

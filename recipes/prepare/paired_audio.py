"""Paired audio folders (a mixture folder and one folder per source, files matched by name) -> manifest rows.

What speech enhancement and separation corpora share (Voicebank-DEMAND's noisy/clean folders, Libri2Mix's
mix_clean/s1/s2): a row's `audio` is the mixture, its `sources` the partner files, in source order. Every pair
is checked before anything is written, each problem naming the file: a mixture without a partner, a partner
without a mixture, a file that is not mono 16 kHz audio, a partner of another length than its mixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from recipes.prepare import Problems

SAMPLE_RATE = 16000


def _wavs(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found")
    return {p.stem: p for p in sorted(folder.glob("*.wav"))}


def _info(path: Path, problems: Problems) -> int | None:
    """Frames of a mono 16 kHz file; None (and a problem naming it) for anything else."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # unreadable: named with the others
        problems.add(f"{path}: cannot be read as audio ({type(exc).__name__}: {exc})")
        return None
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        problems.add(f"{path}: {info.samplerate} Hz, {info.channels} channel(s); needs mono {SAMPLE_RATE} Hz "
                     f"(resample the corpus to 16 kHz first)")
        return None
    if info.frames < 1:
        problems.add(f"{path}: empty")
        return None
    return int(info.frames)


def paired_rows(mixtures: Path, sources: list[Path], problems: Problems,
                keep: Callable[[str], bool] = lambda name: True,
                speaker: Callable[[str], str] = lambda name: "") -> list[dict]:
    """One row per mixture file of `mixtures` whose name `keep` accepts, with its partners in `sources`."""
    mix = {name: p for name, p in _wavs(mixtures).items() if keep(name)}
    partners = [{name: p for name, p in _wavs(folder).items() if keep(name)} for folder in sources]
    for files in partners:
        for name in sorted(set(files) - set(mix)):
            problems.add(f"{files[name]}: no mixture {mixtures / (name + '.wav')} for this source")
    rows = []
    for name, path in mix.items():
        missing = [folder / f"{name}.wav" for folder, files in zip(sources, partners) if name not in files]
        if missing:
            problems.add(f"{path}: no partner {', '.join(map(str, missing))}")
            continue
        frames = _info(path, problems)
        lengths = [_info(files[name], problems) for files in partners]
        if frames is None or None in lengths:
            continue
        wrong = [f"{files[name]} ({n} samples)" for files, n in zip(partners, lengths) if n != frames]
        if wrong:
            problems.add(f"{path}: {frames} samples, but its partner(s) {', '.join(wrong)}")
            continue
        rows.append({"id": name, "audio": str(path.resolve()), "sample_rate": SAMPLE_RATE, "num_samples": frames,
                     "speaker": speaker(name), "sources": [str(files[name].resolve()) for files in partners]})
    return rows

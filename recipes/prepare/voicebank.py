"""Voicebank-DEMAND (Valentini-Botinhao et al., 2016) at 16 kHz -> SE manifest (SUPERB-SG speech enhancement).

The corpus in its standard layout (the Edinburgh DataShare release, resampled to 16 kHz as s3prl's recipe
reads it), folder names with or without the `_16k` suffix s3prl's scripts/Voicebank/data_prepare.py uses:

    ROOT/clean_trainset_28spk_wav[_16k]/p226_001.wav ...   ROOT/noisy_trainset_28spk_wav[_16k]/p226_001.wav ...
    ROOT/clean_testset_wav[_16k]/p232_001.wav ...          ROOT/noisy_testset_wav[_16k]/p232_001.wav ...

Splits as s3prl's data_prepare.py: dev is the training set's speakers p226 and p287 (held out of train), train
the other 26 speakers, test the test set (speakers p232 and p257). A row's `audio` is the noisy file, its
`sources` the clean file of the same name. Every pair is checked before anything is written
(`recipes.prepare.paired_audio`): a file without its partner, a partner of another length, audio that is not
mono 16 kHz, each named.
"""

from __future__ import annotations

from pathlib import Path

from recipes.prepare import Problems, default_out, simple_preparer
from recipes.prepare.paired_audio import paired_rows
from superbench.manifest import write_task_manifest

#: The training set's speakers s3prl holds out as dev (scripts/Voicebank/data_prepare.py).
DEV_SPEAKERS = ("p226", "p287")


def _folder(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}_16k", root / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{root / name}[_16k] not found (Voicebank-DEMAND's folders: clean_trainset_28spk_wav, "
                            f"noisy_trainset_28spk_wav, clean_testset_wav, noisy_testset_wav, at 16 kHz)")


def speaker_of(name: str) -> str:
    return name.split("_")[0]


def prepare_voicebank(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT in the layout of the module doc -> OUT/se; returns OUT/se."""
    root = Path(root)
    out = Path(out) if out else default_out("voicebank-demand")
    problems = Problems("voicebank-demand", skip_bad)
    train_noisy, train_clean = _folder(root, "noisy_trainset_28spk_wav"), _folder(root, "clean_trainset_28spk_wav")
    test_noisy, test_clean = _folder(root, "noisy_testset_wav"), _folder(root, "clean_testset_wav")
    held_out = lambda name: speaker_of(name) in DEV_SPEAKERS  # noqa: E731
    splits = {"train": paired_rows(train_noisy, [train_clean], problems, lambda n: not held_out(n), speaker_of),
              "dev": paired_rows(train_noisy, [train_clean], problems, held_out, speaker_of),
              "test": paired_rows(test_noisy, [test_clean], problems, speaker=speaker_of)}
    problems.raise_if_any()
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"{root}: no usable {split} pair (dev is speakers {', '.join(DEV_SPEAKERS)} of the "
                             f"training set)")
    return write_task_manifest(out / "se", task="se", corpus="voicebank-demand", version="28spk-16k",
                               label_field="sources", labels=[], splits=splits,
                               extra={"layout": "Edinburgh DataShare folders at 16 kHz", "source": "clean",
                                      "mixture": "noisy", "dev_speakers": list(DEV_SPEAKERS)})


PREPARER = simple_preparer("voicebank-demand", prepare_voicebank, "se")

"""Speech Commands v0.01 -> KS manifest, the SUPERB/s3prl way.

* 12 classes: yes no up down left right on off stop go, `_unknown_` (every other word folder)
  and `_silence_`.
* dev = files named in validation_list.txt, test = files named in testing_list.txt, train = the rest
  (the lists are the corpus's own hash-based split, which s3prl's split_dataset reproduces).
* `_background_noise_/*.wav` is cut into non-overlapping 1 s `_silence_` clips (written under
  OUT/audio/ks_silence/); clip k of each file goes to dev if k % 10 == 0, test if k % 10 == 1,
  else train. s3prl crops a random second on the fly instead; fixed clips keep runs reproducible.
* With `test_root` (the separate speech_commands_test_set_v0.01 folder, which s3prl tests on),
  test comes from that folder's class folders and testing_list.txt files are left out, as in s3prl.
* Audio is any format soundfile reads (wav, flac, ogg/opus, mp3, ...). What is left out or relabelled
  on purpose (files in other formats, word folders outside `words` that become `_unknown_`, testing_list
  files replaced by the test folder) is logged and kept in meta.json `extra.dropped`, which the
  `superbench data prepare` summary prints.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from recipes.prepare import Dropped, Problems, audio_extensions, audio_row, default_out, probe_audio
from superbench.manifest import write_task_manifest

log = logging.getLogger(__name__)

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
LABELS = WORDS + ("_unknown_", "_silence_")
SILENCE_SECONDS = 1.0


def _read_list(path: Path, root: Path, problems: Problems) -> set[str]:
    if not path.is_file():
        problems.add(f"{path}: missing split list")
        return set()
    names = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        rel = line.strip()
        if not rel:
            continue
        if not (root / rel).is_file():
            problems.add(f"{path}:{n}: names a missing file {root / rel}")
        names.add(rel)
    return names


def _speaker(name: str) -> str:
    return name.split("_nohash_")[0]


def _audio_files(folder: Path, dropped: Dropped) -> list[Path]:
    """Every file of `folder` in a format soundfile reads; the others are recorded as dropped."""
    exts = audio_extensions()
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower().lstrip(".") in exts:
            out.append(path)
        else:
            dropped.add("file(s) in a format soundfile does not read", str(path))
    return out


def prepare_speech_commands(root: str | Path, out: str | Path | None = None, test_root: str | Path | None = None,
                            skip_bad: bool = False, words: Sequence[str] = WORDS) -> Path:
    """Index a Speech Commands v0.01 folder; returns OUT/ks. `words` are the keyword classes (SUPERB's ten
    by default); every other word folder is `_unknown_`."""
    from superbench.audio import load_audio, save_wav

    root = Path(root)
    out = Path(out) if out else default_out("speech_commands")
    if not root.is_dir():
        raise FileNotFoundError(f"Speech Commands root not found: {root}")
    words = tuple(words)
    labels = words + ("_unknown_", "_silence_")
    problems = Problems("speech_commands", skip_bad)
    dropped = Dropped("speech_commands")
    dev = _read_list(root / "validation_list.txt", root, problems)
    test = _read_list(root / "testing_list.txt", root, problems)
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    ids: dict[str, Path] = {}
    word_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    for d in word_dirs:
        label = d.name if d.name in words else "_unknown_"
        files = _audio_files(d, dropped)
        if label == "_unknown_" and files:
            dropped.add("word folder(s) not among the keywords, labelled _unknown_", f"{d.name} ({len(files)})")
        for wav in files:
            rel = f"{d.name}/{wav.name}"
            if rel in test:
                if test_root is not None:
                    dropped.add("testing_list.txt file(s) left out (the test folder is the test set)", rel)
                    continue
                split = "test"
            else:
                split = "dev" if rel in dev else "train"
            uid = f"{d.name}-{wav.stem}"
            if uid in ids:
                problems.add(f"{wav}: same name as {ids[uid]} in another format (id {uid!r} twice)")
                continue
            ids[uid] = wav
            row = audio_row(uid, wav, _speaker(wav.name), problems, label=label)
            if row:
                splits[split].append(row)

    noise_dir = root / "_background_noise_"
    clip_dir = out / "audio" / "ks_silence"
    silence_plan = []
    for wav in _audio_files(noise_dir, dropped) if noise_dir.is_dir() else []:
        if probe_audio(wav, problems) is None:
            continue
        try:
            audio = load_audio(wav)
        except ValueError as exc:
            problems.add(str(exc))
            continue
        n = int(SILENCE_SECONDS * 16000)
        for k in range(len(audio) // n):
            split = "dev" if k % 10 == 0 else "test" if k % 10 == 1 else "train"
            if split == "test" and test_root is not None:
                continue
            silence_plan.append((f"_silence_-{wav.stem}-{k:03d}", audio[k * n:(k + 1) * n], split))
    if not silence_plan and test_root is None:
        problems.add(f"{noise_dir}: no background noise to cut _silence_ clips from")

    if test_root is not None:
        test_root = Path(test_root)
        if not test_root.is_dir():
            raise FileNotFoundError(f"Speech Commands test set folder not found: {test_root}")
        for d in sorted(x for x in test_root.iterdir() if x.is_dir()):
            if d.name not in labels:
                problems.add(f"{d}: test-set folder is not one of the {len(labels)} classes")
                continue
            for wav in _audio_files(d, dropped):
                row = audio_row(f"testset-{d.name}-{wav.stem}", wav, _speaker(wav.name), problems, label=d.name)
                if row:
                    splits["test"].append(row)
    problems.raise_if_any()

    for uid, clip, split in silence_plan:
        path = clip_dir / f"{uid}.wav"
        save_wav(path, clip)
        splits[split].append({"id": uid, "audio": f"../audio/ks_silence/{path.name}", "sample_rate": 16000,
                              "num_samples": len(clip), "speaker": "none", "label": "_silence_"})
    for split, rows in splits.items():
        missing = sorted(set(labels) - {r["label"] for r in rows})
        if missing:
            log.warning("speech_commands: split %s has no %s", split, ", ".join(missing))
    extra = {"test_set": "official test folder" if test_root else "testing_list.txt",
             "silence": "1 s clips of _background_noise_, clip k%10: 0 dev, 1 test"}
    if words != WORDS:
        extra["words"] = list(words)
    if dropped.reasons:
        extra["dropped"] = dropped.report()
    return write_task_manifest(out / "ks", task="ks", corpus="speech_commands", version="v0.01",
                               label_field="label", labels=labels, splits=splits, extra=extra)

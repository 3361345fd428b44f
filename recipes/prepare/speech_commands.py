"""Speech Commands v0.01 -> KS manifest, the SUPERB/s3prl way.

* 12 classes: yes no up down left right on off stop go, `_unknown_` (every other word folder)
  and `_silence_`.
* dev = files named in validation_list.txt, test = files named in testing_list.txt, train = the rest
  (the lists are the corpus's own hash-based split, which s3prl's split_dataset reproduces).
* Without both lists (a copy that lost them, a re-packaged corpus) the split is the rule the lists
  were made with: `which_set` from the corpus README / TensorFlow's speech_commands input_data.py, a
  SHA-1 of the file name up to `_nohash_` (so a speaker's files stay together), 10% dev, 10% test.
  This is logged and recorded in meta.json `extra.split_rule`. With only one list present the
  preparer refuses: mixing the list with the hash rule could put a speaker on both sides.
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

import hashlib
import logging
import re
from pathlib import Path
from typing import Sequence

from recipes.prepare import Dropped, PrepareError, Problems, audio_extensions, audio_row, default_out, probe_audio
from superbench.manifest import write_task_manifest
from superbench.preparers import Preparer, PrepareRequest

log = logging.getLogger(__name__)

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
LABELS = WORDS + ("_unknown_", "_silence_")
SILENCE_SECONDS = 1.0
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # the corpus README's constant (~134M)
VALIDATION_PERCENTAGE = TESTING_PERCENTAGE = 10.0
HASH_SPLIT_RULE = "hash of file name (Speech Commands which_set, 10% validation, 10% testing)"


def which_set(filename: str, validation_percentage: float = VALIDATION_PERCENTAGE,
              testing_percentage: float = TESTING_PERCENTAGE) -> str:
    """The corpus's own split rule ("train", "dev" or "test"), as `which_set` in the Speech Commands
    README: everything from `_nohash_` on is ignored, so all files of one speaker land together."""
    hash_name = re.sub(r"_nohash_.*$", "", Path(filename).name)
    hash_hex = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage_hash = (int(hash_hex, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage_hash < validation_percentage:
        return "dev"
    if percentage_hash < validation_percentage + testing_percentage:
        return "test"
    return "train"


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
    dev_list, test_list = root / "validation_list.txt", root / "testing_list.txt"
    if dev_list.is_file() != test_list.is_file():
        have, lack = (dev_list, test_list) if dev_list.is_file() else (test_list, dev_list)
        raise PrepareError(f"speech_commands: {have.name} is there but {lack} is missing; give both lists, or "
                           "remove both to split by the corpus's file-name hash rule (one list plus the hash "
                           "rule could put a speaker in two splits)")
    hash_split = not dev_list.is_file()
    if hash_split:
        log.warning("speech_commands: no validation_list.txt / testing_list.txt in %s; splitting by %s",
                    root, HASH_SPLIT_RULE)
        dev, test = set(), set()
    else:
        dev = _read_list(dev_list, root, problems)
        test = _read_list(test_list, root, problems)
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
            if hash_split:
                split = which_set(wav.name)
            else:
                split = "test" if rel in test else "dev" if rel in dev else "train"
            if split == "test" and test_root is not None:
                source = "hashed-to-test" if hash_split else "testing_list.txt"
                dropped.add(f"{source} file(s) left out (the test folder is the test set)", rel)
                continue
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
    if hash_split:
        extra["split_rule"] = HASH_SPLIT_RULE
        if test_root is None:
            extra["test_set"] = "files hashed to test (no testing_list.txt)"
    if words != WORDS:
        extra["words"] = list(words)
    if dropped.reasons:
        extra["dropped"] = dropped.report()
    return write_task_manifest(out / "ks", task="ks", corpus="speech_commands", version="v0.01",
                               label_field="label", labels=labels, splits=splits, extra=extra)


def _prepare(request: PrepareRequest) -> Path:
    return prepare_speech_commands(request.root, request.out, test_root=request.options.get("test_root"),
                                   skip_bad=request.skip_bad).parent


PREPARER = Preparer("speech_commands", prepare=_prepare, writes="ks",
                    options={"test_root": "the official test-set folder (speech_commands_test_set_v0.01)"})

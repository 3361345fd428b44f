"""VoxCeleb1 -> SID manifest (iden_split.txt: 1 train, 2 dev, 3 test; speaker = first path component) and
SV manifest (`prepare_voxceleb1_sv`: the verification test list, seeded dev trials over held-out speakers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recipes.prepare import Dropped, PrepareError, Problems, audio_row, default_out
from superbench.io import atomic_write_text
from superbench.manifest import write_task_manifest
from superbench.preparers import Preparer, PrepareRequest

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


# --------------------------------------------------------------------------- SV (speaker verification)

#: Names of VoxCeleb1's cleaned verification test list, looked for in ROOT (s3prl ships the second one).
TEST_TRIAL_NAMES = ("veri_test2.txt", "voxceleb1_test_v2.txt")
#: s3prl's preprocess.py: 40 held-out speakers, 20,000 dev pairs, seed 19941227.
DEV_SPEAKERS, DEV_TRIALS, DEV_SEED = 40, 20000, 19941227
#: s3prl's vad_config.min_sec: training utterances must be longer than this many samples.
MIN_TRAIN_SAMPLES = 32000


def _uid(rel: str) -> str:
    return rel.removesuffix(".wav").replace("/", "-")


def _read_test_trials(path: Path, wav_root: Path, problems: Problems) -> list[tuple[str, str, str, int]]:
    """(label, rel a, rel b, line) of each well-formed line naming two existing files; the rest are problems."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            problems.add(f"{path}:{n}: expected '<1|0> <idXXXXX/video/n.wav> <idXXXXX/video/n.wav>', got {line!r}")
            continue
        missing = [rel for rel in parts[1:] if not (wav_root / rel).is_file()]
        if missing:
            problems.add(f"{path}:{n}: names a missing file {wav_root / missing[0]}")
            continue
        out.append((parts[0], parts[1], parts[2], n))
    return out


def prepare_voxceleb1_sv(root: str | Path, out: str | Path | None = None, trials: str | Path | None = None,
                         skip_bad: bool = False, dev_speakers: int = DEV_SPEAKERS, dev_trials: int = DEV_TRIALS,
                         seed: int = DEV_SEED) -> Path:
    """ROOT/wav/idXXXXX/<video>/<n>.wav plus the verification test list -> OUT/sv (returned).

    * test: the utterances the test list names (`trials`, else veri_test2.txt / voxceleb1_test_v2.txt in
      ROOT), its pairs as `trials_test.txt` (manifest ids: the path without .wav, `/` -> `-`);
    * dev: `dev_speakers` speakers drawn (seeded) from the others and held out from training, with
      `dev_trials` seeded pairs as `trials_dev.txt`, drawn as s3prl's preprocess.py draws dev_meta_data.txt
      (a non-target pair of two speakers with probability 0.5, else a target pair of one speaker; one random
      file each, never the same file twice); dev rows are the files those pairs name;
    * train: every file of the remaining speakers longer than 32000 samples (s3prl's min_sec; the shorter
      are listed in meta.json extra.dropped).
    Dev and test speakers are never training speakers, hence `allow_unseen_labels`. Every problem (a
    malformed trial line, a trial naming a missing file: file:line) is reported before anything is written.
    """
    root = Path(root)
    out = Path(out) if out else default_out("voxceleb1")
    wav_root = root / "wav" if (root / "wav").is_dir() else root
    if trials is None:
        found = [root / name for name in TEST_TRIAL_NAMES if (root / name).is_file()]
        if not found:
            raise FileNotFoundError(f"VoxCeleb1 verification test list not found in {root} (looked for "
                                    f"{', '.join(TEST_TRIAL_NAMES)}; pass trials=PATH)")
        trials = found[0]
    trials = Path(trials)
    if not trials.is_file():
        raise FileNotFoundError(f"VoxCeleb1 verification test list not found: {trials}")
    problems = Problems("voxceleb1 sv", skip_bad)
    dropped = Dropped("voxceleb1 sv")
    test_pairs = _read_test_trials(trials, wav_root, problems)
    test_speakers = {rel.split("/")[0] for _, a, b, _ in test_pairs for rel in (a, b)}
    files = {d.name: sorted(str(p.relative_to(wav_root)) for p in d.glob("*/*.wav"))
             for d in sorted(wav_root.iterdir()) if d.is_dir() and d.name not in test_speakers}
    pool = sorted(s for s, rels in files.items() if rels)
    if len(pool) < dev_speakers + 2:
        raise PrepareError(f"{wav_root}: {len(pool)} speaker folder(s) besides the {len(test_speakers)} test "
                           f"speakers; {dev_speakers} dev speakers and at least 2 training speakers are needed")
    rng = np.random.default_rng(seed)
    dev = sorted(rng.choice(pool, size=dev_speakers, replace=False).tolist())
    held = set(dev)
    dev_pairs = []
    for _ in range(dev_trials):
        if rng.random() > 0.5:
            a, b = rng.choice(dev, size=2, replace=False).tolist()
            dev_pairs.append(("0", str(rng.choice(files[a])), str(rng.choice(files[b]))))
        else:
            speaker = str(rng.choice(dev))
            if len(files[speaker]) < 2:
                continue
            a, b = rng.choice(files[speaker], size=2, replace=False).tolist()
            dev_pairs.append(("1", a, b))

    def rows_for(rels: list[str]) -> list[dict]:
        rows = []
        for rel in rels:
            row = audio_row(_uid(rel), wav_root / rel, rel.split("/")[0], problems, label=rel.split("/")[0])
            if row:
                rows.append(row)
        return rows

    splits = {"train": [], "dev": rows_for(sorted({r for p in dev_pairs for r in p[1:]})),
              "test": rows_for(sorted({r for p in test_pairs for r in p[1:3]}))}
    for speaker in pool:
        if speaker in held:
            continue
        for row in rows_for(files[speaker]):
            if row["num_samples"] > MIN_TRAIN_SAMPLES:
                splits["train"].append(row)
            else:
                dropped.add(f"training utterance(s) of at most {MIN_TRAIN_SAMPLES} samples (s3prl min_sec)", row["id"])
    problems.raise_if_any()
    folder = out / "sv"
    folder.mkdir(parents=True, exist_ok=True)
    kept = {r["id"] for rows in splits.values() for r in rows}  # with skip_bad, pairs naming a bad file go too
    for name, pairs in (("trials_dev.txt", dev_pairs), ("trials_test.txt", [p[:3] for p in test_pairs])):
        lines = [f"{label} {_uid(a)} {_uid(b)}\n" for label, a, b in pairs if _uid(a) in kept and _uid(b) in kept]
        atomic_write_text(folder / name, "".join(lines))
    labels = sorted({r["label"] for rows in splits.values() for r in rows})
    extra = {"test_trials": trials.name, "dev_speakers": dev,
             "dev_policy": f"{dev_speakers} speakers held out of training, {dev_trials} seeded pairs (seed {seed}) "
                           f"drawn as s3prl sv_voxceleb1/preprocess.py draws dev_meta_data.txt",
             "dropped": dropped.report()}
    return write_task_manifest(folder, task="sv", corpus="voxceleb1", version="1.1", label_field="label",
                               labels=labels, splits=splits, extra=extra, allow_unseen_labels=True,
                               sidecars=["trials_dev.txt", "trials_test.txt"])


def _prepare(request: PrepareRequest) -> Path:
    """SID, and SV too when the verification trial list is in the corpus folder."""
    root = prepare_voxceleb1(request.root, request.out, skip_bad=request.skip_bad).parent
    if any((Path(request.root) / name).is_file() for name in TEST_TRIAL_NAMES):
        prepare_voxceleb1_sv(request.root, root, skip_bad=request.skip_bad)
    return root


PREPARER = Preparer("voxceleb1", prepare=_prepare,
                    writes=f"sid, and sv when the trial list ({TEST_TRIAL_NAMES[0]}) is in --root")

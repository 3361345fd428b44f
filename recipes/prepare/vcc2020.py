"""VCC2020 task 1 (Yi et al., Joint Workshop for the Blizzard Challenge and VCC 2020) -> VC manifest.

The corpus in the layout s3prl's `a2o-vc-vcc2020/data/data_download.sh` leaves (the released training, evaluation
and ground-truth archives merged per speaker), 24 kHz WAV files:

    ROOT/SEF1/E10001.wav ... ROOT/SEF1/E30025.wav      source speakers SEF1, SEF2, SEM1, SEM2
    ROOT/TEF1/E10001.wav ... ROOT/TEF1/E30025.wav      target speakers TEF1, TEF2, TEM1, TEM2
    ROOT/prompts/Eng_transcriptions.txt               "<id> <sentence>" per line (training and evaluation)

Splits as s3prl's lists (`data/lists/E_train_list.txt`, `E_dev_list.txt`, `eval_list.txt`) and `dataset.py`:
per target speaker, train is E10001-E10060 and E20001-E20050 and dev E10061-E10070 of that speaker's files
(the ones present, as s3prl's `os.path.isfile` filter), test every source speaker's E30001-E30025, each with the
target's own E300xx as its reference (MCD, ASV) and the sentence's transcription (WER). One fold per target
speaker, so the task trains one model per target. Each target's F0 search range is s3prl's `data/f0.yaml`.
Every test file, reference and transcription is checked before anything is written, each problem named.
"""

from __future__ import annotations

from pathlib import Path

from recipes.prepare import Problems, default_out, simple_preparer
from superbench.manifest import Fold, write_task_manifest

SOURCES = ("SEF1", "SEF2", "SEM1", "SEM2")
TARGETS = ("TEF1", "TEF2", "TEM1", "TEM2")
TRAIN_IDS = tuple(f"E1{k:04d}" for k in range(1, 61)) + tuple(f"E2{k:04d}" for k in range(1, 51))
DEV_IDS = tuple(f"E1{k:04d}" for k in range(61, 71))
EVAL_IDS = tuple(f"E3{k:04d}" for k in range(1, 26))
#: s3prl's data/f0.yaml: each task-1 target's F0 search range (Hz) for WORLD analysis.
F0_RANGES = {"TEF1": (127, 405), "TEF2": (108, 361), "TEM1": (71, 227), "TEM2": (57, 182)}
TRANSCRIPTIONS = Path("prompts") / "Eng_transcriptions.txt"


def read_transcriptions(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (VCC2020's English transcriptions, training and evaluation "
                                f"concatenated as data_download.sh does)")
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            utt, _, text = line.strip().partition(" ")
            out[utt] = text.strip()
    return out


def _row(path: Path, utt: str, speaker: str, problems: Problems, **conversion: object) -> dict | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # unreadable: named with the others, before anything is written
        problems.add(f"{path}: cannot be read ({type(exc).__name__})")
        return None
    if info.channels != 1 or info.frames == 0:
        problems.add(f"{path}: {info.channels} channel(s), {info.frames} samples; expected mono speech")
        return None
    return {"id": utt, "audio": str(path.resolve()), "sample_rate": info.samplerate, "num_samples": info.frames,
            "speaker": speaker, "conversion": conversion}


def prepare_vcc2020(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT in the layout of the module doc -> OUT/vc; returns OUT/vc."""
    root = Path(root)
    out = Path(out) if out else default_out("vcc2020")
    missing = [spk for spk in SOURCES + TARGETS if not (root / spk).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root}: no speaker folder {', '.join(missing)} (VCC2020 task 1 merged per speaker "
                                f"as s3prl's data_download.sh: ROOT/<speaker>/E*.wav)")
    texts = read_transcriptions(root / TRANSCRIPTIONS)
    problems = Problems("vcc2020", skip_bad)
    splits: dict[str, list[dict]] = {}
    folds = []
    for t in TARGETS:
        f0 = list(F0_RANGES[t])
        for split, ids in (("train", TRAIN_IDS), ("dev", DEV_IDS)):
            rows = []
            for utt in ids:
                path = root / t / f"{utt}.wav"
                if not path.is_file():
                    continue  # s3prl's lists name files only some speakers have
                text = texts.get(utt)
                if split == "dev" and not text:
                    problems.add(f"{root / TRANSCRIPTIONS}: no transcription of {utt} (dev utterance {path})")
                    continue
                row = _row(path, f"{t}_{utt}", t, problems, target_speaker=t, text=text or "", f0_range=f0)
                if row:
                    rows.append(row)
            if not rows:
                problems.add(f"{root / t}: no {split} utterance ({ids[0]}..{ids[-1]}.wav)")
            splits[f"{split}_{t}"] = rows
        test = []
        for src in SOURCES:
            for utt in EVAL_IDS:
                path, ref = root / src / f"{utt}.wav", root / t / f"{utt}.wav"
                if not path.is_file():
                    problems.add(f"{path}: missing (evaluation utterance of source speaker {src})")
                    continue
                if not ref.is_file():
                    problems.add(f"{ref}: missing (target {t}'s reference for {src}/{utt}.wav)")
                    continue
                if not texts.get(utt):
                    problems.add(f"{root / TRANSCRIPTIONS}: no transcription of {utt} (evaluation sentence)")
                    continue
                row = _row(path, f"{src}_{utt}_to_{t}", src, problems, target_speaker=t, reference=str(ref.resolve()),
                           text=texts[utt], f0_range=f0)
                if row:
                    test.append(row)
        splits[f"test_{t}"] = test
        folds.append(Fold(t, f"train_{t}", f"dev_{t}", f"test_{t}"))
    problems.raise_if_any()
    return write_task_manifest(out / "vc", task="vc", corpus="vcc2020", version="task1", label_field="conversion",
                               labels=[], splits=splits, folds=folds,
                               extra={"layout": "s3prl data_download.sh (ROOT/<speaker>/E*.wav)",
                                      "sources": list(SOURCES), "targets": list(TARGETS),
                                      "lists": "s3prl a2o-vc-vcc2020 data/lists (E_train, E_dev, eval)"})


PREPARER = simple_preparer("vcc2020", prepare_vcc2020, "vc")

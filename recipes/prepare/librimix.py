"""Libri2Mix (s3prl's diarization data) -> SD manifest.

s3prl's SD recipe (downstream/docs/superb.md, "SD: Speaker Diarization") simulates Libri2Mix with the s3prl fork
of LibriMix (`generate_librimix_sd.sh`: 16 kHz, `max` mode, `mix_both`, i.e. two LibriSpeech speakers plus WHAM!
noise; train-100 / dev / test) and writes Kaldi-style data directories with that fork's
`scripts/prepare_diarization.py`:

    ROOT/{train,dev,test}/wav.scp    <recording> <path to the mixture wav>
    ROOT/{train,dev,test}/rttm       SPEAKER <recording> 1 <onset> <duration> <NA> <NA> <speaker> <NA>
    ROOT/{train,dev,test}/reco2dur   <recording> <seconds>          (optional here; checked when present)
    ROOT/{train,dev,test}/segments, utt2spk, spk2utt                 (the same turns again; not read)

ROOT is s3prl's `downstream/diarization/data`. The `rttm` file is the reference dscore scores against, so it is
the one source of truth here: each mixture's turns go into its manifest row as `segments`
[[speaker, start_s, end_s], ...]. Refused before anything is written (or, with `skip_bad`, left out and
logged), each naming file and line: an RTTM line that does not parse, a turn of a recording wav.scp does not
list, a turn ending after its audio, a recording with more than two speakers or with no turn at all, a piped
wav.scp entry (`... |`: not a file superbench can read), a missing or unreadable audio file, and a reco2dur
that disagrees with the audio by more than 10 ms.
"""

from __future__ import annotations

import logging
from pathlib import Path

from downstreams.diarization import DURATION_TOLERANCE, parse_rttm_line, segment_problems
from recipes.prepare import Problems, audio_row, default_out, simple_preparer
from superbench.manifest import write_task_manifest

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
NUM_SPEAKERS = 2


def _table(path: Path, problems: Problems) -> dict[str, tuple[str, int]]:
    """`key value` lines -> {key: (value, line number)}; a line without a value is a problem."""
    out: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            problems.add(f"{path}:{n}: expected '<recording> <value>', got {line!r}")
            continue
        if parts[0] in out:
            problems.add(f"{path}:{n}: recording {parts[0]!r} is listed again (first on line {out[parts[0]][1]})")
            continue
        out[parts[0]] = (parts[1].strip(), n)
    return out


def _rttm(path: Path, problems: Problems) -> tuple[dict[str, list[tuple[list, int]]], set[str]]:
    """{recording: [(turn, line), ...]} and the recordings with a line that does not parse (each a problem,
    named file:line; with skip_bad the whole recording is left out, not just that turn)."""
    out: dict[str, list[tuple[list, int]]] = {}
    broken: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            parsed = parse_rttm_line(line, f"{path}:{n}")
        except ValueError as exc:
            problems.add(str(exc))
            if len(line.split()) > 1:
                broken.add(line.split()[1])
            continue
        if parsed is not None:
            out.setdefault(parsed[0], []).append((parsed[1], n))
    return out, broken


def _split_rows(folder: Path, problems: Problems) -> list[dict]:
    for name in ("wav.scp", "rttm"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found (a Kaldi-style data directory written by "
                                    f"s3prl's LibriMix scripts/prepare_diarization.py has wav.scp and rttm)")
    wavs = _table(folder / "wav.scp", problems)
    turns, broken = _rttm(folder / "rttm", problems)
    durations = _table(folder / "reco2dur", problems) if (folder / "reco2dur").is_file() else {}
    for rec in sorted(set(turns) - set(wavs)):
        problems.add(f"{folder / 'rttm'}:{turns[rec][0][1]}: recording {rec!r} is not in {folder / 'wav.scp'}")
    rows = []
    for rec, (target, line) in wavs.items():
        where = f"{folder / 'wav.scp'}:{line}"
        if target.endswith("|") or target == "-":
            problems.add(f"{where}: {rec!r} is a command or stdin ({target!r}); superbench reads audio files")
            continue
        if rec in broken:
            continue  # its unparseable RTTM line is already reported
        if rec not in turns:
            problems.add(f"{where}: recording {rec!r} has no turn in {folder / 'rttm'}")
            continue
        start = len(problems.items)
        row = audio_row(rec, Path(target), "", problems)
        if row is None:
            problems.items[start:] = [f"{where}: {p}" for p in problems.items[start:]]
            continue
        duration = row["num_samples"] / row["sample_rate"]
        if rec in durations:
            value, n = durations[rec]
            try:
                declared = float(value)
            except ValueError:
                problems.add(f"{folder / 'reco2dur'}:{n}: duration {value!r} is not a number")
                continue
            if abs(declared - duration) > DURATION_TOLERANCE:
                problems.add(f"{folder / 'reco2dur'}:{n}: {rec!r} lasts {declared} s, its audio {duration:.3f} s")
                continue
        segments = [turn for turn, _ in turns[rec]]
        bad = segment_problems(segments, duration, NUM_SPEAKERS)
        if bad:
            lines = ",".join(str(n) for _, n in turns[rec])
            problems.add(f"{folder / 'rttm'}:{lines}: recording {rec!r}: {'; '.join(bad)}")
            continue
        speakers = sorted({s for s, _, _ in segments})
        rows.append({**row, "speaker": "+".join(speakers), "segments": segments})
    return rows


def prepare_librimix(root: str | Path, out: str | Path | None = None, skip_bad: bool = False) -> Path:
    """ROOT/{train,dev,test}/ Kaldi-style directories (see module doc) -> OUT/sd; returns OUT/sd."""
    root = Path(root)
    out = Path(out) if out else default_out("librimix")
    problems = Problems("librimix", skip_bad)
    splits = {split: _split_rows(root / split, problems) for split in SPLITS}
    problems.raise_if_any()
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"{root / split}: no usable recording")
    return write_task_manifest(out / "sd", task="sd", corpus="librimix", version="libri2mix-16k-max-mix_both",
                               label_field="segments", labels=[], splits=splits,
                               extra={"layout": "s3prl LibriMix scripts/prepare_diarization.py data directories",
                                      "reference": "rttm (the file dscore scores against)"})


PREPARER = simple_preparer("librimix", prepare_librimix, "sd")

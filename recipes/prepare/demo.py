"""The offline demo corpus: every task's part synthesised with eSpeak NG (SUPERB, SE, SS, staged OOD-ASR), no download.

It exists so a user (and CI) can run the whole benchmark end to end on a laptop;
it is *not* a substitute for the real corpora. Numbers on it say "the pipeline
works and the features carry the information", nothing about SUPERB rank.

Design, so the tasks are learnable but not trivial:
  * a speaker is (eSpeak voice variant x English accent x base pitch x base rate x pitch range);
    variants that are robotic/whispered/joke voices are left out (espeak.EXCLUDED_VARIANTS);
  * every utterance jitters rate, pitch and pitch range around its speaker's values, gets a
    random gain (so loudness is a weak cue only) and coloured background noise (white..brown)
    at a random SNR;
  * KS: the ten Speech Commands words + `_unknown_` (other Speech Commands words) + `_silence_`
    (noise-only clips); 1 s clips; speakers disjoint between train/dev/test;
  * SID: >= 40 speakers in `default`, each speaking short grammar sentences, split within speaker;
  * ASR and PR share audio: distinct sentences from GRAMMAR, transcript upper-case without
    punctuation (as LibriSpeech), phones = eSpeak's IPA for the text in the speaker's accent
    (stress marks removed, see espeak.py); speakers disjoint between splits;
  * ER: neutral/happy/angry/sad by rule-based prosody (EMOTION_RULES, after the Murray & Arnott
    (1993) summary used in rule-based emotional synthesis: anger and joy faster, higher and wider,
    anger louder; sadness slower, lower, narrower and softer); speakers in five groups like the five
    IEMOCAP sessions; fold k tests on group k and, as s3prl's emotion recipe does, takes a seeded
    random 20 % of the other groups' utterances as dev (valid_ratio 0.2) and trains on the rest;
  * IC, SF, SV, QbE and SD each plan their part in `recipes/prepare/demo_<task>.py` (found by that
    name, see `demo_parts`), drawn after the first five, whose audio and manifests they leave unchanged.

Versioning: a corpus on disk is reused while its marker's version equals `corpus_version()`, a digest
of the generator's source (this module, espeak.py and every part), so changing or adding a part
regenerates existing corpora instead of leaving them stale.

Determinism: every random draw happens in the parent from one seeded generator, in a fixed
order. eSpeak NG keeps internal state between calls that `espeak_ng_SetRandSeed` does not reset,
so synthesis is run in fixed chunks, each in a fresh worker process (forkserver, one task per
child): the same chunk always starts from the same engine state, whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import multiprocessing as mp
import os
import pkgutil
import shutil
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from recipes.prepare import format_summary, leave_one_group_out, summarize_corpus  # noqa: F401 (re-exported)
from superbench.io import atomic_write_text
from superbench.manifest import write_task_manifest
from superbench.preparers import Preparer

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CORPUS = "superbench-demo"
#: The version's readable head, before the digest of the generator's source (`corpus_version`).
VERSION_HEAD = "3"  # 3: adds IC, SF, SV, QbE and SD (the first five tasks' audio and manifests are unchanged)
MARKER = "COMPLETE.json"

KS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
#: Speech Commands' auxiliary words, spoken as `_unknown_`.
KS_UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
                    "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
KS_LABELS = KS_WORDS + ("_unknown_", "_silence_")
EMOTIONS = ("neutral", "happy", "angry", "sad")

#: Rule-based emotional prosody, relative to the speaker: rate factor, pitch offset, range offset
#: (eSpeak 0-100 units), volume (eSpeak 0-200 scale, 100 = normal; applied as a level change) and
#: vocal effort as spectral tilt (-1..1: > 0 tense/bright via first-order emphasis, < 0 soft/breathy
#: via a one-pole low-pass), the voice-quality part of rule-based emotional synthesis.
EMOTION_RULES: dict[str, dict[str, float]] = {
    "neutral": {"rate": 1.00, "pitch": 0, "range": 0, "volume": 100, "tilt": 0.0},
    "happy": {"rate": 1.10, "pitch": 14, "range": 20, "volume": 110, "tilt": 0.4},
    "angry": {"rate": 1.15, "pitch": 8, "range": 25, "volume": 135, "tilt": 0.85},
    "sad": {"rate": 0.80, "pitch": -12, "range": -25, "volume": 85, "tilt": -0.75},
}

#: The sentence grammar for ASR/PR/SID/ER: "DET ADJ NOUN VERB DET ADJ NOUN" or
#: "NUMBER ADJ NOUNS VERB_PLURAL DET NOUN". Small vocabulary, a few thousand distinct sentences.
GRAMMAR: dict[str, tuple[str, ...]] = {
    "det": ("the", "a", "my", "your", "this"),
    "adj": ("red", "blue", "green", "small", "big", "old", "young", "quiet", "bright", "lazy"),
    "noun": ("cat", "dog", "bird", "man", "girl", "boy", "car", "house", "tree", "ship", "horse", "teacher"),
    "nouns": ("cats", "dogs", "birds", "men", "girls", "boys", "cars", "houses", "trees", "ships", "horses",
              "teachers"),
    "verb": ("sees", "finds", "likes", "takes", "follows", "watches", "helps", "pulls"),
    "verb_pl": ("see", "find", "like", "take", "follow", "watch", "help", "pull"),
    "number": ("two", "three", "four", "five", "six", "seven", "eight", "nine"),
}


@dataclass(frozen=True)
class DemoSize:
    """How much to generate; per-split counts. `default` stays under 40 minutes of audio."""

    ks_speakers: tuple[int, int, int]  # disjoint speaker pools for train/dev/test
    ks_per_class: tuple[int, int, int]  # clips per class per split
    sid_speakers: int
    sid_per_speaker: tuple[int, int, int]
    er_speakers_per_group: int
    er_sentences: int  # sentences per speaker, each spoken in all four emotions
    asr_speakers: tuple[int, int, int]
    asr_sentences: tuple[int, int, int]

    @property
    def sentences_needed(self) -> int:
        """Distinct sentences drawn by SID, ER and ASR/PR (no sentence is spoken in two tasks)."""
        return (self.sid_speakers * sum(self.sid_per_speaker) + 5 * self.er_speakers_per_group * self.er_sentences
                + sum(self.asr_sentences))


SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(ks_speakers=(8, 4, 4), ks_per_class=(12, 4, 4), sid_speakers=10,
                     sid_per_speaker=(4, 2, 2), er_speakers_per_group=2, er_sentences=3,
                     asr_speakers=(6, 2, 2), asr_sentences=(40, 10, 10)),
    "default": DemoSize(ks_speakers=(40, 10, 10), ks_per_class=(36, 8, 8), sid_speakers=40,
                        sid_per_speaker=(4, 2, 2), er_speakers_per_group=3, er_sentences=4,
                        asr_speakers=(30, 6, 6), asr_sentences=(200, 30, 30)),
    "large": DemoSize(ks_speakers=(120, 20, 20), ks_per_class=(200, 30, 30), sid_speakers=100,
                      sid_per_speaker=(12, 3, 3), er_speakers_per_group=8, er_sentences=10,
                      asr_speakers=(80, 10, 10), asr_sentences=(2000, 200, 200)),
}


@dataclass(frozen=True)
class Jitter:
    """Per-speaker ranges and per-utterance jitter (eSpeak units; dB for levels)."""

    speaker_pitch: tuple[int, int] = (25, 75)
    speaker_rate: tuple[int, int] = (140, 200)
    speaker_range: tuple[int, int] = (35, 70)
    rate_factor: float = 0.12  # +- relative
    pitch: int = 8  # +-
    range: int = 12  # +-
    gain_db: float = 6.0  # +- around the base level
    base_level_db: float = -20.0  # RMS of the clean speech, before gain jitter
    snr_db: tuple[float, float] = (0.0, 25.0)
    silence_level_db: tuple[float, float] = (-55.0, -25.0)
    noise_alpha: tuple[float, float] = (0.0, 2.0)  # spectral slope: 0 white, 1 pink, 2 brown
    tilt: float = 0.25  # +- around the emotion's vocal-effort tilt


CHUNK = 48  # jobs per fresh worker process (see module doc); part of the corpus definition


@dataclass(frozen=True)
class Speaker:
    id: str
    variant: str
    accent: str
    pitch: int
    rate: int
    range: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


# --------------------------------------------------------------------------- public API

def demo_size(spec: str) -> str | None:
    """The demo size a `--data` value names (`demo` -> "default", `demo:tiny` -> "tiny"), or None for
    anything else (a folder): the one parser of that syntax for every command."""
    if spec == "demo":
        return "default"
    return spec.split(":", 1)[1] if spec.startswith("demo:") else None


def demo_dir(size: str = "default") -> Path:
    """Where `ensure_demo` keeps a size (under superbench.paths.data_dir())."""
    from superbench.paths import data_dir

    _check_size(size)
    return data_dir() / f"demo-{size}"


def is_complete(out_dir: str | Path) -> bool:
    return (Path(out_dir) / MARKER).is_file()


def ensure_demo(size: str = "default", seed: int = 0) -> Path:
    """Generate the demo corpus once and reuse it (a corpus is complete when its marker exists)."""
    out = demo_dir(size) if seed == 0 else demo_dir(size).with_name(f"demo-{size}-seed{seed}")
    if is_complete(out):
        marker = json.loads((out / MARKER).read_text())
        if marker.get("seed") == seed and marker.get("size") == size and marker.get("version") == corpus_version():
            return out
        log.info("%s was made by another version of the demo generator (%s, now %s); making it again", out,
                 marker.get("version"), corpus_version())
    prepare_demo(out, size=size, seed=seed)
    return out


def prepare_demo(out_dir: str | Path, size: str = "default", seed: int = 0,
                 workers: int | None = None) -> dict[str, Path]:
    """Synthesise the corpus into `out_dir` (audio/ + one manifest folder per task); returns task -> folder."""
    cfg = _check_size(size)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file() and not (out / "audio").is_dir():
            raise FileExistsError(f"{out} exists and is not a demo corpus folder; choose another --out")
        (out / MARKER).unlink(missing_ok=True)
        shutil.rmtree(out / "audio", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    jit = Jitter()
    plan = _Plan(cfg, jit, rng, size)
    results = _synthesise(plan.jobs, out, workers)
    task_dirs = plan.write_manifests(out, results)
    summary = summarize_corpus(out)
    checksums = {r["id"]: r["sha256"] for r in results}
    atomic_write_text(out / "checksums.json", json.dumps(checksums, indent=0, sort_keys=True) + "\n")
    marker = {"corpus": CORPUS, "version": corpus_version(), "size": size, "seed": seed,
              "checksum": hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16],
              "summary": summary}
    atomic_write_text(out / MARKER, json.dumps(marker, indent=2) + "\n")  # last: marks the corpus complete
    log.info("demo corpus (%s, seed %d) written to %s", size, seed, out)  # the CLI prints the summary
    return task_dirs


# --------------------------------------------------------------------------- planning (all randomness here)

#: Tasks added after the first five each plan their part of the demo in their own module, found by its
#: name `recipes/prepare/demo_<task>.py`, which offers:
#:   TASK: the task name;
#:   ORDER: an int, the part's place in the draw order (parts draw from the shared generator one after
#:     another, ascending, ties by module name): a new part takes the next number, so the parts before
#:     it keep their draws, audio and manifests;
#:   plan(p: _Plan) -> None: draw speakers (p._speakers), jobs (p._job) and rows (p._row), sized by p.size;
#:   write(p: _Plan, out, fill, common, extra_common) -> Path: write its manifest folder (rows via fill(rows)).
PART_PREFIX = "demo_"


def demo_parts() -> list[ModuleType]:
    """The demo's per-task part modules, in draw order (see above)."""
    import recipes.prepare as package

    names = [info.name for info in pkgutil.iter_modules(package.__path__) if info.name.startswith(PART_PREFIX)]
    parts = [importlib.import_module(f"{package.__name__}.{name}") for name in names]
    return sorted(parts, key=lambda part: (part.ORDER, part.__name__))


def corpus_version(parts: list[ModuleType] | None = None) -> str:
    """`VERSION_HEAD` and a digest of the generator's source: this module, the eSpeak wrapper and each part
    (name, order, source), so any change to what makes the corpus is a new version."""
    from recipes.prepare import espeak

    h = hashlib.sha256()
    for module in (sys.modules[__name__], espeak):
        h.update(f"{module.__name__}\0{inspect.getsource(module)}\0".encode())
    for part in demo_parts() if parts is None else parts:
        h.update(f"{part.__name__}\0{part.ORDER}\0{inspect.getsource(part)}\0".encode())
    return f"{VERSION_HEAD}.{h.hexdigest()[:12]}"


def _check_size(size: str) -> DemoSize:
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


class _Plan:
    """Speakers, texts and per-utterance parameters, drawn in a fixed order from one generator."""

    def __init__(self, cfg: DemoSize, jit: Jitter, rng: np.random.Generator, size: str = "default") -> None:
        from recipes.prepare.espeak import ENGLISH_ACCENTS, list_variants

        self.cfg, self.jit, self.rng, self.size = cfg, jit, rng, size
        pairs = [(v, a) for v in list_variants() for a in ENGLISH_ACCENTS]
        order = rng.permutation(len(pairs))
        self._pairs = [pairs[i] for i in order]
        self._next_speaker = 0
        self.jobs: list[dict[str, Any]] = []
        self.rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._sentences = self._sentence_pool()
        self._plan_ks()
        self._plan_sid()
        self._plan_er()
        self._plan_asr()
        for module in demo_parts():  # after the first five: their draws, audio and manifests stay as they were
            module.plan(self)

    # speakers and texts
    def _speakers(self, n: int, prefix: str) -> list[Speaker]:
        out = []
        for _ in range(n):
            variant, accent = self._pairs[self._next_speaker % len(self._pairs)]
            j = self.jit
            out.append(Speaker(f"{prefix}{self._next_speaker:04d}", variant, accent,
                               int(self.rng.integers(*j.speaker_pitch)), int(self.rng.integers(*j.speaker_rate)),
                               int(self.rng.integers(*j.speaker_range))))
            self._next_speaker += 1
        return out

    def _sentence_pool(self) -> list[str]:
        g = GRAMMAR
        seen: dict[str, None] = {}
        while len(seen) < max(4000, self.cfg.sentences_needed):  # 4000: keeps tiny/default as they were
            pick = lambda k: g[k][int(self.rng.integers(len(g[k])))]  # noqa: E731
            if self.rng.random() < 0.7:
                s = " ".join(pick(part) for part in ("det", "adj", "noun", "verb", "det", "adj", "noun"))
            else:
                s = f"{pick('number')} {pick('adj')} {pick('nouns')} {pick('verb_pl')} {pick('det')} {pick('noun')}"
            seen.setdefault(s, None)
        return list(seen)

    def _take_sentences(self, n: int) -> list[str]:
        out, self._sentences = self._sentences[:n], self._sentences[n:]
        if len(out) < n:
            raise ValueError("the demo grammar ran out of distinct sentences; reduce the size")
        return out

    def _job(self, uid: str, folder: str, text: str | None, spk: Speaker | None, *, clip: bool = False,
             emotion: str = "neutral", phones: bool = False) -> dict[str, Any]:
        j, r = self.jit, self.rng
        job: dict[str, Any] = {"id": uid, "path": f"audio/{folder}/{uid}.wav", "text": text, "clip": clip,
                               "seed": int(r.integers(2**31)), "snr_db": _u(r, *j.snr_db),
                               "noise_alpha": _u(r, *j.noise_alpha), "phones": phones,
                               "offset": _u(r, 0.0, 1.0), "lead": _u(r, 0.05, 0.15), "trail": _u(r, 0.05, 0.15)}
        if spk is None:  # noise only (KS _silence_)
            job["level_db"] = _u(r, *j.silence_level_db)
            return job
        rule = EMOTION_RULES[emotion]
        rate = spk.rate * rule["rate"] * (1 + _u(r, -j.rate_factor, j.rate_factor))
        pitch = spk.pitch + rule["pitch"] + _u(r, -j.pitch, j.pitch)
        rng_ = spk.range + rule["range"] + _u(r, -j.range, j.range)
        volume = rule["volume"]
        tilt = float(np.clip(rule["tilt"] + _u(r, -j.tilt, j.tilt), -1, 1))
        job.update(tilt=tilt, voice=spk.voice, rate=int(np.clip(round(rate), 80, 450)),
                   pitch=int(np.clip(round(pitch), 0, 100)),
                   range=int(np.clip(round(rng_), 0, 100)),
                   level_db=j.base_level_db + 20 * np.log10(volume / 100) + _u(r, -j.gain_db, j.gain_db))
        self.jobs.append(job)
        return job

    def _row(self, task: str, split: str, job: dict[str, Any], spk: Speaker | None, **labels: Any) -> None:
        row = {"id": job["id"], "audio": f"../{job['path']}", "sample_rate": SAMPLE_RATE,
               "speaker": spk.id if spk else "none", **labels}
        self.rows.setdefault(task, {}).setdefault(split, []).append(row)

    # tasks
    def _plan_ks(self) -> None:
        c = self.cfg
        for si, split in enumerate(("train", "dev", "test")):
            spks = self._speakers(c.ks_speakers[si], "ks")
            for label in KS_LABELS:
                for k in range(c.ks_per_class[si]):
                    uid = f"ks-{split}-{label.strip('_')}-{k:04d}"
                    if label == "_silence_":
                        job = self._job(uid, "ks", None, None, clip=True)
                        self.jobs.append(job)
                        self._row("ks", split, job, None, label=label)
                        continue
                    spk = spks[int(self.rng.integers(len(spks)))]
                    word = label if label != "_unknown_" else KS_UNKNOWN_WORDS[
                        int(self.rng.integers(len(KS_UNKNOWN_WORDS)))]
                    job = self._job(uid, "ks", word, spk, clip=True)
                    self._row("ks", split, job, spk, label=label)

    def _plan_sid(self) -> None:
        c = self.cfg
        spks = self._speakers(c.sid_speakers, "sid")
        for spk in spks:
            texts = self._take_sentences(sum(c.sid_per_speaker))
            splits = ["train"] * c.sid_per_speaker[0] + ["dev"] * c.sid_per_speaker[1] + ["test"] * c.sid_per_speaker[2]
            for k, (text, split) in enumerate(zip(texts, splits)):
                job = self._job(f"sid-{spk.id}-{k:03d}", "sid", text, spk)
                self._row("sid", split, job, spk, label=spk.id)
        self.sid_labels = [s.id for s in spks]

    def _plan_er(self) -> None:
        c = self.cfg
        groups = [self._speakers(c.er_speakers_per_group, f"er{g + 1}-") for g in range(5)]
        by_group: list[list[dict[str, Any]]] = []
        for g, spks in enumerate(groups):
            rows = []
            for spk in spks:
                for k, text in enumerate(self._take_sentences(c.er_sentences)):
                    for emo in EMOTIONS:
                        job = self._job(f"er-g{g + 1}-{spk.id}-{k:02d}-{emo}", "er", text, spk, emotion=emo)
                        rows.append({"id": job["id"], "audio": f"../{job['path']}", "sample_rate": SAMPLE_RATE,
                                     "speaker": spk.id, "label": emo})
            by_group.append(rows)
        self.rows["er"], self.er_folds = leave_one_group_out(by_group, self.rng, valid_ratio=0.2)

    def _plan_asr(self) -> None:
        c = self.cfg
        for si, split in enumerate(("train", "dev", "test")):
            spks = self._speakers(c.asr_speakers[si], "asr")
            for k, text in enumerate(self._take_sentences(c.asr_sentences[si])):
                spk = spks[k % len(spks)]
                job = self._job(f"asr-{split}-{k:05d}", "asr", text, spk, phones=True)
                self._row("asr", split, job, spk, text=text.upper())

    # manifests
    def write_manifests(self, out: Path, results: list[dict[str, Any]]) -> dict[str, Path]:
        by_id = {r["id"]: r for r in results}

        def fill(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**row, "num_samples": by_id[row["id"]]["num_samples"]} for row in rows]

        common = {"corpus": CORPUS, "version": corpus_version()}
        extra_common = {"generator": "eSpeak NG via espeakng-loader", "sizes": asdict(self.cfg),
                        "jitter": asdict(self.jit)}
        dirs = {}
        dirs["ks"] = write_task_manifest(out / "ks", task="ks", label_field="label", labels=KS_LABELS,
                                         splits={s: fill(r) for s, r in self.rows["ks"].items()},
                                         extra=extra_common, **common)
        dirs["sid"] = write_task_manifest(out / "sid", task="sid", label_field="label", labels=self.sid_labels,
                                          splits={s: fill(r) for s, r in self.rows["sid"].items()},
                                          extra=extra_common, **common)
        dirs["er"] = write_task_manifest(out / "er", task="er", label_field="label", labels=EMOTIONS,
                                         splits={s: fill(r) for s, r in self.rows["er"].items()},
                                         folds=self.er_folds,
                                         extra={**extra_common, "emotion_rules": EMOTION_RULES,
                                                "dev_policy": "seeded random 20% of the training groups' "
                                                              "utterances (s3prl emotion valid_ratio 0.2)"},
                                         **common)
        asr = {s: fill(r) for s, r in self.rows["asr"].items()}
        chars = sorted({ch for rows in asr.values() for row in rows for ch in row["text"]})
        dirs["asr"] = write_task_manifest(out / "asr", task="asr", label_field="text", labels=chars,
                                          splits=asr, extra={**extra_common, "grammar": GRAMMAR}, **common)
        pr = {s: [{k: v for k, v in row.items() if k != "text"} | {"phones": " ".join(by_id[row["id"]]["phones"])}
                  for row in rows] for s, rows in asr.items()}
        inventory = sorted({p for rows in pr.values() for row in rows for p in row["phones"].split()})
        dirs["pr"] = write_task_manifest(out / "pr", task="pr", label_field="phones", labels=inventory, splits=pr,
                                         extra={**extra_common, "phone_inventory":
                                                "eSpeak NG IPA for the speaker's accent, stress marks removed, "
                                                "length marks kept as part of the phone"}, **common)
        for module in demo_parts():
            folder = module.write(self, out, fill, common, extra_common)
            if folder is not None:
                dirs[module.TASK] = folder
        return dirs


# --------------------------------------------------------------------------- synthesis (workers)

def _synthesise(jobs: list[dict[str, Any]], out: Path, workers: int | None) -> list[dict[str, Any]]:
    from tqdm import tqdm

    chunks = [(str(out), jobs[i:i + CHUNK]) for i in range(0, len(jobs), CHUNK)]
    workers = workers or min(2, os.cpu_count() or 1)
    ctx = mp.get_context("forkserver")
    results: list[dict[str, Any]] = []
    # Leaving the `with` for any reason (done, a worker's error, Ctrl-C, SIGTERM) terminates the pool,
    # so no worker outlives the command.
    with ctx.Pool(processes=workers, maxtasksperchild=1, initializer=_init_worker) as pool, \
            tqdm(total=len(jobs), desc="synthesising demo corpus", unit="utt", disable=None) as bar:
        for chunk_results in pool.imap(_run_chunk, chunks):
            results.extend(chunk_results)
            bar.update(len(chunk_results))
    return results


def _init_worker() -> None:
    """Ctrl-C reaches the whole process group: the parent alone handles it (and terminates the pool), so
    the workers print no KeyboardInterrupt tracebacks of their own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_chunk(arg: tuple[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Runs in a fresh process: the eSpeak engine starts from the same state for every chunk.

    Before each job it checks that the command is still there: a parent killed outright (kill -9) cannot
    terminate its pool, and the worker would otherwise write the rest of its chunk into a corpus nobody
    finishes (and then fail to send the results)."""
    out, jobs = arg
    parent = mp.parent_process()
    results: list[dict[str, Any]] = []
    for job in jobs:
        if parent is not None and not parent.is_alive():
            raise SystemExit(1)  # quietly: nobody is left to report to
        results.append(_render(Path(out), job))
    return results


def _coloured_noise(rng: np.random.Generator, n: int, alpha: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1] if n > 1 else 1.0
    spec *= (f / 1000.0) ** (-alpha / 2)
    noise = np.fft.irfft(spec, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _apply_tilt(x: np.ndarray, tilt: float) -> np.ndarray:
    """Vocal effort as spectral tilt: emphasis (tense) for tilt > 0, one-pole low-pass (soft) for tilt < 0."""
    from scipy.signal import lfilter

    if tilt > 0:
        return lfilter([1.0, -0.95 * tilt], [1.0], x)
    if tilt < 0:
        a = 0.9 * -tilt
        return lfilter([1.0 - a], [1.0, -a], x)
    return x


def _render(out: Path, job: dict[str, Any]) -> dict[str, Any]:
    import soxr

    from recipes.prepare.espeak import Engine, Prosody
    from superbench.audio import save_wav

    rng = np.random.default_rng(job["seed"])
    result: dict[str, Any] = {"id": job["id"]}
    if job["text"] is None:
        wav = _coloured_noise(rng, SAMPLE_RATE, job["noise_alpha"]) * 10 ** (job["level_db"] / 20)
    else:
        engine = Engine.get()
        if job["phones"]:
            result["phones"] = engine.phonemes(job["text"], job["voice"])
        raw = engine.synth(job["text"] + ".", job["voice"],
                           Prosody(rate=job["rate"], pitch=job["pitch"], range=job["range"], volume=100),
                           seed=job["seed"])
        active = np.flatnonzero(np.abs(raw) > 1e-3)
        if active.size == 0:
            raise RuntimeError(f"eSpeak produced silence for {job['id']} ({job['text']!r}, {job['voice']})")
        raw = raw[max(0, active[0] - 220): active[-1] + 220]
        speech = _apply_tilt(soxr.resample(raw, engine.sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float64),
                             job["tilt"])
        speech *= 10 ** (job["level_db"] / 20) / (np.sqrt(np.mean(speech**2)) + 1e-12)
        if job["clip"]:
            n = SAMPLE_RATE
            if len(speech) > n:
                start = (len(speech) - n) // 2
                speech = speech[start:start + n]
            clean = np.zeros(n)
            off = int(job["offset"] * (n - len(speech)))
            clean[off:off + len(speech)] = speech
        else:
            lead, trail = int(job["lead"] * SAMPLE_RATE), int(job["trail"] * SAMPLE_RATE)
            clean = np.concatenate([np.zeros(lead), speech, np.zeros(trail)])
        p_speech = np.mean(speech**2)
        noise = _coloured_noise(rng, len(clean), job["noise_alpha"])
        wav = clean + noise * np.sqrt(p_speech / 10 ** (job["snr_db"] / 10))
    peak = np.max(np.abs(wav))
    if peak > 0.99:
        wav = wav * (0.99 / peak)
    path = out / job["path"]
    save_wav(path, wav, SAMPLE_RATE)
    result["num_samples"] = len(wav)
    result["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def _ensure(size: str | None) -> Path:
    return ensure_demo(size or "default")


#: `--data demo` / `--data demo:SIZE` (made once, then reused); `superbench data demo` makes it on request.
PREPARER = Preparer("demo", ensure=_ensure, writes="every task's part (synthesised)")

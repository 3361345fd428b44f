"""Corpus preparers: each writes superbench manifests (one folder per task) for a corpus on disk.

`demo` synthesises the offline demo corpus with eSpeak NG; the others index real corpora
(Speech Commands v0.01, VoxCeleb1, IEMOCAP, LibriSpeech, any Hugging Face audio dataset).
Every module here that declares `PREPARER` (a `superbench.preparers.Preparer`) is a corpus:
`PREPARERS` collects them and the `superbench.preparers` entry point names it, so adding a corpus is
adding its module. The helpers below are what the preparers share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from superbench.manifest import Fold, load_task_manifest
from superbench.preparers import Preparer, PrepareRequest
from superbench.registry import declared_in
from superbench.tasks import in_task_order

log = logging.getLogger(__name__)


class PrepareError(ValueError):
    """The corpus on disk has problems; the message lists them by path (first few + count)."""


@dataclass
class Problems:
    """Collects bad inputs so a preparer reports all of them at once instead of the first only.

    With `skip_bad=True` the offending utterances are left out and logged; otherwise
    `raise_if_any()` fails before anything is written (never a half manifest).
    """

    corpus: str
    skip_bad: bool = False
    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "\n  ".join(self.items[:10])
        more = f"\n  ... and {len(self.items) - 10} more" if len(self.items) > 10 else ""
        text = f"{self.corpus}: {len(self.items)} problem(s):\n  {shown}{more}"
        if self.skip_bad:
            log.warning("%s\n(skipped: --skip-bad)", text)
            return
        raise PrepareError(text + "\n(fix them, or pass skip_bad=True / --skip-bad to leave those files out)")


#: File extensions of the formats libsndfile reads, by soundfile format name (RAW, headerless, is left out).
FORMAT_EXTENSIONS = {
    "WAV": ("wav",), "WAVEX": ("wav",), "RF64": ("rf64", "wav"), "W64": ("w64",), "FLAC": ("flac",),
    "OGG": ("ogg", "oga", "opus"), "MP3": ("mp3",), "AIFF": ("aiff", "aif", "aifc"), "AU": ("au", "snd"),
    "CAF": ("caf",), "NIST": ("sph", "nist"), "IRCAM": ("sf",), "VOC": ("voc",), "AVR": ("avr",),
    "HTK": ("htk",), "SVX": ("iff", "svx"), "PAF": ("paf",), "PVF": ("pvf",), "SD2": ("sd2",), "SDS": ("sds",),
    "MPC2K": ("mpc",), "WVE": ("wve",), "XI": ("xi",), "MAT4": ("mat",), "MAT5": ("mat",),
}


def audio_extensions() -> set[str]:
    """Lower-case extensions (no dot) of every format this soundfile/libsndfile build reads."""
    import soundfile as sf

    available = sf.available_formats()
    return {ext for fmt, exts in FORMAT_EXTENSIONS.items() if fmt in available for ext in exts}


@dataclass
class Dropped:
    """What a preparer leaves out or relabels on purpose, by reason: logged, and kept in meta.json
    `extra.dropped` so the CLI summary (and anyone later) can see it."""

    corpus: str
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, item: str) -> None:
        self.reasons.setdefault(reason, []).append(item)

    def report(self) -> dict[str, dict[str, Any]]:
        """{reason: {"count": n, "examples": first five}}, logged as warnings."""
        out = {}
        for reason, items in self.reasons.items():
            log.warning("%s: %d %s (e.g. %s)", self.corpus, len(items), reason, ", ".join(items[:3]))
            out[reason] = {"count": len(items), "examples": items[:5]}
        return out


def probe_audio(path: Path, problems: Problems) -> dict[str, Any] | None:
    """`sample_rate` and `num_samples` of a file, or None after recording why it is unusable."""
    import soundfile as sf

    if not path.is_file():
        problems.add(f"{path}: missing audio file")
        return None
    if path.stat().st_size == 0:
        problems.add(f"{path}: zero-length file")
        return None
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for corrupt files
        problems.add(f"{path}: unreadable audio ({str(exc).strip()[:120]})")
        return None
    if info.frames == 0:
        problems.add(f"{path}: audio has 0 samples")
        return None
    return {"sample_rate": int(info.samplerate), "num_samples": int(info.frames)}


def audio_row(uid: str, path: Path, speaker: str, problems: Problems, **label: Any) -> dict[str, Any] | None:
    """A manifest row for a file on disk (absolute path: the corpus stays where it is)."""
    info = probe_audio(path, problems)
    if info is None:
        return None
    return {"id": uid, "audio": str(path.resolve()), "speaker": speaker, **info, **label}


def leave_one_group_out(groups: list[list[dict[str, Any]]], rng: Any,
                        valid_ratio: float = 0.2) -> tuple[dict[str, list[dict[str, Any]]], list[Fold]]:
    """IEMOCAP-style folds: fold k tests on group k; a random `valid_ratio` of the other groups'
    rows is its dev set (s3prl's emotion recipe: valid_ratio 0.2, random_split), the rest trains."""
    splits: dict[str, list[dict[str, Any]]] = {}
    for k in range(len(groups)):
        pool = [row for g, rows in enumerate(groups) if g != k for row in rows]
        perm = rng.permutation(len(pool))
        dev_idx = set(perm[: int(round(valid_ratio * len(pool)))].tolist())
        splits[f"fold{k + 1}_train"] = [r for i, r in enumerate(pool) if i not in dev_idx]
        splits[f"fold{k + 1}_dev"] = [r for i, r in enumerate(pool) if i in dev_idx]
        splits[f"fold{k + 1}_test"] = list(groups[k])
    folds = [Fold(f"fold{k}", f"fold{k}_train", f"fold{k}_dev", f"fold{k}_test") for k in range(1, len(groups) + 1)]
    return splits, folds


def default_out(corpus: str) -> Path:
    from superbench.paths import data_dir

    return data_dir() / corpus


def simple_preparer(name: str, prepare: Callable[..., Path], writes: str) -> Preparer:
    """The `Preparer` of a corpus read by `prepare(root, out, skip_bad=...) -> task folder` (one task)."""

    def run(request: PrepareRequest) -> Path:
        return prepare(request.root, request.out, skip_bad=request.skip_bad).parent

    return Preparer(name, prepare=run, writes=writes)


def _builtin_preparers() -> dict[str, Preparer]:
    return {preparer.name: preparer for _, preparer in declared_in(__name__, __path__, "PREPARER")}


def __getattr__(name: str) -> Any:
    # Built on first use (PEP 562): importing one preparer does not import them all.
    if name == "PREPARERS":
        return _builtin_preparers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def summarize_corpus(root: str | Path) -> dict[str, dict[str, Any]]:
    """Per task: utterances, speakers, minutes, classes (from the manifests, so it works for any corpus)."""
    root = Path(root)
    summary: dict[str, dict[str, Any]] = {}
    for task in in_task_order(p.parent.name for p in root.glob("*/meta.json")):
        m = load_task_manifest(root / task, check_files=False)
        utts = m.utterances()
        summary[task] = {
            "utterances": len(utts),
            "speakers": len({u.speaker for u in utts}),
            "minutes": round(sum(u.duration for u in utts) / 60, 2),
            "classes": len(m.labels),
            "splits": {s: len(r) for s, r in m.splits.items()},
        }
        if m.extra.get("dropped"):  # what a preparer left out or relabelled, by reason
            summary[task]["dropped"] = m.extra["dropped"]
    return summary


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    """The summary as the table `superbench data` prints; PR's audio is counted once when ASR has it too."""
    w = max([5, *map(len, summary)])  # as wide as the longest task name ('ood_sbcsae'), so the columns line up
    lines = [f"{'task':<{w}} {'utterances':>10} {'speakers':>8} {'minutes':>8} {'classes':>7}"]
    for task, s in summary.items():
        lines.append(f"{task:<{w}} {s['utterances']:>10} {s['speakers']:>8} {s['minutes']:>8.1f} {s['classes']:>7}")
    shared = "pr" in summary and "asr" in summary  # the demo and LibriSpeech: PR's rows are ASR's audio
    distinct_minutes = sum(s["minutes"] for t, s in summary.items() if not (shared and t == "pr"))
    lines.append(f"total audio: {distinct_minutes:.1f} min" + (" (PR reuses the ASR audio)" if shared else ""))
    for task, s in summary.items():
        for reason, d in s.get("dropped", {}).items():
            lines.append(f"{task}: {d['count']} {reason}, e.g. {', '.join(d['examples'][:3])}")
    return "\n".join(lines)

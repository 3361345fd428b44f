"""Manifests: the single source of truth for data.

A data root holds one folder per task:

    ROOT/<task>/meta.json         corpus, version, task, labels, folds, fingerprint
    ROOT/<task>/<split>.jsonl     one utterance per line

A line has `id`, `audio` (path, relative to the task folder or absolute),
`sample_rate`, `num_samples`, `speaker` and target fields; meta.json's `label_field`
names the one the task learns: e.g. `label` (KS, SID, ER class name, from the
inventory in meta.json), `text` (ASR transcript) or `phones` (PR, space-separated
phones from the inventory). Any other field is kept in `Utterance.targets`, so a new
task needs no change here. `folds` says which splits train, select and test; ER has
five leave-one-group-out folds, the other tasks one.
Everything is validated on load, and writes are atomic (temp file + rename). With
`check_files` (the default) every audio file must exist and its header must agree with the row's
`sample_rate` and `num_samples` (WAV and FLAC headers are parsed from the file's first bytes,
`superbench.audio.header_info`; other formats are asked of `soundfile.info`): one open per file.

Unseen labels. A target is *class-like* when meta.json has a `labels` inventory and every row's
`label_field` value is one of its members (KS/SID/ER labels; not phone strings or transcripts,
whose values are sequences). For a class-like target, a label that occurs in a fold's dev or
test split but never in its train split is an error, at write and at load, naming the labels and
their counts per split: a classifier cannot predict a class it never saw, and the score would drop
with no other sign. A manifest that means it opts out with `"allow_unseen_labels": true` in
meta.json (`write_task_manifest(..., allow_unseen_labels=True)`).

Leaked audio. At load, audio files of a fold's dev/test rows that are byte-identical to one of its
train rows (the same file, or a copy under another name) are logged as a warning naming the pairs.
Only files of equal size and equal first 4 KiB are hashed whole; `check_duplicates=False` or
SUPERBENCH_DUPLICATE_CHECK=0
skips the check for huge corpora.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from superbench.audio import HEADER_BYTES, header_info
from superbench.io import atomic_write_text, file_blake2b, map_in_threads

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
#: Columns every row has; everything else in a row is a target (`Utterance.targets`).
BASE_FIELDS = ("id", "audio", "sample_rate", "num_samples", "speaker")
#: Fields a row must have (`speaker` defaults to "").
ROW_FIELDS = ("id", "audio", "sample_rate", "num_samples")
#: Fields meta.json must have.
META_FIELDS = ("task", "corpus", "version", "label_field", "labels", "folds", "splits", "fingerprint")
#: Set to 0 to skip the byte-identical-audio check at load (huge corpora).
DUPLICATE_CHECK_ENV = "SUPERBENCH_DUPLICATE_CHECK"
#: Threads that open audio files for the checks at load (the waits on the disk overlap).
PROBE_WORKERS = 8


class ManifestError(ValueError):
    """Invalid manifest; the message lists the offending rows (first few + count)."""


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str  # absolute path after loading
    sample_rate: int
    num_samples: int
    speaker: str = ""
    targets: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def __getattr__(self, name: str) -> Any:
        """`u.label`, `u.text`, ...: a target field by name (AttributeError when the row has none)."""
        if not name.startswith("_"):
            targets = self.__dict__.get("targets", {})
            if name in targets:
                return targets[name]
        raise AttributeError(f"utterance has no field {name!r}")


@dataclass(frozen=True)
class Fold:
    name: str
    train: str
    dev: str
    test: str


@dataclass
class TaskManifest:
    root: Path
    task: str
    corpus: str
    version: str
    label_field: str
    labels: list[str]
    folds: list[Fold]
    splits: dict[str, list[Utterance]]
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)
    allow_unseen_labels: bool = False
    #: Files beside the rows that the task reads (in `root`), covered by `fingerprint`.
    sidecars: list[str] = field(default_factory=list)

    def check_inventory(self, field: str, units: Callable[[Any], Iterable[str]] = lambda value: [value]) -> None:
        """Refuse rows whose `field` has units (the value itself, or e.g. its phones) outside `labels`.

        Task kinds call this: which field holds classes and how a value splits into units is theirs to say.
        """
        if not self.labels:
            raise ManifestError(f"{self.root}/meta.json: {field!r} needs a label inventory in 'labels'")
        inventory = set(self.labels)
        bad = []
        for split, rows in self.splits.items():
            for u in rows:
                outside = sorted(set(units(u.targets.get(field))) - inventory)
                if outside:
                    bad.append(f"{split}.jsonl id={u.id!r}: {outside if len(outside) > 1 else outside[0]!r}")
        if bad:
            raise ManifestError(f"{self.root}: invalid manifest\n"
                                + format_problems("labels outside the inventory in meta.json", bad))

    def utterances(self) -> list[Utterance]:
        """Every distinct utterance across splits (ids are unique per task)."""
        seen: dict[str, Utterance] = {}
        for rows in self.splits.values():
            for u in rows:
                seen.setdefault(u.id, u)
        return list(seen.values())


def _rows_fingerprint(splits: dict[str, list[dict[str, Any]]], task_dir: Path | None = None,
                      sidecars: Sequence[str] = ()) -> str:
    """Digest of the rows and of the sidecar files' bytes (e.g. SV's trial lists): what the task learns from."""
    h = hashlib.sha256()
    encode = json.JSONEncoder(sort_keys=True).encode  # json.dumps(row, sort_keys=True), without a new encoder per row
    for split in sorted(splits):
        h.update(split.encode())
        for row in splits[split]:
            h.update(encode(row).encode())
    for name in sidecars:  # none for most tasks: their fingerprints stay what they were
        path = Path(task_dir or ".") / name
        if not path.is_file():
            raise ManifestError(f"{path}: sidecar file named in meta.json is missing")
        h.update(name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def is_class_like(values: Iterable[Any], labels: Iterable[str]) -> bool:
    """True when every value is a member of a non-empty `labels` inventory (a class label, not a sequence)."""
    inventory = set(labels)
    return bool(inventory) and all(isinstance(v, str) and v in inventory for v in values)


def unseen_labels(label_field: str, labels: Iterable[str], splits: dict[str, list[dict[str, Any]]],
                  folds: list[Fold]) -> list[str]:
    """One line per fold whose dev/test rows carry class labels its train rows never do (empty: none).

    Only for class-like targets (see the module docstring); rows are plain dicts, as written or read.
    """
    labels = list(labels)
    if not is_class_like((r.get(label_field) for rows in splits.values() for r in rows), labels):
        return []
    out = []
    for fold in folds:
        seen = {r[label_field] for r in splits.get(fold.train, [])}
        counts: dict[str, Counter] = defaultdict(Counter)
        for held in dict.fromkeys((fold.dev, fold.test)):
            if held == fold.train:
                continue
            for r in splits.get(held, []):
                if r[label_field] not in seen:
                    counts[r[label_field]][held] += 1
        if counts:
            shown = ", ".join(f"{label!r} ({', '.join(f'{s} {n}' for s, n in c.items())})"
                              for label, c in sorted(counts.items())[:10])
            more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
            out.append(f"fold {fold.name!r}: {len(counts)} {label_field!r} value(s) never in "
                       f"{fold.train}.jsonl: {shown}{more}")
    return out


def _unseen_error(where: str, problems: list[str]) -> ManifestError:
    return ManifestError(
        f"{where}: labels in dev/test that training never sees (a classifier cannot predict them):\n  "
        + "\n  ".join(problems)
        + "\n(fix the splits, or opt out: write_task_manifest(..., allow_unseen_labels=True), i.e. "
          '"allow_unseen_labels": true in meta.json)')


def write_task_manifest(task_dir: str | Path, *, task: str, corpus: str, version: str, label_field: str,
                        labels: Iterable[str], splits: dict[str, list[dict[str, Any]]],
                        folds: list[Fold] | None = None, extra: dict[str, Any] | None = None,
                        allow_unseen_labels: bool = False, sidecars: Sequence[str] = ()) -> Path:
    """Write split files then meta.json (last, so a folder with meta.json is complete).

    The repeated-row and unseen-label rules are checked first, so a preparer fails before writing anything.
    `sidecars` names files the preparer already wrote into `task_dir` that the task reads beside the
    rows (SV's trial lists): their bytes are part of the manifest's fingerprint, i.e. of the run identity.
    """
    task_dir = Path(task_dir)
    labels = list(labels)
    if not label_field.isidentifier() or label_field in BASE_FIELDS:
        raise ManifestError(f"label_field must be a field name other than {BASE_FIELDS}, got {label_field!r}")
    folds = folds or [Fold("default", "train", "dev", "test")]
    repeated = repeated_rows(splits, label_field)
    if repeated:
        raise ManifestError(f"{task_dir}: invalid manifest\n" + "\n".join(repeated))
    if not allow_unseen_labels:
        unseen = unseen_labels(label_field, labels, splits, folds)
        if unseen:
            raise _unseen_error(str(task_dir), unseen)
    for split, rows in splits.items():
        text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
        atomic_write_text(task_dir / f"{split}.jsonl", text)
    meta = {
        "manifest_version": MANIFEST_VERSION, "task": task, "corpus": corpus, "version": version,
        "label_field": label_field, "labels": labels, "folds": [asdict(f) for f in folds],
        "splits": {s: len(r) for s, r in splits.items()},
        "fingerprint": _rows_fingerprint(splits, task_dir, list(sidecars)), "extra": extra or {},
    }
    if allow_unseen_labels:  # only when set, so existing meta.json files stay byte-identical
        meta["allow_unseen_labels"] = True
    if sidecars:
        meta["sidecars"] = list(sidecars)
    atomic_write_text(task_dir / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return task_dir


def format_problems(kind: str, rows: list[str]) -> str:
    """"N row(s) with KIND:" and the first few rows: how every manifest problem is reported."""
    shown = "\n  ".join(rows[:5])
    more = f"\n  ... and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{len(rows)} row(s) with {kind}:\n  {shown}{more}"


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """meta.json, with an error naming the file and the field for anything missing or mistyped."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ManifestError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise ManifestError(f"{meta_path}: missing field(s) {', '.join(map(repr, missing))} (meta.json needs "
                            f"{', '.join(META_FIELDS)}; superbench.manifest.write_task_manifest writes all of them)")
    types = {"labels": list, "folds": list, "splits": (dict, list), "label_field": str, "fingerprint": str}
    for key, kind in types.items():
        if not isinstance(meta[key], kind):
            raise ManifestError(f"{meta_path}: field {key!r} has the wrong type ({type(meta[key]).__name__})")
    for i, fold in enumerate(meta["folds"]):
        if not isinstance(fold, dict) or sorted(fold) != ["dev", "name", "test", "train"]:
            raise ManifestError(f"{meta_path}: field 'folds'[{i}] must have exactly name, train, dev and test, "
                                f"got {fold!r}")
    return meta


@dataclass(frozen=True)
class FileProbe:
    """What one open of an audio file tells the manifest checks: its size and a CRC-32 of its first bytes
    (how `find_identical_audio` tells most equal-sized files apart without reading them whole; equal CRCs are
    only candidates, confirmed by a digest of the whole files, so a CRC collision costs a read, never a verdict)."""

    size: int
    head: int

    @classmethod
    def read(cls, path: str) -> tuple[FileProbe, bytes]:
        """The probe and the first HEADER_BYTES of `path` (OSError when it cannot be opened). `os.open` and a CRC
        rather than a file object and a cryptographic digest: on 148k files that is seconds of a manifest's load."""
        fd = os.open(path, os.O_RDONLY)
        try:
            size, head = os.fstat(fd).st_size, os.read(fd, HEADER_BYTES)
        finally:
            os.close(fd)
        return cls(size, zlib.crc32(head)), head


#: The probe of a file that exists but cannot be read.
UNREADABLE = FileProbe(-1, 0)


def _probe_file(u: Utterance) -> tuple[FileProbe | None, list[str]]:
    """Open the file once: size, head CRC, and the declared sample rate and length against its header
    (parsed from the first bytes for WAV and FLAC, else `soundfile.info`); the probe (None when the file
    is missing) and the header's disagreements with the row.

    A file that exists but cannot be read or parsed is left to extraction, whose error names it."""
    try:
        probe, head = FileProbe.read(u.audio)
    except OSError:
        return (UNREADABLE if os.path.isfile(u.audio) else None), []
    size = probe.size
    info = header_info(head, size)
    if info is None:
        import soundfile as sf

        try:
            found = sf.info(u.audio)
        except Exception:  # soundfile raises several types for unreadable files
            return probe, []
        info = (int(found.samplerate), int(found.frames))
    rate, frames = info
    bad = []
    if rate != u.sample_rate:
        bad.append(f"'sample_rate' is {u.sample_rate}, the file says {rate} ({u.audio})")
    if frames != u.num_samples:
        bad.append(f"'num_samples' is {u.num_samples}, the file has {frames} ({u.audio})")
    return probe, bad


def _audio_path(audio: str, task_dir: Path) -> str:
    """The row's audio as an absolute path (relative ones resolved against the task folder); a clean absolute
    path is taken as it is (what `str(Path(audio))` would give, without building a Path for each of 100k rows)."""
    if isinstance(audio, str) and os.path.isabs(audio) and os.path.normpath(audio) == audio:
        return audio
    path = Path(audio)
    return str(path if path.is_absolute() else (task_dir / path).resolve())


def repeated_rows(splits: dict[str, list[dict[str, Any]]], label_field: str) -> list[str]:
    """Problems of rows that repeat an utterance (an id with its audio): twice in one split (it would
    be scored twice, weighing double), or in two splits with different labels. The same utterance in
    several splits with one label is how folds share rows, and is fine. Checked on write and on load."""
    twice, contradictory = [], []
    first: dict[tuple[str, str], tuple[str, Any]] = {}  # (id, audio) -> (split, label) of its first row
    for split, rows in splits.items():
        in_split: set[str] = set()
        for row in rows:
            where = f"{split}.jsonl id={row.get('id')!r}"
            if row.get("id") in in_split:
                twice.append(where)
            in_split.add(row.get("id"))
            value = row.get(label_field)
            seen_split, seen_value = first.setdefault((str(row.get("id")), str(row.get("audio"))), (split, value))
            if seen_value != value:
                contradictory.append(f"{where}: {label_field}={_short(value)} but {seen_split}.jsonl has "
                                     f"{label_field}={_short(seen_value)}")
    return ([format_problems("an id listed twice in one split", twice)] if twice else []) + \
        ([format_problems("the same utterance with contradictory labels", contradictory)] if contradictory else [])


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def find_identical_audio(manifest: TaskManifest, probes: Mapping[str, FileProbe] | None = None) -> list[str]:
    """Rows of a fold's dev/test whose audio is byte-identical to a train row's (one line per pair).

    Files are grouped by size, then by a CRC-32 of their first HEADER_BYTES (`probes`, by path, as
    `load_task_manifest` read them; else read here), and only files equal in both are hashed whole: on a
    large corpus many files share a size, few share their first bytes."""
    probes = dict(probes or {})
    digests: dict[str, str] = {}

    def probe(path: str) -> FileProbe:
        if path not in probes:
            try:
                probes[path] = FileProbe.read(path)[0]
            except OSError:
                probes[path] = UNREADABLE
        return probes[path]

    def digest(path: str) -> str:
        if path not in digests:
            digests[path] = file_blake2b(path, digest_size=16)
        return digests[path]

    pairs: dict[tuple[str, str, str, str], str] = {}
    for fold in manifest.folds:
        held = [(split, u) for split in dict.fromkeys((fold.dev, fold.test)) if split != fold.train
                for u in manifest.splits[split]]
        held_sizes = {probe(u.audio).size for _, u in held} - {-1}
        candidates: dict[tuple[int, str], list[Utterance]] = defaultdict(list)
        for t in manifest.splits[fold.train]:
            if probe(t.audio).size in held_sizes:
                candidates[probe(t.audio).size, probe(t.audio).head].append(t)
        for split, u in held:
            p = probe(u.audio)
            if p.size < 0:
                continue
            same_head = candidates.get((p.size, p.head), ())
            for t in same_head:
                if digest(t.audio) != digest(u.audio):
                    continue
                same = " (the same file)" if u.audio == t.audio else f" ({u.audio} == {t.audio})"
                pairs.setdefault((split, u.id, fold.train, t.id),
                                 f"{split}.jsonl id={u.id!r} is byte-identical to {fold.train}.jsonl id={t.id!r}{same}")
    return list(pairs.values())


def load_task_manifest(task_dir: str | Path, check_files: bool = True,
                       check_duplicates: bool | None = None) -> TaskManifest:
    """Load and validate; every problem class is reported with the offending rows.

    `check_duplicates` (default: on with `check_files`, unless SUPERBENCH_DUPLICATE_CHECK=0) warns
    about byte-identical audio shared by train and dev/test.
    """
    task_dir = Path(task_dir)
    meta_path = task_dir / "meta.json"
    if not meta_path.is_file():
        raise ManifestError(f"{task_dir}: no meta.json (not a prepared task folder)")
    meta = _read_meta(meta_path)
    label_field = meta["label_field"]
    labels = list(meta["labels"])
    raw: dict[str, list[dict[str, Any]]] = {}
    errors: list[str] = []
    for split in meta["splits"]:
        path = task_dir / f"{split}.jsonl"
        if not path.is_file():
            errors.append(f"split file missing: {path}")
            continue
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{path}:{n}: not valid JSON ({exc})")
                continue
            if not isinstance(row, dict):
                errors.append(f"{path}:{n}: expected a JSON object")
                continue
            absent = [k for k in ROW_FIELDS if k not in row]
            if absent:
                errors.append(f"{path}:{n}: missing field(s) {', '.join(map(repr, absent))}")
                continue
            for key in ("sample_rate", "num_samples"):
                if not isinstance(row[key], int) or isinstance(row[key], bool) or row[key] <= 0:
                    errors.append(f"{path}:{n}: field {key!r} must be a positive integer, got {row[key]!r}")
            rows.append(row)
        raw[split] = rows
    if errors:
        raise ManifestError(f"{task_dir}: " + "; ".join(errors[:10])
                            + (f"; ... and {len(errors) - 10} more" if len(errors) > 10 else ""))

    missing, dupes, empty, header = [], [], [], []
    probes: dict[str, FileProbe] = {}
    seen: dict[str, str] = {}
    splits: dict[str, list[Utterance]] = {}
    for split, rows in raw.items():
        out = []
        for row in rows:
            audio = _audio_path(row["audio"], task_dir)
            u = Utterance(id=row["id"], audio=audio, sample_rate=int(row["sample_rate"]),
                          num_samples=int(row["num_samples"]), speaker=str(row.get("speaker", "")),
                          targets={k: v for k, v in row.items() if k not in BASE_FIELDS})
            prev = seen.get(row["id"])
            if prev is not None and prev != audio:
                dupes.append(f"{split}.jsonl id={row.get('id')!r} (also in another row with {prev})")
            seen[row["id"]] = audio
            value = row.get(label_field)
            if value is None or (isinstance(value, str) and not value.strip()):
                empty.append(f"{split}.jsonl id={row.get('id')!r}")
            out.append(u)
        splits[split] = out
    if check_files:  # opening 100k files is most of a large manifest's load: the waits on the disk overlap
        listed = [(split, u) for split, us in splits.items() for u in us]
        for (split, u), (probe, bad) in zip(listed, map_in_threads(_probe_file, [u for _, u in listed],
                                                                   PROBE_WORKERS)):
            where = f"{split}.jsonl id={u.id!r}"
            if probe is None:
                missing.append(f"{where}: {u.audio}")
                continue
            probes[u.audio] = probe
            header.extend(f"{where}: {problem}" for problem in bad)
    problems = []
    if missing:
        problems.append(format_problems("missing audio files", missing))
    if header:
        problems.append(format_problems("a header that disagrees with the row", header))
    if dupes:
        problems.append(format_problems("duplicate ids", dupes))
    problems += repeated_rows(raw, label_field)
    if empty:
        problems.append(format_problems(f"an empty or absent {label_field!r}", empty))
    if problems:
        raise ManifestError(f"{task_dir}: invalid manifest\n" + "\n".join(problems))
    folds = [Fold(**f) for f in meta["folds"]]
    for fold in folds:
        for split in (fold.train, fold.dev, fold.test):
            if split not in splits:
                raise ManifestError(f"{task_dir}: fold {fold.name!r} names split {split!r}, which has no file")
    allow_unseen = bool(meta.get("allow_unseen_labels", False))
    if not allow_unseen:
        unseen = unseen_labels(label_field, labels, raw, folds)
        if unseen:
            raise _unseen_error(str(task_dir), unseen)
    # The run identity's `data` is what the rows say now, not what meta.json says they said.
    sidecars = meta.get("sidecars", [])
    if not isinstance(sidecars, list) or not all(isinstance(n, str) and n and "/" not in n for n in sidecars):
        raise ManifestError(f"{meta_path}: 'sidecars' must be a list of file names in {task_dir}, got {sidecars!r}")
    fingerprint = _rows_fingerprint(raw, task_dir, sidecars)
    if fingerprint != meta["fingerprint"]:
        log.warning("%s: stored fingerprint %s does not match the rows (%s): the split files were edited "
                    "after meta.json was written; using the rows' fingerprint", meta_path, meta["fingerprint"],
                    fingerprint)
    manifest = TaskManifest(root=task_dir, task=meta["task"], corpus=meta["corpus"], version=str(meta["version"]),
                            label_field=label_field, labels=labels, folds=folds, splits=splits,
                            fingerprint=fingerprint, extra=meta.get("extra", {}),
                            allow_unseen_labels=allow_unseen, sidecars=list(sidecars))
    if check_duplicates is None:
        check_duplicates = check_files and os.environ.get(DUPLICATE_CHECK_ENV, "1") != "0"
    if check_duplicates:
        leaks = find_identical_audio(manifest, probes)
        if leaks:
            log.warning("%s: audio shared by training and held-out rows (a leak that inflates the score):\n%s",
                        task_dir, format_problems("byte-identical audio", leaks))
    return manifest

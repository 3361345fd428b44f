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
Everything is validated on load, and writes are atomic (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from superbench.io import atomic_write_text

MANIFEST_VERSION = 1
#: Columns every row has; everything else in a row is a target (`Utterance.targets`).
BASE_FIELDS = ("id", "audio", "sample_rate", "num_samples", "speaker")


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


def _rows_fingerprint(splits: dict[str, list[dict[str, Any]]]) -> str:
    h = hashlib.sha256()
    for split in sorted(splits):
        h.update(split.encode())
        for row in splits[split]:
            h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()[:16]


def write_task_manifest(task_dir: str | Path, *, task: str, corpus: str, version: str, label_field: str,
                        labels: Iterable[str], splits: dict[str, list[dict[str, Any]]],
                        folds: list[Fold] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write split files then meta.json (last, so a folder with meta.json is complete)."""
    task_dir = Path(task_dir)
    if not label_field.isidentifier() or label_field in BASE_FIELDS:
        raise ManifestError(f"label_field must be a field name other than {BASE_FIELDS}, got {label_field!r}")
    folds = folds or [Fold("default", "train", "dev", "test")]
    for split, rows in splits.items():
        text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
        atomic_write_text(task_dir / f"{split}.jsonl", text)
    meta = {
        "manifest_version": MANIFEST_VERSION, "task": task, "corpus": corpus, "version": version,
        "label_field": label_field, "labels": list(labels), "folds": [asdict(f) for f in folds],
        "splits": {s: len(r) for s, r in splits.items()}, "fingerprint": _rows_fingerprint(splits),
        "extra": extra or {},
    }
    atomic_write_text(task_dir / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return task_dir


def format_problems(kind: str, rows: list[str]) -> str:
    """"N row(s) with KIND:" and the first few rows: how every manifest problem is reported."""
    shown = "\n  ".join(rows[:5])
    more = f"\n  ... and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{len(rows)} row(s) with {kind}:\n  {shown}{more}"


def load_task_manifest(task_dir: str | Path, check_files: bool = True) -> TaskManifest:
    """Load and validate; every problem class is reported with the offending rows."""
    task_dir = Path(task_dir)
    meta_path = task_dir / "meta.json"
    if not meta_path.is_file():
        raise ManifestError(f"{task_dir}: no meta.json (not a prepared task folder)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    label_field = meta["label_field"]
    labels = list(meta["labels"])
    raw: dict[str, list[dict[str, Any]]] = {}
    errors: list[str] = []
    for split in meta["splits"]:
        path = task_dir / f"{split}.jsonl"
        if not path.is_file():
            errors.append(f"split file missing: {path}")
            continue
        raw[split] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if errors:
        raise ManifestError(f"{task_dir}: " + "; ".join(errors))

    missing, dupes, empty = [], [], []
    seen: dict[str, str] = {}
    splits: dict[str, list[Utterance]] = {}
    for split, rows in raw.items():
        out = []
        for row in rows:
            where = f"{split}.jsonl id={row.get('id')!r}"
            audio = Path(row["audio"])
            if not audio.is_absolute():
                audio = (task_dir / audio).resolve()
            if check_files and not audio.is_file():
                missing.append(f"{where}: {audio}")
            prev = seen.get(row["id"])
            if prev is not None and prev != str(audio):
                dupes.append(f"{where} (also in another row with {prev})")
            seen[row["id"]] = str(audio)
            value = row.get(label_field)
            if value is None or (isinstance(value, str) and not value.strip()):
                empty.append(where)
            out.append(Utterance(id=row["id"], audio=str(audio), sample_rate=int(row["sample_rate"]),
                                 num_samples=int(row["num_samples"]), speaker=str(row.get("speaker", "")),
                                 targets={k: v for k, v in row.items() if k not in BASE_FIELDS}))
        splits[split] = out
    problems = []
    if missing:
        problems.append(format_problems("missing audio files", missing))
    if dupes:
        problems.append(format_problems("duplicate ids", dupes))
    if empty:
        problems.append(format_problems(f"an empty or absent {label_field!r}", empty))
    if problems:
        raise ManifestError(f"{task_dir}: invalid manifest\n" + "\n".join(problems))
    folds = [Fold(**f) for f in meta["folds"]]
    for fold in folds:
        for split in (fold.train, fold.dev, fold.test):
            if split not in splits:
                raise ManifestError(f"{task_dir}: fold {fold.name!r} names split {split!r}, which has no file")
    return TaskManifest(root=task_dir, task=meta["task"], corpus=meta["corpus"], version=str(meta["version"]),
                        label_field=label_field, labels=labels, folds=folds, splits=splits,
                        fingerprint=meta["fingerprint"], extra=meta.get("extra", {}))

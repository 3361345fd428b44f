"""Result records: one JSON file per (upstream, task, seed), with provenance.

Every metric is in percent (PER/WER/accuracy), the same unit as the SUPERB
paper, so records compare directly with published numbers. Records are written
atomically and validated on read, so a crashed run never leaves a half record.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from superbench.manifest import atomic_write_text
from superbench.tasks import TASKS

SCHEMA_VERSION = 1


class RecordError(ValueError):
    pass


@dataclass
class ResultRecord:
    upstream: str
    upstream_fingerprint: str
    task: str
    metric: str
    higher_is_better: bool
    test: float
    dev: float
    seed: int
    recipe_version: str
    profile: str = "superb"  # "superb" or a shrunken profile such as "fast"; never mix them silently
    lr: float | None = None
    steps: int = 0
    layer_weights: list[float] = field(default_factory=list)
    layer: int | str | None = None  # single-layer probe, or None for the weighted sum
    corpus: str = ""
    manifest_fingerprint: str = ""
    folds: dict[str, dict[str, float]] = field(default_factory=dict)
    wall_time: dict[str, float] = field(default_factory=dict)  # {"extraction": s, "training": s}
    versions: dict[str, str] = field(default_factory=dict)
    git_hash: str = ""
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def validate(self) -> "ResultRecord":
        if self.task not in TASKS:
            raise RecordError(f"result record has unknown task {self.task!r}: {TASKS.unknown_message(self.task)}")
        for name in ("test", "dev"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RecordError(f"result record {self.upstream}/{self.task}/seed{self.seed}: "
                                  f"{name} metric is {value!r}, not a finite number")
        return self

    def key(self) -> tuple[str, str, str, str, int]:
        return (self.upstream, self.upstream_fingerprint, self.task, self.recipe_version, self.seed)

    def file_name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.upstream)
        layer = "" if self.layer is None else f"__layer{self.layer}"
        return f"{safe}__{self.task}{layer}__seed{self.seed}.json"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResultRecord":
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise RecordError(f"not a result record: missing field(s) {missing}")
        try:
            rec = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise RecordError(f"not a result record ({exc})") from exc
        return rec.validate()


def write_record(record: ResultRecord, results_dir: str | Path) -> Path:
    record.validate()
    path = Path(results_dir) / record.file_name()
    atomic_write_text(path, record.to_json() + "\n")
    return path


def read_record(path: str | Path) -> ResultRecord:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: cannot read result record ({exc})") from exc
    try:
        return ResultRecord.from_dict(data)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from exc


def read_records(paths: list[str | Path]) -> list[ResultRecord]:
    """Read files, or every *.json under directories."""
    out = []
    for p in map(Path, paths):
        files = sorted(p.rglob("*.json")) if p.is_dir() else [p]
        out.extend(read_record(f) for f in files)
    return out


def git_hash() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("superbench", "torch", "transformers", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

"""Any Hugging Face `datasets` audio dataset -> one task manifest.

`source` is a hub id (used from the local HF cache when offline), a directory written by
`save_to_disk`, or `audiofolder:DIR`. `columns` maps manifest fields to dataset columns
(audio, and label / text / speaker as the task needs); `splits` maps train/dev/test to the
dataset's split names.

Audio is read undecoded (bytes or path) and decoded with soundfile, so no torchcodec/torchaudio is
needed: `datasets` >= 4 decodes (and even indexes an audiofolder) with torchcodec, which fails beside
CPU torch. For the same reason `audiofolder:DIR` is indexed here, after the AudioFolder layout
(split folders train/ validation|valid|val|dev/ test|eval/, or none = all train; the class is the
parent folder when all files sit at one depth in more than one folder; or a metadata.csv/.jsonl
with `file_name` and further columns per split folder).

The decoded float samples are kept exactly: 32-bit float WAV, no scaling and no clipping (decoding or
resampling may peak above 1.0; PCM_16 would clip those), 16 kHz mono under OUT/audio/<task>/; the
format and the number of files peaking above full scale are recorded in meta.json `extra.audio`.
`datasets` is an optional extra: imported lazily; a missing extra or a dataset it cannot load is a
PrepareError (one line in the CLI), never a traceback.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from recipes.prepare import PrepareError, Problems, audio_extensions, default_out
from superbench.manifest import Fold, unseen_labels, write_task_manifest
from superbench.preparers import Preparer, PrepareRequest
from superbench.tasks import get_task

log = logging.getLogger(__name__)

DEFAULT_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
#: AudioFolder's split folder names (as `datasets` infers them) -> split.
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test", "eval": "test",
                 "evaluation": "test"}
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
AUDIO_SUBTYPE = "FLOAT"


class MissingExtraError(PrepareError, ImportError):
    """The optional `datasets` package is not installed (an ImportError, reported like any PrepareError)."""


def _datasets():
    try:
        import datasets
    except ImportError as exc:
        raise MissingExtraError("preparing a Hugging Face dataset needs the optional package 'datasets': "
                                "pip install 'superbench[datasets]' (or pip install datasets)") from exc
    return datasets


def _metadata_rows(folder: Path) -> list[dict[str, Any]] | None:
    """Rows of the split folder's metadata.csv/.jsonl (audio under `file_name`), or None without one."""
    import pandas as pd

    for name in METADATA_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".csv"):
                rows = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
            else:
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (ValueError, OSError) as exc:
            raise PrepareError(f"{path}: cannot read ({exc})") from exc
        if rows and "file_name" not in rows[0]:
            raise PrepareError(f"{path}: needs a 'file_name' column, has {sorted(rows[0])}")
        for row in rows:
            row["audio"] = {"bytes": None, "path": str(folder / row.pop("file_name"))}
        return rows
    return None


def read_audiofolder(folder: str | Path):
    """A DatasetDict of undecoded audio ({bytes, path}) plus labels/metadata, from an AudioFolder layout."""
    ds = _datasets()
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audiofolder not found: {folder}")
    split_dirs = {SPLIT_FOLDERS[d.name.lower()]: d for d in sorted(folder.iterdir())
                  if d.is_dir() and d.name.lower() in SPLIT_FOLDERS}
    split_dirs = split_dirs or {"train": folder}
    exts = audio_extensions()
    parts: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, list[Path]] = {}
    for split, d in split_dirs.items():
        rows = _metadata_rows(d)
        if rows is not None:
            parts[split] = rows
        else:
            files[split] = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in exts)
    if files:
        depths = {len(p.relative_to(split_dirs[s]).parts) for s, ps in files.items() for p in ps}
        names = sorted({p.parent.name for ps in files.values() for p in ps})
        with_labels = len(names) > 1 and len(depths) == 1
        for split, ps in files.items():
            parts[split] = [{"audio": {"bytes": None, "path": str(p)}, **({"label": p.parent.name} if with_labels
                                                                              else {})} for p in ps]
    out = {}
    for split, rows in parts.items():
        if not rows:
            raise PrepareError(f"{split_dirs[split]}: no audio files ({', '.join(sorted(exts))}) in this split")
        columns = {k: [r.get(k) for r in rows] for k in rows[0]}
        feats = {k: ds.Value("string") for k in columns if k != "audio"}
        feats["audio"] = {"bytes": ds.Value("binary"), "path": ds.Value("string")}
        if files and "label" in columns:
            feats["label"] = ds.ClassLabel(names=names)
        out[split] = ds.Dataset.from_dict(columns, features=ds.Features(feats))
    return ds.DatasetDict(out)


def load_source(source: str, config: str | None = None):
    """A DatasetDict from a hub id, a save_to_disk folder or `audiofolder:DIR`; load failures are PrepareErrors."""
    ds = _datasets()
    if source.startswith("audiofolder:"):
        return read_audiofolder(source.split(":", 1)[1])
    path = Path(source)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = ds.load_from_disk(str(path))
            return loaded if isinstance(loaded, ds.DatasetDict) else ds.DatasetDict({"train": loaded})
        return ds.load_dataset(source, config)
    except Exception as exc:  # datasets raises many types (hub, cache, builder, torchcodec ImportError)
        raise PrepareError(f"{source}: datasets {ds.__version__} cannot load it ({type(exc).__name__}: "
                           f"{str(exc).strip()[:300]})") from exc


def _decode(value: Any, where: str, problems: Problems) -> np.ndarray | None:
    import soundfile as sf

    from superbench.audio import AudioError, check_waveform, resample

    if not isinstance(value, dict):
        problems.add(f"{where}: audio is {type(value).__name__}, expected undecoded {{bytes, path}}")
        return None
    try:
        if value.get("bytes"):
            data, sr = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
        elif value.get("path"):
            if not Path(value["path"]).is_file():
                problems.add(f"{where}: names a missing file {value['path']}")
                return None
            if Path(value["path"]).stat().st_size == 0:
                problems.add(f"{where}: zero-length file {value['path']}")
                return None
            data, sr = sf.read(value["path"], dtype="float32", always_2d=True)
        else:
            problems.add(f"{where}: no audio bytes or path")
            return None
        wav = data.mean(axis=1)
        if sr != 16000:
            wav = resample(wav, sr, 16000)
        return check_waveform(wav, name=where)
    except (AudioError, RuntimeError, sf.LibsndfileError) as exc:
        problems.add(f"{where}: unreadable audio ({exc})")
        return None


def _label_names(d: Any, column: str) -> list[str] | None:
    return getattr(d.features.get(column), "names", None)  # ClassLabel -> class names


def _value(raw: Any, names: list[str] | None) -> str:
    if names is not None and isinstance(raw, int):
        raw = names[raw]
    return "" if raw is None else str(raw).strip()


def prepare_hf_dataset(source: str, task: str, out: str | Path | None = None, columns: dict[str, str] | None = None,
                       splits: dict[str, str] | None = None, config: str | None = None,
                       skip_bad: bool = False, allow_unseen_labels: bool = False) -> Path:
    """Write OUT/<task> from a `datasets` audio dataset; returns the task folder.

    Class labels in dev/test that train lacks are refused before any audio is decoded, unless
    `allow_unseen_labels` (the manifest's one rule, see superbench.manifest)."""
    from tqdm import tqdm

    from superbench.audio import save_wav

    spec = get_task(task)
    unit = getattr(spec.kind, "unit", None)  # CTC tasks: "phones" / "chars"; classification: None
    columns = {"audio": "audio", spec.target: spec.target, **(columns or {})}
    splits = {**DEFAULT_SPLITS, **(splits or {})}  # {"dev": "valid"} changes dev only
    out = Path(out) if out else default_out("hf-" + Path(source.split(":", 1)[-1]).name.replace("/", "_"))
    dsd = load_source(source, config)
    ds_lib = _datasets()
    problems = Problems(f"hf:{source}", skip_bad)
    for role, name in splits.items():
        if name not in dsd:
            raise PrepareError(f"{source}: split {name!r} (for {role}) not found; it has {sorted(dsd)}")
        missing = sorted(c for c in columns.values() if c not in dsd[name].column_names)
        if missing:
            raise PrepareError(f"{source}[{name}]: columns {missing} not found; it has {dsd[name].column_names}")
    if unit is None and not allow_unseen_labels:  # cheap: the label column only, nothing decoded yet
        target = columns[spec.target]
        values = {role: [{spec.target: v} for v in (_value(x, _label_names(dsd[name], target))
                                                     for x in dsd[name][target]) if v]
                  for role, name in splits.items()}
        inventory = {r[spec.target] for rs in values.values() for r in rs}
        unseen = unseen_labels(spec.target, inventory, values, [Fold("default", "train", "dev", "test")])
        if unseen:
            raise PrepareError(f"{source}: labels in dev/test that train never has (a classifier cannot predict "
                               f"them):\n  " + "\n  ".join(unseen)
                               + "\n(map other splits, or pass allow_unseen_labels=True)")
    rows: dict[str, list[dict[str, Any]]] = {}
    audio_dir = out / "audio" / task
    audio_dir.mkdir(parents=True, exist_ok=True)
    hot = 0
    for role, name in splits.items():
        d = dsd[name]
        if isinstance(d.features[columns["audio"]], ds_lib.Audio):  # read undecoded: bytes or path
            d = d.cast_column(columns["audio"], ds_lib.Audio(decode=False))
        names = _label_names(d, columns[spec.target])
        rows[role] = []
        try:
            for i, ex in enumerate(tqdm(d, desc=f"{source} {name}", unit="utt", disable=None)):
                where = f"{source}[{name}][{i}]"
                value = _value(ex[columns[spec.target]], names)
                if not value:
                    problems.add(f"{where}: empty {spec.target!r}")
                    continue
                wav = _decode(ex[columns["audio"]], where, problems)
                if wav is None:
                    continue
                uid = f"{role}-{i:06d}"
                save_wav(audio_dir / f"{uid}.wav", wav, subtype=AUDIO_SUBTYPE)
                hot += bool(np.max(np.abs(wav)) > 1.0)
                speaker = str(ex[columns["speaker"]]) if "speaker" in columns else ""
                rows[role].append({"id": uid, "audio": f"../audio/{task}/{uid}.wav", "sample_rate": 16000,
                                   "num_samples": len(wav), "speaker": speaker, spec.target: value})
        except ImportError as exc:  # e.g. a nested Audio feature that needs torchcodec to decode
            raise PrepareError(f"{source}[{name}]: datasets {ds_lib.__version__} cannot read it "
                               f"({type(exc).__name__}: {exc})") from exc
    problems.raise_if_any()
    if hot:
        log.info("hf:%s: %d file(s) peak above 1.0; kept unclipped as float WAV", source, hot)
    if unit == "phones":
        labels = sorted({p for rs in rows.values() for r in rs for p in r[spec.target].split()})
    elif unit == "chars":
        labels = sorted({c for rs in rows.values() for r in rs for c in r[spec.target]})
    else:
        labels = sorted({r[spec.target] for rs in rows.values() for r in rs})
    audio = {"format": "WAV", "subtype": AUDIO_SUBTYPE, "sample_rate": 16000, "scale": 1.0,
             "peaks_above_full_scale": hot}
    return write_task_manifest(out / task, task=task, corpus=f"hf:{source}", version=config or "default",
                               label_field=spec.target, labels=labels, splits=rows,
                               extra={"columns": columns, "splits": splits, "audio": audio},
                               allow_unseen_labels=allow_unseen_labels)


def _prepare(request: PrepareRequest) -> Path:
    """`data prepare hf`: the options arrive as text (`columns` and `splits` as JSON maps)."""
    options = request.options
    if not options.get("task"):
        raise ValueError("data prepare hf needs --task (ks, sid, er, asr or pr)")
    return prepare_hf_dataset(request.root, options["task"], request.out,
                              columns=json.loads(options.get("columns") or "{}"),
                              splits=json.loads(options["splits"]) if options.get("splits") else None,
                              config=options.get("config"), skip_bad=request.skip_bad).parent


PREPARER = Preparer("hf", prepare=_prepare, writes="the task given by --task", options={
    "task": "the task the dataset is for (ks, sid, er, asr, pr)",
    "columns": 'JSON column map, e.g. {"label": "intent"}',
    "splits": 'JSON split map, e.g. {"dev": "validation"}',
    "config": "dataset configuration name"})

"""Any Hugging Face `datasets` audio dataset -> one task manifest.

`source` is a hub id (used from the local HF cache when offline), a directory written by
`save_to_disk`, or `audiofolder:DIR`. `columns` maps manifest fields to dataset columns
(audio, and label / text / speaker as the task needs); `splits` maps train/dev/test to the
dataset's split names. Audio is read undecoded (bytes or path) and decoded with soundfile,
so no torchcodec/torchaudio is needed; it is written as 16 kHz mono PCM_16 under OUT/audio/<task>/.
`datasets` is an optional extra: imported lazily, with a clear error when missing.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from recipes.prepare import PrepareError, Problems, default_out
from superbench.manifest import write_task_manifest
from superbench.tasks import get_task

log = logging.getLogger(__name__)

DEFAULT_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def _datasets():
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("preparing a Hugging Face dataset needs the optional package 'datasets': "
                          "pip install datasets") from exc
    return datasets


def load_source(source: str, config: str | None = None):
    """A DatasetDict from a hub id, a save_to_disk folder or `audiofolder:DIR`."""
    ds = _datasets()
    if source.startswith("audiofolder:"):
        return ds.load_dataset("audiofolder", data_dir=source.split(":", 1)[1])
    path = Path(source)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = ds.load_from_disk(str(path))
        return loaded if isinstance(loaded, ds.DatasetDict) else ds.DatasetDict({"train": loaded})
    return ds.load_dataset(source, config)


def _decode(value: dict[str, Any], where: str, problems: Problems) -> np.ndarray | None:
    import soundfile as sf

    from superbench.audio import AudioError, check_waveform, resample

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


def prepare_hf_dataset(source: str, task: str, out: str | Path | None = None, columns: dict[str, str] | None = None,
                       splits: dict[str, str] | None = None, config: str | None = None,
                       skip_bad: bool = False) -> Path:
    """Write OUT/<task> from a `datasets` audio dataset; returns the task folder."""
    from tqdm import tqdm

    from superbench.audio import save_wav

    spec = get_task(task)
    columns = {"audio": "audio", spec.target: spec.target, **(columns or {})}
    splits = splits or DEFAULT_SPLITS
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
    rows: dict[str, list[dict[str, Any]]] = {}
    audio_dir = out / "audio" / task
    audio_dir.mkdir(parents=True, exist_ok=True)
    for role, name in splits.items():
        d = dsd[name]
        if isinstance(d.features[columns["audio"]], ds_lib.Audio):  # read undecoded: bytes or path
            d = d.cast_column(columns["audio"], ds_lib.Audio(decode=False))
        feature = d.features.get(columns[spec.target])
        names = getattr(feature, "names", None)  # ClassLabel -> class names
        rows[role] = []
        for i, ex in enumerate(tqdm(d, desc=f"{source} {name}", unit="utt", disable=None)):
            where = f"{source}[{name}][{i}]"
            value = ex[columns[spec.target]]
            if names is not None and isinstance(value, int):
                value = names[value]
            value = str(value).strip()
            if not value:
                problems.add(f"{where}: empty {spec.target!r}")
                continue
            wav = _decode(ex[columns["audio"]], where, problems)
            if wav is None:
                continue
            uid = f"{role}-{i:06d}"
            path = audio_dir / f"{uid}.wav"
            save_wav(path, wav)
            speaker = str(ex[columns["speaker"]]) if "speaker" in columns else ""
            rows[role].append({"id": uid, "audio": f"../audio/{task}/{uid}.wav", "sample_rate": 16000,
                               "num_samples": len(wav), "speaker": speaker, spec.target: value})
    problems.raise_if_any()
    if spec.target == "label":
        labels = sorted({r["label"] for rs in rows.values() for r in rs})
    elif spec.target == "phones":
        labels = sorted({p for rs in rows.values() for r in rs for p in r["phones"].split()})
    else:
        labels = sorted({c for rs in rows.values() for r in rs for c in r["text"]})
    return write_task_manifest(out / task, task=task, corpus=f"hf:{source}", version=config or "default",
                               label_field=spec.target, labels=labels, splits=rows,
                               extra={"columns": columns, "splits": splits})

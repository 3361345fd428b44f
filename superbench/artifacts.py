"""What a record keeps beside it: the chosen head(s) and their predictions.

Same folder, same stem as `<stem>.json`; listed in the record's `artifacts`, paths relative to the
record file:

- `<stem>.head.pt`: the best (dev-selected) head of the chosen learning rate, a torch `state_dict`
  (`torch.load(path, weights_only=True)`; load it into the task kind's head built with the same
  recipe `head` section, upstream layer count and hidden size). With several folds (ER) there is
  one file per fold, `<stem>.<fold>.head.pt`, listed as `artifacts["head.<fold>"]`.
- `<stem>.predictions.jsonl`: that head's predictions, one JSON object per utterance, the dev
  utterances then the test utterances of each fold in manifest order:
  `{"split": "dev"|"test", "manifest_split": <split file it comes from>, "fold": <fold name>,
  "id": <utterance id>, "reference": ..., "prediction": ...}` plus a per-utterance score:
  `"correct": 0|1` where reference and prediction are classes (class names from the manifest's
  `labels`; the index where it has none), or `"errors"` (word/phone edit distance) and
  `"ref_tokens"` (reference length) where they are decoded strings (CTC), so that
  sum(errors) / sum(ref_tokens) is the corpus PER/WER of the record's `test` (per fold). An objective whose
  predictions are not plain JSON says what a line shows (`Objective.shown`; SE/SS: the audio files and the
  utterance's PESQ/STOI/SI-SDRi).
- `<stem>.audio/<id>.<name>.wav`: for kinds whose head gives back audio (SE, SS), the waveforms of the first
  `--keep-audio` test utterances (the estimated sources and the mixture), listed as `artifacts["audio/<id>.<name>"]`.

The record copies the files of the chosen lr's finished trials (`superbench.trial_files`), so an
interrupted and resumed run keeps the same artefacts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

from superbench.audio import TARGET_SAMPLE_RATE, save_wav
from superbench.io import atomic_open, atomic_write_text
from superbench.manifest import Fold
from superbench.metrics import edit_distance
from superbench.options import RunOptions
from superbench.records import record_path
from superbench.run_key import safe_component
from superbench.task_plan import Selection, TaskPlan, split_data
from superbench.tasks import TaskSetup
from superbench.training import TrainResult

log = logging.getLogger(__name__)


def prediction_lines(plan: TaskPlan, setup: TaskSetup, fold: Fold, result: TrainResult) -> str:
    """The finished trial's dev/test predictions, one JSON line per utterance (the record's predictions format)."""
    lines = []
    for role, split in (("dev", fold.dev), ("test", fold.test)):
        ids, targets = split_data(plan, setup, split)
        predicted = result.predictions.get(role, [])
        if len(predicted) != len(ids):
            raise RuntimeError(f"{plan.task.name} {fold.name}: {len(predicted)} {role} predictions for {len(ids)} "
                               f"utterances")
        for utt, target, prediction in zip(ids, targets, predicted):
            row = {"split": role, "manifest_split": split, "fold": fold.name, "id": utt}
            custom = setup.objective.shown(target, prediction)
            if custom is not None:  # predictions that are no JSON (SE/SS masks): the objective says what to show
                row.update(custom)
            else:
                row.update(reference=_shown(target, plan.manifest.labels),
                           prediction=_shown(prediction, plan.manifest.labels), **_utterance_score(target, prediction))
            lines.append(json.dumps(row, ensure_ascii=False, default=str))
    return "".join(line + "\n" for line in lines)


def write_audio(plan: TaskPlan, setup: TaskSetup, fold: Fold, result: TrainResult, count: int, folder: Path) -> int:
    """The waveforms (`Objective.waveforms`) of the first `count` test utterances of a finished trial, as 16 kHz
    WAV files `<id>.<name>.wav` in `folder` (emptied first); returns how many utterances gave audio."""
    if count <= 0:
        return 0
    ids, targets = split_data(plan, setup, fold.test)
    predicted = result.predictions.get("test", [])
    written = 0
    for utt, target, prediction in list(zip(ids, targets, predicted))[:count]:
        audio = setup.objective.waveforms(target, prediction)
        if not audio:
            return 0
        if not written:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for name, wav in audio.items():
            save_wav(folder / f"{safe_component(utt)}.{safe_component(name)}.wav", wav, TARGET_SAMPLE_RATE, "FLOAT")
        written += 1
    return written


def test_unit_scores(plan: TaskPlan, setup: TaskSetup, fold: Fold, result: TrainResult) -> dict[str, dict[str, Any]]:
    """{metric: per-unit scores} of the finished trial's test predictions (`Objective.unit_scores`), as stored.

    A metric the units do not reproduce (|value - score| > 1e-3) is a bug in the objective: it is logged and
    left out, so a record never carries an interval around another number than its own."""
    ids, targets = split_data(plan, setup, fold.test)
    predicted = result.predictions.get("test", [])
    try:
        units = setup.objective.unit_scores(ids, list(targets), list(predicted))
    except ValueError as exc:
        log.warning("%s %s: no per-unit test scores, so no confidence interval (%s)", plan.task.name, fold.name, exc)
        return {}
    scores = {plan.task.metric: result.test, **result.secondary.get("test", {})}
    out = {}
    for metric, scored in units.items():
        value = scored.value()
        if metric not in scores or not abs(value - scores[metric]) <= 1e-3:
            log.warning("%s %s: per-unit scores of %s give %s, not the metric's %s; left out (no interval)",
                        plan.task.name, fold.name, metric, value, scores.get(metric))
            continue
        out[metric] = dataclasses.replace(scored, fold=fold.name).to_dict()
    return out


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any, labels: Sequence[str]) -> Any:
    """A class index as its name from the manifest's `labels` (the index where there is none); else as is."""
    if _is_index(value) and labels and 0 <= value < len(labels):
        return labels[value]
    return value


def _utterance_score(target: Any, prediction: Any) -> dict[str, int]:
    """`correct` for classes, `errors` / `ref_tokens` (edit distance over whitespace tokens) for strings."""
    if _is_index(target) and (_is_index(prediction) or isinstance(prediction, str)):
        return {"correct": int(target == prediction)}  # a string: a class outside the inventory (IC), wrong
    if isinstance(target, str) and isinstance(prediction, str):
        ref = target.split()
        return {"errors": edit_distance(ref, prediction.split()), "ref_tokens": len(ref)}
    return {}


def _copy_audio(source: Path, parent: Path, folder: str) -> dict[str, str]:
    """The trial's kept waveforms copied to `parent/folder`; {"audio/<file stem>": relative path}."""
    wavs = sorted(source.glob("*.wav")) if source.is_dir() else []
    if not wavs:
        return {}
    shutil.rmtree(parent / folder, ignore_errors=True)
    (parent / folder).mkdir(parents=True)
    out = {}
    for wav in wavs:
        shutil.copyfile(wav, parent / folder / wav.name)
        out[f"audio/{wav.stem}"] = f"{folder}/{wav.name}"
    return out


def write_artifacts(plan: TaskPlan, seed: int, chosen: Selection, opts: RunOptions) -> dict[str, str]:
    """Copy the chosen lr's heads and predictions from its trial files to beside the record (atomically);
    returns the record's `artifacts` (file names, relative to the record). A missing trial file is logged
    and left out, never a failed run."""
    target = record_path(plan.results, plan.keys[seed])
    stem = target.name.removesuffix(".json")
    several = len(chosen.folds) > 1
    artifacts: dict[str, str] = {}
    lines: list[str] = []
    for fold in chosen.folds:
        files = plan.trial_files(seed, opts, chosen.lr, fold)
        name, out = ((f"head.{fold}", f"{stem}.{safe_component(fold)}.head.pt") if several
                     else ("head", f"{stem}.head.pt"))
        payload, predictions = files.read(files.head), files.read(files.predictions)
        if payload is None or predictions is None:  # never a damaged file beside the record
            log.warning("%s: no intact head or predictions of lr %g %s to keep beside the record",
                        plan.keys[seed].describe(), chosen.lr, fold)
            continue
        lines.append(predictions.decode("utf-8"))
        with atomic_open(target.parent / out, "wb") as fh:
            fh.write(payload)
        artifacts[name] = out
        artifacts.update(_copy_audio(files.audio, target.parent, out.removesuffix(".head.pt") + ".audio"))
    if lines:
        out = f"{stem}.predictions.jsonl"
        atomic_write_text(target.parent / out, "".join(lines))
        artifacts["predictions"] = out
    return artifacts

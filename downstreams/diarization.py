"""Speaker diarization (SUPERB SD): a frame-level 2-speaker activity head, PIT-BCE, RTTM and DER.

What s3prl does (downstream/diarization/{config.yaml, expert.py, model.py, dataset.py, utils.py, make_rttm.py,
score.sh} at commit ec8064b), and what is reproduced here:

* Head (`model.py`, `modelrc`): weighted sum of the upstream's layers -> a unidirectional LSTM (`rnn_layers` 1,
  `hidden_size` 512) -> Linear(512, 2) giving one logit per speaker and frame (`rnn_layers: 0`: the Linear
  alone). Recordings are cut into chunks of `chunk_size` (2000) frames and each chunk runs through the LSTM on
  its own (s3prl's dataset yields such chunks for train and dev, and its test loader runs a recording as a
  batch of chunks); the LSTM is unidirectional, so the padding after an utterance never reaches its frames.
* Labels (`dataset.py`): one label frame per upstream frame (s3prl's default `frame_shift` is the upstream's
  downsample rate, in samples); a segment [st, et] (seconds) marks label frames rint(st * 16000 / shift) up to
  rint(et * 16000 / shift) (exclusive) for its speaker; speakers get columns in sorted-id order.
  The kind therefore needs the upstream's `downsample_rate` (and sample rate): `setup(..., downsample_rate=,
  sample_rate=)`. Differences: s3prl labels int(duration * 16000 / shift) frames and pads the upstream's
  frames (one or two fewer, the receptive field) with copies of the last one; here the head's output frames
  are labelled and scored, so the last < receptive-field samples (25 ms for FBANK and HuBERT) are never
  predicted. s3prl's chunk labelling also leaves a segment unmarked in a chunk it spans end to end (it marks
  only chunks holding its start or end frame); here every frame of a segment is marked.
* Loss (`utils.py` `pit_loss`): per chunk, binary cross-entropy on the logits, averaged over the 2 speakers and
  summed over the chunk's valid frames, under the speaker order (permutation) that gives the smaller loss; the
  batch's sum over chunks divided by its number of valid frames.
* Predictions (`make_rttm.py`): sigmoid posteriors > threshold, optionally a median filter over `median` frames
  per speaker (scipy's medfilt, zero-padded), runs of active frames -> RTTM turns, onset and duration formatted
  with two decimals ("%7.2f") as make_rttm writes them. `score.sh` does this for thresholds 0.3, 0.4, 0.5,
  0.6, 0.7 and medians 1 and 11, so a prediction here holds the turns of each of those 10 settings
  (`{"th0.5_med1": [[speaker, start, end], ...], ...}`).
* DER: `score.sh` scores every setting with dscore (github.com/ftshijt/dscore, a fork of nryant/dscore), whose
  DER is NIST md-eval's with **no collar** (0 s) and **overlapped speech scored** (dscore's defaults; no
  `--collar` / `--ignore_overlaps` given), the scoring region of a recording spanning its reference and system
  turns (so nothing outside them counts), and the speaker mapping per recording that maximises the time
  reference and system speakers overlap. The DER of a setting is corpus-level: total missed + false-alarm +
  confusion speaker time over total reference speaker time (time with two reference speakers counts twice),
  not a mean of per-recording DERs. The s3prl README says to report "the lowest number", the best of the 10
  settings on test: `score` returns that minimum (in percent), for dev and test alike (dev therefore selects
  checkpoints by the same number). s3prl itself keeps the checkpoint of the best dev frame *accuracy*, and
  its training log's DER is a frame-level mean over chunks (`calc_diarization_error`): neither is the DER
  SUPERB reports.
* No median filter or collar is applied to the reference; RTTM files are read as dscore reads them
  (`parse_rttm`).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from superbench.downstream import Head, Objective
from superbench.featurizer import WeightedSum
from superbench.manifest import ManifestError, TaskManifest, format_problems
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores

log = logging.getLogger(__name__)

#: A speaker turn: [speaker, start_s, end_s] (lists, as they are in manifest rows and predictions).
Segment = list
#: How far a turn may end past its audio (seconds): RTTM times carry two or three decimals.
DURATION_TOLERANCE = 0.01


# --------------------------------------------------------------------------- RTTM

def parse_rttm_line(line: str, where: str) -> tuple[str, Segment] | None:
    """(file id, [speaker, start, end]) of one RTTM line, None for a line that holds no turn (blank, `;`
    comment, SPKR-INFO); ValueError naming `where` (file:line) for a line that does not parse."""
    fields = line.split()
    if not fields or fields[0].startswith(";") or fields[0] == "SPKR-INFO":
        return None
    if len(fields) < 9:
        raise ValueError(f"{where}: an RTTM line has at least 9 fields (SPEAKER file channel onset duration "
                         f"<NA> <NA> speaker <NA>), got {len(fields)}: {line.strip()!r}")
    if fields[0] != "SPEAKER":
        raise ValueError(f"{where}: only SPEAKER turns are read, got type {fields[0]!r}")
    try:
        onset, duration = float(fields[3]), float(fields[4])
    except ValueError:
        raise ValueError(f"{where}: onset and duration must be numbers, got {fields[3]!r} and {fields[4]!r}") from None
    if not (math.isfinite(onset) and math.isfinite(duration)) or onset < 0 or duration <= 0:
        raise ValueError(f"{where}: needs onset >= 0 and duration > 0 seconds, got {fields[3]} and {fields[4]}")
    return fields[1], [fields[7], onset, onset + duration]


def parse_rttm(text: str, source: str = "<rttm>") -> dict[str, list[Segment]]:
    """{file id: [[speaker, start, end], ...]} from RTTM text, line order kept.

    As dscore's `load_rttm`: SPKR-INFO lines are skipped, every other line needs at least 9 fields
    (`SPEAKER file chan onset dur <NA> <NA> speaker <NA> [<NA>]`), onset a number >= 0, duration a number > 0.
    Blank lines and `;` comments are skipped too. A bad line raises ValueError naming `source:line`.
    """
    out: dict[str, list[Segment]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parsed = parse_rttm_line(line, f"{source}:{n}")
        if parsed is not None:
            out.setdefault(parsed[0], []).append(parsed[1])
    return out


def format_rttm(file_id: str, segments: Iterable[Segment], digits: int = 3) -> str:
    """RTTM lines (dscore's `write_rttm` layout) for one recording's turns [speaker, start, end]."""
    lines = []
    for speaker, start, end in segments:
        lines.append(f"SPEAKER {file_id} 1 {start:.{digits}f} {end - start:.{digits}f} <NA> <NA> {speaker} "
                     f"<NA> <NA>\n")
    return "".join(lines)


# --------------------------------------------------------------------------- DER

@dataclass(frozen=True)
class DERCounts:
    """Speaker time (seconds) of one recording or a corpus: reference, missed, false alarm, confusion."""

    scored: float = 0.0
    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0

    def __add__(self, other: "DERCounts") -> "DERCounts":
        return DERCounts(self.scored + other.scored, self.missed + other.missed,
                         self.false_alarm + other.false_alarm, self.confusion + other.confusion)

    @property
    def der(self) -> float:
        """(missed + false alarm + confusion) / reference speaker time, in percent (nan without reference speech,
        unless there is no error either: 0)."""
        errors = self.missed + self.false_alarm + self.confusion
        if self.scored <= 0:
            return 0.0 if errors <= 0 else math.nan
        return 100.0 * errors / self.scored


def _merged(segments: Iterable[Segment]) -> dict[str, list[tuple[float, float]]]:
    """Turns per speaker with overlapping or touching ones merged (dscore's merge_turns)."""
    by: dict[str, list[tuple[float, float]]] = {}
    for speaker, start, end in segments:
        if end > start:
            by.setdefault(str(speaker), []).append((float(start), float(end)))
    out = {}
    for speaker, turns in by.items():
        turns.sort()
        merged = [turns[0]]
        for start, end in turns[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        out[speaker] = merged
    return out


def der_counts(reference: Iterable[Segment], hypothesis: Iterable[Segment]) -> DERCounts:
    """md-eval's DER terms for one recording, no collar, overlap scored: the timeline is cut at every turn
    boundary; in a piece of length d with R reference and S system speakers, of which C are mapped pairs
    speaking together, missed += d * max(R - S, 0), false alarm += d * max(S - R, 0), confusion +=
    d * (min(R, S) - C), scored += d * R. The mapping (one-to-one) maximises the overlap time of mapped pairs."""
    from scipy.optimize import linear_sum_assignment

    ref, hyp = _merged(reference), _merged(hypothesis)
    bounds = sorted({t for turns in (*ref.values(), *hyp.values()) for turn in turns for t in turn})
    if len(bounds) < 2:
        return DERCounts()
    edges = np.asarray(bounds)
    mids, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)

    def activity(turns_by: dict[str, list[tuple[float, float]]]) -> np.ndarray:
        """(speakers, pieces) bool: who speaks in each piece of the timeline."""
        rows = [((mids[:, None] >= t[None, :, 0]) & (mids[:, None] < t[None, :, 1])).any(axis=1)
                for t in map(np.asarray, turns_by.values())]
        return np.stack(rows) if rows else np.zeros((0, len(mids)), dtype=bool)

    r, h = activity(ref), activity(hyp)
    n_ref, n_sys = r.sum(axis=0), h.sum(axis=0)
    correct = np.zeros_like(widths)
    if len(r) and len(h):
        overlap = (r[:, None, :] & h[None, :, :]).astype(float) @ widths  # (R, S) seconds spoken together
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        correct = sum((r[i] & h[j]).astype(float) for i, j in zip(rows, cols))
    return DERCounts(scored=float(widths @ n_ref),
                     missed=float(widths @ np.maximum(n_ref - n_sys, 0)),
                     false_alarm=float(widths @ np.maximum(n_sys - n_ref, 0)),
                     confusion=float(widths @ (np.minimum(n_ref, n_sys) - correct)))


def corpus_der(references: Sequence[Iterable[Segment]], hypotheses: Sequence[Iterable[Segment]]) -> DERCounts:
    """Summed DER terms over recordings (the corpus DER is `.der` of the sum, as dscore's OVERALL row)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    total = DERCounts()
    for ref, hyp in zip(references, hypotheses):
        total = total + der_counts(ref, hyp)
    return total


# --------------------------------------------------------------------------- frames <-> turns

def frame_labels(segments: Iterable[Segment], num_frames: int, frame_shift: int, sample_rate: int,
                 num_speakers: int) -> np.ndarray:
    """(num_frames, num_speakers) 0/1 labels: s3prl's rule, speakers in sorted-id order, frames
    rint(start * rate / shift) to rint(end * rate / shift) (exclusive), clipped to the frames there are."""
    segments = list(segments)
    speakers = sorted({str(s) for s, _, _ in segments})
    if len(speakers) > num_speakers:
        raise ValueError(f"{len(speakers)} speakers {speakers} for a {num_speakers}-speaker head")
    labels = np.zeros((num_frames, num_speakers), dtype=np.float32)
    for speaker, start, end in segments:
        first = int(np.rint(float(start) * sample_rate / frame_shift))
        last = int(np.rint(float(end) * sample_rate / frame_shift))
        labels[max(first, 0):max(min(last, num_frames), 0), speakers.index(str(speaker))] = 1.0
    return labels


def activity_turns(active: np.ndarray, seconds_per_frame: float) -> list[Segment]:
    """Turns [speaker, start, end] from (frames, speakers) 0/1 activity, speaker k named "spk<k>", as
    make_rttm.py writes them: onset and duration each rounded to two decimals (its "%7.2f")."""
    out = []
    for k, frames in enumerate(np.asarray(active).T):
        changes = np.flatnonzero(np.diff(np.pad(frames.astype(np.int8), (1, 1))))
        for s, e in zip(changes[::2], changes[1::2]):
            onset, duration = float(f"{s * seconds_per_frame:.2f}"), float(f"{(e - s) * seconds_per_frame:.2f}")
            out.append([f"spk{k}", onset, round(onset + duration, 2)])
    return out


def setting_name(threshold: float, median: int) -> str:
    return f"th{threshold:g}_med{median}"


# --------------------------------------------------------------------------- loss

def pit_bce(logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor,
            chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """s3prl's permutation-invariant BCE: per chunk of `chunk_size` frames (None: the whole utterance), the
    frame BCE averaged over speakers and summed over valid frames, minimised over speaker orders; the sum over
    chunks divided by the number of valid frames. Returns (loss, chosen permutation index per (utterance,
    chunk)); permutations are itertools.permutations(range(S)) in order."""
    b, t, s = logits.shape
    if labels.shape != logits.shape:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    mask = (torch.arange(t, device=logits.device)[None, :] < lengths.to(logits.device)[:, None]).to(logits.dtype)
    c = t if not chunk_size else chunk_size
    n_chunks = max(1, -(-t // c))
    per_perm = []
    for perm in itertools.permutations(range(s)):
        frame = F.binary_cross_entropy_with_logits(logits, labels[:, :, list(perm)], reduction="none").mean(dim=2)
        frame = F.pad(frame * mask, (0, n_chunks * c - t))
        per_perm.append(frame.reshape(b, n_chunks, c).sum(dim=2))
    stacked = torch.stack(per_perm)  # (P, B, chunks)
    best, index = stacked.min(dim=0)
    return best.sum() / mask.sum().clamp_min(1.0), index


# --------------------------------------------------------------------------- head

class DiarizationHead(Head):
    """Weighted sum -> unidirectional LSTM run chunk by chunk (none when `rnn_layers` is 0) -> Linear to one
    logit per speaker and frame (s3prl diarization `Model`)."""

    def __init__(self, num_layers: int, input_dim: int, num_speakers: int = 2, rnn_layers: int = 1,
                 hidden_size: int = 512, chunk_size: int = 2000, layer: int | str | None = None,
                 feature_layer_norm: bool = False) -> None:
        super().__init__()
        if rnn_layers < 0 or chunk_size < 1:
            raise ValueError(f"rnn_layers must be >= 0 and chunk_size >= 1, got {rnn_layers} and {chunk_size}")
        self.chunk_size = chunk_size
        self.featurizer = WeightedSum(num_layers, layer=layer, layer_norm=feature_layer_norm)
        self.rnn = (torch.nn.LSTM(input_dim, hidden_size, num_layers=rnn_layers, batch_first=True)
                    if rnn_layers > 0 else None)
        self.linear = torch.nn.Linear(hidden_size if rnn_layers > 0 else input_dim, num_speakers)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, speakers) from (L, B, T, D) frames. Frames past `lengths` are padding: a unidirectional
        LSTM never carries them back into an utterance's frames."""
        if features.dim() != 4:
            raise ValueError(f"expected (L, B, T, D) frames, got shape {tuple(features.shape)}")
        x = self.featurizer(features).float()
        if self.rnn is not None:
            b, t, d = x.shape
            c = self.chunk_size
            if t > c:  # each chunk on its own, as s3prl's chunked dataset
                n = -(-t // c)
                x, _ = self.rnn(F.pad(x, (0, 0, 0, n * c - t)).reshape(b * n, c, d))
                x = x.reshape(b, n * c, -1)[:, :t]
            else:
                x, _ = self.rnn(x)
        return self.linear(x)


# --------------------------------------------------------------------------- objective

class DiarizationObjective(Objective):
    """PIT-BCE loss, turns for every (threshold, median) setting, and SUPERB's DER (lowest setting, percent).

    A target is {"segments": [[speaker, start_s, end_s], ...], "duration": seconds}; a prediction is
    {setting name: [[speaker, start_s, end_s], ...]} for every setting (see `setting_name`).
    """

    metric = "der"
    higher_is_better = False

    def __init__(self, frame_shift: int, sample_rate: int = 16000, num_speakers: int = 2,
                 chunk_size: int | None = 2000, thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
                 medians: Sequence[int] = (1, 11)) -> None:
        if frame_shift < 1 or sample_rate < 1:
            raise ValueError(f"frame_shift and sample_rate must be positive, got {frame_shift} and {sample_rate}")
        self.frame_shift, self.sample_rate, self.num_speakers = int(frame_shift), int(sample_rate), num_speakers
        self.chunk_size = chunk_size
        self.settings = [(float(th), int(med)) for med in medians for th in thresholds]

    @property
    def seconds_per_frame(self) -> float:
        return self.frame_shift / self.sample_rate

    def labels(self, targets: Sequence[dict[str, Any]], num_frames: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([frame_labels(t["segments"], num_frames, self.frame_shift,
                                                       self.sample_rate, self.num_speakers) for t in targets]))

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        labels = self.labels(targets, output.shape[1]).to(output.device)
        return pit_bce(output, labels, lengths, self.chunk_size)[0]

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        from scipy.signal import medfilt

        posteriors = torch.sigmoid(output.float()).cpu().numpy()
        out = []
        for p, n in zip(posteriors, lengths.tolist()):
            turns = {}
            for threshold, median in self.settings:
                active = (p[:n] > threshold).astype(np.float64)
                if median > 1:
                    with warnings.catch_warnings():  # an utterance shorter than the kernel: zero-padded, as in s3prl
                        warnings.simplefilter("ignore")
                        active = medfilt(active, (median, 1))
                turns[setting_name(threshold, median)] = activity_turns(active > 0.5, self.seconds_per_frame)
            out.append(turns)
        return out

    def setting_ders(self, targets: list, predictions: list) -> dict[str, float]:
        """Corpus DER (percent) of every setting."""
        references = [t["segments"] for t in targets]
        names = [setting_name(th, med) for th, med in self.settings]
        return {name: corpus_der(references, [p[name] for p in predictions]).der for name in names}

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Per recording its reference speaker time and, per setting, its missed + false-alarm + confusion
        time: every draw of recordings sums them and takes the lowest DER over the settings, as `score`."""
        names = [setting_name(th, med) for th, med in self.settings]
        counts = [[der_counts(t["segments"], p[name]) for name in names] for t, p in zip(targets, predictions)]
        columns = {"total": [c[0].scored for c in counts]}
        for k, name in enumerate(names):
            columns[f"errors:{name}"] = [c[k].missed + c[k].false_alarm + c[k].confusion for c in counts]
        return {self.metric: UnitScores.build("min_ratio", "recording", ids, columns)}

    def score(self, targets: list, predictions: list) -> float:
        """SUPERB's SD number: the lowest corpus DER over the settings (score.sh + "report the lowest")."""
        ders = self.setting_ders(targets, predictions)
        best = min(ders, key=lambda k: (math.isnan(ders[k]), ders[k]))
        log.debug("DER per setting %s; lowest %s", {k: round(v, 2) for k, v in ders.items()}, best)
        return ders[best]


# --------------------------------------------------------------------------- task kind

@dataclass(frozen=True)
class DiarizationHeadConfig:
    """A recipe's `head` section for diarization (s3prl's `modelrc`, `datarc.chunk_size` and score.sh's grid)."""

    rnn_layers: int = 1
    hidden_size: int = 512
    chunk_size: int = 2000  # frames per LSTM chunk and per PIT decision (s3prl datarc.chunk_size)
    #: Layer-normalise each upstream layer before the weighted sum (s3prl's upstream_feature_normalize).
    feature_layer_norm: bool = False
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)  # score.sh
    medians: tuple[int, ...] = (1, 11)  # score.sh (odd: scipy's medfilt)

    def __post_init__(self) -> None:
        if self.rnn_layers < 0 or self.hidden_size < 1 or self.chunk_size < 1:
            raise ValueError(f"rnn_layers >= 0, hidden_size >= 1 and chunk_size >= 1 needed, got {self.rnn_layers}, "
                             f"{self.hidden_size}, {self.chunk_size}")
        if not self.thresholds or any(not 0 < t < 1 for t in self.thresholds):
            raise ValueError(f"thresholds must be in (0, 1), got {list(self.thresholds)}")
        if not self.medians or any(m < 1 or m % 2 == 0 for m in self.medians):
            raise ValueError(f"medians must be odd positive frame counts, got {list(self.medians)}")


def segment_problems(value: Any, duration: float, num_speakers: int) -> list[str]:
    """What is wrong with one row's `segments` (empty: nothing)."""
    if not isinstance(value, list) or not value:
        return ["no speaker turns (every mixture needs its RTTM turns)"]
    problems, speakers = [], set()
    for k, seg in enumerate(value):
        if (not isinstance(seg, (list, tuple)) or len(seg) != 3 or not isinstance(seg[0], str)
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in seg[1:])):
            problems.append(f"turn {k} is not [speaker, start_s, end_s]: {seg!r}")
            continue
        speaker, start, end = seg
        speakers.add(speaker)
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            problems.append(f"turn {k} {seg!r} needs 0 <= start < end")
        elif end > duration + DURATION_TOLERANCE:
            problems.append(f"turn {k} {seg!r} ends after the audio ({duration:.3f} s)")
    if len(speakers) > num_speakers:
        problems.append(f"{len(speakers)} speakers {sorted(speakers)}; the head has {num_speakers} outputs")
    return problems


class SpeakerDiarization(TaskKind):
    """Task kind: who speaks when, `num_speakers` activity outputs per frame (SUPERB SD: 2), PIT-BCE, DER.

    The manifest's target field holds each mixture's turns, [[speaker, start_s, end_s], ...] (the RTTM of the
    recording; `parse_rttm` / `format_rttm` convert); `check` refuses malformed turns, turns outside the audio
    and mixtures with more speakers than outputs, naming the split file, line and id.
    """

    level = "frame"
    head_config = DiarizationHeadConfig
    #: The runner passes `downsample_rate` and `sample_rate` of the upstream to `setup` (labels are per frame).
    wants_frame_rate = True

    def __init__(self, num_speakers: int = 2) -> None:
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
        self.num_speakers = num_speakers

    def check(self, task: Task, manifest: TaskManifest) -> None:
        bad = []
        for split, rows in manifest.splits.items():
            for line, u in enumerate(rows, 1):
                problems = segment_problems(u.targets.get(task.target), u.duration, self.num_speakers)
                if problems:
                    bad.append(f"{manifest.root / f'{split}.jsonl'}:{line} id={u.id!r}: {'; '.join(problems)}")
        if bad:
            raise ManifestError(f"{manifest.root}: invalid manifest\n"
                                + format_problems(f"unusable {task.target!r} turns", bad))

    def setup(self, task: Task, manifest: TaskManifest, head: DiarizationHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None, downsample_rate: int | None = None,
              sample_rate: int = 16000) -> TaskSetup:
        if downsample_rate is None:
            raise ValueError(f"task {task.name}: diarization labels follow the upstream's frames, so setup() needs "
                             f"downsample_rate= (the upstream's samples per frame) and sample_rate=; the runner "
                             f"passes them to kinds with wants_frame_rate")
        field = task.target
        objective = DiarizationObjective(downsample_rate, sample_rate, self.num_speakers, head.chunk_size,
                                         head.thresholds, head.medians)

        def target_of(u: Any) -> dict[str, Any]:
            return {"segments": [[str(s), float(a), float(b)] for s, a, b in u.targets[field]],
                    "duration": u.duration}

        return TaskSetup(objective, target_of,
                         lambda: DiarizationHead(num_layers, hidden_size, self.num_speakers, head.rnn_layers,
                                                 head.hidden_size, head.chunk_size, layer, head.feature_layer_norm))

"""Speaker verification (SV, SUPERB's ASV): an x-vector head, AM-softmax training, cosine-scored trials.

The head is s3prl's `downstream/sv_voxceleb1` model with its `configs/amsoftmax.yaml`: weighted sum of
layers -> connector Linear(D, 512) -> XVector (5 TDNN layers, contexts 5/3/3/1/1, dilations 1/2/3/1/1, ReLU,
no batch norm, widths 512/512/512/512/1500) -> statistics pooling (mean and standard deviation over the
valid frames) -> UtteranceExtractor (linear1 3000 -> 512, ReLU, linear2 512 -> 512, ReLU) -> AM-softmax over
the training speakers (s = 30, m = 0.4). The embedding of an utterance is s3prl's `inference` path
(linear1 + ReLU, L2-normalised); a trial's score is the cosine of its two embeddings, and the metric is the
equal error rate (percent, lower is better) over a trial list.

Level "frame": the TDNN layers and the standard deviation are not linear in time, so the head needs the
frames; per-layer utterance means (the cached level of the classification tasks) cannot give the same
embedding.

Trials are sidecar files of the manifest folder (their bytes are in the manifest fingerprint, i.e. the run
identity), one trial per line in VoxCeleb's format with manifest utterance ids:
`<1|0> <utterance id> <utterance id>` (1 = same speaker). `trials_dev.txt` scores the dev split (it selects
the checkpoint and the learning rate), `trials_test.txt` the test split. Dev and test speakers are not
training speakers, so an SV manifest sets `allow_unseen_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from superbench import metrics
from superbench.downstream import Head, Objective
from superbench.featurizer import WeightedSum
from superbench.manifest import ManifestError, TaskManifest
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores

#: The trial lists an SV manifest folder holds: dev (selects checkpoint and lr) and test.
TRIAL_FILES = {"dev": "trials_dev.txt", "test": "trials_test.txt"}
#: (context size, dilation) of s3prl's five XVector TDNN layers.
TDNN_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))
#: Frames the TDNN stack consumes: an utterance of T frames gives T - 14 output frames (as in s3prl).
TDNN_SHRINK = sum((context - 1) * dilation for context, dilation in TDNN_LAYERS)
#: Decimals kept of an embedding's components in predictions (unit-norm vectors; cosines move by < 1e-5).
EMBEDDING_DECIMALS = 5


class Trial(NamedTuple):
    label: int  # 1: same speaker (target), 0: different speakers
    a: str
    b: str


class SpeakerTarget(NamedTuple):
    """What an utterance's target is: its id (to find it in the trials), its speaker and the speaker's
    training class (-1 for the unseen speakers of dev and test). A tuple, so predictions.jsonl shows a list."""

    id: str
    speaker: str
    index: int


class VerificationOutput(NamedTuple):
    embedding: torch.Tensor  # (B, input_dim): linear1 + ReLU, s3prl's inference embedding (not normalised)
    cosine: torch.Tensor  # (B, speakers): cosine of the training embedding with each speaker's AM-softmax weight


def read_trials(path: Path, known: set[str] | None = None) -> list[Trial]:
    """The trials of one list; ValueError naming file:line for a malformed line or an id not in `known`."""
    if not path.is_file():
        raise ValueError(f"{path}: trial list missing (an SV manifest folder holds {', '.join(TRIAL_FILES.values())})")
    trials: list[Trial] = []
    problems: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            problems.append(f"{path}:{n}: expected '<1|0> <utterance id> <utterance id>', got {line!r}")
            continue
        unknown = [u for u in parts[1:] if known is not None and u not in known]
        if unknown:
            problems.append(f"{path}:{n}: utterance id {unknown[0]!r} is not in the manifest")
            continue
        trials.append(Trial(int(parts[0]), parts[1], parts[2]))
    if problems:
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(f"{len(problems)} bad trial line(s):\n  " + "\n  ".join(problems[:5]) + more)
    labels = {t.label for t in trials}
    if labels != {0, 1}:
        have = "no trials" if not labels else f"only {'target (1)' if 1 in labels else 'non-target (0)'} trials"
        raise ValueError(f"{path}: {have}; an equal error rate needs both target (1) and non-target (0) trials")
    return trials


def score_trials(trials: Sequence[Trial], embeddings: dict[str, Sequence[float]]) -> tuple[list[int], list[float]]:
    """(labels, cosine scores) of the trials, from unit-norm embeddings by utterance id."""
    ids = sorted({u for t in trials for u in (t.a, t.b)})
    row = {u: i for i, u in enumerate(ids)}
    matrix = np.asarray([embeddings[u] for u in ids], dtype=np.float64)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    a = matrix[[row[t.a] for t in trials]]
    b = matrix[[row[t.b] for t in trials]]
    return [t.label for t in trials], np.einsum("nd,nd->n", a, b).tolist()


def am_softmax_loss(cosine: torch.Tensor, labels: torch.Tensor, scale: float = 30.0,
                    margin: float = 0.4) -> torch.Tensor:
    """s3prl's AMSoftmaxLoss from the cosines: -mean log(e^{s(cos_y - m)} / (e^{s(cos_y - m)} + sum_{j != y}
    e^{s cos_j})), i.e. cross-entropy of s * (cos - m * onehot(y)) (the same value, computed stably)."""
    logits = scale * (cosine - margin * F.one_hot(labels, cosine.shape[-1]).to(cosine.dtype))
    return F.cross_entropy(logits, labels)


class TDNN(torch.nn.Module):
    """s3prl's TDNN: Linear over `context` frames spaced by `dilation` (no padding), then ReLU."""

    def __init__(self, input_dim: int, output_dim: int, context: int, dilation: int) -> None:
        super().__init__()
        self.context, self.dilation = context, dilation
        self.kernel = torch.nn.Linear(input_dim * context, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T - (context - 1) * dilation, output_dim)."""
        span = (self.context - 1) * self.dilation
        steps = x.shape[1] - span
        # frames t, t + dilation, ... concatenated in that order, as s3prl's F.unfold lays them out
        window = torch.cat([x[:, k * self.dilation: k * self.dilation + steps] for k in range(self.context)], dim=-1)
        return torch.relu(self.kernel(window))


def statistics_pooling(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation (unbiased, as torch.std) over each utterance's first `lengths` frames:
    (B, T, D) -> (B, 2D). A single frame has a deviation of 0. As torch.std's backward does, a deviation of 0
    (a ReLU channel silent over the whole utterance) passes a zero gradient, not sqrt's infinite one."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[..., None]
    n = lengths.clamp_min(1).to(x.dtype)[:, None]
    mean = (x * mask).sum(dim=1) / n
    var = (((x - mean[:, None]) * mask) ** 2).sum(dim=1) / (n - 1).clamp_min(1)
    std = torch.where(var > 0, var.clamp_min(1e-20).sqrt(), torch.zeros_like(var))
    return torch.cat([mean, std], dim=-1)


class XVectorHead(Head):
    """Weighted sum -> connector -> XVector TDNNs -> statistics pooling -> UtteranceExtractor -> AM-softmax
    cosines (see the module docstring). `max_train_frames` > 0 crops training utterances to a random window
    of that many frames (s3prl crops waveforms to max_timestep samples); evaluation sees whole utterances."""

    def __init__(self, num_layers: int, input_dim: int, num_speakers: int, hidden_dim: int = 512,
                 agg_dim: int = 1500, layer: int | str | None = None, max_train_frames: int = 0) -> None:
        super().__init__()
        if num_speakers < 2:
            raise ValueError(f"speaker verification needs at least 2 training speakers, got {num_speakers}")
        self.featurizer = WeightedSum(num_layers, layer=layer)
        self.connector = torch.nn.Linear(input_dim, hidden_dim)
        widths = [hidden_dim] * (len(TDNN_LAYERS) - 1) + [agg_dim]
        dims = [hidden_dim] + widths
        self.tdnn = torch.nn.Sequential(*[TDNN(dims[i], dims[i + 1], c, d) for i, (c, d) in enumerate(TDNN_LAYERS)])
        self.linear1 = torch.nn.Linear(2 * agg_dim, hidden_dim)
        self.linear2 = torch.nn.Linear(hidden_dim, hidden_dim)
        self.speakers = torch.nn.Parameter(torch.empty(hidden_dim, num_speakers))  # s3prl's AMSoftmaxLoss.W
        torch.nn.init.xavier_normal_(self.speakers, gain=1)
        self.max_train_frames = max_train_frames

    def crop(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A random window of `max_train_frames` of each longer utterance (torch's global RNG, which training
        seeds and checkpoints); shorter ones are kept whole."""
        limit = self.max_train_frames
        if not self.training or limit <= 0 or int(lengths.max()) <= limit:
            return features, lengths
        starts = [int(torch.randint(0, int(n) - limit + 1, (1,))) if n > limit else 0 for n in lengths.tolist()]
        index = (torch.tensor(starts, device=features.device)[:, None]
                 + torch.arange(limit, device=features.device)[None, :])  # (B, limit)
        index = index.clamp_max(features.shape[2] - 1)
        gathered = torch.gather(features, 2, index[None, :, :, None].expand(features.shape[0], -1, -1,
                                                                              features.shape[3]))
        return gathered, lengths.clamp_max(limit)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> VerificationOutput:
        """Embeddings and AM-softmax cosines from (L, B, T, D) frames and their (B,) lengths."""
        if features.dim() != 4:
            raise ValueError(f"expected (L, B, T, D) frames, got shape {tuple(features.shape)}")
        features, lengths = self.crop(features, lengths)
        x = self.connector(self.featurizer(features))
        if x.shape[1] <= TDNN_SHRINK:  # shorter than the TDNN context: zero frames after the end (rare)
            x = F.pad(x, (0, 0, 0, TDNN_SHRINK + 1 - x.shape[1]))
        x = self.tdnn(x)
        pooled = statistics_pooling(x, (lengths - TDNN_SHRINK).clamp_min(1))
        embedding = torch.relu(self.linear1(pooled))
        hidden = torch.relu(self.linear2(embedding))
        cosine = F.normalize(hidden, dim=1) @ F.normalize(self.speakers, dim=0)
        return VerificationOutput(embedding, cosine)


class VerificationObjective(Objective):
    """AM-softmax over the training speakers; embeddings as predictions; EER (percent) over a trial list.

    `score` gets every utterance of one split and scores the trial list whose utterances all have an
    embedding there (dev's or test's; `SpeakerVerification.check` makes that list unique per split)."""

    metric, higher_is_better = "eer", False

    def __init__(self, trials: dict[str, list[Trial]], scale: float = 30.0, margin: float = 0.4) -> None:
        self.trials, self.scale, self.margin = trials, scale, margin

    def loss(self, output: VerificationOutput, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        labels = torch.as_tensor([t.index for t in targets], dtype=torch.long, device=output.cosine.device)
        if bool((labels < 0).any()):
            raise ValueError("AM-softmax needs training speakers; a batch holds an utterance of an unseen speaker")
        return am_softmax_loss(output.cosine, labels, self.scale, self.margin)

    def predict(self, output: VerificationOutput, lengths: torch.Tensor) -> list:
        unit = F.normalize(output.embedding.float(), dim=-1).cpu().numpy()
        return np.round(unit.astype(np.float64), EMBEDDING_DECIMALS).tolist()

    def trials_for(self, ids: set[str]) -> tuple[str, list[Trial]]:
        """The (name, trials) of the one list whose utterances are all in `ids`."""
        covered = [(name, trials) for name, trials in self.trials.items()
                   if all(t.a in ids and t.b in ids for t in trials)]
        if len(covered) != 1:
            raise ValueError(f"{'no' if not covered else 'more than one'} trial list has all its utterances "
                             f"among the {len(ids)} scored ones ({', '.join(self.trials)})")
        return covered[0]

    def score(self, targets: list, predictions: list) -> float:
        embeddings = {t[0]: p for t, p in zip(targets, predictions)}
        _, trials = self.trials_for(set(embeddings))
        return metrics.equal_error_rate(*score_trials(trials, embeddings))

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Per trial pair its label and cosine score: the EER is resampled over trials."""
        embeddings = {t[0]: p for t, p in zip(targets, predictions)}
        _, trials = self.trials_for(set(embeddings))
        labels, scores = score_trials(trials, embeddings)
        return {self.metric: UnitScores.build("eer", "trial pair", [f"{t.a} {t.b}" for t in trials],
                                              {"label": labels, "score": scores})}


@dataclass(frozen=True)
class XVectorHeadConfig:
    """A recipe's `head` section for speaker verification (s3prl's amsoftmax.yaml values by default)."""

    hidden_dim: int = 512  # modelrc.input_dim: the connector's and the TDNNs' width, and the embedding size
    agg_dim: int = 1500  # XVector.agg_dim: the last TDNN's width (statistics pooling doubles it)
    am_scale: float = 30.0  # AMSoftmaxLoss s
    am_margin: float = 0.4  # AMSoftmaxLoss m
    #: Random crop of training utterances to this many frames (0: whole utterances); s3prl crops waveforms
    #: to max_timestep 128000 samples, 400 frames of a 20 ms upstream.
    max_train_frames: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "agg_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_train_frames < 0:
            raise ValueError(f"max_train_frames must be >= 0 (0: no crop), got {self.max_train_frames}")
        if not self.am_scale > 0 or not 0 <= self.am_margin < 1:
            raise ValueError(f"am_scale must be > 0 and am_margin in [0, 1), got {self.am_scale}, {self.am_margin}")


class SpeakerVerification(TaskKind):
    """Task kind: x-vector on frames, trained to tell training speakers apart, scored on trial lists."""

    level = "frame"
    head_config = XVectorHeadConfig

    def check(self, task: Task, manifest: TaskManifest) -> None:
        """Trial lists present, part of the run identity, well formed, naming manifest utterances of the split
        they score, both classes present; and training speakers to learn from."""
        self.trials(manifest)
        if len(self.speakers(task, manifest)) < 2:
            raise ManifestError(f"{manifest.root}: speaker verification needs at least 2 training speakers")

    def trials(self, manifest: TaskManifest) -> dict[str, list[Trial]]:
        """The manifest's trial lists by name, each checked (see `check`)."""
        root = manifest.root
        missing = [name for name in TRIAL_FILES.values() if name not in manifest.sidecars]
        if missing:
            raise ManifestError(f"{root}/meta.json: trial list(s) {', '.join(missing)} are not among its sidecars "
                                f"(write_task_manifest(..., sidecars=[...])), so they would not be part of the "
                                f"run identity")
        split_of = {u.id: split for split, rows in manifest.splits.items() for u in rows}
        trials: dict[str, list[Trial]] = {}
        try:
            for name in TRIAL_FILES.values():
                trials[name] = read_trials(root / name, set(split_of))
        except ValueError as exc:
            raise ManifestError(str(exc)) from exc
        for fold in manifest.folds:
            for role, name in TRIAL_FILES.items():
                split = getattr(fold, role)
                outside = sorted({u for t in trials[name] for u in (t.a, t.b) if split_of[u] != split})
                if outside:
                    raise ManifestError(f"{root / name}: scores {split}.jsonl (fold {fold.name}) but names "
                                        f"{len(outside)} utterance(s) of other splits, e.g. {outside[0]!r} "
                                        f"({split_of[outside[0]]}.jsonl)")
        return trials

    @staticmethod
    def speakers(task: Task, manifest: TaskManifest) -> list[str]:
        """The training speakers (the AM-softmax classes), sorted."""
        return sorted({u.targets[task.target] for fold in manifest.folds for u in manifest.splits[fold.train]})

    def setup(self, task: Task, manifest: TaskManifest, head: XVectorHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None) -> TaskSetup:
        trials = self.trials(manifest)
        index = {s: i for i, s in enumerate(self.speakers(task, manifest))}
        field = task.target

        def target_of(u: Any) -> SpeakerTarget:
            speaker = u.targets[field]
            return SpeakerTarget(u.id, speaker, index.get(speaker, -1))

        return TaskSetup(VerificationObjective(trials, head.am_scale, head.am_margin), target_of,
                         lambda: XVectorHead(num_layers, hidden_size, len(index), hidden_dim=head.hidden_dim,
                                             agg_dim=head.agg_dim, layer=layer,
                                             max_train_frames=head.max_train_frames))

"""CTC transcription (PR, ASR): heads, token vocabularies, the objective and the task kind.

PR (s3prl `ctc/libriphone.yaml`, `FrameLevel`): Linear(D, 256) -> Linear(256, V+1).
ASR (s3prl `asr/config.yaml`, `RNNs`): Linear(D, 1024) -> 2-layer BiLSTM (1024 per
direction, dropout 0.2 after each layer) -> Linear(2048, V+1).
Index 0 is the CTC blank; decoding is greedy (argmax, merge repeats, drop blanks).

ASR's s3prl config also turns on SpecAugment on the representation (`specaug:` block, applied by
s3prl's `downstream/runner.py` to the featurizer's output during training only, with
`downstream/specaug.py`): `SpecAugment` below reproduces it (time warp, then frequency masks, then
time masks, drawn from torch's global RNG) between the weighted sum and the head's first Linear.

SUPERB-SG's out-of-domain ASR (s3prl `ctc/cv_config/*.yaml`, `ctc/sbcsae.yaml`) uses the same RNNs head
with `proj: [True, True]` (a Linear + tanh after each BiLSTM layer: `rnn_proj`), CER for Mandarin
(`metric="cer"`) and a character inventory of the training transcripts (`inventory="train"`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from rapidfuzz.distance import Levenshtein

from superbench import metrics
from superbench.downstream import Head, Objective
from superbench.featurizer import WeightedSum
from superbench.manifest import ManifestError, TaskManifest, format_problems
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores

BLANK = "<blank>"
WORD_SEP = "|"


class CTCVocab:
    """Tokens for CTC: phones (space-separated) or characters with `|` between words."""

    def __init__(self, tokens: Iterable[str], mode: str) -> None:
        if mode not in ("phones", "chars"):
            raise ValueError(f"CTC vocab mode must be 'phones' or 'chars', got {mode!r}")
        self.mode = mode
        self.tokens = [BLANK] + sorted(set(tokens) - {BLANK})
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def for_texts(cls, texts: Iterable[str]) -> "CTCVocab":
        chars = {c for t in texts for c in t.strip() if not c.isspace()}
        return cls(chars | {WORD_SEP}, "chars")

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        if self.mode == "phones":
            return text.split()
        return list(WORD_SEP.join(text.split()))

    def encode(self, text: str) -> list[int]:
        out = []
        for tok in self.split(text):
            if tok not in self.index:
                raise ValueError(f"token {tok!r} (in {text!r}) is not in the vocabulary")
            out.append(self.index[tok])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        toks = [self.tokens[i] for i in ids if i != 0]
        if self.mode == "phones":
            return " ".join(toks)
        return " ".join(w for w in "".join(toks).split(WORD_SEP) if w)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks (index 0). log_probs is (B, T, V)."""
    best = log_probs.argmax(dim=-1)
    out = []
    for row, n in zip(best.tolist(), lengths.tolist()):
        ids, prev = [], -1
        for t in row[:n]:
            if t != prev and t != 0:
                ids.append(t)
            prev = t
        out.append(ids)
    return out


def _check_width_range(name: str, width_range: Sequence[int]) -> tuple[int, int]:
    if len(width_range) != 2 or not 0 <= width_range[0] < width_range[1]:
        raise ValueError(f"{name} must be [low, high) with 0 <= low < high, got {list(width_range)}")
    return int(width_range[0]), int(width_range[1])


class SpecAugment(torch.nn.Module):
    """s3prl's `SpecAug` (downstream/specaug.py) on a (B, T, D) representation, in training mode only.

    In order, as there: a time warp per utterance (a centre in [w, t - w), a new position in
    [centre - w + 1, centre + w], each side resized by bicubic interpolation; utterances with
    t - w <= w are left alone), then `num_freq_mask` frequency masks and `num_time_mask` time masks per
    utterance, each of a width drawn in [low, high) and a start in [0, max(1, size - widest)), zeroed.
    As in s3prl, time-mask starts are drawn over the batch's longest utterance. Every draw comes from
    torch's global RNG (seeded by training and kept in its checkpoints), so runs stay deterministic and
    resumable. `time_warp_window=0`, or a count of 0, turns that part off. s3prl's `adaptive` masks
    (off in its ASR config) are not offered.
    """

    def __init__(self, time_warp_window: int = 5, freq_mask_width_range: Sequence[int] = (0, 50),
                 num_freq_mask: int = 4, time_mask_width_range: Sequence[int] = (0, 40),
                 num_time_mask: int = 2) -> None:
        super().__init__()
        if time_warp_window < 0 or num_freq_mask < 0 or num_time_mask < 0:
            raise ValueError("time_warp_window, num_freq_mask and num_time_mask must be >= 0")
        self.time_warp_window = time_warp_window
        self.freq_mask_width_range = _check_width_range("freq_mask_width_range", freq_mask_width_range)
        self.time_mask_width_range = _check_width_range("time_mask_width_range", time_mask_width_range)
        self.num_freq_mask, self.num_time_mask = num_freq_mask, num_time_mask

    def extra_repr(self) -> str:
        return (f"time_warp_window={self.time_warp_window}, freq_mask_width_range={self.freq_mask_width_range}, "
                f"num_freq_mask={self.num_freq_mask}, time_mask_width_range={self.time_mask_width_range}, "
                f"num_time_mask={self.num_time_mask}")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); the identity in eval mode. Frames past `lengths` stay as they are."""
        if not self.training:
            return x
        if self.time_warp_window > 0:
            x = self.time_warp(x, lengths)
        if self.num_freq_mask > 0:
            x = x.masked_fill(self.mask(x.shape[0], x.shape[2], self.freq_mask_width_range,
                                        self.num_freq_mask)[:, None, :].to(x.device), 0.0)
        if self.num_time_mask > 0:
            longest = int(lengths.max())
            mask = self.mask(x.shape[0], longest, self.time_mask_width_range, self.num_time_mask)
            mask = F.pad(mask, (0, x.shape[1] - longest))  # padding frames: never masked
            x = x.masked_fill(mask[:, :, None].to(x.device), 0.0)  # drawn on the CPU: the same masks anywhere
        return x

    @staticmethod
    def mask(batch: int, size: int, width_range: tuple[int, int], count: int) -> torch.Tensor:
        """(batch, size) bool: `count` spans per row, widths in [low, high), starts in
        [0, max(1, size - widest)), as s3prl's MaskAlongAxis draws them (widths first, then starts)."""
        widths = torch.randint(width_range[0], width_range[1], (batch, count)).unsqueeze(2)
        starts = torch.randint(0, max(1, size - int(widths.max())), (batch, count)).unsqueeze(2)
        positions = torch.arange(size)[None, None, :]
        return ((starts <= positions) & (positions < starts + widths)).any(dim=1)

    def time_warp(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """s3prl's TimeWarp, utterance by utterance (a centre and a target drawn for each)."""
        w = self.time_warp_window
        out = x.clone()
        for i, n in enumerate(lengths.tolist()):
            if n - w <= w:
                continue
            y = x[i, :n][None, None]  # (1, 1, t, D)
            center = int(torch.randint(w, n - w, (1,))[0])
            warped = int(torch.randint(center - w, center + w, (1,))[0]) + 1
            left = F.interpolate(y[:, :, :center], (warped, y.shape[3]), mode="bicubic", align_corners=False)
            right = F.interpolate(y[:, :, center:], (n - warped, y.shape[3]), mode="bicubic", align_corners=False)
            out[i, :n] = torch.cat([left, right], dim=2)[0, 0]
        return out


class CTCHead(Head):
    """Weighted sum -> [SpecAugment, training only] -> Linear(D, proj_dim) -> optional stacked BiLSTMs
    -> Linear(., vocab). `feature_layer_norm` layer-normalises each upstream layer before the weighted
    sum (s3prl's `upstream_feature_normalize`)."""

    def __init__(self, num_layers: int, input_dim: int, vocab_size: int, proj_dim: int = 256,
                 rnn_dims: Sequence[int] = (), dropout: float = 0.2, layer: int | str | None = None,
                 frame_stack: int = 1, specaugment: SpecAugment | None = None,
                 feature_layer_norm: bool = False, rnn_proj: bool = False) -> None:
        super().__init__()
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        self.frame_stack = frame_stack
        self.featurizer = WeightedSum(num_layers, layer=layer, layer_norm=feature_layer_norm)
        self.specaugment = specaugment
        self.projector = torch.nn.Linear(input_dim, proj_dim)
        self.rnns = torch.nn.ModuleList()
        #: s3prl's RNNLayer `proj`: Linear(2h, 2h) + tanh after each BiLSTM layer (after its dropout).
        self.rnn_projs = torch.nn.ModuleList() if rnn_proj else None
        dim = proj_dim * frame_stack
        for hidden in rnn_dims:
            self.rnns.append(torch.nn.LSTM(dim, hidden, batch_first=True, bidirectional=True))
            dim = 2 * hidden
            if self.rnn_projs is not None:
                self.rnn_projs.append(torch.nn.Linear(dim, dim))
        self.dropout = torch.nn.Dropout(dropout)
        self.output = torch.nn.Linear(dim, vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, T, V) from (L, B, T, D) frames."""
        if features.dim() != 4:
            raise ValueError(f"expected (L, B, T, D) frames, got shape {tuple(features.shape)}")
        x = self.featurizer(features)
        if self.specaugment is not None:
            x = self.specaugment(x, lengths)
        x = self.projector(x)
        if self.frame_stack > 1:  # concatenate k neighbouring frames (s3prl's "concat" downsampling)
            k = self.frame_stack
            usable = x.shape[1] // k * k
            x = x[:, :usable].reshape(x.shape[0], usable // k, x.shape[2] * k)
            lengths = self.output_lengths(lengths)
        total = x.shape[1]
        for i, rnn in enumerate(self.rnns):
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                             enforce_sorted=False)
            out, _ = rnn(packed)
            x, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=total)
            x = self.dropout(x)
            if self.rnn_projs is not None:
                x = torch.tanh(self.rnn_projs[i](x))
        return torch.log_softmax(self.output(x), dim=-1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per utterance (fewer than input frames when frames are stacked)."""
        return torch.div(lengths, self.frame_stack, rounding_mode="floor").clamp_min(1)


class CTCObjective(Objective):
    """CTC over a token vocabulary (blank = 0), greedy decoding, WER, PER or CER in percent."""

    higher_is_better = False

    def __init__(self, vocab: CTCVocab, metric: str) -> None:
        if metric not in ("wer", "per", "cer"):
            raise ValueError(f"CTC metric must be 'wer', 'per' or 'cer', got {metric!r}")
        self.vocab, self.metric = vocab, metric

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        encoded = [self.vocab.encode(t) for t in targets]
        flat = torch.tensor([i for e in encoded for i in e], dtype=torch.long, device=output.device)
        target_lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long, device=output.device)
        return F.ctc_loss(output.transpose(0, 1), flat, lengths, target_lengths, blank=0,
                          reduction="mean", zero_infinity=True)

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        return [self.vocab.decode(ids) for ids in greedy_decode(output, lengths)]

    def score(self, targets: list, predictions: list) -> float:
        return metrics.METRICS[self.metric](targets, predictions)

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Per utterance its edit distance and reference length (summed, never averaged, by the ratio)."""
        if self.metric == "cer":  # characters of the space-normalised transcript, as metrics.cer
            return {"cer": edit_counts(ids, targets, predictions, tokens=lambda t: " ".join(t.split()))}
        return {self.metric: edit_counts(ids, targets, predictions)}


def edit_counts(ids: Sequence[str], references: Sequence[str], hypotheses: Sequence[str],
                tokens: Callable[[str], Sequence[str]] = str.split) -> UnitScores:
    """Per-utterance (errors, reference tokens) of a corpus error rate over `tokens` (words by default)."""
    pairs = [(tokens(r), tokens(h)) for r, h in zip(references, hypotheses)]
    return UnitScores.build("ratio", "utterance", ids, {"errors": [Levenshtein.distance(r, h) for r, h in pairs],
                                                        "total": [len(r) for r, _ in pairs]})


@dataclass(frozen=True)
class CTCHeadConfig:
    """A recipe's `head` section for CTC transcription (see CTCHead)."""

    proj_dim: int = 256
    rnn_dims: tuple[int, ...] = ()
    dropout: float = 0.0
    frame_stack: int = 1
    #: Layer-normalise each upstream layer before the weighted sum (s3prl's upstream_feature_normalize).
    feature_layer_norm: bool = False
    #: Linear + tanh after each BiLSTM layer (s3prl's RNNs `proj: [True, True]`, its ctc/cv_config heads).
    rnn_proj: bool = False
    #: SpecAugment on the weighted sum while training (s3prl's asr `specaug:` block); the values
    #: below are that block's (time warp window 5, 4 freq masks of width [0, 50), 2 time masks [0, 40)).
    specaugment: bool = False
    time_warp_window: int = 5  # 0 = no time warp
    freq_mask_width_range: tuple[int, ...] = (0, 50)
    num_freq_mask: int = 4
    time_mask_width_range: tuple[int, ...] = (0, 40)
    num_time_mask: int = 2

    def __post_init__(self) -> None:
        if self.specaugment:
            self.make_specaugment()  # bad widths or counts fail when the recipe loads

    def make_specaugment(self) -> SpecAugment | None:
        """The head's SpecAugment module, or None when `specaugment` is off."""
        if not self.specaugment:
            return None
        return SpecAugment(self.time_warp_window, self.freq_mask_width_range, self.num_freq_mask,
                           self.time_mask_width_range, self.num_time_mask)


class CTCTranscription(TaskKind):
    """Task kind: a token sequence per utterance, CTC over the frame cache.

    `unit="phones"`: space-separated tokens from the manifest's inventory (PR);
    `unit="chars"`: characters of a transcript, `|` between words (ASR).
    `inventory="all"` (default) builds the character vocabulary from every split's transcripts;
    `inventory="train"` from the training splits' only, and `check` refuses (before any extraction) a
    dev/test row with a character outside it, naming the file, the line and the characters.
    """

    level = "frame"
    head_config = CTCHeadConfig

    def __init__(self, unit: str, inventory: str = "all") -> None:
        if unit not in ("phones", "chars"):
            raise ValueError(f"CTC unit must be 'phones' or 'chars', got {unit!r}")
        if inventory not in ("all", "train"):
            raise ValueError(f"CTC inventory must be 'all' or 'train', got {inventory!r}")
        if inventory == "train" and unit != "chars":
            raise ValueError("inventory='train' is for unit='chars' (phones come from the manifest's labels)")
        self.unit, self.inventory = unit, inventory

    def check(self, task: Task, manifest: TaskManifest) -> None:
        if self.unit == "phones":
            manifest.check_inventory(task.target, units=lambda value: str(value).split())
        elif self.inventory == "train":
            check_train_characters(manifest, task.target)

    @staticmethod
    def train_splits(manifest: TaskManifest) -> set[str]:
        return {fold.train for fold in manifest.folds}

    def texts(self, manifest: TaskManifest, field: str) -> list[str]:
        """The transcripts the character vocabulary is built from (every split's, or the training splits')."""
        if self.inventory == "train":
            return [u.targets[field] for s in sorted(self.train_splits(manifest)) for u in manifest.splits[s]]
        return [u.targets[field] for u in manifest.utterances()]

    def setup(self, task: Task, manifest: TaskManifest, head: CTCHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None) -> TaskSetup:
        field = task.target
        if self.unit == "phones":
            vocab = CTCVocab(manifest.labels, "phones")

            def target_of(u: Any) -> str:
                return u.targets[field]
        else:
            vocab = CTCVocab.for_texts(self.texts(manifest, field))

            def target_of(u: Any) -> str:
                return " ".join(u.targets[field].split())

        return TaskSetup(CTCObjective(vocab, task.metric), target_of,
                         lambda: CTCHead(num_layers, hidden_size, len(vocab), proj_dim=head.proj_dim,
                                         rnn_dims=head.rnn_dims, dropout=head.dropout, layer=layer,
                                         frame_stack=head.frame_stack, specaugment=head.make_specaugment(),
                                         feature_layer_norm=head.feature_layer_norm, rnn_proj=head.rnn_proj))


def check_train_characters(manifest: TaskManifest, field: str) -> None:
    """Refuse dev/test transcripts with a character that no training transcript of their fold has, naming
    `<split>.jsonl:<line>`, the id and the characters (the file is read again for its line numbers)."""
    import json

    bad: list[str] = []
    for fold in manifest.folds:
        inventory = {c for u in manifest.splits[fold.train] for c in str(u.targets.get(field, "")) if not c.isspace()}
        for split in (fold.dev, fold.test):
            path = manifest.root / f"{split}.jsonl"
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                outside = sorted({c for c in str(row.get(field, "")) if not c.isspace()} - inventory)
                if outside:
                    bad.append(f"{path}:{n} id={row.get('id')!r}: {', '.join(repr(c) for c in outside)}")
    if bad:
        raise ManifestError(f"{manifest.root}: invalid manifest\n" + format_problems(
            f"characters outside the training transcripts' inventory ({fold.train}.jsonl)"
            if len(manifest.folds) == 1 else "characters outside their fold's training transcripts", bad))

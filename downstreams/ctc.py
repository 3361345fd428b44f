"""CTC transcription (PR, ASR): heads, token vocabularies, the objective and the task kind.

PR (s3prl `ctc/libriphone.yaml`, `FrameLevel`): Linear(D, 256) -> Linear(256, V+1).
ASR (s3prl `asr/config.yaml`, `RNNs`): Linear(D, 1024) -> 2-layer BiLSTM (1024 per
direction, dropout 0.2 after each layer) -> Linear(2048, V+1).
Index 0 is the CTC blank; decoding is greedy (argmax, merge repeats, drop blanks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from superbench import metrics
from superbench.featurizer import WeightedSum
from superbench.manifest import TaskManifest
from superbench.tasks import Task, TaskSetup

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


class CTCHead(torch.nn.Module):
    """Weighted sum -> Linear(D, proj_dim) -> optional stacked BiLSTMs -> Linear(., vocab)."""

    def __init__(self, num_layers: int, input_dim: int, vocab_size: int, proj_dim: int = 256,
                 rnn_dims: Sequence[int] = (), dropout: float = 0.2, layer: int | str | None = None,
                 frame_stack: int = 1) -> None:
        super().__init__()
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        self.frame_stack = frame_stack
        self.featurizer = WeightedSum(num_layers, layer=layer)
        self.projector = torch.nn.Linear(input_dim, proj_dim)
        self.rnns = torch.nn.ModuleList()
        dim = proj_dim * frame_stack
        for hidden in rnn_dims:
            self.rnns.append(torch.nn.LSTM(dim, hidden, batch_first=True, bidirectional=True))
            dim = 2 * hidden
        self.dropout = torch.nn.Dropout(dropout)
        self.output = torch.nn.Linear(dim, vocab_size)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, T, V) from (L, B, T, D) frames."""
        if features.dim() != 4:
            raise ValueError(f"expected (L, B, T, D) frames, got shape {tuple(features.shape)}")
        x = self.projector(self.featurizer(features))
        if self.frame_stack > 1:  # concatenate k neighbouring frames (s3prl's "concat" downsampling)
            k = self.frame_stack
            usable = x.shape[1] // k * k
            x = x[:, :usable].reshape(x.shape[0], usable // k, x.shape[2] * k)
            lengths = self.output_lengths(lengths)
        total = x.shape[1]
        for rnn in self.rnns:
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                             enforce_sorted=False)
            out, _ = rnn(packed)
            x, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=total)
            x = self.dropout(x)
        return torch.log_softmax(self.output(x), dim=-1)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per utterance (fewer than input frames when frames are stacked)."""
        return torch.div(lengths, self.frame_stack, rounding_mode="floor").clamp_min(1)


class CTCObjective:
    """CTC over a token vocabulary (blank = 0), greedy decoding, WER or PER in percent."""

    higher_is_better = False

    def __init__(self, vocab: CTCVocab, metric: str) -> None:
        if metric not in ("wer", "per"):
            raise ValueError(f"CTC metric must be 'wer' or 'per', got {metric!r}")
        self.vocab, self.metric = vocab, metric

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        encoded = [self.vocab.encode(t) for t in targets]
        flat = torch.tensor([i for e in encoded for i in e], dtype=torch.long)
        target_lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        return F.ctc_loss(output.transpose(0, 1), flat, lengths, target_lengths, blank=0,
                          reduction="mean", zero_infinity=True)

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        return [self.vocab.decode(ids) for ids in greedy_decode(output, lengths)]

    def score(self, targets: list, predictions: list) -> float:
        return metrics.METRICS[self.metric](targets, predictions)


@dataclass(frozen=True)
class CTCHeadConfig:
    """A recipe's `head` section for CTC transcription (see CTCHead)."""

    proj_dim: int = 256
    rnn_dims: tuple[int, ...] = ()
    dropout: float = 0.0
    frame_stack: int = 1


class CTCTranscription:
    """Task kind: a token sequence per utterance, CTC over the frame cache.

    `unit="phones"`: space-separated tokens from the manifest's inventory (PR);
    `unit="chars"`: characters of a transcript, `|` between words (ASR).
    """

    level = "frame"
    head_config = CTCHeadConfig

    def __init__(self, unit: str) -> None:
        if unit not in ("phones", "chars"):
            raise ValueError(f"CTC unit must be 'phones' or 'chars', got {unit!r}")
        self.unit = unit

    def check(self, task: Task, manifest: TaskManifest) -> None:
        if self.unit == "phones":
            manifest.check_inventory(task.target, units=lambda value: str(value).split())

    def setup(self, task: Task, manifest: TaskManifest, head: CTCHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None) -> TaskSetup:
        field = task.target
        if self.unit == "phones":
            vocab = CTCVocab(manifest.labels, "phones")

            def target_of(u: Any) -> str:
                return u.targets[field]
        else:
            vocab = CTCVocab.for_texts(u.targets[field] for u in manifest.utterances())

            def target_of(u: Any) -> str:
                return " ".join(u.targets[field].split())

        return TaskSetup(CTCObjective(vocab, task.metric), target_of,
                         lambda: CTCHead(num_layers, hidden_size, len(vocab), proj_dim=head.proj_dim,
                                         rnn_dims=head.rnn_dims, dropout=head.dropout, layer=layer,
                                         frame_stack=head.frame_stack))

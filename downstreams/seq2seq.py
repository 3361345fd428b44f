"""Sequence-to-sequence translation (SUPERB-SG speech translation, ST): an encoder-decoder Transformer, BLEU.

What s3prl does (downstream/speech_translation: config.yaml, expert.py, S3prl_SpeechToTextTask.py, which delegate the
model to fairseq's `s2t_transformer` architecture), and what is reproduced here in torch, without fairseq:

* Model (fairseq `S2TTransformerModel`, `base_architecture` with config.yaml's overrides): the weighted sum of the
  upstream's layers -> a convolutional subsampler (two Conv1d of kernel 5, stride 2, 1024 channels, each followed
  by a GLU, so 4x fewer frames) -> x sqrt(512) + sinusoidal positions -> dropout 0.1 -> 3 pre-norm Transformer
  encoder layers (width 512, 8 heads, FFN 2048, ReLU, dropout 0.1) -> LayerNorm. Decoder: token embedding
  x sqrt(512) + sinusoidal positions -> dropout -> 3 pre-norm decoder layers (causal self-attention, attention over
  the encoder, same widths) -> LayerNorm -> Linear(512, V) without bias. torch's layers use one dropout rate for
  attention, activation and residual (fairseq has three, all 0.1 in s2t_transformer).
* Vocabulary: a character-level sentencepiece model (s3prl's prepare_data trains one, `spm-*.model`, on the
  training targets), here trained at setup on the training targets, ids as fairseq's dictionary (<s> 0, <pad> 1,
  </s> 2, <unk> 3), identity normalisation so that decoding gives the text back. It lives in memory: the same
  training targets always give the same model, so a rerun rebuilds it.
* Loss: fairseq's label-smoothed cross-entropy (epsilon 0.1: (1 - eps - eps/(V-1)) nll + eps/(V-1) sum over the
  vocabulary), averaged over target tokens (fairseq sums and divides by the token count). The decoder reads
  </s> then the target (fairseq's prev_output_tokens) and predicts the target then </s>.
* Decoding: greedy on dev (s3prl runs fairseq's generator with its beam on dev as well; greedy keeps the frequent
  dev evaluations cheap), beam search on test (beam 20 in superb: fairseq's SequenceGenerator with length
  normalisation, hypotheses finished when </s> ranks within the beam, at most max_len_a * frames + max_len_b tokens).
* Metric: case-sensitive detokenised BLEU, `sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")` as s3prl's
  `_metric` ("zh" for a Chinese target); per sentence its sufficient statistics (n-gram matches and totals, lengths)
  are the units of the record's interval (statistic "bleu", corpus BLEU recomputed per bootstrap draw).

A manifest row's target field holds the translation (a non-empty string); a row without one is refused before
extraction, naming its file and line. Needs the optional packages `sentencepiece` and `sacrebleu`
(`pip install 'superbench[translation]'`): without them the task fails when it loads, naming the extra.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from superbench.downstream import Head, Objective
from superbench.extras import MissingExtraPackage, import_from_extra, require_extra
from superbench.featurizer import WeightedSum
from superbench.manifest import ManifestError, TaskManifest, format_problems
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import BLEU_COLUMNS, UnitScores

BOS, PAD, EOS, UNK = 0, 1, 2, 3
EXTRA = "translation"
PACKAGES = {"sentencepiece": "sentencepiece", "sacrebleu": "sacrebleu"}


class MissingTranslationPackage(MissingExtraPackage):
    """An optional package of the translation tasks is not installed; the message names the extra."""


def _import(module: str) -> Any:
    return import_from_extra(module, PACKAGES, EXTRA, "speech translation needs", MissingTranslationPackage)


def require_translation_packages() -> None:
    """Import sentencepiece and sacrebleu now: MissingTranslationPackage naming the extra when one is missing."""
    require_extra(PACKAGES, EXTRA, "speech translation needs", MissingTranslationPackage)


# --------------------------------------------------------------------------- vocabulary

class CharVocab:
    """A character-level sentencepiece model (fairseq's special ids: <s> 0, <pad> 1, </s> 2, <unk> 3)."""

    def __init__(self, model_proto: bytes) -> None:
        spm = _import("sentencepiece")
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharVocab":
        """The character model of `texts` (deterministic: the same texts give the same model)."""
        spm = _import("sentencepiece")
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("no training targets to build the character vocabulary from")
        chars = {c for t in texts for c in t}
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=buffer, model_type="char",
                                       vocab_size=len(chars) + 5, hard_vocab_limit=False, character_coverage=1.0,
                                       bos_id=BOS, pad_id=PAD, eos_id=EOS, unk_id=UNK,
                                       normalization_rule_name="identity", minloglevel=2, num_threads=1)
        return cls(buffer.getvalue())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) not in (BOS, PAD, EOS)])


# --------------------------------------------------------------------------- model

def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """fairseq's sinusoidal embedding (sin half, cos half) of positions 0..length-1, (length, dim)."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -scale)
    angles = torch.arange(length, dtype=torch.float32, device=device)[:, None] * freqs[None]
    out = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(out, (0, dim - 2 * half))


class Conv1dSubsampler(torch.nn.Module):
    """fairseq's Conv1dSubsampler: Conv1d(stride 2, padding k // 2) + GLU per kernel size."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel_sizes: Sequence[int]) -> None:
        super().__init__()
        n = len(kernel_sizes)
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv1d(in_channels if i == 0 else mid_channels // 2,
                            mid_channels if i < n - 1 else out_channels * 2, k, stride=2, padding=k // 2)
            for i, k in enumerate(kernel_sizes))

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        out = lengths.clone()
        for _ in self.convs:
            out = torch.div(out - 1, 2, rounding_mode="floor") + 1
        return out.clamp_min(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, D, T)
        for conv in self.convs:
            x = F.glu(conv(x), dim=1)
        return x.transpose(1, 2)


class EncoderOutput:
    """What the head gives the objective: the encoder's states, their padding mask and the decoder to run."""

    def __init__(self, memory: torch.Tensor, padding: torch.Tensor, head: "Seq2SeqHead") -> None:
        self.memory, self.padding, self.head = memory, padding, head

    def __len__(self) -> int:
        return self.memory.shape[0]

    def logits(self, prev_tokens: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, U, V) next-token logits for decoder inputs `prev_tokens` (B, U) of the utterances `rows`."""
        memory, padding = (self.memory, self.padding) if rows is None else (self.memory[rows], self.padding[rows])
        return self.head.decode(memory, padding, prev_tokens)

    def step_fn(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Log-probabilities (k, V) of the next token after each of k prefixes (k, t) of utterance i."""
        def step(prefixes: torch.Tensor) -> torch.Tensor:
            rows = torch.full((prefixes.shape[0],), i, dtype=torch.long, device=self.memory.device)
            return torch.log_softmax(self.logits(prefixes.to(self.memory.device), rows)[:, -1].float(), dim=-1)
        return step


class Seq2SeqHead(Head):
    """Weighted sum -> convolutional subsampler -> Transformer encoder; Transformer decoder (see the docstring)."""

    def __init__(self, num_layers: int, input_dim: int, vocab_size: int, cfg: "Seq2SeqHeadConfig",
                 layer: int | str | None = None) -> None:
        super().__init__()
        self.featurizer = WeightedSum(num_layers, layer=layer, layer_norm=cfg.feature_layer_norm)
        d, e = cfg.encoder_embed_dim, cfg.decoder_embed_dim
        self.subsample = Conv1dSubsampler(input_dim, cfg.conv_channels, d, cfg.conv_kernel_sizes)
        self.drop = torch.nn.Dropout(cfg.dropout)
        self.encoder = torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(d, cfg.encoder_attention_heads, cfg.encoder_ffn_embed_dim, cfg.dropout,
                                             activation="relu", batch_first=True, norm_first=True),
            cfg.encoder_layers, norm=torch.nn.LayerNorm(d), enable_nested_tensor=False)
        self.embed = torch.nn.Embedding(vocab_size, e, padding_idx=PAD)
        torch.nn.init.normal_(self.embed.weight, mean=0.0, std=e ** -0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.bridge = torch.nn.Identity() if d == e else torch.nn.Linear(d, e)
        self.decoder = torch.nn.TransformerDecoder(
            torch.nn.TransformerDecoderLayer(e, cfg.decoder_attention_heads, cfg.decoder_ffn_embed_dim, cfg.dropout,
                                             activation="relu", batch_first=True, norm_first=True),
            cfg.decoder_layers, norm=torch.nn.LayerNorm(e))
        self.output = torch.nn.Linear(e, vocab_size, bias=False)
        torch.nn.init.normal_(self.output.weight, mean=0.0, std=e ** -0.5)
        self.encoder_dim, self.decoder_dim = d, e

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.subsample.output_lengths(lengths)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        if features.dim() != 4:
            raise ValueError(f"expected (L, B, T, D) frames, got shape {tuple(features.shape)}")
        x = self.featurizer(features).float()
        valid = torch.arange(x.shape[1], device=x.device)[None] < lengths.to(x.device)[:, None]
        x = self.subsample(x * valid[..., None])
        out_lengths = self.output_lengths(lengths).to(x.device)
        x = x * math.sqrt(self.encoder_dim) + sinusoidal_positions(x.shape[1], self.encoder_dim, x.device)
        padding = torch.arange(x.shape[1], device=x.device)[None] >= out_lengths[:, None]
        memory = self.encoder(self.drop(x), src_key_padding_mask=padding)
        return EncoderOutput(self.bridge(memory), padding, self)

    def decode(self, memory: torch.Tensor, padding: torch.Tensor, prev_tokens: torch.Tensor) -> torch.Tensor:
        u = prev_tokens.shape[1]
        y = self.embed(prev_tokens) * math.sqrt(self.decoder_dim)
        y = self.drop(y + sinusoidal_positions(u, self.decoder_dim, y.device))
        causal = torch.triu(torch.ones(u, u, dtype=torch.bool, device=y.device), diagonal=1)
        y = self.decoder(y, memory, tgt_mask=causal, tgt_key_padding_mask=prev_tokens == PAD,
                         memory_key_padding_mask=padding)
        return self.output(y)

    def decode_step(self, memory: torch.Tensor, padding: torch.Tensor, last_tokens: torch.Tensor, position: int,
                    state: list[torch.Tensor] | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(R, V) next-token logits after the token `last_tokens` (R,) at `position`, and the new decoder state.

        Incremental form of `decode` for search (eval mode): the decoder is causal, so the earlier positions'
        states never change, and a step computes only the new position. `state` (None at position 0) holds, per
        decoder layer, that layer's inputs at every position so far (R, position, E): the self-attention keys
        and values are recomputed from them (a pre-norm layer's K/V are projections of its normalised input),
        the feed-forward and cross-attention run on the new position only. Gives `decode`'s last-position
        logits for the same prefixes (up to float rounding) at a fraction of the cost: no step re-runs the
        whole prefix through every layer."""
        y = self.embed(last_tokens[:, None]) * math.sqrt(self.decoder_dim)
        y = self.drop(y + sinusoidal_positions(position + 1, self.decoder_dim, y.device)[position])
        new_state = []
        for i, layer in enumerate(self.decoder.layers):
            inputs = y if state is None else torch.cat([state[i], y], dim=1)
            new_state.append(inputs)
            h = layer.norm1(inputs)
            y = y + layer.dropout1(layer.self_attn(h[:, -1:], h, h, need_weights=False)[0])
            h = layer.norm2(y)
            y = y + layer.dropout2(layer.multihead_attn(h, memory, memory, key_padding_mask=padding,
                                                        need_weights=False)[0])
            y = y + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(y))))))
        return self.output(self.decoder.norm(y))[:, 0], new_state


# --------------------------------------------------------------------------- decoding

def beam_search(step: Callable[[torch.Tensor], torch.Tensor], beam: int, max_len: int, bos: int = EOS,
                eos: int = EOS) -> list[int]:
    """The best token sequence (without </s>) of a beam search over `step(prefixes (k, t)) -> log-probs (k, V)`.

    As fairseq's SequenceGenerator: each step ranks the 2 x beam best extensions of the live hypotheses; one
    ending in </s> among the first `beam` ranks is finished, the best `beam` others live on; the search ends when
    `beam` hypotheses are finished or at `max_len` tokens (then </s> is forced). Finished hypotheses compare by
    their log-probability over their length (</s> included). `beam=1` is greedy decoding."""
    hyps, scores = [[bos]], [0.0]
    finished: list[tuple[float, list[int]]] = []
    for t in range(max(1, max_len)):
        logp = step(torch.tensor(hyps, dtype=torch.long)).float().cpu()
        if t == max(1, max_len) - 1:
            logp = _only_eos(logp, eos)
        live = _beam_step(torch.tensor(scores)[:, None] + logp, hyps, beam, eos, finished)
        if len(finished) >= beam or not live:
            break
        hyps, scores = [hyps[k] + [token] for k, token, _ in live], [score for _, _, score in live]
    if not finished:
        finished = [(s / len(h), h[1:]) for h, s in zip(hyps, scores)]
    return max(finished, key=lambda f: f[0])[1]


def _only_eos(logp: torch.Tensor, eos: int) -> torch.Tensor:
    """`logp` with every token but </s> impossible: the length limit forces the hypotheses to end."""
    forced = torch.full_like(logp, float("-inf"))
    forced[:, eos] = logp[:, eos]
    return forced


def _beam_step(cand: torch.Tensor, hyps: list[list[int]], beam: int, eos: int,
               finished: list[tuple[float, list[int]]]) -> list[tuple[int, int, float]]:
    """One utterance's step of `beam_search` on its candidate scores (k, V): finished hypotheses are appended to
    `finished`; returns the (parent, token, score) of the live ones, best first (fairseq's rules, as there)."""
    vocab = cand.shape[1]
    top = cand.view(-1).topk(min(2 * beam, cand.numel()))
    live: list[tuple[int, int, float]] = []
    for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
        if score == float("-inf"):
            break
        k, token = divmod(index, vocab)
        if token == eos:
            if rank < beam:
                finished.append((score / len(hyps[k]), hyps[k][1:]))
        elif len(live) < beam:
            live.append((k, token, score))
    return live


def beam_search_batch(output: EncoderOutput, beam: int, max_lens: Sequence[int], bos: int = EOS,
                      eos: int = EOS) -> list[list[int]]:
    """`beam_search` of every utterance of a batch at once: the live hypotheses of all utterances go through the
    decoder as one batch per step, with the incremental decoder state (`Seq2SeqHead.decode_step`) reordered to
    the surviving hypotheses, instead of one utterance at a time re-running each prefix. Each utterance follows
    `beam_search`'s rules on its own log-probabilities and length limit, so the result is the same."""
    n = len(output)
    head, device = output.head, output.memory.device
    limits = [max(1, int(m)) for m in max_lens]
    hyps: list[list[list[int]]] = [[[bos]] for _ in range(n)]
    scores: list[list[float]] = [[0.0] for _ in range(n)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    active = list(range(n))
    rows = torch.arange(n, device=device)  # the utterance of each decoder row
    last = torch.full((n,), bos, dtype=torch.long, device=device)
    state: list[torch.Tensor] | None = None
    t = 0
    while active:
        logits, state = head.decode_step(output.memory[rows], output.padding[rows], last, t, state)
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        parents, tokens, still = [], [], []
        offset = 0
        for u in active:
            k = len(hyps[u])
            lp = logp[offset:offset + k]
            if t == limits[u] - 1:
                lp = _only_eos(lp, eos)
            live = _beam_step(torch.tensor(scores[u])[:, None] + lp, hyps[u], beam, eos, finished[u])
            if len(finished[u]) >= beam or not live or t + 1 >= limits[u]:
                if not finished[u]:
                    finished[u] = [(s / len(h), h[1:]) for h, s in zip(hyps[u], scores[u])]
            else:
                hyps[u] = [hyps[u][k_] + [tok] for k_, tok, _ in live]
                scores[u] = [sc for _, _, sc in live]
                parents += [offset + k_ for k_, _, _ in live]
                tokens += [tok for _, tok, _ in live]
                still.append(u)
            offset += k
        active = still
        if not active:
            break
        index = torch.tensor(parents, dtype=torch.long, device=device)
        rows, state = rows[index], [x[index] for x in state]
        last = torch.tensor(tokens, dtype=torch.long, device=device)
        t += 1
    return [max(f, key=lambda x: x[0])[1] for f in finished]


def greedy_batch(output: EncoderOutput, max_lens: Sequence[int]) -> list[list[int]]:
    """Greedy decoding of every utterance at once (argmax per step, stopped at </s> or its `max_lens`)."""
    n = len(output)
    device = output.memory.device
    tokens = torch.full((n, 1), EOS, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    limit = torch.tensor(list(max_lens), device=device)
    for t in range(max(max_lens) if n else 0):
        nxt = output.logits(tokens)[:, -1].argmax(-1)
        nxt = torch.where(t >= limit - 1, torch.full_like(nxt, EOS), nxt)  # </s> forced at the last position
        nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[:row.index(EOS)] if EOS in row else row)
    return out


# --------------------------------------------------------------------------- objective

def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float) -> torch.Tensor:
    """fairseq's label_smoothed_nll_loss, averaged over the non-pad target tokens."""
    lprobs = torch.log_softmax(logits.float(), dim=-1)
    keep = target != PAD
    nll = -lprobs.gather(-1, target.clamp_min(0)[..., None]).squeeze(-1)
    smooth = -lprobs.sum(-1)
    eps_i = epsilon / (lprobs.shape[-1] - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return (loss * keep).sum() / keep.sum().clamp_min(1)


class TranslationObjective(Objective):
    """Label-smoothed cross-entropy; greedy (dev) or beam (test) decoding; corpus BLEU (see the module docstring)."""

    metric = "bleu"
    higher_is_better = True

    def __init__(self, vocab: CharVocab, beam: int = 20, max_len_a: float = 0.0, max_len_b: int = 400,
                 label_smoothing: float = 0.1, max_target_positions: int = 1024, tokenize: str = "13a") -> None:
        require_translation_packages()
        self.vocab, self.beam, self.max_len_a, self.max_len_b = vocab, beam, max_len_a, max_len_b
        self.label_smoothing, self.max_target_positions, self.tokenize = label_smoothing, max_target_positions, tokenize
        self.role = "dev"

    def begin_predictions(self, role: str) -> None:
        self.role = role

    def loss(self, output: EncoderOutput, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        device = output.memory.device
        encoded = [self.vocab.encode(t)[:self.max_target_positions - 1] + [EOS] for t in targets]
        width = max(len(e) for e in encoded)
        target = torch.full((len(encoded), width), PAD, dtype=torch.long)
        prev = torch.full((len(encoded), width), PAD, dtype=torch.long)
        for i, e in enumerate(encoded):
            target[i, :len(e)] = torch.tensor(e)
            prev[i, :len(e)] = torch.tensor([EOS] + e[:-1])
        return label_smoothed_nll(output.logits(prev.to(device)), target.to(device), self.label_smoothing)

    def max_lens(self, lengths: torch.Tensor) -> list[int]:
        return [max(1, min(int(self.max_len_a * int(n) + self.max_len_b), self.max_target_positions - 1))
                for n in lengths.tolist()]

    def predict(self, output: EncoderOutput, lengths: torch.Tensor) -> list:
        limits = self.max_lens(lengths)
        if self.role == "test" and self.beam > 1:
            ids = beam_search_batch(output, self.beam, limits)
        else:
            ids = greedy_batch(output, limits)
        return [self.vocab.decode(seq) for seq in ids]

    def score(self, targets: list, predictions: list) -> float:
        sacrebleu = _import("sacrebleu")
        return float(sacrebleu.corpus_bleu(list(predictions), [list(targets)], tokenize=self.tokenize).score)

    def sentence_statistics(self, targets: list, predictions: list) -> list[list[int]]:
        """Per sentence sacreBLEU's sufficient statistics: [hyp_len, ref_len, correct1..4, total1..4]."""
        bleu = _import("sacrebleu.metrics").BLEU(tokenize=self.tokenize)
        return [[int(v) for v in row] for row in bleu._extract_corpus_statistics(list(predictions),
                                                                                 [list(targets)])]

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        if len(targets) != len(predictions) or not targets:
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        stats = self.sentence_statistics(targets, predictions)
        return {"bleu": UnitScores.build("bleu", "sentence", ids,
                                         {name: [row[i] for row in stats] for i, name in enumerate(BLEU_COLUMNS)})}

    def shown(self, target: str, prediction: str) -> dict[str, Any]:
        """The reference and hypothesis of a sentence, with its sentence BLEU (sacreBLEU's sentence_bleu)."""
        sacrebleu = _import("sacrebleu")
        return {"reference": target, "prediction": prediction,
                "sentence_bleu": round(float(sacrebleu.sentence_bleu(prediction, [target],
                                                                      tokenize=self.tokenize).score), 4)}


# --------------------------------------------------------------------------- task kind

@dataclass(frozen=True)
class Seq2SeqHeadConfig:
    """A recipe's `head` section for speech translation (fairseq's s2t_transformer, s3prl's modelrc,
    criterionrc and generatorrc)."""

    conv_kernel_sizes: tuple[int, ...] = (5, 5)
    conv_channels: int = 1024
    encoder_embed_dim: int = 512
    encoder_ffn_embed_dim: int = 2048
    encoder_layers: int = 3
    encoder_attention_heads: int = 8
    decoder_embed_dim: int = 512
    decoder_ffn_embed_dim: int = 2048
    decoder_layers: int = 3
    decoder_attention_heads: int = 8
    dropout: float = 0.1
    max_target_positions: int = 1024
    label_smoothing: float = 0.1
    beam: int = 20
    max_len_a: float = 0.0
    max_len_b: int = 400
    #: sacreBLEU tokenizer: "13a" (s3prl's choice for every target language but Chinese, which uses "zh").
    tokenize: str = "13a"
    #: Layer-normalise each upstream layer before the weighted sum (s3prl's upstream_feature_normalize).
    feature_layer_norm: bool = False

    def __post_init__(self) -> None:
        positive = ("conv_channels", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_layers",
                    "encoder_attention_heads", "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_layers",
                    "decoder_attention_heads", "max_target_positions", "beam", "max_len_b")
        bad = [f"{name}={getattr(self, name)!r}" for name in positive
               if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int)
               or getattr(self, name) < 1]
        if bad:
            raise ValueError(f"positive integers needed: {', '.join(bad)}")
        if not self.conv_kernel_sizes or any(k < 1 for k in self.conv_kernel_sizes):
            raise ValueError(f"conv_kernel_sizes must list positive sizes, got {self.conv_kernel_sizes!r}")
        if self.conv_channels % 2:
            raise ValueError(f"conv_channels must be even (the GLU halves it), got {self.conv_channels}")
        for dim, heads in ((self.encoder_embed_dim, self.encoder_attention_heads),
                           (self.decoder_embed_dim, self.decoder_attention_heads)):
            if dim % heads:
                raise ValueError(f"an embedding width ({dim}) must be a multiple of its attention heads ({heads})")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1 or self.max_len_a < 0:
            raise ValueError(f"0 <= dropout < 1, 0 <= label_smoothing < 1 and max_len_a >= 0 needed, got "
                             f"{self.dropout}, {self.label_smoothing}, {self.max_len_a}")


class Seq2SeqTranslation(TaskKind):
    """Task kind: a target sentence per utterance, an encoder-decoder Transformer over the frame cache, BLEU.

    `check` (run before the task's own check for missing labels) refuses a row whose target is missing, not a
    string or blank, naming its file and line; and fails first, naming the extra, without sentencepiece/sacrebleu.
    """

    level = "frame"
    head_config = Seq2SeqHeadConfig
    checks_targets = True

    def check(self, task: Task, manifest: TaskManifest) -> None:
        require_translation_packages()
        bad: list[str] = []
        for split in manifest.splits:
            path = manifest.root / f"{split}.jsonl"
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                value = row.get(task.target)
                if not isinstance(value, str) or not value.strip():
                    bad.append(f"{path}:{n} id={row.get('id')!r}: {task.target!r} is {value!r}")
        if bad:
            raise ManifestError(f"{manifest.root}: invalid manifest\n" + format_problems(
                f"rows whose {task.target!r} is not a sentence", bad))

    @staticmethod
    def train_texts(manifest: TaskManifest, field: str) -> list[str]:
        splits = sorted({fold.train for fold in manifest.folds})
        return [" ".join(str(u.targets[field]).split()) for s in splits for u in manifest.splits[s]]

    def setup(self, task: Task, manifest: TaskManifest, head: Seq2SeqHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None) -> TaskSetup:
        require_translation_packages()
        field = task.target
        vocab = CharVocab.train(self.train_texts(manifest, field))
        objective = TranslationObjective(vocab, head.beam, head.max_len_a, head.max_len_b, head.label_smoothing,
                                         head.max_target_positions, head.tokenize)

        def target_of(u: Any) -> str:
            return " ".join(str(u.targets[field]).split())

        return TaskSetup(objective, target_of, lambda: Seq2SeqHead(num_layers, hidden_size, len(vocab), head, layer))

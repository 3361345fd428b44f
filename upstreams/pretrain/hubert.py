"""HuBERT (Hsu et al. 2021), first iteration, trained small: masked prediction of k-means units of MFCC.

The encoder is a `transformers` `HubertModel` (CNN front end on the 16 kHz waveform, 20 ms frames,
a small post-LN transformer), saved with `save_pretrained`, so `hubert=DIR` loads it.

The objective, as the paper's first iteration:

* `prepare`: 13 MFCC + deltas + delta-deltas (the project's `mfcc` front end, `upstreams.filterbank`,
  without per-utterance CMVN so a crop's features equal the whole utterance's) of every training
  utterance; standardised per dimension with corpus statistics; k-means (K = 100, k-means++ seeding
  and Lloyd iterations, in torch, every random choice drawn from the run's generator). Centroids and
  statistics are buffers of the model (checkpointed with it, never trained).
* Rates: MFCC frames every 10 ms, the encoder's every 20 ms. Encoder frame t and MFCC frame 2t cover
  exactly the same 25 ms window (samples [320 t, 320 t + 400)), so the target of frame t is the unit
  of MFCC frame 2t: every other MFCC frame, aligned, no averaging.
* `loss`: spans of the projected CNN features are masked (each valid frame starts a span of 10 with
  probability 0.08, the paper's p and l, at least one span per utterance; drawn from the generator)
  and replaced by the model's `masked_spec_embed`; the transformer output goes through a projection
  and is scored against learned unit embeddings by cosine similarity / 0.1; cross-entropy on the
  masked frames only (the paper's alpha = 1).

Deviations for a few CPU minutes on the demo corpus: a tiny encoder (Base's layout: GroupNorm on the
first convolution only, post-LN transformer; narrow convolutions), no dropout or layerdrop, one
iteration only, K-means on at most 60 000 frames; the CNN runs per utterance when a batch is padded
(GroupNorm normalises over time), as the loader runs it; waveforms are normalised per utterance
(`do_normalize`, written to `preprocessor_config.json` so the loader does the same).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from upstreams.pretrain.base import PretrainFamily

#: Encoder sizes (transformers `HubertConfig` keywords); the conv stack is HuBERT's (20 ms, 400 samples).
ENCODER_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                 conv_dim=(32, 32, 64, 64, 64, 64, 64)),
    "small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                  conv_dim=(64, 64, 128, 128, 128, 128, 128)),
}
_COMMON = dict(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_bias=False,
               feat_extract_norm="group", do_stable_layer_norm=False, num_conv_pos_embeddings=16,
               num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
               feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.05,
               mask_feature_prob=0.0)
HOP = 320  # samples per encoder frame
FIELD = 400  # receptive field of the conv stack in samples


def encoder_config(size: str):
    """The `HubertConfig` of a size (`mask_time_prob` > 0 only so the model has `masked_spec_embed`)."""
    from transformers import HubertConfig

    if size not in ENCODER_SIZES:
        raise ValueError(f"unknown size {size!r} ({', '.join(ENCODER_SIZES)})")
    return HubertConfig(**{**_COMMON, **ENCODER_SIZES[size]})


def build_encoder(size: str) -> torch.nn.Module:
    from transformers import HubertModel

    return HubertModel(encoder_config(size))


def encoder_frames(wav_lengths: torch.Tensor) -> torch.Tensor:
    """Frames the encoder gives for `wav_lengths` samples (the loader's rule)."""
    return (torch.div(wav_lengths - FIELD, HOP, rounding_mode="floor") + 1).clamp_min(0)


def normalize_waveforms(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero the padding and layer-normalise each utterance over its valid samples (as `hubert=DIR` does)."""
    valid = torch.arange(wavs.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    out = wavs * valid
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = F.layer_norm(out[i, :n], (n,))
    return out


def corpus_frames(wavs: list[torch.Tensor], features, frames_of, batch_size: int = 32) -> torch.Tensor:
    """Every valid frame of the corpus, (N, D): `features(padded, lengths) -> (B, T, D)` on length-sorted
    batches (the feature functions here are padding-invariant), `frames_of(lengths)` valid frames per row."""
    order = sorted(range(len(wavs)), key=lambda i: wavs[i].numel())
    out = []
    for start in range(0, len(order), batch_size):
        chunk = [wavs[i] for i in order[start: start + batch_size]]
        lengths = torch.tensor([w.numel() for w in chunk])
        padded = torch.zeros(len(chunk), int(lengths.max()))
        for row, w in enumerate(chunk):
            padded[row, : w.numel()] = w
        feats = features(padded, lengths)
        out.extend(feats[row, : int(n)] for row, n in enumerate(frames_of(lengths).tolist()))
    return torch.cat(out)


def span_mask(frame_lengths: torch.Tensor, num_frames: int, prob: float, span: int, generator: torch.Generator,
              min_spans: int = 1) -> torch.Tensor:
    """(B, num_frames) bool: every valid frame that can start a whole span does so with probability `prob`
    (at least `min_spans` starts per utterance); each start masks `span` frames. Padding is never masked.
    All draws come from `generator` (unlike transformers' numpy-based `_compute_mask_indices`)."""
    mask = torch.zeros(len(frame_lengths), num_frames, dtype=torch.bool)
    for i, n in enumerate(frame_lengths.tolist()):
        if n <= 0:
            continue
        length = min(span, n)
        positions = n - length + 1
        starts = (torch.rand(positions, generator=generator) < prob).nonzero().flatten()
        if starts.numel() < min_spans:
            starts = torch.randperm(positions, generator=generator)[:min_spans]
        for s in starts.tolist():
            mask[i, s: s + length] = True
    return mask


def encode_masked(encoder: torch.nn.Module, wavs: torch.Tensor, lengths: torch.Tensor, mask_prob: float,
                  mask_span: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the HuBERT encoder with span masking: (last hidden (B, T, H), mask (B, T), valid frames (B, T))."""
    wavs = normalize_waveforms(wavs, lengths)
    frame_lengths = encoder_frames(lengths)
    num = int(frame_lengths.max())
    if getattr(encoder.config, "feat_extract_norm", "layer") == "group" and bool((lengths < lengths.max()).any()):
        # the first conv's GroupNorm normalises over time: each utterance alone, as the loader runs it
        features = torch.zeros(len(wavs), num, encoder.config.conv_dim[-1], dtype=wavs.dtype)
        for i, n in enumerate(lengths.tolist()):
            features[i, : int(frame_lengths[i])] = encoder.feature_extractor(wavs[i: i + 1, :n])[0].transpose(0, 1)
    else:
        features = encoder.feature_extractor(wavs).transpose(1, 2)
    valid = torch.arange(num).unsqueeze(0) < frame_lengths.unsqueeze(1)
    mask = span_mask(frame_lengths, num, mask_prob, mask_span, generator)
    hidden = encoder.feature_projection(features)
    if isinstance(hidden, tuple):
        hidden = hidden[0]
    hidden = torch.where(mask.unsqueeze(-1), encoder.masked_spec_embed.to(hidden.dtype), hidden)
    out = encoder.encoder(hidden, attention_mask=valid if not bool(valid.all()) else None)
    last = out[0] if isinstance(out, tuple) else out.last_hidden_state
    return last, mask, valid


def save_hubert_encoder(encoder: torch.nn.Module, out_dir: Path) -> Path:
    """Write `encoder` as a transformers HuBERT folder (no masking vector, masking off, waveform
    normalisation on in `preprocessor_config.json`)."""
    from transformers import Wav2Vec2FeatureExtractor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = copy.deepcopy(encoder).eval()
    if hasattr(clean, "masked_spec_embed"):
        del clean.masked_spec_embed
    clean.config.mask_time_prob = 0.0
    clean.config.mask_feature_prob = 0.0
    clean.save_pretrained(out)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out)
    return out


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy over the masked frames only, with accuracy and masked fraction to log."""
    picked, wanted = logits[mask], targets[mask]
    loss = F.cross_entropy(picked, wanted)
    with torch.no_grad():
        acc = float((picked.argmax(-1) == wanted).float().mean()) if wanted.numel() else math.nan
    return loss, {"acc": acc, "masked": float(mask.sum())}


# ------------------------------------------------------------------ k-means

def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 25
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding on (N, D) float points: (centroids (k, D), labels (N,)).

    An emptied cluster is re-seeded at the point farthest from its centroid. Deterministic given the generator.
    """
    x = x.float()
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: {n} points for {k} clusters")
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial(d2 / total, 1, generator=generator))
        centroids.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(1))
    c = torch.stack(centroids)
    labels = torch.cdist(x, c).argmin(1)
    for _ in range(iterations):
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        new = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1).float(), c)
        dist = torch.cdist(x, new)
        for empty in (counts == 0).nonzero().flatten().tolist():
            far = int(dist.min(1).values.argmax())
            new[empty] = x[far]
            dist = torch.cdist(x, new)
        new_labels = dist.argmin(1)
        c = new
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return c, labels


# ------------------------------------------------------------------ the family

class HubertPretrainModel(torch.nn.Module):
    """The encoder plus HuBERT's heads (projection, unit embeddings) and the k-means state (buffers)."""

    def __init__(self, size: str, num_units: int = 100, proj_dim: int = 64, mfcc_dim: int = 39) -> None:
        super().__init__()
        self.encoder = build_encoder(size)
        hidden = self.encoder.config.hidden_size
        self.final_proj = torch.nn.Linear(hidden, proj_dim)
        self.label_embs = torch.nn.Parameter(torch.randn(num_units, proj_dim))
        self.register_buffer("centroids", torch.zeros(num_units, mfcc_dim))
        self.register_buffer("feat_mean", torch.zeros(mfcc_dim))
        self.register_buffer("feat_std", torch.ones(mfcc_dim))
        self.register_buffer("prepared", torch.zeros((), dtype=torch.bool))
        from upstreams.filterbank import mfcc

        self.mfcc = mfcc(cmvn=False)  # no parameters, no persistent buffers

    @property
    def num_units(self) -> int:
        return int(self.centroids.shape[0])

    def raw_mfcc_frames(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """MFCC+deltas at the encoder's 20 ms rate: every other 10 ms frame, (B, ceil(M / 2), 39); row b's
        first `encoder_frames(lengths[b])` frames are its valid ones."""
        with torch.no_grad():
            feats, _ = self.mfcc._forward(wavs, lengths)
            return feats[0][:, ::2]

    def mfcc_frames(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`raw_mfcc_frames` standardised with the corpus statistics."""
        return (self.raw_mfcc_frames(wavs, lengths) - self.feat_mean) / self.feat_std

    def units(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Nearest centroid of each 20 ms frame: (B, T) with T = encoder frames of the longest row."""
        if not bool(self.prepared):
            raise RuntimeError("hubert: no k-means units yet; call prepare() first")
        feats = self.mfcc_frames(wavs, lengths)
        t = int(encoder_frames(lengths).max())
        feats = feats[:, :t]
        dist = torch.cdist(feats.reshape(-1, feats.shape[-1]), self.centroids)
        return dist.argmin(1).view(feats.shape[0], t)


class HubertEncoderFamily(PretrainFamily):
    """A family whose trained part is `model.encoder`, a transformers HubertModel saved as a HuBERT folder."""

    loader = "hubert"

    def save_upstream(self, model: torch.nn.Module, out_dir: Path) -> Path:
        return save_hubert_encoder(model.encoder, out_dir)

    def encoder(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.encoder


class HubertFamily(HubertEncoderFamily):
    name = "hubert"
    kind = "predictive"
    description = "masked prediction of k-means units of MFCC (HuBERT, first iteration)"
    default_lr = 1e-3
    default_steps = 800
    num_units = 100
    mask_prob = 0.08
    mask_span = 10
    temperature = 0.1
    kmeans_iterations = 25
    max_kmeans_frames = 60000

    def build(self, size: str) -> torch.nn.Module:
        return HubertPretrainModel(size, num_units=self.num_units)

    def prepare(self, model: torch.nn.Module, wavs: list[torch.Tensor], generator: torch.Generator) -> None:
        x = corpus_frames(wavs, model.raw_mfcc_frames, encoder_frames)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
        x = (x - mean) / std
        if x.shape[0] > self.max_kmeans_frames:
            x = x[torch.randperm(x.shape[0], generator=generator)[: self.max_kmeans_frames]]
        centroids, _ = kmeans(x, model.num_units, generator, self.kmeans_iterations)
        with torch.no_grad():
            model.feat_mean.copy_(mean)
            model.feat_std.copy_(std)
            model.centroids.copy_(centroids)
            model.prepared.fill_(True)

    def loss(self, model: torch.nn.Module, wavs: torch.Tensor, lengths: torch.Tensor,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        targets = model.units(wavs, lengths)
        hidden, mask, _ = encode_masked(model.encoder, wavs, lengths, self.mask_prob, self.mask_span, generator)
        proj = F.normalize(model.final_proj(hidden), dim=-1)
        logits = proj @ F.normalize(model.label_embs, dim=-1).t() / self.temperature
        return masked_cross_entropy(logits, targets, mask)


FAMILY = HubertFamily()

"""Task metrics, all in percent (the unit of the SUPERB paper).

WER and PER are corpus-level: total edits over total reference tokens (not a mean
of per-utterance rates), as jiwer and s3prl compute them. PER is WER over
space-separated phone tokens. CER is the same ratio over characters (s3prl's `ctc/metric.py` `cer`:
the edit distance between the transcripts as strings, a space counting as a character).
EER (speaker verification) is the point of the ROC
curve where the false-acceptance and false-rejection rates are equal, interpolated
linearly between ROC points as s3prl's `sv_voxceleb1/utils.EER` does.
"""

from __future__ import annotations

from typing import Sequence

import jiwer
import numpy as np


def accuracy(references: Sequence[int | str], predictions: Sequence[int | str]) -> float:
    """Classification accuracy in percent."""
    if len(references) != len(predictions) or not references:
        raise ValueError(f"accuracy needs equal, non-empty lists (got {len(references)} and {len(predictions)})")
    correct = sum(r == p for r, p in zip(references, predictions))  # no scikit-learn for one ratio
    return 100.0 * correct / len(references)


def balanced_accuracy(references: Sequence[int | str], predictions: Sequence[int | str]) -> float:
    """Mean over the classes present in `references` of each class's recall, in percent.

    s3prl scores KS dev on a WeightedRandomSampler resample of dev with weights 1/count(class),
    so every class is drawn equally often; the expected accuracy of that resample is exactly this
    mean of per-class recalls, which superbench computes without the sampling noise.
    """
    if len(references) != len(predictions) or not references:
        raise ValueError(f"balanced accuracy needs equal, non-empty lists (got {len(references)} and "
                         f"{len(predictions)})")
    totals: dict[int | str, int] = {}
    hits: dict[int | str, int] = {}
    for r, p in zip(references, predictions):
        totals[r] = totals.get(r, 0) + 1
        hits[r] = hits.get(r, 0) + (r == p)
    return 100.0 * sum(hits[c] / totals[c] for c in totals) / len(totals)


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"error rate needs equal, non-empty lists (got {len(references)} and {len(hypotheses)})")
    empty = [i for i, r in enumerate(references) if not r.split()]
    if empty:
        raise ValueError(f"empty reference transcript(s) at index {empty[:5]}: an error rate is undefined")


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate in percent (jiwer); empty hypotheses count as deletions."""
    _check_pairs(references, hypotheses)
    return 100.0 * float(jiwer.wer(list(references), [h if h.strip() else "" for h in hypotheses]))


def per(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus phone error rate in percent: WER over space-separated phone tokens."""
    return wer(references, hypotheses)


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus character error rate in percent: character edits over reference characters, whitespace
    runs collapsed to one space (a character, as in s3prl's `cer`); empty hypotheses count as deletions."""
    from rapidfuzz.distance import Levenshtein

    _check_pairs(references, hypotheses)
    refs = [" ".join(r.split()) for r in references]
    errors = sum(Levenshtein.distance(r, " ".join(h.split())) for r, h in zip(refs, hypotheses))
    return 100.0 * errors / sum(len(r) for r in refs)


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between token sequences (an independent check of jiwer in tests)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def _roc(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false-acceptance rates, true-acceptance rates) at every distinct threshold, from accepting nothing
    to accepting everything (sklearn's `roc_curve` points, without dropping collinear ones)."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.shape != s.shape or not y.size:
        raise ValueError(f"verification metrics need equal, non-empty 1-D lists (got {y.shape} and {s.shape})")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"trial labels must be 0 or 1, got {sorted(set(y.tolist()) - {0, 1})[:5]}")
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} trial score(s) are not finite")
    positives, negatives = int(y.sum()), int(y.size - y.sum())
    if not positives or not negatives:
        raise ValueError(f"verification metrics need target (1) and non-target (0) trials, got {positives} "
                         f"target(s) and {negatives} non-target(s)")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each run of tied scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives]


def equal_error_rate(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Equal error rate in percent: where FAR (false acceptances) equals FRR (false rejections).

    Trials are `labels` (1 target, 0 non-target) with `scores` (higher = same speaker). The ROC
    curve (FAR, 1 - FRR) is taken as the polyline through its points, and the EER is the FAR where
    it crosses FAR = FRR: s3prl's `EER` (sklearn `roc_curve`, `interp1d`, `brentq` on
    1 - x - tpr(x)) finds the same point. Ties between a target and a non-target score give a
    diagonal segment, so they count half as errors.
    """
    fpr, tpr = _roc(labels, scores)
    gap = 1.0 - fpr - tpr  # FRR - FAR: 1 at the first point, -1 at the last
    k = int(np.flatnonzero(gap <= 0)[0])  # first point on or past the crossing (k >= 1)
    t = gap[k - 1] / (gap[k - 1] - gap[k])  # where the segment (k-1, k) meets FAR = FRR
    return 100.0 * float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def minimum_dcf(labels: Sequence[int], scores: Sequence[float], p_target: float = 0.01, c_miss: float = 1.0,
                c_fa: float = 1.0) -> float:
    """Minimum normalised detection cost over thresholds (NIST SRE / VoxSRC: p_target 0.01, unit costs).

    DCF = c_miss p_target P_miss + c_fa (1 - p_target) P_fa, divided by the cost of the best trivial
    system, min(c_miss p_target, c_fa (1 - p_target)). Not a percent: 1.0 is no better than always
    accepting or always rejecting.
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be in (0, 1), got {p_target!r}")
    fpr, tpr = _roc(labels, scores)
    dcf = c_miss * p_target * (1.0 - tpr) + c_fa * (1.0 - p_target) * fpr
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


METRICS = {"acc": accuracy, "wer": wer, "per": per, "cer": cer}

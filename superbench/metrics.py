"""Task metrics, all in percent (the unit of the SUPERB paper).

WER and PER are corpus-level: total edits over total reference tokens (not a mean
of per-utterance rates), as jiwer and s3prl compute them. PER is WER over
space-separated phone tokens.
"""

from __future__ import annotations

from typing import Sequence

import jiwer


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


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between token sequences (an independent check of jiwer in tests)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


METRICS = {"acc": accuracy, "wer": wer, "per": per}

"""QbE (query-by-example spoken term detection), SUPERB's QUESST 2014 task: DTW over one layer, no training.

What s3prl's `downstream/quesst14_dtw` (commit ec8064b) does, reproduced without its dependencies (dtw-python,
scipy, lxml, the official Java scorer):

* features of ONE layer; each split's queries and the documents are normalised per dimension with the
  mean and standard deviation of all their frames (`feature_normalization: True`);
* local distance `cosine_exp`: exp(cosine distance) - 1, cosine distance = 1 - cos(q, d) (scipy's "cosine");
  each row of the query x document distance matrix is min-max normalised over the document frames
  (`minmax_norm: True`);
* subsequence DTW with dtw-python's `asymmetric` step pattern, open begin and open end: every query frame
  is used exactly once, the document index advances by 0, 1 or 2 per query frame, the path may start and
  end at any document frame; the cost is dtw-python's `normalizedDistance`, the accumulated distance over
  the query length N (the pattern's normalisation "N"). The detection score is -cost;
* queries shorter than 5 frames score 0 against every document;
* every query's scores are standardised over the documents (z-norm, population std clipped at 1e-9).

Every layer is scored on dev and the best layer (the first of equal ones) is applied to test, as SUPERB
does; `--layer K` scores layer K only. Nothing is trained: the kind's `TaskSetup.fit` replaces gradient
training, and returns a `TrainResult` whose `history` is [(layer, dev MTWV)], `best_step` the chosen layer
and `layer_weights` its one-hot.

The metric is MTWV, the maximum over decision thresholds of the term-weighted value (NIST STD 2006, as
QUESST 2014's scorer `score-TWV-Cnxe.sh` computes it with P_target 0.0008, C_fa 1, C_miss 100), in percent:

    TWV(theta) = 1 - mean_t [ P_miss(t, theta) + beta * P_fa(t, theta) ],  beta = C_fa/C_miss * (1/P_target - 1)
    P_miss(t) = 1 - hits_t / N_true(t),    P_fa(t) = false_alarms_t / (N_documents - N_true(t))

averaged over the terms with at least one true occurrence. QUESST 2014 detects per file (no time
alignment): a trial is a (query, document) pair, a detection is "YES" when its score is >= theta. The
"no detection" operating point (theta above every score, TWV 0) is included, so MTWV >= 0 (chance is 0).

Ground truth: one sidecar per query split (`groundtruth_<split>.txt`, in the manifest fingerprint), lines

    hit <term> <document id>       the term occurs in that document of the manifest
    missed <term> <count>          occurrences in documents outside the manifest (scored as misses)
    documents <N>                  documents a term is tried against (default: the manifest's documents)
    unscored_terms <K>             terms with occurrences whose queries are not in the manifest (TWV 0 each)

`documents` and `unscored_terms` let the English subset of QUESST 2014 be scored as SUPERB scores it: the
official scorer runs over the whole (multilingual) ground truth, the unreported trials taking the default
score -10, so non-English terms count with TWV 0 and false alarms are normalised by all 12,492 documents.

Manifest layout: the fold's train split holds the documents (rows `role: doc`), its dev and test splits the
queries (rows `role: query`, `term: <term id>`, unique within the split): Fold("default", "docs", "dev",
"test"), as QUESST's dev and eval queries search one document collection.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from superbench.downstream import FeatureSource, Head, Objective
from superbench.io import atomic_write_text
from superbench.manifest import ManifestError, TaskManifest, Utterance
from superbench.recipe import TrainConfig
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.training import TrainResult
from superbench.uncertainty import UnitScores

log = logging.getLogger(__name__)

#: QUESST 2014's TWV parameters (scoring/score-TWV-Cnxe.sh): prior of a target trial and the two costs.
P_TARGET = 0.0008
C_FA = 1.0
C_MISS = 100.0
#: beta = C_fa / C_miss * (1 / P_target - 1) = 0.01 * 1249 = 12.49.
BETA = C_FA / C_MISS * (1.0 / P_TARGET - 1.0)
#: Local distances offered (s3prl's dtwrc.dist_method); s3prl's default and SUPERB's is cosine_exp.
DIST_METHODS = ("cosine_exp", "cosine", "cosine_neg_log", "euclidean", "cityblock")
#: Roles of manifest rows.
ROLES = ("doc", "query")
#: Documents matched against a query at once (padded to the longest of the batch; sorted by length).
DOC_BATCH = 64


def groundtruth_file(split: str) -> str:
    """The sidecar holding a query split's ground truth."""
    return f"groundtruth_{split}.txt"


@dataclass(frozen=True)
class QbEHeadConfig:
    """The recipe's `head` section: s3prl's quesst14_dtw settings (nothing here is trained)."""

    dist_method: str = "cosine_exp"
    minmax_norm: bool = True  # min-max normalise each query frame's row of the distance matrix
    feature_normalization: bool = True  # per-dimension mean/std over the split's queries and documents
    min_query_frames: int = 5  # shorter queries score 0 against every document

    def __post_init__(self) -> None:
        if self.dist_method not in DIST_METHODS:
            raise ValueError(f"dist_method must be one of {', '.join(DIST_METHODS)}, got {self.dist_method!r}")
        if self.feature_normalization and self.dist_method == "cosine_neg_log":
            raise ValueError("cosine_neg_log cannot be used with feature_normalization (as s3prl refuses it): "
                             "normalised features have negative cosines, whose log is undefined")
        if isinstance(self.min_query_frames, bool) or not isinstance(self.min_query_frames, int) \
                or self.min_query_frames < 1:
            raise ValueError(f"min_query_frames must be a positive integer, got {self.min_query_frames!r}")


# --------------------------------------------------------------------------- DTW

COSINES = ("cosine", "cosine_exp", "cosine_neg_log")


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Frames scaled to unit length (a zero frame stays zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def distance_matrices(query: torch.Tensor, docs: torch.Tensor, method: str, docs_unit: bool = False) -> torch.Tensor:
    """(N, D) query against (B, M, D) padded documents -> (B, N, M) local distances (float64);
    `docs_unit`: the documents' frames are already unit length (cosine methods)."""
    q = query.to(torch.float64)
    d = docs.to(torch.float64)
    if method in COSINES:
        qn = unit_rows(q)
        dn = d if docs_unit else unit_rows(d)
        dist = 1.0 - torch.einsum("nd,bmd->bnm", qn, dn)
        if method == "cosine_exp":
            return torch.exp(dist) - 1.0
        if method == "cosine_neg_log":
            return -torch.log(1.0 - dist)
        return dist
    p = 2.0 if method == "euclidean" else 1.0
    return torch.cdist(q.unsqueeze(0).expand(d.shape[0], -1, -1), d, p=p)


def minmax_rows(dist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row (query frame) scaled to [0, 1] over the document's valid frames (range clipped at 1e-9)."""
    valid = torch.arange(dist.shape[-1], device=dist.device)[None, None, :] < lengths[:, None, None]
    lo = torch.where(valid, dist, torch.full_like(dist, math.inf)).amin(-1, keepdim=True)
    hi = torch.where(valid, dist, torch.full_like(dist, -math.inf)).amax(-1, keepdim=True)
    return (dist - lo) / (hi - lo).clamp_min(1e-9)


def subsequence_dtw(dist: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Open-begin, open-end DTW with dtw-python's `asymmetric` step pattern over (B, N, M) local distances.

    g(0, j) = d(0, j) (open begin); g(i, j) = d(i, j) + min(g(i-1, j), g(i-1, j-1), g(i-1, j-2)); the cost is
    min_j g(N-1, j) / N (open end, normalisation "N": dtw-python's normalizedDistance). Columns at or past a
    document's length (padding) are never on a path. Returns (cost (B,), end frame (B,)).
    """
    if dist.dim() == 2:
        dist = dist.unsqueeze(0)
    b, n, m = dist.shape
    if lengths is not None:
        pad = torch.arange(m, device=dist.device)[None, None, :] >= lengths[:, None, None]
        dist = dist.masked_fill(pad, math.inf)
    inf = torch.full((b, 2), math.inf, dtype=dist.dtype, device=dist.device)
    g = dist[:, 0]
    for i in range(1, n):
        prev = torch.cat([inf, g], dim=1)  # prev[:, j + 2] = g(i-1, j)
        g = dist[:, i] + torch.minimum(torch.minimum(prev[:, 2:], prev[:, 1:-1]), prev[:, :-2])
    cost, end = g.min(dim=1)
    return cost / n, end


class DocumentBank:
    """The documents of a split, sorted by length and padded into batches once, matched against each query."""

    def __init__(self, docs: Sequence[torch.Tensor], cfg: QbEHeadConfig, device: torch.device | str = "cpu") -> None:
        self.cfg, self.device, self.count = cfg, torch.device(device), len(docs)
        order = sorted(range(len(docs)), key=lambda k: docs[k].shape[0])
        self.batches: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []
        for s in range(0, len(order), DOC_BATCH):
            idx = order[s:s + DOC_BATCH]
            lengths = torch.tensor([docs[k].shape[0] for k in idx], device=self.device)
            padded = torch.nn.utils.rnn.pad_sequence([docs[k] for k in idx], batch_first=True)
            padded = padded.to(self.device, torch.float64)
            self.batches.append((idx, lengths, unit_rows(padded) if cfg.dist_method in COSINES else padded))

    def match(self, query: torch.Tensor) -> np.ndarray:
        """-cost of `query` (N, D) against every document, in the order the documents were given (float64)."""
        out = np.zeros(self.count, dtype=np.float64)
        q = query.to(self.device, torch.float64)
        for idx, lengths, padded in self.batches:
            dist = distance_matrices(q, padded, self.cfg.dist_method, docs_unit=True)
            if self.cfg.minmax_norm:
                dist = minmax_rows(dist, lengths)
            cost, _ = subsequence_dtw(dist, lengths)
            out[idx] = -cost.cpu().numpy()
        return out


def match(query: torch.Tensor, docs: Sequence[torch.Tensor], cfg: QbEHeadConfig,
          device: torch.device | str = "cpu") -> np.ndarray:
    """-cost of `query` (N, D) against every document (M_k, D), in the order given (float64)."""
    return DocumentBank(docs, cfg, device).match(query)


def standardise(scores: np.ndarray) -> np.ndarray:
    """s3prl's per-query score normalisation: (s - mean) / max(std, 1e-9), population std."""
    return (scores - scores.mean()) / max(float(scores.std()), 1e-9)


# --------------------------------------------------------------------------- ground truth and MTWV

@dataclass
class GroundTruth:
    """Which documents each term of a query split occurs in (see the module docstring for the file)."""

    terms: list[str]  # the split's query terms (in manifest order)
    hits: dict[str, set[str]] = field(default_factory=dict)  # term -> documents of the manifest holding it
    missed: dict[str, int] = field(default_factory=dict)  # term -> occurrences outside the manifest
    documents: int = 0  # trials per term
    unscored_terms: int = 0

    def true_count(self, term: str) -> int:
        return len(self.hits.get(term, ())) + self.missed.get(term, 0)

    @property
    def scored_terms(self) -> int:
        """Terms the TWV averages over: the split's terms that occur at least once, plus unscored_terms."""
        return sum(1 for t in self.terms if self.true_count(t) > 0) + self.unscored_terms


def read_groundtruth(path: Path, terms: Sequence[str], docs: Sequence[str]) -> GroundTruth:
    """Parse a ground-truth sidecar against the split's query `terms` and the manifest's `docs`;
    ManifestError naming path:line for any line that is malformed or names an unknown term or document."""
    known_terms, known_docs = set(terms), set(docs)
    truth = GroundTruth(terms=list(terms), documents=len(known_docs))
    problems: list[str] = []
    if not path.is_file():
        raise ManifestError(f"{path}: QbE ground truth missing")
    seen_documents = False
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{path}:{n}"
        kind = parts[0]
        if kind == "hit" and len(parts) == 3:
            term, doc = parts[1], parts[2]
            if term not in known_terms:
                problems.append(f"{where}: term {term!r} is not the term of any query of this split")
            elif doc not in known_docs:
                problems.append(f"{where}: document {doc!r} is not a document of the manifest")
            else:
                truth.hits.setdefault(term, set()).add(doc)
        elif kind == "missed" and len(parts) == 3 and parts[2].isdigit():
            if parts[1] not in known_terms:
                problems.append(f"{where}: term {parts[1]!r} is not the term of any query of this split")
            else:
                truth.missed[parts[1]] = truth.missed.get(parts[1], 0) + int(parts[2])
        elif kind in ("documents", "unscored_terms") and len(parts) == 2 and parts[1].isdigit():
            if kind == "documents":
                truth.documents, seen_documents = int(parts[1]), True
            else:
                truth.unscored_terms = int(parts[1])
        else:
            problems.append(f"{where}: expected 'hit <term> <doc>', 'missed <term> <count>', 'documents <N>' or "
                            f"'unscored_terms <K>', got {raw.strip()!r}")
    if seen_documents and truth.documents < len(known_docs):
        problems.append(f"{path}: documents {truth.documents} is fewer than the manifest's {len(known_docs)}")
    if not problems and truth.scored_terms == 0:
        problems.append(f"{path}: no term of this split occurs in any document (MTWV is undefined)")
    for term in truth.terms:
        if not problems and truth.true_count(term) >= truth.documents:
            problems.append(f"{path}: term {term!r} occurs in all {truth.documents} documents (no non-target "
                            f"trial: its false-alarm rate is undefined)")
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ManifestError(f"{len(problems)} problem(s) in QbE ground truth:\n  {shown}{more}")
    return truth


def max_twv(scores: Mapping[str, Mapping[str, float]], truth: GroundTruth,
            beta: float = BETA) -> tuple[float, float]:
    """(MTWV as a fraction, its threshold) of detection `scores` {term: {doc: score}} against `truth`.

    TWV(theta) is a sum over the detections with score >= theta: a hit of term t adds 1 / N_true(t), a false
    alarm subtracts beta / (N_documents - N_true(t)), all over the number of scored terms; terms that never
    occur add nothing (and are not averaged over). Thresholds are swept over the distinct scores (ties are
    decided together) and +inf (no detection, TWV 0).
    """
    total = truth.scored_terms
    if total <= 0:
        raise ValueError("MTWV is undefined: no term of the split occurs in any document")
    weights, values = [], []
    for term, by_doc in scores.items():
        n_true = truth.true_count(term)
        if n_true == 0:
            continue
        hit_w, fa_w = 1.0 / n_true, -beta / (truth.documents - n_true)
        hits = truth.hits.get(term, set())
        for doc, value in by_doc.items():
            weights.append(hit_w if doc in hits else fa_w)
            values.append(float(value))
    if not values:
        return 0.0, math.inf
    s = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, w = s[order], w[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of tied scores
    twv = np.cumsum(w)[last] / total
    k = int(np.argmax(twv))
    if twv[k] <= 0.0:
        return 0.0, math.inf
    return float(twv[k]), float(s[last[k]])


def mtwv(scores: Mapping[str, Mapping[str, float]], truth: GroundTruth, beta: float = BETA) -> float:
    """MTWV in percent (the project's unit): 100 x the maximum term-weighted value."""
    return 100.0 * max_twv(scores, truth, beta)[0]


# --------------------------------------------------------------------------- objective, fit and kind

class QbEObjective(Objective):
    """MTWV of a query split's predictions ({doc: score} per query); nothing to train, so no loss."""

    metric = "mtwv"
    higher_is_better = True

    def __init__(self, truths: Mapping[str, GroundTruth]) -> None:
        self.truths = dict(truths)

    def truth_for(self, terms: Sequence[str]) -> GroundTruth:
        """The ground truth of the split whose query terms are `terms`."""
        wanted = list(terms)
        for truth in self.truths.values():
            if truth.terms == wanted:
                return truth
        raise ValueError(f"no QbE ground truth for a split with these {len(wanted)} query terms")

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        raise NotImplementedError("QbE trains nothing (DTW); its TaskSetup.fit scores the layers")

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        raise NotImplementedError("QbE trains nothing (DTW); its TaskSetup.fit scores the layers")

    def score(self, targets: list, predictions: list) -> float:
        truth = self.truth_for(targets)
        return mtwv(dict(zip(targets, predictions)), truth)

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Per scored query term its detections (score, TWV weight); the MTWV is resampled over terms (the
        truth's `unscored_terms` are terms without detections, drawn like the others)."""
        return {self.metric: twv_units(dict(zip(targets, predictions)), self.truth_for(targets))}


def twv_units(scores: Mapping[str, Mapping[str, float]], truth: GroundTruth, beta: float = BETA) -> UnitScores:
    """`max_twv`'s detections grouped by term, as per-unit scores whose value is the MTWV in percent."""
    terms = [t for t in scores if truth.true_count(t) > 0]
    values, weights, owner = [], [], []
    for k, term in enumerate(terms):
        n_true = truth.true_count(term)
        hit_w, fa_w = 1.0 / n_true, -beta / (truth.documents - n_true)
        hits = truth.hits.get(term, set())
        for doc, value in scores[term].items():
            values.append(float(value))
            weights.append(hit_w if doc in hits else fa_w)
            owner.append(k)
    ids = terms + [f"unscored term {i}" for i in range(truth.scored_terms - len(terms))]
    return UnitScores.build("twv", "query", ids, {"score": values, "weight": weights}, owner=owner)


class _NoHead(Head):
    """What `make_head` builds for QbE: nothing (DTW has no parameters)."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        raise NotImplementedError("QbE has no head")


def _frames(source: FeatureSource, ids: Sequence[str], layer: int, batch: int) -> list[torch.Tensor]:
    """One layer's frames of every utterance, unpadded, float32 on the CPU."""
    out: list[torch.Tensor] = []
    for s in range(0, len(ids), batch):
        x, lengths = source.batch(list(ids[s:s + batch]))
        picked = x[layer]
        for i, n in enumerate(lengths.tolist()):
            out.append(picked[i, :int(n)].to(torch.float32).clone())
    return out


@dataclass
class QbEFit:
    """`TaskSetup.fit` for QbE: every layer (or the probed one) scored on dev, the best applied to test."""

    head: QbEHeadConfig
    num_layers: int
    layer: int | None  # None: sweep all layers on dev
    truths: dict[str, GroundTruth]  # by role: "dev", "test"

    def layers(self) -> list[int]:
        return list(range(self.num_layers)) if self.layer is None else [self.layer]

    def split_scores(self, source: FeatureSource, docs: Sequence[str], queries: Sequence[str], layer: int,
                     batch: int, device: torch.device | str, docs_frames: list[torch.Tensor] | None = None
                     ) -> list[dict[str, float]]:
        """{doc: standardised score} per query of one split at `layer` (scores rounded to 1e-6)."""
        doc_x = docs_frames if docs_frames is not None else _frames(source, docs, layer, batch)
        query_x = _frames(source, queries, layer, batch)
        if self.head.feature_normalization:
            every = torch.cat(query_x + doc_x).to(torch.float64)
            mean, std = every.mean(0), every.std(0).clamp_min(1e-9)
            every = (every - mean) / std
            sizes = [x.shape[0] for x in query_x + doc_x]
            parts = list(torch.split(every, sizes))
            query_x, doc_x = parts[:len(query_x)], parts[len(query_x):]
        bank = DocumentBank(doc_x, self.head, device)
        out = []
        for q in query_x:
            if q.shape[0] < self.head.min_query_frames:
                raw = np.zeros(len(doc_x))
            else:
                raw = bank.match(q)
            z = standardise(raw)
            out.append({doc: round(float(v), 6) for doc, v in zip(docs, z)})
        return out

    def __call__(self, make_head: Callable[[], torch.nn.Module], objective: QbEObjective, source: FeatureSource,
                 train: tuple[Sequence[str], Sequence], dev: tuple[Sequence[str], Sequence],
                 test: tuple[Sequence[str], Sequence], cfg: TrainConfig, *, progress: bool = True,
                 desc: str = "qbe", checkpoint: Path | None = None, checkpoint_key: str = "",
                 lengths: Sequence[int] | None = None, device: torch.device | str = "cpu") -> TrainResult:
        start = time.perf_counter()
        docs = list(train[0])
        dev_ids, dev_terms = list(dev[0]), list(dev[1])
        test_ids, test_terms = list(test[0]), list(test[1])
        history, spent = self._resume(checkpoint, checkpoint_key)
        best: tuple[int, float, list] | None = None  # (layer, dev MTWV, dev predictions) of the best so far
        for layer, value in history:
            if best is None or value > best[1]:
                best = (layer, value, [])
        todo = [layer for layer in self.layers() if layer not in {h[0] for h in history}]
        bar = tqdm(todo, desc=f"{desc} DTW", unit="layer", disable=None if progress else True, leave=False)
        for layer in bar:
            predictions = self.split_scores(source, docs, dev_ids, layer, cfg.eval_batch_size, device)
            value = mtwv(dict(zip(dev_terms, predictions)), self.truths["dev"])
            history.append((layer, value))
            log.debug("%s layer %d: dev MTWV %.4f", desc, layer, value)
            if best is None or value > best[1]:
                best = (layer, value, predictions)
            if checkpoint is not None:
                atomic_write_text(checkpoint, json.dumps({"key": checkpoint_key, "history": history,
                                                          "seconds": spent + time.perf_counter() - start}) + "\n")
        bar.close()
        assert best is not None
        layer, dev_value, dev_predictions = best
        if not dev_predictions:  # chosen before a resume: score it again (deterministic)
            dev_predictions = self.split_scores(source, docs, dev_ids, layer, cfg.eval_batch_size, device)
        test_predictions = self.split_scores(source, docs, test_ids, layer, cfg.eval_batch_size, device)
        test_value = mtwv(dict(zip(test_terms, test_predictions)), self.truths["test"])
        return TrainResult(dev=dev_value, test=test_value, best_step=layer, steps=cfg.steps, lr=cfg.lr,
                           layer_weights=[1.0 if k == layer else 0.0 for k in range(self.num_layers)],
                           seconds=spent + time.perf_counter() - start, history=list(history),
                           head_state={"layer": torch.tensor(layer)},
                           predictions={"dev": dev_predictions, "test": test_predictions})

    def _resume(self, checkpoint: Path | None, key: str) -> tuple[list[tuple[int, float]], float]:
        """Layers already scored on dev before an interruption (same trial key), else nothing."""
        if checkpoint is None or not Path(checkpoint).is_file():
            return [], 0.0
        try:
            saved = json.loads(Path(checkpoint).read_text(encoding="utf-8"))
            if saved.get("key") != key:
                return [], 0.0
            history = [(int(layer), float(value)) for layer, value in saved["history"]]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable QbE checkpoint %s", checkpoint)
            return [], 0.0
        wanted = set(self.layers())
        return [h for h in history if h[0] in wanted], float(saved.get("seconds", 0.0))


def _row_lines(manifest: TaskManifest, split: str) -> dict[str, int]:
    """id -> line number in `<split>.jsonl` (for messages naming file and line)."""
    path = Path(manifest.root) / f"{split}.jsonl"
    out: dict[str, int] = {}
    try:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.setdefault(str(json.loads(line).get("id")), n)
                except (ValueError, AttributeError):
                    continue
    except OSError:
        pass
    return out


class QbEDetection(TaskKind):
    """Task kind: query-by-example detection scored by DTW on one layer, MTWV; see the module docstring."""

    level = "frame"
    head_config = QbEHeadConfig

    def check(self, task: Task, manifest: TaskManifest) -> None:
        self.truths(manifest)

    def truths(self, manifest: TaskManifest) -> dict[str, GroundTruth]:
        """Check the manifest (roles, terms, ground-truth sidecars) and return the dev/test ground truths."""
        root = Path(manifest.root)
        if len(manifest.folds) != 1:
            raise ManifestError(f"{root}/meta.json: QbE has one fold (documents, dev queries, test queries), got "
                                f"{len(manifest.folds)}")
        fold = manifest.folds[0]
        if fold.train in (fold.dev, fold.test) or fold.dev == fold.test:
            raise ManifestError(f"{root}/meta.json: QbE's fold names three splits, documents (train), dev queries "
                                f"and test queries, got train={fold.train!r} dev={fold.dev!r} test={fold.test!r}")
        bad: list[str] = []

        def rows(split: str, role: str) -> list[Utterance]:
            lines = None
            out = []
            for u in manifest.splits[split]:
                where_role = u.targets.get("role")
                term = u.targets.get("term")
                problem = None
                if where_role != role:
                    what = "documents" if role == "doc" else "queries"
                    problem = f"role {where_role!r}, expected {role!r} (the fold's {what})"
                elif role == "query" and (not isinstance(term, str) or not term.strip() or len(term.split()) != 1):
                    problem = f"query without a term id (a non-empty token in 'term'), got {term!r}"
                if problem:
                    lines = lines or _row_lines(manifest, split)
                    bad.append(f"{root}/{split}.jsonl:{lines.get(u.id, '?')} (id {u.id!r}): {problem}")
                else:
                    out.append(u)
            if not out:
                what = "documents" if role == "doc" else "queries"
                bad.append(f"{root}/{split}.jsonl: no {what} (rows with role {role!r})")
            return out

        docs = rows(fold.train, "doc")
        queries = {role: rows(split, "query") for role, split in (("dev", fold.dev), ("test", fold.test))}
        for role, split in (("dev", fold.dev), ("test", fold.test)):
            seen: dict[str, str] = {}
            for u in queries[role]:
                if u.targets["term"] in seen:
                    bad.append(f"{root}/{split}.jsonl (id {u.id!r}): term {u.targets['term']!r} is also the term of "
                               f"query {seen[u.targets['term']]!r} (one query per term)")
                seen.setdefault(u.targets["term"], u.id)
        missing = [groundtruth_file(s) for s in (fold.dev, fold.test) if groundtruth_file(s) not in manifest.sidecars]
        if missing:
            bad.append(f"{root}/meta.json: ground truth {', '.join(missing)} not among its sidecars "
                       f"(write_task_manifest(..., sidecars=[...])), so it would not be part of the run identity")
        if bad:
            raise ManifestError(f"{root}: invalid QbE manifest:\n  " + "\n  ".join(bad[:10])
                                + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""))
        doc_ids = [u.id for u in docs]
        return {role: read_groundtruth(root / groundtruth_file(split), [u.targets["term"] for u in queries[role]],
                                       doc_ids)
                for role, split in (("dev", fold.dev), ("test", fold.test))}

    def setup(self, task: Task, manifest: TaskManifest, head: QbEHeadConfig, num_layers: int, hidden_size: int,
              layer: int | str | None) -> TaskSetup:
        truths = self.truths(manifest)
        if layer == "last":
            layer = num_layers - 1
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)
                                  or not 0 <= layer < num_layers):
            raise ValueError(f"QbE probes a layer index in 0..{num_layers - 1} or 'last', got {layer!r}")
        objective = QbEObjective(truths)

        def target_of(u: Utterance) -> Any:
            return u.targets.get("term") if u.targets.get("role") == "query" else None

        return TaskSetup(objective=objective, target_of=target_of, make_head=_NoHead,
                         fit=QbEFit(head=head, num_layers=num_layers, layer=layer, truths=truths))

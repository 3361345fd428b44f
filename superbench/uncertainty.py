"""How sure a score is: per-unit scores, bootstrap intervals and paired significance tests.

A test metric is computed from *units*: utterances for accuracy and F1, utterances with their
summed edit counts for PER/WER/CER, trial pairs for EER, query terms for MTWV, recordings for DER.
What a unit holds, and how the metric follows from a weighted set of units, is the metric's
*statistic* (`STATISTICS`), declared by the task kind's objective (`Objective.unit_scores`), so
every task of a kind, plugins included, gets intervals without code of its own:

- `proportion`: column `correct` (0/1); 100 x the weighted mean (accuracy);
- `mean`: column `value` (percent); the weighted mean (SF's per-utterance slot-type F1);
- `ratio`: columns `errors`, `total`; 100 x sum(errors) / sum(total) (corpus PER/WER/CER: counts are
  summed over the drawn units, never rates averaged);
- `min_ratio`: column `total` and one `errors:<setting>` column per decoding setting; the lowest
  ratio over the settings (SUPERB's DER: the best threshold/median setting, recomputed per draw);
- `eer`: columns `label` (1 target, 0 non-target), `score`; the equal error rate of the drawn trials;
- `bleu`: columns `hyp_len`, `ref_len`, `correct1`..`correct4`, `total1`..`total4` (a sentence's matched and
  total n-grams, sacreBLEU's sufficient statistics); corpus BLEU of the summed counts, as `sacrebleu.corpus_bleu`
  (exponential smoothing of zero counts, brevity penalty, 0 without any match), recomputed per draw;
- `twv`: rows are detections (`score`, `weight`: +1/N_true of a hit, -beta/(N_docs - N_true) of a
  false alarm) owned by query units (`owner`); 100 x the maximum over thresholds of the summed
  weights of the drawn units' detections above it, over the number of drawn units (MTWV).

A bootstrap draw gives each unit a multiplicity (multinomial counts summing to n), and every
statistic is evaluated on counts as weights, so 1,000 draws are a few matrix products, and the
same code serves the point estimate (all weights 1), the percentile interval, the paired bootstrap
(one draw applied to both systems) and approximate randomisation (each unit's rows taken from one
system or the other: both systems' rows side by side, weights 1 - s and s). Multi-fold metrics (ER)
are resampled within each fold and averaged as the metric is; several seeds of one model share
each draw (the same test units) and are averaged. Everything is seeded: the same unit scores give
the same interval and p-values.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

#: Defaults of every interval and test: sacrebleu's 1,000 resamples, a 95 % interval, seed 0.
RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
METHOD = "percentile bootstrap"
#: Draws evaluated at once, at most; fewer where a metric has many rows (MTWV's detections), so that a chunk
#: holds about CHUNK_CELLS weights (160 MB of float64) whatever the test set's size.
CHUNK = 100
CHUNK_CELLS = 20_000_000
#: Decimals kept of real-valued columns (scores): what is stored is what every later computation reads.
DECIMALS = 6


# ------------------------------------------------------------------ statistics

def _weighted_sum(column: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weights @ column


def _proportion(cols: Mapping[str, np.ndarray], w: np.ndarray, units: np.ndarray) -> np.ndarray:
    return 100.0 * _weighted_sum(cols["correct"], w) / w.sum(axis=1)


def _mean(cols: Mapping[str, np.ndarray], w: np.ndarray, units: np.ndarray) -> np.ndarray:
    return _weighted_sum(cols["value"], w) / w.sum(axis=1)


def _ratio(cols: Mapping[str, np.ndarray], w: np.ndarray, units: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * _weighted_sum(cols["errors"], w) / _weighted_sum(cols["total"], w)


def _min_ratio(cols: Mapping[str, np.ndarray], w: np.ndarray, units: np.ndarray) -> np.ndarray:
    total = _weighted_sum(cols["total"], w)
    errors = np.stack([_weighted_sum(c, w) for name, c in cols.items() if name.startswith("errors:")])
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (errors / total).min(axis=0)


def _eer(cols: Mapping[str, np.ndarray], w: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Equal error rate of weighted trials, per row of `w`: the ROC polyline's crossing of FAR = FRR, ties
    decided together (as `superbench.metrics.equal_error_rate`, which this equals at unit weights)."""
    order = np.argsort(-cols["score"], kind="stable")
    score, label = cols["score"][order], cols["label"][order]
    w = w[:, order]
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tp = np.cumsum(w * label, axis=1)[:, last]
    fp = np.cumsum(w * (1.0 - label), axis=1)[:, last]
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr = np.concatenate([np.zeros((w.shape[0], 1)), fp / fp[:, -1:]], axis=1)
        tpr = np.concatenate([np.zeros((w.shape[0], 1)), tp / tp[:, -1:]], axis=1)
        gap = 1.0 - fpr - tpr
        k = np.argmax(gap <= 0, axis=1)  # first point on or past the crossing
        rows = np.arange(w.shape[0])
        g0, g1 = gap[rows, k - 1], gap[rows, k]
        t = g0 / (g0 - g1)
        out = 100.0 * (fpr[rows, k - 1] + t * (fpr[rows, k] - fpr[rows, k - 1]))
    undefined = (fp[:, -1] <= 0) | (tp[:, -1] <= 0) | (k == 0)
    return np.where(undefined, np.nan, out)


def _twv(cols: Mapping[str, np.ndarray], w: np.ndarray, units: np.ndarray) -> np.ndarray:
    """100 x the maximum term-weighted value (0 when no threshold gives a positive one), per row of the unit
    weights `units`; `w` holds each detection's owner's weight."""
    order = np.argsort(-cols["score"], kind="stable")
    score = cols["score"][order]
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1] if score.size else np.zeros(0, dtype=int)
    gained = np.cumsum(w[:, order] * cols["weight"][order], axis=1)[:, last]
    best = gained.max(axis=1, initial=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * np.maximum(best, 0.0) / units.sum(axis=1)


BLEU_ORDER = 4
BLEU_COLUMNS = ("hyp_len", "ref_len", *(f"correct{n}" for n in range(1, BLEU_ORDER + 1)),
                *(f"total{n}" for n in range(1, BLEU_ORDER + 1)))


def _bleu(cols: Mapping[str, np.ndarray], w: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0-100) per row of `w`, as sacreBLEU's `BLEU.compute_bleu` with its default "exp" smoothing: a
    zero match count at order n gives 100 / (2^k total_n), k the zero counts so far; an order with no n-gram
    at all gives 0; brevity penalty exp(1 - ref/hyp) when the hypotheses are shorter."""
    hyp, ref = _weighted_sum(cols["hyp_len"], w), _weighted_sum(cols["ref_len"], w)
    log_sum = np.zeros(w.shape[0])
    zeros = np.zeros(w.shape[0])
    defined = hyp > 0
    matched = np.zeros(w.shape[0], dtype=bool)  # no match at any order: 0, as sacreBLEU's early stop
    with np.errstate(divide="ignore", invalid="ignore"):
        for n in range(1, BLEU_ORDER + 1):
            correct, total = _weighted_sum(cols[f"correct{n}"], w), _weighted_sum(cols[f"total{n}"], w)
            defined &= total > 0
            matched |= correct > 0
            zeros = zeros + ((correct == 0) & (total > 0))
            precision = np.where(correct > 0, 100.0 * correct / total, 100.0 / (2.0 ** zeros * total))
            log_sum = log_sum + np.log(np.where(total > 0, precision, 1.0))
        bp = np.where(hyp < ref, np.exp(1.0 - ref / hyp), 1.0)
        return np.where(defined & matched, bp * np.exp(log_sum / BLEU_ORDER), 0.0)


@dataclass(frozen=True)
class Statistic:
    """How a metric follows from weighted units (see the module docstring)."""

    name: str
    columns: tuple[str, ...]  # required columns (`min_ratio` also has `errors:<setting>` ones)
    evaluate: Callable[[Mapping[str, np.ndarray], np.ndarray, np.ndarray], np.ndarray]
    #: Rows are detections owned by units (`owner`), not the units themselves.
    grouped: bool = False
    #: Columns holding integer counts or labels (stored as integers).
    integer: tuple[str, ...] = ()


STATISTICS: dict[str, Statistic] = {s.name: s for s in (
    Statistic("proportion", ("correct",), _proportion, integer=("correct",)),
    Statistic("mean", ("value",), _mean),
    Statistic("ratio", ("errors", "total"), _ratio, integer=("errors", "total")),
    Statistic("min_ratio", ("total",), _min_ratio),
    Statistic("eer", ("label", "score"), _eer, integer=("label",)),
    Statistic("twv", ("score", "weight"), _twv, grouped=True),
    Statistic("bleu", BLEU_COLUMNS, _bleu, integer=BLEU_COLUMNS),
)}


def units_word(unit: str) -> str:
    """A unit's plural as outputs print it: 'utterances', 'trial pairs', 'queries', 'recordings'."""
    if not unit:
        return "units"
    return unit[:-1] + "ies" if unit.endswith("y") and unit[-2:-1] not in "aeiou" else unit + "s"


def ids_digest(ids: Sequence[str]) -> str:
    """A short digest of the unit ids in order: two unit lists pair only when theirs are equal."""
    h = hashlib.blake2b(digest_size=8)
    for unit in ids:
        h.update(str(unit).encode("utf-8") + b"\0")
    return h.hexdigest()


# ------------------------------------------------------------------ per-unit scores

@dataclass(frozen=True)
class UnitScores:
    """One metric's per-unit scores on one test split (one fold): what its interval and paired tests need."""

    statistic: str
    unit: str  # what is resampled, in words: "utterance", "trial pair", "query", "recording"
    n: int  # units
    ids: str  # `ids_digest` of the unit ids, in order
    columns: Mapping[str, np.ndarray]
    #: Grouped statistics: the unit (0..n-1) of each row; None: row i is unit i.
    owner: np.ndarray | None = None
    fold: str = ""

    @classmethod
    def build(cls, statistic: str, unit: str, ids: Sequence[str], columns: Mapping[str, Sequence[float]],
              owner: Sequence[int] | None = None, fold: str = "") -> "UnitScores":
        """Per-unit scores from plain lists, rounded as they are stored (so stored and fresh ones agree)."""
        stat = STATISTICS[statistic]
        cols = {name: (np.asarray(v, dtype=np.int64) if name in stat.integer
                       else np.round(np.asarray(v, dtype=np.float64), DECIMALS)) for name, v in columns.items()}
        out = cls(statistic, unit, len(ids), ids_digest(ids), cols,
                  None if owner is None else np.asarray(owner, dtype=np.int64), fold)
        problems = out.problems()
        if problems:
            raise ValueError("per-unit scores: " + "; ".join(problems))
        return out

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def problems(self) -> list[str]:
        """Every way these scores are inconsistent (empty when they are not)."""
        stat = STATISTICS.get(self.statistic)
        if stat is None:
            return [f"statistic {self.statistic!r} is not one of {sorted(STATISTICS)}"]
        problems = []
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            problems.append(f"n is {self.n!r}, not a count of units >= 1")
        missing = [c for c in stat.columns if c not in self.columns]
        if missing:
            problems.append(f"{self.statistic} needs column(s) {missing}")
        if stat.name == "min_ratio" and not any(c.startswith("errors:") for c in self.columns):
            problems.append("min_ratio needs at least one errors:<setting> column")
        lengths = {name: len(c) for name, c in self.columns.items()}
        if len(set(lengths.values())) > 1:
            problems.append(f"columns of different lengths {lengths}")
        for name, c in self.columns.items():
            if c.ndim != 1 or not np.isfinite(c).all():
                problems.append(f"column {name!r} is not a flat list of finite numbers")
        if stat.grouped:
            if self.owner is None or len(self.owner) != self.rows:
                problems.append("grouped statistic needs an owner (unit index) per row")
            elif self.rows and (self.owner.min() < 0 or self.owner.max() >= self.n):
                problems.append(f"owner indices outside 0..{self.n - 1}")
        elif self.owner is not None:
            problems.append(f"{self.statistic} rows are units: no owner")
        elif isinstance(self.n, int) and self.rows != self.n:
            problems.append(f"{self.rows} rows for {self.n} units")
        return problems

    def evaluate(self, unit_weights: np.ndarray) -> np.ndarray:
        """The metric under each row of (B, n) unit weights (multiplicities), as (B,) floats (nan: undefined)."""
        unit_weights = np.asarray(unit_weights, dtype=np.float64)
        rows = unit_weights if self.owner is None else unit_weights[:, self.owner]
        return STATISTICS[self.statistic].evaluate(self.columns, rows, unit_weights)

    def value(self) -> float:
        """The metric of all units once: the record's test score."""
        return float(self.evaluate(np.ones((1, self.n)))[0])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"statistic": self.statistic, "unit": self.unit, "n": self.n, "ids": self.ids,
                               "columns": {k: v.tolist() for k, v in self.columns.items()}}
        if self.owner is not None:
            out["owner"] = self.owner.tolist()
        if self.fold:
            out["fold"] = self.fold
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "UnitScores":
        """Parse stored per-unit scores; ValueError naming what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("columns"), dict):
            raise ValueError(f"per-unit scores are {str(data)[:60]!r}, not an object with columns")
        unknown = sorted(set(data) - {"statistic", "unit", "n", "ids", "columns", "owner", "fold"})
        if unknown:
            raise ValueError(f"per-unit scores have unknown field(s) {unknown}")
        stat = STATISTICS.get(data.get("statistic"))
        if stat is None:
            raise ValueError(f"per-unit statistic {data.get('statistic')!r} is not one of {sorted(STATISTICS)}")
        try:
            cols = {str(k): np.asarray(v, dtype=np.int64 if k in stat.integer else np.float64)
                    for k, v in data["columns"].items()}
            owner = None if data.get("owner") is None else np.asarray(data["owner"], dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"per-unit columns are not lists of numbers ({exc})") from exc
        out = cls(stat.name, str(data.get("unit", "")), data.get("n"), str(data.get("ids", "")), cols, owner,
                  str(data.get("fold", "")))
        problems = out.problems()
        if problems:
            raise ValueError("per-unit scores: " + "; ".join(problems))
        return out


def folds_to_json(folds: Sequence[UnitScores]) -> list[dict[str, Any]]:
    return [f.to_dict() for f in folds]


def folds_from_json(data: Any) -> list[UnitScores]:
    if not isinstance(data, list) or not data:
        raise ValueError(f"per-unit scores are {str(data)[:60]!r}, not a non-empty list of folds")
    folds = [UnitScores.from_dict(d) for d in data]
    if len({(f.statistic, f.unit) for f in folds}) != 1:
        raise ValueError("the folds of one metric have different statistics or units")
    return folds


def value_of(folds: Sequence[UnitScores]) -> float:
    """The metric as the record states it: the mean over folds."""
    return float(np.mean([f.value() for f in folds]))


# ------------------------------------------------------------------ draws

#: A model's units for one metric: per seed, per fold (every seed the same folds and units).
Seeds = Sequence[Sequence[UnitScores]]


def _rng(seed: int | Sequence[int]) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed if isinstance(seed, int) else list(seed)))


def _counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, n) bootstrap multiplicities: n units drawn uniformly with replacement, counted (a multinomial
    draw, made as indices and one bincount: ten times faster than `Generator.multinomial` at 10k units)."""
    drawn = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def _chunk(seeds: Seeds, sides: int = 1) -> int:
    """Draws per chunk: CHUNK, or fewer so that one chunk's weights stay near CHUNK_CELLS."""
    widest = max(max(f.rows, f.n) for folds in seeds for f in folds) * sides
    return max(1, min(CHUNK, CHUNK_CELLS // max(widest, 1)))


def _mean_over(seeds: Seeds, weights: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over seeds of the mean over folds, fold f weighted by `weights[f]` (B, n_f)."""
    per_seed = [np.mean([fold.evaluate(w) for fold, w in zip(folds, weights)], axis=0) for folds in seeds]
    return np.mean(per_seed, axis=0)


def _check_seeds(seeds: Seeds) -> None:
    if not seeds or not all(seeds):
        raise ValueError("no per-unit scores to resample")
    first = seeds[0]
    for folds in seeds[1:]:
        problem = pairing_problem(first, folds)
        if problem:
            raise ValueError(f"the seeds of one model were scored on different units: {problem}")


def bootstrap(seeds: Seeds, resamples: int = RESAMPLES, seed: int | Sequence[int] = SEED) -> np.ndarray:
    """(resamples,) values of the metric on bootstrap draws of the units (nan where a draw leaves it undefined)."""
    _check_seeds(seeds)
    rng = _rng(seed)
    sizes = [f.n for f in seeds[0]]
    step = _chunk(seeds)
    out = []
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        out.append(_mean_over(seeds, [_counts(rng, n, b) for n in sizes]))
    return np.concatenate(out) if out else np.zeros(0)


def bootstrap_p(draws: np.ndarray, observed: float) -> float:
    """Two-sided p-value of `observed` (a difference) from bootstrap `draws` of it: the share of draws, centred on
    `observed`, at least as far from it as `observed` is from 0 (plus one, to count the observation; undefined
    draws ignored)."""
    finite = draws[np.isfinite(draws)]
    return float((1 + np.sum(np.abs(finite - observed) >= abs(observed) - 1e-12)) / (finite.size + 1))


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The (low, high) percentile interval of `draws`, ignoring undefined (nan) ones."""
    finite = draws[np.isfinite(draws)]
    if not finite.size:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Interval:
    """A metric's bootstrap confidence interval and how it was made."""

    low: float
    high: float
    unit: str
    n: int  # units per fold (summed over folds)
    resamples: int = RESAMPLES
    level: float = LEVEL
    seed: int = SEED
    method: str = METHOD

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def describe(self) -> dict[str, Any]:
        """How it was made, as a record stores it beside `[low, high]`."""
        return {"method": self.method, "unit": self.unit, "units": self.n, "resamples": self.resamples,
                "level": self.level, "seed": self.seed}


def confidence_interval(seeds: Seeds, resamples: int = RESAMPLES, level: float = LEVEL,
                        seed: int = SEED) -> Interval:
    """The percentile bootstrap interval of the metric (mean over `seeds` and folds) over its units."""
    low, high = percentile_interval(bootstrap(seeds, resamples, seed), level)
    first = seeds[0]
    return Interval(round(low, 4), round(high, 4), first[0].unit, sum(f.n for f in first), resamples, level, seed)


# ------------------------------------------------------------------ paired tests

def pairing_problem(a: Sequence[UnitScores], b: Sequence[UnitScores]) -> str | None:
    """Why two models' per-unit scores of one metric cannot be paired (None when they can)."""
    if len(a) != len(b):
        return f"{len(a)} fold(s) against {len(b)}"
    for x, y in zip(a, b):
        where = f" (fold {x.fold})" if x.fold else ""
        if x.statistic != y.statistic or x.unit != y.unit:
            return f"different metric statistics{where}: {x.statistic} per {x.unit} against {y.statistic} per {y.unit}"
        if x.fold != y.fold:
            return f"different folds {x.fold!r} and {y.fold!r}"
        if x.n != y.n or x.ids != y.ids:
            return (f"different test units{where}: {x.n} {x.unit}s (ids {x.ids}) against {y.n} (ids {y.ids}); "
                    f"a paired test needs the same test set")
    return None


def _side_by_side(x: UnitScores, y: UnitScores) -> UnitScores:
    """x's and y's rows together as 2n units (y's are units n..2n-1), for approximate randomisation."""
    columns = {k: np.concatenate([x.columns[k], y.columns[k]]) for k in x.columns}
    owner = None if x.owner is None else np.concatenate([x.owner, y.owner + x.n])
    return UnitScores(x.statistic, x.unit, 2 * x.n, x.ids, columns, owner, x.fold)


@dataclass(frozen=True)
class PairedTest:
    """A (model A - model B) difference of one metric on the same units, with its tests."""

    a: float  # A's metric (mean over the paired seeds)
    b: float
    delta: float  # a - b
    low: float  # percentile bootstrap interval of the difference
    high: float
    p_bootstrap: float  # two-sided, from the bootstrap distribution shifted to the null
    p_permutation: float  # two-sided approximate randomisation (exact enumeration for tiny sets)
    unit: str
    n: int
    resamples: int = RESAMPLES
    level: float = LEVEL
    seed: int = SEED
    exact: bool = False  # p_permutation enumerates every swap


def _delta(a: Seeds, b: Seeds, weights_a: Sequence[np.ndarray], weights_b: Sequence[np.ndarray]) -> np.ndarray:
    return _mean_over(a, weights_a) - _mean_over(b, weights_b)


def paired_test(a: Seeds, b: Seeds, resamples: int = RESAMPLES, level: float = LEVEL,
                seed: int = SEED) -> PairedTest:
    """Paired bootstrap and approximate randomisation of A - B, seed i of A paired with seed i of B.

    Bootstrap: one draw of units applied to both; the interval is the percentiles of the drawn differences,
    the p-value the share of differences shifted to the null (d* - d) at least as far from 0 as d.
    Approximate randomisation: each unit's scores are swapped between A and B with probability 1/2 (every
    one of the 2^n swaps when 2^n <= resamples, giving the exact permutation p-value); p = (c + 1) / (R + 1).
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired seeds needed: {len(a)} against {len(b)}")
    _check_seeds(a)
    _check_seeds(b)
    problem = pairing_problem(a[0], b[0])
    if problem:
        raise ValueError(problem)
    sizes = [f.n for f in a[0]]
    ones = [np.ones((1, n)) for n in sizes]
    va, vb = float(_mean_over(a, ones)[0]), float(_mean_over(b, ones)[0])
    observed = va - vb
    rng = _rng(seed)
    boot = []
    step = _chunk(a, 2)
    for start in range(0, resamples, step):
        counts = [_counts(rng, n, min(step, resamples - start)) for n in sizes]
        boot.append(_delta(a, b, counts, counts))
    draws = np.concatenate(boot)
    low, high = percentile_interval(draws, level)
    p_boot = bootstrap_p(draws, observed)
    p_perm, exact = _permutation_p(a, b, observed, sizes, resamples, rng)
    return PairedTest(round(va, 4), round(vb, 4), round(observed, 4), round(low, 4), round(high, 4),
                      round(p_boot, 6), round(p_perm, 6), a[0][0].unit, sum(sizes), resamples, level,
                      seed if isinstance(seed, int) else SEED, exact)


def _permutation_p(a: Seeds, b: Seeds, observed: float, sizes: list[int], resamples: int,
                   rng: np.random.Generator) -> tuple[float, bool]:
    together = [[_side_by_side(x, y) for x, y in zip(fa, fb)] for fa, fb in zip(a, b)]
    total = sum(sizes)
    exact = total <= 20 and 2 ** total <= resamples
    if exact:  # every assignment of the units to "swapped" or not
        masks = ((np.arange(2 ** total)[:, None] >> np.arange(total)) & 1).astype(np.float64)
    hits, count = 0, 0
    step = _chunk(a, 2) if not exact else 2 ** total
    for start in range(0, (2 ** total) if exact else resamples, step):
        size = min(step, (2 ** total if exact else resamples) - start)
        swap = masks[start:start + size] if exact else (rng.random((size, total)) < 0.5).astype(np.float64)
        split = np.cumsum([0] + sizes)
        wa, wb = [], []
        for f in range(len(sizes)):
            s = swap[:, split[f]:split[f + 1]]
            wa.append(np.concatenate([1.0 - s, s], axis=1))
            wb.append(np.concatenate([s, 1.0 - s], axis=1))
        d = _mean_over(together, wa) - _mean_over(together, wb)
        d = d[np.isfinite(d)]
        hits += int(np.sum(np.abs(d) >= abs(observed) - 1e-12))
        count += d.size
    if exact:
        return hits / count, True
    return (hits + 1) / (count + 1), False


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), by the same keys."""
    ordered = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, out = len(ordered), 0.0, {}
    for i, key in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * pvalues[key]))
        out[key] = running
    return {k: out[k] for k in pvalues}


@dataclass
class Significance:
    """Which differences are significant at `alpha` after Holm's correction over a family of tests."""

    alpha: float
    adjusted: dict[str, float] = field(default_factory=dict)

    def significant(self, key: str) -> bool:
        return self.adjusted.get(key, 1.0) < self.alpha

"""Pairing two models' records of one task for paired tests (`compare`, the report's matrix, `check`).

A model's records of one task, on one test set, recipe and profile, are its seeds; each carries the
per-unit test scores of its metrics (`ResultRecord.units`). Two models pair when their units are the
same test units (`superbench.uncertainty.pairing_problem`); their seeds pair seed by seed where they
share seed numbers, else in seed order, and the pairing says which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from superbench.records import ResultRecord
from superbench.uncertainty import LEVEL, RESAMPLES, SEED, PairedTest, Seeds, UnitScores, paired_test

#: What to do when a record has no per-unit scores.
NO_UNITS_HINT = ("re-run it, or add them to its record file with `superbench results ci` where its predictions "
                 "were kept")


def units_by_seed(records: Iterable[ResultRecord], metric: str | None = None) -> dict[int, list[UnitScores]]:
    """{seed: per-fold unit scores of `metric` (each record's main metric by default)} of one model's records
    of one task; records without them are left out."""
    out = {}
    for r in sorted(records, key=lambda r: r.seed):
        units = r.unit_scores(metric)
        if units is not None:
            out[int(r.seed)] = units
    return out


@dataclass(frozen=True)
class SeedPairing:
    """Which seed of A is paired with which seed of B, and the sentence that says so."""

    pairs: tuple[tuple[int, int], ...]
    note: str


def pair_seeds(a: Iterable[int], b: Iterable[int]) -> SeedPairing:
    """Seed by seed over the shared seeds; without any, in seed order (the shorter list's length)."""
    sa, sb = sorted(set(a)), sorted(set(b))
    if not sa or not sb:
        raise ValueError("no seeds to pair")
    common = [s for s in sa if s in set(sb)]
    unpaired = "" if sa == sb else (f"; unpaired seeds left out (first model's {_seed_list(sa)}, second's "
                                    f"{_seed_list(sb)})")
    if common:
        pairs = tuple((s, s) for s in common)
        note = (f"{len(pairs)} seeds paired seed by seed ({', '.join(map(str, common))})" if len(pairs) > 1
                else f"one seed paired ({common[0]}): the test units' noise only, not training noise") + unpaired
    else:
        pairs = tuple(zip(sa, sb))
        note = ("no shared seed: paired in seed order (" + ", ".join(f"{x}~{y}" for x, y in pairs) + ")")
    return SeedPairing(pairs, note)


def _seed_list(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


@dataclass(frozen=True)
class PairedResult:
    """The paired test of one metric between two models, with how their seeds were paired."""

    test: PairedTest
    pairing: SeedPairing


def paired_metric(a: Mapping[int, list[UnitScores]], b: Mapping[int, list[UnitScores]], resamples: int = RESAMPLES,
                  level: float = LEVEL, seed: int | tuple[int, ...] = SEED) -> PairedResult:
    """Paired bootstrap and approximate randomisation of A - B over their paired seeds; ValueError (saying
    why) when either side has no per-unit scores or they are not the same test units."""
    if not a or not b:
        side = "first" if not a else "second"
        raise ValueError(f"the {side} model's records keep no per-unit test scores ({NO_UNITS_HINT})")
    pairing = pair_seeds(a, b)
    seeds_a: Seeds = [a[x] for x, _ in pairing.pairs]
    seeds_b: Seeds = [b[y] for _, y in pairing.pairs]
    return PairedResult(paired_test(seeds_a, seeds_b, resamples, level, seed), pairing)

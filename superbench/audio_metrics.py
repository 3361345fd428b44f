"""Metrics of audio a head gives back (speech enhancement and separation): SI-SDR, PESQ and STOI.

* SI-SDR (Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019), in dB: both signals are made
  zero-mean, the estimate is projected on the reference (`alpha = <est, ref> / ||ref||^2`), and SI-SDR is
  10 log10(||alpha ref||^2 / ||est - alpha ref||^2). Written here once, in numpy (asteroid's `get_metrics`,
  which s3prl calls, computes the same zero-mean variant). SI-SDR improvement (SI-SDRi) is the estimate's
  SI-SDR minus the unprocessed mixture's, against the same reference.
* PESQ: wide-band (ITU-T P.862.2) MOS-LQO from the ITU reference C code, through the `pesq` package;
  its scale runs from 1.04 (the P.862.2 mapping of the lowest raw score) to 4.64, and it is not a percent.
* STOI (Taal et al., 2011) through `pystoi`, a correlation in [0, 1] (SUPERB-SG reports it x100, in percent).

`pesq` and `pystoi` are the optional extra `superbench[enhancement]`; `require_enhancement_metrics()` says so
in one clear sentence at task load, rather than a traceback in the middle of a run.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from superbench.extras import MissingExtraPackage, import_from_extra, require_extra

#: The extra that installs the audio-quality metric packages.
EXTRA = "enhancement"
#: PyPI distribution of each optional metric package (module name -> distribution).
PACKAGES = {"pesq": "pesq", "pystoi": "pystoi"}
#: The best wide-band PESQ MOS-LQO: the P.862.2 mapping 0.999 + 4 / (1 + exp(-1.3669 x + 3.8224)) of the best raw
#: P.862 score, x = 4.5 (4.644).
PESQ_WB_MAX = 0.999 + 4.0 / (1.0 + float(np.exp(-1.3669 * 4.5 + 3.8224)))
#: Plausible values of a wide-band PESQ score (the ITU code returns about 1.04 for noise against speech).
PESQ_WB_RANGE = (1.0, 4.65)
#: SI-SDR improvements beyond +-100 dB are a bug, not a measurement.
SISDRI_RANGE = (-100.0, 100.0)
#: Below this energy a reference is silence, whose SI-SDR is undefined.
_TINY = 1e-20


class MissingMetricPackage(MissingExtraPackage):
    """An optional metric package is not installed; the message names the extra that installs it (the command
    line reports an ImportError as a setup problem: exit 2, "error: ...")."""


def _import(module: str) -> Any:
    return import_from_extra(module, PACKAGES, EXTRA, "the audio metrics need", MissingMetricPackage)


def require_enhancement_metrics() -> None:
    """Import every optional metric package now: MissingMetricPackage naming the extra when one is missing."""
    require_extra(PACKAGES, EXTRA, "the audio metrics need", MissingMetricPackage)


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != est.shape or not ref.size:
        raise ValueError(f"audio metrics need two equal-length, non-empty 1-D signals, got shapes {ref.shape} and "
                         f"{est.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(est).all()):
        raise ValueError("audio metrics need finite samples")
    return ref, est


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of `estimate` against `reference`, in dB (zero-mean variant)."""
    ref, est = _pair(reference, estimate)
    ref, est = ref - ref.mean(), est - est.mean()
    energy = float(ref @ ref)
    if energy <= _TINY:
        raise ValueError("SI-SDR is undefined for a silent (constant) reference")
    target = (float(est @ ref) / energy) * ref
    noise = est - target
    return float(10.0 * np.log10(max(float(target @ target), _TINY) / max(float(noise @ noise), _TINY)))


def si_sdr_improvement(reference: np.ndarray, estimate: np.ndarray, mixture: np.ndarray) -> float:
    """SI-SDR of `estimate` minus that of the unprocessed `mixture`, both against `reference` (dB)."""
    return si_sdr(reference, estimate) - si_sdr(reference, mixture)


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 16000) -> float:
    """Wide-band PESQ (P.862.2) MOS-LQO of `estimate` against `reference`; ValueError when the ITU code
    finds no speech in the reference (PESQ is undefined there) or the rate is not 16 kHz."""
    if sample_rate != 16000:
        raise ValueError(f"wide-band PESQ is defined at 16000 Hz, got {sample_rate}")
    ref, est = _pair(reference, estimate)
    pesq = _import("pesq")
    if not np.abs(ref).max() > 0:
        raise ValueError("PESQ is undefined for a silent reference")
    try:
        return float(pesq.pesq(sample_rate, ref, est, "wb"))
    except pesq.PesqError as exc:  # e.g. NoUtterancesError: no speech found in the reference
        raise ValueError(f"PESQ is undefined for this pair: {type(exc).__name__}: {exc}") from exc


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 16000) -> float:
    """Short-time objective intelligibility of `estimate` against `reference` (pystoi; about 0..1)."""
    ref, est = _pair(reference, estimate)
    return float(_import("pystoi").stoi(ref, est, sample_rate, extended=False))


#: Name -> (function of (reference, estimate, mixture, sample_rate), unit); every one is higher-is-better.
UTTERANCE_METRICS: dict[str, tuple[Callable[..., float], str]] = {
    "pesq": (lambda ref, est, mix, sr: pesq_wb(ref, est, sr), "PESQ"),
    "stoi": (lambda ref, est, mix, sr: 100.0 * stoi(ref, est, sr), "%"),
    "sisdri": (lambda ref, est, mix, sr: si_sdr_improvement(ref, est, mix), "dB"),
}


def utterance_metrics(references: list[np.ndarray], estimates: list[np.ndarray], mixture: np.ndarray,
                      names: tuple[str, ...], sample_rate: int = 16000) -> dict[str, float]:
    """Each metric of `names` (`UTTERANCE_METRICS`) of one utterance, averaged over its sources (estimate k is
    scored against reference k: the caller puts them in their best order), as SUPERB-SG reports them."""
    unknown = sorted(set(names) - set(UTTERANCE_METRICS))
    if unknown:
        raise ValueError(f"unknown audio metric(s) {unknown}; known: {sorted(UTTERANCE_METRICS)}")
    if len(references) != len(estimates) or not references:
        raise ValueError(f"{len(estimates)} estimates for {len(references)} references")
    return {name: float(np.mean([UTTERANCE_METRICS[name][0](r, e, mixture, sample_rate)
                                 for r, e in zip(references, estimates)])) for name in names}

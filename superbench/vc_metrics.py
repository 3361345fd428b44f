"""Metrics of converted speech (SUPERB-SG voice conversion), as s3prl's `a2o-vc-vcc2020/vc_evaluate.py`, offline.

* MCD (mel-cepstral distortion, dB), F0RMSE (Hz), F0CORR and DDUR (s) of a converted waveform against the target
  speaker's real utterance of the same sentence: WORLD analysis (`pyworld`: harvest F0 between the target's f0min
  and f0max, cheaptrick envelope, FFT 1024, 5 ms shift) of both signals after a 70 Hz low-cut FIR filter, the
  envelope turned into 40 mel-cepstral coefficients (`pysptk.sp2mc`, order 39, all-pass constant 0.466, c0
  included as s3prl keeps it); frames whose normalised power is below -20 dB dropped; the two sequences aligned
  by dynamic time warping (Euclidean frame distance); MCD = mean over the aligned pairs of
  10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2). F0RMSE and F0CORR use the voiced frames of each, aligned by DTW on
  their mel-cepstra; DDUR is the difference of the two durations after trimming silence at both ends (60 dB
  below the peak frame RMS, 2048-sample frames, hop 512: librosa's `effects.trim`).
  DTW is exact here (`dtw_path`); s3prl calls `fastdtw` (radius 1), an approximation of the same path.
* ASV accept rate: Resemblyzer's `VoiceEncoder` (its wheel ships the weights) embeds each utterance; a converted
  utterance is accepted when its cosine similarity to the target's real utterance of the same sentence exceeds
  the threshold at the equal-error point of the real utterances' trials (every pair of the corpus's real
  utterances: same speaker = target trial; `eer_threshold`), as s3prl's `calculate_threshold`.
* WER: a recogniser of the converted speech; the default is pocketsphinx's bundled US-English model (its wheel
  ships it); a local wav2vec 2.0 CTC folder (`facebook/wav2vec2-large-960h-lv60-self`, the model s3prl uses)
  through transformers where the user has one. Sentences are upper-cased, punctuation removed and spaces
  collapsed before scoring (s3prl's `normalize_sentence`).

The packages are the optional extra `superbench[vc]`; `require_vc_packages()` names it at task load.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from superbench.extras import MissingExtraPackage, import_from_extra, require_extra
from superbench.io import file_blake2b
from superbench.metrics import _roc

#: The extra that installs the voice-conversion metric packages.
EXTRA = "vc"
#: PyPI distribution of each optional package (module name -> distribution).
PACKAGES = {"pyworld": "pyworld", "pysptk": "pysptk", "resemblyzer": "resemblyzer", "pocketsphinx": "pocketsphinx",
            "h5py": "h5py"}
MCEP_DIM = 39
MCEP_ALPHA = 0.466
MCEP_SHIFT_MS = 5.0
MCEP_FFT = 1024
POWER_THRESHOLD_DB = -20.0
LOW_CUT_HZ = 70.0
#: 10 / ln 10 * sqrt(2): the factor of MCD per frame.
MCD_FACTOR = 10.0 / np.log(10.0) * np.sqrt(2.0)
#: F0 search range when a target speaker's own range is unknown (the widest of VCC2020's task-1 targets).
DEFAULT_F0_RANGE = (57.0, 405.0)


class MissingVCPackage(MissingExtraPackage):
    """A voice-conversion metric package is not installed; the message names the extra that installs it."""


def _import(module: str) -> Any:
    with warnings.catch_warnings():  # pyworld and webrtcvad import pkg_resources, which warns on import
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        return import_from_extra(module, PACKAGES, EXTRA, "the voice-conversion metrics need", MissingVCPackage)


def require_vc_packages() -> None:
    """Import every package of the `vc` extra now: MissingVCPackage naming the extra when one is missing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        require_extra(PACKAGES, EXTRA, "the voice-conversion metrics need", MissingVCPackage)


# --------------------------------------------------------------------------- DTW and MCD

def dtw_path(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact dynamic time warping of frames x (N, D) and y (M, D) with the Euclidean frame distance and the steps
    (1, 0), (0, 1), (1, 1): (total distance along the best path, the path as an (L, 2) array of index pairs from
    (0, 0) to (N - 1, M - 1)). The cumulative cost is filled one anti-diagonal at a time (vectorised)."""
    x, y = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(y, dtype=np.float64))
    if not len(x) or not len(y) or x.shape[1] != y.shape[1]:
        raise ValueError(f"DTW needs two non-empty frame sequences of one width, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    cost = np.sqrt(np.maximum((x ** 2).sum(1)[:, None] + (y ** 2).sum(1)[None, :] - 2.0 * x @ y.T, 0.0))
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for k in range(n + m - 1):  # cells (i, j) with i + j = k
        i = np.arange(max(0, k - m + 1), min(n, k + 1))
        j = k - i
        acc[i + 1, j + 1] = cost[i, j] + np.minimum(np.minimum(acc[i, j + 1], acc[i + 1, j]), acc[i, j])
    path = [(n - 1, m - 1)]
    i, j = n, m
    while (i, j) != (1, 1):
        steps = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
        i, j = min(steps, key=lambda s: acc[s])
        path.append((i - 1, j - 1))
    return float(acc[n, m]), np.array(path[::-1], dtype=np.int64)


def aligned_mcd(x: np.ndarray, y: np.ndarray) -> float:
    """MCD (dB) of two equally long, already aligned mel-cepstrum sequences (T, D): mean over frames of
    10 / ln 10 * sqrt(2 * sum_d (x_d - y_d)^2)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or not len(x):
        raise ValueError(f"aligned MCD needs two equal (T, D) arrays, got {x.shape} and {y.shape}")
    return float(np.mean(MCD_FACTOR * np.sqrt(((x - y) ** 2).sum(1))))


def dtw_mcd(converted: np.ndarray, reference: np.ndarray) -> float:
    """MCD (dB) of two mel-cepstrum sequences after aligning them by DTW."""
    _, path = dtw_path(converted, reference)
    return aligned_mcd(np.asarray(converted)[path[:, 0]], np.asarray(reference)[path[:, 1]])


# --------------------------------------------------------------------------- WORLD features

def low_cut_filter(x: np.ndarray, fs: int, cutoff: float = LOW_CUT_HZ) -> np.ndarray:
    """A 255-tap FIR high-pass at `cutoff` Hz (s3prl's `low_cut_filter`)."""
    from scipy.signal import firwin, lfilter

    return lfilter(firwin(255, cutoff / (fs // 2), pass_zero=False), 1, x)


def normalised_power_db(sp: np.ndarray) -> np.ndarray:
    """Per frame of a power-spectrum envelope (T, fft/2 + 1) its power (both half-spectrum ends once, the others
    twice, over the FFT length) in dB relative to the utterance's mean frame power (s3prl's `spc2npow`)."""
    half = sp.shape[1] - 1
    power = (sp[:, 0] + sp[:, half] + 2.0 * sp[:, 1:half].sum(1)) / (2 * half)
    return 10.0 * np.log10(power / np.mean(power))


@dataclass(frozen=True)
class WorldFeatures:
    mcep: np.ndarray  # (T, MCEP_DIM + 1)
    f0: np.ndarray  # (T,), 0 where unvoiced
    power_db: np.ndarray  # (T,)


def world_features(wav: np.ndarray, fs: int, f0_range: tuple[float, float] = DEFAULT_F0_RANGE) -> WorldFeatures:
    """WORLD analysis of a [-1, 1] waveform as s3prl's `world_extract` (scaled to the int16 range first)."""
    pw, pysptk = _import("pyworld"), _import("pysptk")
    x = low_cut_filter(np.asarray(wav, dtype=np.float64) * np.iinfo(np.int16).max, fs)
    f0, t = pw.harvest(x, fs, f0_floor=float(f0_range[0]), f0_ceil=float(f0_range[1]), frame_period=MCEP_SHIFT_MS)
    sp = pw.cheaptrick(x, f0, t, fs, fft_size=MCEP_FFT)
    return WorldFeatures(pysptk.sp2mc(sp, MCEP_DIM, MCEP_ALPHA), f0, normalised_power_db(sp))


def trimmed_length(wav: np.ndarray, top_db: float = 60.0, frame_length: int = 2048, hop: int = 512) -> int:
    """Samples left after trimming leading and trailing silence, as librosa's `effects.trim` with its defaults:
    frames (centred, zero-padded) whose RMS is more than `top_db` below the loudest frame's are silent; the
    kept span runs from the first loud frame's start to the last one's end. Written here in numpy, since
    librosa compiles its helpers with numba on first use (seconds per process)."""
    y = np.asarray(wav, dtype=np.float64)
    padded = np.pad(y, frame_length // 2)
    frames = 1 + (len(padded) - frame_length) // hop
    if frames < 1:
        return 0
    index = np.arange(frame_length)[None, :] + hop * np.arange(frames)[:, None]
    power = np.maximum(np.mean(padded[index] ** 2, axis=1), 1e-10)
    loud = np.flatnonzero(10.0 * np.log10(power / power.max()) > -top_db)
    if not loud.size:
        return 0
    return int(min(len(y), (loud[-1] + 1) * hop) - loud[0] * hop)


def conversion_scores(converted: np.ndarray, reference: np.ndarray, fs: int,
                      f0_range: tuple[float, float] = DEFAULT_F0_RANGE,
                      reference_features: WorldFeatures | None = None) -> dict[str, float]:
    """{"mcd", "f0rmse", "f0corr", "ddur"} of a converted waveform against the real one (see the module doc);
    F0RMSE/F0CORR are NaN where either side has no voiced frame (s3prl does the same). `reference_features`:
    the reference's `world_features` at `fs` and `f0_range`, computed once by a caller that scores it often."""
    cvt = world_features(converted, fs, f0_range)
    ref = reference_features if reference_features is not None else world_features(reference, fs, f0_range)
    cvt_frames = cvt.mcep[cvt.power_db > POWER_THRESHOLD_DB]
    ref_frames = ref.mcep[ref.power_db > POWER_THRESHOLD_DB]
    if not len(cvt_frames) or not len(ref_frames):
        raise ValueError("MCD is undefined: no frame above the power threshold")
    mcd = dtw_mcd(cvt_frames, ref_frames)
    f0rmse = f0corr = float("nan")
    cv, rv = np.flatnonzero(cvt.f0 > 0), np.flatnonzero(ref.f0 > 0)
    if len(cv) and len(rv):
        _, path = dtw_path(cvt.mcep[cv], ref.mcep[rv])
        a, b = cvt.f0[cv][path[:, 0]], ref.f0[rv][path[:, 1]]
        f0rmse = float(np.sqrt(np.mean((a - b) ** 2)))
        if a.std() > 0 and b.std() > 0:
            f0corr = float(np.corrcoef(a, b)[0, 1])
    ddur = abs(trimmed_length(reference) - trimmed_length(converted)) / fs
    return {"mcd": mcd, "f0rmse": f0rmse, "f0corr": f0corr, "ddur": float(ddur)}


# --------------------------------------------------------------------------- speaker similarity

def eer_threshold(labels: Sequence[int], scores: Sequence[float]) -> tuple[float, float]:
    """(EER in percent, the score threshold there) of verification trials (1 target, 0 non-target).

    The ROC polyline through every distinct threshold (`superbench.metrics._roc`) meets FAR = FRR on a segment;
    the threshold is interpolated on that segment as FAR is, between the segment ends' thresholds (s3prl:
    sklearn's `roc_curve`, `brentq` on 1 - x - tpr(x), `interp1d(fpr, thresholds)`). The first point (accept
    nothing) takes the highest score as its threshold, where sklearn puts infinity."""
    fpr, tpr = _roc(labels, scores)
    ordered = np.unique(np.asarray(scores, dtype=np.float64))[::-1]
    thresholds = np.r_[ordered[0], ordered]
    gap = 1.0 - fpr - tpr
    k = int(np.flatnonzero(gap <= 0)[0])
    t = gap[k - 1] / (gap[k - 1] - gap[k])
    eer = fpr[k - 1] + t * (fpr[k] - fpr[k - 1])
    return 100.0 * float(eer), float(thresholds[k - 1] + t * (thresholds[k] - thresholds[k - 1]))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.inner(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def speaker_trials(embeddings: dict[str, list[np.ndarray]]) -> tuple[list[int], list[float]]:
    """Every ordered pair of utterances of the real speakers (s3prl's `generate_sample`): the same speaker is a
    target trial (1, an utterance with itself included, as s3prl's), another speaker a non-target one (0)."""
    labels, scores = [], []
    for spk, embs in embeddings.items():
        others = [e for other, es in embeddings.items() if other != spk for e in es]
        for a in embs:
            for b, label in [(b, 1) for b in embs] + [(b, 0) for b in others]:
                labels.append(label)
                scores.append(cosine(a, b))
    return labels, scores


class SpeakerEncoder:
    """Resemblyzer's VoiceEncoder on the CPU (its weights ship in the wheel): 256-d utterance embeddings."""

    def __init__(self) -> None:
        resemblyzer = _import("resemblyzer")
        self._preprocess = resemblyzer.preprocess_wav
        self._encoder = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
        self.name = f"resemblyzer-{_version('resemblyzer')} VoiceEncoder"

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        return self._encoder.embed_utterance(self._preprocess(np.asarray(wav, dtype=np.float32), sample_rate))


def unconverted_scores(rows: Sequence[tuple[str, str, str, str, str]], sample_rate: int = 16000,
                       f0_range: tuple[float, float] = DEFAULT_F0_RANGE) -> dict[str, Any]:
    """The chance level of a conversion: each (source file, source speaker, reference file, target speaker, text)
    row's source utterance scored unconverted against the target's reading (MCD, ASV accept rate at the EER
    threshold of all these real utterances, WER of pocketsphinx), per target speaker and their mean."""
    from superbench.audio import load_audio
    from superbench.metrics import edit_distance

    encoder, asr = SpeakerEncoder(), PocketSphinx()
    embeddings: dict[str, np.ndarray] = {}

    def embed(path: str) -> np.ndarray:
        if path not in embeddings:
            embeddings[path] = encoder.embed(load_audio(path, sample_rate), sample_rate)
        return embeddings[path]

    real: dict[str, set[str]] = {}
    for src, src_spk, ref, tgt_spk, _ in rows:
        real.setdefault(src_spk, set()).add(src)
        real.setdefault(tgt_spk, set()).add(ref)
    eer, threshold = eer_threshold(*speaker_trials({s: [embed(p) for p in sorted(ps)] for s, ps in real.items()}))
    per: dict[str, dict[str, list[float]]] = {}
    for src, _, ref, tgt_spk, text in rows:
        wav = load_audio(src, sample_rate)
        out = per.setdefault(tgt_spk, {"mcd": [], "asv": [], "errors": [], "words": []})
        out["mcd"].append(conversion_scores(wav, load_audio(ref, sample_rate), sample_rate, f0_range)["mcd"])
        out["asv"].append(100.0 if cosine(embed(src), embed(ref)) > threshold else 0.0)
        words = normalise_sentence(text).split()
        out["errors"].append(edit_distance(words, asr.transcribe(wav).split()))
        out["words"].append(len(words))
    summary = {t: {"mcd": round(float(np.mean(v["mcd"])), 4), "asv": round(float(np.mean(v["asv"])), 4),
                   "wer": round(100.0 * sum(v["errors"]) / max(sum(v["words"]), 1), 4), "utterances": len(v["mcd"])}
               for t, v in per.items()}
    return {"targets": summary, "mean": {k: round(float(np.mean([s[k] for s in summary.values()])), 4)
                                         for k in ("mcd", "asv", "wer")},
            "asv": {"eer": round(eer, 4), "threshold": round(threshold, 6)}, "recogniser": asr.name}


# --------------------------------------------------------------------------- recognisers

def normalise_sentence(sentence: str) -> str:
    """Upper case, punctuation removed, whitespace collapsed (s3prl's `normalize_sentence` through jiwer)."""
    return " ".join(re.sub(r"[^\w\s']|_", "", sentence.upper()).split())


class Recogniser(Protocol):
    name: str

    def transcribe(self, wav16k: np.ndarray) -> str: ...


class PocketSphinx:
    """pocketsphinx's bundled US-English acoustic model, language model and dictionary (in its wheel)."""

    def __init__(self) -> None:
        pocketsphinx = _import("pocketsphinx")
        self._decoder = pocketsphinx.Decoder(samprate=16000, loglevel="FATAL")
        self.name = f"pocketsphinx-{_version('pocketsphinx')} en-us"

    def transcribe(self, wav16k: np.ndarray) -> str:
        pcm = (np.clip(np.asarray(wav16k, dtype=np.float64), -1, 1) * 32767).astype("<i2").tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return normalise_sentence(hyp.hypstr) if hyp is not None else ""


class Wav2Vec2CTC:
    """A local wav2vec 2.0 CTC folder (config, weights, processor files) through transformers: greedy decoding."""

    def __init__(self, folder: str | Path) -> None:
        import torch
        from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

        path = Path(folder).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a wav2vec 2.0 CTC folder (no config.json); save one with "
                                    f"Wav2Vec2ForCTC.save_pretrained and its processor beside it")
        self._torch = torch
        self._processor = Wav2Vec2Processor.from_pretrained(str(path))
        self._model = Wav2Vec2ForCTC.from_pretrained(str(path)).eval()
        self.name = f"wav2vec2-ctc {path.name} ({files_digest(sorted(p for p in path.iterdir() if p.is_file()))})"

    def transcribe(self, wav16k: np.ndarray) -> str:
        inputs = self._processor(np.asarray(wav16k, dtype=np.float32), sampling_rate=16000, return_tensors="pt")
        with self._torch.no_grad():
            logits = self._model(inputs.input_values).logits
        return normalise_sentence(self._processor.batch_decode(logits.argmax(-1))[0])


def make_recogniser(spec: str) -> Recogniser:
    """"pocketsphinx" (the default) or the path of a local wav2vec 2.0 CTC folder."""
    return PocketSphinx() if spec == "pocketsphinx" else Wav2Vec2CTC(spec)


def files_digest(files: Sequence[Path]) -> str:
    """blake2b (12 hex) of the names and the digests of `files`: which weights scored a record."""
    h = hashlib.blake2b(digest_size=6)
    for f in files:
        h.update(Path(f).name.encode() + b"\0" + file_blake2b(f).encode())
    return h.hexdigest()


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"

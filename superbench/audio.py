"""Reading, checking and writing waveforms.

Policy (documented in the README): audio at another sample rate is resampled to
16 kHz with soxr (high quality), multichannel audio is down-mixed by averaging the
channels, and NaN/Inf samples or clips shorter than the upstream's receptive
field are refused with an error naming the file.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from superbench.io import atomic_open

log = logging.getLogger(__name__)

TARGET_SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Bad audio; the message names the file."""


def load_audio(path: str | Path, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Read a file as mono float32 at `target_sr`."""
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != target_sr:
        wav = resample(wav, sr, target_sr)
    return check_waveform(wav, name=str(path))


def save_wav(path: str | Path, wav: np.ndarray, sample_rate: int = TARGET_SAMPLE_RATE,
             subtype: str = "PCM_16") -> None:
    """Write a mono WAV through the atomic writer (temp file, fsync, rename): a killed run never leaves
    half a file. Integer PCM cannot hold samples beyond full scale, so those are refused, not clipped;
    `subtype="FLOAT"` keeps any float waveform exactly."""
    path = Path(path)
    wav = np.asarray(wav, dtype=np.float32)
    if subtype.startswith("PCM") and wav.size:
        peak = float(np.max(np.abs(wav)))
        if peak > 1.0:
            raise AudioError(f"{path}: peak {peak:.4f} is above full scale, {subtype} would clip it "
                             f"(write subtype='FLOAT', or scale the waveform)")
    # Encoded in memory, then written as bytes: libsndfile writes a file object through callbacks that
    # swallow Python exceptions, so a full disk surfaced as soundfile's AssertionError, not as ENOSPC.
    encoded = io.BytesIO()
    sf.write(encoded, wav, sample_rate, subtype=subtype, format="WAV")
    with atomic_open(path, "wb") as fh:
        fh.write(encoded.getbuffer())


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    import soxr

    return soxr.resample(np.asarray(wav, dtype=np.float32), orig_sr, target_sr, quality="HQ").astype(np.float32)


def check_waveform(wav: np.ndarray, name: str = "<array>", min_samples: int = 1) -> np.ndarray:
    """Refuse what would silently poison features: empty, too short, non-finite, not 1-D."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise AudioError(f"{name}: expected mono audio (1-D), got shape {wav.shape}")
    if wav.size == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if wav.size < min_samples:
        raise AudioError(
            f"{name}: {wav.size} samples is shorter than the upstream's receptive field "
            f"({min_samples} samples = {1000 * min_samples / TARGET_SAMPLE_RATE:.0f} ms at 16 kHz)")
    if not np.isfinite(wav).all():
        raise AudioError(f"{name}: audio contains NaN or Inf samples")
    return wav


#: Bytes `header_info` is given: a WAV's chunk headers up to its `data` chunk and a FLAC's STREAMINFO fit.
HEADER_BYTES = 4096


def header_info(head: bytes, file_size: int) -> tuple[int, int] | None:
    """(sample rate, frames) read from the first bytes of a plain WAV (PCM, float or extensible) or FLAC
    file, without opening it with libsndfile; None for anything else or anything unusual (then ask
    soundfile). The numbers are the ones `soundfile.info` gives for these files: a manifest check of
    100k files spends its time in opening files, and libsndfile's open costs several times this parse."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav_header(head, file_size)
    if head[:4] == b"fLaC":
        return _flac_header(head)
    return None


def _wav_header(head: bytes, file_size: int) -> tuple[int, int] | None:
    pos, rate, align = 12, 0, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        body = pos + 8
        if chunk == b"fmt ":
            if body + 16 > len(head):
                return None
            fmt = int.from_bytes(head[body:body + 2], "little")
            rate = int.from_bytes(head[body + 4:body + 8], "little")
            align = int.from_bytes(head[body + 12:body + 14], "little")
            if fmt not in (1, 3, 0xFFFE) or not rate or not align:
                return None
        elif chunk == b"data":
            # a streamed (unknown) or truncated data chunk: libsndfile has its own rules, let it say
            if not rate or size in (0, 0xFFFFFFFF) or body + size > file_size:
                return None
            return rate, size // align
        pos = body + size + (size & 1)
    return None


def _flac_header(head: bytes) -> tuple[int, int] | None:
    if len(head) < 42 or head[4] & 0x7F != 0:  # the first metadata block must be STREAMINFO
        return None
    info = int.from_bytes(head[18:26], "big")  # 20 bits rate, 3 channels, 5 bits per sample, 36 total samples
    rate, frames = info >> 44, info & ((1 << 36) - 1)
    return (rate, frames) if rate and frames else None

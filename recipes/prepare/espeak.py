"""A small ctypes binding to eSpeak NG's C API (the library shipped by the PyPI package `espeakng-loader`).

Why ctypes and not the `espeak-ng` command: in-process synthesis is hundreds of
utterances per second, needs no system package, and gives eSpeak's own phoneme
transcription of exactly the text it speaks (`espeak_TextToPhonemes`), which is
what the demo corpus uses as phone-recognition targets.

eSpeak keeps global state, so there is one engine per process (`Engine.get()`);
it is initialised in AUDIO_OUTPUT_SYNCHRONOUS mode with a synth callback that
collects the 16-bit samples (22,050 Hz) of each `synth()` call.

Phone inventory: eSpeak's IPA output (phonememode espeakPHONEMES_IPA with a space
separator between phonemes). Primary/secondary stress marks (ˈ ˌ) and the
syllable/linking marks are removed; length marks (ː) stay part of the phone
("ɑː" and "ɑ" are different phones). Word boundaries are not phones.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# speak_lib.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
espeakCHARS_UTF8 = 1
espeakPHONEMES_IPA = 0x02
espeakRATE, espeakVOLUME, espeakPITCH, espeakRANGE = 1, 2, 3, 4
EE_OK = 0

SAMPLE_RATE = 22050

#: Variants left out of the demo voices: robotic, whispered, joke, test or heavily
#: effected voices (echo/tremolo extremes) and the raw Klatt test voices. Matching is
#: on the file name, case-insensitive; an entry ending in "*" is a prefix.
EXCLUDED_VARIANTS = (
    "robosoft*", "unirobot", "anikarobot", "demonic", "croak", "whisper*", "klatt*",
    "tweaky", "mr serious", "fast", "ricishaymax*", "anxiousandy", "kaukovalta",
)

#: English accents eSpeak NG ships ("en" is British English; names as espeak_SetVoiceByName takes them).
ENGLISH_ACCENTS = (
    "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)

_STRIP_MARKS = str.maketrans("", "", "ˈˌ.‿-_'")


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or refused a voice/parameter."""


@dataclass(frozen=True)
class Prosody:
    """eSpeak parameters for one utterance (eSpeak's own units).

    rate: words per minute (80-450, default 175); pitch: 0-100 (default 50, relative to the
    voice's base); range: pitch range 0-100 (default 50; 0 is monotone); volume: 0-200 (default 100).
    """

    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    n = name.lower()
    return any(n.startswith(p[:-1]) if p.endswith("*") else n == p for p in patterns)


def data_path() -> Path:
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def list_variants(exclude: tuple[str, ...] = EXCLUDED_VARIANTS) -> list[str]:
    """Voice variants shipped with eSpeak NG (file names under voices/!v), minus `exclude`, sorted."""
    folder = data_path() / "voices" / "!v"
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    return [n for n in names if " " not in n and not _matches(n, exclude)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Engine:
    """The process-wide eSpeak NG engine. Not thread-safe by nature; calls are serialised with a lock."""

    _instance: "Engine | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise EspeakError("the demo corpus needs the PyPI package 'espeakng-loader'") from exc
        lib_path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise EspeakError(f"cannot load eSpeak NG from {lib_path}: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if sr <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {sr}); data path {espeakng_loader.get_data_path()}")
        self.sample_rate = int(sr)
        self._lib = lib
        self._chunks: list[np.ndarray] = []

        def _collect(wav, n, _events):  # keep a reference on self: ctypes callbacks must outlive the call
            if wav and n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(_collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    @classmethod
    def get(cls) -> "Engine":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def set_voice(self, voice: str) -> None:
        """`voice` is a language plus optional variant, e.g. "en-us+m3"."""
        if voice == self._voice:
            return
        variant = voice.partition("+")[2]
        if variant and not (data_path() / "voices" / "!v" / variant).is_file():  # eSpeak would ignore it silently
            raise EspeakError(f"eSpeak NG has no voice {voice!r} (no variant {variant!r}; see list_variants())")
        if self._lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise EspeakError(f"eSpeak NG has no voice {voice!r} (language or variant unknown)")
        self._voice = voice

    def _set_prosody(self, prosody: Prosody) -> None:
        for param, value in ((espeakRATE, prosody.rate), (espeakPITCH, prosody.pitch),
                             (espeakRANGE, prosody.range), (espeakVOLUME, prosody.volume)):
            if self._lib.espeak_SetParameter(param, int(value), 0) != EE_OK:
                raise EspeakError(f"eSpeak NG refused parameter {param}={value}")

    def synth(self, text: str, voice: str, prosody: Prosody = Prosody(), seed: int = 0) -> np.ndarray:
        """Speak `text`; returns float32 samples in [-1, 1] at `self.sample_rate` (22,050 Hz)."""
        with self._lock:
            self.set_voice(voice)
            self._set_prosody(prosody)
            self._lib.espeak_ng_SetRandSeed(int(seed))  # eSpeak's own noise sources, for determinism
            self._chunks = []
            data = text.encode("utf-8")
            err = self._lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, espeakCHARS_UTF8, None, None)
            if err != EE_OK:
                raise EspeakError(f"espeak_Synth failed ({err}) for {text!r} with voice {voice!r}")
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return (np.concatenate(chunks).astype(np.float32) / 32768.0)

    def phonemes(self, text: str, voice: str) -> list[str]:
        """eSpeak's IPA phoneme sequence for `text` in the voice's language, tokenised (see module doc)."""
        with self._lock:
            self.set_voice(voice)
            buf = ctypes.c_char_p(text.encode("utf-8"))
            ptr = ctypes.pointer(buf)
            mode = espeakPHONEMES_IPA | (ord(" ") << 8)
            clauses = []
            while buf.value:
                out = self._lib.espeak_TextToPhonemes(ptr, espeakCHARS_UTF8, mode)
                if out is None:
                    break
                clauses.append(out.decode("utf-8"))
        return tokenize_ipa(" ".join(clauses))


def tokenize_ipa(ipa: str) -> list[str]:
    """Split eSpeak's separated IPA output into phones, dropping stress/syllable marks."""
    phones = []
    for tok in ipa.split():
        tok = tok.translate(_STRIP_MARKS)
        if tok:
            phones.append(tok)
    return phones

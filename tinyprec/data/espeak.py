"""Offline speech synthesis with espeak-ng (the ``espeakng-loader`` wheel ships the library and its voices).

espeak-ng is driven through its C API with ctypes: ``espeak_Initialize`` with synchronous output and a synth
callback that collects 22,050 Hz int16 audio. The library keeps global state, so one process-wide
:class:`Espeak` serialises every call behind a lock. Its output also depends on what it said before (noise
generator, filter memories): the same sequence of requests in a fresh process gives the same samples, which
is how tinyprec.data.speech generates (checked by tests/test_speech.py).
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tinyprec.errors import DataError

# espeak_PARAMETER (speak_lib.h)
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# espeak-ng's English voices (accents); en-Shaw (Shavian script) is left out.
ENGLISH_VOICES: tuple[str, ...] = (
    "en", "en-us", "en-us-nyc", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
)


@dataclass(frozen=True)
class Voice:
    """One speaker's settings: accent voice, voice variant and espeak parameters."""

    accent: str  # one of ENGLISH_VOICES
    variant: str  # a file name in espeak-ng-data/voices/!v
    pitch: int  # 0..99 (espeak default 50)
    pitch_range: int  # 0..99 (espeak default 50)
    rate: int  # words per minute, 80..450 (espeak default 175)
    volume: int  # 0..200 (espeak default 100)
    word_gap: int  # extra pause between words, units of 10 ms


class Espeak:
    """The loaded library, initialised for synchronous synthesis into a Python buffer."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise DataError("spoken_keywords needs the espeakng-loader package; pip install espeakng-loader") from err
        self.data_path = espeakng_loader.get_data_path()
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept alive as long as the library may call it
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                          os.path.dirname(self.data_path).encode(), 0)
        if rate <= 0:
            raise DataError(f"espeak-ng failed to initialise with data at {self.data_path}; reinstall espeakng-loader")
        self.sample_rate = int(rate)
        self.lib.espeak_SetSynthCallback(self._callback)
        if hasattr(self.lib, "espeak_ng_SetRandSeed"):  # its noise generator; the rest of its state is history
            self.lib.espeak_ng_SetRandSeed(ctypes.c_long(0))
        self.lock = threading.Lock()
        self._voice: str | None = None

    def _collect(self, wav: ctypes.Array, n: int, events: ctypes.c_void_p) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def variants(self) -> tuple[str, ...]:
        """The voice variants shipped in the wheel (sorted file names, without spaces)."""
        folder = os.path.join(self.data_path, "voices", "!v")
        return tuple(sorted(v for v in os.listdir(folder) if " " not in v))

    def say(self, text: str, voice: Voice) -> np.ndarray:
        """int16 audio at ``self.sample_rate`` of ``text`` spoken by ``voice``."""
        name = f"{voice.accent}+{voice.variant}"
        with self.lock:
            if name != self._voice:
                if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
                    raise DataError(f"espeak-ng has no voice '{name}'; pick an accent from ENGLISH_VOICES")
                self._voice = name
            for param, value in ((_RATE, voice.rate), (_VOLUME, voice.volume), (_PITCH, voice.pitch),
                                 (_RANGE, voice.pitch_range), (_WORDGAP, voice.word_gap)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            self._chunks = []
            raw = text.encode("utf-8")
            self.lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


@lru_cache(maxsize=1)
def engine() -> Espeak:
    """The process-wide espeak-ng engine."""
    return Espeak()


def version() -> str:
    """espeakng-loader's version (part of the data cache key)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    try:
        return pkg_version("espeakng-loader")
    except PackageNotFoundError:
        return "unknown"

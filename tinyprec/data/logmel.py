"""MLPerf Tiny's anomaly-detection front end: 16 kHz audio -> 128 log-mel energies per frame, 5 frames -> 640.

The steps are those of mlcommons/tiny benchmark/training/anomaly_detection (common.py ``file_to_vector_array``
with baseline.yaml: n_mels 128, frames 5, n_fft 1024, hop_length 512, power 2.0), which calls librosa 0.6
(its pinned version) with these defaults; computed here in numpy (float64, then float32):

1. STFT with ``center=True``: the clip is padded by ``n_fft // 2`` samples on each side by reflection
   (librosa 0.6's ``pad_mode="reflect"``), framed every 512 samples, windowed by a periodic Hann window of 1024
   samples (``scipy.signal.get_window("hann", 1024, fftbins=True)``), FFT length 1024: ``1 + samples // 512``
   frames x 513 bins; power ``|X|**2``;
2. the Slaney mel filter bank of librosa (``librosa.filters.mel(sr=16000, n_fft=1024, n_mels=128)``: fmin 0,
   fmax sr/2, the Slaney mel scale (linear below 1 kHz, logarithmic above), triangles in Hz between the
   mel-spaced edges, each divided by its width, ``2 / (f[i+2] - f[i])``, the "slaney" area normalization);
3. ``10 * log10(mel + eps)`` with eps = 2.22e-16 (``sys.float_info.epsilon``), i.e. ``20 / power * log10``;
4. vectors: every 5 consecutive frames concatenated (frame t occupies features 128 t .. 128 t + 127), one
   vector per start frame: ``frames - 4`` vectors of 640 per clip.

MLPerf's script also keeps only frames 50..249 of its 10-second ToyADMOS clips; clips shorter than that (as
ours) keep all their frames. The parameters are recorded (``LogMelFrontEnd.to_dict``) in manifest.json and
firmware/model_settings.h.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from tinyprec.errors import DataError


@dataclass(frozen=True)
class LogMelFrontEnd:
    """The log-mel feature extractor's parameters (MLPerf Tiny AD defaults)."""

    sample_rate: int = 16000
    fft_length: int = 1024
    hop_samples: int = 512
    window: str = "hann_periodic"
    center: str = "reflect_pad_fft_length/2"
    power: float = 2.0
    mel_bins: int = 128
    lower_hz: float = 0.0
    upper_hz: float = 8000.0
    mel_scale: str = "slaney"  # librosa's default (htk=False)
    mel_norm: str = "slaney_area"  # librosa 0.6 norm=1
    log: str = "10*log10(mel+eps)"
    log_offset: float = sys.float_info.epsilon
    context_frames: int = 5

    @property
    def features(self) -> int:
        """Length of one model input: context_frames x mel_bins (640)."""
        return self.context_frames * self.mel_bins

    def frames(self, samples: int) -> int:
        """Frames of a clip of ``samples`` samples (center padding): 1 + samples // hop."""
        return 1 + samples // self.hop_samples

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "logmel_mlperf_tiny_ad", **asdict(self), "features": self.features,
                "implementation": "tinyprec.data.logmel (numpy, librosa 0.6 formulas)"}

    def __call__(self, audio: Any) -> np.ndarray:
        """Vectors of float clips ``(N, samples)`` (or one clip): float32 ``(N, frames - 4, 640)``."""
        return context_vectors(log_mel(audio, self), self.context_frames)


MLPERF_AD = LogMelFrontEnd()


def _hz_to_mel(hz: Any) -> np.ndarray:
    """Slaney's mel scale: 3 mels per 200 Hz below 1 kHz, then logarithmic (27 mels per factor 6.4)."""
    hz = np.asarray(hz, dtype=np.float64)
    step, knee = 200.0 / 3.0, 1000.0
    knee_mel, log_step = knee / step, np.log(6.4) / 27.0
    safe = np.maximum(hz, knee)
    return np.where(hz >= knee, knee_mel + np.log(safe / knee) / log_step, hz / step)


def _mel_to_hz(mel: Any) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    step, knee = 200.0 / 3.0, 1000.0
    knee_mel, log_step = knee / step, np.log(6.4) / 27.0
    return np.where(mel >= knee_mel, knee * np.exp(log_step * (mel - knee_mel)), mel * step)


@lru_cache(maxsize=4)
def mel_matrix(fe: LogMelFrontEnd = MLPERF_AD) -> np.ndarray:
    """(mel_bins, fft_length // 2 + 1) float64: the Slaney-normalized triangular filter bank."""
    bins = fe.fft_length // 2 + 1
    fft_hz = np.linspace(0.0, fe.sample_rate / 2.0, bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(fe.lower_hz)), _hz_to_mel(np.float64(fe.upper_hz)),
                                   fe.mel_bins + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - left) / (centre - left)
    falling = (right - fft_hz[None, :]) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (right - left))


@lru_cache(maxsize=4)
def _window(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic Hann


def log_mel(audio: Any, fe: LogMelFrontEnd = MLPERF_AD) -> np.ndarray:
    """Log-mel energies (dB) of float clips ``(N, samples)`` or one clip: float32 ``(N, frames, mel_bins)``."""
    x = np.asarray(audio)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"log-mel front end: audio must be float (N, samples) or (samples,), got {x.dtype} {x.shape}")
    half = fe.fft_length // 2
    if x.shape[1] <= half:
        raise DataError(f"log-mel front end: clips of {x.shape[1]} samples are too short; reflection padding "
                        f"needs more than {half}")
    padded = np.pad(x.astype(np.float64), ((0, 0), (half, half)), mode="reflect")
    n_frames = fe.frames(x.shape[1])
    starts = np.arange(n_frames) * fe.hop_samples
    frames = padded[:, starts[:, None] + np.arange(fe.fft_length)[None, :]]  # (N, frames, n_fft)
    spec = np.abs(np.fft.rfft(frames * _window(fe.fft_length), axis=-1)) ** fe.power
    mel = spec @ mel_matrix(fe).T
    return (10.0 * np.log10(mel + fe.log_offset)).astype(np.float32)


def context_vectors(log_mels: np.ndarray, frames: int = 5) -> np.ndarray:
    """(N, T, M) log-mel -> (N, T - frames + 1, frames * M): each vector is ``frames`` consecutive frames."""
    n, t, m = log_mels.shape
    count = t - frames + 1
    if count < 1:
        raise DataError(f"log-mel front end: {t} frames are fewer than the {frames} one vector needs; "
                        "use longer clips")
    out = np.empty((n, count, frames * m), np.float32)
    for k in range(frames):
        out[:, :, k * m:(k + 1) * m] = log_mels[:, k:k + count, :]
    return out

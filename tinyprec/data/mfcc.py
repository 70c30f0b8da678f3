"""MLPerf Tiny's keyword-spotting front end: one-second 16 kHz clips -> 49 x 10 MFCC.

The steps are those of mlcommons/tiny benchmark/training/keyword_spotting/get_dataset.py (feature_type
"mfcc", the default flags of kws_util.py), computed here with the same TensorFlow ops:

1. ``wav = pcm / max(pcm)``: the int16 clip divided by its largest sample value (not the largest magnitude),
   zero-padded or cut to 16,000 samples;
2. ``tf.signal.stft``: 480-sample (30 ms) periodic Hann frames every 320 samples (20 ms), FFT length 512
   (the next power of two), no padding: 49 frames x 257 bins; magnitude ``|X|``;
3. ``tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0)`` (HTK mel scale, triangles on
   the mel axis) applied to the magnitude spectrum;
4. ``log(mel + 1e-6)`` (natural log);
5. ``tf.signal.mfccs_from_log_mel_spectrograms``: DCT-II of the 40 log-mel values scaled by
   ``1 / sqrt(2 * 40)``; the first 10 coefficients.

This is the one implementation tinyprec uses for training, calibration, golden vectors and validation; its
parameters are recorded (``FrontEnd.to_dict``) in manifest.json and in firmware/model_settings.h.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tinyprec.errors import DataError


@dataclass(frozen=True)
class FrontEnd:
    """The MFCC feature extractor's parameters (MLPerf Tiny KWS defaults)."""

    sample_rate: int = 16000
    clip_samples: int = 16000  # one second
    window_samples: int = 480  # 30 ms
    stride_samples: int = 320  # 20 ms
    fft_length: int = 512
    window: str = "hann_periodic"
    magnitude: str = "abs"
    mel_bins: int = 40
    lower_hz: float = 20.0
    upper_hz: float = 4000.0
    mel_scale: str = "htk"  # mel = 2595 * log10(1 + f / 700), as tf.signal.linear_to_mel_weight_matrix
    log_offset: float = 1e-6
    log: str = "natural"
    dct: str = "dct2_scaled_1/sqrt(2*mel_bins)"  # tf.signal.mfccs_from_log_mel_spectrograms
    coefficients: int = 10
    peak_normalize: str = "divide_by_max"  # pcm / max(pcm), before framing

    @property
    def frames(self) -> int:
        return 1 + (self.clip_samples - self.window_samples) // self.stride_samples

    @property
    def shape(self) -> tuple[int, int]:
        """(frames, coefficients): (49, 10)."""
        return (self.frames, self.coefficients)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mfcc_mlperf_tiny_kws", **asdict(self), "frames": self.frames,
                "implementation": "tinyprec.data.mfcc (tf.signal)"}

    def __call__(self, pcm: Any, batch: int = 512) -> np.ndarray:
        """Features of int16 (or float) clips ``(N, clip_samples)`` or one clip: float32 ``(N, frames, coefficients)``."""
        return mfcc(pcm, self, batch=batch)


MLPERF_KWS = FrontEnd()


def _prepare(pcm: Any, fe: FrontEnd) -> np.ndarray:
    arr = np.asarray(pcm)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"MFCC front end: audio must be (N, samples) or (samples,), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"MFCC front end: audio must be int16 PCM or float, got dtype {arr.dtype}")
    x = arr.astype(np.float32)
    peak = x.max(axis=1, keepdims=True)
    if (peak <= 0).any():
        bad = int(np.argmax((peak <= 0).ravel()))
        raise DataError(f"MFCC front end: clip {bad} has no positive sample; MLPerf's pcm / max(pcm) needs one")
    x = x / peak
    n = fe.clip_samples
    if x.shape[1] < n:
        x = np.pad(x, ((0, 0), (0, n - x.shape[1])))
    return np.ascontiguousarray(x[:, :n])


_GRAPHS: dict[FrontEnd, Any] = {}


def _graph(fe: FrontEnd) -> Any:
    import tensorflow as tf

    if fe in _GRAPHS:
        return _GRAPHS[fe]
    if (fe.window, fe.magnitude, fe.mel_scale, fe.log, fe.peak_normalize) != (
            "hann_periodic", "abs", "htk", "natural", "divide_by_max"):
        raise DataError("MFCC front end: only MLPerf's Hann/|X|/HTK mel/natural log/peak division is implemented")
    bins = fe.fft_length // 2 + 1
    mel = tf.signal.linear_to_mel_weight_matrix(fe.mel_bins, bins, fe.sample_rate, fe.lower_hz, fe.upper_hz)

    @tf.function(input_signature=[tf.TensorSpec([None, fe.clip_samples], tf.float32)])
    def run(wav: Any) -> Any:
        stft = tf.signal.stft(wav, frame_length=fe.window_samples, frame_step=fe.stride_samples,
                              fft_length=fe.fft_length, window_fn=tf.signal.hann_window)
        spec = tf.abs(stft)
        log_mel = tf.math.log(tf.tensordot(spec, mel, 1) + fe.log_offset)
        return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., : fe.coefficients]

    _GRAPHS[fe] = run
    return run


def mfcc(pcm: Any, fe: FrontEnd = MLPERF_KWS, *, batch: int = 512) -> np.ndarray:
    """MLPerf Tiny KWS features of ``pcm`` (N x samples int16 PCM, or one clip): float32 (N, 49, 10)."""
    x = _prepare(pcm, fe)
    run = _graph(fe)
    out = [np.asarray(run(x[i: i + batch]), dtype=np.float32) for i in range(0, len(x), batch)]
    return np.concatenate(out, axis=0)


def _hz_to_mel(hz: Any) -> Any:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: Any) -> Any:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def dct_matrix(fe: FrontEnd = MLPERF_KWS) -> np.ndarray:
    """(coefficients, mel_bins) float64: the MFCC step, ``mfcc = D @ log_mel`` (DCT-II scaled by 1/sqrt(2M))."""
    m = fe.mel_bins
    k = np.arange(fe.coefficients)[:, None]
    n = np.arange(m)[None, :]
    return np.sqrt(2.0 / m) * np.cos(np.pi * k * (2 * n + 1) / (2 * m))


def warp_matrix(alpha: float, fe: FrontEnd = MLPERF_KWS) -> np.ndarray:
    """(coefficients, coefficients) float64: MFCC -> MFCC of the spectrum stretched in frequency by ``alpha``.

    A vocal-tract-length-style warp in the cepstral domain: the log-mel spectrum is rebuilt from the kept
    coefficients (least-squares inverse of :func:`dct_matrix`), each mel bin takes the value the old spectrum had
    at its centre frequency divided by ``alpha`` (formants move up by ``alpha``; linear interpolation between
    bin centres, the edge bins held beyond the band), and the result goes back through the DCT. ``alpha = 1`` is
    the identity.

    >>> bool(np.allclose(warp_matrix(1.0), np.eye(10)))
    True
    """
    if not alpha > 0:
        raise DataError(f"MFCC warp: alpha must be positive, got {alpha}")
    edges = np.linspace(_hz_to_mel(fe.lower_hz), _hz_to_mel(fe.upper_hz), fe.mel_bins + 2)
    centres_hz = _mel_to_hz(edges[1:-1])
    pos = np.interp(_hz_to_mel(centres_hz / alpha), edges[1:-1], np.arange(fe.mel_bins))  # fractional source bin
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, fe.mel_bins - 1)
    frac = pos - lo
    w = np.zeros((fe.mel_bins, fe.mel_bins))
    w[np.arange(fe.mel_bins), lo] += 1.0 - frac
    w[np.arange(fe.mel_bins), hi] += frac
    d = dct_matrix(fe)
    return d @ w @ np.linalg.pinv(d)

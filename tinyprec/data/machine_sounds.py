"""``machine_sounds``: simulated fan/pump recordings, normal and anomalous, for MLPerf Tiny's anomaly detection.

No machine-sound corpus (ToyADMOS, MIMII) can be downloaded here, so the clips are synthesised from a small
physical model, deterministically in the seed.

A machine (one of ``machines`` IDs, each with its own parameters drawn from the seed): a rotor turning at
22-48 Hz with 5-9 blades; the blade-pass tone and its harmonics, a weak residual shaft tone at 1x and 2x the
rotation (every rotor has a little imbalance), the motor's magnetic hum at twice the mains frequency (50 or
60 Hz) with harmonics, broadband aerodynamic noise shaped by a resonance of the housing, and a slow amplitude
modulation (0.3-2 Hz). A normal clip varies all of this a little: speed +-1% and a slow wander within the clip,
tone levels +-1.5 dB, random phases, noise level, microphone gain +-1 dB, and background noise of the room
(white, pink or brown) at 6-20 dB below the machine.

An anomalous clip is the same machine with one fault, its severity drawn from a range that runs from barely
audible to obvious:

- ``bearing``: an outer-race defect: an impulse at every ball pass (3-5.5 x the rotation, jittered), each
  ringing the bearing's structural resonance (2.5-5 kHz, a few ms);
- ``imbalance``: the 1x (and, less, 2x) shaft tone grows by 6-20 dB (a lost balance weight, a bent blade);
- ``rubbing``: a band of noise (1-4 kHz) from a contact, modulated once per revolution;
- ``speed``: the rotation off by 2-7% (a slipping belt, a failing supply), every line moves; in half of these
  clips the speed drifts there during the clip, from normal.

Clips (int16 as a microphone delivers them, 16 kHz, ``clip_seconds`` long) go through MLPerf's AD front end
(:mod:`tinyprec.data.logmel`: 128 log-mel bands, 5 frames -> 640 features per vector, one vector per frame).
Training holds normal clips only; validation and test hold, for every machine, as many anomalous clips as normal
ones, with the anomaly flag (1) on each of their vectors; the four faults take turns.

The log-mel frames are cached under ``tinyprec.data.sources.cache_dir()``, keyed by the settings and the seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyprec.data import Dataset
from tinyprec.data.logmel import MLPERF_AD, LogMelFrontEnd, context_vectors, log_mel
from tinyprec.errors import DataError

SPLITS = ("train", "val", "test")
FAULTS = ("bearing", "imbalance", "rubbing", "speed")
CACHE_VERSION = 2
_FS = 16000


@dataclass(frozen=True)
class MachineConfig:
    """How much to generate: machine IDs, clips per machine in [train, val, test], clip length."""

    clips: tuple[int, int, int] = (120, 20, 40)  # per machine; val/test clips are half normal, half anomalous
    machines: int = 4
    clip_seconds: float = 1.0

    def check(self) -> None:
        if len(self.clips) != 3 or min(self.clips) < 1:
            raise DataError(f"data.clips: give three positive counts per machine [train, val, test], "
                            f"got {list(self.clips)}")
        if any(c % 2 for c in self.clips[1:]):
            raise DataError(f"data.clips: validation and test counts must be even (half normal, half anomalous), "
                            f"got {list(self.clips)}")
        if self.machines < 1:
            raise DataError(f"machine_sounds: machines must be >= 1, got {self.machines}")
        if not 0.25 <= self.clip_seconds <= 10.0:
            raise DataError(f"machine_sounds: clip_seconds must be in [0.25, 10], got {self.clip_seconds}")

    @property
    def samples(self) -> int:
        return int(round(self.clip_seconds * _FS))


@dataclass(frozen=True)
class Machine:
    """One machine ID's physics."""

    rotation_hz: float
    blades: int
    blade_levels_db: tuple[float, ...]  # blade-pass harmonics 1..4, relative to the first
    shaft_db: tuple[float, float]  # 1x, 2x rotation tones relative to the blade-pass tone
    mains_hz: float
    hum_db: float
    noise_centre_hz: float
    noise_q: float
    noise_db: float  # broadband noise RMS relative to the blade-pass tone's
    am_hz: float
    am_depth: float
    bearing_ratio: float  # ball-pass frequency / rotation
    bearing_resonance_hz: float
    level: float  # RMS of the tonal part before the microphone


def make_machine(index: int, seed: int) -> Machine:
    rng = np.random.default_rng([seed, 101, index])
    return Machine(
        rotation_hz=float(rng.uniform(22.0, 48.0)), blades=int(rng.integers(5, 10)),
        blade_levels_db=tuple(float(-4.0 * k + rng.uniform(-3, 3)) for k in range(4)),
        shaft_db=(float(rng.uniform(-24, -18)), float(rng.uniform(-30, -24))),
        mains_hz=float(rng.choice([50.0, 60.0])), hum_db=float(rng.uniform(-18, -10)),
        noise_centre_hz=float(rng.uniform(600, 2500)), noise_q=float(rng.uniform(0.7, 2.0)),
        noise_db=float(rng.uniform(-6, 0)), am_hz=float(rng.uniform(0.3, 2.0)), am_depth=float(rng.uniform(0.05, 0.15)),
        bearing_ratio=float(rng.uniform(3.0, 5.5)), bearing_resonance_hz=float(rng.uniform(2500, 5000)),
        level=float(10 ** rng.uniform(-1.6, -1.1)),
    )


def _db(x: float) -> float:
    return float(10.0 ** (x / 20.0))


def _tone(phase: np.ndarray, harmonic: float, amp: float, rng: np.random.Generator) -> np.ndarray:
    return amp * np.sqrt(2.0) * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))


def _colour(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power ~ f**exponent."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spec * f ** (exponent / 2.0), n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _band(rng: np.random.Generator, n: int, centre: float, q: float) -> np.ndarray:
    """Unit-RMS white noise through a 2nd-order band-pass at ``centre`` Hz with quality ``q``."""
    from scipy.signal import butter, sosfilt

    half = centre / (2.0 * q)
    lo, hi = max(20.0, centre - half), min(_FS / 2 - 100.0, centre + half)
    x = sosfilt(butter(2, (lo, hi), "bandpass", fs=_FS, output="sos"), rng.standard_normal(n + 2048))[2048:]
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def make_clip(m: Machine, n: int, rng: np.random.Generator, fault: str | None) -> np.ndarray:
    """``n`` samples of machine ``m`` (float64, before the microphone), with ``fault`` or normal."""
    t = np.arange(n) / _FS
    speed: Any = 1.0 + rng.normal(0.0, 0.01)
    if fault == "speed":
        shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.07)
        drift = rng.random() < 0.5  # half of them drift during the clip, from normal speed to the shift
        speed = speed * (1.0 + shift * (np.linspace(0.0, 1.0, n) if drift else 1.0))
    wander = np.cumsum(rng.normal(0.0, 1.0, n // 400 + 2))
    wander = np.interp(np.arange(n) / 400.0, np.arange(len(wander)), wander) * 0.002 / np.sqrt(n / 400.0)
    rot = m.rotation_hz * speed * (1.0 + wander)
    phase = 2 * np.pi * np.cumsum(rot) / _FS  # shaft angle
    jit = lambda: rng.uniform(-1.5, 1.5)  # noqa: E731
    x = np.zeros(n)
    for k, lvl in enumerate(m.blade_levels_db):
        x += _tone(phase, m.blades * (k + 1), _db(lvl + jit()), rng)
    shaft1, shaft2 = m.shaft_db
    if fault == "imbalance":
        grow = rng.uniform(6.0, 20.0)
        shaft1, shaft2 = shaft1 + grow, shaft2 + 0.5 * grow
    x += _tone(phase, 1.0, _db(shaft1 + jit()), rng) + _tone(phase, 2.0, _db(shaft2 + jit()), rng)
    hum = 2 * np.pi * 2 * m.mains_hz * t
    for k in range(3):
        x += _tone(hum, k + 1, _db(m.hum_db - 6.0 * k + jit()), rng)
    x += _db(m.noise_db + rng.uniform(-2, 2)) * (0.7 * _band(rng, n, m.noise_centre_hz, m.noise_q)
                                                 + 0.3 * _colour(rng, n, -1.0))
    am = 1.0 + m.am_depth * np.sin(2 * np.pi * m.am_hz * (1 + rng.uniform(-0.1, 0.1)) * t + rng.uniform(0, 2 * np.pi))
    x *= am
    rms = np.sqrt(np.mean(x**2))
    if fault == "bearing":
        x += rms * _db(rng.uniform(-26.0, -6.0)) * _bearing(m, rot, n, rng)
    elif fault == "rubbing":
        band = _band(rng, n, rng.uniform(1000, 4000), rng.uniform(2.0, 4.0))
        x += rms * _db(rng.uniform(-22.0, -8.0)) * band * (1.0 + 0.8 * np.sin(phase + rng.uniform(0, 2 * np.pi)))
    x *= m.level / rms
    x += m.level * _db(-rng.uniform(6.0, 20.0)) * _colour(rng, n, float(rng.choice([0.0, -1.0, -2.0])))
    return x * _db(rng.uniform(-1.0, 1.0))


def _bearing(m: Machine, rot: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS impulse train at the ball-pass frequency, each impulse ringing the structural resonance."""
    from scipy.signal import fftconvolve

    bpf = m.bearing_ratio * rot
    hits = np.flatnonzero(np.diff(np.floor(np.cumsum(bpf) / _FS + rng.uniform())) > 0)
    hits = np.clip(hits + rng.integers(-8, 9, len(hits)), 0, n - 1)
    train = np.zeros(n)
    train[hits] = rng.uniform(0.6, 1.0, len(hits))
    f0 = m.bearing_resonance_hz * rng.uniform(0.95, 1.05)
    tk = np.arange(int(0.012 * _FS)) / _FS
    ring = np.exp(-tk / rng.uniform(0.001, 0.003)) * np.sin(2 * np.pi * f0 * tk)
    y = fftconvolve(train, ring)[:n]
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def split_plan(cfg: MachineConfig, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(machine, anomaly flag, fault index or -1) of every clip of ``split``.

    Clips are interleaved so that every prefix is balanced: clip i is machine ``i % machines``; in val and test
    its anomaly flag alternates (normal first) with ``i // machines``, and the faults take turns.
    """
    n = cfg.clips[SPLITS.index(split)] * cfg.machines
    i = np.arange(n)
    k = i // cfg.machines
    flag = np.zeros(n, np.int64) if split == "train" else (k % 2).astype(np.int64)
    fault = np.where(flag == 1, (k // 2) % len(FAULTS), -1)
    return (i % cfg.machines).astype(np.int64), flag, fault.astype(np.int64)


def generate_audio(cfg: MachineConfig, seed: int, split: str) -> np.ndarray:
    """int16 clips (N, samples) of ``split`` in :func:`split_plan`'s order."""
    cfg.check()
    machines = [make_machine(i, seed) for i in range(cfg.machines)]
    machine, _, fault = split_plan(cfg, split)
    k = SPLITS.index(split)
    out = np.zeros((len(machine), cfg.samples), np.int16)
    for i in range(len(machine)):
        rng = np.random.default_rng([seed, k, int(i)])
        x = make_clip(machines[int(machine[i])], cfg.samples, rng, None if fault[i] < 0 else FAULTS[int(fault[i])])
        out[i] = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    return out


def generate(cfg: MachineConfig, seed: int, fe: LogMelFrontEnd = MLPERF_AD) -> dict[str, np.ndarray]:
    """Log-mel frames (N, frames, 128), machine IDs, anomaly flags and fault indices of every split (no cache)."""
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        audio = generate_audio(cfg, seed, split)
        mels = [log_mel(audio[i:i + 64].astype(np.float32) / np.float32(32768.0), fe) for i in range(0, len(audio), 64)]
        out[f"logmel_{split}"] = np.concatenate(mels)
        out[f"machine_{split}"], out[f"flag_{split}"], out[f"fault_{split}"] = split_plan(cfg, split)
    return out


def cache_key(cfg: MachineConfig, seed: int, fe: LogMelFrontEnd) -> str:
    blob = json.dumps({"cfg": asdict(cfg), "seed": seed, "fe": fe.to_dict(), "v": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_frames(cfg: MachineConfig, seed: int, fe: LogMelFrontEnd = MLPERF_AD,
                cache: Path | None = None) -> dict[str, np.ndarray]:
    """The cached log-mel frames and clip facts (generated on first use)."""
    from tinyprec.data.sources import cache_dir, cached_npz

    cfg.check()
    path = (cache or cache_dir()) / f"machine_sounds_v{CACHE_VERSION}_{cache_key(cfg, seed, fe)}.npz"
    return cached_npz(path, lambda: generate(cfg, seed, fe))


def vectors(frames: dict[str, np.ndarray], split: str, fe: LogMelFrontEnd = MLPERF_AD) -> dict[str, np.ndarray]:
    """One split's model inputs (V, 640) and, per vector, its clip index, machine, anomaly flag and fault."""
    v = context_vectors(frames[f"logmel_{split}"], fe.context_frames)
    n, per = v.shape[:2]
    clip = np.repeat(np.arange(n), per)
    return {"x": v.reshape(n * per, -1), "clip": clip, "machine": frames[f"machine_{split}"][clip],
            "flag": frames[f"flag_{split}"][clip], "fault": frames[f"fault_{split}"][clip]}


def machine_sounds(cfg: Any, seed: int, fe: LogMelFrontEnd = MLPERF_AD) -> Dataset:
    """The ``machine_sounds`` Dataset of a recipe's [data] section: (640,) log-mel vectors, an autoencoder task.

    ``cfg.clips`` sets the clips per machine ID in [train, val, test]; val_fraction/test_fraction do not apply.
    The labels of val and test are anomaly flags (validation's ROC AUC); train's are zero (normal only). Training
    vectors are shuffled (seeded); val and test keep clip order (interleaved, so any prefix is balanced).
    """
    from tinyprec.data import Preprocess, Split

    if cfg.task != "autoencoder":
        raise DataError("data.task: machine_sounds trains an autoencoder on normal sounds; set task = 'autoencoder'")
    mc = MachineConfig(clips=tuple(cfg.clips)) if cfg.clips is not None else MachineConfig()  # type: ignore[arg-type]
    mc.check()
    frames = load_frames(mc, seed, fe)
    splits = {}
    for s in SPLITS:
        v = vectors(frames, s, fe)
        x, y = v["x"].astype(np.float32), v["flag"].astype(np.int64)
        if s == "train":  # consecutive vectors of one clip are alike: stored shuffled, so any prefix (and a
            order = np.random.default_rng([seed, 31]).permutation(len(x))  # user's own loop) sees every machine
            x, y = x[order], y[order]
        splits[s] = Split(x, y)
    pre = Preprocess.fit(splits["train"].x, cfg.normalize, fe)
    return Dataset(name="machine_sounds", train=splits["train"], val=splits["val"], test=splits["test"],
                   num_classes=0, input_shape=(fe.features,), preprocess=pre, class_labels=(), task="autoencoder")

"""``spoken_keywords``: MLPerf Tiny's 12 keyword-spotting classes, spoken by espeak-ng, generated offline.

Labels in MLPerf's order: down, go, left, no, off, on, right, stop, up, yes, silence, unknown ("unknown" is
one of 25 other words, those of Speech Commands; "silence" is background noise alone).

Speakers: an espeak-ng English accent (8), a voice variant (about 100), pitch, pitch range, rate, volume and
word gap. The variants are shuffled with the seed and divided 70/15/15 between train, validation and test, so
test speakers use voice variants never heard in training. Every clip also jitters pitch and rate a little.

Each clip (one second, 16 kHz, int16 as a microphone would deliver it): the word, resampled from espeak's
22,050 Hz with scipy's polyphase resampler, optionally through a filter (low-pass, high-pass or telephone
band-pass) and a synthetic room (exponentially decaying noise as the impulse response), placed at a random
time, at a random level, with background noise (white, pink, brown or blue noise, or babble made of other
words by speakers of the same split) at 5 to 30 dB SNR. Features: :mod:`tinyprec.data.mfcc` (MLPerf's MFCC).

Generation is deterministic in the seed (one numpy generator per clip, each chunk of clips synthesised in a
fresh process because espeak-ng's output depends on its history) and cached under
``tinyprec.data.sources.cache_dir()``; the key covers the settings, the seed and the espeakng-loader version.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tinyprec.data import Dataset
from tinyprec.data.espeak import ENGLISH_VOICES, Voice, engine, version
from tinyprec.data.mfcc import MLPERF_KWS, FrontEnd
from tinyprec.errors import DataError

LABELS: tuple[str, ...] = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown")
KEYWORDS = LABELS[:10]
SILENCE, UNKNOWN = 10, 11
UNKNOWN_WORDS: tuple[str, ...] = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four", "happy", "house",
    "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "visual", "wow", "zero",
)
SPLITS = ("train", "val", "test")
CACHE_VERSION = 2
_FS = 16000
_BABBLE_POOL = 48  # babble segments per split (fewer for a split of few speakers), reused with random shifts


@dataclass(frozen=True)
class SpeechConfig:
    """How much to generate: speakers per split and clips per speaker and class."""

    speakers: tuple[int, int, int] = (600, 40, 80)  # train, val, test
    clips_per_class: int = 2
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_probability: float = 0.8

    def check(self) -> None:
        if len(self.speakers) != 3 or min(self.speakers) < 1:
            raise DataError(f"data.speakers: give three positive counts [train, val, test], got {list(self.speakers)}")
        if self.clips_per_class < 1:
            raise DataError(f"spoken_keywords: clips_per_class must be >= 1, got {self.clips_per_class}")


def split_variants(variants: tuple[str, ...], seed: int) -> dict[str, tuple[str, ...]]:
    """Voice variants per split: shuffled with ``seed``, 70/15/15, disjoint."""
    order = list(variants)
    np.random.default_rng([seed, 7]).shuffle(order)
    n = len(order)
    a, b = int(round(0.7 * n)), int(round(0.85 * n))
    return {"train": tuple(sorted(order[:a])), "val": tuple(sorted(order[a:b])), "test": tuple(sorted(order[b:]))}


def make_speakers(split: str, count: int, variants: tuple[str, ...], seed: int) -> list[Voice]:
    """``count`` distinct speakers of ``split`` drawn from its variants."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 11])
    speakers: list[Voice] = []
    seen: set[Voice] = set()
    while len(speakers) < count:
        v = Voice(accent=str(rng.choice(ENGLISH_VOICES)), variant=str(rng.choice(variants)),
                  pitch=int(rng.integers(15, 86)), pitch_range=int(rng.integers(20, 91)),
                  rate=int(rng.integers(120, 231)), volume=int(rng.integers(60, 151)),
                  word_gap=int(rng.integers(0, 11)))
        if v not in seen:
            seen.add(v)
            speakers.append(v)
    return speakers


def speaker_id(v: Voice) -> str:
    return f"{v.accent}+{v.variant}/p{v.pitch}r{v.pitch_range}w{v.rate}v{v.volume}g{v.word_gap}"


def _ratio(rate: int) -> tuple[int, int]:
    from math import gcd

    g = gcd(_FS, rate)
    return _FS // g, rate // g


@lru_cache(maxsize=4)
def _antialias(up: int, down: int) -> np.ndarray:
    """resample_poly's own default filter (Kaiser, beta 5), designed once instead of on every call."""
    from scipy.signal import firwin

    half = 10 * max(up, down)
    return firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0))


def _speak(word: str, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """The word at 16 kHz, float in [-1, 1], trimmed of leading/trailing silence, pitch and rate jittered."""
    from scipy.signal import resample_poly

    jittered = Voice(voice.accent, voice.variant, int(np.clip(voice.pitch + rng.integers(-6, 7), 0, 99)),
                     voice.pitch_range, int(np.clip(voice.rate * rng.uniform(0.9, 1.1), 80, 450)), voice.volume,
                     voice.word_gap)
    eng = engine()
    pcm = eng.say(word, jittered).astype(np.float32) / 32768.0
    up, down = _ratio(eng.sample_rate)
    x = resample_poly(pcm, up, down, window=_antialias(up, down)).astype(np.float32)
    loud = np.flatnonzero(np.abs(x) > 0.02 * (np.abs(x).max() + 1e-9))
    return x[loud[0]: loud[-1] + 1] if loud.size else x


def _colour_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ f**exponent (0 white, -1 pink, -2 brown, 1 blue), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(spec * f ** (exponent / 2.0), n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _room(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A filter (low-pass, high-pass or telephone band) and/or a synthetic room, each with probability 1/2."""
    from scipy.signal import butter, fftconvolve, sosfilt

    if rng.random() < 0.5:
        kind = int(rng.integers(3))
        if kind == 0:
            sos = butter(2, rng.uniform(2500, 7000), "lowpass", fs=_FS, output="sos")
        elif kind == 1:
            sos = butter(2, rng.uniform(60, 400), "highpass", fs=_FS, output="sos")
        else:
            sos = butter(2, (rng.uniform(250, 400), rng.uniform(3000, 3800)), "bandpass", fs=_FS, output="sos")
        x = sosfilt(sos, x).astype(np.float32)
    if rng.random() < 0.5:
        rt60 = rng.uniform(0.08, 0.5)
        n = int(rt60 * _FS)
        t = np.arange(n) / _FS
        tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * rng.uniform(0.05, 0.4)
        tail[0] = 1.0
        x = fftconvolve(x, tail)[: len(x) + n // 4].astype(np.float32)
    return x


def _babble(rng: np.random.Generator, voices: list[Voice]) -> np.ndarray:
    """Two to five other words by speakers of the same split, overlapping, unit RMS."""
    out = np.zeros(_FS, np.float32)
    for _ in range(int(rng.integers(2, 6))):
        w = _speak(str(rng.choice(UNKNOWN_WORDS)), voices[int(rng.integers(len(voices)))], rng)[:_FS]
        start = int(rng.integers(0, _FS - len(w) + 1))
        out[start: start + len(w)] += w * rng.uniform(0.5, 1.0)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _noise(rng: np.random.Generator, babble: list[np.ndarray]) -> np.ndarray:
    kind = int(rng.integers(5))
    if kind == 4:
        return np.roll(babble[int(rng.integers(len(babble)))], int(rng.integers(_FS)))
    return _colour_noise(rng, _FS, (0.0, -1.0, -2.0, 1.0)[kind])


def make_clip(label: int, voice: Voice, rng: np.random.Generator, babble: list[np.ndarray],
              cfg: SpeechConfig) -> np.ndarray:
    """One second of int16 audio for class ``label`` spoken by ``voice``."""
    clip = np.zeros(_FS, np.float32)
    if label == SILENCE:
        if rng.random() < 0.85:
            clip += _noise(rng, babble) * np.float32(10 ** rng.uniform(-3.0, -0.7))
        clip += rng.standard_normal(_FS).astype(np.float32) * np.float32(3e-5)  # a microphone's own hiss
    else:
        word = KEYWORDS[label] if label < len(KEYWORDS) else str(rng.choice(UNKNOWN_WORDS))
        x = _room(_speak(word, voice, rng), rng)[:_FS]
        x = x / (np.abs(x).max() + 1e-9) * np.float32(rng.uniform(0.1, 0.9))
        start = int(rng.integers(0, _FS - len(x) + 1))
        clip[start: start + len(x)] = x
        if rng.random() < cfg.noise_probability:
            rms = np.sqrt(np.mean(x**2))
            snr = rng.uniform(*cfg.snr_db)
            clip += _noise(rng, babble) * np.float32(rms / 10 ** (snr / 20))
        clip += rng.standard_normal(_FS).astype(np.float32) * np.float32(3e-5)
    pcm = np.clip(np.round(clip * 32767.0), -32768, 32767).astype(np.int16)
    if pcm.max() <= 0:
        pcm[0] = 1  # MLPerf's front end divides by the largest sample
    return pcm


def split_plan(cfg: SpeechConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, speaker index) of every clip of ``split``: each speaker says every class clips_per_class times."""
    n_spk = cfg.speakers[SPLITS.index(split)]
    labels = np.tile(np.repeat(np.arange(len(LABELS)), cfg.clips_per_class), n_spk)
    speakers = np.repeat(np.arange(n_spk), len(LABELS) * cfg.clips_per_class)
    return labels.astype(np.int64), speakers.astype(np.int64)


def generate_audio(cfg: SpeechConfig, seed: int, split: str, indices: Any = None,
                   progress: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Voice]]:
    """int16 clips (N, 16000), labels, speaker indices and the split's speakers; ``indices`` selects clips.

    Synthesised in this process: the samples also depend on what espeak-ng said before in it. :func:`generate`
    runs this in fresh worker processes, which makes its arrays reproducible bit for bit.
    """
    cfg.check()
    variants = split_variants(engine().variants(), seed)[split]
    voices = make_speakers(split, cfg.speakers[SPLITS.index(split)], variants, seed)
    labels, spk = split_plan(cfg, split)
    k = SPLITS.index(split)
    brng = np.random.default_rng([seed, k, 23])
    babble = [_babble(brng, voices) for _ in range(min(_BABBLE_POOL, 4 * len(voices)))]
    idx = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)
    audio = np.zeros((len(idx), _FS), np.int16)
    for j, i in enumerate(idx):
        rng = np.random.default_rng([seed, k, int(i)])
        audio[j] = make_clip(int(labels[i]), voices[int(spk[i])], rng, babble, cfg)
        if progress is not None:
            progress(1)
    return audio, labels[idx], spk[idx], voices


def cache_key(cfg: SpeechConfig, seed: int, fe: FrontEnd) -> str:
    blob = json.dumps({"cfg": asdict(cfg), "seed": seed, "fe": fe.to_dict(), "espeak": version(),
                       "v": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


CHUNK = 2000  # at most this many clips are synthesised by one fresh worker process


Job = tuple[tuple[str, int, int], ...]  # (split, first clip, end) ranges synthesised by one process


def plan_jobs(cfg: SpeechConfig) -> list[Job]:
    """Each split's clips cut into jobs of at most CHUNK (a fixed rule, so every clip has a fixed history)."""
    jobs: list[Job] = []
    for split in SPLITS:
        n = len(split_plan(cfg, split)[0])
        jobs += [((split, a, min(n, a + CHUNK)),) for a in range(0, n, CHUNK)]
    return jobs


def _run_workers(jobs: list[Job], cfg: SpeechConfig, seed: int, workers: int, folder: Path,
                 done: Any) -> dict[tuple[str, int, int], np.ndarray]:
    """Each job in a fresh ``python -m tinyprec.data.speech`` process, ``workers`` at a time."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    pending: list[tuple[int, Job]] = list(enumerate(jobs))
    running: list[tuple[int, Job, Any]] = []
    results: dict[tuple[str, int, int], np.ndarray] = {}
    while pending or running:
        while pending and len(running) < workers:
            k, job = pending.pop(0)
            spec = json.dumps({"speakers": list(cfg.speakers), "clips_per_class": cfg.clips_per_class,
                               "snr_db": list(cfg.snr_db), "noise_probability": cfg.noise_probability,
                               "seed": seed, "ranges": [list(r) for r in job], "out": str(folder / f"job{k}")})
            proc = subprocess.Popen([sys.executable, "-m", "tinyprec.data.speech", spec], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running.append((k, job, proc))
        k, job, proc = running.pop(0)
        _, err = proc.communicate()
        if proc.returncode != 0:
            for _, _, other in running:
                other.kill()
            last = (err or "").strip().splitlines()[-1:] or ["no message"]
            raise DataError(f"spoken_keywords: speech worker {k} failed ({last[0]}); "
                            "check that espeakng-loader is installed")
        for i, r in enumerate(job):
            results[r] = np.load(folder / f"job{k}_{i}.npy")
            done(r[2] - r[1])
    return results


def generate(cfg: SpeechConfig, seed: int, fe: FrontEnd = MLPERF_KWS, show_progress: bool = True,
             workers: int | None = None, splits: tuple[str, ...] = SPLITS) -> dict[str, np.ndarray]:
    """Features, labels and speakers of ``splits`` (default all three; no cache).

    espeak-ng keeps state between utterances (noise generators, filter memories), so identical output needs an
    identical history: every chunk of CHUNK clips is synthesised in its own fresh process (at most ``workers``,
    default 2, at a time), which makes the arrays depend only on the settings and the seed.
    """
    import os
    import tempfile

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cfg.check()
    if not splits or any(s not in SPLITS for s in splits):
        raise DataError(f"spoken_keywords: splits must be among {', '.join(SPLITS)}, got {splits}")
    plans = {s: split_plan(cfg, s) for s in splits}
    jobs = [job for job in plan_jobs(cfg) if job[0][0] in splits]
    n_workers = workers or max(1, min(2, os.cpu_count() or 1))
    with Progress(TextColumn("spoken_keywords: synthesising speech"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                  disable=not (show_progress and sys.stderr.isatty())) as bar, \
            tempfile.TemporaryDirectory(prefix="tinyprec-speech-") as tmp:
        task = bar.add_task("clips", total=sum(len(p[0]) for p in plans.values()))
        chunks = _run_workers(jobs, cfg, seed, n_workers, Path(tmp), lambda n: bar.advance(task, n))
    out: dict[str, np.ndarray] = {}
    variants = split_variants(engine().variants(), seed)
    for split in splits:
        voices = make_speakers(split, cfg.speakers[SPLITS.index(split)], variants[split], seed)
        audio = np.concatenate([chunks[r] for job in jobs for r in job if r[0] == split])
        out[f"x_{split}"] = fe(audio)
        out[f"y_{split}"], out[f"speaker_{split}"] = plans[split]
        out[f"speakers_{split}"] = np.array([speaker_id(v) for v in voices])
        out[f"variants_{split}"] = np.array(sorted({v.variant for v in voices}))
    return out


def load_features(cfg: SpeechConfig, seed: int, fe: FrontEnd = MLPERF_KWS, cache: Path | None = None) -> dict[str, np.ndarray]:
    """The cached features (generated on first use)."""
    from tinyprec.data.sources import cache_dir, cached_npz

    path = (cache or cache_dir()) / f"spoken_keywords_v{CACHE_VERSION}_{cache_key(cfg, seed, fe)}.npz"
    return cached_npz(path, lambda: generate(cfg, seed, fe))


def spoken_keywords(cfg: Any, seed: int, fe: FrontEnd = MLPERF_KWS) -> Dataset:
    """The ``spoken_keywords`` Dataset of a recipe's [data] section: (1, 49, 10) MFCC, speaker-disjoint splits.

    ``cfg.speakers`` sets the speakers per split ([train, val, test]); val_fraction/test_fraction do not apply.
    """
    from tinyprec.data import Preprocess, Split

    if cfg.task != "classification":
        raise DataError("data.task: spoken_keywords is a classification task; remove task or set 'classification'")
    if cfg.num_classes not in (None, len(LABELS)):
        raise DataError(f"data.num_classes: spoken_keywords has {len(LABELS)} classes, not {cfg.num_classes}")
    labels = tuple(cfg.class_labels) if cfg.class_labels else LABELS
    if len(labels) != len(LABELS):
        raise DataError(f"data.class_labels: spoken_keywords needs {len(LABELS)} labels, got {len(labels)}")
    sc = SpeechConfig(speakers=tuple(cfg.speakers)) if cfg.speakers is not None else SpeechConfig()  # type: ignore[arg-type]
    sc.check()
    a = load_features(sc, seed, fe)
    splits = {s: Split(a[f"x_{s}"][:, None, :, :].astype(np.float32), a[f"y_{s}"].astype(np.int64)) for s in SPLITS}
    pre = Preprocess.fit(splits["train"].x, cfg.normalize, fe)
    return Dataset(name="spoken_keywords", train=splits["train"], val=splits["val"], test=splits["test"],
                   num_classes=len(LABELS), input_shape=(1, *fe.shape), preprocess=pre, class_labels=labels)


if __name__ == "__main__":  # the worker of generate(): one job of clip ranges in a fresh espeak-ng
    _spec = json.loads(sys.argv[1])
    _cfg = SpeechConfig(speakers=tuple(_spec["speakers"]), clips_per_class=_spec["clips_per_class"],
                        snr_db=tuple(_spec["snr_db"]), noise_probability=_spec["noise_probability"])
    for _i, (_split, _a, _b) in enumerate(_spec["ranges"]):
        np.save(f"{_spec['out']}_{_i}.npy", generate_audio(_cfg, _spec["seed"], _split, indices=np.arange(_a, _b))[0])

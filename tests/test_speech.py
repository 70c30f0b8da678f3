"""spoken_keywords: sizes, balance, determinism, speaker splits; MLPerf's MFCC front end; `tinyprec data`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tinyprec.data import speech
from tinyprec.data.mfcc import MLPERF_KWS, mfcc
from tinyprec.errors import DataError
from tinyprec.recipe import DataConfig
from tests._cli import run_cli

SMALL = (6, 2, 3)  # speakers in train, val, test


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache folder for the module (TINYPREC_CACHE), restored afterwards."""
    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get("TINYPREC_CACHE")
    os.environ["TINYPREC_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TINYPREC_CACHE", None)
    else:
        os.environ["TINYPREC_CACHE"] = old


@pytest.fixture(scope="module")
def small(cache: Path) -> object:
    return speech.spoken_keywords(DataConfig(name="spoken_keywords", speakers=SMALL), seed=0)


def test_sizes_shapes_and_class_balance(small: object) -> None:
    ds = small
    per_speaker = len(speech.LABELS) * speech.SpeechConfig().clips_per_class
    assert [len(ds.train), len(ds.val), len(ds.test)] == [n * per_speaker for n in SMALL]
    assert ds.input_shape == (1, 49, 10) and ds.num_classes == 12
    assert ds.class_labels == ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes",
                               "silence", "unknown")
    for split in (ds.train, ds.val, ds.test):
        assert split.x.shape[1:] == (1, 49, 10) and split.x.dtype == np.float32
        assert np.isfinite(split.x).all()
        counts = np.bincount(split.y, minlength=12)
        assert (counts == counts[0]).all(), counts
    # Classes differ in their features (a constant or label-blind generator would not).
    means = np.stack([ds.train.x[ds.train.y == c].mean(axis=0).ravel() for c in range(12)])
    assert np.linalg.matrix_rank(means) == 12
    assert ds.preprocess.frontend == MLPERF_KWS
    assert ds.preprocess.to_dict()["frontend"]["mel_bins"] == 40


def test_generation_is_cached_and_deterministic(small: object, cache: Path) -> None:
    files = list(cache.glob("spoken_keywords_v*.npz"))
    assert len(files) == 1
    again = speech.generate(speech.SpeechConfig(speakers=SMALL), seed=0, show_progress=False, splits=("val",))
    assert set(again) == {"x_val", "y_val", "speaker_val", "speakers_val", "variants_val"}
    assert np.array_equal(again["x_val"], small.val.x[:, 0])  # bit for bit, generated afresh (not the cache)
    assert np.array_equal(again["y_val"], small.val.y)
    other = speech.generate(speech.SpeechConfig(speakers=SMALL), seed=1, show_progress=False, splits=("val",))
    assert not np.array_equal(other["x_val"], small.val.x[:, 0])


def test_speakers_and_voice_variants_are_disjoint_between_splits(small: object, cache: Path) -> None:
    (path,) = cache.glob("spoken_keywords_v*.npz")
    with np.load(path) as f:
        speakers = {s: set(f[f"speakers_{s}"].tolist()) for s in speech.SPLITS}
        variants = {s: set(f[f"variants_{s}"].tolist()) for s in speech.SPLITS}
        assert len(speakers["train"]) == SMALL[0]
        assert f["speaker_test"].max() == SMALL[2] - 1
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not speakers[a] & speakers[b]
        assert not variants[a] & variants[b]
    pool = speech.split_variants(speech.engine().variants(), 0)
    assert len(pool["train"]) > 60 and len(pool["test"]) >= 10
    assert not set(pool["train"]) & set(pool["test"])


def _numpy_reference(pcm: np.ndarray) -> np.ndarray:
    """MLPerf's MFCC written out in float64 numpy from the TF ops' definitions (not our implementation)."""
    x = pcm.astype(np.float64) / pcm.max()
    n, hop, nfft = 480, 320, 512
    frames = np.stack([x[i * hop: i * hop + n] for i in range(1 + (16000 - n) // hop)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic Hann
    spec = np.abs(np.fft.rfft(frames * window, nfft))
    hz = np.linspace(0, 8000, nfft // 2 + 1)[1:]  # TF drops the DC bin from the mel matrix
    mel = lambda f: 1127.0 * np.log1p(f / 700.0)  # noqa: E731 (HTK)
    edges = np.linspace(mel(20.0), mel(4000.0), 40 + 2)
    m = mel(hz)[:, None]
    lower = (m - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    upper = (edges[None, 2:] - m) / (edges[2:] - edges[1:-1])
    weights = np.vstack([np.zeros((1, 40)), np.maximum(0, np.minimum(lower, upper))])
    log_mel = np.log(spec @ weights + 1e-6)
    k = np.arange(40)
    dct = np.cos(np.pi / 40 * (k[None, :] + 0.5) * k[:, None])  # DCT-II basis, row = coefficient
    return (2.0 * log_mel @ dct.T / np.sqrt(2.0 * 40))[:, :10]


def test_front_end_is_mlperf_mfcc(cache: Path) -> None:
    audio, labels, _, _ = speech.generate_audio(speech.SpeechConfig(speakers=SMALL), 0, "test", indices=[0, 1, 21])
    assert labels.tolist() == [0, 0, 10]  # down, down, silence
    feats = mfcc(audio)
    assert feats.shape == (3, 49, 10) and feats.dtype == np.float32
    for clip, got in zip(audio, feats, strict=True):
        want = _numpy_reference(clip)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3 * np.abs(want).max())
    # Gain does not change the features (MLPerf divides by the peak); a shift in time does.
    assert np.allclose(mfcc(audio[:1] // 2), feats[:1], atol=0.05)
    assert not np.allclose(mfcc(np.roll(audio[:1], 4000, axis=1)), feats[:1], atol=0.5)
    with pytest.raises(DataError, match="no positive sample"):
        mfcc(np.zeros((1, 16000), np.int16))


def test_reference_model_is_far_above_chance_via_data_cli(small: object, tmp_path: Path, mlperf_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """MLPerf Tiny's KWS model (trained on real speech) on our test speakers, through `tinyprec data`."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\narch = "ds_cnn"\n[data]\nname = "spoken_keywords"\nspeakers = {list(SMALL)}\n')
    npz = tmp_path / "test.npz"
    code, out, err = run_cli(["data", str(recipe), "--split", "test", "--out", str(npz), "--raw"], capsys)
    assert code == 0, err
    with np.load(npz) as f:
        assert f["x"].shape == (len(small.test), 1, 49, 10)
        assert np.array_equal(f["x"], small.test.x) and np.array_equal(f["y"], small.test.y)
        assert "mean" not in f.files and json.loads(str(f["frontend"]))["coefficients"] == 10
        assert f["class_labels"].tolist()[-2:] == ["silence", "unknown"]
    code, out, err = run_cli(["validate", "--tflite", str(mlperf_dir / "kws_ref_model.tflite"), "--data", str(npz),
                              "--out", str(tmp_path / "v")], capsys)
    assert code in (0, 1), err
    report = json.loads((tmp_path / "v" / "report" / "report.json").read_text())
    assert report["accuracy"]["tflm"] > 25.0  # chance is 8.3%; measured about 40% on the full test split
    assert report["agreement"]["tflm_vs_emulator"]["identical_outputs"] == 100.0
    normalized = tmp_path / "norm.npz"
    code, _, err = run_cli(["data", str(recipe), "--split", "val", "--out", str(normalized)], capsys)
    assert code == 0, err
    with np.load(normalized) as f:
        assert float(f["mean"]) == pytest.approx(small.preprocess.mean) and len(f["y"]) == len(small.val)


def test_bad_requests_are_one_line_errors(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="data.speakers"):
        speech.spoken_keywords(DataConfig(name="spoken_keywords", speakers=(3, 0, 1)), seed=0)
    with pytest.raises(DataError, match="num_classes"):
        speech.spoken_keywords(DataConfig(name="spoken_keywords", num_classes=10), seed=0)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\narch = "ds_cnn"\n[data]\nname = "digits"\n')
    code, _, err = run_cli(["data", str(recipe), "--split", "dev", "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 2 and "--split" in err and len(err.strip().splitlines()) == 1

"""machine_sounds: simulated machine sounds for anomaly detection, MLPerf Tiny's AD log-mel front end, and the
shortened ad_autoencoder recipe end to end (AUC per runner, TFLM == emulator)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyprec.data.logmel import MLPERF_AD, LogMelFrontEnd, context_vectors, log_mel, mel_matrix
from tinyprec.data.machine_sounds import (FAULTS, MachineConfig, _bearing, generate, generate_audio, make_clip,
                                          make_machine)
from tinyprec.errors import DataError, RecipeError

QUICK = Path(__file__).resolve().parents[1] / "models" / "ad_autoencoder_quick.toml"
SMALL = MachineConfig(clips=(2, 4, 8), machines=2, clip_seconds=0.5)


def test_mel_bank_and_log_mel_match_librosa() -> None:
    # Reference values computed once with librosa 0.10.2 (not a dependency): filters.mel(sr=16000, n_fft=1024,
    # n_mels=128) and feature.melspectrogram(..., hop_length=512, power=2.0, pad_mode="reflect") -> 10 log10.
    m = mel_matrix()
    assert m.shape == (128, 513)
    for row, col, peak, total in ((0, 1, 0.028577780351042747, 0.05695532262325287),
                                  (10, 16, 0.029578963294625282, 0.0579565055668354),
                                  (60, 99, 0.02285631187260151, 0.06261546909809113),
                                  (127, 500, 0.005223188549280167, 0.06395111978054047)):
        assert int(np.argmax(m[row])) == col
        assert m[row, col] == pytest.approx(peak, rel=1e-6) and m[row].sum() == pytest.approx(total, rel=1e-6)
    t = np.arange(8000) / 16000
    y = (0.25 * np.sin(2 * np.pi * 300 * t) + 0.05 * np.sin(2 * np.pi * 3100 * t)
         + 0.01 * np.cos(2 * np.pi * 17 * t)).astype(np.float32)
    ours = log_mel(y)
    assert ours.shape == (1, 16, 128) and ours.dtype == np.float32
    for (band, frame), want in (((5, 0), 3.362089157104492), ((14, 3), -15.924905776977539),
                                ((14, 15), 0.10599584132432938), ((90, 7), -30.818452835083008),
                                ((60, 0), -35.04865646362305)):
        assert ours[0, frame, band] == pytest.approx(want, abs=1e-3)


def test_context_vectors_concatenate_five_frames() -> None:
    frames = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)
    v = context_vectors(frames, 5)
    assert v.shape == (2, 3, 15)
    np.testing.assert_array_equal(v[1, 2], frames[1, 2:7].reshape(-1))  # frame t at features 3t .. 3t + 2
    assert MLPERF_AD.features == 640 and MLPERF_AD.frames(16000) == 32
    with pytest.raises(DataError, match="fewer than the 5"):
        context_vectors(frames[:, :4], 5)
    with pytest.raises(DataError, match="must be float"):
        log_mel(np.zeros((2, 4000), np.int16))


def test_same_seed_same_bytes_other_seed_other_sounds() -> None:
    a, b = generate(SMALL, 3), generate(SMALL, 3)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert generate_audio(SMALL, 3, "test").tobytes() != generate_audio(SMALL, 4, "test").tobytes()
    assert a["logmel_train"].shape == (2 * 2, MLPERF_AD.frames(8000), 128)


def test_splits_labels_and_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinyprec.data import load_dataset
    from tinyprec.recipe import DataConfig

    monkeypatch.setenv("TINYPREC_CACHE", str(tmp_path))
    cfg = DataConfig(name="machine_sounds", task="autoencoder", clips=(3, 4, 8))
    ds = load_dataset(cfg, seed=1)
    per_clip = MLPERF_AD.frames(16000) - 4  # 28 vectors per one-second clip
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4 * 3 * per_clip, 4 * 4 * per_clip, 4 * 8 * per_clip)
    assert ds.input_shape == (640,) and ds.task == "autoencoder" and ds.num_classes == 0
    assert ds.train.x.dtype == np.float32 and not ds.train.y.any()  # normal sounds only
    # Training vectors are stored shuffled: consecutive vectors of one clip share 4 of their 5 frames, and
    # calibrating on a prefix in clip order gave the ranges of one or two clips (quant/loops.py now shuffles too).
    x = ds.train.x
    assert sum(np.array_equal(x[i + 1, :512], x[i, 128:]) for i in range(100)) < 5
    t = ds.test.x
    assert all(np.array_equal(t[i + 1, :512], t[i, 128:]) for i in range(27))  # test keeps clip order
    for split in (ds.val, ds.test):
        assert split.y.mean() == 0.5 and set(np.unique(split.y)) == {0, 1}
        clips = split.y.reshape(-1, per_clip)
        assert (clips == clips[:, :1]).all()  # a clip's vectors share its flag
        assert list(clips[:8, 0]) == [0, 0, 0, 0, 1, 1, 1, 1]  # interleaved: any prefix of clips is balanced
    assert isinstance(ds.preprocess.frontend, LogMelFrontEnd)
    assert abs(float(ds.inputs("train").mean())) < 1e-3
    cached = list(tmp_path.glob("machine_sounds_v*.npz"))
    assert len(cached) == 1
    again = load_dataset(cfg, seed=1)
    assert again.test.x.tobytes() == ds.test.x.tobytes()
    with pytest.raises(DataError, match="even"):
        load_dataset(DataConfig(name="machine_sounds", task="autoencoder", clips=(3, 3, 8)), seed=1)
    with pytest.raises(DataError, match="set task = 'autoencoder'"):
        load_dataset(DataConfig(name="machine_sounds", clips=(3, 4, 8)), seed=1)


def test_recipe_needs_the_autoencoder_task(tmp_path: Path) -> None:
    from tinyprec.recipe import load_recipe

    path = tmp_path / "r.toml"
    path.write_text('[model]\narch = "fc_autoencoder"\n[data]\nname = "machine_sounds"\n')
    with pytest.raises(RecipeError, match="anomaly-detection autoencoder task"):
        load_recipe(path)


def _band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float(10 * np.log10(spec[(f >= lo) & (f < hi)].sum() / spec.sum()))


def test_faults_change_the_physics_where_they_should() -> None:
    m = make_machine(0, 0)
    n = 16000

    def mean_db(fault: str | None, lo: float, hi: float) -> float:
        return float(np.mean([_band_db(make_clip(m, n, np.random.default_rng([9, i]), fault), lo, hi)
                              for i in range(6)]))

    # A bearing defect: impulses at the ball-pass frequency, each ringing the structure's resonance (its level
    # in a clip is drawn from -26 to -6 dB under the machine, so here the component alone).
    rot = np.full(n, m.rotation_hz)
    hits = _bearing(m, rot, n, np.random.default_rng(5))
    f = np.fft.rfftfreq(n, 1 / 16000)
    assert abs(f[np.argmax(np.abs(np.fft.rfft(hits)))] / m.bearing_resonance_hz - 1.0) < 0.08
    envelope = np.abs(np.fft.rfft(np.abs(hits) - np.abs(hits).mean()))
    low = (f > 20) & (f < 400)
    assert abs(f[low][np.argmax(envelope[low])] / (m.bearing_ratio * m.rotation_hz) - 1.0) < 0.05
    shaft = (m.rotation_hz * 0.9, m.rotation_hz * 1.1)
    assert mean_db("imbalance", *shaft) > mean_db(None, *shaft) + 5.0  # the 1x shaft tone grows
    assert mean_db("rubbing", 1000, 4500) > mean_db(None, 1000, 4500) + 0.5  # a band of contact noise
    bpf = m.blades * m.rotation_hz
    near = (bpf * 0.985, bpf * 1.015)  # normal speed varies by ~1%; a fault moves the blade-pass tone 2-7%
    assert mean_db("speed", *near) < mean_db(None, *near) - 3.0
    assert set(FAULTS) == {"bearing", "imbalance", "rubbing", "speed"}


@pytest.mark.slow
def test_quick_ad_recipe_reports_auc_per_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinyprec.pipeline import run_recipe

    monkeypatch.setenv("TINYPREC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = run_recipe(QUICK, out_dir=out)
    assert [o.status for o in result.stages] == ["ran"] * 4
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["data"]["samples"] == 4 * 8 * 28 and report["data"]["task"] == "autoencoder"
    auc = report["accuracy"]
    for runner in ("fp32", "fake_quant", "tflm", "tflite", "onnx_int8", "emulator"):
        assert auc[runner] is not None and 50.0 < auc[runner] <= 100.0, (runner, auc)
    assert auc["fp32"] > 65.0  # 10 training clips per machine and 6 epochs: well above chance, not perfect
    assert auc["tflm"] == auc["emulator"]
    assert report["agreement"]["tflm_vs_emulator"]["identical_outputs"] == 100.0
    checks = {c["name"]: c for c in report["gate"]["checks"]}
    assert checks["accuracy_drop"]["value"] == pytest.approx(auc["fp32"] - auc["tflm"])
    assert "reconstruction_error" in checks
    assert result.gate_passed is True, report["gate"]
    fe = json.loads((out / "manifest.json").read_text())["preprocess"]["frontend"]
    assert (fe["kind"], fe["sample_rate"], fe["fft_length"], fe["hop_samples"], fe["mel_bins"], fe["features"]) == (
        "logmel_mlperf_tiny_ad", 16000, 1024, 512, 128, 640)
    header = (out / "firmware" / "model_settings.h").read_text()
    assert "constexpr int kFeatureMelBins = 128;" in header and "constexpr int kFeatureFeatures = 640;" in header

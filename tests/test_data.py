"""Datasets: real digits and MNIST-1D, npz, synthetic; seeded splits; DataError with the first bad sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinyprec.data import Dataset, check_model_fits, load_dataset
from tinyprec.errors import DataError
from tinyprec.recipe import DataConfig
from tinyprec.zoo import build_model


def test_digits_real_and_stratified() -> None:
    ds = load_dataset(DataConfig(name="digits"), seed=0)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10 and ds.train.x.dtype == np.float32
    assert ds.train.y.dtype == np.int64 and ds.class_labels == tuple(str(i) for i in range(10))
    assert abs(len(ds.test) - 0.2 * 1797) <= 1 and abs(len(ds.val) - 0.1 * 1797) <= 1
    test_share = np.bincount(ds.test.y, minlength=10) / len(ds.test)
    assert np.abs(test_share - 0.1).max() < 0.02  # stratified
    # raw values are kept, the normalization is recorded and reproduces the train statistics
    assert ds.train.x.max() == 16.0
    normed = ds.inputs("train")
    assert abs(float(normed.mean())) < 1e-4 and abs(float(normed.std()) - 1) < 1e-4
    np.testing.assert_allclose(ds.preprocess.invert(normed), ds.train.x, atol=1e-4)


def test_splits_are_seeded_and_disjoint() -> None:
    a = load_dataset(DataConfig(name="digits"), seed=3)
    b = load_dataset(DataConfig(name="digits"), seed=3)
    c = load_dataset(DataConfig(name="digits"), seed=4)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)
    keys = {x.tobytes() for split in (a.train, a.val, a.test) for x in split.x}
    assert len(keys) >= 1797 - 30  # the digits set has a few duplicates; no sample is reused across splits beyond them


def test_mnist1d_generated_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("get_dataset downloads; tinyprec must generate MNIST-1D locally")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    monkeypatch.setenv("TINYPREC_CACHE", str(tmp_path))
    ds = load_dataset(DataConfig(name="mnist1d"), seed=0)
    assert (tmp_path / "mnist1d_default_v1.npz").is_file()

    def no_regeneration(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached arrays should have been used")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_regeneration)
    again = load_dataset(DataConfig(name="mnist1d"), seed=0)
    np.testing.assert_array_equal(ds.test.x, again.test.x)
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (4000, 1000)
    assert ds.input_shape == (1, 40) and ds.num_classes == 10
    assert abs(len(ds.val) - 400) <= 1


def test_synthetic_shapes_and_seed() -> None:
    cfg = DataConfig(name="synthetic", shape=(1, 49, 10), num_classes=12, samples=120)
    a, b = load_dataset(cfg, seed=1), load_dataset(cfg, seed=1)
    assert a.input_shape == (1, 49, 10) and a.num_classes == 12
    np.testing.assert_array_equal(a.train.x, b.train.x)
    ae = load_dataset(DataConfig(name="synthetic", shape=(640,), task="autoencoder", samples=50), seed=0)
    assert ae.task == "autoencoder" and ae.num_classes == 0 and ae.input_shape == (640,)


def test_npz_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.standard_normal((60, 3, 4)).astype(np.float32), y=np.arange(60) % 3,
             class_labels=np.array(["a", "b", "c"]))
    ds = load_dataset(DataConfig(name="npz", path=path), seed=0)
    assert ds.name == "mine" and ds.num_classes == 3 and ds.class_labels == ("a", "b", "c")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 60


def test_npz_missing_arrays(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, inputs=np.zeros((4, 2)))
    with pytest.raises(DataError, match="must hold arrays 'x' and 'y'"):
        load_dataset(DataConfig(name="npz", path=path), seed=0)


def test_bad_data_names_first_bad_sample() -> None:
    x = np.zeros((10, 4), dtype=np.float32)
    x[7, 2] = np.nan
    x[8, 0] = np.inf
    with pytest.raises(DataError, match="sample 7 of x contains NaN or inf"):
        Dataset.from_arrays(x, np.zeros(10, dtype=np.int64))
    with pytest.raises(DataError, match="label of sample 3 is 5, outside 0..2"):
        Dataset.from_arrays(np.zeros((10, 4)), np.array([0, 1, 2, 5, 0, 1, 2, 7, 0, 1]), num_classes=3)
    with pytest.raises(DataError, match="label of sample 1 is -1"):
        Dataset.from_arrays(np.zeros((10, 4)), np.array([0, -1] * 5))
    with pytest.raises(DataError, match=r"y must have shape \(10,\)"):
        Dataset.from_arrays(np.zeros((10, 4)), np.zeros(9, dtype=np.int64))
    big = np.zeros((10, 4))
    big[4] = 1e39  # finite in float64, inf in float32
    with pytest.raises(DataError, match="sample 4"):
        Dataset.from_arrays(big, np.zeros(10, dtype=np.int64))


def test_shape_mismatch_with_model() -> None:
    ds = Dataset.from_arrays(np.zeros((20, 1, 8, 8)), np.arange(20) % 10, num_classes=10)
    check_model_fits(ds, build_model("digits_cnn"))
    wrong = Dataset.from_arrays(np.zeros((20, 3, 8, 8)), np.arange(20) % 10, num_classes=10)
    with pytest.raises(DataError, match=r"sample 0 of shape \(3, 8, 8\) does not fit the model"):
        check_model_fits(wrong, build_model("digits_cnn"))
    four = Dataset.from_arrays(np.zeros((20, 1, 8, 8)), np.arange(20) % 4, num_classes=4)
    with pytest.raises(DataError, match="set the model's num_classes to 4"):
        check_model_fits(four, build_model("digits_cnn"))


def test_from_arrays_with_fixed_test_split() -> None:
    ds = Dataset.from_arrays(
        np.ones((30, 2)), np.arange(30) % 3, x_test=np.zeros((5, 2)), y_test=np.arange(5) % 3, val_fraction=0.2, seed=0
    )
    assert len(ds.test) == 5 and len(ds.val) == 6 and len(ds.train) == 24
    assert torch.is_tensor(torch.from_numpy(ds.inputs("val")))

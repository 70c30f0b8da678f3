"""The dataset sources a recipe can name: digits, mnist1d, npz, synthetic, spoken_keywords, machine_sounds (table
keyed by name)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinyprec.data import Dataset
from tinyprec.errors import DataError

if TYPE_CHECKING:
    from tinyprec.recipe import DataConfig

MNIST1D_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where generated data is cached: $TINYPREC_CACHE, else ~/.cache/tinyprec."""
    env = os.environ.get("TINYPREC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tinyprec"


def cached_npz(path: Path, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path``, else ``make()``'s, written there atomically; a damaged file is remade."""
    from tinyprec._io import atomic_path

    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError):
            pass  # a damaged cache is regenerated
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
    return arrays


def _digits(cfg: DataConfig, seed: int, base: Path) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]  # (1797, 1, 8, 8), values 0..16
    labels = cfg.class_labels or tuple(str(int(t)) for t in bunch.target_names)
    return Dataset.from_arrays(
        x, bunch.target, name="digits", num_classes=10, val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction, seed=seed, normalize=cfg.normalize, class_labels=labels,
    )


def mnist1d_arrays() -> dict[str, np.ndarray]:
    """MNIST-1D generated locally with mnist1d's make_dataset and its default arguments (never downloaded).

    4,000 train and 1,000 test sequences of length 40. The arrays are cached (atomically) because
    generation takes a few seconds.
    """
    path = cache_dir() / f"mnist1d_default_v{MNIST1D_CACHE_VERSION}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is regenerated below
    from mnist1d.data import get_dataset_args, make_dataset

    from tinyprec._io import atomic_path

    state = np.random.get_state()  # make_dataset reseeds numpy's global generator
    try:
        raw = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    arrays: dict[str, np.ndarray] = {
        "x": np.asarray(raw["x"], dtype=np.float32),
        "y": np.asarray(raw["y"], dtype=np.int64),
        "x_test": np.asarray(raw["x_test"], dtype=np.float32),
        "y_test": np.asarray(raw["y_test"], dtype=np.int64),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"])
    return arrays


def _mnist1d(cfg: DataConfig, seed: int, base: Path) -> Dataset:
    a = mnist1d_arrays()
    return Dataset.from_arrays(
        a["x"][:, None, :], a["y"], name="mnist1d", num_classes=10, x_test=a["x_test"][:, None, :],
        y_test=a["y_test"], val_fraction=cfg.val_fraction, seed=seed, normalize=cfg.normalize,
        class_labels=cfg.class_labels,
    )


def _npz(cfg: DataConfig, seed: int, base: Path) -> Dataset:
    if cfg.path is None:
        raise DataError("data.path: the npz dataset needs a path to a .npz file with arrays x and y")
    path = cfg.path if cfg.path.is_absolute() else base / cfg.path
    if not path.is_file():
        raise DataError(f"data.path: {path} not found; give a .npz file with arrays x and y")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise DataError(f"data.path: {path} is not a readable .npz without pickles ({err})") from None
    if "x" not in arrays or ("y" not in arrays and cfg.task == "classification"):
        raise DataError(f"data.path: {path} must hold arrays 'x' and 'y'; it has {', '.join(arrays) or 'none'}")
    if ("x_test" in arrays) != ("y_test" in arrays) and cfg.task == "classification":
        raise DataError(f"data.path: {path} has only one of 'x_test'/'y_test'; give both or neither")
    labels = cfg.class_labels
    if labels is None and "class_labels" in arrays:
        labels = tuple(str(s) for s in arrays["class_labels"])
    return Dataset.from_arrays(
        arrays["x"], arrays.get("y"), name=path.stem, num_classes=cfg.num_classes, x_test=arrays.get("x_test"),
        y_test=arrays.get("y_test"), val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=seed,
        normalize=cfg.normalize, class_labels=labels, task=cfg.task,
    )


def _synthetic(cfg: DataConfig, seed: int, base: Path) -> Dataset:
    """Seeded learnable random data: class prototypes plus noise, or low-rank signals for an autoencoder."""
    if cfg.shape is None:
        raise DataError("data.shape: synthetic data needs a per-sample shape, e.g. shape = [1, 49, 10]")
    if cfg.samples < 10:
        raise DataError(f"data.samples: {cfg.samples} is too few for train/val/test splits; use at least 10")
    rng = np.random.default_rng(seed)
    shape = tuple(cfg.shape)
    n = cfg.samples
    if cfg.task == "autoencoder":
        features = int(np.prod(shape))
        rank = min(8, features)
        basis = rng.standard_normal((rank, features)).astype(np.float32)
        z = rng.standard_normal((n, rank)).astype(np.float32)
        noise = 0.1 * rng.standard_normal((n, features)).astype(np.float32)
        x = (z @ basis / np.sqrt(rank) + noise).reshape(n, *shape)
        y = None
        num_classes = None
    else:
        num_classes = cfg.num_classes or 2
        protos = rng.standard_normal((num_classes, *shape)).astype(np.float32)
        y = np.arange(n) % num_classes
        rng.shuffle(y)
        x = 0.5 * protos[y] + rng.standard_normal((n, *shape)).astype(np.float32)
    return Dataset.from_arrays(
        x.astype(np.float32), y, name="synthetic", num_classes=num_classes, val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction, seed=seed, normalize=cfg.normalize, class_labels=cfg.class_labels,
        task=cfg.task,
    )


def _spoken_keywords(cfg: DataConfig, seed: int, base: Path) -> Dataset:
    from tinyprec.data.speech import spoken_keywords

    return spoken_keywords(cfg, seed)


def _machine_sounds(cfg: DataConfig, seed: int, base: Path) -> Dataset:
    from tinyprec.data.machine_sounds import machine_sounds

    return machine_sounds(cfg, seed)


LOADERS: dict[str, Callable[[DataConfig, int, Path], Dataset]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "npz": _npz,
    "synthetic": _synthetic,
    "spoken_keywords": _spoken_keywords,
    "machine_sounds": _machine_sounds,
}

"""tinyprec.data: datasets as raw float32 arrays in torch layout, seeded splits, the preprocessing record.

>>> ds = Dataset.from_arrays(np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 2, seed=0)
>>> (len(ds.train), len(ds.val), len(ds.test), ds.num_classes, ds.input_shape)
(14, 2, 4, 2, (2,))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyprec.errors import DataError

if TYPE_CHECKING:
    from tinyprec.recipe import DataConfig


@dataclass(frozen=True)
class Preprocess:
    """How raw sensor values become the model's float input: ``x = (raw - mean) / std`` (scalars).

    Firmware folds this into the int8 input quantization: q = round((raw - mean) / (std * scale)) + zero_point.
    """

    mean: float = 0.0
    std: float = 1.0
    # The feature extractor raw sensor data goes through before (mean, std), e.g. the MFCC front end of
    # spoken_keywords (tinyprec.data.mfcc.FrontEnd); None when the raw values are the features.
    frontend: Any = None

    @classmethod
    def fit(cls, train_x: np.ndarray, normalize: bool, frontend: Any = None) -> "Preprocess":
        """The training split's scalar mean and std (1 for a constant split) when ``normalize``, else identity."""
        if not normalize:
            return cls(frontend=frontend)
        mean, std = float(train_x.mean(dtype=np.float64)), float(train_x.std(dtype=np.float64))
        return cls(mean=mean, std=std if std > 0 else 1.0, frontend=frontend)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Normalize raw values (any shape) to the model's float32 input."""
        return ((np.asarray(raw, dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Map model inputs back to raw values."""
        return (np.asarray(x, dtype=np.float32) * np.float32(self.std) + np.float32(self.mean)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mean": self.mean, "std": self.std}
        if self.frontend is not None:
            out["frontend"] = self.frontend.to_dict()
        return out


@dataclass(frozen=True)
class Split:
    """One split: raw inputs ``x`` (float32, N x input_shape) and labels ``y`` (int64, N)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Dataset:
    """Train/val/test splits with their shape, classes and preprocessing record."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int  # 0 for an autoencoder
    input_shape: tuple[int, ...]  # (C,H,W) | (C,L) | (F,)
    preprocess: Preprocess
    class_labels: tuple[str, ...]
    task: str = "classification"  # "classification" | "autoencoder"

    def inputs(self, split: str) -> np.ndarray:
        """The normalized float32 model inputs of ``split`` ("train", "val" or "test")."""
        return self.preprocess.apply(getattr(self, split).x)

    @classmethod
    def from_arrays(
        cls,
        x: Any,
        y: Any = None,
        *,
        name: str = "arrays",
        num_classes: int | None = None,
        x_test: Any = None,
        y_test: Any = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        normalize: bool = True,
        class_labels: tuple[str, ...] | None = None,
        task: str = "classification",
    ) -> Dataset:
        """Build a Dataset from numpy arrays (raw values, torch layout) with a seeded, stratified split.

        ``x_test``/``y_test`` give a fixed test split; otherwise ``test_fraction`` of ``x`` is held out.
        ``val_fraction`` of the remaining training data becomes the validation split. For an
        autoencoder ``y`` may be None. Raises DataError naming the first bad sample.
        """
        from tinyprec.data._arrays import build_dataset

        return build_dataset(
            name=name, x=x, y=y, x_test=x_test, y_test=y_test, num_classes=num_classes,
            val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, normalize=normalize,
            class_labels=class_labels, task=task,
        )


def load_dataset(cfg: DataConfig, seed: int = 0, base_dir: Path | None = None) -> Dataset:
    """Load the dataset a recipe's [data] section names (digits, mnist1d, npz, synthetic, spoken_keywords).

    ``base_dir`` resolves a relative ``cfg.path`` (recipes already resolve theirs).
    """
    from tinyprec.data import sources

    loader = sources.LOADERS.get(cfg.name)
    if loader is None:
        raise DataError(f"data.name: unknown dataset '{cfg.name}'; choose one of {', '.join(sources.LOADERS)}")
    return loader(cfg, seed, Path(base_dir) if base_dir is not None else Path.cwd())


def check_model_fits(dataset: Dataset, model: Any) -> None:
    """Run ``model`` on two training samples; raise DataError if the shapes do not fit."""
    from tinyprec.data._arrays import check_model_fits as _check

    _check(dataset, model)


__all__ = ["Dataset", "Preprocess", "Split", "check_model_fits", "load_dataset"]

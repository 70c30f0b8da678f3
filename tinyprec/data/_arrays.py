"""Checks and seeded splits behind Dataset.from_arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyprec.data import Dataset, Preprocess, Split
from tinyprec.errors import DataError


def _as_inputs(x: Any, where: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise DataError(f"{where}: x must be (N, *input_shape) with N >= 1, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{where}: x must be real numbers, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32)
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise DataError(f"{where}: sample {bad} of x contains NaN or inf (also in float32); clean or drop it")
    return arr


def _as_labels(y: Any, n: int, num_classes: int, where: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise DataError(f"{where}: y must have shape ({n},) to match x, got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            bad = int(np.argmax(~np.isfinite(arr) | (arr != np.round(np.nan_to_num(arr)))))
            raise DataError(f"{where}: label of sample {bad} is {arr[bad]!r}, not an integer class")
    elif arr.dtype.kind not in "iub":
        raise DataError(f"{where}: y must be integer class labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    out_of_range = (arr < 0) | (arr >= num_classes)
    if out_of_range.any():
        bad = int(np.argmax(out_of_range))
        raise DataError(
            f"{where}: label of sample {bad} is {arr[bad]}, outside 0..{num_classes - 1}; fix it or set num_classes"
        )
    return arr


def _split_indices(y: np.ndarray, fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (stratified when possible) split: (kept indices, held-out indices), both sorted."""
    n = len(y)
    held = int(round(n * fraction))
    if held == 0:
        return np.arange(n), np.arange(0)
    if held >= n:
        raise DataError(f"split: holding out {held} of {n} samples leaves none to train on; lower the fractions")
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    counts = np.bincount(y) if stratify else np.array([])
    use_strata = stratify and counts[counts > 0].min() >= 2 and held >= int((counts > 0).sum())
    kept, out = train_test_split(idx, test_size=held, random_state=seed, stratify=y if use_strata else None)
    return np.sort(kept), np.sort(out)


def build_dataset(
    *,
    name: str,
    x: Any,
    y: Any,
    x_test: Any,
    y_test: Any,
    num_classes: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    normalize: bool,
    class_labels: tuple[str, ...] | None,
    task: str,
) -> Dataset:
    """Check the arrays, split them with ``seed`` and record the normalization (train statistics)."""
    if task not in ("classification", "autoencoder"):
        raise DataError(f"{name}: task '{task}' is not one of 'classification', 'autoencoder'")
    xs = _as_inputs(x, f"{name} (train)")
    has_test = x_test is not None
    xt = _as_inputs(x_test, f"{name} (test)") if has_test else None
    if xt is not None and xt.shape[1:] != xs.shape[1:]:
        raise DataError(f"{name} (test): sample shape {xt.shape[1:]} differs from train {xs.shape[1:]}")
    classification = task == "classification"
    if classification:
        if y is None:
            raise DataError(f"{name}: a classification dataset needs labels y")
        raw_y = np.asarray(y)
        if num_classes is None:
            if raw_y.size == 0 or raw_y.dtype.kind not in "iub":
                raise DataError(f"{name}: cannot infer num_classes from y; pass num_classes")
            both = raw_y if not has_test else np.concatenate([raw_y.ravel(), np.asarray(y_test).ravel()])
            num_classes = int(both.max()) + 1
        ys = _as_labels(raw_y, len(xs), num_classes, f"{name} (train)")
        yt = _as_labels(y_test, len(xt), num_classes, f"{name} (test)") if xt is not None else None
    else:
        num_classes = 0
        ys = np.zeros(len(xs), dtype=np.int64)
        yt = np.zeros(len(xt), dtype=np.int64) if xt is not None else None
        if xt is not None and y_test is not None:  # anomaly flags (nonzero = anomalous): validation's AUC
            flags = np.asarray(y_test).reshape(-1)
            if len(flags) != len(xt):
                raise DataError(f"{name} (test): {len(flags)} anomaly flags for {len(xt)} samples")
            yt = (flags != 0).astype(np.int64)

    if xt is None:
        kept, test_idx = _split_indices(ys, test_fraction, seed, classification)
        xt, yt = xs[test_idx], ys[test_idx]
        xs, ys = xs[kept], ys[kept]
    assert yt is not None
    # Validation is carved from what remains, as a fraction of the whole.
    total = len(xs) + (0 if has_test else len(xt))
    val_share = val_fraction * total / len(xs)
    kept, val_idx = _split_indices(ys, min(val_share, 0.9), seed + 1, classification)
    train = Split(xs[kept], ys[kept])
    val = Split(xs[val_idx], ys[val_idx])
    preprocess = Preprocess.fit(train.x, normalize)
    labels = tuple(class_labels) if class_labels else tuple(str(i) for i in range(num_classes))
    if classification and len(labels) != num_classes:
        raise DataError(f"{name}: {len(labels)} class_labels for {num_classes} classes; give one label per class")
    return Dataset(
        name=name, train=train, val=val, test=Split(xt, yt), num_classes=num_classes,
        input_shape=tuple(int(d) for d in xs.shape[1:]), preprocess=preprocess, class_labels=labels, task=task,
    )


def check_model_fits(dataset: Dataset, model: Any) -> None:
    """Forward two samples through ``model`` (eval mode, restored after) and check the output shape."""
    import torch

    x = torch.from_numpy(dataset.preprocess.apply(dataset.train.x[:2]))
    first = next(iter(model.parameters()), None)
    if first is not None:
        x = x.to(first.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"{dataset.name}: sample 0 of shape {dataset.input_shape} does not fit the model ({first_line}); "
            "match the data shape to the model's input"
        ) from None
    finally:
        model.train(was_training)
    if dataset.task == "classification":
        if out.ndim != 2 or out.shape[1] != dataset.num_classes:
            raise DataError(
                f"{dataset.name}: the model outputs shape {tuple(out.shape[1:])} per sample but the data has "
                f"{dataset.num_classes} classes; set the model's num_classes to {dataset.num_classes}"
            )
    elif tuple(out.shape[1:]) != dataset.input_shape:
        raise DataError(
            f"{dataset.name}: autoencoder output {tuple(out.shape[1:])} differs from its input {dataset.input_shape}"
        )

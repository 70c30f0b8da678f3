"""Metrics of validation: top-1, confusion matrix, agreement between runners, SQNR, anomaly scores.

Accuracies are in percent and drops in percentage points, as users and the gate read them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def top1_percent(pred: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent (0 for an empty set)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float(100.0 * np.mean(pred == labels)) if labels.size else 0.0


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` as int64, shape (num_classes, num_classes)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(pred, np.int64)), 1)
    return cm


@dataclass(frozen=True)
class Agreement:
    """How often two runners agree on the same samples (percent)."""

    a: str
    b: str
    identical_outputs: float | None  # int8 outputs equal element for element (None if not both int8)
    identical_top1: float | None  # same argmax (None for non-classifiers)
    max_abs_diff_lsb: int | None  # largest int8 difference seen

    def to_dict(self) -> dict[str, float | int | None | str]:
        return {"a": self.a, "b": self.b, "identical_outputs": self.identical_outputs,
                "identical_top1": self.identical_top1, "max_abs_diff_lsb": self.max_abs_diff_lsb}


def agreement(a: str, b: str, qa: np.ndarray | None, qb: np.ndarray | None,
              pa: np.ndarray | None, pb: np.ndarray | None) -> Agreement:
    """Agreement of runners ``a`` and ``b`` from their int8 outputs ``q*`` and predictions ``p*``."""
    identical = diff = None
    if qa is not None and qb is not None and qa.shape == qb.shape:
        n = qa.shape[0]
        same = (qa.reshape(n, -1) == qb.reshape(n, -1)).all(axis=1)
        identical = float(100.0 * same.mean()) if n else 100.0
        diff = int(np.abs(qa.astype(np.int64) - qb.astype(np.int64)).max(initial=0))
    top = float(100.0 * np.mean(pa == pb)) if pa is not None and pb is not None and len(pa) else None
    return Agreement(a, b, identical, top, diff)


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10*log10(sum(ref^2) / sum((ref-approx)^2)) in dB.

    ``inf`` when identical; ``-inf`` when the reference is all zeros but the approximation is not.
    """
    ref = np.asarray(reference, np.float64).ravel()
    err = ref - np.asarray(approx, np.float64).ravel()
    noise = float(np.sum(err * err))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def roc_auc(scores: np.ndarray, is_anomaly: np.ndarray) -> float | None:
    """ROC AUC of anomaly ``scores`` (higher = more anomalous); None unless both classes occur."""
    labels = np.asarray(is_anomaly).astype(bool)
    if labels.all() or not labels.any():
        return None
    # Mann-Whitney U with average ranks for ties (equals the trapezoidal ROC AUC).
    s = np.asarray(scores, np.float64)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    start = 0
    while start < len(s):
        end = start
        while end + 1 < len(s) and sorted_s[end + 1] == sorted_s[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def reconstruction_error(inputs: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Mean squared error per sample between the model input and its reconstruction."""
    n = inputs.shape[0]
    a = np.asarray(inputs, np.float64).reshape(n, -1)
    b = np.asarray(outputs, np.float64).reshape(n, -1)
    return np.mean((a - b) ** 2, axis=1)

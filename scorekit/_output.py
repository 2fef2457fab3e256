"""The output contract shared by every engine and every path (CLI, functions, database).

One row per input row, in input order: ``prediction`` (the label for classifiers, the value for
regression) and, for classifiers, one ``probability(<class>)`` column per class, in class order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PREDICTION = "prediction"


def finite_or_none(value: Any) -> Any:
    """A value for JSON or SQL: a NaN or infinite float (a missing prediction) becomes None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def probability_column(label: Any) -> str:
    return f"probability({label})"


def output_columns(task: str, classes: Sequence[Any] | None) -> list[str]:
    if task == "classification":
        return [PREDICTION, *(probability_column(c) for c in classes or ())]
    return [PREDICTION]


@dataclass
class Scores:
    """What an engine returns for a batch: predictions and, for classifiers, an (n, k) matrix of
    class probabilities in the manifest's class order."""

    prediction: np.ndarray
    probabilities: np.ndarray | None = None

    @classmethod
    def empty(cls, task: str, n_classes: int) -> Scores:
        if task == "classification":
            return cls(np.empty(0, dtype=object), np.empty((0, n_classes)))
        return cls(np.empty(0, dtype=np.float64))

    def columns(self, classes: Sequence[Any] | None) -> dict[str, np.ndarray]:
        out = {PREDICTION: self.prediction}
        if self.probabilities is not None:
            for j, label in enumerate(classes or ()):
                out[probability_column(label)] = self.probabilities[:, j]
        return out


def labels_from_probabilities(probabilities: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    """The most probable class per row; ties go to the first class, as scikit-learn's argmax.
    A row without probabilities (a missing prediction) gets None, never a made-up label."""
    if not len(probabilities):
        return np.empty(0, dtype=object)
    unknown = np.isnan(probabilities).any(axis=1)
    picked = np.argmax(np.where(unknown[:, None], 0.0, probabilities), axis=1)
    names = np.empty(len(classes), dtype=object)
    names[:] = list(classes)
    labels = names[picked]
    labels[unknown] = None
    return labels


def label_from_probabilities(probabilities: Sequence[float], classes: Sequence[Any]) -> Any:
    """One record's labels_from_probabilities: the first most probable class, or None when a
    probability is missing."""
    if any(map(math.isnan, probabilities)):
        return None
    return classes[probabilities.index(max(probabilities))]  # the first of the highest

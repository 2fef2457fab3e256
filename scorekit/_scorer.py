"""The engine seam: a Scorer turns prepared input columns into Scores.

Engines receive columns already validated by the model's InputSchema (float64 for continuous
fields, object arrays of canonical values for categorical ones, NaN/None for missing) and return
the output contract's Scores. Every engine passes the same contract tests (tests/test_engines.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from ._bundle import Bundle
from ._output import Scores

# One record's answer from an engine's one-record form: (prediction, class probabilities in the
# manifest's class order, or None for a regression).
OneAnswer = tuple[Any, list[float] | None]


class Scorer(Protocol):
    """One loaded model in one engine."""

    engine: str

    def score(self, batch: Mapping[str, np.ndarray]) -> Scores:
        """Predictions for every row of ``batch``, in order."""

    def close(self) -> None:
        """Release what the engine holds (a JVM gateway, file handles)."""


EngineFactory = Callable[[Bundle], Scorer]


def _native(bundle: Bundle) -> Scorer:
    from ._native import NativeScorer

    return NativeScorer.from_bundle(bundle)


def _sklearn(bundle: Bundle) -> Scorer:
    from ._engine_sklearn import SklearnScorer

    return SklearnScorer.from_bundle(bundle)


def _pypmml(bundle: Bundle) -> Scorer:
    from ._engine_pypmml import PypmmlScorer

    return PypmmlScorer.from_bundle(bundle)


# Name -> factory (read-only). Each factory imports its engine's libraries only when called.
ENGINES: Mapping[str, EngineFactory] = MappingProxyType(
    {"native": _native, "sklearn": _sklearn, "pypmml": _pypmml}
)
# The order engine="auto" tries; the first that can score the model wins. native needs numpy
# only; pypmml is the reference implementation (but starts a JVM); the pickle needs the exact
# scikit-learn that made it.
AUTO_ORDER: tuple[str, ...] = ("native", "pypmml", "sklearn")

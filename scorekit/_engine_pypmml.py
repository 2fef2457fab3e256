"""The pypmml engine: the PMML scored by the JVM-based reference evaluator (via py4j).

Slow per call and it needs a Java runtime, but it is an independent implementation of the PMML
standard, so it is the reference the other engines are checked against. One JVM gateway serves
every model in the process; ``shutdown_jvm()`` stops it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._bundle import PMML_FILE, Bundle
from ._errors import EngineUnavailableError, IntegrityError, UnsupportedModelError
from ._manifest import Manifest
from ._output import Scores, labels_from_probabilities, probability_column


def _pypmml_model_class() -> Any:
    try:
        from pypmml import Model
    except ImportError as exc:
        raise EngineUnavailableError(
            "the pypmml engine needs pypmml and a Java runtime; install 'scorekit[pypmml]'"
        ) from exc
    return Model


def shutdown_jvm() -> None:
    """Stop the py4j JVM gateway if one runs; the next pypmml model starts a new one."""
    try:
        from pypmml.base import PMMLContext
    except ImportError:
        return
    PMMLContext.shutdown()


class PypmmlScorer:
    engine = "pypmml"

    def __init__(self, model: Any, manifest: Manifest) -> None:
        self.model = model
        self.manifest = manifest
        outputs = set(model.outputNames)
        if manifest.task == "classification":
            # probability(c) from an Output element, else pypmml's own default probability_c.
            self._probability_columns = [
                probability_column(c) if probability_column(c) in outputs else f"probability_{c}"
                for c in manifest.classes or []
            ]
            absent = [c for c in self._probability_columns if c not in outputs]
            if absent:
                raise UnsupportedModelError(
                    f"the PMML of {manifest.ref} does not output {', '.join(absent)}; the pypmml "
                    f"engine needs one probability output per class (it has: {sorted(outputs)})"
                )
        else:
            predicted = f"predicted_{manifest.target}"
            self._value_column = predicted if predicted in outputs else model.outputNames[0]

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> PypmmlScorer:
        model_class = _pypmml_model_class()
        text = bundle.read(PMML_FILE).decode("utf-8")
        try:
            model = model_class.fromString(text)
        except Exception as exc:
            if "Unsupported" in str(exc):
                raise UnsupportedModelError(
                    f"pypmml can't score {bundle.where}/{PMML_FILE}: {exc}"
                ) from exc
            raise IntegrityError(
                f"pypmml can't load {bundle.where}/{PMML_FILE}: {type(exc).__name__}: {exc}"
            ) from exc
        return cls(model, bundle.manifest)

    def score(self, batch: Mapping[str, np.ndarray]) -> Scores:
        result = self.model.predict(self.manifest.schema.frame(batch))
        if self.manifest.task == "classification":
            probabilities = result[self._probability_columns].to_numpy(dtype=np.float64)
            return Scores(
                labels_from_probabilities(probabilities, self.manifest.classes or []),
                probabilities,
            )
        return Scores(result[self._value_column].to_numpy(dtype=np.float64))

    def close(self) -> None:
        pass

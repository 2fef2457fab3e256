"""The sklearn engine: the fitted pipeline from model.pkl, exactly as trained."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import numpy as np

from ._bundle import PICKLE_FILE, Bundle
from ._errors import EngineUnavailableError, IncompatibleModelError, IntegrityError
from ._manifest import Manifest
from ._output import Scores


def installed_sklearn_version() -> str:
    try:
        return metadata.version("scikit-learn")
    except metadata.PackageNotFoundError as exc:
        raise EngineUnavailableError(
            "the sklearn engine needs scikit-learn, which is not installed; install "
            "'scorekit[train]' or score the PMML with engine='native' or 'pypmml'"
        ) from exc


def check_sklearn_version(manifest: Manifest) -> None:
    """Refuse a pickle made with another scikit-learn: unpickling across versions is unsafe."""
    recorded = manifest.libraries.get("scikit-learn")
    installed = installed_sklearn_version()
    if recorded and recorded != installed:
        raise IncompatibleModelError(
            f"model.pkl of {manifest.ref} was made with scikit-learn {recorded}, but scikit-learn "
            f"{installed} is installed; a pickle is only safe with the version that made it. "
            f"Install scikit-learn=={recorded}, or score the PMML with engine='native' or 'pypmml'."
        )


def unpickle(data: bytes, where: str) -> Any:
    """joblib.load from bytes, refusing a pickle whose recorded scikit-learn version differs."""
    try:
        import joblib
        from sklearn.exceptions import InconsistentVersionWarning
    except ImportError as exc:
        raise EngineUnavailableError(
            "the sklearn engine needs scikit-learn and joblib; install 'scorekit[train]'"
        ) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        try:
            return joblib.load(io.BytesIO(data))
        except InconsistentVersionWarning as exc:
            raise IncompatibleModelError(
                f"{where} was pickled with scikit-learn {exc.original_sklearn_version}, but "
                f"scikit-learn {exc.current_sklearn_version} is installed; use the version that "
                "made it, or score the PMML with engine='native' or 'pypmml'."
            ) from exc
        except Exception as exc:
            raise IntegrityError(
                f"{where} can't be unpickled: {type(exc).__name__}: {exc}"
            ) from exc


class SklearnScorer:
    engine = "sklearn"

    def __init__(self, pipeline: Any, manifest: Manifest) -> None:
        self.pipeline = pipeline
        self.manifest = manifest

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> SklearnScorer:
        check_sklearn_version(bundle.manifest)
        data = bundle.read(PICKLE_FILE)  # sha256 checked before unpickling
        return cls(unpickle(data, f"{bundle.where}/{PICKLE_FILE}"), bundle.manifest)

    def score(self, batch: Mapping[str, np.ndarray]) -> Scores:
        frame = self.manifest.schema.frame(batch)
        n_rows = len(frame)
        if self.manifest.task == "regression":
            return Scores(np.asarray(self.pipeline.predict(frame), dtype=np.float64))
        probabilities = np.asarray(self.pipeline.predict_proba(frame), dtype=np.float64)
        labels = np.empty(n_rows, dtype=object)
        labels[:] = np.asarray(self.pipeline.predict(frame)).tolist()
        return Scores(labels, probabilities)

    def close(self) -> None:
        pass

"""Training: a sklearn2pmml PMMLPipeline fitted on a CSV, exported as PMML and pickle, published.

The pipeline's first step declares each field's domain (ContinuousDomain with missing-value
replacement; CategoricalDomain plus one-hot encoding), so the PMML carries the same treatments
the scorer's InputSchema enforces. scikit-learn, pandas and sklearn2pmml are imported here only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import platform
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._bundle import PICKLE_FILE, PMML_FILE
from ._csvio import CsvReader
from ._errors import InputError, ScorekitError, UsageError
from ._manifest import Manifest
from ._schema import FALSE_TOKENS, TRUE_TOKENS, Field, InputSchema, is_missing
from ._store import ModelStore, check_name, open_store

log = logging.getLogger("scorekit")

ALGORITHMS = ("logreg", "tree", "forest", "extratrees", "gbm", "hgb")
INVALID_CHOICES = {"error": "return_invalid", "missing": "as_missing"}
# An integer target with at most this many distinct values is taken as class labels.
MAX_INFERRED_CLASSES = 20
VERIFICATION_ROWS = 20


@dataclass
class TrainingData:
    schema: InputSchema
    columns: dict[str, np.ndarray]
    target: np.ndarray
    task: str
    classes: list[Any] | None
    dropped_rows: int


def _numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def infer_field(
    name: str, values: list[str], *, categorical: bool, invalid_treatment: str
) -> Field:
    """A Field for a training column of raw strings."""
    present = [v for v in values if not is_missing(v)]
    if not present:
        raise InputError(f"training column {name!r} has no values; drop it or fill it")
    numbers = _numbers(present)
    if numbers is not None and not categorical:
        return Field(
            name,
            "continuous",
            "double",
            observed_range=(min(numbers), max(numbers)),
            missing_replacement=float(np.median(numbers)),
            invalid_treatment=invalid_treatment,
        )
    if numbers is not None:
        dtype = "integer" if all(x.is_integer() for x in numbers) else "double"
    elif all(v.strip().lower() in TRUE_TOKENS | FALSE_TOKENS for v in present):
        dtype = "boolean"
    else:
        dtype = "string"
    probe = Field(name, "categorical", dtype)
    canonical, _ = probe.prepare(present)
    counts = Counter(canonical.tolist())
    categories = tuple(sorted(counts))
    most_frequent = min(counts, key=lambda c: (-counts[c], categories.index(c)))
    return Field(
        name,
        "categorical",
        dtype,
        categories=categories,
        missing_replacement=most_frequent,
        invalid_treatment=invalid_treatment,
    )


def load_training_data(
    path: str | os.PathLike[str],
    target: str,
    *,
    task: str | None = None,
    categorical: tuple[str, ...] = (),
    invalid: str = "error",
) -> TrainingData:
    """Read a CSV and infer its schema: numbers are continuous unless listed in ``categorical``."""
    if invalid not in INVALID_CHOICES:
        raise UsageError(f"--invalid must be one of {', '.join(INVALID_CHOICES)}, got {invalid!r}")
    with CsvReader(path) as reader:
        raw = reader.read_all()
    if target not in raw:
        raise UsageError(
            f"target column {target!r} is not in {path}; its columns are: {', '.join(raw)}"
        )
    unknown = [c for c in categorical if c not in raw or c == target]
    if unknown:
        raise UsageError(
            f"--categorical names column(s) not among the features: {', '.join(unknown)}"
        )
    keep = [i for i, v in enumerate(raw[target]) if not is_missing(v)]
    dropped = len(raw[target]) - len(keep)
    if dropped:
        log.warning("dropping %d row(s) of %s with no value for target %s", dropped, path, target)
    raw = {name: [values[i] for i in keep] for name, values in raw.items()}
    if len(keep) < 10:
        raise InputError(f"{path} has {len(keep)} labelled rows; training needs at least 10")
    treatment = INVALID_CHOICES[invalid]
    fields = tuple(
        infer_field(name, values, categorical=name in categorical, invalid_treatment=treatment)
        for name, values in raw.items()
        if name != target
    )
    schema = InputSchema(fields)
    columns = schema.prepare(raw, f"training data {path}")
    target_values = raw[target]
    numbers = _numbers(target_values)
    if task is None:
        integral = numbers is not None and all(x.is_integer() for x in numbers)
        few = len(set(target_values)) <= MAX_INFERRED_CLASSES
        task = "classification" if numbers is None or (integral and few) else "regression"
    if task == "regression":
        if numbers is None:
            raise UsageError(
                f"target {target!r} is not numeric, so it can't be a regression target"
            )
        return TrainingData(schema, columns, np.array(numbers), task, None, dropped)
    if task != "classification":
        raise UsageError(f"--task must be classification or regression, got {task!r}")
    if numbers is not None and all(x.is_integer() for x in numbers):
        y = np.array([int(x) for x in numbers], dtype=np.int64)
    else:
        y = np.array(target_values, dtype=object)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise InputError(f"target {target!r} has a single class {classes}; nothing to learn")
    return TrainingData(schema, columns, y, task, classes, dropped)


def build_pipeline(schema: InputSchema, task: str, algorithm: str, seed: int) -> Any:
    """A PMMLPipeline: per-field domains, one-hot for categories, then the estimator."""
    from sklearn import ensemble, linear_model, tree
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn2pmml.decoration import CategoricalDomain, ContinuousDomain
    from sklearn2pmml.pipeline import PMMLPipeline

    if algorithm not in ALGORITHMS:
        raise UsageError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    steps = []
    for f in schema.fields:
        common = {
            "missing_value_treatment": "as_value",
            "missing_value_replacement": f.missing_replacement,
            "invalid_value_treatment": f.invalid_treatment,
        }
        if f.is_continuous:
            # with_data=False: a value outside the training range stays valid (it is not refused).
            domain: Any = ContinuousDomain(with_data=False, **common)
            step = make_pipeline(domain, StandardScaler()) if algorithm == "logreg" else domain
        else:
            # The domain and the encoder know every category of the whole data set, as the
            # manifest's schema does: a category that fell only into the holdout split is valid
            # (its one-hot column just gets no weight), not an error at evaluation or scoring.
            categories = np.array(f.categories, dtype=object)
            step = make_pipeline(
                CategoricalDomain(data_values=[categories], **common),
                OneHotEncoder(categories=[categories], sparse_output=False),
            )
        steps.append((f.name, step, [f.name]))
    classification = task == "classification"
    estimators: dict[str, Any] = {
        "logreg": (
            linear_model.LogisticRegression(max_iter=5000)
            if classification
            else linear_model.LinearRegression()
        ),
        "tree": (tree.DecisionTreeClassifier if classification else tree.DecisionTreeRegressor)(
            max_depth=8, min_samples_leaf=5, random_state=seed
        ),
        "forest": (
            ensemble.RandomForestClassifier if classification else ensemble.RandomForestRegressor
        )(n_estimators=100, min_samples_leaf=3, random_state=seed, n_jobs=1),
        "extratrees": (
            ensemble.ExtraTreesClassifier if classification else ensemble.ExtraTreesRegressor
        )(n_estimators=100, min_samples_leaf=3, random_state=seed, n_jobs=1),
        "hgb": (
            ensemble.HistGradientBoostingClassifier
            if classification
            else ensemble.HistGradientBoostingRegressor
        )(max_iter=100, random_state=seed),
        "gbm": (
            ensemble.GradientBoostingClassifier
            if classification
            else ensemble.GradientBoostingRegressor
        )(n_estimators=100, random_state=seed),
    }
    return PMMLPipeline(
        [
            ("features", ColumnTransformer(steps)),
            ("estimator", estimators[algorithm]),
        ]
    )


def holdout_metrics(pipeline: Any, x: Any, y: np.ndarray, task: str) -> dict[str, float]:
    from sklearn import metrics

    if task == "regression":
        predicted = pipeline.predict(x)
        return {
            "rmse": float(math.sqrt(metrics.mean_squared_error(y, predicted))),
            "mae": float(metrics.mean_absolute_error(y, predicted)),
            "r2": float(metrics.r2_score(y, predicted)),
        }
    probabilities = pipeline.predict_proba(x)
    classes = list(pipeline.classes_)
    y_list = list(y)
    if len(classes) == 2:
        auc = metrics.roc_auc_score([label == classes[1] for label in y_list], probabilities[:, 1])
    else:
        auc = metrics.roc_auc_score(y_list, probabilities, multi_class="ovr", labels=classes)
    return {
        "roc_auc": float(auc),
        "accuracy": float(metrics.accuracy_score(y_list, list(pipeline.predict(x)))),
        "log_loss": float(metrics.log_loss(y_list, probabilities, labels=classes)),
    }


def library_versions() -> dict[str, str]:
    from importlib import metadata  # 12 ms at import: only training needs it

    versions = {"python": platform.python_version()}
    for package in ("scikit-learn", "numpy", "sklearn2pmml", "pandas", "joblib"):
        versions[package] = metadata.version(package)
    return versions


def export_pmml(pipeline: Any) -> bytes:
    """PMML bytes from sklearn2pmml's JVM converter; its console output is kept out of ours."""
    from sklearn2pmml import sklearn2pmml

    with tempfile.TemporaryDirectory(prefix="scorekit-pmml-") as tmp:
        target = Path(tmp) / PMML_FILE
        console = io.StringIO()
        try:
            with contextlib.redirect_stdout(console):
                sklearn2pmml(pipeline, str(target))
        except RuntimeError as exc:
            raise ScorekitError(
                f"sklearn2pmml could not convert the pipeline ({exc}); its output:\n"
                f"{console.getvalue()[-4000:]}"
            ) from exc
        log.debug("sklearn2pmml: %s", console.getvalue())
        return target.read_bytes()


@dataclass
class Fitted:
    """A fitted pipeline with its manifest (no version yet) and the holdout it was scored on."""

    pipeline: Any
    manifest: Manifest
    holdout: Any  # the holdout's features (a DataFrame), for verification rows


def fit(
    data: str | os.PathLike[str],
    target: str,
    name: str,
    *,
    algorithm: str = "logreg",
    task: str | None = None,
    categorical: tuple[str, ...] = (),
    invalid: str = "error",
    seed: int = 42,
    test_size: float = 0.25,
    extra: dict[str, Any] | None = None,
) -> Fitted:
    """Read ``data``, infer its schema, fit the pipeline on a split and evaluate it on the rest.
    ``extra`` goes into the manifest (for instance the data's date)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    check_name(name)
    training = load_training_data(data, target, task=task, categorical=categorical, invalid=invalid)
    frame = training.schema.frame(training.columns)
    y = training.target
    stratify = y if training.task == "classification" else None
    x_train, x_test, y_train, y_test = train_test_split(
        frame, y, test_size=test_size, random_state=seed, stratify=stratify
    )
    pipeline = build_pipeline(training.schema, training.task, algorithm, seed)
    # A named Series: sklearn2pmml takes the PMML target field's name from it.
    pipeline.fit(x_train, pd.Series(y_train, name=target, dtype=y_train.dtype))
    metrics = holdout_metrics(pipeline, x_test, y_test, training.task)
    classes = None
    if training.task == "classification":
        classes = [c.item() if isinstance(c, np.generic) else c for c in pipeline.classes_]
    manifest = Manifest(
        name=name,
        version="",
        task=training.task,
        target=target,
        schema=training.schema,
        classes=classes,
        algorithm=f"{algorithm}: {type(pipeline.steps[-1][1]).__name__}",
        metrics=metrics,
        libraries=library_versions(),
        extra={
            "training_rows": len(x_train),
            "holdout_rows": len(x_test),
            "seed": seed,
            "data": os.fspath(data),
            **(extra or {}),
        },
    )
    return Fitted(pipeline, manifest, x_test)


def export_artifacts(fitted: Fitted) -> dict[str, bytes]:
    """The PMML (with verification rows from the holdout, so loading it checks the engine) and
    the pickle (which carries its manifest, so a standalone copy still knows its schema)."""
    import joblib

    seed = int(fitted.manifest.extra.get("seed", 0))
    holdout = fitted.holdout
    fitted.pipeline.verify(
        holdout.sample(n=min(VERIFICATION_ROWS, len(holdout)), random_state=seed)
    )
    pmml = export_pmml(fitted.pipeline)
    fitted.pipeline.scorekit_manifest_ = fitted.manifest.to_dict()
    pickled = io.BytesIO()
    joblib.dump(fitted.pipeline, pickled)
    return {PMML_FILE: pmml, PICKLE_FILE: pickled.getvalue()}


def train(
    data: str | os.PathLike[str],
    target: str,
    name: str,
    *,
    algorithm: str = "logreg",
    store: str | os.PathLike[str] | ModelStore | None = None,
    task: str | None = None,
    categorical: tuple[str, ...] = (),
    invalid: str = "error",
    seed: int = 42,
    test_size: float = 0.25,
    promote: bool | None = None,
) -> Manifest:
    """Fit, evaluate on a holdout, export PMML (with verification rows) and pickle, and publish.

    Returns the published manifest (its ``version`` is set). The first version of a model
    becomes its champion unless ``promote`` says otherwise.
    """
    model_store = open_store(store)
    fitted = fit(
        data,
        target,
        name,
        algorithm=algorithm,
        task=task,
        categorical=categorical,
        invalid=invalid,
        seed=seed,
        test_size=test_size,
    )
    manifest = fitted.manifest
    version = model_store.publish(manifest, export_artifacts(fitted), promote=promote)
    log.info(
        "published %s@%s to %s (%s)",
        name,
        version,
        model_store.url,
        ", ".join(f"{k}={v:.4f}" for k, v in manifest.metrics.items()),
    )
    return manifest

"""The nightly pipeline's steps as plain functions: what dags/scorekit_nightly.py and
dags/scorekit_batch_score.py call, one task each, and what the tests call without Airflow.

Every step works on its own partition (``partition``: the day of data a run processes, from the
run's logical date, never "today") and is idempotent: the extract upserts, a challenger is kept
per (model, partition) in etl.challengers, a partition publishes at most one version, and a
decision is recorded once per partition. Nothing but :func:`promote` changes the champion, so a
failure at any earlier step leaves the champion as it was.

Tables are in sql/etl/schema.sql; the day's extract is sql/etl/extract.sql.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import io
import json
import logging
import math
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._batch import BatchJob, BatchResult, run_batch
from ._config import env_number
from ._errors import InputError, ModelError, ModelNotFoundError
from ._manifest import Manifest
from ._model import Model
from ._store import CHAMPION, open_store

log = logging.getLogger("scorekit.pipeline")

ETL_DIR = Path(__file__).resolve().parents[1] / "sql" / "etl"
# model field -> etl.features column
FEATURES = {
    "Age": "age",
    "Employment": "employment",
    "Education": "education",
    "Marital": "marital",
    "Occupation": "occupation",
    "Income": "income",
    "Gender": "gender",
    "Deductions": "deductions",
    "Hours": "hours",
}
TARGET = "Adjusted"
HOLDOUT_MODULUS = 5  # applications with id % 5 == 0 are the holdout, the same every night
MIN_TRAINING_ROWS = 200
PSI_BINS = 10
PSI_EPSILON = 1e-4  # a bin empty on one side counts as this share, so PSI stays finite


@dataclass(frozen=True)
class Settings:
    """What the pipeline needs: the database, the model store, the model's name, the margin a
    challenger must beat the champion by, and the drift threshold."""

    dsn: str
    store: str
    model: str = "audit"
    algorithm: str = "logreg"
    margin: float = 0.005
    drift_threshold: float = 0.2
    invalid: str = "error"  # unseen categories and bad numbers: refuse the row (or "missing")

    @classmethod
    def from_env(cls, dsn: str, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from SCOREKIT_STORE, SCOREKIT_MODEL, SCOREKIT_ALGORITHM,
        SCOREKIT_PROMOTE_MARGIN and SCOREKIT_DRIFT_THRESHOLD."""
        env = os.environ if env is None else env

        return cls(
            dsn=dsn,
            store=env.get("SCOREKIT_STORE") or "pmml",
            model=env.get("SCOREKIT_MODEL") or "audit",
            algorithm=env.get("SCOREKIT_ALGORITHM") or "logreg",
            margin=env_number(env, "SCOREKIT_PROMOTE_MARGIN", 0.005),
            drift_threshold=env_number(env, "SCOREKIT_DRIFT_THRESHOLD", 0.2),
        )


def partition_of(logical_date: dt.datetime | dt.date) -> dt.date:
    """The day of data a run processes: the day before its logical date (a run at 02:00 on the
    21st processes what arrived on the 20th)."""
    day = logical_date.date() if isinstance(logical_date, dt.datetime) else logical_date
    return day - dt.timedelta(days=1)


@contextlib.contextmanager
def _connect(dsn: str) -> Iterator[Any]:
    """A connection whose block is one transaction, errors translated."""
    from ._db import connect

    with connect(dsn) as conn:
        yield conn


def ensure_schema(dsn: str) -> None:
    with _connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('scorekit.etl.ddl'))")
        conn.execute((ETL_DIR / "schema.sql").read_text())


# --- demo data ---------------------------------------------------------------------------------
def seed_raw_events(
    dsn: str, data: str | os.PathLike[str], first_day: dt.date, days: int = 5
) -> dict[str, int]:
    """Turn ``data`` (audit.csv) into raw events arriving over ``days`` days from
    ``first_day``: the first day brings half the rows with their labels (history), each later
    day a share of the rest, whose labels arrive the day after. Two malformed documents and a
    malformed label land on the second day, to be quarantined; an out-of-range age, an unseen
    occupation and a missing income on the third. Idempotent: it replaces the raw tables'
    rows."""
    ensure_schema(dsn)
    with open(data, newline="") as f:
        rows = list(csv.DictReader(f))
    history = len(rows) // 2
    per_day = math.ceil((len(rows) - history) / max(days - 1, 1))
    events: list[tuple[int, int, dt.date, str]] = []
    labels: list[tuple[int, str | None, dt.date]] = []
    for i, row in enumerate(rows):
        application = i + 1
        day = 0 if i < history else 1 + (i - history) // per_day
        arrived = first_day + dt.timedelta(days=day)
        payload = {name: row[name] for name in FEATURES}
        events.append((application, application, arrived, _json(payload)))
        labels.append(
            (application, row[TARGET], arrived if day == 0 else arrived + dt.timedelta(days=1))
        )
    # Odd but well-formed values on the third day, for the model's treatments (and the counts):
    # an age beyond the training range, an occupation never seen, a missing income.
    third = [i for i, event in enumerate(events) if event[2] == first_day + dt.timedelta(days=2)]
    for i, (field, value) in zip(
        third, [("Age", "150"), ("Occupation", "Astronaut"), ("Income", "")], strict=False
    ):
        application, _, arrived, payload_text = events[i]
        payload = {**json.loads(payload_text), field: value}
        events[i] = (application, application, arrived, _json(payload))
    second = first_day + dt.timedelta(days=1)
    base = len(rows)
    broken = [
        {name: "40" if name == "Age" else "x" for name in FEATURES if name != "Hours"},
        {**{name: rows[0][name] for name in FEATURES}, "Income": "lots"},
    ]
    for j, payload in enumerate(broken, start=1):
        events.append((base + j, base + j, second, _json(payload)))
    labels.append((base + 1, "maybe", second + dt.timedelta(days=1)))
    with _connect(dsn) as conn:
        conn.execute("TRUNCATE etl.raw_applications, etl.raw_labels")
        with conn.cursor().copy(
            "COPY etl.raw_applications (event_id, application_id, arrived_on, payload) FROM STDIN"
        ) as copy:
            for event in events:
                copy.write_row(event)
        with conn.cursor().copy(
            "COPY etl.raw_labels (application_id, adjusted, arrived_on) FROM STDIN"
        ) as copy:
            for label in labels:
                copy.write_row(label)
    return {"events": len(events), "labels": len(labels), "days": days}


def _json(value: Any) -> str:
    return json.dumps(value)


# --- extract -----------------------------------------------------------------------------------
@dataclass
class ExtractCounts:
    partition: dt.date
    rows_loaded: int
    quarantined: int
    labels_loaded: int
    with_nulls: int
    unseen_values: int
    out_of_range: int

    def line(self) -> str:
        return (
            f"extract {self.partition}: {self.rows_loaded} rows loaded, {self.quarantined} "
            f"quarantined, {self.labels_loaded} labels; {self.with_nulls} rows with missing "
            f"values, {self.unseen_values} unseen categories and {self.out_of_range} numbers "
            "outside the champion's training range (scored as the model's treatments say)"
        )


def extract(settings: Settings, partition: dt.date) -> ExtractCounts:
    """Build ``partition``'s features and labels (sql/etl/extract.sql) and count what the
    model's treatments will see: missing values, and against the champion's schema, unseen
    categories and numbers outside the training range."""
    ensure_schema(settings.dsn)
    with _connect(settings.dsn) as conn:
        from psycopg import ClientCursor

        # The script is several statements; a client-side cursor binds the parameter into all.
        ClientCursor(conn).execute((ETL_DIR / "extract.sql").read_text(), {"partition": partition})
        columns = ", ".join(FEATURES.values())
        rows = conn.execute(
            f"SELECT {columns} FROM etl.features WHERE feature_date = %s", [partition]
        ).fetchall()
        quarantined = conn.execute(
            "SELECT count(*) FROM etl.quarantine WHERE partition_date = %s", [partition]
        ).fetchone()[0]
        labels = conn.execute(
            "SELECT count(*) FROM etl.labels WHERE label_date = %s", [partition]
        ).fetchone()[0]
        unseen, out_of_range = _unusual(_champion_manifest(settings), rows)
        counts = ExtractCounts(
            partition,
            len(rows),
            int(quarantined),
            int(labels),
            sum(any(v is None for v in row) for row in rows),
            unseen,
            out_of_range,
        )
        conn.execute(
            "INSERT INTO etl.extract_log VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (partition_date) DO UPDATE SET rows_loaded = excluded.rows_loaded, "
            "quarantined = excluded.quarantined, labels_loaded = excluded.labels_loaded, "
            "with_nulls = excluded.with_nulls, unseen_values = excluded.unseen_values, "
            "out_of_range = excluded.out_of_range",
            [partition, counts.rows_loaded, counts.quarantined, counts.labels_loaded,
             counts.with_nulls, counts.unseen_values, counts.out_of_range],
        )  # fmt: skip
    log.info(counts.line())
    return counts


def _unusual(manifest: Manifest | None, rows: list[tuple[Any, ...]]) -> tuple[int, int]:
    """(values the champion's schema calls invalid, such as unseen categories; numbers outside
    its training range) among ``rows`` (etl.features columns in FEATURES order)."""
    if manifest is None:
        return 0, 0
    invalid = out_of_range = 0
    for j, name in enumerate(FEATURES):
        spec = manifest.schema[name]
        values = [row[j] for row in rows]
        strict = dataclasses.replace(spec, invalid_treatment="return_invalid")
        _, problems, _ = strict._prepare(values, 0, len(values))
        invalid += len(problems)
        if spec.is_continuous and spec.observed_range is not None:
            low, high = spec.observed_range
            out_of_range += sum(v is not None and not low <= float(v) <= high for v in values)
    return invalid, out_of_range


def _champion_manifest(settings: Settings) -> Manifest | None:
    store = open_store(settings.store)
    try:
        version = store.resolve(settings.model)
    except ModelNotFoundError:
        return None
    return store.manifest(settings.model, version)


# --- train, evaluate, gate ---------------------------------------------------------------------
def _labelled(conn: Any, partition: dt.date, holdout: bool) -> list[tuple[Any, ...]]:
    columns = ", ".join(f"f.{c}" for c in FEATURES.values())
    which = "=" if holdout else "<>"
    return list(
        conn.execute(
            f"SELECT {columns}, l.adjusted FROM etl.features f JOIN etl.labels l "
            "USING (application_id) WHERE f.feature_date <= %s AND l.label_date <= %s "
            f"AND f.application_id %% {HOLDOUT_MODULUS} {which} 0 "
            "ORDER BY f.application_id, f.feature_date",
            [partition, partition],
        ).fetchall()
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def train_challenger(settings: Settings, partition: dt.date) -> dict[str, Any]:
    """Fit a challenger on the labelled rows up to ``partition`` (the holdout's excepted) and
    keep it in etl.challengers; returns its training rows and metrics."""
    import joblib

    from ._training import fit

    with _connect(settings.dsn) as conn:
        rows = _labelled(conn, partition, holdout=False)
    if len(rows) < MIN_TRAINING_ROWS:
        raise InputError(
            f"only {len(rows)} labelled rows up to {partition}; training a challenger needs at "
            f"least {MIN_TRAINING_ROWS}. Load more days (or labels) first"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"training-{partition}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*FEATURES, TARGET])
            writer.writerows([_cell(v) for v in row] for row in rows)
        fitted = fit(
            path,
            TARGET,
            settings.model,
            algorithm=settings.algorithm,
            invalid=settings.invalid,
            extra={
                "partition_date": partition.isoformat(),
                "trained_by": "scorekit_nightly",
                # which training this is: a retried publish finds its version by it
                "challenger_id": uuid.uuid4().hex,
            },
        )
    fitted.manifest.extra["data"] = f"etl.features up to {partition}"
    buffer = io.BytesIO()
    joblib.dump(
        {
            "pipeline": fitted.pipeline,
            "manifest": fitted.manifest.to_dict(),
            "holdout": fitted.holdout,
        },
        buffer,
    )
    with _connect(settings.dsn) as conn:
        conn.execute(
            "INSERT INTO etl.challengers (model, partition_date, fitted) VALUES (%s, %s, %s) "
            "ON CONFLICT (model, partition_date) DO UPDATE SET fitted = excluded.fitted, "
            "pmml = NULL, pickle = NULL",
            [settings.model, partition, buffer.getvalue()],
        )
    log.info(
        "challenger for %s: %d training rows, holdout metrics %s",
        partition, len(rows), fitted.manifest.metrics,
    )  # fmt: skip
    return {"training_rows": len(rows), "metrics": fitted.manifest.metrics}


def _load_fitted(conn: Any, settings: Settings, partition: dt.date) -> Any:
    import joblib

    from ._training import Fitted

    row = conn.execute(
        "SELECT fitted FROM etl.challengers WHERE model = %s AND partition_date = %s",
        [settings.model, partition],
    ).fetchone()
    if row is None:
        raise ModelNotFoundError(
            f"no challenger of {settings.model} for {partition} in etl.challengers; run the "
            "train task for that day first"
        )
    saved = joblib.load(io.BytesIO(bytes(row[0])))
    return Fitted(saved["pipeline"], Manifest.from_dict(saved["manifest"]), saved["holdout"])


def _metric(model: Model, scored: dict[str, np.ndarray], truth: list[Any]) -> tuple[str, float]:
    """(metric, value) of ``scored`` against ``truth``: ROC AUC for classifiers, negative RMSE
    for regressions (higher is better either way)."""
    from sklearn import metrics

    if model.task == "regression":
        error = math.sqrt(metrics.mean_squared_error(truth, scored["prediction"]))
        return "neg_rmse", -error
    classes = model.classes or []
    probabilities = np.column_stack([scored[f"probability({c})"] for c in classes])
    if len(classes) == 2:
        value = metrics.roc_auc_score([t == classes[1] for t in truth], probabilities[:, 1])
    else:
        value = metrics.roc_auc_score(truth, probabilities, multi_class="ovr", labels=classes)
    return "roc_auc", float(value)


def _on_common_rows(
    models: list[Model], columns: dict[str, list[Any]], y: list[Any]
) -> tuple[list[tuple[str, float]], int]:
    """Each model's metric on the holdout rows every one of them can score (a row one model
    refuses, such as a category only the other has seen, is left out for all)."""
    kept = None
    for model in models:
        _, rows, _ = model.predict_partial(columns)
        kept = set(rows.tolist()) if kept is None else kept & set(rows.tolist())
    common = sorted(kept or [])
    subset = {name: [values[i] for i in common] for name, values in columns.items()}
    truth = [y[i] for i in common]
    return [_metric(model, model.predict_columns(subset), truth) for model in models], len(common)


def champions(settings: Settings) -> tuple[str | None, str | None]:
    """The champion's version in the store and in the database (None: no champion there)."""
    store = open_store(settings.store)
    try:
        in_store: str | None = store.resolve(settings.model)
    except ModelNotFoundError:
        in_store = None
    with _connect(settings.dsn) as conn:
        row = conn.execute("SELECT scorekit.champion(%s)", [settings.model]).fetchone()
    return in_store, (None if row is None or row[0] is None else str(row[0]))


def _check_champions_agree(settings: Settings) -> str | None:
    """The champion, refusing to go on when the store and the database disagree (a promote
    that stopped half way): deciding against either would be deciding against the wrong one."""
    in_store, in_db = champions(settings)
    if in_store != in_db:
        raise ModelError(
            f"the champion of {settings.model} is version {in_store} in the store "
            f"({settings.store}) but {in_db} in the database; finish or undo the promote "
            f"(scorekit models promote / scorekit db promote {settings.model} <version>) "
            "before the pipeline decides anything"
        )
    return in_store


def evaluate(settings: Settings, partition: dt.date) -> dict[str, Any]:
    """Score the challenger and the champion on the same holdout, decide, and record it in
    etl.decisions: verdict 'promote' when there is no champion or the challenger beats it by
    at least ``settings.margin``."""
    from ._engine_sklearn import SklearnScorer
    from ._loading import load_model

    with _connect(settings.dsn) as conn:
        fitted = _load_fitted(conn, settings, partition)
        rows = _labelled(conn, partition, holdout=True)
    if not rows:
        raise InputError(f"no labelled holdout rows up to {partition}: nothing to compare on")
    columns = {name: [row[j] for row in rows] for j, name in enumerate(FEATURES)}
    y = [int(row[-1]) for row in rows]
    challenger = Model(fitted.manifest, SklearnScorer(fitted.pipeline, fitted.manifest))
    champion_version = _check_champions_agree(settings)
    champion_score = None
    if champion_version is None:
        ((metric, challenger_score),), n = _on_common_rows([challenger], columns, y)
        verdict = "promote"
        reason = "no champion yet"
    else:
        champion = load_model(
            f"{settings.model}@{champion_version}", engine="native", store=settings.store
        )
        trained_on = champion.manifest.extra.get("partition_date")
        scores, n = _on_common_rows([challenger, champion], columns, y)
        (metric, challenger_score), (_, champion_score) = scores
        better = challenger_score - champion_score
        if trained_on and trained_on > partition.isoformat():
            verdict = "older than the champion's data"
        else:
            verdict = "promote" if better >= settings.margin else "keep champion"
        reason = (
            f"challenger {metric} {challenger_score:.4f} vs champion {champion.ref} "
            f"{champion_score:.4f} on the same {n} holdout rows: {better:+.4f} (margin "
            f"{settings.margin}); {verdict}"
        )
    with _connect(settings.dsn) as conn:
        conn.execute(
            "INSERT INTO etl.decisions (model, partition_date, metric, holdout_rows, "
            "challenger_score, champion_version, champion_score, verdict) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (model, partition_date) DO "
            "UPDATE SET metric = excluded.metric, holdout_rows = excluded.holdout_rows, "
            "challenger_score = excluded.challenger_score, "
            "champion_version = excluded.champion_version, "
            "champion_score = excluded.champion_score, verdict = excluded.verdict "
            "WHERE NOT decisions.promoted",
            [settings.model, partition, metric, n, challenger_score, champion_version,
             champion_score, verdict],
        )  # fmt: skip
    log.info("decision for %s: %s (%s)", partition, verdict, reason)
    return {
        "metric": metric,
        "holdout_rows": n,
        "challenger": challenger_score,
        "champion_version": champion_version,
        "champion": champion_score,
        "promote": verdict == "promote",
        "reason": reason,
    }


# --- export, publish, promote ------------------------------------------------------------------
def export_and_verify(settings: Settings, partition: dt.date) -> dict[str, Any]:
    """Export the challenger as PMML (with verification rows) and pickle, then check that the
    native engine scoring the PMML agrees with the pickle on the holdout to 1e-9, labels
    exactly; keeps the artifacts in etl.challengers."""
    from ._bundle import PICKLE_FILE, PMML_FILE
    from ._engine_sklearn import SklearnScorer
    from ._native import NativeScorer
    from ._training import export_artifacts

    with _connect(settings.dsn) as conn:
        fitted = _load_fitted(conn, settings, partition)
        rows = _labelled(conn, partition, holdout=True)
    artifacts = export_artifacts(fitted)
    manifest = fitted.manifest
    native = Model(manifest, NativeScorer(artifacts[PMML_FILE], manifest))
    pickled = Model(manifest, SklearnScorer(fitted.pipeline, manifest))
    columns = {name: [row[j] for row in rows] for j, name in enumerate(FEATURES)}
    ours, kept, _ = native.predict_partial(columns)
    theirs, kept_too, _ = pickled.predict_partial(columns)
    if not np.array_equal(kept, kept_too):
        raise ModelError(f"the PMML and the pickle of {settings.model} refuse different rows")
    worst = 0.0
    for name in native.output_columns[1:]:
        worst = max(worst, float(np.max(np.abs(ours[name] - theirs[name]), initial=0.0)))
    labels_equal = bool(np.array_equal(ours["prediction"], theirs["prediction"]))
    if worst > 1e-9 or not labels_equal:
        raise ModelError(
            f"the PMML of the {partition} challenger disagrees with its pickle on the holdout "
            f"(max |diff| {worst:.2e}, labels equal: {labels_equal}); it is not published"
        )
    with _connect(settings.dsn) as conn:
        conn.execute(
            "UPDATE etl.challengers SET pmml = %s, pickle = %s WHERE model = %s "
            "AND partition_date = %s",
            [artifacts[PMML_FILE], artifacts[PICKLE_FILE], settings.model, partition],
        )
    log.info("verified %s: %d holdout rows, max |diff| %.1e", partition, len(kept), worst)
    return {"rows": len(kept), "max_diff": worst}


def publish(settings: Settings, partition: dt.date) -> str:
    """Publish the verified challenger to the store and the database, unpromoted; returns its
    version. A challenger publishes once: a retry finds the version by its challenger_id."""
    from . import _db
    from ._bundle import PICKLE_FILE, PMML_FILE

    store = open_store(settings.store)
    with _connect(settings.dsn) as conn:
        fitted = _load_fitted(conn, settings, partition)
    challenger = fitted.manifest.extra["challenger_id"]
    for version in store.versions(settings.model):
        if store.manifest(settings.model, version).extra.get("challenger_id") == challenger:
            log.info("%s's challenger was published as version %s", partition, version)
            break
    else:
        with _connect(settings.dsn) as conn:
            row = conn.execute(
                "SELECT pmml, pickle FROM etl.challengers WHERE model = %s AND partition_date = %s",
                [settings.model, partition],
            ).fetchone()
        if row is None or row[0] is None:
            raise ModelError(f"the {partition} challenger was not exported and verified")
        version = store.publish(
            fitted.manifest, {PMML_FILE: bytes(row[0]), PICKLE_FILE: bytes(row[1])}, promote=False
        )
    _db.publish(f"{settings.model}@{version}", store=store, promote=False, dsn=settings.dsn)
    with _connect(settings.dsn) as conn:
        conn.execute(
            "UPDATE etl.decisions SET published_version = %s WHERE model = %s "
            "AND partition_date = %s",
            [version, settings.model, partition],
        )
    return str(version)


def promote(settings: Settings, partition: dt.date, version: str) -> str:
    """Make ``version`` the champion in the store and in the database, only if the champion
    is still the one it was evaluated against (a late retry or a backfill must not replace a
    newer champion). Each side is skipped when it already has it, so a retry after a crash
    between the two finishes the job without adding history."""
    from . import _db

    with _connect(settings.dsn) as conn:
        row = conn.execute(
            "SELECT champion_version, verdict FROM etl.decisions WHERE model = %s "
            "AND partition_date = %s",
            [settings.model, partition],
        ).fetchone()
    if row is None or row[1] != "promote":
        raise ModelError(f"no decision to promote {settings.model} for {partition}")
    evaluated_against = row[0]
    in_store, in_db = champions(settings)
    done = {version}
    if in_store not in (evaluated_against, version) or in_db not in (evaluated_against, version):
        raise ModelError(
            f"{settings.model}@{version} was evaluated against champion {evaluated_against}, "
            f"but the champion is now {in_store} in the store and {in_db} in the database; "
            f"rerun the evaluation for {partition} instead of promoting"
        )
    if in_store not in done:
        open_store(settings.store).promote(settings.model, version)
    if in_db not in done:
        _db.promote(settings.model, int(version), settings.dsn)
    with _connect(settings.dsn) as conn:
        conn.execute(
            "UPDATE etl.decisions SET promoted = true WHERE model = %s AND partition_date = %s",
            [settings.model, partition],
        )
    log.info("%s@%s is the champion", settings.model, version)
    return version


# --- batch scoring and drift -------------------------------------------------------------------
def score_unscored(settings: Settings, run_name: str) -> BatchResult:
    """Score the feature rows with no score from the champion's version yet into etl.scores,
    through the same batch path as `scorekit score` (resumable under ``run_name``)."""
    job = BatchJob(
        model=f"{settings.model}@{CHAMPION}",
        input=None,
        input_table="etl.features",
        output_table="etl.scores",
        key="feature_id",
        dsn=settings.dsn,
        store=settings.store,
        stale_only=True,
        run_name=run_name,
        resume=True,
    )
    result = run_batch(job)
    log.info(result.summary())
    return result


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.maximum(expected / max(expected.sum(), 1), PSI_EPSILON)
    actual = np.maximum(actual / max(actual.sum(), 1), PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def population_stability(training: list[Any], current: list[Any], continuous: bool) -> float:
    """PSI of ``current`` against ``training``: deciles of the training values for numbers,
    the categories for the rest; missing values are a bin of their own."""
    if continuous:
        train = np.array([np.nan if v is None else float(v) for v in training])
        now = np.array([np.nan if v is None else float(v) for v in current])
        present = train[~np.isnan(train)]
        edges = (
            np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
            if present.size
            else np.array([])
        )

        def counts(values: np.ndarray) -> np.ndarray:
            bins = np.bincount(np.searchsorted(edges, values[~np.isnan(values)], side="right"),
                               minlength=len(edges) + 1)  # fmt: skip
            return np.append(bins, np.isnan(values).sum()).astype(float)

        return _psi(counts(train), counts(now))
    keys = sorted({str(v) for v in training} | {str(v) for v in current})
    index = {k: i for i, k in enumerate(keys)}

    def tally(values: list[Any]) -> np.ndarray:
        out = np.zeros(len(keys))
        for v in values:
            out[index[str(v)]] += 1
        return out

    return _psi(tally(training), tally(current))


def drift(settings: Settings, partition: dt.date) -> dict[str, float]:
    """PSI per feature between the champion's training rows and the scored inputs of the last
    day up to ``partition`` that has any, kept in etl.drift under that day; features over
    ``settings.drift_threshold`` are logged as warnings (and flagged in the table)."""
    manifest = _champion_manifest(settings)
    if manifest is None:
        raise ModelNotFoundError(f"{settings.model} has no champion in {settings.store} yet")
    trained_through = manifest.extra.get("partition_date")
    with _connect(settings.dsn) as conn:
        training = (
            _labelled(conn, dt.date.fromisoformat(trained_through), holdout=False)
            if trained_through
            else []
        )
        if conn.execute("SELECT to_regclass('etl.scores')").fetchone()[0] is None:
            log.warning("drift for %s: nothing scored yet (etl.scores is absent)", partition)
            return {}
        # The last day with scored inputs up to the partition (its own, unless it has none).
        latest = conn.execute(
            "SELECT max(feature_date) FROM etl.features f JOIN etl.scores s USING (feature_id) "
            "WHERE f.feature_date <= %s",
            [partition],
        ).fetchone()[0]
        columns = ", ".join(f"f.{c}" for c in FEATURES.values())
        current = conn.execute(
            f"SELECT {columns} FROM etl.features f JOIN etl.scores s USING (feature_id) "
            "WHERE f.feature_date = %s",
            [latest],
        ).fetchall()
        partition = latest or partition
    if not training or not current:
        log.warning("drift for %s: no rows to compare (training %d, day %d)", partition,
                    len(training), len(current))  # fmt: skip
        return {}
    psi = {
        name: population_stability(
            [row[j] for row in training],
            [row[j] for row in current],
            manifest.schema[name].is_continuous,
        )
        for j, name in enumerate(FEATURES)
    }
    with _connect(settings.dsn) as conn:
        for name, value in psi.items():
            conn.execute(
                "INSERT INTO etl.drift VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (model, "
                "partition_date, feature) DO UPDATE SET version = excluded.version, "
                "psi = excluded.psi, drifted = excluded.drifted",
                [settings.model, partition, manifest.version, name, value,
                 value > settings.drift_threshold],
            )  # fmt: skip
    drifted = {k: v for k, v in psi.items() if v > settings.drift_threshold}
    if drifted:
        log.warning(
            "drift for %s against %s's training data: %s over the threshold %s",
            partition, manifest.ref,
            ", ".join(f"{k} {v:.3f}" for k, v in drifted.items()), settings.drift_threshold,
        )  # fmt: skip
    else:
        log.info(
            "drift for %s: every feature's PSI is under %s", partition, settings.drift_threshold
        )
    return psi


def drifted(settings: Settings, psi: Mapping[str, float]) -> str:
    """The features over the drift threshold, in words ("" when none)."""
    over = {k: v for k, v in psi.items() if v > settings.drift_threshold}
    return ", ".join(f"{k} PSI {v:.3f} > {settings.drift_threshold}" for k, v in over.items())

"""The nightly pipeline's steps (scorekit._pipeline) without Airflow, against a real PostgreSQL:
the extract is idempotent and quarantines malformed rows with their reason, a partition
publishes once, and the drift figures behave."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import scorekit
from scorekit import _db, _pipeline

pytestmark = pytest.mark.db
psycopg = pytest.importorskip("psycopg")

ROOT = Path(__file__).resolve().parents[1]
FIRST_DAY = dt.date(2026, 11, 15)


@pytest.fixture(scope="module")
def settings(
    make_database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_pipeline.Settings]:
    with make_database("scorekit_pipeline_test") as url:
        _db.install(url)
        _pipeline.seed_raw_events(url, ROOT / "data" / "audit.csv", FIRST_DAY, days=5)
        yield _pipeline.Settings(url, str(tmp_path_factory.mktemp("store")))


def query(settings: _pipeline.Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.dsn) as conn:
        return list(conn.execute(sql, params).fetchall())


def test_partition_and_settings() -> None:
    assert _pipeline.partition_of(dt.datetime(2026, 11, 21, 2, tzinfo=dt.UTC)) == dt.date(
        2026, 11, 20
    )
    env = {"SCOREKIT_STORE": "s3://b/p", "SCOREKIT_PROMOTE_MARGIN": "0.01"}
    built = _pipeline.Settings.from_env("dbname=x", env)
    assert (built.store, built.margin, built.model) == ("s3://b/p", 0.01, "audit")
    with pytest.raises(scorekit.UsageError, match="SCOREKIT_PROMOTE_MARGIN must be a number"):
        _pipeline.Settings.from_env("dbname=x", {"SCOREKIT_PROMOTE_MARGIN": "lots"})


def test_extract_is_idempotent_and_quarantines_with_reasons(settings: _pipeline.Settings) -> None:
    second = FIRST_DAY + dt.timedelta(days=1)
    first = _pipeline.extract(settings, second)
    snapshot = "SELECT count(*), max(xmin::text::bigint) FROM etl.features"
    before = query(settings, snapshot)
    again = _pipeline.extract(settings, second)
    assert again == first and query(settings, snapshot) == before
    quarantined = query(
        settings, "SELECT source, problem FROM etl.quarantine ORDER BY source, source_id"
    )
    assert quarantined == [
        ("raw_applications", "absent field(s): Hours"),
        ("raw_applications", "Income is not a number: lots"),
    ]
    third = _pipeline.extract(settings, second + dt.timedelta(days=1))
    assert third.quarantined == 1  # the label "maybe"
    assert query(settings, "SELECT problem FROM etl.quarantine WHERE source = 'raw_labels'") == [
        ("Adjusted is not 0 or 1: maybe",)
    ]
    assert third.with_nulls == 1 and third.rows_loaded == 238


def test_a_partition_publishes_once(settings: _pipeline.Settings) -> None:
    _pipeline.extract(settings, FIRST_DAY)
    _pipeline.train_challenger(settings, FIRST_DAY)
    decision = _pipeline.evaluate(settings, FIRST_DAY)
    assert decision["promote"] and decision["reason"] == "no champion yet"
    _pipeline.export_and_verify(settings, FIRST_DAY)
    version = _pipeline.publish(settings, FIRST_DAY)
    assert _pipeline.publish(settings, FIRST_DAY) == version  # a retried task: no new version
    assert scorekit.open_store(settings.store).versions("audit") == [version]
    with pytest.raises(scorekit.ModelNotFoundError, match="no champion"):
        _pipeline.drift(settings, FIRST_DAY)  # published, but not promoted yet
    _pipeline.promote(settings, FIRST_DAY, version)
    assert _pipeline.drift(settings, FIRST_DAY) == {}  # nothing scored yet
    assert _pipeline.score_unscored(settings, "scores").rows_scored > 0
    psi = _pipeline.drift(settings, FIRST_DAY + dt.timedelta(days=2))
    assert set(psi) == set(_pipeline.FEATURES) and all(v >= 0 for v in psi.values())
    with pytest.raises(scorekit.ModelNotFoundError, match="no challenger of audit"):
        _pipeline.evaluate(settings, FIRST_DAY - dt.timedelta(days=30))


def test_extract_quarantines_huge_numbers_and_superseded_documents(
    settings: _pipeline.Settings,
) -> None:
    import json

    day = dt.date(2026, 12, 1)
    good = {"Age": "38", "Employment": "Private", "Education": "College", "Marital": "Married",
            "Occupation": "Service", "Income": "81838", "Gender": "Female",
            "Deductions": "FALSE", "Hours": "40"}  # fmt: skip
    events = [
        (90001, 9001, {**good, "Income": "1e400"}),
        (90002, 9002, {**good, "Age": "41"}),
        (90003, 9002, {**good, "Age": "42"}),  # the same application again: this one counts
    ]
    with psycopg.connect(settings.dsn) as conn:
        for event, application, payload in events:
            conn.execute(
                "INSERT INTO etl.raw_applications VALUES (%s, %s, %s, %s)",
                [event, application, day, json.dumps(payload)],
            )
    counts = _pipeline.extract(settings, day)
    assert (counts.rows_loaded, counts.quarantined) == (1, 2)
    assert query(settings, "SELECT age FROM etl.features WHERE feature_date = %s", day) == [(42.0,)]
    assert query(
        settings, "SELECT problem FROM etl.quarantine WHERE partition_date = %s ORDER BY 1", day
    ) == [
        ("Income is not a number: 1e400",),
        ("superseded by a later document for application 9002",),
    ]


def test_promote_refuses_when_the_champions_disagree_or_there_is_no_decision(
    settings: _pipeline.Settings,
) -> None:
    from scorekit import _db

    day = FIRST_DAY + dt.timedelta(days=2)
    _pipeline.train_challenger(settings, day)
    assert not _pipeline.evaluate(settings, day)["promote"]
    with pytest.raises(scorekit.ModelError, match="no decision to promote"):
        _pipeline.promote(settings, day, "1")
    _pipeline.export_and_verify(settings, day)
    version = _pipeline.publish(settings, day)
    _db.promote("audit", int(version), settings.dsn)  # half a promote: the database only
    with pytest.raises(scorekit.ModelError, match=f"version 1 in the store .* but {version} in"):
        _pipeline.evaluate(settings, day)
    _db.promote("audit", 1, settings.dsn)


def test_population_stability() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(40, 10, 5000).tolist()
    assert _pipeline.population_stability(train, rng.normal(40, 10, 2000).tolist(), True) < 0.02
    assert _pipeline.population_stability(train, rng.normal(55, 10, 2000).tolist(), True) > 0.5
    cats = ["a"] * 50 + ["b"] * 50
    assert _pipeline.population_stability(cats, cats, False) == pytest.approx(0.0)
    assert _pipeline.population_stability(cats, ["a"] * 90 + ["c"] * 10, False) > 0.2
    assert _pipeline.population_stability([1.0, None, 2.0], [None, None, None], True) > 1

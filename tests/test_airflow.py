"""The Airflow DAGs, run by Airflow itself (`airflow dags test`, SQLite metadata) against the real
PostgreSQL: the nightly DAG produces a champion, a rerun of the same day changes nothing, a worse
challenger and a failed training leave the champion, and the batch DAG scores exactly the rows
with no score. Each test continues from the state the previous one left, as nights do."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scorekit import _db, _pipeline

pytestmark = [pytest.mark.db, pytest.mark.slow]
psycopg = pytest.importorskip("psycopg")
pytest.importorskip("airflow")

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
FIRST_DAY = dt.date(2026, 11, 15)


@pytest.fixture(scope="module")
def airflow_db(make_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A database with scorekit installed and the raw events seeded, a model store, and an
    Airflow home with its SQLite metadata migrated; yields the DSN and the environment."""
    with make_database("scorekit_airflow_test") as url:
        yield from _airflow_home(url, tmp_path_factory)


def _airflow_home(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from psycopg.conninfo import conninfo_to_dict

    _db.install(url)
    _pipeline.seed_raw_events(url, ROOT / "data" / "audit.csv", FIRST_DAY, days=5)
    home = tmp_path_factory.mktemp("airflow")
    parts = conninfo_to_dict(url)
    connection = {
        "conn_type": "postgres",
        "host": parts.get("host", "/var/run/postgresql"),
        "port": int(parts.get("port", 5432)),
        "schema": parts["dbname"],
        "login": parts.get("user"),
    }
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_SCOREKIT_POSTGRES": json.dumps({k: v for k, v in connection.items() if v}),
        "SCOREKIT_STORE": str(home / "store"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    yield {"dsn": url, "env": env, "store": home / "store"}


def dags_test(
    state: dict[str, Any], dag_id: str, day: dt.date, **settings: str
) -> subprocess.CompletedProcess[str]:
    """`airflow dags test` of one run, its logical date 02:00 UTC on ``day``."""
    return subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, f"{day.isoformat()}T02:00:00+00:00"],
        env={**state["env"], **settings},
        capture_output=True,
        text=True,
        timeout=300,
    )


def query(state: dict[str, Any], sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(state["dsn"]) as conn:
        return list(conn.execute(sql, params).fetchall())


def champions(state: dict[str, Any]) -> tuple[str | None, int | None]:
    """The champion's version in the store and in the database."""
    import scorekit

    store = scorekit.open_store(state["store"])
    try:
        in_store: str | None = store.resolve("audit")
    except scorekit.ModelNotFoundError:
        in_store = None
    rows = query(state, "SELECT scorekit.champion('audit')") if in_store else [(None,)]
    return in_store, rows[0][0]


def test_dagbag_imports_both_dags_without_heavy_modules(airflow_db: dict[str, Any]) -> None:
    probe = """
import json, sys
sys.path.insert(0, sys.argv[1])  # as Airflow puts its DAGs folder on the path
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tasks": sorted(dag.task_ids),
        "cron": getattr(dag.timetable, "expression", None)
        or getattr(getattr(dag.timetable, "timetable", None), "expression", None),
        "assets": [a.name for a in getattr(dag.timetable, "asset_condition", None) or []]
        if hasattr(getattr(dag.timetable, "asset_condition", None), "__iter__") else
        str(getattr(dag.timetable, "asset_condition", "")),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "retries": dag.default_args.get("retries"),
    }
heavy = {"sklearn", "pandas", "scipy", "pypmml", "sklearn2pmml", "scorekit._pipeline"}
out["heavy"] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(out))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe, str(ROOT / "dags")],
        env=airflow_db["env"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["errors"] == {}
    nightly = found["dags"]["scorekit_nightly"]
    assert nightly["tasks"] == sorted(
        ["extract", "train", "evaluate", "better_than_champion", "export_and_verify", "publish",
         "promote"]
    )  # fmt: skip
    assert nightly["cron"] == "0 2 * * *"
    assert nightly["catchup"] is False and nightly["max_active_runs"] == 1
    assert nightly["retries"] == 2
    batch = found["dags"]["scorekit_batch_score"]
    assert batch["tasks"] == ["drift", "drift_alert", "score"]
    assert batch["cron"] == "0 4 * * *"
    assert "scorekit_champion_audit" in str(batch["assets"])
    assert found["heavy"] == []


def test_nightly_makes_a_champion_and_a_rerun_of_the_day_changes_nothing(
    airflow_db: dict[str, Any],
) -> None:
    done = dags_test(airflow_db, "scorekit_nightly", FIRST_DAY + dt.timedelta(days=1))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert champions(airflow_db) == ("1", 1)
    decision = query(
        airflow_db,
        "SELECT verdict, published_version, promoted FROM etl.decisions WHERE partition_date = %s",
        FIRST_DAY,
    )
    assert decision == [("promote", "1", True)]
    snapshot_sql = (
        "SELECT count(*), md5(string_agg(f::text, ',' ORDER BY feature_id)), "
        "max(xmin::text::bigint) FROM etl.features f"
    )
    before = query(airflow_db, snapshot_sql)
    again = dags_test(airflow_db, "scorekit_nightly", FIRST_DAY + dt.timedelta(days=1))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert query(airflow_db, snapshot_sql) == before  # no feature row rewritten
    assert champions(airflow_db) == ("1", 1)
    import scorekit

    assert scorekit.open_store(airflow_db["store"]).versions("audit") == ["1"]
    assert query(airflow_db, "SELECT count(*) FROM etl.decisions")[0][0] == 1


def test_a_worse_challenger_and_a_failed_training_leave_the_champion(
    airflow_db: dict[str, Any],
) -> None:
    second = FIRST_DAY + dt.timedelta(days=1)
    done = dags_test(airflow_db, "scorekit_nightly", second + dt.timedelta(days=1),
                     SCOREKIT_ALGORITHM="tree")  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    verdict, challenger, champion = query(
        airflow_db,
        "SELECT verdict, challenger_score, champion_score FROM etl.decisions "
        "WHERE partition_date = %s",
        second,
    )[0]
    assert verdict == "keep champion" and challenger < champion
    assert champions(airflow_db) == ("1", 1)
    third = second + dt.timedelta(days=1)
    failed = dags_test(airflow_db, "scorekit_nightly", third + dt.timedelta(days=1),
                       SCOREKIT_ALGORITHM="bogus", SCOREKIT_RETRIES="0")  # fmt: skip
    assert "--algorithm must be one of" in failed.stdout + failed.stderr
    assert champions(airflow_db) == ("1", 1)
    assert query(airflow_db, "SELECT count(*) FROM etl.decisions WHERE partition_date = %s",
                 third)[0][0] == 0  # fmt: skip
    # the extract ran: the day's malformed and odd rows were counted, not dropped
    logged = query(
        airflow_db,
        "SELECT partition_date, quarantined, with_nulls, unseen_values, out_of_range "
        "FROM etl.extract_log ORDER BY 1",
    )
    assert [row[0] for row in logged] == [FIRST_DAY, second, third]
    assert logged[1][1] == 2 and logged[2][1] == 1  # two documents, then one label
    assert logged[2][2:] == (1, 1, 1)  # a missing income, an unseen occupation, age 150


def test_batch_dag_scores_exactly_the_unscored_rows(airflow_db: dict[str, Any]) -> None:
    features = query(airflow_db, "SELECT count(*) FROM etl.features")[0][0]
    day = FIRST_DAY + dt.timedelta(days=4)
    done = dags_test(airflow_db, "scorekit_batch_score", day)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scored = query(
        airflow_db, "SELECT count(*), count(DISTINCT feature_id), min(model_version), "
        "max(model_version) FROM etl.scores",
    )[0]  # fmt: skip
    # every row but the one with an occupation the model never saw, which it refuses
    assert scored == (features - 1, features - 1, "1", "1")
    refused = query(airflow_db, "SELECT field, value FROM scorekit.batch_errors")
    assert refused == [("Occupation", "Astronaut")]
    drift = query(airflow_db, "SELECT partition_date, count(*) FROM etl.drift GROUP BY 1")
    assert drift == [(FIRST_DAY + dt.timedelta(days=2), 9)]  # the last day extracted
    # a new day's rows: the next run scores those and nothing else
    with psycopg.connect(airflow_db["dsn"]) as conn:
        _pipeline.extract(_pipeline.Settings(airflow_db["dsn"], str(airflow_db["store"])),
                          day - dt.timedelta(days=1))  # fmt: skip
        conn.commit()
    added = query(airflow_db, "SELECT count(*) FROM etl.features")[0][0] - features
    assert added > 0
    again = dags_test(airflow_db, "scorekit_batch_score", day + dt.timedelta(days=1))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # the row the model refused is not retried: the day's rows are scored, and nothing fails
    assert f"scored {added:,} rows of etl.features" in again.stdout + again.stderr
    assert "no row failed" in again.stdout + again.stderr
    assert query(airflow_db, "SELECT count(*) FROM etl.scores")[0][0] == features - 1 + added

"""What both scorekit DAGs read when a task runs (never at import): the database from the
Airflow connection ``scorekit_postgres`` (settable as AIRFLOW_CONN_SCOREKIT_POSTGRES), and plain
settings from the environment (SCOREKIT_STORE, SCOREKIT_MODEL, SCOREKIT_ALGORITHM,
SCOREKIT_PROMOTE_MARGIN, SCOREKIT_DRIFT_THRESHOLD, SCOREKIT_RETRIES; docs/airflow.md)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import Asset

CONNECTION_ID = "scorekit_postgres"
# Retries with a delay (SCOREKIT_RETRIES overrides the count, e.g. 0 for a test of a failure).
DEFAULT_ARGS = {
    "retries": int(os.environ.get("SCOREKIT_RETRIES", "2")),
    "retry_delay": dt.timedelta(minutes=5),
}
MODEL = os.environ.get("SCOREKIT_MODEL") or "audit"
# Emitted when a new champion is promoted; the batch scoring DAG is scheduled on it.
CHAMPION = Asset(name=f"scorekit_champion_{MODEL}", uri=f"scorekit://models/{MODEL}/champion")


def settings() -> Any:
    from airflow.sdk import Connection
    from psycopg.conninfo import make_conninfo

    from scorekit._pipeline import Settings

    connection = Connection.get(CONNECTION_ID)
    parts = {
        **(connection.extra_dejson or {}),  # sslmode and other libpq options
        "host": connection.host,
        "port": connection.port,
        "user": connection.login,
        "password": connection.password,
        "dbname": connection.schema,
    }
    dsn = make_conninfo("", **{k: v for k, v in parts.items() if v not in (None, "")})
    return Settings.from_env(dsn)

"""scorekit_nightly: every night at 02:00 UTC, build the previous day's features, train a
challenger, compare it with the champion on the same holdout, and only if it is better export,
verify, publish (store and database) and promote it, emitting the champion Asset.

Each task calls one function of scorekit._pipeline for the run's own partition (the day before
its logical date); each is idempotent, and only `promote` changes the champion, so a failure or
a worse challenger leaves the champion as it was. docs/airflow.md explains the settings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import dag, task
from scorekit_settings import CHAMPION, DEFAULT_ARGS, settings


def _partition(dag_run: Any) -> dt.date:
    """The run's partition, from its logical date (a manual run without one: when it ran)."""
    from scorekit._pipeline import partition_of

    return partition_of(dag_run.logical_date or dag_run.run_after)


@dag(
    dag_id="scorekit_nightly",
    schedule="0 2 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["scorekit"],
    doc_md=__doc__,
)
def scorekit_nightly() -> None:
    @task
    def extract(dag_run: Any = None) -> dict[str, Any]:
        from scorekit._pipeline import extract

        counts = extract(settings(), _partition(dag_run))
        return {"rows": counts.rows_loaded, "quarantined": counts.quarantined}

    @task
    def train(dag_run: Any = None) -> dict[str, Any]:
        from scorekit._pipeline import train_challenger

        return train_challenger(settings(), _partition(dag_run))

    @task
    def evaluate(dag_run: Any = None) -> dict[str, Any]:
        from scorekit._pipeline import evaluate

        return evaluate(settings(), _partition(dag_run))

    # Task arguments fed from another task's result arrive as XComArgs when the DAG is built,
    # hence Any: at run time they are the upstream task's return value.
    @task.short_circuit
    def better_than_champion(evaluation: Any) -> bool:
        print(f"{'promote' if evaluation['promote'] else 'stop'}: {evaluation['reason']}")
        return bool(evaluation["promote"])

    @task
    def export_and_verify(dag_run: Any = None) -> dict[str, Any]:
        from scorekit._pipeline import export_and_verify

        return export_and_verify(settings(), _partition(dag_run))

    @task
    def publish(dag_run: Any = None) -> str:
        from scorekit._pipeline import publish

        return publish(settings(), _partition(dag_run))

    @task(outlets=[CHAMPION])
    def promote(version: Any, dag_run: Any = None) -> str:
        from scorekit._pipeline import promote

        return promote(settings(), _partition(dag_run), str(version))

    evaluation = evaluate()
    extract() >> train() >> evaluation
    gate = better_than_champion(evaluation)
    verified = export_and_verify()
    gate >> verified
    version = publish()
    verified >> version
    promote(version)


scorekit_nightly()

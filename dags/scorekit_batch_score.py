"""scorekit_batch_score: when scorekit_nightly promotes a champion (the champion Asset), and daily
at 04:00 UTC as a fallback, score the feature rows that have no score from the champion's
version yet, through the same batch path as `scorekit score` (resumable, locked, each score with
its model version); then report drift of the latest day's inputs against the champion's
training data."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from scorekit_settings import CHAMPION, DEFAULT_ARGS, settings


@dag(
    dag_id="scorekit_batch_score",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 4 * * *", timezone="UTC"), assets=[CHAMPION]
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["scorekit"],
    doc_md=__doc__,
)
def scorekit_batch_score() -> None:
    @task
    def score(run_id: str | None = None) -> dict[str, Any]:
        from scorekit._pipeline import score_unscored

        # The batch run is named after the DAG run: a retry or a cleared task resumes it.
        result = score_unscored(settings(), str(run_id))
        return {"scored": result.rows_scored, "failed": result.rows_failed, "model": result.model}

    @task
    def drift(logical_date: Any = None, run_after: Any = None) -> dict[str, float]:
        from scorekit._pipeline import drift, partition_of

        # Asset-triggered runs have no logical date: they report on the day before the run.
        return drift(settings(), partition_of(logical_date or run_after))

    score() >> drift()


scorekit_batch_score()

"""scorekit_batch_score: when scorekit_nightly promotes a champion (the champion Asset), and daily
at 04:00 UTC as a fallback, score the feature rows that have no score from the champion's
version yet, through the same batch path as `scorekit score` (resumable, locked, each score with
its model version); then report drift of the latest day's inputs against the champion's
training data, failing the drift_alert task (so the run shows it) when a feature drifted."""

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
    def drift(dag_run: Any = None) -> dict[str, float]:
        from scorekit._pipeline import drift, partition_of

        # An Asset-triggered run has no logical date: it reports on the day before it ran.
        return drift(settings(), partition_of(dag_run.logical_date or dag_run.run_after))

    @task(retries=0)
    def drift_alert(psi: Any) -> None:
        """Fails (marking the run) when a feature's PSI is over the threshold; the scores are
        written by then, and etl.drift holds the figures."""
        from airflow.sdk.exceptions import AirflowFailException

        from scorekit._pipeline import drifted

        over = drifted(settings(), psi)
        if over:
            raise AirflowFailException(f"drift over the threshold: {over}")

    figures = drift()
    score() >> figures
    drift_alert(figures)


scorekit_batch_score()

-- What batch runs (`scorekit score` over a table) keep in PostgreSQL: created on first use by the
-- run itself (which then needs CREATE on the database; no superuser, no PL/Python), idempotent.
-- `scorekit db uninstall` drops the scorekit schema, and these tables with it.
CREATE SCHEMA IF NOT EXISTS scorekit;

-- One row per attempt of a named run (--run, default the UTC date). --resume continues the
-- latest attempt of the same run, model and target unless it succeeded.
CREATE TABLE IF NOT EXISTS scorekit.batch_runs (
    run_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_name    text NOT NULL,
    model       text NOT NULL,
    version     text NOT NULL,
    engine      text NOT NULL,
    source      text NOT NULL,
    target      text NOT NULL,
    options     jsonb NOT NULL,        -- what chose and mapped the rows; a resume must match
    status      text NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'succeeded', 'failed', 'aborted', 'abandoned')),
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    chunks_done bigint NOT NULL DEFAULT 0,
    rows_scored bigint NOT NULL DEFAULT 0,
    rows_failed bigint NOT NULL DEFAULT 0,
    message     text
);
CREATE INDEX IF NOT EXISTS batch_runs_by_target
    ON scorekit.batch_runs (model, target, run_name, run_id);

-- A run's work, split in key ranges (lower_key, upper_key] (NULL: unbounded): one range for a
-- single process, several for Dask. last_key is committed with each chunk's scores, so a run
-- resumes after the last chunk that was written, and no row is written twice.
CREATE TABLE IF NOT EXISTS scorekit.batch_partitions (
    run_id      bigint NOT NULL REFERENCES scorekit.batch_runs ON DELETE CASCADE,
    part        integer NOT NULL,
    lower_key   text,
    upper_key   text,
    last_key    text,
    chunks_done bigint NOT NULL DEFAULT 0,
    rows_scored bigint NOT NULL DEFAULT 0,
    rows_failed bigint NOT NULL DEFAULT 0,
    done        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, part)
);

-- Rows a run could not score: the row's key, the model field, the value and why.
CREATE TABLE IF NOT EXISTS scorekit.batch_errors (
    run_id      bigint NOT NULL REFERENCES scorekit.batch_runs ON DELETE CASCADE,
    key         text NOT NULL,
    field       text,
    value       text,
    problem     text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS batch_errors_by_run ON scorekit.batch_errors (run_id);

-- The tables of scorekit's nightly pipeline (dags/scorekit_nightly.py), idempotent: run by the
-- pipeline's first task. Schema etl holds what a team would own: raw events as they land, the
-- features and labels built from them per day, rows set aside, and what each night decided.
-- Adapting the DAGs to your own tables starts here and in extract.sql (docs/airflow.md).
CREATE SCHEMA IF NOT EXISTS etl;

-- Applications as they land during the day, one JSON document each, unvalidated.
CREATE TABLE IF NOT EXISTS etl.raw_applications (
    event_id       bigint PRIMARY KEY,
    application_id bigint NOT NULL,
    arrived_on     date NOT NULL,
    payload        jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_applications_by_day ON etl.raw_applications (arrived_on);

-- Outcomes, which arrive a day (or more) after their application.
CREATE TABLE IF NOT EXISTS etl.raw_labels (
    application_id bigint PRIMARY KEY,
    adjusted       text,
    arrived_on     date NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_labels_by_day ON etl.raw_labels (arrived_on);

-- Model inputs, one row per application and day; feature_id is the key batch scoring uses.
CREATE TABLE IF NOT EXISTS etl.features (
    feature_id     bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    application_id bigint NOT NULL,
    feature_date   date NOT NULL,
    age            double precision,
    employment     text,
    education      text,
    marital        text,
    occupation     text,
    income         double precision,
    gender         text,
    deductions     text,
    hours          double precision,
    PRIMARY KEY (application_id, feature_date)
);

CREATE TABLE IF NOT EXISTS etl.labels (
    application_id bigint PRIMARY KEY,
    adjusted       integer NOT NULL,
    label_date     date NOT NULL
);

-- Raw rows that could not become features or labels, with why: never dropped silently.
CREATE TABLE IF NOT EXISTS etl.quarantine (
    source         text NOT NULL,       -- 'raw_applications' (by event_id) or 'raw_labels'
    source_id      bigint NOT NULL,
    partition_date date NOT NULL,
    problem        text NOT NULL,
    payload        jsonb NOT NULL,
    PRIMARY KEY (source, source_id)
);

-- A raw text value, or NULL for scorekit's missing-value tokens.
CREATE OR REPLACE FUNCTION etl.present(value text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN btrim(value) IN ('', 'NA', 'N/A', 'NaN', 'nan', 'null', 'NULL', 'None')
                THEN NULL ELSE btrim(value) END
$$;

-- Whether a raw value is missing or a number a double precision column can hold.
CREATE OR REPLACE FUNCTION etl.is_number(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    -- CASE, not AND: the cast must only ever see text the pattern accepted.
    SELECT CASE
        WHEN etl.present(value) IS NULL THEN true
        WHEN etl.present(value) !~ '^[-+]?([0-9]{1,250}[.]?[0-9]{0,30}|[.][0-9]{1,30})([eE][-+]?[0-9]{1,3})?$'
            THEN false
        ELSE abs(etl.present(value)::numeric) < 1e300
    END
$$;

-- What each night's extract saw (its run log, also written to the task log).
CREATE TABLE IF NOT EXISTS etl.extract_log (
    partition_date date PRIMARY KEY,
    rows_loaded    integer NOT NULL,
    quarantined    integer NOT NULL,
    labels_loaded  integer NOT NULL,
    with_nulls     integer NOT NULL,
    unseen_values  integer NOT NULL,
    out_of_range   integer NOT NULL
);

-- The night's challenger, between training and publishing (shared by every worker).
CREATE TABLE IF NOT EXISTS etl.challengers (
    model          text NOT NULL,
    partition_date date NOT NULL,
    fitted         bytea NOT NULL,      -- the fitted pipeline, its manifest and holdout (joblib)
    pmml           bytea,               -- set by export and verify
    pickle         bytea,
    PRIMARY KEY (model, partition_date)
);

-- What each night decided, challenger against champion on the same holdout.
CREATE TABLE IF NOT EXISTS etl.decisions (
    model              text NOT NULL,
    partition_date     date NOT NULL,
    metric             text NOT NULL,
    holdout_rows       integer NOT NULL,
    challenger_score   double precision,
    champion_version   text,
    champion_score     double precision,
    verdict            text NOT NULL,   -- 'promote' or why not
    published_version  text,
    promoted           boolean NOT NULL DEFAULT false,
    PRIMARY KEY (model, partition_date)
);

-- Population stability per feature: the champion's training rows against a day's inputs.
CREATE TABLE IF NOT EXISTS etl.drift (
    model          text NOT NULL,
    partition_date date NOT NULL,
    version        text NOT NULL,
    feature        text NOT NULL,
    psi            double precision NOT NULL,
    drifted        boolean NOT NULL,
    PRIMARY KEY (model, partition_date, feature)
);

-- scorekit in PostgreSQL: run by `scorekit db install` as a superuser, in one transaction.
-- Idempotent: a second run replaces the functions and keeps every table's rows.
--
-- What it creates:
--   schema scorekit
--     runtime      where PL/Python imports scorekit from (the .venv setup made); superuser only
--     models       each published version's artifacts (bytea), manifest and sha256s
--     deployments  the champion per model, as history: promote and rollback append a row
--     attachments  which table is scored by which model, how, into which columns
--     errors       rows kept unscored by on_error => 'null', with the reason
--     trusted_pickles  the pickles a superuser allowed the server to unpickle (it runs code)
--   roles scorekit_publisher (publish, promote, roll back, attach) and scorekit_scorer (score)
--   PL/Python functions: predict, predict_batch, attach, detach, rescore, and the triggers
--   SQL functions: champion, promote, rollback (promote's and rollback's writes fire
--   scorekit._changed(), a one-line PL/Python trigger that imports nothing)
--
-- PL/Python functions run as their caller (SECURITY INVOKER), so privileges are checked on
-- every call: a role that is neither publisher nor scorer can't read a model or score with it.
--
-- A trigger runs with the privileges of whoever inserts, and an operator or function planted in a
-- schema on their search_path, with argument types that match exactly where pg_catalog's need a
-- coercion, would be called instead of pg_catalog's (the pattern of CVE-2018-1058). So:
-- - the SQL and plpgsql functions pin their search_path to pg_catalog, pg_temp;
-- - the PL/Python functions keep the caller's search_path, because their statements fire the
--   user's own code (the write-back UPDATE fires the table's UPDATE triggers, attach's CREATE
--   TRIGGER fires event triggers), which may name objects without a schema. Instead, every name
--   in their SQL is schema-qualified or matches a pg_catalog object exactly
--   (pg_catalog.unnest, pg_catalog.array_agg, oid = oid rather than regclass = regclass, the
--   primary key compared with its index's own operator, OPERATOR(schema.=), arithmetic done
--   in Python or with OPERATOR(pg_catalog.-)); tests plant such objects and score through every
--   entry point. This script runs as a superuser with the installer's search_path: its own SQL
--   outside functions qualifies the same way.

CREATE SCHEMA IF NOT EXISTS scorekit;
COMMENT ON SCHEMA scorekit IS 'scorekit: models, deployments and in-database scoring';

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'scorekit_scorer') THEN
        CREATE ROLE scorekit_scorer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'scorekit_publisher') THEN
        CREATE ROLE scorekit_publisher NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE scorekit_scorer IS 'scorekit: may score (predict, insert into attached tables)';
COMMENT ON ROLE scorekit_publisher IS 'scorekit: may publish, promote, roll back and attach models';
GRANT scorekit_scorer TO scorekit_publisher;

CREATE TABLE IF NOT EXISTS scorekit.runtime (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    site_packages text NOT NULL,
    scorekit_version text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now(),
    installed_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE scorekit.runtime IS
    'The site-packages directory PL/Python imports scorekit and numpy from (set by db install)';

CREATE TABLE IF NOT EXISTS scorekit.models (
    name text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*$'),
    version integer NOT NULL CHECK (version > 0),
    manifest jsonb NOT NULL,
    pmml bytea,
    pickle bytea,
    pmml_sha256 text,
    pickle_sha256 text,
    published_at timestamptz NOT NULL DEFAULT now(),
    published_by name NOT NULL DEFAULT current_user,
    PRIMARY KEY (name, version),
    CHECK (pmml IS NOT NULL OR pickle IS NOT NULL)
);
COMMENT ON TABLE scorekit.models IS
    'Published model versions; loading checks each artifact against the manifest''s sha256';

CREATE TABLE IF NOT EXISTS scorekit.deployments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model text NOT NULL,
    version integer NOT NULL,
    action text NOT NULL CHECK (action IN ('publish', 'promote', 'rollback')),
    previous integer,
    at timestamptz NOT NULL DEFAULT now(),
    by name NOT NULL DEFAULT current_user,
    FOREIGN KEY (model, version) REFERENCES scorekit.models (name, version)
);
CREATE INDEX IF NOT EXISTS deployments_latest ON scorekit.deployments (model, id DESC);
COMMENT ON TABLE scorekit.deployments IS
    'Champion history per model: the latest row is the champion; rollback appends a row';

CREATE TABLE IF NOT EXISTS scorekit.attachments (
    tbl regclass PRIMARY KEY,
    model text NOT NULL,
    pinned_version integer,
    mode text NOT NULL CHECK (mode IN ('row', 'statement')),
    engine text NOT NULL,
    on_error text NOT NULL CHECK (on_error IN ('raise', 'null')),
    features jsonb NOT NULL,
    outputs jsonb NOT NULL,
    version_column text,
    key_columns text[] NOT NULL DEFAULT '{}',
    attached_at timestamptz NOT NULL DEFAULT now(),
    attached_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE scorekit.attachments IS
    'Tables scored on insert: model, trigger mode, field->column and output->column maps';

CREATE TABLE IF NOT EXISTS scorekit.trusted_pickles (
    sha256 text PRIMARY KEY,
    model text NOT NULL,
    version integer NOT NULL,
    trusted_at timestamptz NOT NULL DEFAULT now(),
    trusted_by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE scorekit.trusted_pickles IS
    'Unpickling runs code as the server''s OS user, so the sklearn engine loads only the pickles '
    'listed here, which only a superuser can add (scorekit db publish --trust-pickle)';

CREATE TABLE IF NOT EXISTS scorekit.errors (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    tbl text NOT NULL,
    model text NOT NULL,
    version integer,
    row_key jsonb,
    row_data jsonb,
    problems jsonb NOT NULL,
    message text NOT NULL,
    by name NOT NULL DEFAULT current_user
);
COMMENT ON TABLE scorekit.errors IS
    'Rows that were kept with NULL predictions (on_error => ''null''), and why';

-- Who may change an attachment: a role that may create triggers on its table, as attach does.
-- Every scoring role reads them all (a trigger on any attached table needs its row).
ALTER TABLE scorekit.attachments ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS readable ON scorekit.attachments;
CREATE POLICY readable ON scorekit.attachments FOR SELECT USING (true);
DROP POLICY IF EXISTS table_triggers ON scorekit.attachments;
CREATE POLICY table_triggers ON scorekit.attachments FOR ALL
    USING (has_table_privilege(tbl, 'TRIGGER')) WITH CHECK (has_table_privilege(tbl, 'TRIGGER'));

-- An error row holds a scored row's values: readable by those who may read that table.
ALTER TABLE scorekit.errors ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS recordable ON scorekit.errors;
CREATE POLICY recordable ON scorekit.errors FOR INSERT WITH CHECK (true);
DROP POLICY IF EXISTS table_readers ON scorekit.errors;
CREATE POLICY table_readers ON scorekit.errors FOR SELECT
    USING (coalesce(has_table_privilege(to_regclass(tbl), 'SELECT'), false));

-- A dropped table's attachment goes with it.
CREATE OR REPLACE FUNCTION scorekit._forget_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dropped oid[] := ARRAY(SELECT objid FROM pg_event_trigger_dropped_objects()
                           WHERE object_type = 'table');
BEGIN
    -- Only when an attached table went: the DELETE would fire scorekit._changed() (PL/Python)
    -- in every session that drops anything.
    IF EXISTS (SELECT FROM scorekit.attachments WHERE tbl::oid = ANY (dropped)) THEN
        DELETE FROM scorekit.attachments WHERE tbl::oid = ANY (dropped);
    END IF;
END
$$;
DROP EVENT TRIGGER IF EXISTS scorekit_forget_dropped;
CREATE EVENT TRIGGER scorekit_forget_dropped ON sql_drop
    EXECUTE FUNCTION scorekit._forget_dropped();

-- --- deployments: plain SQL (their writes fire scorekit._changed(), below) ---------------------

CREATE OR REPLACE FUNCTION scorekit.champion(model text) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.version FROM scorekit.deployments d
    WHERE d.model = champion.model ORDER BY d.id DESC LIMIT 1
$$;

CREATE OR REPLACE FUNCTION scorekit.promote(model text, version integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    current integer;
BEGIN
    -- Promotes and rollbacks of one model take turns; other models are not blocked.
    PERFORM pg_advisory_xact_lock(hashtextextended('scorekit.deployments/' || model, 0));
    IF NOT EXISTS (SELECT FROM scorekit.models m WHERE m.name = promote.model
                   AND m.version = promote.version) THEN
        RAISE EXCEPTION 'model %@% is not published in this database', model, version
            USING ERRCODE = '42704',
                  HINT = 'versions: ' || coalesce((SELECT string_agg(m.version::text, ', '
                      ORDER BY m.version) FROM scorekit.models m WHERE m.name = promote.model),
                      'none; publish one with scorekit db publish');
    END IF;
    current := scorekit.champion(model);
    INSERT INTO scorekit.deployments (model, version, action, previous)
    VALUES (model, version, 'promote', current);
    RETURN version;
END
$$;

CREATE OR REPLACE FUNCTION scorekit.rollback(model text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stack integer[] := '{}';
    entry record;
    current integer;
    restored integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('scorekit.deployments/' || model, 0));
    -- Replay the history as a stack: publish and promote push, rollback pops.
    FOR entry IN SELECT d.version, d.action FROM scorekit.deployments d
                 WHERE d.model = rollback.model ORDER BY d.id LOOP
        IF entry.action = 'rollback' THEN
            stack := stack[1:cardinality(stack) - 1];
        ELSE
            stack := stack || entry.version;
        END IF;
    END LOOP;
    IF cardinality(stack) < 2 THEN
        RAISE EXCEPTION 'model % has no earlier champion to roll back to (champion history: %)',
            model, coalesce(nullif(array_to_string(stack, ' -> '), ''), 'empty')
            USING ERRCODE = '22023';
    END IF;
    current := stack[cardinality(stack)];
    restored := stack[cardinality(stack) - 1];
    INSERT INTO scorekit.deployments (model, version, action, previous)
    VALUES (model, restored, 'rollback', current);
    RETURN restored;
END
$$;

-- --- PL/Python: every body hands over to scorekit._plpython ------------------------------------
-- scorekit._boot imports scorekit from the recorded site-packages once per connection and keeps
-- the runtime in GD, which all PL/Python functions of the connection share. GD["scorekit_api"]
-- is the API the runtime was built for: 4, scorekit._plpython.API, which these bodies expect. A
-- connection that imported an older scorekit before an upgrade keeps that code until it ends.

CREATE OR REPLACE FUNCTION scorekit._boot() RETURNS void
LANGUAGE plpython3u AS $$
if GD.get("scorekit_api") == 4:
    return
if "scorekit" in GD:
    if getattr(GD["scorekit"], "API", 1) == 4:  # booted by an older _boot: the same code
        GD["scorekit_api"] = 4
        return
    plpy.error("scorekit was upgraded in this database after this connection loaded it, and "
               "the connection still runs the older code",
               hint="reconnect (connection pools: recycle their connections)",
               sqlstate="55000")
import site
rows = plpy.execute("SELECT site_packages FROM scorekit.runtime")
if not rows:
    plpy.error("scorekit is not installed in this database",
               hint="run: scorekit db install", sqlstate="55000")
site.addsitedir(rows[0]["site_packages"])
from scorekit import _plpython
if getattr(_plpython, "API", 1) != 4:
    plpy.error(f"this connection imported scorekit with API {getattr(_plpython, 'API', 1)} "
               f"(from {rows[0]['site_packages']}); the functions in this database expect 4",
               hint="reconnect; if that does not help, run scorekit db install with the "
               "package the server imports", sqlstate="55000")
GD["scorekit"] = _plpython.Runtime(plpy, GD)
GD["scorekit_api"] = 4
$$;

-- predict and predict_batch are STABLE: their queries (the champion) then see the snapshot of
-- the statement that calls them, so one SELECT scoring many rows never mixes versions.
CREATE OR REPLACE FUNCTION scorekit.predict(model text, features jsonb) RETURNS jsonb
LANGUAGE plpython3u STABLE AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].predict(model, features)
$$;
COMMENT ON FUNCTION scorekit.predict(text, jsonb) IS
    'Score one record: predict(''audit'', ''{"Age": 38, ...}'') -> {"prediction": ..., '
    '"probability(<class>)": ..., "model": ..., "version": ...}; model is name, name@version or '
    'name@champion';

CREATE OR REPLACE FUNCTION scorekit.predict_batch(model text, records jsonb)
RETURNS TABLE (ordinal integer, scores jsonb)
LANGUAGE plpython3u STABLE AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].predict_batch(model, records)
$$;
COMMENT ON FUNCTION scorekit.predict_batch(text, jsonb) IS
    'Score a JSON array of records in one vectorised call; ordinal is the record''s 1-based '
    'position in the array';

CREATE OR REPLACE FUNCTION scorekit.attach(
    tbl regclass,
    model text,
    mode text DEFAULT 'row',
    outputs jsonb DEFAULT NULL,
    features jsonb DEFAULT NULL,
    version_column text DEFAULT NULL,
    on_error text DEFAULT 'raise',
    engine text DEFAULT 'auto'
) RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].attach(tbl, model, mode, outputs, features, version_column, on_error,
                             engine)
$$;
COMMENT ON FUNCTION scorekit.attach(regclass, text, text, jsonb, jsonb, text, text, text) IS
    'Score tbl on insert with model (name or name@version): mode row (BEFORE INSERT OR UPDATE, '
    'per row) or statement (AFTER INSERT, the whole statement at once; needs a primary key)';

CREATE OR REPLACE FUNCTION scorekit.detach(tbl regclass) RETURNS text
LANGUAGE plpython3u VOLATILE AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].detach(tbl)
$$;

CREATE OR REPLACE FUNCTION scorekit.rescore(tbl regclass, stale_only boolean DEFAULT false,
                                            batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpython3u VOLATILE AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].rescore(tbl, stale_only, batch_size)
$$;
COMMENT ON FUNCTION scorekit.rescore(regclass, boolean, integer) IS
    'Score the existing rows of an attached table again with the model deployed now; '
    'stale_only: only rows whose version column differs from it. Returns the rows updated.';

-- Earlier installs read the deployed version in a BEFORE ... FOR EACH STATEMENT trigger; the row
-- and statement triggers now do it themselves, once per statement. CASCADE drops those triggers.
DROP FUNCTION IF EXISTS scorekit._statement_trigger() CASCADE;

-- Within a transaction, the triggers check the deployed version once per statement by comparing
-- the server's snapshot with the one they last read it under (scorekit._plpython.Runtime.current).
-- A connection's own changes show in none of its snapshots, so each connection counts its own
-- changes to the deployments and the attachments here, in GD, which its triggers read.
CREATE OR REPLACE FUNCTION scorekit._changed() RETURNS trigger
LANGUAGE plpython3u AS $$
GD["scorekit_changes"] = GD.get("scorekit_changes", 0) + 1
$$;
DROP TRIGGER IF EXISTS scorekit_changed ON scorekit.deployments;
CREATE TRIGGER scorekit_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON scorekit.deployments FOR EACH STATEMENT EXECUTE FUNCTION scorekit._changed();
DROP TRIGGER IF EXISTS scorekit_changed ON scorekit.attachments;
CREATE TRIGGER scorekit_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON scorekit.attachments FOR EACH STATEMENT EXECUTE FUNCTION scorekit._changed();
-- ALWAYS: also under session_replication_role = replica. A connection checks that both are
-- enabled so when it starts (Runtime._changes_counted); disabling one needs a reconnect.
ALTER TABLE scorekit.deployments ENABLE ALWAYS TRIGGER scorekit_changed;
ALTER TABLE scorekit.attachments ENABLE ALWAYS TRIGGER scorekit_changed;

CREATE OR REPLACE FUNCTION scorekit._row_trigger() RETURNS trigger
LANGUAGE plpython3u AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].score_row(TD)
$$;

CREATE OR REPLACE FUNCTION scorekit._inserted_trigger() RETURNS trigger
LANGUAGE plpython3u AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].score_inserted(TD)
$$;

CREATE OR REPLACE FUNCTION scorekit._updated_row_trigger() RETURNS trigger
LANGUAGE plpython3u AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].note_updated(TD)
$$;

CREATE OR REPLACE FUNCTION scorekit._updated_trigger() RETURNS trigger
LANGUAGE plpython3u AS $$
if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
return GD["scorekit"].score_updated(TD)
$$;

-- Tables attached in mode 'statement' by an earlier install rescored an UPDATE of their features
-- with a BEFORE ... FOR EACH ROW trigger, for which PostgreSQL locks every row an UPDATE writes,
-- the statement mode's own write-back included. They get the AFTER triggers attach now creates,
-- on the same columns.
DO $$
DECLARE
    attached record;
BEGIN
    FOR attached IN
        SELECT t.tgrelid::regclass AS tbl,
               (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', '
                                             ORDER BY a.attnum)
                FROM pg_catalog.pg_attribute a
                WHERE a.attrelid OPERATOR(pg_catalog.=) t.tgrelid
                  AND a.attnum OPERATOR(pg_catalog.=) ANY (t.tgattr::int2[])) AS columns
        FROM pg_catalog.pg_trigger t JOIN scorekit.attachments s
          ON s.tbl::oid OPERATOR(pg_catalog.=) t.tgrelid
        WHERE t.tgname OPERATOR(pg_catalog.=) 'scorekit_row'::name
          AND s.mode OPERATOR(pg_catalog.=) 'statement'::text
    LOOP
        -- a trigger without a column list, which no attach creates: left as it is
        CONTINUE WHEN attached.columns IS NULL;
        EXECUTE pg_catalog.format('DROP TRIGGER scorekit_row ON %s', attached.tbl);
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS scorekit_updated_row ON %s',
                                  attached.tbl);
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS scorekit_updated ON %s', attached.tbl);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER scorekit_updated_row AFTER UPDATE OF %s ON %s '
            'FOR EACH ROW EXECUTE FUNCTION scorekit._updated_row_trigger()',
            attached.columns, attached.tbl);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER scorekit_updated AFTER UPDATE OF %s ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION scorekit._updated_trigger()',
            attached.columns, attached.tbl);
    END LOOP;
END
$$;

-- --- privileges ---------------------------------------------------------------------------------

REVOKE ALL ON SCHEMA scorekit FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA scorekit FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA scorekit FROM PUBLIC;
GRANT EXECUTE ON FUNCTION scorekit._forget_dropped() TO PUBLIC;  -- runs on anyone's DROP TABLE
GRANT USAGE ON SCHEMA scorekit TO scorekit_scorer;

-- Scoring reads the models it scores with and the deployments; it may record unscorable rows.
GRANT SELECT ON scorekit.runtime, scorekit.models, scorekit.deployments, scorekit.attachments,
    scorekit.trusted_pickles TO scorekit_scorer;
GRANT INSERT ON scorekit.errors TO scorekit_scorer;
GRANT EXECUTE ON FUNCTION scorekit._boot(), scorekit.champion(text),
    scorekit.predict(text, jsonb), scorekit.predict_batch(text, jsonb),
    scorekit.rescore(regclass, boolean, integer), scorekit._row_trigger(),
    scorekit._inserted_trigger(), scorekit._updated_row_trigger(), scorekit._updated_trigger()
    TO scorekit_scorer;

-- Publishing adds versions (never changes one) and moves the champion. Attaching a table also
-- needs the TRIGGER privilege on it (checked by CREATE TRIGGER and the policy above). A model's
-- pickle is never unpickled unless a superuser trusted it, so publishing runs no code.
GRANT INSERT ON scorekit.models, scorekit.deployments TO scorekit_publisher;
GRANT INSERT, UPDATE, DELETE ON scorekit.attachments TO scorekit_publisher;
GRANT SELECT ON scorekit.errors, scorekit.trusted_pickles TO scorekit_publisher;
GRANT EXECUTE ON FUNCTION scorekit.promote(text, integer), scorekit.rollback(text),
    scorekit.attach(regclass, text, text, jsonb, jsonb, text, text, text),
    scorekit.detach(regclass)
    TO scorekit_publisher;

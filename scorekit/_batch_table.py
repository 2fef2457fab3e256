"""Batch runs over a PostgreSQL table: read in key order through a server-side cursor, score each
chunk, write it through COPY into a staging table and from there, in the chunk's own
transaction, upsert it into the output table (or UPDATE the input table with ``write_back``),
together with the run's progress in scorekit.batch_runs and scorekit.batch_partitions
(sql/batch.sql). Names from the command line are resolved through the catalog (``::regclass``)
and quoted as identifiers, never spliced; ``--where`` is SQL by design, as in psql.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode

import numpy as np

from ._batch import (
    BatchJob,
    BatchResult,
    ChunkScores,
    check_error_rate,
    dask_client,
    dask_threads,
    describe,
    error_value,
    is_table,
    load_pinned,
    pinned_source,
    score_chunk,
)
from ._config import database_url
from ._errors import InputError, LockHeldError, ScorekitError, UsageError
from ._model import Model
from ._output import PREDICTION, finite_or_none
from ._progress import Progress
from ._tables import (
    UNKEYABLE,
    Column,
    Options,
    default_output_column,
    is_number,
    map_features,
    map_outputs,
    prediction_type,
)

SQL_FILE = Path(__file__).resolve().parents[1] / "sql" / "batch.sql"
STAGE = "scorekit_stage"
CLI_OPTIONS = Options(
    "--feature",
    "--feature FIELD=column",
    "--output-column",
    "--output-column prediction=my_column",
)


@dataclass(frozen=True)
class TableRef:
    dsn: str
    name: str  # as the user wrote it


def table_location(location: str, dsn: str | None, option: str) -> TableRef:
    """``postgresql://...?table=schema.name``."""
    base, _, query_text = location.partition("?")
    query = parse_qsl(query_text, keep_blank_values=True)
    tables = [value for name, value in query if name == "table"]
    if len(tables) != 1 or not tables[0]:
        raise UsageError(
            f"{option} {location} names no table: add table=schema.name to the URL's query "
            "(postgresql://host/db?table=schema.name), or use --input-table/--output-table"
        )
    rest = urlencode([(name, value) for name, value in query if name != "table"])
    return TableRef(f"{base}?{rest}" if rest else base, tables[0])


@dataclass(frozen=True)
class Plan:
    """A resolved run: everything a worker needs to score a partition, as plain values (it is
    pickled to Dask workers). SQL is composed and quoted by the driver."""

    read_dsn: str
    write_dsn: str
    run_id: int
    model_source: str
    engine: str
    store: str | None
    chunk_size: int
    max_error_rate: float
    select: str  # SELECT key, features FROM source WHERE ... AND key > lower AND key <= upper
    select_params: tuple[Any, ...]
    key_type: str
    stage_columns: tuple[tuple[str, str], ...]  # staging table: (column, type)
    write: str  # INSERT ... ON CONFLICT or UPDATE ... FROM the staging table
    outputs: tuple[str, ...]  # the model's output columns, in stage order
    errors_at: str


def _ident(conn: Any, *names: str) -> str:
    from psycopg import sql

    return sql.Identifier(*names).as_string(conn)


def _connect(dsn: str, autocommit: bool = False) -> Any:
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=autocommit)
    except psycopg.Error as exc:
        from ._db import translate

        raise translate(exc, dsn) from exc


@contextlib.contextmanager
def _translated(dsn: str, subject: str | None = None) -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        from ._db import translate

        raise translate(exc, dsn, subject) from exc


@dataclass
class Table:
    oid: int
    qualified: str  # quoted schema.name
    display: str  # schema.name as the user reads it
    columns: dict[str, Column]


def _table(conn: Any, name: str, option: str) -> Table | None:
    row = conn.execute(
        "SELECT to_regclass(%s)::oid, n.nspname, c.relname, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        [name, name],
    ).fetchone()
    if row is None:
        return None
    oid, schema, relname, kind = row
    if kind not in ("r", "p"):
        raise UsageError(f"{option} {name} is not an ordinary table")
    columns = {
        r[0]: Column(r[0], r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typcategory::text, "
            "a.atttypid::bigint FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [oid],
        )
    }
    return Table(oid, _ident(conn, schema, relname), f"{schema}.{relname}", columns)


def _unique_key(conn: Any, table: Table, key: str | None) -> str:
    """The key column: ``key``, which must be alone in a unique index, else the one-column
    primary key. Resuming after the last key written needs keys that are unique and ordered."""
    singles = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT a.attname::text, i.indisprimary, a.attnotnull FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s AND i.indisunique AND i.indnkeyatts = 1 "
            "AND i.indpred IS NULL AND i.indexprs IS NULL",
            [table.oid],
        )
    }
    if key is None:
        primary = [name for name, (is_primary, _) in singles.items() if is_primary]
        if not primary:
            raise UsageError(
                f"{table.display} has no one-column primary key; name a unique key column with "
                "--key (a run reads in key order and resumes after the last key written)"
            )
        return primary[0]
    if key not in table.columns:
        raise UsageError(
            f"--key {key} is not a column of {table.display}; its columns: "
            f"{', '.join(table.columns)}"
        )
    if key not in singles:
        raise UsageError(
            f"--key {key} of {table.display} has no unique index of its own; a run reads in "
            f"key order and resumes after the last key written, so the key must be unique "
            f"(CREATE UNIQUE INDEX ON {table.display} ({key}))"
        )
    if not singles[key][1]:
        raise UsageError(
            f"--key {key} of {table.display} may be NULL; a run resumes after the last key "
            f"written, so the key must not be (ALTER TABLE {table.display} ALTER COLUMN {key} "
            "SET NOT NULL)"
        )
    if table.columns[key].category in UNKEYABLE:
        raise UsageError(f"--key {key} is {table.columns[key].type}, which can't be a key")
    return key


def _ensure_schema(conn: Any) -> None:
    """sql/batch.sql, unless its tables exist (so a role without CREATE can run jobs once they
    do)."""
    if conn.execute("SELECT to_regclass('scorekit.batch_errors')").fetchone()[0] is not None:
        return
    with conn.transaction():
        # Two first runs at once would race on CREATE ... IF NOT EXISTS; one waits here.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('scorekit.batch.ddl'))")
        conn.execute(SQL_FILE.read_text())


def _lock(conn: Any, model: str, target: str) -> None:
    """Hold, for the connection's life, the advisory lock of (model, target)."""
    got = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [f"scorekit.batch {model} {target}"]
    ).fetchone()[0]
    if got:
        return
    holder = conn.execute(
        "SELECT run_id, run_name, started_at FROM scorekit.batch_runs WHERE model = %s "
        "AND target = %s AND status = 'running' ORDER BY run_id DESC LIMIT 1",
        [model, target],
    ).fetchone()
    which = (
        f" (run {holder[1]!r}, id {holder[0]}, started {holder[2]:%Y-%m-%d %H:%M:%S %Z})"
        if holder
        else ""
    )
    raise LockHeldError(
        f"another scorekit score run of model {model} into {target} is running{which}; "
        "this run did nothing. Wait for it to finish, or stop it; a run that was killed "
        "releases its lock, and --resume continues it"
    )


def _score_sql_types(model: Model) -> list[tuple[str, str]]:
    return [
        (output, prediction_type(model) if output == PREDICTION else "double precision")
        for output in model.output_columns
    ]


def run_table(job: BatchJob, progress_stream: TextIO | None = None) -> BatchResult:
    started = time.perf_counter()
    if job.input_table:
        source_ref = TableRef(job.dsn or database_url(), job.input_table)
    else:
        source_ref = table_location(str(job.input), job.dsn, "--input")
    if job.write_back:
        if job.output or job.output_table:
            raise UsageError("--write-back writes into the input table; drop --output")
        target_ref = source_ref
    elif job.output_table:
        target_ref = TableRef(job.dsn or source_ref.dsn, job.output_table)
    elif job.output and is_table(job.output):
        target_ref = table_location(job.output, None, "--output")
    else:
        raise UsageError(
            "a table input is scored into a table: --output postgresql://...?table=schema.name "
            "or --output-table NAME (created if absent), or --write-back into the input table"
        )
    same_database = target_ref.dsn == source_ref.dsn
    if job.stale_only and not same_database:
        raise UsageError(
            "--stale-only compares with the output table, which must then be in the same "
            "database as the input"
        )

    state = _connect(target_ref.dsn, autocommit=True)  # run tables, the lock, the output
    reader = state if same_database else _connect(source_ref.dsn, autocommit=True)
    try:
        with _translated(target_ref.dsn):
            _ensure_schema(state)
        with _translated(source_ref.dsn, f"--input {source_ref.name}"):
            source = _table(reader, source_ref.name, "--input")
            if source is None:
                raise UsageError(f"--input table {source_ref.name} does not exist")
            key = _unique_key(reader, source, job.key)
            _check_where(reader, source, job.where)
        model = load_pinned(job)
        features = map_features(
            model, source.columns, dict(job.features), source.display, CLI_OPTIONS
        )
        target = f"{source.display} (write-back)" if job.write_back else None
        with _translated(target_ref.dsn):
            out, outputs = (
                _write_back_target(state, source, model, job)
                if job.write_back
                else _output_target(state, target_ref.name, source, key, model, job)
            )
        target = target or out.display
        _lock(state, model.name, target)
        run_id, version, resumed, done = _find_run(state, job, model, source.display, target, key)
        if done is not None:
            return done
        try:
            if version != model.version:  # resuming a run of another version: map its fields
                model = load_pinned(job, version)
                features = map_features(
                    model, source.columns, dict(job.features), source.display, CLI_OPTIONS
                )
                outputs = map_outputs(
                    model, out.columns, dict(job.outputs), out.display, CLI_OPTIONS
                )
            plan = _plan(
                job, target, features, state, reader, source, key, out, outputs, model, run_id,
                target_ref.dsn, source_ref.dsn,
            )  # fmt: skip
            parts = _partitions(job, state, reader, plan)
            total = _total(state, reader, plan, parts)
            result = BatchResult(
                job.run,
                f"{model.name}@{model.version}",
                model.engine,
                source.display,
                target,
                run_id=run_id,
                resumed=resumed,
                partitions=len(parts),
                errors_at=plan.errors_at,
            )
            _run_parts(job, state, plan, parts, total, progress_stream)
        except BaseException as exc:
            status = "aborted" if isinstance(exc, InputError) else "failed"
            message = (
                exc.message if isinstance(exc, ScorekitError) else f"{type(exc).__name__}: {exc}"
            )
            with contextlib.suppress(Exception):
                state.execute(
                    "UPDATE scorekit.batch_runs SET status = %s, finished_at = clock_timestamp(), "
                    "message = %s WHERE run_id = %s",
                    [status, message, run_id],
                )
            raise
        row = state.execute(
            "UPDATE scorekit.batch_runs SET status = 'succeeded', finished_at = clock_timestamp() "
            "WHERE run_id = %s RETURNING rows_scored, rows_failed, chunks_done",
            [run_id],
        ).fetchone()
        result.rows_scored, result.rows_failed, result.chunks = row
        result.seconds = time.perf_counter() - started
        return result
    finally:
        if reader is not state:
            reader.close()
        state.close()  # releases the advisory lock


def _output_target(
    conn: Any, name: str, source: Table, key: str, model: Model, job: BatchJob
) -> tuple[Table, dict[str, str]]:
    """The output table (created if absent: the key, the scores, the model version and the
    run id) and output -> column."""
    out = _table(conn, name, "--output")
    if out is None:
        from psycopg import sql

        try:
            parts = conn.execute("SELECT parse_ident(%s)", [name]).fetchone()[0]
        except Exception:
            raise UsageError(f"--output table {name!r} is not a table name") from None
        if len(parts) > 2:
            raise UsageError(f"--output table {name} should be schema.name or name")
        columns = [
            sql.SQL("{} {} PRIMARY KEY").format(
                sql.Identifier(key), sql.SQL(source.columns[key].type)
            ),
            *(
                sql.SQL("{} {}").format(sql.Identifier(default_output_column(o)), sql.SQL(t))
                for o, t in _score_sql_types(model)
            ),
            sql.SQL("{} text NOT NULL").format(sql.Identifier(job.version_column)),
            sql.SQL("run_id bigint"),
        ]
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                sql.Identifier(*parts), sql.SQL(", ").join(columns)
            )
        )
        out = _table(conn, name, "--output")
        assert out is not None
    outputs = map_outputs(model, out.columns, dict(job.outputs), out.display, CLI_OPTIONS)
    missing = [c for c in (key, job.version_column) if c not in out.columns]
    if missing:
        raise UsageError(
            f"--output table {out.display} lacks column(s) {', '.join(missing)}: it needs the "
            f"key {key}, the scores and {job.version_column}; name a new table to have it "
            "created"
        )
    unique = conn.execute(
        "SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND i.indisunique "
        "AND i.indnkeyatts = 1 AND a.attname = %s AND i.indpred IS NULL",
        [out.oid, key],
    ).fetchone()
    if unique is None:
        raise UsageError(
            f"--output table {out.display} has no unique index on {key}, which the upsert of "
            f"each chunk needs (CREATE UNIQUE INDEX ON {out.display} ({key}))"
        )
    return out, outputs


def _write_back_target(
    conn: Any, source: Table, model: Model, job: BatchJob
) -> tuple[Table, dict[str, str]]:
    outputs = map_outputs(model, source.columns, dict(job.outputs), source.display, CLI_OPTIONS)
    if job.version_column not in source.columns:
        raise UsageError(
            f"{source.display} has no column {job.version_column} to record which model "
            f"version wrote each score (ALTER TABLE {source.display} ADD COLUMN "
            f"{job.version_column} text), or name yours with --version-column"
        )
    return source, outputs


def _options(job: BatchJob, key: str) -> dict[str, Any]:
    """What chooses and maps a run's rows: a resumed run must have the same."""
    return {
        "key": key,
        "where": job.where,
        "stale_only": job.stale_only,
        "write_back": job.write_back,
        "features": dict(job.features),
        "outputs": dict(job.outputs),
        "version_column": job.version_column,
    }


def _find_run(
    conn: Any, job: BatchJob, model: Model, source: str, target: str, key: str
) -> tuple[int, str, bool, BatchResult | None]:
    """(run id, version, resumed, a result if there is nothing to do)."""
    from psycopg.types.json import Jsonb

    options = _options(job, key)
    latest = conn.execute(
        "SELECT run_id, version, status, rows_scored, rows_failed, chunks_done, engine, source, "
        "options FROM scorekit.batch_runs WHERE model = %s AND target = %s AND run_name = %s "
        "ORDER BY run_id DESC LIMIT 1",
        [model.name, target, job.run],
    ).fetchone()
    if latest is not None and job.resume:
        run_id, version, status, scored, failed, chunks, engine, was_source, was = latest
        if (was_source, was) != (source, options):
            raise UsageError(
                f"run {job.run!r} (id {run_id}) of {model.name} into {target} read {was_source} "
                f"with {was}; this one reads {source} with {options}. Resume it with the same "
                "input and options, or give this job its own --run name"
            )
        if status == "succeeded":
            done = BatchResult(
                job.run, f"{model.name}@{version}", engine, source, target, scored, failed,
                chunks, run_id=run_id, already_done=True,
            )  # fmt: skip
            return run_id, version, True, done
        conn.execute(
            "UPDATE scorekit.batch_runs SET status = 'running', finished_at = NULL, "
            "message = NULL WHERE run_id = %s",
            [run_id],
        )
        return run_id, version, True, None
    if latest is not None and latest[2] == "running":  # killed; we hold its lock now
        conn.execute(
            "UPDATE scorekit.batch_runs SET status = 'abandoned', finished_at = clock_timestamp(),"
            " message = 'a new run started without --resume' WHERE run_id = %s",
            [latest[0]],
        )
    run_id = conn.execute(
        "INSERT INTO scorekit.batch_runs (run_name, model, version, engine, source, target, "
        "options) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING run_id",
        [job.run, model.name, model.version, model.engine, source, target, Jsonb(options)],
    ).fetchone()[0]
    return run_id, model.version, False, None


def _check_where(conn: Any, source: Table, where: str | None) -> None:
    """A --where that PostgreSQL can't plan is refused before any work, naming the error."""
    if not where:
        return
    import psycopg
    from psycopg import sql

    query = sql.SQL("EXPLAIN SELECT 1 FROM {} t WHERE ({})").format(
        sql.SQL(source.qualified), sql.SQL(where.replace("%", "%%"))
    )
    try:
        conn.execute(query, [])
    except psycopg.Error as exc:
        raise UsageError(
            f"--where {where!r} is not a valid condition on {source.display}: {str(exc).strip()}"
        ) from None


def _plan(
    job: BatchJob,
    target: str,
    features: dict[str, str],
    state: Any,
    reader: Any,
    source: Table,
    key: str,
    out: Table,
    outputs: dict[str, str],
    model: Model,
    run_id: int,
    write_dsn: str,
    read_dsn: str,
) -> Plan:
    from psycopg import sql

    schema = model.manifest.schema
    # Rows arrive in the binary format, which psycopg reads only for built-in types: a type of
    # an extension or the user's (citext, an enum) is read as text instead.
    as_text = sql.SQL("{}::text")
    key_column = source.columns[key]
    selected: list[Any] = [
        as_text.format(sql.Identifier(key)) if not key_column.builtin else sql.Identifier(key)
    ]
    for name in model.input_fields:
        column = source.columns[features[name]]
        ident = sql.Identifier(column.name)
        continuous = schema[name].is_continuous
        # numeric arrives as Decimal, which takes the slow per-value path; float8 is exact
        # enough for a model that computes in float64 anyway.
        if continuous and is_number(column) and column.type != "double precision":
            selected.append(sql.SQL("{}::float8").format(ident))
        elif not column.builtin or (not continuous and column.type == "real"):
            selected.append(as_text.format(ident))  # a real category reads as written: 1.1
        else:
            selected.append(ident)
    conditions: list[Any] = []
    params: list[Any] = []
    if job.where:
        # The condition is the operator's SQL, as in psql; % is doubled as psycopg needs.
        conditions.append(sql.SQL("({})").format(sql.SQL(job.where.replace("%", "%%"))))
    if job.stale_only:
        # A row this model version refused into this target stays refused until its values
        # change (then delete its scorekit.batch_errors rows), so it is not retried every run.
        conditions.append(
            sql.SQL(
                "NOT EXISTS (SELECT 1 FROM scorekit.batch_errors e JOIN scorekit.batch_runs r "
                "USING (run_id) WHERE r.model = %s AND r.version = %s AND r.target = %s "
                "AND e.key = t.{}::text)"
            ).format(sql.Identifier(key))
        )
        params += [model.name, model.version, target]
        if job.write_back:
            conditions.append(
                sql.SQL("t.{} IS DISTINCT FROM %s").format(sql.Identifier(job.version_column))
            )
        else:
            conditions.append(
                sql.SQL("NOT EXISTS (SELECT 1 FROM {} o WHERE o.{} = t.{} AND o.{} = %s)").format(
                    sql.SQL(out.qualified),
                    sql.Identifier(key),
                    sql.Identifier(key),
                    sql.Identifier(job.version_column),
                )
            )
        params.append(model.version)
    key_type = source.columns[key].type
    # The partition's bounds come last: (lower, upper], NULL meaning unbounded.
    conditions.append(
        sql.SQL("(%s::text IS NULL OR t.{k} > %s::text::{t})").format(
            k=sql.Identifier(key), t=sql.SQL(key_type)
        )
    )
    conditions.append(
        sql.SQL("(%s::text IS NULL OR t.{k} <= %s::text::{t})").format(
            k=sql.Identifier(key), t=sql.SQL(key_type)
        )
    )
    select = sql.SQL("SELECT {} FROM {} t WHERE {} ORDER BY t.{}").format(
        sql.SQL(", ").join(sql.SQL("t.") + s for s in selected),
        sql.SQL(source.qualified),
        sql.SQL(" AND ").join(conditions),
        sql.Identifier(key),
    )
    stage = [
        ("k", key_type),
        *[(f"s{j}", t) for j, (_, t) in enumerate(_score_sql_types(model))],
        ("v", "text"),
    ]
    stage_names = {o: f"s{j}" for j, o in enumerate(model.output_columns)}
    targets = [(outputs[o], stage_names[o]) for o in model.output_columns if o in outputs]
    if job.write_back:
        write = sql.SQL("UPDATE {} t SET {}, {} = s.v FROM {} s WHERE t.{} = s.k").format(
            sql.SQL(out.qualified),
            sql.SQL(", ").join(
                sql.SQL("{} = s.{}").format(sql.Identifier(c), sql.Identifier(s))
                for c, s in targets
            ),
            sql.Identifier(job.version_column),
            sql.Identifier(STAGE),
            sql.Identifier(key),
        )
    else:
        set_columns = (
            [c for c, _ in targets]
            + [job.version_column]
            + (["run_id"] if "run_id" in out.columns else [])
        )
        values: list[Any] = [sql.Identifier(s) for _, s in targets] + [sql.Identifier("v")]
        if "run_id" in out.columns:
            values.append(sql.Literal(run_id))
        write = sql.SQL(
            "INSERT INTO {} ({}, {}) SELECT k, {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}"
        ).format(
            sql.SQL(out.qualified),
            sql.Identifier(key),
            sql.SQL(", ").join(map(sql.Identifier, set_columns)),
            sql.SQL(", ").join(values),
            sql.Identifier(STAGE),
            sql.Identifier(key),
            sql.SQL(", ").join(
                sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in set_columns
            ),
        )
    return Plan(
        read_dsn=read_dsn,
        write_dsn=write_dsn,
        run_id=run_id,
        model_source=pinned_source(job, model.version),
        engine=model.engine,
        store=job.store,
        chunk_size=job.chunk_size,
        max_error_rate=job.max_error_rate,
        select=select.as_string(reader),
        select_params=tuple(params),
        key_type=key_type,
        stage_columns=tuple(stage),
        write=write.as_string(state),
        outputs=tuple(model.output_columns),
        errors_at=f"scorekit.batch_errors (run_id {run_id})",
    )


def _partitions(job: BatchJob, state: Any, reader: Any, plan: Plan) -> list[int]:
    """The run's partitions not yet done. A run gets them once, in one transaction: one key
    range, or for Dask ranges of about equal size from the key's percentiles; a run resumed
    after being killed before that gets them now."""
    exists = state.execute(
        "SELECT 1 FROM scorekit.batch_partitions WHERE run_id = %s LIMIT 1", [plan.run_id]
    ).fetchone()
    if exists is None:
        bounds: list[str | None] = []
        if job.dask:
            pieces = job.partitions or 2 * (job.dask_workers or _default_threads(job))
            if pieces > 1:
                found = _bounds(reader, plan, [i / pieces for i in range(1, pieces)])
                bounds = list(dict.fromkeys(b for b in found if b is not None))
        edges: list[str | None] = [None, *bounds, None]
        with state.transaction():
            for part, (lower, upper) in enumerate(itertools.pairwise(edges)):
                state.execute(
                    "INSERT INTO scorekit.batch_partitions (run_id, part, lower_key, upper_key) "
                    "VALUES (%s, %s, %s, %s)",
                    [plan.run_id, part, lower, upper],
                )
    rows = state.execute(
        "SELECT part FROM scorekit.batch_partitions WHERE run_id = %s AND NOT done ORDER BY part",
        [plan.run_id],
    ).fetchall()
    return [r[0] for r in rows]


def _bounds(reader: Any, plan: Plan, fractions: list[float]) -> list[str | None]:
    # The plan's SELECT lists the key first; its partition bounds are left open (NULL).
    found = reader.execute(
        f"SELECT percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY q.k)::text[] "
        f"FROM ({plan.select}) q(k)",
        [fractions, *plan.select_params, *_bounds_params(None, None)],
    ).fetchone()[0]
    return list(found or [])


def _default_threads(job: BatchJob) -> int:
    """Worker threads of the cluster --dask names (a local one: this machine's CPUs)."""
    if job.dask == "local":
        import os

        return os.cpu_count() or 1
    with dask_client(job) as client:
        return dask_threads(client)


def _partition_bounds(conn: Any, run_id: int, part: int) -> tuple[str | None, str | None, bool]:
    row = conn.execute(
        "SELECT coalesce(last_key, lower_key), upper_key, done FROM scorekit.batch_partitions "
        "WHERE run_id = %s AND part = %s",
        [run_id, part],
    ).fetchone()
    return row[0], row[1], row[2]


def _total(state: Any, reader: Any, plan: Plan, parts: list[int]) -> int | None:
    """Rows in the run: done so far plus what the remaining partitions hold."""
    total = 0
    for part in parts:
        lower, upper, _ = _partition_bounds(state, plan.run_id, part)
        total += reader.execute(
            f"SELECT count(*) FROM ({plan.select}) q",
            [*plan.select_params, *_bounds_params(lower, upper)],
        ).fetchone()[0]
    return int(total + _totals(state, plan.run_id)[0])


def _bounds_params(lower: str | None, upper: str | None) -> list[str | None]:
    """The parameters of a plan's partition bounds: (lower, upper], None meaning unbounded."""
    return [lower, lower, upper, upper]


def _run_parts(
    job: BatchJob,
    state: Any,
    plan: Plan,
    parts: list[int],
    total: int | None,
    progress_stream: TextIO | None,
) -> None:
    progress = Progress(
        total, f"run {job.run!r}", progress_stream, done_before=_totals(state, plan.run_id)[0]
    )
    try:
        if not job.dask:
            for part in parts:
                score_partition(plan, part, on_chunk=progress.update)
        else:
            with dask_client(job) as client:
                futures = client.map(score_partition, [plan] * len(parts), parts, pure=False)
                while not all(f.done() for f in futures):
                    time.sleep(0.5)
                    progress.update(*_totals(state, plan.run_id))
                    failed = [f for f in futures if f.status == "error"]
                    if failed:
                        client.cancel(futures)
                        failed[0].result()  # raises the worker's error here
                for f in futures:
                    f.result()
        progress.update(*_totals(state, plan.run_id), force=True)
    finally:
        progress.close()


def _totals(conn: Any, run_id: int) -> tuple[int, int]:
    row = conn.execute(
        "SELECT rows_scored + rows_failed, rows_failed FROM scorekit.batch_runs WHERE run_id = %s",
        [run_id],
    ).fetchone()
    return int(row[0]), int(row[1])


def score_partition(
    plan: Plan, part: int, on_chunk: Callable[[int, int], None] | None = None
) -> tuple[int, int]:
    """Score one partition of a run, chunk by chunk, each chunk committed with its progress;
    returns (rows scored, rows failed). Runs in the driver or on a Dask worker."""
    import psycopg

    from ._batch import cached_model

    model = cached_model(plan.model_source, plan.engine, plan.store)
    scored_total = failed_total = 0
    with (
        _translated(plan.write_dsn),
        _connect(plan.write_dsn) as write,
        _connect(plan.read_dsn) as read,
    ):
        # One writer per partition: a Dask task left running after its driver died, and a
        # --resume started meanwhile, must not both write it.
        held = write.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
            [f"scorekit.batch run {plan.run_id} part {part}"],
        ).fetchone()[0]
        if not held:
            raise LockHeldError(
                f"partition {part} of batch run {plan.run_id} is being written by another "
                "process (a worker of an earlier attempt?); wait for it to stop, then --resume"
            )
        lower, upper, done = _partition_bounds(write, plan.run_id, part)
        # A chunk's scores and its progress commit together, so a commit lost in a server
        # crash loses both, and --resume redoes that chunk: waiting for each WAL flush buys
        # nothing here.
        write.execute("SET synchronous_commit = off")
        write.commit()
        if done:
            return 0, 0
        from psycopg import sql

        write.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
                sql.Identifier(STAGE),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
                    for c, t in plan.stage_columns
                ),
            )
        )
        write.commit()
        cursor = read.cursor(name=f"scorekit_batch_{plan.run_id}_{part}", binary=True)
        cursor.itersize = plan.chunk_size
        cursor.execute(plan.select, [*plan.select_params, *_bounds_params(lower, upper)])

        def write_chunk(keys: list[Any], chunk: ChunkScores) -> tuple[int, int]:
            try:
                with write.transaction():
                    return _write_chunk(write, plan, part, keys, chunk, model.version)
            except psycopg.Error as exc:
                from ._db import translate

                raise translate(exc, plan.write_dsn) from exc

        def written(keys: list[Any], chunk: ChunkScores, totals: tuple[int, int]) -> None:
            scored, failed = totals
            if on_chunk is not None:
                on_chunk(scored + failed, failed)
            example = None
            if chunk.problems:
                first = chunk.problems[0]
                example = describe(replace(first, row=None), keys[first.row or 0])
            check_error_rate(plan.max_error_rate, scored, failed, plan.errors_at, example)

        # Three stages overlap: the next chunk is fetched and the previous one written (each
        # waiting on the server, without the GIL) while this one is scored. At most three
        # chunks are in memory; each chunk is still written in its own transaction, in order.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scorekit-batch") as pool:
            fetching = pool.submit(cursor.fetchmany, plan.chunk_size)
            writing: tuple[list[Any], ChunkScores, Future[tuple[int, int]]] | None = None
            while rows := fetching.result():
                fetching = pool.submit(cursor.fetchmany, plan.chunk_size)
                chunk = _score_rows(model, rows)
                keys = [row[0] for row in rows]
                scored_total += len(chunk.kept)
                failed_total += chunk.failed_rows
                if writing is not None:
                    written_keys, written_chunk, pending = writing
                    written(written_keys, written_chunk, pending.result())
                writing = (keys, chunk, pool.submit(write_chunk, keys, chunk))
            if writing is not None:
                written_keys, written_chunk, pending = writing
                written(written_keys, written_chunk, pending.result())
        cursor.close()
        read.commit()
        write.execute(
            "UPDATE scorekit.batch_partitions SET done = true WHERE run_id = %s AND part = %s",
            [plan.run_id, part],
        )
        write.commit()
    return scored_total, failed_total


def _score_rows(model: Model, rows: list[tuple[Any, ...]]) -> ChunkScores:
    columns = list(zip(*rows, strict=True))
    by_field = {name: list(columns[j + 1]) for j, name in enumerate(model.input_fields)}
    return score_chunk(model, by_field)


# PostgreSQL's binary COPY: a signature, flags and header extension, then per row a field
# count and each field as a length and big-endian bytes, then -1.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_BINARY_TRAILER = b"\xff\xff"
_BINARY_TYPES = {"bigint": ">i8", "integer": ">i4", "smallint": ">i2", "double precision": ">f8"}


def _binary_rows(
    stage: Sequence[tuple[str, str]], keys: list[Any], columns: list[np.ndarray], version: str
) -> bytes | None:
    """The staging rows as one binary COPY buffer built by numpy, when every column is a
    fixed-size number (and the version text); None otherwise (text keys or labels, or a
    non-finite score, which goes in as NULL), for the row-by-row path."""
    types = [t for _, t in stage]
    if any(t not in _BINARY_TYPES for t in types[:-1]):
        return None
    try:
        arrays: list[np.ndarray] = []
        for values, kind in zip([keys, *columns], types[:-1], strict=True):
            array = np.asarray(values, dtype=np.float64 if kind == "double precision" else np.int64)
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                return None
            if array.dtype.kind == "i" and not np.array_equal(array, np.asarray(values)):
                return None  # not whole numbers after all: the text path says what they are
            arrays.append(array)
    except (TypeError, ValueError, OverflowError):
        return None
    label = version.encode()
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for j, kind in enumerate(types[:-1]):
        fields += [(f"len{j}", ">i4"), (f"f{j}", _BINARY_TYPES[kind])]
    fields += [("len_v", ">i4"), ("v", f"S{len(label)}" if label else "V0")]
    rows = np.zeros(len(keys), dtype=np.dtype(fields))
    rows["count"] = len(types)
    for j, (kind, array) in enumerate(zip(types[:-1], arrays, strict=True)):
        rows[f"len{j}"] = np.dtype(_BINARY_TYPES[kind]).itemsize
        if kind != "double precision" and np.dtype(_BINARY_TYPES[kind]).itemsize < 8:
            limit = np.iinfo(_BINARY_TYPES[kind])
            if array.size and (array.min() < limit.min or array.max() > limit.max):
                return None
        rows[f"f{j}"] = array
    rows["len_v"] = len(label)
    if label:
        rows["v"] = label
    return _BINARY_HEADER + rows.tobytes() + _BINARY_TRAILER


def _write_chunk(
    conn: Any, plan: Plan, part: int, keys: list[Any], chunk: ChunkScores, version: str
) -> tuple[int, int]:
    """Stage and write one chunk, its errors and its progress; returns the run's totals."""
    from psycopg import sql

    kept = chunk.kept.tolist()
    kept_keys = [keys[i] for i in kept] if len(kept) != len(keys) else keys
    if kept_keys:
        names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in plan.stage_columns)
        columns = [chunk.columns[o] for o in plan.outputs]
        binary = _binary_rows(plan.stage_columns, kept_keys, columns, version)
        if binary is not None:
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)")
            with conn.cursor().copy(statement.format(sql.Identifier(STAGE), names)) as copy:
                copy.write(binary)
        else:
            statement = sql.SQL("COPY {} ({}) FROM STDIN")
            values = [[finite_or_none(v) for v in c.tolist()] for c in columns]
            with conn.cursor().copy(statement.format(sql.Identifier(STAGE), names)) as copy:
                for row in zip(kept_keys, *values, strict=True):
                    copy.write_row((*row, version))
        conn.execute(plan.write)
    if chunk.problems:
        with conn.cursor().copy(
            "COPY scorekit.batch_errors (run_id, key, field, value, problem) FROM STDIN"
        ) as copy:
            for p in chunk.problems:
                row_key = keys[p.row] if p.row is not None else None
                copy.write_row(
                    (plan.run_id, str(row_key), p.field, error_value(p.value), p.problem)
                )
    failed = chunk.failed_rows
    conn.execute(
        "UPDATE scorekit.batch_partitions SET last_key = %s::text, chunks_done = chunks_done + 1, "
        "rows_scored = rows_scored + %s, rows_failed = rows_failed + %s "
        "WHERE run_id = %s AND part = %s",
        [keys[-1], len(kept_keys), failed, plan.run_id, part],
    )
    row = conn.execute(
        "UPDATE scorekit.batch_runs SET chunks_done = chunks_done + 1, "
        "rows_scored = rows_scored + %s, rows_failed = rows_failed + %s WHERE run_id = %s "
        "RETURNING rows_scored, rows_failed",
        [len(kept_keys), failed, plan.run_id],
    ).fetchone()
    return int(row[0]), int(row[1])

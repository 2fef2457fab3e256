"""`scorekit bench db`: in-database scoring measured side by side in one run.

For each model, against the same source rows and the same table definition: a plain INSERT ...
SELECT with no trigger, with the row trigger (sklearn engine, native engine) and with the
statement trigger (on the default table, and on one at fillfactor 50, where the write-back
UPDATE can stay on the row's page); then single-row INSERTs in one transaction with each; then
the first prediction in a new connection. Beside them, two floors of the statement mode, what
PostgreSQL alone spends on its design with no Python and no scoring: the INSERT and then an
UPDATE of every row's score columns to constants, in one transaction (each row written twice);
and a PL/pgSQL statement trigger that also reads every feature of the transition table, as
scoring it needs, before that UPDATE by key range. It works in a database of its own, created
and dropped here.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import _db
from ._bench import machine_description, write_section
from ._config import database_url

MODELS = (("logreg", "logistic regression"), ("gbm", "gradient boosting, 100 trees"))
NO_TRIGGER = "no trigger"  # the variant every ratio is taken against


@dataclass(frozen=True)
class Variant:
    label: str
    mode: str | None  # None: no trigger
    engine: str | None = None
    fillfactor: int = 100  # the table's; below 100 the write-back UPDATE can stay on the page
    # A floor of the statement mode, bulk only (mode None): UPDATE_FLOOR, the INSERT then an
    # UPDATE of every row's scores in one transaction; TRIGGER_FLOOR, a PL/pgSQL statement
    # trigger reading every feature of the transition table, then that UPDATE by key range.
    floor: str | None = None


UPDATE_FLOOR = "update"
TRIGGER_FLOOR = "trigger"


VARIANTS = (
    Variant(NO_TRIGGER, None),
    Variant("row trigger, sklearn", "row", "sklearn"),
    Variant("row trigger, native", "row", "native"),
    Variant("statement trigger, native", "statement", "native"),
    Variant("statement trigger, native, fillfactor 50", "statement", "native", fillfactor=50),
    Variant("no trigger, INSERT then UPDATE of the scores (floor)", None, floor=UPDATE_FLOOR),
    Variant(
        "PL/pgSQL statement trigger: reads the features, UPDATE of the scores (floor)",
        None,
        floor=TRIGGER_FLOOR,
    ),
)
# the statement mode's constant write-back, as both floors write it
CONSTANT_SCORES = "prediction = 1, probability_0 = 0.25, probability_1 = 0.75"
# data/audit.csv's fields and the column types the benchmark table gives them
FIELDS = (
    ("Age", "integer"),
    ("Employment", "text"),
    ("Education", "text"),
    ("Marital", "text"),
    ("Occupation", "text"),
    ("Income", "double precision"),
    ("Gender", "text"),
    ("Deductions", "text"),
    ("Hours", "integer"),
)


@dataclass
class Figures:
    bulk_rows_per_s: float  # median over the rounds
    single_rows_per_s: float
    bulk_ratio: float  # median over the rounds of (this rate / no trigger's in the same round)
    single_ratio: float


def _source_rows(data: Path, rows: int) -> list[list[str | None]]:
    with open(data, newline="") as f:
        read = [[row[name] for name, _ in FIELDS] for row in csv.DictReader(f)]
    return [read[i % len(read)] for i in range(rows)]


def run_db(
    data: Path,
    target: str,
    output: Path,
    rows: int,
    singles: int,
    slow_rows: int,
    repeats: int,
    cold_runs: int,
    dsn: str | None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> str:
    import psycopg

    from ._training import train

    columns = ", ".join(name.lower() for name, _ in FIELDS)
    definition = ", ".join(f"{name.lower()} {kind}" for name, kind in FIELDS)
    source = _source_rows(data, rows)
    results: dict[str, dict[str, Figures]] = {}
    cold: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as store,
        _db.scratch_database(dsn or database_url(), "scorekit_bench") as url,
    ):
        _db.install(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE bench_source ({definition})")
            with conn.cursor().copy(f"COPY bench_source ({columns}) FROM STDIN") as copy:
                for row in source:
                    copy.write_row(row)
            conn.execute("ANALYZE bench_source")
        for algorithm, _ in MODELS:
            manifest = train(data, target, f"bench-{algorithm}", algorithm=algorithm, store=store)
            name, _, _ = _db.publish(manifest.ref, store=store, trust_pickle=True, dsn=url)
            results[algorithm] = _measure(
                url, name, columns, definition, source, singles, slow_rows, repeats
            )
            for label, f in results[algorithm].items():
                one_by_one = (
                    f"; single-row INSERTs {f.single_rows_per_s:9,.0f} rows/s "
                    f"({f.single_ratio:.3g}x)"
                    if f.single_rows_per_s == f.single_rows_per_s  # NaN: not measured
                    else ""
                )
                log(
                    f"{algorithm:7} {label:27} INSERT ... SELECT {f.bulk_rows_per_s:10,.0f} "
                    f"rows/s ({f.bulk_ratio:.3g}x){one_by_one}"
                )
            cold[algorithm] = _first_prediction(url, name, source[0], cold_runs)
            log(f"{algorithm:7} first prediction in a new connection: {cold[algorithm]:.3f} s")
        server = _server_version(url)
    body = _markdown(data, rows, singles, slow_rows, repeats, cold_runs, results, cold, server)
    write_section(output, "db", body)
    return body


def _measure(
    url: str,
    model: str,
    columns: str,
    definition: str,
    source: list[list[str | None]],
    singles: int,
    slow_rows: int,
    repeats: int,
) -> dict[str, Figures]:
    """Every variant on a table of its own, measured in rounds: each round times every
    variant's INSERT ... SELECT, then every variant's single-row INSERTs, one after the other,
    so that the machine's drift falls on all of them alike. Ratios are taken within a round."""
    import psycopg

    placeholders = ", ".join(["%s"] * len(FIELDS))
    bulk: dict[str, list[float]] = {v.label: [] for v in VARIANTS}
    single: dict[str, list[float]] = {v.label: [] for v in VARIANTS}
    with psycopg.connect(url, autocommit=True) as conn:
        tables: dict[str, tuple[str, int, int]] = {}  # label -> (table, bulk rows, single rows)
        update_floor = {v.label for v in VARIANTS if v.floor == UPDATE_FLOOR}
        bulk_only = {v.label for v in VARIANTS if v.floor is not None}
        conn.execute(_floor_trigger_function(columns))
        for i, variant in enumerate(VARIANTS):
            table = f"bench_target_{i}"
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(
                f"CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                f"{definition}, prediction integer, probability_0 double precision, "
                f"probability_1 double precision) WITH (fillfactor = {variant.fillfactor:d})"
            )
            if variant.mode is not None:
                engine = variant.engine or "auto"
                _db.attach(table, model, mode=variant.mode, engine=engine, dsn=url)
            if variant.floor == TRIGGER_FLOOR:
                conn.execute(
                    f"CREATE TRIGGER bench_floor AFTER INSERT ON {table} "
                    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                    "EXECUTE FUNCTION bench_floor_trigger()"
                )
            # The sklearn engine pays its whole pipeline per row (~25 ms): fewer rows.
            sizes = (min(len(source), slow_rows), min(singles, slow_rows))
            tables[variant.label] = (
                (table, *sizes) if variant.engine == "sklearn" else (table, len(source), singles)
            )
            # Warm up: the connection imports scorekit and loads the model once, as in production.
            conn.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM bench_source LIMIT 10"
            )

        def timed(table: str, work: Callable[[], None]) -> float:
            conn.execute(f"TRUNCATE {table}")
            started = time.perf_counter()
            work()
            return time.perf_counter() - started

        for _ in range(repeats):
            for label, (table, rows, _) in tables.items():
                sql = f"INSERT INTO {table} ({columns}) SELECT {columns} FROM bench_source"

                def insert_select(
                    sql: str = f"{sql} LIMIT {rows}",
                    table: str = table,
                    twice: bool = label in update_floor,
                ) -> None:
                    if not twice:
                        conn.execute(sql)
                        return
                    with conn.transaction():  # as the statement trigger: one commit
                        conn.execute(sql)
                        conn.execute(f"UPDATE {table} SET {CONSTANT_SCORES}")

                bulk[label].append(rows / timed(table, insert_select))
            for label, (table, _, count) in tables.items():
                if label in bulk_only:
                    continue
                sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"

                def one_by_one(sql: str = sql, count: int = count) -> None:
                    with conn.transaction():
                        for row in source[:count]:
                            conn.execute(sql, row)

                single[label].append(count / timed(table, one_by_one))
        for table, _, _ in tables.values():
            conn.execute(f"DROP TABLE {table}")
    base = NO_TRIGGER

    def median(rates: list[float], base_rates: list[float] | None = None) -> float:
        if not rates:
            return math.nan  # not measured
        if base_rates is None:
            return statistics.median(rates)
        return statistics.median(r / b for r, b in zip(rates, base_rates, strict=True))

    return {
        label: Figures(
            median(bulk[label]),
            median(single[label]),
            median(bulk[label], bulk[base]),
            median(single[label], single[base]),
        )
        for label in (v.label for v in VARIANTS)
    }


def _floor_trigger_function(columns: str) -> str:
    """The PL/pgSQL trigger function of TRIGGER_FLOOR: one array of every feature column of the
    statement's rows (into a record, so that no aggregate is planned away), and the UPDATE of
    their scores to constants by their key range (the bench tables' identity keys form one)."""
    arrays = ", ".join(f"pg_catalog.array_agg({c}) AS {c}" for c in columns.split(", "))
    return f"""CREATE OR REPLACE FUNCTION bench_floor_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    read record;
BEGIN
    SELECT min(id) AS low, max(id) AS high, {arrays} INTO read FROM new_rows;
    EXECUTE format('UPDATE %s SET {CONSTANT_SCORES} WHERE id BETWEEN $1 AND $2', TG_RELID::regclass)
        USING read.low, read.high;
    RETURN NULL;
END
$$"""


def _first_prediction(url: str, model: str, row: list[str | None], runs: int) -> float:
    import json

    import psycopg

    record = json.dumps({name: value for (name, _), value in zip(FIELDS, row, strict=True)})
    times = []
    for _ in range(runs):
        with psycopg.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute("SELECT scorekit.predict(%s, %s)", [model, record])
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _markdown(
    data: Path,
    rows: int,
    singles: int,
    slow_rows: int,
    repeats: int,
    cold_runs: int,
    results: dict[str, dict[str, Figures]],
    cold: dict[str, float],
    server: str,
) -> str:
    import datetime as dt

    lines = [
        "## In-database scoring: `scorekit bench db`",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine_description()}, PostgreSQL "
        f"{server}. One run: for each model the same {rows:,} source rows "
        f"({data} repeated) go into the same table definition with each trigger; "
        f"INSERT ... SELECT is one statement; single-row INSERTs are {singles:,} INSERT "
        "statements from the client in one transaction. The table has a bigint identity "
        "primary key, the nine feature columns and three score columns (fillfactor 100, "
        "PostgreSQL's default, unless the variant says otherwise). One connection, warmed "
        "up (scorekit imported, models loaded) before timing, measures in rounds: each round "
        "times every trigger's INSERT ... SELECT, then every trigger's single-row INSERTs, so "
        "that the machine's drift falls on all of them alike. rows/s is the median of "
        f"{repeats} rounds; each ratio is the median over the rounds of the ratio to no trigger "
        f"in the same round. The sklearn engine's rows are capped at {slow_rows:,} (each row "
        "runs the whole pickled pipeline, pandas included). The two floors are what "
        "PostgreSQL alone spends on the statement mode's design, with no Python and no "
        "scoring, and are measured on INSERT ... SELECT only: the INSERT then an UPDATE of every "
        "row's three score columns to constants in one transaction; and a PL/pgSQL statement "
        "trigger that reads every feature column of the transition table into arrays, then "
        "makes that UPDATE by key range.",
        "",
        "| model | trigger | INSERT ... SELECT rows/s | vs no trigger | single-row INSERTs "
        "rows/s | vs no trigger |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for algorithm, label in MODELS:
        figures = results[algorithm]
        for variant in (v.label for v in VARIANTS):
            f = figures[variant]
            singles_measured = f.single_rows_per_s == f.single_rows_per_s  # not NaN
            lines.append(
                f"| {label} | {variant} | {f.bulk_rows_per_s:,.0f} | {f.bulk_ratio:.3g}x | "
                + (
                    f"{f.single_rows_per_s:,.0f} | {f.single_ratio:.3g}x |"
                    if singles_measured
                    else "not measured | |"
                )
            )
    lines += [
        "",
        f"First prediction in a new connection (`SELECT scorekit.predict(...)`: imports, model "
        f"load from scorekit.models, sha256 check, scoring), median of {cold_runs} connections: "
        + "; ".join(f"{label} {cold[a]:.3f} s" for a, label in MODELS)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "unknown"

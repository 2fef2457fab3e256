"""`scorekit bench batch`: batch scoring of a table against a copy-only baseline, in one run.

It makes tables of 2,000,000 and 200,000 rows (data/audit.csv repeated, a bigint primary key),
then for each size runs, each in a fresh process under /usr/bin/time (wall time, peak RSS):

- the baseline: COPY the key and feature columns out as Python rows and COPY as many rows of
  (key, three scores, version) back into a new table, no model;
- ``scorekit score --input-table ... --output-table ...`` with the native engine, for logistic
  regression and for 100-tree gradient boosting, at the default chunk size.

It works in a database of its own, created and dropped here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._bench import machine_description, write_section
from ._bench_db import FIELDS
from ._config import database_url
from ._csvio import DEFAULT_CHUNK_SIZE
from ._db import scratch_database

MODELS = (("logreg", "logistic regression"), ("gbm", "gradient boosting, 100 trees"))
TIME = "/usr/bin/time"


@dataclass
class Run:
    seconds: float
    peak_mb: float
    reported: float | None = None  # rows/s by scorekit's own summary line: the run, not start-up

    def rate(self, rows: int) -> float:
        return rows / self.seconds


def _timed(argv: list[str]) -> Run:
    """Run ``argv`` under /usr/bin/time: wall seconds and peak RSS in MB."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        started = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", report.name, *argv], capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
        peak_kb = int(report.read().strip().splitlines()[-1])
    found = re.search(r"\(([\d,]+) rows/s\)", done.stderr)
    return Run(seconds, peak_kb / 1024, float(found[1].replace(",", "")) if found else None)


def _count(conn: Any, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


def _make_table(url: str, data: Path, name: str, rows: int) -> None:
    import psycopg

    definition = ", ".join(f"{field.lower()} {kind}" for field, kind in FIELDS)
    columns = ", ".join(field.lower() for field, _ in FIELDS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_seed (i integer, " + definition + ")")
        if _count(conn, "bench_seed") == 0:
            with (
                open(data, newline="") as f,
                conn.cursor().copy(f"COPY bench_seed (i, {columns}) FROM STDIN") as copy,
            ):
                import csv

                for i, row in enumerate(csv.DictReader(f)):
                    copy.write_row([i, *(row[field] or None for field, _ in FIELDS)])
        seeds = _count(conn, "bench_seed")
        conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, {definition})")
        conn.execute(
            f"INSERT INTO {name} SELECT g, {columns} FROM generate_series(1, %s) g "
            f"JOIN bench_seed s ON s.i = (g - 1) %% {seeds}",
            [rows],
        )
        conn.execute(f"VACUUM ANALYZE {name}")


def copy_baseline(url: str, table: str, chunk_size: int) -> None:
    """The baseline (run in its own process): rows out as Python values, as many rows back."""
    import psycopg

    columns = ", ".join(field.lower() for field, _ in FIELDS)
    out = f"{table}_copied"
    with psycopg.connect(url) as read, psycopg.connect(url) as write:
        write.execute(
            f"CREATE TABLE {out} (id bigint PRIMARY KEY, prediction integer, "
            "probability_0 double precision, probability_1 double precision, "
            "model_version text)"
        )
        write.commit()
        cursor = read.cursor(name="baseline", binary=True)
        cursor.execute(f"SELECT id, {columns} FROM {table} ORDER BY id")
        while rows := cursor.fetchmany(chunk_size):
            with write.transaction(), write.cursor().copy(f"COPY {out} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((row[0], 0, 0.5, 0.5, "1"))


def run_batch_bench(
    data: Path,
    target: str,
    output: Path,
    rows: int,
    small_rows: int,
    dsn: str | None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> str:
    from ._training import train

    if not Path(TIME).is_file():
        raise RuntimeError(f"{TIME} is missing (Debian package 'time'); make setup installs it")
    scorekit = str(Path(sys.executable).with_name("scorekit"))
    sizes = (rows, small_rows)
    results: dict[int, dict[str, Run]] = {}
    with (
        tempfile.TemporaryDirectory() as store,
        scratch_database(dsn or database_url(), "scorekit_bench") as url,
    ):
        for algorithm, _ in MODELS:
            train(data, target, f"bench-{algorithm}", algorithm=algorithm, store=store)
        for size in sizes:
            table = f"bench_{size}"
            log(f"making {table} ({size:,} rows)")
            _make_table(url, data, table, size)
            results[size] = {}
            results[size]["baseline"] = run = _timed(
                [sys.executable, "-m", "scorekit._bench_batch", url, table,
                 str(DEFAULT_CHUNK_SIZE)]
            )  # fmt: skip
            log(f"{size:>9,} baseline (copy out, copy in): {run.rate(size):10,.0f} rows/s, "
                f"peak {run.peak_mb:.0f} MB")  # fmt: skip
            for algorithm, _ in MODELS:
                results[size][algorithm] = run = _timed(
                    [scorekit, "score", "--model", f"bench-{algorithm}", "--store", store,
                     "--engine", "native", "--dsn", url, "--input-table", table,
                     "--output-table", f"{table}_{algorithm}", "--run", "bench"]
                )  # fmt: skip
                log(f"{size:>9,} scorekit score {algorithm:7}: {run.rate(size):10,.0f} rows/s, "
                    f"peak {run.peak_mb:.0f} MB")  # fmt: skip
    body = _markdown(data, sizes, results)
    write_section(output, "batch", body)
    return body


def _markdown(data: Path, sizes: tuple[int, int], results: dict[int, dict[str, Run]]) -> str:
    import datetime as dt

    lines = [
        "## Batch scoring of a table: `scorekit bench batch`",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine_description()}. One run, each "
        f"line a fresh process under {TIME} (wall time including start-up, peak RSS). Tables "
        f"of {sizes[0]:,} and {sizes[1]:,} rows ({data} repeated; a bigint primary key and the "
        "nine feature columns). The baseline copies the key and features out as Python rows "
        "through a server-side cursor (binary format) and COPYs as many (key, three scores, "
        "version) rows into a new table, a transaction per chunk, with no model. "
        "`scorekit score --input-table ... --output-table ...` reads the same way,"
        f" scores with the native engine in chunks of {DEFAULT_CHUNK_SIZE:,}"
        " rows, and per chunk COPYs into a staging table (binary format, built by numpy), "
        "upserts into the output table and records its progress, in one transaction; the next "
        "chunk is fetched and the previous one written while a chunk is scored.",
        "",
        "| rows | job | rows/s (process) | vs baseline | rows/s (the run) | peak RSS (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in sizes:
        base = results[size]["baseline"]
        lines.append(
            f"| {size:,} | baseline: copy out, copy in | {base.rate(size):,.0f} | 1x | | "
            f"{base.peak_mb:.0f} |"
        )
        for algorithm, label in MODELS:
            run = results[size][algorithm]
            lines.append(
                f"| {size:,} | scorekit score, {label} | {run.rate(size):,.0f} | "
                f"{run.rate(size) / base.rate(size):.2f}x | {run.reported or 0:,.0f} | "
                f"{run.peak_mb:.0f} |"
            )
    big, small = sizes
    lines += [
        "",
        "rows/s (process) is the table's rows over the process's wall time, start-up included "
        "(interpreter, imports, connections, model load, counting the rows); rows/s (the run) "
        "is what scorekit's summary line reports, from the run's start to its end.",
        "",
    ]
    for algorithm, label in MODELS:
        at_big, at_small = results[big][algorithm], results[small][algorithm]
        ratio = at_big.rate(big) / at_small.rate(small)
        reported = (at_big.reported or 0) / (at_small.reported or 1)
        lines.append(
            f"- {label}: at {big:,} rows, {ratio:.2f}x the rows/s at {small:,} by wall time, "
            f"{reported:.2f}x by the run's own figure; peak RSS {at_big.peak_mb:.0f} MB vs "
            f"{at_small.peak_mb:.0f} MB."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the baseline's own process
    copy_baseline(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    os._exit(0)

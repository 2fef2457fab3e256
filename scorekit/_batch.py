"""Batch runs: `scorekit score` over a PostgreSQL table, a CSV file or Parquet files, in chunks.

A run reads its source a chunk at a time (memory does not grow with the input), scores each
chunk with one vectorised call, and commits each chunk's scores together with its progress, so
an interrupted run resumes after the last chunk written and no row is written twice. Rows that
can't be scored don't stop the run: they go to an errors table or file with their key and
reason, and ``--max-error-rate`` aborts a run with too many. One run per model and target at a
time (a PostgreSQL advisory lock for tables, a file lock for files). With ``dask`` the work is
split into partitions (key ranges of a table, Parquet files) scored on Dask workers, each
loading the model once; the results are the same as a single process's.

The drivers are scorekit._batch_table (tables) and scorekit._batch_files (CSV, Parquet); what
they share is here. psycopg, pyarrow and distributed are imported only by the runs that use them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ._errors import EXIT_ROWS_FAILED, InputError, Problem, UsageError
from ._loading import load_model, parse_ref
from ._model import Model

DEFAULT_MAX_ERROR_RATE = 0.05
VERSION_COLUMN = "model_version"  # where each written score records its model version


@dataclass(frozen=True)
class BatchJob:
    """What to score, from where, into where; the command line's options, as plain values."""

    model: str  # a .pmml/.pkl file, a bundle directory, or name[@version|@alias] in the store
    input: str | None  # a CSV file, a Parquet file or directory, or postgresql://...?table=...
    output: str | None = None  # same forms; None with write_back
    input_table: str | None = None  # a table by name, in the database of ``dsn``
    output_table: str | None = None
    engine: str = "auto"
    store: str | None = None
    dsn: str | None = None  # the database of tables given by name (default: setup's)
    key: str | None = None  # tables: the key column (default: the primary key)
    where: str | None = None  # tables: SQL condition choosing the rows
    stale_only: bool = False  # tables: only rows not yet scored by this model version
    write_back: bool = False  # tables: UPDATE the input table's prediction columns
    features: tuple[tuple[str, str], ...] = ()  # model field -> input column
    outputs: tuple[tuple[str, str], ...] = ()  # output -> column (write-back)
    version_column: str = VERSION_COLUMN
    keep: tuple[str, ...] = ()  # files: input columns carried into the output
    errors: str | None = None  # files: where rows that can't be scored go
    chunk_size: int = 10_000
    resume: bool = False
    run_name: str | None = None  # default: today's UTC date
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    dask: str | None = None  # a scheduler address, or "local"
    dask_workers: int | None = None  # for "local": worker processes (default: CPU count)
    partitions: int | None = None  # Dask: how many pieces (default: 2 per worker thread)

    def check(self) -> None:
        if self.chunk_size < 1:
            raise UsageError(f"--chunk-size must be at least 1, got {self.chunk_size}")
        if not 0 <= self.max_error_rate <= 1:
            raise UsageError(
                f"--max-error-rate is a fraction of the rows from 0 to 1, got {self.max_error_rate}"
            )
        for option, value in (
            ("--dask-workers", self.dask_workers),
            ("--partitions", self.partitions),
        ):
            if value is not None and value < 1:
                raise UsageError(f"{option} must be at least 1, got {value}")
        if self.dask_workers is not None and self.dask != "local":
            raise UsageError("--dask-workers sizes a local cluster: use it with --dask local")

    @property
    def run(self) -> str:
        return self.run_name or dt.datetime.now(dt.UTC).date().isoformat()


@dataclass
class BatchResult:
    """What a run did; ``exit_code`` is 0, or EXIT_ROWS_FAILED when this run could not score
    some rows."""

    run: str
    model: str  # name@version
    engine: str
    source: str
    target: str
    rows_scored: int = 0
    rows_failed: int = 0
    chunks: int = 0
    seconds: float = 0.0
    errors_at: str | None = None
    run_id: int | None = None
    resumed: bool = False
    already_done: bool = False
    partitions: int = 1

    @property
    def exit_code(self) -> int:
        return EXIT_ROWS_FAILED if self.rows_failed and not self.already_done else 0

    def summary(self) -> str:
        run = f"run {self.run!r}" + (f" (id {self.run_id})" if self.run_id is not None else "")
        if self.already_done:
            return (
                f"{run} of {self.model} into {self.target} already finished: "
                f"{self.rows_scored:,} rows scored, {self.rows_failed:,} failed; nothing to do "
                "(rerun without --resume to score again)"
            )
        rate = f" ({self.rows_scored / self.seconds:,.0f} rows/s)" if self.seconds > 0 else ""
        failed = (
            f"; {self.rows_failed:,} row(s) could not be scored, see {self.errors_at}"
            if self.rows_failed
            else "; no row failed"
        )
        how = " resumed" if self.resumed else ""
        split = f" in {self.partitions} partitions" if self.partitions > 1 else ""
        return (
            f"{run}{how}: scored {self.rows_scored:,} rows of {self.source} with {self.model} "
            f"(engine {self.engine}) into {self.target}{split} in {self.seconds:.2f} s{rate}"
            f"{failed}"
        )


def run_batch(job: BatchJob, progress: TextIO | None = None) -> BatchResult:
    """Run ``job``: the table driver when the input is a table, the file driver otherwise.
    ``progress``: where the bar or log lines go (default stderr)."""
    job.check()
    job = dataclasses.replace(job, run_name=job.run)  # the default date, fixed for the run
    if (job.input is None) == (job.input_table is None):
        raise UsageError("give one input: --input (a file or a postgresql:// URL) or --input-table")
    if job.output is not None and job.output_table is not None:
        raise UsageError("give one output: --output or --output-table")
    if job.input_table or is_table(job.input):
        from ._batch_table import run_table

        return run_table(job, progress)
    for option, value in (
        ("--write-back", job.write_back),
        ("--where", job.where),
        ("--stale-only", job.stale_only),
        ("--output-table", job.output_table),
    ):
        if value:
            raise UsageError(f"{option} applies to a table input; {job.input} is a file")
    from ._batch_files import run_files

    return run_files(job, progress)


def is_table(location: str | None) -> bool:
    return bool(location) and str(location).startswith(("postgresql://", "postgres://"))


# --- models ------------------------------------------------------------------------------------
_models: dict[tuple[str, str, str | None], Model] = {}
_models_lock = threading.Lock()


def cached_model(source: str, engine: str, store: str | None) -> Model:
    """The model, loaded once per process: what a Dask worker calls for each partition."""
    key = (source, engine, store)
    with _models_lock:
        if key not in _models:
            _models[key] = load_model(source, engine=engine, store=store)
        return _models[key]


def pinned_source(job: BatchJob, version: str) -> str:
    """``job.model`` pinned to ``version``: name@version for a store reference (so a resumed run
    and every Dask worker score with the version the run started with); a path stays a path."""
    from ._loading import looks_like_path

    if looks_like_path(job.model):
        return job.model
    try:
        name, _ = parse_ref(job.model)
    except UsageError:
        return job.model
    return f"{name}@{version}"


def load_pinned(job: BatchJob, version: str | None = None) -> Model:
    """The job's model, loaded now (an alias such as the champion is resolved afresh); with
    ``version`` (a resumed run's), that exact version. Kept in the process's cache under its
    pinned name, where the run's partitions find it."""
    source = job.model if version is None else pinned_source(job, version)
    model = load_model(source, engine=job.engine, store=job.store)
    if version is not None and model.version != version:
        raise UsageError(
            f"the run being resumed scored with {model.name}@{version}, but {job.model} is now "
            f"version {model.version}; rerun without --resume to start a new run"
        )
    with _models_lock:
        _models[(pinned_source(job, model.version), model.engine, job.store)] = model
    return model


# --- scoring a chunk ---------------------------------------------------------------------------
@dataclass
class ChunkScores:
    """A chunk's outcome: output columns of the rows that scored, their positions in the chunk,
    and the problems of the rows that did not (one or more per bad row)."""

    columns: dict[str, np.ndarray]
    kept: np.ndarray
    problems: list[Problem] = field(default_factory=list)

    @property
    def failed_rows(self) -> int:
        return len({p.row for p in self.problems})


def score_chunk(
    model: Model, columns: Mapping[str, Sequence[Any] | np.ndarray], offset: int = 0
) -> ChunkScores:
    scored, kept, problems = model.predict_partial(columns, row_offset=offset)
    return ChunkScores(scored, kept, problems)


def error_value(value: Any) -> str | None:
    return None if value is None else str(value)


def describe(problem: Problem, key: Any = None) -> str:
    """One problem in words: "row 5 (key 17), field 'Age': expected a number, got 'x'"."""
    where = f"key {key}" if problem.row is None else f"row {problem.row}"
    if key is not None and problem.row is not None:
        where += f" (key {key})"
    field_name = f", field {problem.field!r}" if problem.field else ""
    return f"{where}{field_name}: {problem.problem}"


def check_error_rate(
    max_error_rate: float, scored: int, failed: int, errors_at: str, example: str | None = None
) -> None:
    """Abort the run when more than ``max_error_rate`` of the rows so far failed; ``example``
    (one of the failures, in words) goes into the message."""
    total = scored + failed
    if failed and total and failed / total > max_error_rate:
        one = f" One of them: {example}." if example else ""
        raise InputError(
            f"{failed:,} of {total:,} rows ({100 * failed / total:.1f}%) could not be scored, "
            f"more than --max-error-rate {max_error_rate:g}; the run stopped.{one} The rows "
            f"and reasons are in {errors_at}; fix the input, or raise --max-error-rate and "
            "--resume the run"
        )


# --- Dask --------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_client(job: BatchJob) -> Iterator[Any]:
    """A distributed Client for ``job.dask``: "local" starts a LocalCluster of worker processes
    (one thread each: scoring holds the GIL) for the run's duration."""
    if not logging.getLogger("scorekit").isEnabledFor(logging.INFO):
        # distributed logs each start and stop at INFO; cron mail wants the run's lines only.
        # Worker processes read the environment variable; this process, the logger.
        os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")
        logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError(
            "--dask needs dask's distributed scheduler: pip install distributed"
        ) from None
    if job.dask == "local":
        workers = job.dask_workers or os.cpu_count() or 1
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",  # its HTTP server always starts: any port
                host="127.0.0.1",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(job.dask, timeout="15s")
    except OSError as exc:
        raise UsageError(f"can't reach the Dask scheduler at {job.dask}: {exc}") from exc
    with client:
        yield client


def dask_threads(client: Any) -> int:
    info = client.scheduler_info()
    return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

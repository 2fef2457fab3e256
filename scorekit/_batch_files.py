"""Batch runs over files: a CSV file into a CSV file, or Parquet files into Parquet files.

Beside the output ``OUT`` a run keeps ``OUT.run.json`` (its record: model version, status,
progress) and ``OUT.lock`` (held while it runs). Output goes to a hidden partial file renamed
into place when complete, so a failed or killed run never leaves a partial output under the
final name.

- CSV: after each chunk the partial output and the errors file are flushed to disk, then the
  record is replaced; ``--resume`` truncates both to the sizes in the record and continues after
  the rows it counts, so every row is written exactly once.
- Parquet (a file, or a directory of ``*.parquet``): each input file is one unit of work, written
  in row groups of a chunk each; ``--resume`` skips the files done and redoes the others. With
  Dask, files are scored on the workers in parallel.

Rows that can't be scored go to ``OUT.errors.csv`` (Parquet: ``OUT.errors/<file>.csv``): the
row number, the ``--key`` column's value if given, the field, the value and the reason.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TextIO

from ._batch import (
    VERSION_COLUMN,
    BatchJob,
    BatchResult,
    ChunkScores,
    cached_model,
    check_error_rate,
    dask_client,
    describe,
    error_value,
    load_pinned,
    pinned_source,
    score_chunk,
)
from ._config import file_mode
from ._csvio import CsvReader, format_value
from ._errors import InputError, LockHeldError, ScorekitError, UsageError
from ._model import Model
from ._progress import Progress
from ._store import utc_now

ERROR_COLUMNS = ["row", "key", "field", "value", "problem"]
PARQUET_SUFFIXES = (".parquet", ".pq")


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def _file_lock(output: Path, model: str) -> Iterator[None]:
    lock_path = _sibling(output, ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(
                f"another scorekit score run into {output} is running (it holds {lock_path}); "
                f"this run of {model} did nothing. Wait for it to finish, or stop it; a run "
                "that was killed releases its lock, and --resume continues it"
            ) from None
        yield


class RunRecord:
    """``OUT.run.json``: what a file run did, replaced atomically after each step."""

    def __init__(self, output: Path) -> None:
        self.path = _sibling(output, ".run.json")
        self.data: dict[str, Any] = {}

    def load(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise UsageError(
                f"{self.path} is not a run record ({exc}); delete it to start a new run"
            ) from None
        return data

    def save(self, **changes: Any) -> None:
        self.data.update(changes)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, self.path)


def run_files(job: BatchJob, progress_stream: TextIO | None = None) -> BatchResult:
    if not job.output:
        raise UsageError("--output is required: the CSV or Parquet file (or directory) to write")
    source = Path(str(job.input))
    output = Path(job.output)
    if not source.exists():
        raise InputError(f"input {source} does not exist")
    parquet = source.is_dir() or source.suffix.lower() in PARQUET_SUFFIXES
    out_suffix = output.suffix.lower()
    if source.is_dir():
        matches = not output.is_file() and out_suffix not in (*PARQUET_SUFFIXES, ".csv")
    elif parquet:
        matches = out_suffix in PARQUET_SUFFIXES
    else:
        matches = out_suffix not in PARQUET_SUFFIXES and not output.is_dir()
    if not matches:
        raise UsageError(
            f"--input {source} and --output {output} don't match: a CSV file is scored into a "
            "CSV file, a Parquet file into a .parquet file, a directory of Parquet files into "
            "a directory"
        )
    if output.resolve() == source.resolve():
        raise UsageError(f"--output {output} is the input; write the scores elsewhere")
    model = load_pinned(job)
    with _file_lock(output, model.name):
        record = RunRecord(output)
        previous = record.load()
        resumed = bool(job.resume and previous and previous.get("run") == job.run)
        options = {"model": model.name, "source": str(source), "keep": list(job.keep),
                   "key": job.key}  # fmt: skip
        if resumed and previous is not None and previous.get("options") != options:
            raise UsageError(
                f"run {job.run!r} into {output} was {previous.get('options')}; this one is "
                f"{options}. Resume it with the same model, input and columns, or give this "
                "job its own --run name (or output)"
            )
        if resumed and previous is not None:
            if previous.get("status") == "succeeded":
                return BatchResult(
                    job.run,
                    f"{previous['model']}@{previous['version']}",
                    previous["engine"],
                    str(source),
                    str(output),
                    previous["rows_scored"],
                    previous["rows_failed"],
                    previous["chunks_done"],
                    already_done=True,
                )
            model = load_pinned(job, previous["version"])
            record.data = previous
            record.save(status="running", message=None)
        else:
            record.data = {
                "run": job.run, "options": options, "model": model.name, "version": model.version,
                "engine": model.engine, "source": str(source), "target": str(output),
                "status": "running", "started": utc_now(), "finished": None,
                "rows_scored": 0, "rows_failed": 0, "chunks_done": 0,
            }  # fmt: skip
            record.save()
        result = BatchResult(
            job.run, f"{model.name}@{model.version}", model.engine, str(source), str(output),
            resumed=resumed,
        )  # fmt: skip
        started = time.perf_counter()
        try:
            if parquet:
                _run_parquet(job, model, source, output, record, result, progress_stream)
            else:
                _run_csv(job, model, source, output, record, result, progress_stream)
        except BaseException as exc:
            status = "aborted" if isinstance(exc, InputError) else "failed"
            message = exc.message if isinstance(exc, ScorekitError) else repr(exc)
            with contextlib.suppress(OSError):
                record.save(status=status, message=message)
            raise
        record.save(status="succeeded", finished=utc_now())
        result.rows_scored = record.data["rows_scored"]
        result.rows_failed = record.data["rows_failed"]
        result.chunks = record.data["chunks_done"]
        result.seconds = time.perf_counter() - started
        return result


# --- CSV -----------------------------------------------------------------------------------------
def _check_keep(job: BatchJob, header: Sequence[str], model: Model, source: Path) -> None:
    named = [*job.keep, *([job.key] if job.key else [])]
    absent = [c for c in named if c not in header]
    if absent:
        raise UsageError(
            f"--keep/--key name column(s) not in {source}: {', '.join(absent)}; its columns "
            f"are: {', '.join(header)}"
        )
    clash = [c for c in job.keep if c in model.output_columns or c == VERSION_COLUMN]
    if clash:
        raise UsageError(
            f"--keep column(s) {', '.join(clash)} would collide with the output columns; "
            "rename them in the input"
        )


def _open_truncated(path: Path, size: int, header: Sequence[str]) -> IO[str]:
    """``path`` opened for appending: cut to ``size`` bytes when resuming (size > 0), else
    created with ``header``."""
    if size > 0:
        handle = open(path, "r+", newline="", encoding="utf-8")  # noqa: SIM115
        handle.truncate(size)
        handle.seek(size)
        return handle
    handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
    os.chmod(path, file_mode())
    csv.writer(handle).writerow(header)
    return handle


def _durable(handle: IO[str]) -> int:
    handle.flush()
    os.fsync(handle.fileno())
    return handle.tell()


def _run_csv(
    job: BatchJob,
    model: Model,
    source: Path,
    output: Path,
    record: RunRecord,
    result: BatchResult,
    progress_stream: TextIO | None,
) -> None:
    errors_path = Path(job.errors) if job.errors else _sibling(output, ".errors.csv")
    result.errors_at = str(errors_path)
    partial = _partial(output)
    data = record.data
    resume_at = int(data.get("rows_read", 0)) if result.resumed else 0
    if result.resumed and resume_at and not partial.exists():
        if output.exists() and errors_path.exists() == bool(data["rows_failed"]):
            return  # killed just after the output was renamed into place: it is complete
        raise UsageError(
            f"the run being resumed wrote {partial}, which is gone; rerun without --resume"
        )
    if result.resumed and resume_at and not errors_path.exists():
        raise UsageError(
            f"the run being resumed wrote its bad rows to {errors_path}, which is gone; rerun "
            "without --resume"
        )
    header = [*job.keep, *model.output_columns, VERSION_COLUMN]
    progress = Progress(
        None,
        f"run {job.run!r}",
        progress_stream,
        done_before=data["rows_scored"] + data["rows_failed"],
    )
    with CsvReader(source, job.chunk_size) as reader:
        model.manifest.schema.check_columns(reader.header, model.ref)
        _check_keep(job, reader.header, model, source)
        output.parent.mkdir(parents=True, exist_ok=True)
        errors_path.parent.mkdir(parents=True, exist_ok=True)
        out = _open_truncated(partial, int(data.get("out_bytes", 0)) if resume_at else 0, header)
        errs = _open_truncated(
            errors_path, int(data.get("errors_bytes", 0)) if resume_at else 0, ERROR_COLUMNS
        )
        try:
            out_writer, err_writer = csv.writer(out), csv.writer(errs)
            for offset, columns in reader.chunks():
                end = offset + len(next(iter(columns.values()), []))
                if end <= resume_at:
                    continue
                if offset < resume_at:  # resumed with another chunk size
                    columns = {k: v[resume_at - offset :] for k, v in columns.items()}
                    offset = resume_at
                chunk = score_chunk(model, columns, offset)
                _write_csv_chunk(out_writer, err_writer, job, columns, chunk, model.version, offset)
                record.save(
                    rows_read=end,
                    out_bytes=_durable(out),
                    errors_bytes=_durable(errs),
                    rows_scored=data["rows_scored"] + len(chunk.kept),
                    rows_failed=data["rows_failed"] + chunk.failed_rows,
                    chunks_done=data["chunks_done"] + 1,
                )
                progress.update(data["rows_scored"] + data["rows_failed"], data["rows_failed"])
                example = describe(chunk.problems[0]) if chunk.problems else None
                check_error_rate(
                    job.max_error_rate,
                    data["rows_scored"],
                    data["rows_failed"],
                    str(errors_path),
                    example,
                )
        finally:
            out.close()
            errs.close()
            progress.close()
    os.replace(partial, output)
    if data["rows_failed"] == 0:
        errors_path.unlink(missing_ok=True)
        result.errors_at = None


def _write_csv_chunk(
    out: Any,
    errs: Any,
    job: BatchJob,
    columns: dict[str, list[str]],
    chunk: ChunkScores,
    version: str,
    offset: int,
) -> None:
    kept = chunk.kept
    all_kept = len(kept) == len(next(iter(columns.values()), []))
    cells = [
        [format_value(v) for v in (columns[c] if all_kept else [columns[c][i] for i in kept])]
        for c in job.keep
    ]
    cells += [[format_value(v) for v in values.tolist()] for values in chunk.columns.values()]
    cells.append([version] * len(kept))
    out.writerows(zip(*cells, strict=True))
    keys = columns[job.key] if job.key else None
    for p in chunk.problems:
        row = p.row if p.row is not None else offset
        key = keys[row - offset] if keys is not None else ""
        errs.writerow([row, key, p.field or "", error_value(p.value) or "", p.problem])


# --- Parquet -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParquetUnit:
    """One input file and where its scores and errors go: what a Dask worker is handed."""

    source: str
    output: str
    errors: str
    model_source: str
    engine: str
    store: str | None
    chunk_size: int
    keep: tuple[str, ...]
    key: str | None
    max_error_rate: float


def _parquet_units(job: BatchJob, model: Model, source: Path, output: Path) -> list[ParquetUnit]:
    import pyarrow.parquet as pq

    if source.is_dir():
        files = sorted(p for p in source.glob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise InputError(f"input directory {source} holds no *.parquet files")
        targets = [output / f.name for f in files]
    else:
        files, targets = [source], [output]
    errors_dir = Path(job.errors) if job.errors else _sibling(output, ".errors")
    for f in files:  # every file's columns are checked before any work
        try:
            names = pq.read_schema(f).names
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError and others
            raise InputError(f"{f} is not a readable Parquet file: {exc}") from None
        model.manifest.schema.check_columns(names, f"{model.ref} (in {f})")
        _check_keep(job, names, model, f)
    return [
        ParquetUnit(
            str(f),
            str(t),
            str(errors_dir / f"{f.stem}.csv"),
            pinned_source(job, model.version),
            model.engine,
            job.store,
            job.chunk_size,
            job.keep,
            job.key,
            job.max_error_rate,
        )
        for f, t in zip(files, targets, strict=True)
    ]


def _arrow_schema(model: Model, keep_fields: list[Any]) -> Any:
    import pyarrow as pa

    if model.task == "regression":
        label = pa.float64()
    else:
        kinds = {type(c) for c in model.classes or []}
        label = (
            pa.bool_() if kinds == {bool}
            else pa.int64() if kinds <= {int}
            else pa.float64() if kinds <= {int, float}
            else pa.string()
        )  # fmt: skip
    fields = [*keep_fields, pa.field(model.output_columns[0], label)]
    fields += [pa.field(name, pa.float64()) for name in model.output_columns[1:]]
    fields.append(pa.field(VERSION_COLUMN, pa.string()))
    return pa.schema(fields)


def score_parquet_unit(unit: ParquetUnit) -> tuple[int, int, int]:
    """Score one Parquet file into ``unit.output`` and its bad rows into ``unit.errors`` (both
    written as hidden partial files, renamed when complete); returns (scored, failed, chunks).
    Stops, writing nothing, when the file's own error rate passes ``unit.max_error_rate``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = cached_model(unit.model_source, unit.engine, unit.store)
    output, errors = Path(unit.output), Path(unit.errors)
    partial, errors_partial = _partial(output), _partial(errors)
    output.parent.mkdir(parents=True, exist_ok=True)
    errors.parent.mkdir(parents=True, exist_ok=True)
    reader = pq.ParquetFile(unit.source)
    keep = [*unit.keep]
    read = list(dict.fromkeys([*model.input_fields, *keep, *([unit.key] if unit.key else [])]))
    schema = _arrow_schema(model, [reader.schema_arrow.field(c) for c in keep])
    scored = failed = chunks = offset = 0
    try:
        with (
            pq.ParquetWriter(partial, schema) as writer,
            open(errors_partial, "w", newline="", encoding="utf-8") as bad_rows,
        ):
            errors_csv = csv.writer(bad_rows)
            errors_csv.writerow(ERROR_COLUMNS)
            for batch in reader.iter_batches(batch_size=unit.chunk_size, columns=read):
                columns = {
                    name: batch.column(name).to_numpy(zero_copy_only=False)
                    for name in model.input_fields
                }
                chunk = score_chunk(model, columns, offset)
                kept = pa.array(chunk.kept, type=pa.int64())
                arrays = [batch.column(c).take(kept) for c in keep]
                arrays += [
                    pa.array(values, type=schema.field(name).type)
                    for name, values in chunk.columns.items()
                ]
                arrays.append(pa.array([model.version] * len(chunk.kept), type=pa.string()))
                writer.write_batch(pa.record_batch(arrays, schema=schema))
                keys = batch.column(unit.key).to_pylist() if unit.key else None
                for p in chunk.problems:
                    row = p.row if p.row is not None else offset
                    key = keys[row - offset] if keys is not None else ""
                    errors_csv.writerow(
                        [row, key, p.field or "", error_value(p.value) or "", p.problem]
                    )
                scored += len(chunk.kept)
                failed += chunk.failed_rows
                chunks += 1
                offset += batch.num_rows
                example = describe(chunk.problems[0]) if chunk.problems else None
                check_error_rate(unit.max_error_rate, scored, failed, str(errors), example)
    except BaseException:
        partial.unlink(missing_ok=True)
        errors_partial.unlink(missing_ok=True)
        raise
    if failed:
        os.replace(errors_partial, errors)
    else:
        errors_partial.unlink()
        errors.unlink(missing_ok=True)
    os.replace(partial, output)
    return scored, failed, chunks


def _run_parquet(
    job: BatchJob,
    model: Model,
    source: Path,
    output: Path,
    record: RunRecord,
    result: BatchResult,
    progress_stream: TextIO | None,
) -> None:
    import pyarrow.parquet as pq

    units = _parquet_units(job, model, source, output)
    if source.is_dir():
        output.mkdir(parents=True, exist_ok=True)
    data = record.data
    done: dict[str, list[int]] = data.setdefault("files_done", {}) if result.resumed else {}
    if not result.resumed:
        data["files_done"] = done
    todo = [u for u in units if u.source not in done or not Path(u.output).exists()]
    result.errors_at = str(Path(job.errors) if job.errors else _sibling(output, ".errors"))
    result.partitions = len(units)
    total = sum(pq.ParquetFile(u.source).metadata.num_rows for u in units)
    progress = Progress(
        total,
        f"run {job.run!r}",
        progress_stream,
        done_before=data["rows_scored"] + data["rows_failed"],
    )

    def finished(unit: ParquetUnit, counts: tuple[int, int, int]) -> None:
        done[unit.source] = list(counts)
        record.save(
            files_done=done,
            rows_scored=sum(c[0] for c in done.values()),
            rows_failed=sum(c[1] for c in done.values()),
            chunks_done=sum(c[2] for c in done.values()),
        )
        progress.update(data["rows_scored"] + data["rows_failed"], data["rows_failed"])
        check_error_rate(
            job.max_error_rate, data["rows_scored"], data["rows_failed"], result.errors_at or ""
        )

    try:
        if not job.dask:
            for unit in todo:
                finished(unit, score_parquet_unit(unit))
        else:
            from distributed import as_completed

            with dask_client(job) as client:
                futures = {client.submit(score_parquet_unit, u, pure=False): u for u in todo}
                for future in as_completed(futures):
                    try:
                        finished(futures[future], future.result())
                    except BaseException:
                        for other in futures:
                            other.cancel()
                        raise
        progress.update(data["rows_scored"] + data["rows_failed"], data["rows_failed"], force=True)
    finally:
        progress.close()
    if data["rows_failed"] == 0:
        result.errors_at = None

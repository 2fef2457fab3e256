"""Streaming CSV in and out with the standard library (no pandas on the scoring path)."""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._config import file_mode
from ._errors import InputError, Problem

DEFAULT_CHUNK_SIZE = 10_000


class CsvReader:
    """Columns of a CSV file, read ``chunk_size`` rows at a time; values stay strings."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        stream: IO[str] | None = None,
    ) -> None:
        """Read ``path``, or ``stream`` (an open text stream, such as an S3 object's body)
        with ``path`` naming it in messages."""
        self.path = Path(path)
        self.chunk_size = chunk_size
        if stream is not None:
            self._file: IO[str] = stream
        else:
            try:
                self._file = open(self.path, newline="", encoding="utf-8-sig")  # noqa: SIM115
            except FileNotFoundError as exc:
                raise InputError(f"input file {self.path} does not exist") from exc
            except OSError as exc:
                raise InputError(f"can't read input file {self.path}: {exc}") from exc
        self._rows = csv.reader(self._file)
        try:
            self.header = next(self._rows)
        except StopIteration:
            self.close()
            raise InputError(f"input file {self.path} is empty; expected a header line") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            self.close()
            raise InputError(f"input file {self.path} is not readable CSV: {exc}") from exc
        duplicates = sorted({h for h in self.header if self.header.count(h) > 1})
        if duplicates:
            self.close()
            raise InputError(f"input file {self.path} repeats column(s) {', '.join(duplicates)}")

    def chunks(self) -> Iterator[tuple[int, dict[str, list[str]]]]:
        """(row offset, columns) per chunk; rows are numbered from 0, the first data line."""
        width = len(self.header)
        offset = 0
        data_rows = 0  # blank lines are skipped and not counted
        rows: list[list[str]] = []
        try:
            for row in self._rows:
                if not row:
                    continue
                if len(row) != width:
                    raise InputError(
                        f"row {data_rows} (line {self._rows.line_num}) of {self.path} has "
                        f"{len(row)} fields, but the header has {width}",
                        [Problem(data_rows, None, f"has {len(row)} fields, expected {width}")],
                    )
                data_rows += 1
                rows.append(row)
                if len(rows) == self.chunk_size:
                    yield offset, self._columns(rows)
                    offset += len(rows)
                    rows = []
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(
                f"{self.path} is not readable CSV near line {self._rows.line_num}: {exc}"
            ) from exc
        if rows or offset == 0:
            yield offset, self._columns(rows)

    def _columns(self, rows: list[list[str]]) -> dict[str, list[str]]:
        return {name: [row[j] for row in rows] for j, name in enumerate(self.header)}

    def read_all(self) -> dict[str, list[str]]:
        columns: dict[str, list[str]] = {name: [] for name in self.header}
        for _offset, chunk in self.chunks():
            for name, values in chunk.items():
                columns[name].extend(values)
        return columns

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def format_value(value: Any) -> str:
    """A cell: floats in shortest round-trip form, missing as empty."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else repr(float(value))
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


class AtomicCsvWriter:
    """Writes to a temporary file beside ``path`` and renames it into place on commit(), so a
    failed run leaves no partial output."""

    def __init__(self, path: str | os.PathLike[str], header: Sequence[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide the output from other users
        self._file = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(header)
        self.header = list(header)
        self.rows = 0

    def write_columns(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> None:
        cells = [[format_value(v) for v in columns[name]] for name in self.header]
        rows = list(zip(*cells, strict=True))
        self._writer.writerows(rows)
        self.rows += len(rows)

    def commit(self) -> None:
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

"""File-drop batch scoring: a CSV dropped under an input prefix is scored, a chunk at a time,
into the same name under the output prefix; a file that can't be scored gets an error report
beside it instead, and no output at all.

Keys, the same in an S3 bucket and a blob container::

    <input prefix><model>[@<version>]/<name>.csv  ->  <output prefix><model>[@<version>]/<name>.csv
                                                    or <input key>.error.json

The adapters (functions/aws_lambda.py for S3, functions/azure_blob.py for Azure Blob Storage)
bring the object's byte stream and upload the results;
this module works on plain streams and local files, so memory holds one chunk, not the file.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._config import env_number
from ._csvio import DEFAULT_CHUNK_SIZE, CsvReader
from ._errors import ScorekitError, UsageError
from ._http import Models
from ._scorefile import score_csv

REPORT_SUFFIX = ".error.json"


@dataclass
class DropOutcome:
    """What became of one dropped file."""

    input_key: str
    output_key: str | None = None  # set when scored
    report_key: str | None = None  # set when refused
    rows: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v not in (None, "")}


class ByteChunks(io.RawIOBase):
    """A readable byte stream over an iterator of byte chunks (a blob download's ``chunks()``),
    so a CSV reader can consume a download without holding all of it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def wants(key: str, input_prefix: str) -> bool:
    """Whether ``key`` is a file to score: a .csv under the input prefix (so error reports and
    outputs, even when an event reports them, are left alone)."""
    return key.startswith(input_prefix) and key.endswith(".csv")


def output_key(key: str, input_prefix: str, output_prefix: str) -> tuple[str, str]:
    """(model reference, output key) for an input key."""
    rest = key[len(input_prefix) :]
    model, slash, name = rest.partition("/")
    if not slash or not model or not name:
        raise UsageError(
            f"{key} is not where scorekit looks for files: drop them as "
            f"{input_prefix}<model>[@<version>]/<name>.csv"
        )
    return model, output_prefix + rest


@dataclass(frozen=True)
class DropSettings:
    """Where drops land and how they are read, as the cloud adapters configure them."""

    input_prefix: str = "input/"
    output_prefix: str = "output/"
    chunk_size: int = DEFAULT_CHUNK_SIZE

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DropSettings:
        """SCOREKIT_INPUT_PREFIX, SCOREKIT_OUTPUT_PREFIX and SCOREKIT_CHUNK_ROWS."""
        rows = env_number(environ, "SCOREKIT_CHUNK_ROWS", float(DEFAULT_CHUNK_SIZE))
        if rows < 1 or not rows.is_integer():
            raise UsageError(
                f"SCOREKIT_CHUNK_ROWS must be a whole number of rows, 1 or more, got "
                f"{environ.get('SCOREKIT_CHUNK_ROWS')!r}"
            )
        return cls(
            environ.get("SCOREKIT_INPUT_PREFIX", cls.input_prefix),
            environ.get("SCOREKIT_OUTPUT_PREFIX", cls.output_prefix),
            int(rows),
        )


def score_drop(
    models: Models,
    key: str,
    stream: IO[bytes],
    upload: Callable[[Path, str], None],
    put_report: Callable[[str, bytes], None],
    *,
    input_prefix: str = "input/",
    output_prefix: str = "output/",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> DropOutcome:
    """Score the CSV in ``stream`` (the object at ``key``) and ``upload`` the scored file, or
    ``put_report`` an error report beside the input; errors of the file never raise."""
    if not output_prefix or output_prefix.startswith(input_prefix):
        raise UsageError(
            f"output prefix {output_prefix!r} must not lie under input prefix {input_prefix!r}: "
            "each output would be dropped in again"
        )
    model_ref = ""
    try:
        model_ref, out_key = output_key(key, input_prefix, output_prefix)
        name, _, version = model_ref.partition("@")
        model = models.get(name, version or None)
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        with tempfile.TemporaryDirectory(prefix="scorekit-drop-") as work:
            scored = Path(work) / "scored.csv"
            rows = score_csv(model, CsvReader(key, chunk_size, stream=text), scored)
            upload(scored, out_key)
        return DropOutcome(key, output_key=out_key, rows=rows, message=f"scored with {model.ref}")
    except ScorekitError as exc:
        report = {
            "input": key,
            "model": model_ref or None,
            "error": {
                "code": exc.code,
                "message": exc.message,
                "details": [p.to_dict() for p in exc.details],
            },
            "output": "none: nothing was written",
        }
        report_key = key + REPORT_SUFFIX
        put_report(report_key, (json.dumps(report, indent=2, default=str) + "\n").encode())
        return DropOutcome(key, report_key=report_key, message=exc.message)

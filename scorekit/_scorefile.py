"""Score a CSV stream into a CSV file, chunk by chunk: what `scorekit score` and file-drop
scoring share. The output is replaced only when every row scored, so a bad file leaves none."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._csvio import AtomicCsvWriter, CsvReader
from ._errors import InputError, UsageError
from ._model import Model


def score_csv(
    model: Model,
    reader: CsvReader,
    output: str | os.PathLike[str],
    keep: Sequence[str] = (),
    on_chunk: Callable[[Mapping[str, np.ndarray]], Any] | None = None,
) -> int:
    """Score every row of ``reader`` into ``output``; returns the number of rows. ``keep``:
    input columns carried before the predictions; ``on_chunk`` sees each chunk's scores."""
    model.manifest.schema.check_columns(reader.header, model.ref)
    absent = [c for c in keep if c not in reader.header]
    if absent:
        raise UsageError(
            f"--keep names column(s) not in {reader.path}: {', '.join(absent)}; "
            f"its columns are: {', '.join(reader.header)}"
        )
    clash = [c for c in keep if c in model.output_columns]
    if clash:
        raise UsageError(
            f"--keep column(s) {', '.join(clash)} would collide with the "
            "output columns; rename them in the input"
        )
    writer = AtomicCsvWriter(output, [*keep, *model.output_columns])
    try:
        for offset, chunk in reader.chunks():
            try:
                scored = model.predict_columns(chunk, row_offset=offset)
            except InputError as exc:
                raise InputError(
                    f"{exc.message} (in {reader.path}, rows count from 0 at the first line "
                    "after the header; nothing was written)",
                    exc.details,
                ) from exc
            writer.write_columns({**{c: chunk[c] for c in keep}, **scored})
            if on_chunk is not None:
                on_chunk(scored)
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    return writer.rows

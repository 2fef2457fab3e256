"""Model: a loaded model version and the scoring entry points every path calls."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import InputError, Problem
from ._manifest import Manifest
from ._output import PREDICTION, Scores, output_columns
from ._schema import MAX_DETAILS, Batch, invalid_input_error
from ._scorer import OneAnswer, Scorer

if TYPE_CHECKING:
    import pandas as pd


def _python_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class Model:
    """A model version loaded in one engine.

    Every ``predict*`` method validates its input against the model's schema first, so a bad
    value raises :class:`InputError` naming the row, field and value whichever engine is used,
    and returns the output contract: ``prediction`` and, for classifiers, ``probability(<class>)``
    per class, one row per input row, in input order.
    """

    def __init__(self, manifest: Manifest, scorer: Scorer) -> None:
        self.manifest = manifest
        self.scorer = scorer
        self.output_columns = output_columns(manifest.task, manifest.classes)
        self._score_values = getattr(scorer, "score_values", None)

    def __repr__(self) -> str:
        return f"<scorekit.Model {self.ref} task={self.task} engine={self.engine}>"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ref(self) -> str:
        return self.manifest.ref

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def classes(self) -> list[Any] | None:
        return self.manifest.classes

    @property
    def engine(self) -> str:
        return self.scorer.engine

    @property
    def input_fields(self) -> list[str]:
        return self.manifest.schema.names

    def predict_columns(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray], *, row_offset: int = 0
    ) -> dict[str, np.ndarray]:
        """Score a batch given as columns (name -> values); rows in errors count from row_offset."""
        return self._score(self.manifest.schema.prepare(columns, self.ref, row_offset))

    def predict_partial(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray], *, row_offset: int = 0
    ) -> tuple[dict[str, np.ndarray], np.ndarray, list[Problem]]:
        """Score the rows that can be scored and explain the others, for batch runs that go on
        past bad rows: (output columns of the good rows, their positions in ``columns``, every
        problem of the bad rows, rows numbered from ``row_offset``)."""
        batch, kept, problems = self.manifest.schema.prepare_partial(columns, self.ref, row_offset)
        return self._score(batch), kept, problems

    def _score(self, batch: Batch) -> dict[str, np.ndarray]:
        """The output columns for an already validated batch."""
        n_rows = len(next(iter(batch.values()))) if batch else 0
        if n_rows == 0:  # engines never see an empty batch
            return Scores.empty(self.task, len(self.classes or [])).columns(self.classes)
        scores = self.scorer.score(batch)
        if len(scores.prediction) != n_rows:  # an engine bug, never a client's mistake
            raise RuntimeError(
                f"engine {self.engine} returned {len(scores.prediction)} predictions for "
                f"{n_rows} rows of {self.ref}"
            )
        return scores.columns(self.classes)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Score a list of records (dicts); returns one dict per record, in order."""
        names = self.manifest.schema.names
        problems: list[Problem] = []
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                problems.append(
                    Problem(
                        i, None, f"expected an object of field values, got {type(record).__name__}"
                    )
                )
            elif len(problems) < MAX_DETAILS:
                problems.extend(
                    Problem(i, name, "required field is absent (send null for a missing value)")
                    for name in names
                    if name not in record
                )
        if problems:
            raise invalid_input_error(problems, self.ref)
        columns = {name: [record[name] for record in records] for name in names}
        scored = self.predict_columns(columns)
        out_names = list(scored)
        out_values = [scored[name].tolist() for name in out_names]
        return [dict(zip(out_names, row, strict=True)) for row in zip(*out_values, strict=True)]

    def predict_one(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Score one record (a dict of field values); returns a dict of the output columns."""
        if not isinstance(record, Mapping):
            raise InputError(
                f"model {self.ref} expects a record as a dict of field values, "
                f"got {type(record).__name__}"
            )
        schema = self.manifest.schema
        # The engine's one-record path, where it has one: first on values typed without arrays,
        # then on the validated one-row batch (which also explains any bad value).
        score_record = self._score_record_by_name
        if score_record is not None:
            try:
                one = score_record(record)
            except KeyError:
                if all(name in record for name in schema.names):
                    raise  # not an absent field
                one = None  # an absent field: the batch path names it
            if one is not None:
                return self._one_output(one)
        names = schema.names
        if not all(name in record for name in names):
            return self.predict_records([record])[0]  # raises, naming the absent fields
        batch = schema.prepare({name: [record[name]] for name in names}, self.ref)
        score_one = getattr(self.scorer, "score_one", None)
        if score_one is not None:
            one = score_one(batch)
            if one is not None:
                return self._one_output(one)
        return {name: _python_value(values[0]) for name, values in self._score(batch).items()}

    def predict_values(self, values: Mapping[str, Any]) -> OneAnswer | None:
        """The engine's answer for one record already typed by ``InputSchema.prepare_one``:
        (prediction, class probabilities in class order, or None for a regression); None when
        the engine has no one-record form for it (then use ``predict_one``)."""
        if self._score_values is None:
            return None
        one: OneAnswer | None = self._score_values(values)
        return one

    def record_scorer(
        self, keys: Sequence[str] | None = None
    ) -> Callable[[Mapping[str, Any]], OneAnswer | None] | None:
        """The fastest one-record form, for callers that score record after record (such as
        the database's row trigger): a function record -> ``predict_values(
        schema.prepare_one(record, keys))``, which is None where either gives None (then use
        ``predict_one``, which also explains a bad value) and raises KeyError for an absent
        key. ``keys``: where each field is in a record (a row's column names), default its
        name. None when the engine has no one-record form (only the native engine has one)."""
        make = getattr(self.scorer, "record_scorer", None)
        scorer: Callable[[Mapping[str, Any]], OneAnswer | None] | None = (
            make(keys) if make is not None else None
        )
        return scorer

    @functools.cached_property
    def _score_record_by_name(self) -> Callable[[Mapping[str, Any]], OneAnswer | None] | None:
        return self.record_scorer()

    def _one_output(self, one: OneAnswer) -> dict[str, Any]:
        prediction, probabilities = one
        out = {PREDICTION: prediction}
        if probabilities is not None:
            out.update(zip(self.output_columns[1:], probabilities, strict=True))
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score a pandas DataFrame; the result has the same index and the output columns."""
        import pandas as pd

        self.manifest.schema.check_columns(frame.columns, self.ref)
        columns = {name: frame[name].to_numpy() for name in self.manifest.schema.names}
        return pd.DataFrame(self.predict_columns(columns), index=frame.index)

    def close(self) -> None:
        self.scorer.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

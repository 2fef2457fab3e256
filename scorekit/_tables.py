"""How a model's fields and outputs map onto a PostgreSQL table's columns: shared by the
database's triggers (scorekit._plpython) and batch runs over tables (scorekit._batch_table).

Pure Python over column descriptions read from the catalog; no database access here. Each caller
names its own way of overriding a mapping (``features => '{...}'`` in SQL, ``--feature`` on the
command line) through :class:`Options`, so the messages tell the user what to type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import UsageError
from ._model import Model
from ._output import PREDICTION

NUMERIC_CATEGORY = "N"  # pg_type.typcategory
STRING_CATEGORY = "S"
BOOLEAN_CATEGORY = "B"
ENUM_CATEGORY = "E"
UNKEYABLE = ("A", "C")  # arrays and composites: no key for writing scores back
FRACTIONAL_TYPES = ("double precision", "real", "numeric")  # format_type() prefixes


FIRST_USER_OID = 16384  # PostgreSQL's FirstNormalObjectId: types below it are built in


@dataclass
class Column:
    name: str
    type: str  # format_type(), e.g. "double precision"
    category: str  # pg_type.typcategory
    type_oid: int = 0  # pg_type.oid, where the caller read it

    @property
    def builtin(self) -> bool:
        """A type PostgreSQL itself defines (not an extension's, such as citext, nor an enum)."""
        return 0 < self.type_oid < FIRST_USER_OID


@dataclass(frozen=True)
class Options:
    """How the caller's users override the mappings, as words for the messages."""

    features: str  # the option's name, e.g. "features" or "--feature"
    features_example: str  # e.g. 'features => \'{"Field": "column"}\''
    outputs: str
    outputs_example: str


SQL_OPTIONS = Options(
    "features",
    'features => \'{"Field": "column"}\'',
    "outputs",
    'outputs => \'{"prediction": "my_column"}\'',
)


def slug(text: str) -> str:
    """A name as a plain lower-case SQL identifier: probability(1) -> probability_1."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def is_number(column: Column) -> bool:
    return column.category == NUMERIC_CATEGORY and column.type != "money"


def prediction_type(model: Model) -> str:
    """The SQL type of the model's prediction column."""
    if model.task == "regression":
        return "double precision"
    return "text" if any(isinstance(c, str) for c in model.classes or []) else "integer"


def default_output_column(output: str) -> str:
    return PREDICTION if output == PREDICTION else slug(output)


def map_features(
    model: Model,
    columns: dict[str, Column],
    given: dict[str, str],
    table: str,
    options: Options = SQL_OPTIONS,
) -> dict[str, str]:
    """Model field -> table column: as given, else the same name, else the one column whose
    name matches ignoring case and punctuation."""
    unknown = [f for f in given if f not in model.input_fields]
    if unknown:
        raise UsageError(
            f"{options.features} names field(s) model {model.ref} does not read: "
            f"{', '.join(unknown)}; its fields are: {', '.join(model.input_fields)}"
        )
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for name in model.input_fields:
        if name in given:
            if given[name] not in columns:
                raise UsageError(
                    f"{options.features} maps field {name} to column {given[name]!r}, which "
                    f"{table} does not have; its columns: {', '.join(columns)}"
                )
            mapping[name] = given[name]
            continue
        candidates = [name] if name in columns else [c for c in columns if slug(c) == slug(name)]
        if len(candidates) == 1:
            mapping[name] = candidates[0]
        else:
            missing.append(name)
    if missing:
        raise UsageError(
            f"{table} has no column for field(s) {', '.join(missing)} of model {model.ref}; "
            f"its columns: {', '.join(columns)}. Add them, or map them with "
            f"{options.features_example}"
        )
    schema = model.manifest.schema
    for name, column in mapping.items():
        found = columns[column]
        readable = is_number(found) or found.category == STRING_CATEGORY
        if not schema[name].is_continuous:  # an enum's labels are its categories' text
            readable = readable or found.category == ENUM_CATEGORY
        if schema[name].dtype == "boolean":
            readable = readable or found.category == BOOLEAN_CATEGORY
        if not readable:
            expected = "a number or text" if schema[name].is_continuous else "text or a number"
            raise UsageError(
                f"column {column} of {table} is {found.type}, but field {name} of model "
                f"{model.ref} reads {expected}; map the field to a column of such a type"
            )
    return mapping


def map_outputs(
    model: Model,
    columns: dict[str, Column],
    given: dict[str, str],
    table: str,
    options: Options = SQL_OPTIONS,
) -> dict[str, str]:
    """Output column of the model -> table column: as given, else prediction -> prediction and
    probability(<class>) -> probability_<class> where the table has such a column."""
    unknown = [o for o in given if o not in model.output_columns]
    if unknown:
        raise UsageError(
            f"{options.outputs} names {', '.join(unknown)}, which model {model.ref} does not "
            f"produce; it produces: {', '.join(model.output_columns)}"
        )
    text_labels = any(isinstance(c, str) for c in model.classes or [])
    mapping = dict(given)
    if not given:
        for output in model.output_columns:
            column = default_output_column(output)
            if column in columns:
                mapping[output] = column
    if PREDICTION not in mapping and not given:
        suggested = ", ".join(
            f"ADD COLUMN {default_output_column(o)} "
            f"{prediction_type(model) if o == PREDICTION else 'double precision'}"
            for o in model.output_columns
        )
        raise UsageError(
            f"{table} has no column for the predictions of model {model.ref}: add them "
            f"(ALTER TABLE {table} {suggested}) or name yours with {options.outputs_example}"
        )
    for output, column in mapping.items():
        found = columns.get(column)
        if found is None:
            raise UsageError(
                f"{options.outputs} maps {output} to column {column!r}, which {table} does not "
                f"have; its columns: {', '.join(columns)}"
            )
        if output != PREDICTION or model.task == "regression":
            if not found.type.startswith(FRACTIONAL_TYPES):
                raise UsageError(
                    f"column {column} of {table} is {found.type}, but {output} of model "
                    f"{model.ref} is a fraction; use a double precision column"
                )
        elif not (found.category == STRING_CATEGORY or (is_number(found) and not text_labels)):
            raise UsageError(
                f"column {column} of {table} is {found.type}, but the predictions of model "
                f"{model.ref} are labels such as {(model.classes or [''])[0]!r}; use a "
                f"{prediction_type(model)} column"
            )
    return mapping

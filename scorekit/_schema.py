"""A model's input schema, and the one place raw values become typed columns.

Every scoring path (CSV, JSON records, DataFrames, database rows) turns its input into columns and
calls :meth:`InputSchema.prepare`. Engines then receive identical, already-validated input:
continuous fields as float64 arrays with NaN for missing, categorical fields as object arrays of
canonical Python values (str, int, float or bool) with None for missing. So every engine sees the
same values, and a bad value gets the same message whichever engine would have scored it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from ._errors import InputError, MissingColumnsError, Problem

# Values read as "missing" wherever a raw value arrives as text (CSV cells, JSON strings).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "1"})
FALSE_TOKENS = frozenset({"false", "f", "no", "0"})

OPTYPES = ("continuous", "categorical")
DTYPES = ("double", "integer", "string", "boolean")
INVALID_TREATMENTS = ("return_invalid", "as_missing")

# How many problems an error message spells out; the error's details carry up to MAX_DETAILS.
MESSAGE_PROBLEMS = 5
MAX_DETAILS = 1000

_INVALID = object()  # sentinel: a value that can't be read as the field's type
_SLOW = object()  # sentinel: a value Field.read_one leaves to the batch path
_PLAIN_NUMBERS = frozenset({float, int, type(None)})
EXACT_INT = 2**53  # ints up to this convert to float exactly and can't overflow


def is_missing(value: Any) -> bool:
    """True for None, NaN and the text tokens in MISSING_TOKENS."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value in MISSING_TOKENS
    if isinstance(value, np.floating):
        return bool(np.isnan(value))
    return type(value).__name__ == "NAType"  # pandas.NA, without importing pandas


def _to_float(value: Any) -> Any:
    """A finite float, NaN for missing, or _INVALID. Booleans are not numbers here."""
    if isinstance(value, bool | np.bool_):
        return _INVALID
    if isinstance(value, str):
        text = value.strip()
        if text in MISSING_TOKENS:
            return math.nan
        try:
            number = float(text)
        except ValueError:
            return _INVALID
    else:
        if value is None or type(value).__name__ == "NAType":
            return math.nan
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return _INVALID
    if math.isinf(number):
        return _INVALID
    return number


def _to_canonical(dtype: str, value: Any) -> Any:
    """Value as the field's dtype (None for missing), or _INVALID."""
    if is_missing(value):
        return None
    if dtype == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
            return str(int(value))
        return _INVALID
    if dtype == "boolean":
        if isinstance(value, bool | np.bool_):
            return bool(value)
        text = str(value).strip().lower()
        if text in TRUE_TOKENS:
            return True
        if text in FALSE_TOKENS:
            return False
        return _INVALID
    number = _to_float(value)
    if number is _INVALID or math.isnan(number):
        return _INVALID
    if dtype == "integer":
        return int(number) if number.is_integer() else _INVALID
    return number


def _read_number(value: Any) -> Any:
    """Field.read_one for continuous fields."""
    kind = type(value)
    if kind is float:
        return value if abs(value) != math.inf else _SLOW  # NaN passes: it is missing
    if kind is int:
        return float(value) if -EXACT_INT <= value <= EXACT_INT else _SLOW
    if kind is Decimal:  # PostgreSQL numeric
        try:
            number = float(value)
        except ValueError:  # a signalling NaN
            return _SLOW
        return number if abs(number) != math.inf else _SLOW
    return math.nan if value is None else _SLOW


def _category_reader(lookup: dict[Any, Any], refuse_bools: bool) -> Callable[[Any], Any]:
    """Field.read_one for categorical fields with listed categories."""
    get = lookup.get

    def read(value: Any) -> Any:
        if type(value) is str:
            entry = get(value)
            return _SLOW if entry is None else entry[0]
        if value is None:
            return None
        if refuse_bools and type(value) is bool:
            return _SLOW  # True == 1: never a numeric category by accident
        try:
            entry = get(value)
        except TypeError:
            return _SLOW
        return _SLOW if entry is None else entry[0]

    return read


def _text_reader(dtype: str) -> Callable[[Any], Any]:
    """Field.read_one for categorical fields that list no categories."""

    def read(value: Any) -> Any:
        if value is None:
            return None
        plain = type(value) is str and dtype == "string" and value not in MISSING_TOKENS
        return value if plain else _SLOW

    return read


@dataclass(frozen=True)
class Field:
    """One input field: its type and the treatment the model declares for bad values.

    ``categories`` lists the allowed values of a categorical field (None: any value);
    ``observed_range`` is the (min, max) seen in training, for information only;
    ``missing_replacement`` is what the model substitutes for a missing value (None: passed on);
    ``invalid_treatment`` is "return_invalid" (refuse the row) or "as_missing".
    """

    name: str
    optype: str
    dtype: str
    categories: tuple[Any, ...] | None = None
    observed_range: tuple[float, float] | None = None
    missing_replacement: Any = None
    invalid_treatment: str = "return_invalid"
    _lookup: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _code_of: dict[Any, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _category_array: Any = field(default=None, init=False, repr=False, compare=False)
    _read: Callable[[Any], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.optype not in OPTYPES:
            raise ValueError(f"field {self.name!r}: optype {self.optype!r} is not one of {OPTYPES}")
        if self.dtype not in DTYPES:
            raise ValueError(f"field {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        if self.invalid_treatment not in INVALID_TREATMENTS:
            raise ValueError(
                f"field {self.name!r}: invalid_treatment {self.invalid_treatment!r} "
                f"is not one of {INVALID_TREATMENTS}"
            )
        if self.categories is not None:
            # Raw spellings that map straight to (category, its index): one lookup per value.
            for index, category in enumerate(self.categories):
                entry = (category, index)
                self._lookup[category] = entry
                self._lookup[str(category)] = entry
                if self.dtype == "boolean":
                    for token in TRUE_TOKENS if category else FALSE_TOKENS:
                        self._lookup[token] = entry
                        self._lookup[token.upper()] = entry
                        self._lookup[token.capitalize()] = entry
            self._code_of.update((raw, entry[1]) for raw, entry in self._lookup.items())
            array = np.empty(len(self.categories), dtype=object)
            array[:] = list(self.categories)
            object.__setattr__(self, "_category_array", array)
        reader: Callable[[Any], Any]
        if self.optype == "continuous":
            reader = _read_number
        elif self.categories is None:
            reader = _text_reader(self.dtype)
        else:
            reader = _category_reader(self._lookup, refuse_bools=self.dtype != "boolean")
        object.__setattr__(self, "_read", reader)  # frozen dataclass: set once, here

    @property
    def is_continuous(self) -> bool:
        return self.optype == "continuous"

    def expected(self) -> str:
        """What this field accepts, for error messages."""
        if self.is_continuous:
            return "a number"
        if self.categories is None:
            return f"a {self.dtype} value"
        shown = ", ".join(repr(c) for c in self.categories[:12])
        more = f", ... ({len(self.categories)} values)" if len(self.categories) > 12 else ""
        return f"one of [{shown}{more}]"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "optype": self.optype, "dtype": self.dtype}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.observed_range is not None:
            out["observed_range"] = list(self.observed_range)
        out["missing_replacement"] = self.missing_replacement
        out["invalid_treatment"] = self.invalid_treatment
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field:
        categories = data.get("categories")
        observed = data.get("observed_range")
        return cls(
            name=data["name"],
            optype=data["optype"],
            dtype=data["dtype"],
            categories=tuple(categories) if categories is not None else None,
            observed_range=(float(observed[0]), float(observed[1])) if observed else None,
            missing_replacement=data.get("missing_replacement"),
            invalid_treatment=data.get("invalid_treatment", "return_invalid"),
        )

    def read_one(self, value: Any) -> Any:
        """One value as ``prepare`` would type it (a float, NaN for missing, for continuous
        fields; the canonical category or None for categorical ones), by a shortcut for the
        common cases; _SLOW when the value needs ``prepare`` (to parse text, or to explain)."""
        return self._read(value)

    def prepare(
        self, values: Sequence[Any] | np.ndarray, row_offset: int = 0
    ) -> tuple[np.ndarray, list[Problem]]:
        """Typed column for ``values``, and the problems found (rows numbered from row_offset)."""
        column, problems, _codes = self._prepare(values, row_offset)
        return column, problems

    def _prepare(
        self, values: Sequence[Any] | np.ndarray, row_offset: int, limit: int = MAX_DETAILS
    ) -> tuple[np.ndarray, list[Problem], np.ndarray | None]:
        """Column, problems (at most ``limit``) and (categorical fields with categories)
        category codes."""
        values = _positional(values)
        if self.is_continuous:
            column, problems = self._prepare_continuous(values, row_offset, limit)
            return column, problems, None
        return self._prepare_categorical(values, row_offset, limit)

    def _prepare_continuous(
        self, values: Sequence[Any] | np.ndarray, row_offset: int, limit: int
    ) -> tuple[np.ndarray, list[Problem]]:
        column = None
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
            column = values.astype(np.float64, copy=True)
        elif isinstance(values, list) and set(map(type, values)) <= _PLAIN_NUMBERS:
            # Python floats, ints and None (database arrays, JSON): numpy reads None as NaN.
            try:
                column = np.array(values, dtype=np.float64)
            except OverflowError:
                column = None
        elif _all_text(values):
            # Text (CSV cells): numpy parses a whole column at once; anything it can't read
            # (stray text, odd spacing around a missing token) takes the per-value path.
            try:
                column = np.array(
                    ["nan" if v in MISSING_TOKENS else v for v in values], dtype=np.float64
                )
            except ValueError:
                column = None
        if column is not None:
            bad = np.flatnonzero(np.isinf(column))
        else:
            parsed = [_to_float(v) for v in values]
            bad_list = [i for i, v in enumerate(parsed) if v is _INVALID]
            for i in bad_list:
                parsed[i] = math.nan
            column = np.array(parsed, dtype=np.float64)
            bad = np.array(bad_list, dtype=np.intp)
        if len(bad) == 0:
            return column, []
        column[bad] = math.nan
        if self.invalid_treatment == "as_missing":
            return column, []
        raw = [values[i] for i in bad[:limit]]
        # a value from an array as Python writes it (inf, not np.float64(inf))
        raw = [v.item() if isinstance(v, np.generic) else v for v in raw]
        problems = [
            Problem(row_offset + int(i), self.name, f"expected a number, got {v!r}", _json_safe(v))
            for i, v in zip(bad[:limit], raw, strict=True)
        ]
        return column, problems

    def _prepare_categorical(
        self, values: Sequence[Any] | np.ndarray, row_offset: int, limit: int
    ) -> tuple[np.ndarray, list[Problem], np.ndarray | None]:
        """Canonical values, problems, and each value's index in ``categories`` (-1: missing;
        None when the field lists no categories)."""
        n = len(values)
        column = np.empty(n, dtype=object)
        codes = np.full(n, -1, dtype=np.intp)
        problems: list[Problem] = []
        lookup = self._lookup
        allowed = self.categories
        # The common case: every value a known category, found by one C-level pass, and the
        # canonical values taken from the categories by their codes, in numpy. (A boolean is
        # never a numeric category, though True == 1: those take the pass below.)
        if allowed is not None and (
            self.dtype not in ("integer", "double") or not _indexes_of_type(values, bool)
        ):
            try:
                codes = np.fromiter(map(self._code_of.get, values), dtype=np.intp, count=n)
            except TypeError:  # a miss (None) or an unhashable value: the pass below
                pass
            else:
                return self._category_array[codes], problems, codes
        # One C-level pass over the values; only the misses (missing, unseen, odd types, and
        # booleans for numeric fields, since True == 1 in Python) are looked at one by one.
        try:
            entries: list[Any] = list(map(lookup.get, values))
        except TypeError:  # an unhashable value somewhere, e.g. a JSON list
            entries = [lookup.get(v) if _hashable(v) else None for v in values]
        if self.dtype in ("integer", "double"):
            for i in _indexes_of_type(values, bool):
                entries[i] = None
        if None not in entries:  # every value a known category: no loop in Python
            column[:] = [entry[0] for entry in entries]
            codes[:] = [entry[1] for entry in entries]
            return column, problems, codes if allowed is not None else None
        hits = [i for i, entry in enumerate(entries) if entry is not None]
        if len(hits) == n:
            column[:] = [entry[0] for entry in entries]
            codes[:] = [entry[1] for entry in entries]
        else:
            for i in hits:
                column[i], codes[i] = entries[i]
        for i, entry in enumerate(entries):
            if entry is not None:
                continue
            raw = values[i]
            value = _to_canonical(self.dtype, raw) if _hashable(raw) else _INVALID
            if value is None:
                continue  # missing
            if value is not _INVALID and allowed is None:
                column[i] = value
                continue
            if value is not _INVALID:
                problem = f"unseen category {raw!r}; expected {self.expected()}"
                found = lookup.get(value)
                if found is not None:
                    column[i], codes[i] = found
                    continue
            else:
                problem = f"expected {self.expected()}, got {raw!r}"
            if self.invalid_treatment != "as_missing" and len(problems) < limit:
                problems.append(Problem(row_offset + i, self.name, problem, _json_safe(raw)))
        return column, problems, codes if allowed is not None else None


def _positional(values: Sequence[Any] | np.ndarray) -> Sequence[Any] | np.ndarray:
    """Values indexable by position: a pandas Series (which indexes by label) becomes its
    numpy array; lists and arrays pass as they are."""
    if isinstance(values, list | np.ndarray):
        return values
    to_numpy = getattr(values, "to_numpy", None)
    return to_numpy() if callable(to_numpy) else list(values)


def _all_text(values: Sequence[Any] | np.ndarray) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype.kind == "U"
    return all(type(v) is str for v in values)


def _indexes_of_type(values: Sequence[Any] | np.ndarray, kind: type) -> list[int]:
    if isinstance(values, np.ndarray) and values.dtype != object:
        return list(range(len(values))) if values.dtype.kind == "b" else []
    return [i for i, v in enumerate(values) if isinstance(v, kind | np.bool_)]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def json_kind(value: Any) -> str:
    """What kind of JSON value ``value`` is, for messages: object, array, string, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "number"


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return repr(value)


@dataclass(frozen=True)
class InputSchema:
    """The fields a model reads, in order."""

    fields: tuple[Field, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.fields]

    @classmethod
    def from_list(cls, data: Iterable[Mapping[str, Any]]) -> InputSchema:
        return cls(tuple(Field.from_dict(d) for d in data))

    def frame(self, columns: Mapping[str, np.ndarray]) -> Any:
        """Prepared columns as a pandas DataFrame (float64 for continuous fields, object for
        categorical ones), as the sklearn and pypmml engines and training take them."""
        import pandas as pd

        return pd.DataFrame(
            {
                f.name: pd.Series(columns[f.name], dtype=np.float64 if f.is_continuous else object)
                for f in self.fields
            }
        )

    def check_columns(self, available: Iterable[str], model: str) -> None:
        """Raise MissingColumnsError naming every required field not in ``available``."""
        present = set(available)
        missing = [name for name in self.names if name not in present]
        if missing:
            raise MissingColumnsError(
                f"input is missing {len(missing)} field(s) that model {model} requires: "
                f"{', '.join(missing)}. It expects {len(self.fields)} fields: "
                f"{', '.join(self.names)}.",
                [Problem(None, name, "required field is absent") for name in missing],
            )

    def prepare_one(
        self, record: Mapping[str, Any], keys: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """One record's values, typed exactly as ``prepare`` types them, without building
        arrays; None when any value needs ``prepare`` (which then validates and explains).
        ``keys``: where each field is in ``record`` (a row's column names), default its name."""
        values: dict[str, Any] = {}
        for f, key in zip(self.fields, keys or self.names, strict=True):
            value = f._read(record[key])
            if value is _SLOW:
                return None
            values[f.name] = value
        return values

    def prepare(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray], model: str, row_offset: int = 0
    ) -> Batch:
        """Typed columns for the model, or an InputError listing every bad (row, field, value)."""
        self.check_columns(columns.keys(), model)
        prepared = Batch(row_offset)
        problems: list[Problem] = []
        for f in self.fields:
            prepared[f.name], found, codes = f._prepare(columns[f.name], row_offset)
            if codes is not None:
                prepared.codes[f.name] = codes
            problems.extend(found)
        if problems:
            raise invalid_input_error(problems, model)
        return prepared

    def prepare_partial(
        self, columns: Mapping[str, Sequence[Any] | np.ndarray], model: str, row_offset: int = 0
    ) -> tuple[Batch, np.ndarray, list[Problem]]:
        """Like ``prepare``, for runs that go on past bad rows: the typed columns of the rows
        that can be scored, their positions in ``columns``, and every problem of the others."""
        self.check_columns(columns.keys(), model)
        n_rows = len(next(iter(columns.values()))) if columns else 0
        prepared = Batch(row_offset)
        problems: list[Problem] = []
        for f in self.fields:
            prepared[f.name], found, codes = f._prepare(columns[f.name], row_offset, n_rows)
            if codes is not None:
                prepared.codes[f.name] = codes
            problems.extend(found)
        if not problems:
            return prepared, np.arange(n_rows), []
        good = np.ones(n_rows, dtype=bool)
        good[[p.row - row_offset for p in problems if p.row is not None]] = False
        kept = Batch(row_offset)
        kept.update({name: column[good] for name, column in prepared.items()})
        kept.codes = {name: codes[good] for name, codes in prepared.codes.items()}
        return kept, np.flatnonzero(good), problems


class Batch(dict[str, np.ndarray]):
    """Validated columns by field name. For categorical fields with listed categories, ``codes``
    also holds each row's index into ``Field.categories`` (-1 for missing), which engines may use
    instead of looking values up again."""

    def __init__(self, row_offset: int = 0) -> None:
        super().__init__()
        self.codes: dict[str, np.ndarray] = {}
        self.row_offset = row_offset  # the number of the batch's first row, for error messages


RETRAIN_HINT = (
    "Fix these values, or retrain with invalid values treated as missing "
    "(scorekit train --invalid missing)."
)


def invalid_input_error(
    problems: list[Problem], model: str, hint: str = RETRAIN_HINT
) -> InputError:
    """One InputError for a batch: the first few problems in the message, all in the details."""
    problems = sorted(problems, key=lambda p: (p.row if p.row is not None else -1, p.field or ""))
    rows = {p.row for p in problems}
    per_field = Counter(p.field for p in problems)
    at_least = "at least " if per_field and max(per_field.values()) >= MAX_DETAILS else ""
    shown = "; ".join(
        f"row {p.row}, field {p.field!r}: {p.problem}" for p in problems[:MESSAGE_PROBLEMS]
    )
    more = (
        f"; and {len(problems) - MESSAGE_PROBLEMS} more" if len(problems) > MESSAGE_PROBLEMS else ""
    )
    return InputError(
        f"model {model} can't score {at_least}{len(rows)} row(s): {shown}{more}. {hint}",
        problems[:MAX_DETAILS],
    )

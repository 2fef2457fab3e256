"""InputSchema.prepare: typed columns, missing values, and errors naming row, field and value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorekit import Field, InputError, InputSchema, MissingColumnsError
from scorekit._schema import _INVALID, _SLOW, _to_float

AGE = Field("Age", "continuous", "double", observed_range=(17.0, 90.0), missing_replacement=37.0)
JOB = Field(
    "Employment",
    "categorical",
    "string",
    categories=("Private", "PSLocal"),
    missing_replacement="Private",
)
DEDUCTIONS = Field("Deductions", "categorical", "boolean", categories=(False, True))
ORIGIN = Field("origin", "categorical", "integer", categories=(1, 2, 3))
SCHEMA = InputSchema((AGE, JOB, DEDUCTIONS, ORIGIN))


def prepare(**columns: list[object]) -> dict[str, np.ndarray]:
    return SCHEMA.prepare(columns, "audit@1")


def test_text_values_become_typed_columns() -> None:
    out = prepare(
        Age=["38", " 41.5 ", ""],
        Employment=["Private", "N/A", "PSLocal"],
        Deductions=["FALSE", "true", None],
        origin=["1", 2, "3.0"],
    )
    assert out["Age"].dtype == np.float64
    assert out["Age"][:2].tolist() == [38.0, 41.5] and math.isnan(out["Age"][2])
    assert out["Employment"].tolist() == ["Private", None, "PSLocal"]
    assert out["Deductions"].tolist() == [False, True, None]
    assert out["origin"].tolist() == [1, 2, 3]


def test_numeric_arrays_take_the_fast_path() -> None:
    out = prepare(
        Age=np.array([1, 2, 3]),
        Employment=["Private"] * 3,
        Deductions=[True, False, True],
        origin=np.array([1, 2, 3]),
    )
    assert out["Age"].tolist() == [1.0, 2.0, 3.0]


def test_missing_columns_are_named_with_the_model() -> None:
    with pytest.raises(MissingColumnsError) as caught:
        SCHEMA.prepare({"Age": [1]}, "audit@1")
    message = caught.value.message
    assert "Employment" in message and "Deductions" in message and "origin" in message
    assert "audit@1" in message
    assert [p.field for p in caught.value.details] == ["Employment", "Deductions", "origin"]


def test_bad_number_names_row_field_and_value() -> None:
    with pytest.raises(InputError) as caught:
        prepare(
            Age=["38", "forty"], Employment=["Private"] * 2, Deductions=[True] * 2, origin=[1, 1]
        )
    (problem,) = caught.value.details
    assert (problem.row, problem.field, problem.value) == (1, "Age", "forty")
    assert "row 1, field 'Age': expected a number, got 'forty'" in caught.value.message


def test_unseen_category_lists_the_allowed_set() -> None:
    with pytest.raises(InputError) as caught:
        prepare(Age=[1], Employment=["Martian"], Deductions=[True], origin=[1])
    assert "unseen category 'Martian'" in caught.value.message
    assert "'Private', 'PSLocal'" in caught.value.message


@pytest.mark.parametrize("value", [True, "inf", "1e999", [1], {"a": 1}])
def test_values_that_are_not_numbers_are_refused(value: object) -> None:
    with pytest.raises(InputError):
        prepare(Age=[value], Employment=["Private"], Deductions=[True], origin=[1])


def test_a_bad_value_in_an_array_is_named_as_python_writes_it() -> None:
    with pytest.raises(InputError) as caught:
        prepare(
            Age=np.array([30.0, -np.inf]), Employment=["Private"] * 2,
            Deductions=[True] * 2, origin=[1, 2],
        )  # fmt: skip
    (problem,) = caught.value.details
    assert problem.problem == "expected a number, got -inf"
    assert problem.value == "-inf"


def test_every_bad_value_is_reported_not_just_the_first() -> None:
    with pytest.raises(InputError) as caught:
        prepare(
            Age=["x", "y", "1"],
            Employment=["Private", "Nope", "Nope"],
            Deductions=[True, "maybe", False],
            origin=[1, 7, 2.5],
        )
    assert {(p.row, p.field) for p in caught.value.details} == {
        (0, "Age"),
        (1, "Age"),
        (1, "Employment"),
        (2, "Employment"),
        (1, "Deductions"),
        (1, "origin"),
        (2, "origin"),
    }
    assert "and 2 more" in caught.value.message


def test_as_missing_treatment_turns_bad_values_into_missing() -> None:
    lenient = InputSchema(
        tuple(
            Field(f.name, f.optype, f.dtype, f.categories, invalid_treatment="as_missing")
            for f in SCHEMA.fields
        )
    )
    out = lenient.prepare(
        {"Age": ["forty"], "Employment": ["Martian"], "Deductions": ["maybe"], "origin": [9]}, "m"
    )
    assert math.isnan(out["Age"][0])
    assert out["Employment"].tolist() == [None] and out["origin"].tolist() == [None]


def test_row_offset_numbers_rows_of_a_later_chunk() -> None:
    with pytest.raises(InputError) as caught:
        SCHEMA.prepare(
            {"Age": ["x"], "Employment": ["Private"], "Deductions": [True], "origin": [1]},
            "m",
            row_offset=10_000,
        )
    assert caught.value.details[0].row == 10_000


def test_schema_round_trips_through_json_form() -> None:
    assert InputSchema.from_list(SCHEMA.to_list()) == SCHEMA


def test_field_rejects_unknown_optype() -> None:
    with pytest.raises(ValueError, match="optype"):
        Field("x", "ordinalish", "double")


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_float_written_as_text_reads_back_exactly(x: float) -> None:
    (value,), problems = AGE.prepare([repr(x)])
    assert problems == [] and value == x


@given(st.lists(st.sampled_from(["Private", "PSLocal", "", "NA", None]), max_size=50))
def test_known_categories_and_missing_tokens_never_fail(values: list[str | None]) -> None:
    column, problems = JOB.prepare(values)
    assert problems == []
    assert [v for v in column.tolist() if v is not None] == [
        v for v in values if v in ("Private", "PSLocal")
    ]


@given(st.text(max_size=20))
def test_any_text_is_either_a_category_missing_or_a_reported_problem(text: str) -> None:
    column, problems = JOB.prepare([text])
    if text in ("Private", "PSLocal"):
        assert column.tolist() == [text] and problems == []
    elif problems:
        assert problems[0].value == text and column.tolist() == [None]
    else:
        assert column.tolist() == [None]  # a missing-value token


def test_prepare_records_category_codes() -> None:
    batch = prepare(
        Age=[1, 2, 3],
        Employment=["PSLocal", None, "Private"],
        Deductions=["true", "FALSE", "NA"],
        origin=["3", 1, None],
    )
    assert batch.codes["Employment"].tolist() == [1, -1, 0]
    assert batch.codes["Deductions"].tolist() == [1, 0, -1]
    assert batch.codes["origin"].tolist() == [2, 0, -1]
    assert "Age" not in batch.codes


def test_booleans_are_not_integer_categories() -> None:
    with pytest.raises(InputError, match=r"field 'origin': expected one of \[1, 2, 3\], got True"):
        prepare(Age=[1], Employment=["Private"], Deductions=[True], origin=[True])


def test_pandas_na_is_missing() -> None:
    import pandas as pd

    out = prepare(Age=[pd.NA], Employment=[pd.NA], Deductions=[pd.NA], origin=[pd.NA])
    assert math.isnan(out["Age"][0])
    assert out["Employment"].tolist() == [None] and out["origin"].tolist() == [None]


def test_row_count_says_at_least_when_details_are_capped() -> None:
    n = 1200
    with pytest.raises(InputError, match="can't score at least 1000 row"):
        prepare(Age=["x"] * n, Employment=["Private"] * n, Deductions=[True] * n, origin=[1] * n)


TEXT_CELLS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["", "NA", "N/A", "nan", " 12 ", "1e999", "-inf", "abc", "1,5", " NA "]),
    st.text(max_size=6),
)


@given(st.lists(TEXT_CELLS, max_size=30))
def test_whole_column_parsing_equals_value_by_value(cells: list[str]) -> None:
    """The fast path (numpy parses the column) must agree with reading each cell alone."""
    column, problems = AGE.prepare(cells)
    one_by_one = [AGE.prepare([cell]) for cell in cells]
    assert [p.row for p in problems] == [i for i, (_, found) in enumerate(one_by_one) if found]
    expected = [values[0] for values, _ in one_by_one]
    np.testing.assert_array_equal(column, np.array(expected, dtype=np.float64))


def test_pandas_series_are_read_by_position_not_label() -> None:
    import pandas as pd

    index = [1, 0]
    with pytest.raises(InputError) as caught:
        SCHEMA.prepare(
            {
                "Age": pd.Series(["40", "41"], index=index),
                "Employment": pd.Series(["Nope", "Private"], index=index),
                "Deductions": pd.Series([True, False], index=index),
                "origin": pd.Series([1, 2], index=index),
            },
            "m",
        )
    (problem,) = caught.value.details
    assert (problem.row, problem.value) == (0, "Nope")  # position 0, whatever its label


FREE_TEXT = Field("Note", "categorical", "string")
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(),
    st.sampled_from(["Private", "PSLocal", "1", "2.0", "true", "N/A", "", " 3 ", "inf"]),
    st.text(max_size=5),
    st.decimals(allow_nan=True),
    st.lists(st.integers(), max_size=1),
)


@given(ANY_VALUE)
def test_read_one_types_a_value_exactly_as_prepare(value: object) -> None:
    """The one-record shortcut either declines or gives what the batch path gives."""
    for f in (*SCHEMA.fields, FREE_TEXT):
        read = f.read_one(value)
        if read is _SLOW:
            continue
        column, problems = f.prepare([value])
        assert problems == []
        if f.is_continuous:
            assert (math.isnan(read) and math.isnan(column[0])) or read == column[0]
            assert type(read) is float
        else:
            assert read == column[0] and type(read) is type(column[0])


def test_prepare_one_declines_a_record_with_any_unusual_value() -> None:
    record = {"Age": 38, "Employment": "Private", "Deductions": False, "origin": 2}
    assert SCHEMA.prepare_one(record) == {
        "Age": 38.0, "Employment": "Private", "Deductions": False, "origin": 2,
    }  # fmt: skip
    assert SCHEMA.prepare_one({**record, "Age": "38"}) is None
    assert SCHEMA.prepare_one({**record, "Employment": "Martian"}) is None
    assert SCHEMA.prepare_one({**record, "origin": True}) is None


@given(st.lists(st.one_of(st.none(), st.integers(), st.floats()), max_size=20))
def test_lists_of_python_numbers_read_as_value_by_value(values: list[object]) -> None:
    """The whole-list shortcut for database arrays agrees with the value-by-value reading."""
    column, problems = AGE.prepare(values)
    bad = []
    for i, value in enumerate(values):
        expected = _to_float(value)
        if expected is _INVALID:
            bad.append(i)
            assert math.isnan(column[i])
        else:
            assert (math.isnan(expected) and math.isnan(column[i])) or expected == column[i]
    assert [p.row for p in problems] == bad

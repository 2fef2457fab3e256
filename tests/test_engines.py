"""The contract every engine passes, on every model family, and cross-engine agreement.

Each engine in scorekit.ENGINES is checked on the same trained models: output columns and order,
one row per input row in input order, predict_one equal to the batch row, empty batches, and
agreement with the other engines to 1e-9 (labels exactly) on audit and audit_na.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import scorekit
from scorekit import Model
from scorekit._native._models import ForestPlan

ENGINES = sorted(scorekit.ENGINES)
# (dataset the model is trained on, algorithm)
MODELS = [
    ("audit", "logreg"), ("audit_na", "logreg"), ("audit", "tree"), ("audit_na", "forest"),
    ("audit_na", "extratrees"), ("audit_na", "gbm"), ("audit_na", "hgb"),
    ("iris", "logreg"), ("iris", "forest"), ("iris", "gbm"), ("iris", "hgb"),
    ("auto", "logreg"), ("auto", "tree"), ("auto", "forest"), ("auto", "extratrees"),
    ("auto", "gbm"), ("auto", "hgb"),
]  # fmt: skip
SCORED_ON = {
    "audit": "audit_na.csv",
    "audit_na": "audit_na.csv",
    "iris": "iris.csv",
    "auto": "auto.csv",
}
TOLERANCE = 1e-9


def read_columns(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {name: [row[name] for row in rows] for name in rows[0]}


@pytest.fixture(scope="module", params=MODELS, ids=[f"{d}-{a}" for d, a in MODELS])
def case(
    request: pytest.FixtureRequest, trained, session_store, data_dir: Path
) -> Iterator[tuple[dict[str, Model], dict[str, list[str]]]]:
    dataset, algorithm = request.param
    manifest = trained(dataset, algorithm)
    models = {e: scorekit.load_model(manifest.ref, engine=e, store=session_store) for e in ENGINES}
    yield models, read_columns(data_dir / SCORED_ON[dataset])
    for model in models.values():
        model.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_outputs_follow_the_contract(case, engine: str) -> None:
    models, columns = case
    model = models[engine]
    out = model.predict_columns(columns)
    n = len(next(iter(columns.values())))
    assert list(out) == model.output_columns
    assert all(len(values) == n for values in out.values())
    if model.task == "classification":
        assert model.output_columns == ["prediction"] + [f"probability({c})" for c in model.classes]
        assert set(out["prediction"].tolist()) <= set(model.classes)
        total = sum(out[f"probability({c})"] for c in model.classes)
        np.testing.assert_allclose(total, 1.0, atol=1e-9)
    else:
        assert model.output_columns == ["prediction"]
        assert out["prediction"].dtype == np.float64


@pytest.mark.parametrize("engine", ENGINES)
def test_rows_come_back_in_input_order(case, engine: str) -> None:
    models, columns = case
    model = models[engine]
    head = {k: v[:50] for k, v in columns.items()}
    forward = model.predict_columns(head)
    backward = model.predict_columns({k: v[::-1] for k, v in head.items()})
    for name in model.output_columns:
        if forward[name].dtype == object:
            assert forward[name].tolist() == backward[name][::-1].tolist()
        else:  # BLAS may block a reordered batch differently: last-ulp differences only
            np.testing.assert_allclose(forward[name], backward[name][::-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_one_equals_the_batch_row(case, engine: str) -> None:
    models, columns = case
    model = models[engine]
    records = [{k: v[i] for k, v in columns.items()} for i in range(5)]
    batch = model.predict_records(records)
    for i, record in enumerate(records):
        one = model.predict_one(record)
        assert list(one) == model.output_columns
        assert one == pytest.approx(batch[i], abs=1e-12)
        assert all(type(v) in (int, float, str, bool) for v in one.values())


def test_native_one_record_path_equals_the_batch_on_every_row(case) -> None:
    """Typed values (as a database row or JSON gives them) take the one-record shortcuts:
    InputSchema.prepare_one and, for trees, the generated forest code. Every row agrees."""
    models, columns = case
    model = models["native"]
    typed = model.manifest.schema.prepare(columns, model.ref)
    names = list(typed)
    records = [
        dict(zip(names, row, strict=True))
        for row in zip(*(typed[n].tolist() for n in names), strict=True)
    ]
    batch = model.predict_columns(columns)
    for i, record in enumerate(records):
        one = model.predict_one(record)
        for name, values in batch.items():
            expected = values[i].item() if hasattr(values[i], "item") else values[i]
            assert one[name] == pytest.approx(expected, abs=1e-12, nan_ok=True), (i, name)


def _unusual_values(field: scorekit.Field, value: Any) -> list[Any]:
    """Values of one field, in types and spellings a row or JSON may bring, beside ``value``."""
    out: list[Any] = [None, math.nan, math.inf, "", "NA", "no such category", True, 1, 1.5]
    out += [np.float64(2.0), Decimal("3.25"), 2**60, [1]]
    if isinstance(value, float):
        out += [int(value), value + 0.25, -value, 1e300, str(value), np.float32(value)]
    if isinstance(value, str):
        out += [value.upper(), value.lower(), f" {value}"]
    if isinstance(value, bool):
        out += [str(value), str(value).upper(), int(value), float(value), not value]
    if field.categories:
        out += [str(c) for c in field.categories] + list(field.categories)
    return out


def _plans(plan: Any) -> Iterator[Any]:
    """A native plan and the plans inside it."""
    yield plan
    inner = [getattr(plan, "core", None), *(m for m, _ in getattr(plan, "steps", []))]
    for found in inner:
        if found is not None:
            yield from _plans(found)


def _same_answer(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN equals NaN; 1 and 1.0, True and 1 differ


def test_native_record_scorer_equals_the_two_steps_on_any_value(case) -> None:
    """Model.record_scorer's generated code reads rows keyed by column names: on typed records
    and on every unusual value of each field it answers exactly as prepare_one then
    predict_values do (or hands the record to them), and raises KeyError for an absent key."""
    models, columns = case
    model = models["native"]
    schema = model.manifest.schema
    keys = [f"col {f.name}" for f in schema.fields]
    score = model.record_scorer(keys)
    if not model.scorer._one_ready:  # type: ignore[attr-defined]
        assert score is None  # no one-record form: predict_one takes the batch path
        pytest.skip(f"{model.ref} has no one-record form")
    assert score is not None and score.__code__.co_filename == "<scorekit record scorer>"
    # One function, reader and model (no call of the plan's), unless a forest is too big to be
    # written out as code, and walks its node lists instead.
    plans = list(_plans(model.scorer.plan))  # type: ignore[attr-defined]
    written = all(p._scalar_walk() and p._generated for p in plans if isinstance(p, ForestPlan))
    assert ("ANSWER" not in score.__code__.co_names) == written

    def two_steps(record: dict[str, Any]) -> Any:
        values = schema.prepare_one(record, keys)
        return model.predict_values(values) if values is not None else None

    typed = schema.prepare(columns, model.ref)
    rows = [
        {key: typed[f.name][i].item() if hasattr(typed[f.name][i], "item") else typed[f.name][i]
         for f, key in zip(schema.fields, keys, strict=True)}
        for i in range(0, len(next(iter(columns.values()))), 7)
    ]  # fmt: skip
    checked = 0
    for row in rows:
        assert _same_answer(score(row), two_steps(row))
        checked += 1
    base = next(r for r in rows if two_steps(r) is not None)
    for f, key in zip(schema.fields, keys, strict=True):
        for value in _unusual_values(f, base[key]):
            row = {**base, key: value}
            try:
                expected = two_steps(row)
            except (TypeError, ValueError) as exc:  # e.g. an unhashable value: the same error
                with pytest.raises(type(exc)):
                    score(row)
                continue
            assert _same_answer(score(row), expected), (f.name, value)
            checked += 1
        absent = {k: v for k, v in base.items() if k != key}
        with pytest.raises(KeyError):
            score(absent)
    assert checked > len(rows)


def test_generated_record_reader_leaves_odd_categories_to_the_two_steps() -> None:
    """Categories that are missing values themselves (NaN, None), or that the engine can't read
    as it reads the field (an int beyond float's range), go to the two steps, which treat them
    as prepare_one does; keys that need escaping in source code are read as they are; a field
    the engine reads that the schema lacks gets no generated code."""
    from scorekit._native._engine import _NUMBER, _TEXT, generate_record_scorer

    fields = [
        scorekit.Field("n", "categorical", "double", categories=(math.nan, 1.0)),
        scorekit.Field("t", "categorical", "string", categories=(None, "a")),  # type: ignore[arg-type]
        scorekit.Field("i", "categorical", "integer", categories=(10**400, 2)),
    ]
    keys = ["it's", "new\nline", "back\\slash"]
    kinds = {"n": _NUMBER, "t": _TEXT, "i": _NUMBER}
    score = generate_record_scorer(fields, keys, kinds, lambda r: "two steps", lambda v: v)
    assert score is not None
    plain = {"it's": 1.0, "new\nline": "a", "back\\slash": 2}
    assert score(plain) == {"n": 1.0, "t": "a", "i": 2.0}
    for key, odd in [("it's", "nan"), ("it's", math.nan), ("new\nline", "None"),
                     ("back\\slash", 10**400), ("back\\slash", str(10**400))]:  # fmt: skip
        assert score({**plain, key: odd}) == "two steps", (key, odd)
    with pytest.raises(KeyError):
        score({"it's": 1.0})
    extra = {**kinds, "derived": _NUMBER}
    assert generate_record_scorer(fields, keys, extra, lambda r: None, lambda v: None) is None


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_batch_gives_empty_columns(case, engine: str) -> None:
    models, columns = case
    model = models[engine]
    out = model.predict_columns({k: [] for k in columns})
    assert list(out) == model.output_columns and all(len(v) == 0 for v in out.values())
    assert model.predict_records([]) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_dataframe_in_dataframe_out_keeps_the_index(case, engine: str) -> None:
    import pandas as pd

    models, columns = case
    model = models[engine]
    frame = pd.DataFrame(columns).iloc[:20]
    frame.index = range(100, 120)
    out = model.predict(frame)
    assert list(out.columns) == model.output_columns
    assert list(out.index) == list(range(100, 120))
    expected = model.predict_columns({k: v[:20] for k, v in columns.items()})
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected["prediction"])


def test_engines_agree(case, request: pytest.FixtureRequest) -> None:
    """All engines: labels exactly, probabilities and regression values to 1e-9."""
    models, columns = case
    results = {e: m.predict_columns(columns) for e, m in models.items()}
    reference_engine, *others = ENGINES
    reference = results[reference_engine]
    for engine in others:
        if engine == "sklearn" and "extratrees" in request.node.callspec.id:
            assert_close_to_float32_thresholds(reference, results[engine])
            continue
        for name, values in reference.items():
            if values.dtype == object:
                assert results[engine][name].tolist() == values.tolist(), (engine, name)
            else:
                np.testing.assert_allclose(
                    results[engine][name],
                    values,
                    rtol=0,
                    atol=TOLERANCE,
                    err_msg=f"{engine} vs {reference_engine}: {name}",
                )


def assert_close_to_float32_thresholds(
    pmml: dict[str, np.ndarray], sklearn: dict[str, np.ndarray]
) -> None:
    """ExtraTrees draws random float64 thresholds, and sklearn2pmml writes them rounded to float32
    (the fields are dataType="float"); a value within a float32 ulp of a threshold then takes the
    other branch in one tree of the hundred. Both PMML engines agree exactly (checked above); the
    pickle differs on a few rows by at most one tree's share of the ensemble."""
    for name, values in pmml.items():
        if values.dtype == object:
            continue
        differ = ~np.isclose(values, sklearn[name], rtol=0, atol=TOLERANCE)
        assert differ.mean() <= 0.10, name
        assert np.max(np.abs(values - sklearn[name]), initial=0) <= 0.01 * np.max(np.abs(values))


def test_engines_agree_on_records_with_missing_values(trained, session_store) -> None:
    manifest = trained("audit")
    record = {f.name: None for f in manifest.schema.fields}
    scored = [
        scorekit.load_model(manifest.ref, engine=e, store=session_store).predict_one(record)
        for e in ENGINES
    ]
    for other in scored[1:]:
        assert other == pytest.approx(scored[0], abs=TOLERANCE)


@pytest.mark.parametrize(
    ("dataset", "algorithm"),
    [("audit_na", "logreg"), ("audit", "tree"), ("audit_na", "gbm"), ("auto", "logreg")],
)
def test_native_gives_the_same_answers_with_and_without_category_codes(
    trained, session_store, data_dir: Path, dataset: str, algorithm: str
) -> None:
    """Validation's category codes are a shortcut: scoring plain columns must agree exactly."""
    manifest = trained(dataset, algorithm)
    model = scorekit.load_model(manifest.ref, engine="native", store=session_store)
    batch = model.manifest.schema.prepare(read_columns(data_dir / SCORED_ON[dataset]), model.ref)
    assert batch.codes
    with_codes = model.scorer.score(batch)
    without = model.scorer.score(dict(batch))
    np.testing.assert_array_equal(with_codes.prediction, without.prediction)
    if with_codes.probabilities is not None:
        np.testing.assert_array_equal(with_codes.probabilities, without.probabilities)


@pytest.mark.parametrize(
    ("dataset", "algorithm"),
    [
        ("audit_na", "logreg"),
        ("audit_na", "gbm"),
        ("audit_na", "hgb"),
        ("audit_na", "forest"),
        ("audit", "tree"),
        ("iris", "gbm"),
        ("auto", "logreg"),
        ("auto", "gbm"),
    ],
)
def test_native_one_record_path_equals_the_batch_path(
    trained, session_store, data_dir: Path, dataset: str, algorithm: str
) -> None:
    """predict_one takes the plan's one-record form (plain Python numbers); on records with
    random missing values it must give the batch path's answers."""
    manifest = trained(dataset, algorithm)
    model = scorekit.load_model(manifest.ref, engine="native", store=session_store)
    columns = read_columns(data_dir / SCORED_ON[dataset])
    rng = np.random.default_rng(11)
    records = []
    for i in rng.choice(len(next(iter(columns.values()))), size=60, replace=False):
        record = {f.name: columns[f.name][i] for f in model.manifest.schema.fields}
        for name in rng.choice(list(record), size=rng.integers(0, 3), replace=False):
            record[name] = None
        records.append(record)
    batch = model.predict_records(records)
    for record, expected in zip(records, batch, strict=True):
        prepared = model.manifest.schema.prepare({k: [v] for k, v in record.items()}, model.ref)
        assert model.scorer.score_one(prepared) is not None  # the one-record path was taken
        assert model.predict_one(record) == pytest.approx(expected, abs=1e-12)

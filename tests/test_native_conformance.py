"""The native engine against pypmml (the JVM reference) on PMML written by hand, covering what
scorekit's own training does not emit: every built-in function, the normalisation methods, tree
missing-value strategies, segmentation methods and MiningField treatments. Plus generated data
trained end to end, scored with missing values, unseen categories and out-of-range numbers."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scorekit
from scorekit import InputError, UnsupportedModelError, load_model

TOLERANCE = 1e-9
NS = "http://www.dmg.org/PMML-4_4"

DICTIONARY = """
<DataDictionary>
  <DataField name="x1" optype="continuous" dataType="double"/>
  <DataField name="x2" optype="continuous" dataType="double"/>
  <DataField name="c" optype="categorical" dataType="string">
    <Value value="a"/><Value value="b"/><Value value="c"/>
  </DataField>
  {target}
</DataDictionary>"""
REGRESSION_TARGET = '<DataField name="y" optype="continuous" dataType="double"/>'
CLASS_TARGET = """<DataField name="y" optype="categorical" dataType="string">
    <Value value="no"/><Value value="yes"/><Value value="maybe"/></DataField>"""
BINARY_TARGET = """<DataField name="y" optype="categorical" dataType="string">
    <Value value="no"/><Value value="yes"/></DataField>"""


def mining_schema(extra: str = "", fields: dict[str, str] | None = None) -> str:
    attrs = fields or {}
    return (
        "<MiningSchema>"
        + "".join(f'<MiningField name="{n}" {attrs.get(n, "")}/>' for n in ("x1", "x2", "c"))
        + '<MiningField name="y" usageType="target"/>'
        + extra
        + "</MiningSchema>"
    )


def document(model: str, target: str = REGRESSION_TARGET, transformations: str = "") -> str:
    return (
        f'<PMML xmlns="{NS}" version="4.4"><Header/>{DICTIONARY.format(target=target)}'
        f"{transformations}{model}</PMML>"
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """pair(pmml_text) -> (native model, pypmml model) for the same document."""
    directory = tmp_path_factory.mktemp("handwritten")
    loaded: list[scorekit.Model] = []

    def load(text: str, name: str = "m") -> tuple[scorekit.Model, scorekit.Model]:
        path = directory / f"{name}-{len(loaded)}.pmml"
        path.write_text(text)
        models = (load_model(path, engine="native"), load_model(path, engine="pypmml"))
        loaded.extend(models)
        return models

    yield load
    for model in loaded:
        model.close()


def agree(native: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert list(native) == list(reference)
    for name, ours in native.items():
        theirs = reference[name]
        if ours.dtype == object:
            assert ours.tolist() == theirs.tolist(), name
        else:
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE, err_msg=name)


def agree_on_random_rows(pair: Any, text: str, name: str, missing: float = 0.15) -> None:
    """Load ``text`` in both engines and compare them on a random batch."""
    native, reference = pair(text, name)
    columns = random_columns(missing=missing)
    agree(native.predict_columns(columns), reference.predict_columns(columns))


RNG = np.random.default_rng(7)
N_RANDOM = 200


def random_columns(n: int = N_RANDOM, missing: float = 0.15) -> dict[str, list[Any]]:
    x1 = RNG.normal(0, 3, n).round(3).tolist()
    x2 = RNG.uniform(-2, 12, n).round(3).tolist()
    c = RNG.choice(["a", "b", "c"], n).tolist()
    for column in (x1, x2, c):
        for i in np.flatnonzero(RNG.random(n) < missing):
            column[i] = None
    return {"x1": x1, "x2": x2, "c": c}


# --- every built-in function, as a derived field feeding a regression -------------------------
X1, X2, C = '<FieldRef field="x1"/>', '<FieldRef field="x2"/>', '<FieldRef field="c"/>'


def const(value: object, dtype: str = "double") -> str:
    return f'<Constant dataType="{dtype}">{value}</Constant>'


def apply(function: str, *args: str, attrs: str = "") -> str:
    return f'<Apply function="{function}" {attrs}>{"".join(args)}</Apply>'


POSITIVE_X2 = apply("+", apply("abs", X2), const(1))
EXPRESSIONS = {
    "add": apply("+", X1, X2),
    "subtract": apply("-", X1, X2),
    "multiply": apply("*", X1, X2),
    "divide": apply("/", X1, POSITIVE_X2),
    "min": apply("min", X1, X2, const(1)),
    "max": apply("max", X1, X2, const(-1)),
    "sum": apply("sum", X1, X2, const(2)),
    "avg": apply("avg", X1, X2),
    "exp": apply("exp", apply("/", X1, const(4))),
    "ln": apply("ln", POSITIVE_X2),
    "log10": apply("log10", POSITIVE_X2),
    "sqrt": apply("sqrt", POSITIVE_X2),
    "abs": apply("abs", X1),
    "pow": apply("pow", X1, const(2)),
    "floor": apply("floor", X1),
    "ceil": apply("ceil", X1),
    # round(missing) is missing here but 0 in the reference (Java's Math.round(NaN)): see
    # test_spec_semantics_where_the_reference_differs.
    "round": apply("round", X1, attrs='mapMissingTo="0"'),
    "threshold": apply("threshold", X1, const(0.5)),
    "if": apply("if", apply("greaterThan", X1, const(0)), X1, X2),
    "if-no-else": apply("if", apply("lessOrEqual", X1, const(0)), X2),
    "isMissing": apply("if", apply("isMissing", X2), const(1), const(0)),
    "isNotMissing": apply("if", apply("isNotMissing", C), const(1), const(0)),
    "isIn": apply(
        "if", apply("isIn", C, const("a", "string"), const("b", "string")), const(3), const(4)
    ),
    "isNotIn": apply("if", apply("isNotIn", C, const("a", "string")), const(3), const(4)),
    "and-or-not": apply(
        "if",
        apply(
            "or",
            apply("and", apply("greaterThan", X1, const(0)), apply("lessThan", X2, const(5))),
            apply("not", apply("equal", C, const("c", "string"))),
        ),
        const(1),
        const(0),
    ),
    "comparisons": apply(
        "if",
        apply("greaterOrEqual", X1, X2),
        const(1),
        apply("if", apply("notEqual", X1, X2), const(2), const(3)),
    ),
    "mapMissingTo": apply("+", X1, X2, attrs='mapMissingTo="-7"'),
    "defaultValue": apply("ln", apply("-", X1, const(100)), attrs='defaultValue="0.5"'),
    "norm-continuous": '<NormContinuous field="x1"><LinearNorm orig="-3" norm="0"/>'
    '<LinearNorm orig="0" norm="0.4"/><LinearNorm orig="5" norm="1"/>'
    "</NormContinuous>",
    "norm-continuous-extremes": '<NormContinuous field="x2" outliers="asExtremeValues">'
    '<LinearNorm orig="0" norm="0"/><LinearNorm orig="10" norm="1"/>'
    "</NormContinuous>",
    "norm-discrete": '<NormDiscrete field="c" value="b"/>',
    "map-values": '<MapValues outputColumn="out" dataType="double" defaultValue="9">'
    '<FieldColumnPair field="c" column="in"/><InlineTable>'
    "<row><in>a</in><out>1.5</out></row><row><in>b</in><out>-2</out></row>"
    "</InlineTable></MapValues>",
    "discretize": '<Discretize field="x2" dataType="double" defaultValue="-1">'
    '<DiscretizeBin binValue="1"><Interval closure="openClosed" rightMargin="0"/>'
    "</DiscretizeBin>"
    '<DiscretizeBin binValue="2"><Interval closure="openOpen" leftMargin="0" '
    'rightMargin="5"/></DiscretizeBin>'
    '<DiscretizeBin binValue="3"><Interval closure="closedOpen" leftMargin="5" '
    'rightMargin="10"/></DiscretizeBin>'
    '<DiscretizeBin binValue="4"><Interval closure="closedOpen" leftMargin="10"/></DiscretizeBin>'
    "</Discretize>",
}


def expression_document(expression: str) -> str:
    transformations = (
        '<TransformationDictionary><DerivedField name="d" optype="continuous" dataType="double">'
        f"{expression}</DerivedField></TransformationDictionary>"
    )
    model = (
        f'<RegressionModel functionName="regression">{mining_schema()}'
        '<RegressionTable intercept="0.25"><NumericPredictor name="d" coefficient="2"/>'
        "</RegressionTable></RegressionModel>"
    )
    return document(model, transformations=transformations)


MAYBE_FLOAT = st.one_of(
    st.none(), st.floats(min_value=-50, max_value=50, allow_nan=False).map(lambda v: round(v, 4))
)
RECORDS = st.fixed_dictionaries(
    {"x1": MAYBE_FLOAT, "x2": MAYBE_FLOAT, "c": st.sampled_from(["a", "b", "c", None])}
)


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_function_matches_the_reference_on_random_batches(pair, name: str) -> None:
    agree_on_random_rows(pair, expression_document(EXPRESSIONS[name]), name)


@pytest.mark.parametrize("name", ["divide", "if", "isIn", "map-values", "discretize", "round"])
def test_function_properties_on_generated_records(pair, name: str) -> None:
    native, reference = pair(expression_document(EXPRESSIONS[name]), name)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(RECORDS)
    def check(record: dict[str, Any]) -> None:
        ours = native.predict_one(record)["prediction"]
        theirs = reference.predict_one(record)["prediction"]
        if isinstance(theirs, float) and math.isnan(theirs):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(theirs, abs=TOLERANCE)

    check()


# --- regression normalisations ---------------------------------------------------------------
TABLES = (
    '<RegressionTable intercept="0.3" targetCategory="yes">'
    '<NumericPredictor name="x1" coefficient="0.4"/>'
    '<CategoricalPredictor name="c" value="a" coefficient="-0.7"/>'
    '<CategoricalPredictor name="c" value="b" coefficient="0.2"/></RegressionTable>'
)


@pytest.mark.parametrize("method", ["logit", "probit", "cloglog", "loglog", "cauchit"])
def test_binary_normalisations(pair, method: str) -> None:
    model = (
        f'<RegressionModel functionName="classification" normalizationMethod="{method}">'
        f'{mining_schema()}{TABLES}<RegressionTable intercept="0" targetCategory="no"/>'
        "</RegressionModel>"
    )
    agree_on_random_rows(pair, document(model, BINARY_TARGET), method, missing=0.0)


@pytest.mark.parametrize("method", ["softmax", "simplemax"])
def test_multiclass_normalisations(pair, method: str) -> None:
    # simplemax divides by the sum: keep every table positive.
    model = (
        f'<RegressionModel functionName="classification" normalizationMethod="{method}">'
        f"{mining_schema()}"
        '<RegressionTable intercept="20" targetCategory="yes">'
        '<NumericPredictor name="x1" coefficient="0.4"/></RegressionTable>'
        '<RegressionTable intercept="25" targetCategory="maybe">'
        '<NumericPredictor name="x2" coefficient="-0.3"/></RegressionTable>'
        '<RegressionTable intercept="18" targetCategory="no">'
        '<CategoricalPredictor name="c" value="a" coefficient="1.5"/></RegressionTable>'
        "</RegressionModel>"
    )
    agree_on_random_rows(pair, document(model, CLASS_TARGET), method, missing=0.0)


@pytest.mark.parametrize("method", ["none", "exp"])
def test_regression_normalisations_and_terms(pair, method: str) -> None:
    model = (
        f'<RegressionModel functionName="regression" normalizationMethod="{method}">'
        f'{mining_schema()}<RegressionTable intercept="0.1">'
        '<NumericPredictor name="x1" coefficient="0.05"/>'
        '<NumericPredictor name="x2" exponent="2" coefficient="0.01"/>'
        '<PredictorTerm coefficient="0.02"><FieldRef field="x1"/><FieldRef field="x2"/>'
        "</PredictorTerm></RegressionTable></RegressionModel>"
    )
    agree_on_random_rows(pair, document(model), method, missing=0.0)


# --- trees: predicates, missing-value and no-true-child strategies ----------------------------
def tree(strategy: str, no_true_child: str, function: str = "classification") -> str:
    def leaf(label: str, p_no: float) -> str:
        if function == "regression":
            return ""
        return (
            f'<ScoreDistribution value="no" recordCount="{p_no * 10:g}"/>'
            f'<ScoreDistribution value="yes" recordCount="{(1 - p_no) * 10:g}"/>'
        )

    def node(score: str, predicate: str, body: str = "", p_no: float = 0.5, **attrs: str) -> str:
        extra = "".join(f' {k}="{v}"' for k, v in attrs.items())
        return f'<Node score="{score}"{extra}>{predicate}{leaf(score, p_no)}{body}</Node>'

    yes, no = ("yes", "no") if function == "classification" else ("2.5", "-1")
    inner = node(
        yes,
        '<SimplePredicate field="x1" operator="lessOrEqual" value="0"/>',
        node(
            no,
            '<SimpleSetPredicate field="c" booleanOperator="isIn">'
            '<Array type="string">a "b"</Array></SimpleSetPredicate>',
            p_no=0.9,
            id="3",
        )
        + node(
            yes,
            '<CompoundPredicate booleanOperator="and">'
            '<SimplePredicate field="x2" operator="greaterThan" value="1"/>'
            '<SimplePredicate field="c" operator="equal" value="c"/>'
            "</CompoundPredicate>",
            p_no=0.1,
            id="4",
        ),
        p_no=0.3,
        id="1",
        defaultChild="3",
    ) + node(
        no,
        '<CompoundPredicate booleanOperator="surrogate">'
        '<SimplePredicate field="x2" operator="lessThan" value="4"/>'
        '<SimplePredicate field="x1" operator="greaterOrEqual" value="2"/>'
        "</CompoundPredicate>",
        p_no=0.8,
        id="2",
    )
    root = node(no, "<True/>", inner, p_no=0.6, id="0", defaultChild="1")
    return (
        f'<TreeModel functionName="{function}" missingValueStrategy="{strategy}" '
        f'noTrueChildStrategy="{no_true_child}">{mining_schema()}{root}</TreeModel>'
    )


@pytest.mark.parametrize("strategy", ["none", "lastPrediction", "nullPrediction", "defaultChild"])
@pytest.mark.parametrize("no_true_child", ["returnLastPrediction", "returnNullPrediction"])
@pytest.mark.parametrize("function", ["classification", "regression"])
def test_tree_strategies(pair, strategy: str, no_true_child: str, function: str) -> None:
    target = BINARY_TARGET if function == "classification" else REGRESSION_TARGET
    native, reference = pair(document(tree(strategy, no_true_child, function), target), strategy)
    # Complete rows only: the reference takes a predicate on a missing value as false, where
    # PMML says unknown (see test_tree_missing_value_strategies_follow_the_spec).
    columns = random_columns(missing=0.0)
    agree(native.predict_columns(columns), reference.predict_columns(columns))


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("none", -1.0), ("lastPrediction", -1.0), ("nullPrediction", None), ("defaultChild", 2.5)],
)
def test_tree_missing_value_strategies_follow_the_spec(
    tmp_path: Path, strategy: str, expected: float | None
) -> None:
    """x1 missing makes the root's first child's predicate unknown: none skips to the next child
    (x2 < 4 holds: -1), lastPrediction returns the root's score (-1), nullPrediction returns
    missing, defaultChild follows the root's defaultChild (node 1: 2.5, no child of it true)."""
    path = tmp_path / "tree.pmml"
    path.write_text(document(tree(strategy, "returnLastPrediction", "regression")))
    model = load_model(path, engine="native")
    got = model.predict_one({"x1": None, "x2": 3.0, "c": "c"})["prediction"]
    if expected is None:
        assert math.isnan(got)
    else:
        assert got == expected


@pytest.mark.parametrize("strategy", ["none", "lastPrediction", "nullPrediction", "defaultChild"])
def test_a_shallow_forest_scores_a_batch_as_it_scores_each_record(
    tmp_path: Path, strategy: str
) -> None:
    """A batch large enough for the dense form of a shallow forest (each test on a whole row
    at once, see CompiledForest) picks the leaves the walk picks for each record alone, with
    missing values taking each strategy's branch."""
    from scorekit._native._tree import CompiledForest

    path = tmp_path / "tree.pmml"
    path.write_text(document(tree(strategy, "returnLastPrediction", "regression")))
    model = load_model(path, engine="native")
    assert model.scorer.plan.forest.dense
    columns = random_columns(n=2 * CompiledForest.DENSE_MIN_ROWS, missing=0.2)
    batch = model.predict_columns(columns)["prediction"]
    one_by_one = [
        model.predict_one({name: values[i] for name, values in columns.items()})["prediction"]
        for i in range(len(batch))
    ]
    np.testing.assert_array_equal(batch, np.array(one_by_one, dtype=float))


@pytest.mark.parametrize("missing", [0.0, 0.2])
@pytest.mark.parametrize("strategy", ["none", "lastPrediction", "nullPrediction", "defaultChild"])
def test_the_coded_dense_form_picks_the_walks_leaves(
    tmp_path: Path, strategy: str, missing: float
) -> None:
    """The coded dense form (a tree's test outcomes as the bits of a number that picks its leaf
    from a table, see CompiledForest) picks the leaves of the nested np.where and of the walk,
    missing values included, where it takes the batch and where it hands it over."""
    path = tmp_path / "tree.pmml"
    path.write_text(document(tree(strategy, "returnLastPrediction", "regression")))
    model = load_model(path, engine="native")
    forest = model.scorer.plan.forest
    assert forest.coded_trees is not None
    batches: list[Any] = []  # the feature rows the forest is handed
    coded_leaves = forest._coded_leaves
    forest._coded_leaves = lambda x_rows: batches.append(x_rows) or coded_leaves(x_rows)
    model.predict_columns(random_columns(n=2 * forest.DENSE_MIN_ROWS, missing=missing))
    x_rows = np.vstack(batches[0])
    walked = forest._walk(x_rows)
    np.testing.assert_array_equal(forest._dense_leaves(x_rows), walked)
    np.testing.assert_array_equal(coded_leaves(x_rows), walked)


def test_spec_semantics_where_the_reference_differs(tmp_path: Path) -> None:
    """round(missing) is missing (the reference gives 0); Discretize uses its defaultValue for a
    value in no bin (the reference gives missing)."""
    rounding = tmp_path / "round.pmml"
    rounding.write_text(expression_document(apply("round", X1)))
    assert math.isnan(
        load_model(rounding, engine="native").predict_one({"x1": None, "x2": 1.0, "c": "a"})[
            "prediction"
        ]
    )
    discretize = tmp_path / "discretize.pmml"
    discretize.write_text(
        expression_document(
            '<Discretize field="x2" dataType="double" defaultValue="-1">'
            '<DiscretizeBin binValue="1">'
            '<Interval closure="closedOpen" leftMargin="0" rightMargin="1"/></DiscretizeBin>'
            "</Discretize>"
        )
    )
    model = load_model(discretize, engine="native")
    assert model.predict_one({"x1": 0.0, "x2": 7.0, "c": "a"})["prediction"] == 0.25 + 2 * -1


# --- segmentations ---------------------------------------------------------------------------
def segment(model: str, predicate: str = "<True/>", weight: float = 1.0) -> str:
    return f'<Segment weight="{weight}">{predicate}{model}</Segment>'


def small_tree(field: str, threshold: float, left: str, right: str, function: str) -> str:
    def leaf(score: str) -> str:
        if function == "regression":
            return ""
        p = {"no": 0.8, "yes": 0.25}[score]
        return (
            f'<ScoreDistribution value="no" recordCount="{p * 4:g}"/>'
            f'<ScoreDistribution value="yes" recordCount="{(1 - p) * 4:g}"/>'
        )

    return (
        f'<TreeModel functionName="{function}" noTrueChildStrategy="returnLastPrediction">'
        f'{mining_schema()}<Node score="{left}"><True/>{leaf(left)}'
        f'<Node score="{right}"><SimplePredicate field="{field}" operator="greaterThan" '
        f'value="{threshold}"/>{leaf(right)}</Node></Node></TreeModel>'
    )


@pytest.mark.parametrize(
    ("method", "function"),
    [
        ("majorityVote", "classification"),
        ("weightedMajorityVote", "classification"),
        ("average", "classification"),
        ("weightedAverage", "classification"),
        ("sum", "regression"),
        ("average", "regression"),
        ("weightedAverage", "regression"),
        ("selectFirst", "classification"),
        ("selectFirst", "regression"),
    ],
)
@pytest.mark.parametrize("predicated", [False, True], ids=["all-true", "predicated"])
def test_segmentations(pair, method: str, function: str, predicated: bool) -> None:
    labels = ("no", "yes") if function == "classification" else ("1.5", "-2")
    predicates = [
        '<SimplePredicate field="x1" operator="lessThan" value="0"/>',
        '<SimplePredicate field="c" operator="equal" value="a"/>',
        "<True/>",
    ]
    segments = "".join(
        segment(
            small_tree(field, threshold, *labels, function),
            predicates[i] if predicated or method == "selectFirst" else "<True/>",
            weight,
        )
        for i, (field, threshold, weight) in enumerate(
            [("x1", 0.5, 1.0), ("x2", 3.0, 2.5), ("x1", -1.0, 0.7)]
        )
    )
    model = (
        f'<MiningModel functionName="{function}">{mining_schema()}'
        f'<Segmentation multipleModelMethod="{method}">{segments}</Segmentation></MiningModel>'
    )
    target = BINARY_TARGET if function == "classification" else REGRESSION_TARGET
    native, reference = pair(document(model, target), method)
    columns = random_columns(missing=0.0)
    ours, theirs = native.predict_columns(columns), reference.predict_columns(columns)
    if method == "weightedMajorityVote":
        # The reference reports the sum of weights over the number of segments (above 1 here);
        # the vote itself must agree, and our probabilities are the weight shares.
        assert ours["prediction"].tolist() == theirs["prediction"].tolist()
        total = ours["probability(no)"] + ours["probability(yes)"]
        np.testing.assert_allclose(total, 1.0)
        shares = {
            round(a / b, 9)
            for b in (0.7, 1.0, 1.7, 2.5, 3.2, 3.5, 4.2)
            for a in (0, 0.7, 1.0, 1.7, 2.5, 3.2, 3.5, 4.2)
            if a <= b
        }
        assert {round(v, 9) for v in ours["probability(yes)"]} <= shares
    else:
        agree(ours, theirs)


def null_tree(threshold: float, function: str) -> str:
    """A tree whose only split is on x1: a missing x1 gives a null prediction."""
    leaf = {
        "classification": (
            '<ScoreDistribution value="no" recordCount="3"/>'
            '<ScoreDistribution value="yes" recordCount="1"/>'
        ),
        "regression": "",
    }[function]
    score = "no" if function == "classification" else "1.5"
    return (
        f'<TreeModel functionName="{function}" missingValueStrategy="nullPrediction" '
        f'noTrueChildStrategy="returnLastPrediction">{mining_schema()}'
        f'<Node score="{score}"><True/>{leaf}<Node score="{score}"><SimplePredicate field="x1" '
        f'operator="lessOrEqual" value="{threshold}"/>{leaf}</Node></Node></TreeModel>'
    )


@pytest.mark.parametrize("treatment", ["returnMissing", "continue"])
@pytest.mark.parametrize("method", ["majorityVote", "average", "sum"])
def test_missing_prediction_treatment(tmp_path: Path, treatment: str, method: str) -> None:
    """Two segments need x1 (null when it is missing), one always answers. A missing
    prediction never counts as a vote for the first class."""
    function = "regression" if method == "sum" else "classification"
    segments = (
        segment(null_tree(0.0, function))
        + segment(null_tree(1.0, function))
        + segment(
            small_tree(
                "x2",
                3.0,
                *(("no", "yes") if function == "classification" else ("1.5", "-2")),
                function,
            )
        )
    )
    model = (
        f'<MiningModel functionName="{function}">{mining_schema()}'
        f'<Segmentation multipleModelMethod="{method}" missingPredictionTreatment='
        f'"{treatment}">{segments}</Segmentation></MiningModel>'
    )
    path = tmp_path / "segments.pmml"
    path.write_text(
        document(model, BINARY_TARGET if function == "classification" else REGRESSION_TARGET)
    )
    scored = load_model(path, engine="native").predict_one({"x1": None, "x2": 5.0, "c": "a"})
    if treatment == "returnMissing":
        assert scored["prediction"] is None or math.isnan(scored["prediction"])
    elif method == "sum":
        assert scored["prediction"] == -2.0  # only the third segment counts
    else:  # the third segment alone: x2 > 3 -> "yes" (p_no 0.25)
        assert scored["prediction"] == "yes"
        expected_yes = 1.0 if method == "majorityVote" else 0.75
        assert scored["probability(yes)"] == pytest.approx(expected_yes)


# --- MiningField treatments: valid intervals, invalid values, outliers ------------------------
def interval_document(mining_attrs: str) -> str:
    dictionary = DICTIONARY.replace(
        '<DataField name="x1" optype="continuous" dataType="double"/>',
        '<DataField name="x1" optype="continuous" dataType="double">'
        '<Interval closure="closedClosed" leftMargin="-2" rightMargin="2"/></DataField>',
    ).format(target=REGRESSION_TARGET)
    model = (
        f'<RegressionModel functionName="regression">'
        f'{mining_schema(fields={"x1": mining_attrs})}<RegressionTable intercept="1">'
        '<NumericPredictor name="x1" coefficient="3"/></RegressionTable></RegressionModel>'
    )
    return f'<PMML xmlns="{NS}" version="4.4"><Header/>{dictionary}{model}</PMML>'


@pytest.mark.parametrize(
    "attrs",
    [
        'invalidValueTreatment="asIs"',
        'invalidValueTreatment="asMissing" missingValueReplacement="0.5"',
        'invalidValueTreatment="asValue" invalidValueReplacement="1.25"',
        'invalidValueTreatment="asIs" outliers="asExtremeValues" lowValue="-1" highValue="1"',
        'invalidValueTreatment="asIs" outliers="asMissingValues" lowValue="-1" highValue="1" '
        'missingValueReplacement="0"',
    ],
)
def test_mining_field_treatments(pair, attrs: str) -> None:
    native, reference = pair(interval_document(attrs), "interval")
    columns = {
        "x1": [-5.0, -2.0, -1.5, 0.0, 1.0, 1.9, 2.0, 7.5, None],
        "x2": [0.0] * 9,
        "c": ["a"] * 9,
    }
    agree(native.predict_columns(columns), reference.predict_columns(columns))


def test_return_invalid_names_the_row_field_value_and_range(pair) -> None:
    native, _ = pair(interval_document('invalidValueTreatment="returnInvalid"'), "invalid")
    columns = {"x1": [0.0, 9.0], "x2": [0.0, 0.0], "c": ["a", "a"]}
    with pytest.raises(
        InputError,
        match=r"row 1, field 'x1': 9\.0 is outside the valid range "
        r"\[-2, 2\]\. The PMML declares these values invalid",
    ):
        native.predict_columns(columns)
    with pytest.raises(InputError, match=r"row 10001, field 'x1'"):
        native.predict_columns(columns, row_offset=10_000)


# --- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "element"),
    [
        (
            f'<NaiveBayesModel functionName="regression">{mining_schema()}</NaiveBayesModel>',
            "NaiveBayesModel",
        ),
        (
            '<TreeModel functionName="regression" missingValueStrategy="aggregateNodes">'
            f'{mining_schema()}<Node score="1"><True/></Node></TreeModel>',
            "TreeModel",
        ),
        (
            '<RegressionModel functionName="regression">'
            + mining_schema()
            + '<RegressionTable intercept="0"><NumericPredictor name="d" coefficient="1"/>'
            "</RegressionTable></RegressionModel>",
            "NumericPredictor",
        ),
    ],
)
def test_unsupported_models_are_refused_naming_the_element(
    tmp_path: Path, model: str, element: str
) -> None:
    path = tmp_path / "unsupported.pmml"
    path.write_text(document(model))
    with pytest.raises(UnsupportedModelError, match=f"{element}.*engine='pypmml'"):
        load_model(path, engine="native")


def test_a_model_that_fails_its_verification_rows_is_refused(
    trained, session_store, tmp_path: Path
) -> None:
    manifest = trained("audit")
    pmml = session_store.bundle(manifest.name, manifest.version).read("model.pmml").decode()
    # Change a coefficient but keep the verification rows: the answers no longer match.
    changed = re.sub(
        r'(<NumericPredictor name="[^"]+" coefficient=")[^"]+"', r'\g<1>3.0"', pmml, count=1
    )
    assert changed != pmml
    path = tmp_path / "tampered-logic.pmml"
    path.write_text(changed)
    with pytest.raises(UnsupportedModelError, match="differently from its verification row"):
        load_model(path, engine="native")


# --- generated data, trained end to end ------------------------------------------------------
def write_generated(path: Path, n: int, seed: int, unseen: bool = False) -> None:
    rng = np.random.default_rng(seed)
    colours = np.array(["red", "green", "blue", "violet", "amber"])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["size", "weight", "colour", "grade", "flag", "label", "amount"])
        for _ in range(n):
            size = rng.normal(10, 3)
            weight = rng.uniform(0, 100)
            colour = str(rng.choice(colours))
            grade = int(rng.integers(1, 5))
            flag = bool(rng.random() < 0.3)
            score = 0.3 * size - 0.02 * weight + (colour in ("red", "blue")) + 0.5 * flag
            label = "high" if score + rng.normal(0, 1) > 2.5 else "low"
            amount = 5 * size + 0.1 * weight + grade * 2 + rng.normal(0, 2)
            row: list[Any] = [
                round(size, 3),
                round(weight, 3),
                colour,
                grade,
                flag,
                label,
                round(amount, 3),
            ]
            for j in (0, 1, 2, 3):
                if rng.random() < 0.08:
                    row[j] = "NA"
            if unseen and rng.random() < 0.1:
                row[2] = "ultraviolet"
            if unseen and rng.random() < 0.1:
                row[1] = 1e6  # far outside the training range
            writer.writerow(row)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("generated")
    train, score = directory / "train.csv", directory / "score.csv"
    write_generated(train, 800, seed=1)
    write_generated(score, 300, seed=2, unseen=True)
    return train, score, directory / "store"


@pytest.mark.parametrize("algorithm", ["logreg", "gbm", "hgb", "forest"])
@pytest.mark.parametrize("target", ["label", "amount"])
def test_generated_data_all_engines_agree(generated, algorithm: str, target: str) -> None:
    train, score, store = generated
    manifest = scorekit.train(
        train,
        target,
        f"gen-{target}-{algorithm}",
        algorithm=algorithm,
        store=store,
        invalid="missing",
        categorical=("grade",),
    )
    with open(score, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != target}
    results = {
        engine: load_model(manifest.ref, engine=engine, store=store).predict_columns(columns)
        for engine in ("native", "sklearn", "pypmml")
    }
    agree(results["native"], results["sklearn"])
    agree(results["native"], results["pypmml"])


# --- the one-record form against the batch form, on the cases a review found -----------------
def one_and_batch(model: scorekit.Model, record: dict[str, Any]) -> tuple[Any, Any]:
    return model.predict_one(record), model.predict_records([record])[0]


def test_float_typed_categories_match_in_both_forms(tmp_path: Path) -> None:
    """A categorical field of dataType float: its values are float32-rounded, so validation's
    category codes (kept in double precision) must not be used for it."""
    text = (
        f'<PMML xmlns="{NS}" version="4.4"><Header/><DataDictionary>'
        '<DataField name="f" optype="categorical" dataType="float">'
        '<Value value="0.1"/><Value value="0.2"/><Value value="3"/></DataField>'
        f"{REGRESSION_TARGET}</DataDictionary>"
        '<RegressionModel functionName="regression"><MiningSchema><MiningField name="f"/>'
        '<MiningField name="y" usageType="target"/></MiningSchema>'
        '<RegressionTable intercept="1"><CategoricalPredictor name="f" value="0.1" '
        'coefficient="10"/></RegressionTable></RegressionModel></PMML>'
    )
    path = tmp_path / "float-categories.pmml"
    path.write_text(text)
    one, batch = one_and_batch(load_model(path, engine="native"), {"f": 0.1})
    reference = load_model(path, engine="pypmml").predict_one({"f": 0.1})
    assert one["prediction"] == batch["prediction"] == reference["prediction"] == 11.0


@pytest.mark.parametrize("method", ["logit", "probit", "none"])
def test_a_missing_input_in_any_table_makes_the_prediction_missing(pair, method: str) -> None:
    model = (
        f'<RegressionModel functionName="classification" normalizationMethod="{method}">'
        f'{mining_schema()}<RegressionTable intercept="0.8" targetCategory="yes">'
        '<NumericPredictor name="x1" coefficient="0.001"/></RegressionTable>'
        '<RegressionTable intercept="0" targetCategory="no">'
        '<NumericPredictor name="x2" coefficient="1"/></RegressionTable></RegressionModel>'
    )
    native, reference = pair(document(model, BINARY_TARGET), f"missing-{method}")
    record = {"x1": 1.0, "x2": None, "c": "a"}
    one, batch = one_and_batch(native, record)
    assert one["prediction"] is None and batch["prediction"] is None
    assert math.isnan(batch["probability(yes)"])
    assert math.isnan(reference.predict_one(record)["probability(yes)"])


def test_sums_add_in_the_same_order_in_both_forms(tmp_path: Path) -> None:
    """Twenty constant trees whose pairwise sum differs from the sequential one in the last bit;
    castInteger="round" would turn that into 10 against 11."""
    leaves = [
        0.7,
        0.45,
        0.05,
        0.45,
        0.55,
        0.55,
        0.15,
        0.85,
        0.45,
        0.45,
        0.15,
        0.65,
        0.95,
        0.55,
        0.95,
        0.45,
        0.45,
        0.85,
        0.7,
        0.15,
    ]
    segments = "".join(
        segment(
            f'<TreeModel functionName="regression">{mining_schema()}'
            f'<Node score="{v}"><True/></Node></TreeModel>'
        )
        for v in leaves
    )
    model = (
        f'<MiningModel functionName="regression">{mining_schema()}'
        '<Targets><Target field="y" castInteger="round"/></Targets>'
        f'<Segmentation multipleModelMethod="sum">{segments}</Segmentation></MiningModel>'
    )
    path = tmp_path / "sum.pmml"
    path.write_text(document(model))
    one, batch = one_and_batch(load_model(path, engine="native"), {"x1": 0.0, "x2": 0.0, "c": "a"})
    assert one == batch


@pytest.mark.parametrize(("exponent", "x2"), [("2", 1e200), ("-1", 0.0), ("-1", -0.0)])
def test_overflow_and_zero_divisors_give_the_batch_answer(
    tmp_path: Path, exponent: str, x2: float
) -> None:
    model = (
        f'<RegressionModel functionName="regression">{mining_schema()}'
        f'<RegressionTable intercept="0"><NumericPredictor name="x2" exponent="{exponent}" '
        'coefficient="1"/></RegressionTable></RegressionModel>'
    )
    path = tmp_path / "power.pmml"
    path.write_text(document(model))
    one, batch = one_and_batch(load_model(path, engine="native"), {"x1": 0.0, "x2": x2, "c": "a"})
    assert one == batch and math.isinf(one["prediction"])


def test_numbers_beyond_float32_in_a_float_field(trained, session_store) -> None:
    """A value past float32's range in a dataType="float" field is +-inf in both forms, with no
    warning (pytest turns warnings into errors)."""
    manifest = trained("auto", "gbm")
    model = load_model(manifest.ref, engine="native", store=session_store)
    record = {
        "cylinders": 4,
        "displacement": 1e300,
        "horsepower": 90,
        "weight": 2500,
        "acceleration": 15,
        "model_year": 76,
        "origin": 1,
    }
    one, batch = one_and_batch(model, record)
    assert one["prediction"] == pytest.approx(batch["prediction"], abs=1e-12)


@given(st.floats())
def test_one_record_float32_rounding_is_numpys(value: float) -> None:
    from scorekit._native._engine import _to_float32

    with np.errstate(over="ignore"):
        expected = float(np.float32(value))
    got = _to_float32(value)
    assert (got == expected and math.copysign(1, got) == math.copysign(1, expected)) or (
        math.isnan(got) and math.isnan(expected)
    )


# --- the one-record form as one generated function ---------------------------------------------
def _chain(final: str, outputs: str, replacement: str = "") -> str:
    """A boosting-like chain: a sum of trees rescaled by a Target, then ``final`` on its output."""
    trees = "".join(
        segment(small_tree(field, threshold, "0.5", "-1.25", "regression"))
        for field, threshold in [("x1", 0.5), ("x2", 3.0), ("x1", -1.0)]
    )
    return (
        f'<MiningModel functionName="classification">{mining_schema()}'
        '<Segmentation multipleModelMethod="modelChain">'
        f'<Segment><True/><MiningModel functionName="regression">{mining_schema()}'
        f"<Output>{outputs}</Output>"
        '<Targets><Target rescaleConstant="-1.5" rescaleFactor="0.1"/></Targets>'
        f'<Segmentation multipleModelMethod="sum">{trees}</Segmentation></MiningModel></Segment>'
        f"<Segment><True/>{final.format(replacement=replacement)}</Segment>"
        "</Segmentation></MiningModel>"
    )


FINAL = (
    '<RegressionModel functionName="classification" normalizationMethod="{norm}">'
    '<MiningSchema><MiningField name="y" usageType="target"/>'
    '<MiningField name="f"/><MiningField name="g" {{replacement}}/></MiningSchema>'
    '<RegressionTable intercept="0.1" targetCategory="yes"><NumericPredictor name="f" '
    'coefficient="1.0"/><NumericPredictor name="g" coefficient="0.5"/></RegressionTable>'
    '<RegressionTable intercept="0.0" targetCategory="no"/></RegressionModel>'
)
CHAIN_OUTPUTS = (
    '<OutputField name="f" feature="predictedValue"/>'
    '<OutputField name="g" feature="transformedValue">'
    f"{apply('*', apply('-', X1, const(1)), X2)}</OutputField>"
)
# g is 0, or NaN (inf - inf) where x1 * x2 overflows: the replacement's case
NAN_OUTPUTS = (
    '<OutputField name="f" feature="predictedValue"/>'
    '<OutputField name="g" feature="transformedValue">'
    f"{apply('-', apply('*', X1, X2), apply('*', X2, X1))}</OutputField>"
)
LOCAL_DERIVED = (
    "<LocalTransformations>"
    f'<DerivedField name="d" optype="continuous" dataType="double">{apply("/", X1, X2)}'
    "</DerivedField>"
    f'<DerivedField name="e" optype="continuous" dataType="double">{apply("+", X1, X2)}'
    "</DerivedField></LocalTransformations>"
)


def _regression(norm: str, function: str = "regression", targets: str = "") -> str:
    # x1 = 1e200 overflows d ** 2 where x2 is small; where x2 is 1e300 it makes the terms inf
    # and -inf, a NaN sum in the table that has them
    plain = (
        '<NumericPredictor name="d" coefficient="0.2"/>'
        '<NumericPredictor name="d" exponent="2" coefficient="-0.01"/>'
        '<CategoricalPredictor name="c" value="a" coefficient="-0.7"/>'
        '<CategoricalPredictor name="c" value="b" coefficient="0.2"/>'
    )
    terms = (
        '<PredictorTerm coefficient="0.05"><FieldRef field="x1"/><FieldRef field="e"/>'
        '</PredictorTerm><PredictorTerm coefficient="-0.05"><FieldRef field="x2"/>'
        '<FieldRef field="e"/></PredictorTerm>'
    )

    def table(category: str, predictors: str) -> str:
        attributes = f'intercept="0.3" targetCategory="{category}"'
        return f"<RegressionTable {attributes}>{predictors}</RegressionTable>"

    if function == "regression":
        body = table("", plain + terms)
    elif "maybe" in targets:
        body = table("yes", plain) + table("maybe", plain + terms) + table("no", terms)
        targets = ""
    else:
        body = table("yes", plain) + table("no", terms)
    return (
        f'<RegressionModel functionName="{function}" normalizationMethod="{norm}">'
        f"{mining_schema()}{targets}{LOCAL_DERIVED}{body}</RegressionModel>"
    )


def _forest(method: str) -> str:
    segments = "".join(
        segment(small_tree(field, threshold, "no", "yes", "classification"), weight=weight)
        for field, threshold, weight in [("x1", 0.5, 1.0), ("x2", 3.0, 2.5), ("x1", -1.0, 0.7)]
    )
    return (
        f'<MiningModel functionName="classification">{mining_schema()}'
        f'<Segmentation multipleModelMethod="{method}">{segments}</Segmentation></MiningModel>'
    )


def _deep_sum(terms: int) -> str:
    """A global derived field x1 + 0.000 + 0.001 + ... nested ``terms`` deep, then over x2 (a
    zero divisor where x2 is 0), feeding a regression."""
    total = X1
    for i in range(terms):
        total = apply("+", total, const(i / 1000))
    transformations = (
        "<TransformationDictionary>"
        f'<DerivedField name="d" optype="continuous" dataType="double">{apply("/", total, X2)}'
        "</DerivedField></TransformationDictionary>"
    )
    model = (
        f'<RegressionModel functionName="regression">{mining_schema()}'
        '<RegressionTable intercept="1"><NumericPredictor name="d" coefficient="2"/>'
        "</RegressionTable></RegressionModel>"
    )
    return document(model, transformations=transformations)


# a target that lists a category twice, with two tables of it: the tables' order is no
# permutation of the categories' (the batch path scores it all the same)
REPEATED_CATEGORY = (
    '<RegressionModel functionName="classification" normalizationMethod="logit">'
    f"{mining_schema()}"
    '<RegressionTable intercept="0.2" targetCategory="yes"><NumericPredictor name="x1" '
    'coefficient="1.0"/></RegressionTable><RegressionTable intercept="0.0" targetCategory="yes"/>'
    "</RegressionModel>"
)
REPEATED_TARGET = """<DataField name="y" optype="categorical" dataType="string">
    <Value value="yes"/><Value value="yes"/></DataField>"""

FUSED = {
    "regression": (_regression("none"), REGRESSION_TARGET),
    "regression-exp": (_regression("exp"), REGRESSION_TARGET),
    "regression-logit": (_regression("logit"), REGRESSION_TARGET),
    "regression-clamped": (
        _regression("none", targets='<Targets><Target min="-0.5" max="0.75" '
                    'rescaleFactor="2" rescaleConstant="0.125"/></Targets>'),
        REGRESSION_TARGET,
    ),
    "regression-cast": (
        _regression("none", targets='<Targets><Target castInteger="round"/></Targets>'),
        REGRESSION_TARGET,
    ),
    "binary-logit": (_regression("logit", "classification"), BINARY_TARGET),
    "binary-probit": (_regression("probit", "classification"), BINARY_TARGET),
    "multiclass-softmax": (_regression("softmax", "classification", "maybe"), CLASS_TARGET),
    "chain": (_chain(FINAL.format(norm="logit"), CHAIN_OUTPUTS), BINARY_TARGET),
    "chain-cloglog": (_chain(FINAL.format(norm="cloglog"), CHAIN_OUTPUTS), BINARY_TARGET),
    "chain-replaced": (
        _chain(FINAL.format(norm="logit"), NAN_OUTPUTS, 'missingValueReplacement="0.25"'),
        BINARY_TARGET,
    ),
    "forest-average": (_forest("average"), BINARY_TARGET),
    "forest-weighted": (_forest("weightedAverage"), BINARY_TARGET),
    "binary-repeated-category": (REPEATED_CATEGORY, REPEATED_TARGET),
}  # fmt: skip
DOCUMENTS = {"global-deep-sum": _deep_sum(250)}  # whole documents, beside FUSED's models


def _same_answer(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN equals NaN; 1 and 1.0 differ


@pytest.mark.parametrize("name", sorted([*FUSED, *DOCUMENTS]))
def test_the_one_generated_function_answers_as_the_calls(tmp_path: Path, name: str) -> None:
    """Where a plan writes its own one-record form as source, the record scorer is one function
    (no call to the plan), and on every record, an overflow, a zero divisor and a NaN sum
    among them, it answers exactly as the calls it replaces (prepare_one, then the plan's)."""
    path = tmp_path / f"{name}.pmml"
    path.write_text(DOCUMENTS[name] if name in DOCUMENTS else document(*FUSED[name]))
    model = load_model(path, engine="native")
    score = model.record_scorer()
    assert score is not None and "ANSWER" not in score.__code__.co_names, "not one function"
    schema = model.manifest.schema
    records = [
        {"x1": x1, "x2": x2, "c": c}
        for x1 in (-3.5, -1.0, 0.0, 0.25, 0.5, 2.0, 1e200, -1e200)
        for x2 in (-2.0, 0.0, -0.0, 1.5, 3.0, 11.0, 1e300)
        for c in ("a", "b", "c")
    ] + [{"x1": None, "x2": 1.0, "c": "a"}, {"x1": 1.0, "x2": math.nan, "c": None}]
    handed: list[Any] = []  # the records the generated code hands to the calls
    general = score.__globals__["GENERAL"]
    score.__globals__["GENERAL"] = lambda record: handed.append(record) or general(record)
    for record in records:
        values = schema.prepare_one(record)
        expected = model.predict_values(values) if values is not None else None
        assert _same_answer(score(record), expected), record
    assert len(handed) < len(records) / 2  # most records are answered by the function itself
    if name == "chain-replaced":  # the NaN output replaced, not handed on
        assert {"x1": 1e200, "x2": 1e300, "c": "a"} not in handed

"""Compiled PMML models: RegressionModel, TreeModel and MiningModel (segmentations), with their
MiningSchema treatments, LocalTransformations, Targets and (for model chains) Output fields."""

from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import Problem
from .._output import label_from_probabilities, labels_from_probabilities
from .._pmml_header import child, children, local
from .._schema import MAX_DETAILS
from ._expr import (
    NUM,
    STR,
    Compiler,
    Env,
    FieldType,
    Fn,
    OneFn,
    logistic,
    missing_mask,
    parse_scalar,
    unsupported,
)
from ._source import Local, Shape, Source
from ._tree import (
    FALLBACK,
    NO_VALUE,
    PREDICATES,
    CompiledForest,
    FlatForest,
    ForestLists,
    forest_fields,
    forest_lines,
    generate_scalar_forest,
    source_literal,
)


@dataclass
class Result:
    """A model's answer for a batch: a value per row (regression) or class probabilities."""

    value: np.ndarray | None = None  # (n,)
    probabilities: np.ndarray | None = None  # (n, k), in the model's category order


class Plan:
    """A compiled PMML model: ``evaluate(env)`` returns its Result for every row of env.

    ``one(values)`` scores a single record given as field values (floats with NaN for missing,
    str or None), with plain Python numbers: the regression value, or the class probabilities as
    a list. It returns None where this plan (or this record) has no one-record form; the caller
    then uses ``evaluate`` on a one-row batch. Both forms compute the same formulas in the same
    order, and the contract tests hold them equal.
    """

    function: str
    categories: list[str] | None

    def evaluate(self, env: Env) -> Result:
        raise NotImplementedError

    def one(self, values: dict[str, Any]) -> Any:
        return None

    def emit_one(self, src: Source, inputs: Mapping[str, Local]) -> str | None:
        """Write ``one`` as source into ``src``, reading the fields from ``inputs``, and return
        the local that holds its answer; None where this plan can't (the caller then keeps the
        calls). The code makes the same operations in the same order as ``one``, and where
        ``one`` would take another way (a missing value, a null leaf) it writes
        ``src.fallback``, which hands the record to the calls (see _source)."""
        return None


def is_missing_value(value: Any) -> bool:
    return value is None or value != value


@dataclass
class Context:
    """What a model compiles against: field types, the target and its categories."""

    compiler: Compiler
    target: str | None
    categories: list[str] | None  # target categories (PMML value strings), classification only
    data_fields: dict[str, ET.Element]


def target_of(model: ET.Element, inherited: str | None) -> str | None:
    schema = child(model, "MiningSchema")
    if schema is not None:
        for mining_field in children(schema, "MiningField"):
            if mining_field.get("usageType") in ("target", "predicted"):
                return mining_field.get("name")
    return inherited


def categories_of(target: str | None, data_fields: dict[str, ET.Element]) -> list[str] | None:
    if target is None or target not in data_fields:
        return None
    values = [
        v.get("value", "")
        for v in children(data_fields[target], "Value")
        if v.get("property", "valid") == "valid"
    ]
    return values or None


def compile_model(element: ET.Element, context: Context, *, top_level: bool = False) -> Plan:
    """Any supported model element, with its mining schema, transformations and targets. The
    top-level model's missing-value replacements are applied by the scorer, before the
    TransformationDictionary, so they are not repeated here."""
    function = element.get("functionName", "")
    if function not in ("classification", "regression"):
        raise unsupported(element, f"functionName {function!r}")
    target = target_of(element, context.target)
    categories = (
        categories_of(target, context.data_fields) if function == "classification" else None
    )
    if function == "classification" and not categories:
        raise unsupported(element, f"classification target {target!r} lists no categories")
    compiler = Compiler(context.compiler.types)
    local_fields = compile_local_transformations(element, compiler)
    inner = Context(compiler, target, categories, context.data_fields)
    tag = local(element.tag)
    core: Plan
    if tag == "RegressionModel":
        core = RegressionPlan(element, inner, function)
    elif tag == "TreeModel":
        core = ForestPlan.single(element, inner, function)
    elif tag == "MiningModel":
        core = compile_mining_model(element, inner, function)
    else:
        raise unsupported(element)
    replacements = {} if top_level else mining_replacements(element, compiler)
    targets = compile_targets(element, function)
    if not (replacements or local_fields or targets):
        return core
    return Wrapped(core, replacements, local_fields, targets)


class Wrapped(Plan):
    """A model with its own missing-value replacements, derived fields or target rescaling."""

    def __init__(
        self,
        core: Plan,
        replacements: dict[str, object],
        local_fields: list[Derived],
        targets: TargetRescale | None,
    ) -> None:
        self.core = core
        self.function = core.function
        self.categories = core.categories
        self.replacements = replacements
        self.local_fields = local_fields
        self.targets = targets
        self.has_one = all(d.one is not None for d in local_fields)

    def evaluate(self, env: Env) -> Result:
        if self.replacements or self.local_fields:
            env = env.copy()
            complete_env(env, self.replacements, self.local_fields)
        result = self.core.evaluate(env)
        if self.targets is not None and result.value is not None:
            result = Result(self.targets(result.value), result.probabilities)
        return result

    def one(self, values: dict[str, Any]) -> Any:
        if not self.has_one:
            return None
        if self.replacements or self.local_fields:
            values = complete_values(values, self.replacements, self.local_fields)
        result = self.core.one(values)
        if result is not None and self.targets is not None:
            result = self.targets.one(result)
        return result

    def emit_one(self, src: Source, inputs: Mapping[str, Local]) -> str | None:
        if not self.has_one:
            return None
        inputs = dict(inputs)
        for name, replacement in self.replacements.items():
            found = inputs.get(name)
            if found is None:
                return None
            if not found.present:  # is_missing_value, written out
                value = src.fresh("x")
                src.line(f"{value} = {found.name}")
                src.line(f"if {value} is None or {value} != {value}:")
                src.line(f"    {value} = {src.literal(replacement)}")
                inputs[name] = Local(value, not is_missing_value(replacement))
        if not emit_derived(src, self.local_fields, inputs):
            return None
        result = self.core.emit_one(src, inputs)
        if result is None or self.targets is None:
            return result
        return self.targets.emit_one(src, result)


def emit_derived(src: Source, fields: list[Derived], inputs: dict[str, Local]) -> bool:
    """complete_values' derived fields, written into ``src`` (each a new entry of ``inputs``);
    False where one of them has no shape to write."""
    for derived in fields:
        code = src.expression(derived.shape, inputs)
        if code is None:
            return False
        # an operation's result is a local already; a field or a constant gets one
        inputs[derived.name] = Local(code, False) if code.isidentifier() else src.assign(code, "d")
    return True


def complete_env(env: Env, replacements: dict[str, object], fields: list[Derived]) -> None:
    """Replace missing values, then compute the derived fields in order (batch form)."""
    replace_missing(env, replacements)
    for derived in fields:
        env.columns[derived.name] = derived.fn(env)


def complete_values(
    values: dict[str, Any], replacements: dict[str, object], fields: list[Derived]
) -> dict[str, Any]:
    """The same for one record; every field must have its one-record form."""
    values = dict(values)
    for name, replacement in replacements.items():
        if is_missing_value(values[name]):
            values[name] = replacement
    for derived in fields:
        assert derived.one is not None
        values[derived.name] = derived.one(values)
    return values


def compile_local_transformations(element: ET.Element, compiler: Compiler) -> list[Derived]:
    transformations = child(element, "LocalTransformations")
    return derived_fields(transformations, compiler) if transformations is not None else []


@dataclass(frozen=True)
class Derived:
    """A compiled DerivedField: its batch form and, where it has one, its one-record form."""

    name: str
    fn: Fn
    one: OneFn | None
    shape: Shape | None = None  # what ``one`` computes, for generated code


def derived_fields(container: ET.Element, compiler: Compiler) -> list[Derived]:
    """DerivedFields in order; each becomes visible to the ones after it."""
    out: list[Derived] = []
    for derived in children(container, "DerivedField"):
        name = derived.get("name", "")
        expression = [e for e in derived if local(e.tag) != "Extension" and local(e.tag) != "Value"]
        if len(expression) != 1:
            raise unsupported(derived, f"DerivedField {name!r} needs exactly one expression")
        compiled = compiler.expression(expression[0])
        dtype = derived.get("dataType", "double" if compiled.kind == NUM else "string")
        compiler.types[name] = FieldType(compiled.kind, dtype)
        if dtype == "float":
            out.append(Derived(name, _float32(compiled.fn), None))
        else:
            out.append(Derived(name, compiled.fn, compiled.one, compiled.shape))
    return out


def _float32(fn: Fn) -> Fn:
    return lambda env: fn(env).astype(np.float32).astype(np.float64)


def mining_replacements(element: ET.Element, compiler: Compiler) -> dict[str, object]:
    """missingValueReplacement of a model's MiningFields (nested models may have their own)."""
    schema = child(element, "MiningSchema")
    replacements: dict[str, object] = {}
    if schema is None:
        return replacements
    for mining_field in children(schema, "MiningField"):
        name = mining_field.get("name", "")
        if mining_field.get("usageType", "active") != "active":
            continue
        replacement = mining_field.get("missingValueReplacement")
        if replacement is not None:
            ftype = compiler.field_type(name, "MiningField")
            replacements[name] = parse_scalar(replacement, ftype.dtype)
    return replacements


def replace_missing(env: Env, replacements: dict[str, object]) -> None:
    for name, value in replacements.items():
        column = env.columns[name]
        mask = missing_mask(column)
        if mask.any():
            column = column.copy()
            column[mask] = value
            env.columns[name] = column
            if name in env.codes:
                codes, categories = env.codes[name]
                if value in categories:
                    codes = codes.copy()
                    codes[mask] = categories.index(value)
                    env.codes[name] = (codes, categories)
                else:
                    del env.codes[name]


@dataclass(frozen=True)
class TargetRescale:
    """A regression Target: clamp to [low, high], then value * factor + constant, then cast."""

    factor: float
    constant: float
    low: float
    high: float
    cast: str | None

    def __call__(self, value: np.ndarray) -> np.ndarray:
        out = np.clip(value, self.low, self.high) * self.factor + self.constant
        if self.cast == "round":
            out = np.floor(out + 0.5)
        elif self.cast == "ceiling":
            out = np.ceil(out)
        elif self.cast == "floor":
            out = np.floor(out)
        return np.asarray(out)

    def one(self, value: float) -> float:
        if self.cast:
            return float(self(np.array([value]))[0])
        if self.low != -math.inf or self.high != math.inf:
            value = min(max(value, self.low), self.high)
        return value * self.factor + self.constant

    def emit_one(self, src: Source, value: str) -> str:
        """``one`` of the local ``value``, written into ``src``; returns the result's local."""
        out = src.fresh("r")
        if self.cast:
            src.line(f"{out} = {src.bind(self.one, 'rescale')}({value})")
            return out
        if self.low != -math.inf or self.high != math.inf:
            low, high = src.literal(self.low), src.literal(self.high)
            src.line(f"{out} = min(max({value}, {low}), {high})")
            value = out
        src.line(f"{out} = {value} * {src.literal(self.factor)} + {src.literal(self.constant)}")
        return out


def compile_targets(element: ET.Element, function: str) -> TargetRescale | None:
    targets = child(element, "Targets")
    if targets is None:
        return None
    target_list = children(targets, "Target")
    if len(target_list) != 1:
        raise unsupported(targets, "exactly one Target is supported")
    target = target_list[0]
    if children(target, "TargetValue"):
        if function == "regression":
            raise unsupported(target, "TargetValue in a regression")
        raise unsupported(target, "TargetValue priors")
    if function == "classification":
        return None
    return TargetRescale(
        factor=float(target.get("rescaleFactor", "1")),
        constant=float(target.get("rescaleConstant", "0")),
        low=float(target.get("min", "-inf")),
        high=float(target.get("max", "inf")),
        cast=target.get("castInteger"),
    )


# --- RegressionModel -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _remap_cached(
    index_items: tuple[tuple[Any, int], ...], other: int, categories: tuple[Any, ...]
) -> np.ndarray:
    index = dict(index_items)
    # Position k serves code k; the extra last position serves code -1 (missing).
    return np.array([index.get(c, other) for c in categories] + [index[None]], dtype=np.intp)


def _remap(index: dict[Any, int], other: int, categories: tuple[Any, ...]) -> np.ndarray:
    """Coefficient positions by category code, for a field's schema categories."""
    return _remap_cached(tuple(index.items()), other, categories)


def _probit(y: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)
    return np.asarray(0.5 * (1.0 + np.asarray(erf(y / math.sqrt(2.0)), dtype=np.float64)))


_LINKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "logit": logistic,
    "probit": _probit,
    "cloglog": lambda y: 1.0 - np.exp(-np.exp(y)),
    "loglog": lambda y: np.exp(-np.exp(-y)),
    "cauchit": lambda y: 0.5 + np.arctan(y) / math.pi,
    "exp": np.exp,
    "none": lambda y: y,
}


class RegressionPlan(Plan):
    def __init__(self, element: ET.Element, context: Context, function: str) -> None:
        self.function = function
        self.categories = context.categories
        self.normalization = element.get("normalizationMethod", "none")
        tables = children(element, "RegressionTable")
        if not tables:
            raise unsupported(element, "it has no RegressionTable")
        compiled = [self._table(t, context.compiler) for t in tables]
        self.tables = [fn for fn, _ in compiled]
        specs = [spec for _, spec in compiled]
        # every table's one-record form, or None if one table has none
        self._specs = None if None in specs else [t for t in specs if t is not None]
        self._ones = (
            None if self._specs is None else tuple(_generate_table_one(*t) for t in self._specs)
        )
        if function == "regression":
            if len(self.tables) != 1:
                raise unsupported(element, "a regression needs exactly one RegressionTable")
            if self.normalization not in ("none", "exp", "softmax", "logit"):
                raise unsupported(element, f"normalizationMethod {self.normalization!r}")
            return
        assert self.categories is not None
        order = [t.get("targetCategory") for t in tables]
        if sorted(order, key=str) != sorted(self.categories, key=str):
            raise unsupported(element, f"targetCategory values {order} != {self.categories}")
        self.order = [self.categories.index(c) for c in order if c is not None]
        if self.normalization not in (*_LINKS, "softmax", "simplemax"):
            raise unsupported(element, f"normalizationMethod {self.normalization!r}")

    @staticmethod
    def _table(table: ET.Element, compiler: Compiler) -> tuple[Fn, TableSpec | None]:
        """A RegressionTable's batch form, and what its one-record form adds (None where it has
        none)."""
        intercept = float(table.get("intercept", "0"))
        numeric: list[tuple[str, float, float]] = []
        categorical: dict[str, dict[object, float]] = {}
        terms: list[tuple[list[str], float]] = []
        for predictor in table:
            tag = local(predictor.tag)
            if tag == "NumericPredictor":
                name = predictor.get("name", "")
                compiler.field_type(name, "NumericPredictor")
                numeric.append(
                    (
                        name,
                        float(predictor.get("exponent", "1")),
                        float(predictor.get("coefficient", "0")),
                    )
                )
            elif tag == "CategoricalPredictor":
                name = predictor.get("name", "")
                ftype = compiler.field_type(name, "CategoricalPredictor")
                value = parse_scalar(predictor.get("value"), ftype.dtype)
                table_for = categorical.setdefault(name, {})
                table_for[value] = table_for.get(value, 0.0) + float(
                    predictor.get("coefficient", "0")
                )
            elif tag == "PredictorTerm":
                names = [ref.get("field", "") for ref in children(predictor, "FieldRef")]
                for name in names:
                    compiler.field_type(name, "PredictorTerm")
                terms.append((names, float(predictor.get("coefficient", "0"))))
            elif tag != "Extension":
                raise unsupported(predictor)
        # A categorical predictor is a lookup of the coefficient by category code.
        # One gather per field: index k for the k-th listed category, then "any other value"
        # (weight 0) and "missing" (weight NaN, so the result is missing).
        lookups = []
        for name, coefficients in categorical.items():
            other, missing = len(coefficients), len(coefficients) + 1
            index: dict[object, int] = {value: i for i, value in enumerate(coefficients)}
            index[None] = missing
            weights = np.array([*coefficients.values(), 0.0, math.nan])
            lookups.append((name, index, other, weights))

        def fn(env: Env) -> np.ndarray:
            y = np.full(env.n, intercept)
            for name, exponent, coefficient in numeric:
                x = env.columns[name]
                y += coefficient * (x if exponent == 1.0 else x**exponent)
            for name, index, other, weights in lookups:
                coded = env.codes.get(name)
                if coded is not None:
                    codes, categories = coded
                    y += weights[_remap(index, other, categories)[codes]]
                    continue
                values = env.columns[name].tolist()
                if env.columns[name].dtype != object:  # numeric categories: NaN is missing
                    values = [None if v != v else v for v in values]
                positions = np.fromiter(
                    (index.get(v, other) for v in values), dtype=np.intp, count=env.n
                )
                y += weights[positions]
            for names, coefficient in terms:
                product = np.full(env.n, coefficient)
                for name in names:
                    product = product * env.columns[name]
                y += product
            return y

        if any(not float(exponent).is_integer() for _, exponent, _ in numeric):
            return fn, None  # x ** 0.5 of a negative x: numpy gives NaN, Python a complex
        scalar_lookups = [
            (name, index, other, weights.tolist()) for name, index, other, weights in lookups
        ]
        return fn, (intercept, numeric, scalar_lookups, terms)

    def evaluate(self, env: Env) -> Result:
        if self.function == "regression":
            y = self.tables[0](env)
            if self.normalization == "exp":
                y = np.exp(y)
            elif self.normalization in ("softmax", "logit"):
                y = logistic(y)
            return Result(value=y)
        assert self.categories is not None
        ys = np.column_stack([table(env) for table in self.tables])
        k = ys.shape[1]
        if self.normalization == "softmax":
            shifted = ys - np.max(ys, axis=1, keepdims=True)
            exps = np.exp(shifted)
            probabilities = exps / exps.sum(axis=1, keepdims=True)
        elif self.normalization == "simplemax":
            probabilities = ys / ys.sum(axis=1, keepdims=True)
        else:
            link = _LINKS[self.normalization]
            probabilities = np.empty_like(ys)
            if k == 1:
                probabilities = link(ys)
            else:
                probabilities[:, : k - 1] = link(ys[:, : k - 1])
                probabilities[:, k - 1] = 1.0 - probabilities[:, : k - 1].sum(axis=1)
        probabilities[np.isnan(ys).any(axis=1)] = math.nan  # a missing input: no prediction
        out = np.empty((env.n, len(self.categories)))
        out[:, self.order] = probabilities
        return Result(probabilities=out)

    def one(self, values: dict[str, Any]) -> Any:
        if self._ones is None:
            return None
        return self._combine([one(values) for one in self._ones])

    def _combine(self, ys: list[float]) -> Any:
        """``one``'s answer from its tables' sums."""
        if self.function == "regression":
            y = ys[0]
            if self.normalization == "exp":
                return _exp(y)
            if self.normalization in ("softmax", "logit"):
                return 1.0 / (1.0 + _exp(-y))
            return y
        assert self.categories is not None
        k = len(ys)
        if any(map(math.isnan, ys)):
            return [math.nan] * len(self.categories)
        if k == 2 and self.normalization in _SCALAR_LINKS:  # binary: the steps below, unrolled
            first = _SCALAR_LINKS[self.normalization](ys[0])
            out = [0.0, 0.0]
            out[self.order[0]] = first
            out[self.order[1]] = 1.0 - first
            return out
        if self.normalization == "softmax":
            top = max(ys)
            exps = [_exp(y - top) for y in ys]
            total = sum(exps)
            probabilities = [e / total for e in exps]
        elif self.normalization == "simplemax":
            total = sum(ys)
            probabilities = [y / total for y in ys]
        else:
            link = _SCALAR_LINKS[self.normalization]
            if k == 1:
                probabilities = [link(ys[0])]
            else:
                probabilities = [link(y) for y in ys[: k - 1]]
                probabilities.append(1.0 - sum(probabilities))
        out = [0.0] * len(self.categories)
        for j, position in enumerate(self.order):
            out[position] = probabilities[j]
        return out

    def emit_one(self, src: Source, inputs: Mapping[str, Local]) -> str | None:
        if self._specs is None:
            return None
        ys = []
        for spec in self._specs:
            y = _emit_table(src, spec, inputs)
            if y is None:
                return None
            ys.append(y)
        # _combine's commonest cases written out (an overflow of exp raises here: the calls
        # give _exp's answer); the others call it
        out = src.fresh("r")
        if self.function == "regression" and self.normalization == "none":
            src.line(f"{out} = {ys[0]}")
        elif self.function == "regression" and self.normalization in ("logit", "softmax"):
            src.line(f"{out} = 1.0 / (1.0 + {src.bind(math.exp, 'exp')}(-{ys[0]}))")
        elif (
            self.function == "classification"
            and len(ys) == 2
            and self.normalization == "logit"
            and sorted(self.order) == [0, 1]
        ):
            # a NaN sum makes every probability NaN: the calls answer that
            src.line(f"if {ys[0]} != {ys[0]} or {ys[1]} != {ys[1]}: {src.fallback}")
            first = src.fresh("p")
            src.line(f"{first} = 1.0 / (1.0 + {src.bind(math.exp, 'exp')}(-{ys[0]}))")
            at = {self.order[0]: first, self.order[1]: f"1.0 - {first}"}
            src.line(f"{out} = [{at[0]}, {at[1]}]")
        else:
            src.line(f"{out} = {src.bind(self._combine, 'combine')}([{', '.join(ys)}])")
        return out


TableSpec = tuple[
    float,  # intercept
    list[tuple[str, float, float]],  # numeric predictors: name, exponent, coefficient
    list[tuple[str, dict[object, int], int, list[float]]],  # lookups: name, index, other, weights
    list[tuple[list[str], float]],  # predictor terms: names, coefficient
]


def _emit_table(src: Source, spec: TableSpec, inputs: Mapping[str, Local]) -> str | None:
    """_generate_table_one's code, on the locals of ``inputs``; returns the sum's local."""
    intercept, numeric, lookups, terms = spec
    read = [*(p[0] for p in numeric), *(p[0] for p in lookups), *(n for t in terms for n in t[0])]
    if not all(name in inputs for name in read):
        return None
    y = src.fresh("y")
    src.line(f"{y} = {src.literal(intercept)}")
    for name, exponent, coefficient in numeric:
        power = "" if exponent == 1.0 else f" ** {src.literal(exponent)}"
        src.line(f"{y} += {src.literal(coefficient)} * ({inputs[name].name}{power})")
    for name, index, other, weights in lookups:
        x = inputs[name]
        value = x.name
        if not x.present:
            value = src.fresh("x")
            src.line(f"{value} = {x.name}")
            src.line(f"if {value} is not None and {value} != {value}:")
            src.line(f"    {value} = None")
        weights_name, index_name = src.bind(weights, "weights"), src.bind(index, "index")
        src.line(f"{y} += {weights_name}[{index_name}.get({value}, {other})]")
    for names, coefficient in terms:
        product = " * ".join([src.literal(coefficient), *(inputs[n].name for n in names)])
        src.line(f"{y} += {product}")
    return y


def _generate_table_one(
    intercept: float,
    numeric: list[tuple[str, float, float]],
    lookups: list[tuple[str, dict[object, int], int, list[float]]],
    terms: list[tuple[list[str], float]],
) -> OneFn:
    """A RegressionTable's one-record form as straight-line code: the batch form's additions in
    its order (intercept, numeric predictors, categorical lookups, products), on Python floats.
    A categorical value that is NaN counts as missing, as in the batch form."""
    constants: list[Any] = []

    def literal(value: float) -> str:
        return source_literal(value, constants)

    lines = ["def one(values):", f"    y = {literal(intercept)}"]
    for name, exponent, coefficient in numeric:
        power = "" if exponent == 1.0 else f" ** {literal(exponent)}"
        lines.append(f"    y += {literal(coefficient)} * (values[{name!r}]{power})")
    namespace: dict[str, Any] = {"C": constants}
    for i, (name, index, other, weights) in enumerate(lookups):
        namespace[f"INDEX{i}"], namespace[f"WEIGHTS{i}"] = index, weights
        lines += [
            f"    x = values[{name!r}]",
            "    if x is not None and x != x:",
            "        x = None",
            f"    y += WEIGHTS{i}[INDEX{i}.get(x, {other})]",
        ]
    for names, coefficient in terms:
        product = " * ".join([literal(coefficient), *(f"values[{n!r}]" for n in names)])
        lines.append(f"    y += {product}")
    lines.append("    return y")
    exec(compile("\n".join(lines), "<scorekit regression table>", "exec"), namespace)
    one: OneFn = namespace["one"]
    return one


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


_SCALAR_LINKS: dict[str, Callable[[float], float]] = {
    "logit": lambda y: 1.0 / (1.0 + _exp(-y)),
    "probit": lambda y: 0.5 * (1.0 + math.erf(y / math.sqrt(2.0))),
    "cloglog": lambda y: 1.0 - _exp(-_exp(y)),
    "loglog": lambda y: _exp(-_exp(-y)),
    "cauchit": lambda y: 0.5 + math.atan(y) / math.pi,
    "exp": _exp,
    "none": lambda y: y,
}


# --- TreeModel and segmentations of trees --------------------------------------------------------
class ForestPlan(Plan):
    """One or more TreeModels walked together, combined by a segmentation method."""

    def __init__(
        self,
        forest: CompiledForest,
        function: str,
        categories: list[str] | None,
        method: str,
        weights: np.ndarray,
        treatment: str = "returnMissing",
    ) -> None:
        self.forest = forest
        self.function = function
        self.categories = categories
        self.method = method
        self.weights = weights
        self.treatment = treatment

    @classmethod
    def single(cls, element: ET.Element, context: Context, function: str) -> ForestPlan:
        flat = FlatForest(len(context.categories or [None]), context.categories)
        flat.add_tree(element, context.compiler)
        return cls(flat.compile(), function, context.categories, "single", np.ones(1))

    def evaluate(self, env: Env) -> Result:
        leaves = self.forest.leaves(env)  # (trees, rows)
        values = self.forest.values[leaves]  # (trees, rows, width)
        if self.method == "single":
            combined = values[0]
        else:
            combined = combine_segments(values, None, self.weights, self.method, self.treatment)
        if self.function == "regression":
            return Result(value=combined[:, 0])
        return Result(probabilities=combined)

    def one(self, values: dict[str, Any]) -> Any:
        walk = self._scalar_walk()
        if walk is None:
            return None
        generated = self._generated
        total: Any = generated(values) if generated is not None else FALLBACK
        if total is FALLBACK:
            xs = []
            for name, equals in walk[0]:
                x = values[name]
                if equals is not NO_VALUE:
                    x = math.nan if x is None or x != x else (1.0 if x == equals else 0.0)
                xs.append(x)
            total = self._walk_lists(xs, walk)
            if total is None:
                return None
        weights = self.weights
        if self.method == "average":
            total = [v / len(weights) for v in total]
        elif self.method == "weightedAverage":
            weight_sum = float(weights.sum())
            total = [v / weight_sum for v in total]
        return total[0] if self.function == "regression" else total

    def emit_one(self, src: Source, inputs: Mapping[str, Local]) -> str | None:
        forest = self._forest_lists()
        if forest is None:
            return None
        fields = forest_fields(forest)
        if not all(name in inputs for name in fields):
            return None
        written = forest_lines(
            forest,
            {name: inputs[name].name for name in fields},
            {name for name in fields if inputs[name].present},
            src.fresh,
            src.literal,
            src.fallback,
            src.depth,
        )
        if written is None:
            return None
        lines, totals = written
        src.lines.extend(lines)
        if self.method == "average":
            totals = [f"{t} / {len(self.weights)}" for t in totals]
        elif self.method == "weightedAverage":
            totals = [f"{t} / {src.literal(float(self.weights.sum()))}" for t in totals]
        out = src.fresh("r")
        src.line(
            f"{out} = {totals[0]}"
            if self.function == "regression"
            else f"{out} = [{', '.join(totals)}]"
        )
        return out

    def _forest_lists(self) -> ForestLists | None:
        """The node lists as the generated forest reads them, each tree's leaves weighted as
        ``one`` adds them (by its segment's weight only for weightedAverage; average divides
        the sum afterwards); None where ``one`` has no scalar walk."""
        walk = self._scalar_walk()
        if walk is None:
            return None
        features, feature, threshold, on_hit, on_miss, _, leaf_row, leaf_values = walk
        roots = self.forest.roots.tolist()
        weights = self.weights.tolist() if self.method == "weightedAverage" else [1.0] * len(roots)
        return features, feature, threshold, on_hit, on_miss, leaf_row, leaf_values, roots, weights

    def _walk_lists(self, xs: list[float], walk: Any) -> list[float] | None:
        """The weighted sum of the trees' leaves, walking the node lists (any input)."""
        _, feature, threshold, on_hit, on_miss, on_missing, leaf_row, leaf_values = walk
        width = len(leaf_values[0])
        total = [0.0] * width
        weights = self.weights.tolist()
        for t, root in enumerate(self.forest.roots.tolist()):
            node = root
            while (f := feature[node]) >= 0:
                x = xs[f]
                if x != x:
                    node = on_missing[node]
                elif x <= threshold[node]:
                    node = on_hit[node]
                else:
                    node = on_miss[node]
            leaf = leaf_values[leaf_row[node]]
            if any(v != v for v in leaf):
                return None  # a null prediction: the batch path applies the treatment
            w = weights[t] if self.method == "weightedAverage" else 1.0
            total = [a + w * b for a, b in zip(total, leaf, strict=True)]
        return total

    def _scalar_walk(self) -> Any:
        """The node arrays as Python lists, built on first use; None if the forest has
        predicate features or a voting method (those records take the batch path)."""
        if not hasattr(self, "_walk"):
            forest = self.forest
            if self.method not in ("single", "sum", "average", "weightedAverage") or any(
                f.predicate is not None for f in forest.features
            ):
                self._walk = None
            else:
                self._walk = (
                    [(f.name, f.equals) for f in forest.features],
                    *forest.node_lists(),
                    forest.values.tolist(),
                )
        return self._walk

    @functools.cached_property
    def _generated(self) -> Any:
        """The forest as generated code (generate_scalar_forest), made on first use: a record
        scorer that writes the forest into its own function does without it."""
        forest = self._forest_lists()
        return None if forest is None else generate_scalar_forest(forest)


_VOTES = ("majorityVote", "weightedMajorityVote")


def combine_segments(
    values: np.ndarray,
    selected: np.ndarray | None,
    weights: np.ndarray,
    method: str,
    treatment: str,
) -> np.ndarray:
    """Combine segment predictions. ``values`` (segments, rows, width) holds class
    probabilities, or a value in column 0; ``selected`` (segments, rows) says where a segment's
    predicate holds (None: everywhere). A segment whose predicate fails contributes nothing; one
    with a missing prediction makes the row missing under returnMissing and is skipped under
    continue/skipSegment. A row no segment contributes to is missing."""
    missing = np.isnan(values).any(axis=2)
    if selected is None and not missing.any() and method not in _VOTES:
        # Segment by segment, in order, as the one-record form adds (numpy's pairwise sums
        # would differ in the last bits, which castInteger can turn into a whole unit).
        total = values[0].copy() if method != "weightedAverage" else weights[0] * values[0]
        for s in range(1, len(values)):
            total += values[s] if method != "weightedAverage" else weights[s] * values[s]
        if method == "average":
            total /= len(values)
        elif method == "weightedAverage":
            total /= weights.sum()
        return np.asarray(total)
    if selected is None:
        selected = np.ones(missing.shape, dtype=bool)
    used = selected & ~missing
    if method in _VOTES:
        winners = np.argmax(np.where(np.isnan(values), -1.0, values), axis=2)
        values = (winners[..., None] == np.arange(values.shape[2])).astype(np.float64)
    per_segment = weights if method.startswith("weighted") else np.ones_like(weights)
    share = used * per_segment[:, None]  # (segments, rows)
    total = np.zeros(values.shape[1:])
    for s in range(len(values)):
        total += share[s][:, None] * np.where(used[s][:, None], values[s], 0.0)
    counted = share.sum(axis=0)
    if method in ("average", "weightedAverage"):
        total = total / counted[:, None]
    elif method in _VOTES:
        total = total / total.sum(axis=1, keepdims=True)
    total[counted == 0] = math.nan
    if treatment == "returnMissing":
        total[(selected & missing).any(axis=0)] = math.nan
    return np.asarray(total)


_AGGREGATES = ("sum", "average", "weightedAverage", "majorityVote", "weightedMajorityVote")


def compile_mining_model(element: ET.Element, context: Context, function: str) -> Plan:
    segmentation = child(element, "Segmentation")
    if segmentation is None:
        raise unsupported(element, "a MiningModel without Segmentation")
    method = segmentation.get("multipleModelMethod", "")
    segments = children(segmentation, "Segment")
    if not segments:
        raise unsupported(segmentation, "it has no Segment")
    treatment = segmentation.get("missingPredictionTreatment", "continue")
    if treatment not in ("returnMissing", "continue", "skipSegment"):
        raise unsupported(segmentation, f"missingPredictionTreatment {treatment!r}")
    if method == "modelChain":
        return ChainPlan(segments, context, function)
    if method == "selectFirst":
        return SelectFirstPlan(segments, context, function, treatment)
    if method not in _AGGREGATES:
        raise unsupported(segmentation, f"multipleModelMethod {method!r}")
    if method in ("majorityVote", "weightedMajorityVote") and function != "classification":
        raise unsupported(segmentation, f"{method} for a regression")
    if function == "classification" and method == "sum":
        raise unsupported(segmentation, "sum of classifiers")
    trees = [_segment_model(s) for s in segments]
    if all(_is_plain_tree(s, m) for s, m in zip(segments, trees, strict=True)):
        flat = FlatForest(len(context.categories or [None]), context.categories)
        for tree in trees:
            if tree.get("functionName") != function:
                raise unsupported(tree, f"a {tree.get('functionName')} tree in a {function}")
            flat.add_tree(tree, context.compiler)
        weights = np.array([float(s.get("weight", "1")) for s in segments])
        return ForestPlan(flat.compile(), function, context.categories, method, weights, treatment)
    return AggregatePlan(segments, context, function, method, treatment)


def _segment_model(segment: ET.Element) -> ET.Element:
    models = [e for e in segment if local(e.tag) not in (*PREDICATES, "Extension")]
    if len(models) != 1:
        raise unsupported(segment, "a Segment needs exactly one model")
    return models[0]


def _segment_predicate(segment: ET.Element, compiler: Compiler) -> Fn:
    predicates = [e for e in segment if local(e.tag) in PREDICATES]
    if len(predicates) != 1:
        raise unsupported(segment, "a Segment needs exactly one predicate")
    return compiler.predicate(predicates[0])


def _is_plain_tree(segment: ET.Element, model: ET.Element) -> bool:
    """A TreeModel with a True predicate and nothing of its own to apply before its walk."""
    if local(model.tag) != "TreeModel":
        return False
    if not any(local(e.tag) == "True" for e in segment):
        return False
    if any(child(model, tag) is not None for tag in ("LocalTransformations", "Targets")):
        return False
    schema = child(model, "MiningSchema")
    return schema is None or all(
        f.get("missingValueReplacement") is None for f in children(schema, "MiningField")
    )


class AggregatePlan(Plan):
    """A segmentation of arbitrary models combined by sum, average or (weighted) votes."""

    def __init__(
        self,
        segments: list[ET.Element],
        context: Context,
        function: str,
        method: str,
        treatment: str,
    ) -> None:
        self.function = function
        self.categories = context.categories
        self.method = method
        self.treatment = treatment
        self.weights = np.array([float(s.get("weight", "1")) for s in segments])
        self.parts = [
            (_segment_predicate(s, context.compiler), compile_model(_segment_model(s), context))
            for s in segments
        ]

    def evaluate(self, env: Env) -> Result:
        values, selected = [], []
        for predicate, model in self.parts:
            selected.append(predicate(env) == 1.0)
            result = model.evaluate(env)
            if result.probabilities is not None:
                values.append(result.probabilities)
            else:
                assert result.value is not None
                values.append(result.value[:, None])
        combined = combine_segments(
            np.stack(values), np.stack(selected), self.weights, self.method, self.treatment
        )
        if self.function == "regression":
            return Result(value=combined[:, 0])
        return Result(probabilities=combined)


class SelectFirstPlan(Plan):
    """The first segment whose predicate holds answers for the row."""

    def __init__(
        self, segments: list[ET.Element], context: Context, function: str, treatment: str
    ) -> None:
        self.function = function
        self.categories = context.categories
        self.treatment = treatment
        self.parts = [
            (_segment_predicate(s, context.compiler), compile_model(_segment_model(s), context))
            for s in segments
        ]

    def evaluate(self, env: Env) -> Result:
        chosen = np.zeros(env.n, dtype=bool)
        width = len(self.categories) if self.categories else 1
        out = np.full((env.n, width), math.nan)
        for predicate, model in self.parts:
            take = (predicate(env) == 1.0) & ~chosen
            if take.any():
                result = model.evaluate(env)
                if result.probabilities is not None:
                    value = result.probabilities
                else:
                    assert result.value is not None
                    value = result.value[:, None]
                if self.treatment != "returnMissing":
                    # continue / skipSegment: a missing answer lets the next segment try.
                    take &= ~np.isnan(value).any(axis=1)
                out[take] = value[take]
                chosen |= take
        if self.function == "regression":
            return Result(value=out[:, 0])
        return Result(probabilities=out)


class ChainPlan(Plan):
    """modelChain: each segment's Output fields become inputs of the segments after it."""

    def __init__(self, segments: list[ET.Element], context: Context, function: str) -> None:
        self.function = function
        self.categories = context.categories
        compiler = Compiler(context.compiler.types)
        self.steps: list[tuple[Plan, list[Output]]] = []
        for segment in segments:
            predicate = [e for e in segment if local(e.tag) in PREDICATES]
            if len(predicate) != 1 or local(predicate[0].tag) != "True":
                raise unsupported(segment, "a modelChain segment whose predicate is not True")
            element = _segment_model(segment)
            inner = Context(compiler, context.target, context.categories, context.data_fields)
            model = compile_model(element, inner)
            outputs = compile_outputs(element, model, compiler)
            self.steps.append((model, outputs))
        if self.steps[-1][0].function != function:
            raise unsupported(segments[-1], "the last segment's function differs from the chain's")

    def evaluate(self, env: Env) -> Result:
        env = env.copy()
        result = Result()
        for model, outputs in self.steps:
            result = model.evaluate(env)
            for output in outputs:
                env.columns[output.name] = output.fn(env, result)
        return result

    def one(self, values: dict[str, Any]) -> Any:
        values = dict(values)
        result = None
        for model, outputs in self.steps:
            result = model.one(values)
            if result is None:
                return None
            for output in outputs:
                if output.one is None:
                    return None
                values[output.name] = output.one(values, result)
        return result

    def emit_one(self, src: Source, inputs: Mapping[str, Local]) -> str | None:
        inputs = dict(inputs)
        result = None
        for model, outputs in self.steps:
            result = model.emit_one(src, inputs)
            if result is None:
                return None
            for output in outputs:
                code = output.emit(src, result, inputs)
                if code is None:
                    return None
                inputs[output.name] = src.assign(code, "o")
        return result


OutputFn = Callable[[Env, Result], np.ndarray]


@dataclass(frozen=True)
class Output:
    """An OutputField a later chain segment reads: batch form, and one-record form or None."""

    name: str
    fn: OutputFn
    one: Callable[[dict[str, Any], Any], Any] | None
    # what ``one`` computes, for generated code: ("value",) the model's answer, ("item", j) its
    # j-th probability, ("label", categories) its label, ("expression", shape) an expression
    shape: tuple[Any, ...] | None = None

    def emit(self, src: Source, result: str, inputs: Mapping[str, Local]) -> str | None:
        """Source for ``one`` of the model's answer in the local ``result``; None if none."""
        if self.one is None or self.shape is None:
            return None
        kind = self.shape[0]
        if kind == "value":
            return result
        if kind == "item":
            return f"{result}[{self.shape[1]}]"
        if kind == "label":
            labels = src.bind(label_from_probabilities, "label")
            return f"{labels}({result}, {src.bind(self.shape[1], 'categories')})"
        if kind == "expression":
            return src.expression(self.shape[1], inputs)
        return None


def _predicted_value(env: Env, result: Result) -> np.ndarray:
    assert result.value is not None
    return result.value


def _probability(j: int) -> OutputFn:
    def fn(env: Env, result: Result) -> np.ndarray:
        assert result.probabilities is not None
        return result.probabilities[:, j]

    return fn


def _same_value(values: dict[str, Any], result: Any) -> Any:
    return result


def _item(j: int) -> Callable[[dict[str, Any], Any], Any]:
    return lambda values, result: result[j]


def _transformed_one(one: OneFn | None) -> Callable[[dict[str, Any], Any], Any] | None:
    if one is None:
        return None
    return lambda values, result: one(values)


def _label_one(categories: list[str]) -> Callable[[dict[str, Any], Any], Any]:
    def label(values: dict[str, Any], probabilities: list[float]) -> Any:
        return label_from_probabilities(probabilities, categories)

    return label


def _transformed(expression: Fn) -> OutputFn:
    def fn(env: Env, result: Result) -> np.ndarray:
        return expression(env)

    return fn


def compile_outputs(element: ET.Element, model: Plan, compiler: Compiler) -> list[Output]:
    """A segment's OutputFields, as columns the following segments may read."""
    output = child(element, "Output")
    if output is None:
        return []
    compiled: list[Output] = []
    for output_field in children(output, "OutputField"):
        name = output_field.get("name", "")
        feature = output_field.get("feature", "predictedValue")
        if feature == "predictedValue":
            if model.function == "regression":
                compiled.append(Output(name, _predicted_value, _same_value, ("value",)))
                compiler.types[name] = FieldType(NUM, "double")
            else:
                categories = model.categories or []

                def label(env: Env, r: Result, categories: list[str] = categories) -> np.ndarray:
                    assert r.probabilities is not None
                    return labels_from_probabilities(r.probabilities, categories)

                compiled.append(Output(name, label, _label_one(categories), ("label", categories)))
                compiler.types[name] = FieldType(STR, "string")
        elif feature == "probability":
            value = output_field.get("value")
            if model.categories is None or value not in model.categories:
                raise unsupported(output_field, f"probability of unknown category {value!r}")
            j = model.categories.index(value)
            compiled.append(Output(name, _probability(j), _item(j), ("item", j)))
            compiler.types[name] = FieldType(NUM, "double")
        elif feature == "transformedValue":
            expression = [e for e in output_field if local(e.tag) not in ("Extension",)]
            if len(expression) != 1:
                raise unsupported(output_field, "transformedValue without one expression")
            expr = compiler.expression(expression[0])
            compiled.append(
                Output(
                    name,
                    _transformed(expr.fn),
                    _transformed_one(expr.one),
                    ("expression", expr.shape),
                )
            )
            compiler.types[name] = FieldType(expr.kind, "double" if expr.kind == NUM else "string")
        else:
            raise unsupported(output_field, f"feature {feature!r}")
    return compiled


# --- the top-level mining schema: validity, outliers, invalid and missing treatment ------------
@dataclass
class FieldTreatment:
    name: str
    kind: str
    dtype: str
    valid: Callable[[np.ndarray], np.ndarray] | None  # mask of valid (non-missing) values
    invalid: str  # returnInvalid | asIs | asMissing | asValue
    invalid_replacement: object
    outliers: str  # asIs | asMissingValues | asExtremeValues
    low: float
    high: float
    missing_values: set[object]  # DataField Values with property="missing"

    intervals: list[tuple[str, str, str]] = field(default_factory=list)

    def describe_valid(self) -> str:
        brackets = {"closedClosed": "[]", "closedOpen": "[)", "openClosed": "(]", "openOpen": "()"}
        return " or ".join(
            f"{brackets.get(c, '[]')[0]}{lo}, {hi}{brackets.get(c, '[]')[1]}"
            for c, lo, hi in self.intervals
        )

    @property
    def has_work(self) -> bool:
        return bool(self.missing_values) or self.valid is not None or self.outliers != "asIs"


def compile_field_treatments(
    model: ET.Element, data_fields: dict[str, ET.Element]
) -> list[FieldTreatment]:
    schema = child(model, "MiningSchema")
    treatments: list[FieldTreatment] = []
    if schema is None:
        return treatments
    for mining_field in children(schema, "MiningField"):
        if mining_field.get("usageType", "active") != "active":
            continue
        name = mining_field.get("name", "")
        data_field = data_fields[name]
        dtype = data_field.get("dataType", "string")
        kind = NUM if dtype in ("double", "float", "integer", "boolean") else STR
        intervals = children(data_field, "Interval")
        valid = None
        if intervals and kind == NUM:
            from ._expr import _interval_mask

            masks = [_interval_mask(i) for i in intervals]

            def valid_mask(
                x: np.ndarray, masks: list[Callable[[np.ndarray], np.ndarray]] = masks
            ) -> np.ndarray:
                out = np.zeros(len(x), dtype=bool)
                for m in masks:
                    out |= m(x)
                return out

            valid = valid_mask
        invalid = mining_field.get("invalidValueTreatment", "returnInvalid")
        if invalid not in ("returnInvalid", "asIs", "asMissing", "asValue"):
            raise unsupported(mining_field, f"invalidValueTreatment {invalid!r}")
        outliers = mining_field.get("outliers", "asIs")
        if outliers not in ("asIs", "asMissingValues", "asExtremeValues"):
            raise unsupported(mining_field, f"outliers {outliers!r}")
        replacement = mining_field.get("invalidValueReplacement")
        treatments.append(
            FieldTreatment(
                name=name,
                kind=kind,
                dtype=dtype,
                valid=valid,
                invalid=invalid,
                invalid_replacement=parse_scalar(replacement, dtype) if replacement else None,
                outliers=outliers,
                low=float(mining_field.get("lowValue", "-inf")),
                high=float(mining_field.get("highValue", "inf")),
                intervals=[
                    (
                        i.get("closure", "closedClosed"),
                        i.get("leftMargin", "-inf"),
                        i.get("rightMargin", "inf"),
                    )
                    for i in intervals
                ],
                missing_values={
                    parse_scalar(v.get("value", ""), dtype)
                    for v in children(data_field, "Value")
                    if v.get("property") == "missing"
                },
            )
        )
    return treatments


def apply_field_treatments(
    env: Env, treatments: list[FieldTreatment], model: str, row_offset: int = 0
) -> None:
    """Outliers and invalid values of the input fields, before missing-value replacement."""
    problems: list[Problem] = []
    for t in treatments:
        column = env.columns[t.name]
        if t.missing_values:
            marked = np.fromiter(
                (v in t.missing_values for v in column.tolist()), dtype=bool, count=env.n
            )
            if marked.any():
                column = column.copy()
                column[marked] = math.nan if t.kind == NUM else None
        bad = np.zeros(env.n, dtype=bool)
        if t.kind == NUM and t.valid is not None:
            present = ~np.isnan(column)
            bad = present & ~t.valid(column)
            if bad.any():
                column = column.copy()
                if t.invalid == "returnInvalid":
                    for row in np.flatnonzero(bad)[:MAX_DETAILS]:
                        problems.append(
                            Problem(
                                row_offset + int(row),
                                t.name,
                                f"{float(column[row])!r} is outside the valid range "
                                f"{t.describe_valid()}",
                                float(column[row]),
                            )
                        )
                elif t.invalid == "asMissing":
                    column[bad] = math.nan
                elif t.invalid == "asValue":
                    column[bad] = t.invalid_replacement
        if t.kind == NUM and t.outliers != "asIs":
            # Outlier treatment applies to valid values only; invalid ones were handled above.
            with np.errstate(invalid="ignore"):
                low, high = (column < t.low) & ~bad, (column > t.high) & ~bad
            if low.any() or high.any():
                column = column.copy()
                if t.outliers == "asMissingValues":
                    column[low | high] = math.nan
                else:
                    column[low] = t.low
                    column[high] = t.high
        env.columns[t.name] = column
    if problems:
        from .._schema import invalid_input_error

        raise invalid_input_error(
            problems,
            model,
            "The PMML declares these values invalid (invalidValueTreatment=returnInvalid).",
        )

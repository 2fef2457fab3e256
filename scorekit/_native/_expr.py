"""Vectorised PMML expressions and predicates, compiled once into closures over numpy arrays.

Every value column is one of two kinds:
- "num": float64, NaN for missing. Integers, doubles, floats (rounded to float32 precision, as
  PMML's dataType="float" requires) and booleans (1.0/0.0) all use it.
- "str": an object array of str, None for missing.
Predicates and boolean functions return "num" columns holding 1.0 (true), 0.0 (false) or NaN
(unknown), so PMML's three-valued logic falls out of NaN arithmetic and explicit masks.
"""

from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import UnsupportedModelError
from .._pmml_header import child, children, local
from ._source import Shape, ieee_divide

NUM = "num"
STR = "str"
NUMERIC_TYPES = ("double", "float", "integer", "boolean")


class Env:
    """The columns visible to an expression: data fields, derived fields, earlier outputs.

    ``codes`` holds, for categorical input fields, each row's index into the field's categories
    (-1 for missing) as validation computed it, so lookups by category are numpy gathers.
    """

    def __init__(
        self,
        n_rows: int,
        columns: dict[str, np.ndarray] | None = None,
        codes: dict[str, tuple[np.ndarray, tuple[Any, ...]]] | None = None,
    ) -> None:
        self.n = n_rows
        self.columns: dict[str, np.ndarray] = dict(columns or {})
        self.codes: dict[str, tuple[np.ndarray, tuple[Any, ...]]] = dict(codes or {})

    def copy(self) -> Env:
        return Env(self.n, self.columns, self.codes)


Fn = Callable[[Env], np.ndarray]
# The one-record form of an expression: field values (floats with NaN, str or None) -> value.
OneFn = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Expr:
    kind: str  # NUM or STR
    fn: Fn
    one: OneFn | None = None  # None: no one-record form; the batch form serves single records
    shape: Shape | None = None  # what ``one`` computes, for generated code (see _source)


@dataclass(frozen=True)
class FieldType:
    kind: str
    dtype: str  # the PMML dataType: double, float, integer, string, boolean


def unsupported(element: ET.Element | str, detail: str = "") -> UnsupportedModelError:
    name = element if isinstance(element, str) else local(element.tag)
    extra = f" ({detail})" if detail else ""
    return UnsupportedModelError(
        f"the native engine does not support PMML element {name}{extra}; "
        "score this model with engine='pypmml' instead"
    )


_SCALAR_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": ieee_divide,
}


def _scalar_binary(op: Callable[[float, float], float], left: OneFn, right: OneFn) -> OneFn:
    return lambda values: op(left(values), right(values))


def kind_of(dtype: str | None) -> str:
    return NUM if (dtype or "string") in NUMERIC_TYPES else STR


def parse_scalar(text: str | None, dtype: str) -> Any:
    """A PMML value string as a column value of ``dtype`` (float for numeric kinds)."""
    if text is None:
        return math.nan if kind_of(dtype) == NUM else None
    if dtype == "boolean":
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return 1.0
        if lowered in ("false", "0"):
            return 0.0
        raise unsupported("value", f"{text!r} is not a boolean")
    if kind_of(dtype) == NUM:
        value = float(text)
        return float(np.float32(value)) if dtype == "float" else value
    return text


def to_float32_precision(column: np.ndarray) -> np.ndarray:
    return column.astype(np.float32).astype(np.float64)


_NONE = np.array(None, dtype=object)  # a 0-d array of None, to compare object columns with


def missing_mask(column: np.ndarray) -> np.ndarray:
    if column.dtype == object:  # text: None is missing (numpy compares each element in C)
        return np.asarray(np.equal(column, _NONE), dtype=bool)
    return np.isnan(column)


def full(env: Env, value: Any, kind: str) -> np.ndarray:
    if kind == NUM:
        return np.full(env.n, value, dtype=np.float64)
    column = np.empty(env.n, dtype=object)
    column[:] = [value] * env.n
    return column


def compare(op: str, left: np.ndarray, right: Any) -> np.ndarray:
    """Three-valued comparison of a column with a column or scalar: 1.0, 0.0, or NaN if missing."""
    unknown = missing_mask(left)
    if isinstance(right, np.ndarray):
        unknown = unknown | missing_mask(right)
    elif right is None or (isinstance(right, float) and math.isnan(right)):
        unknown = np.ones(len(left), dtype=bool)
    with np.errstate(invalid="ignore"):
        if left.dtype == object:
            result = _OBJECT_COMPARE[op](left, right)
        else:
            result = _NUMERIC_COMPARE[op](left, right)
    out = np.asarray(result, dtype=np.float64)
    out[unknown] = math.nan
    return out


_NUMERIC_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "equal": np.equal,
    "notEqual": np.not_equal,
    "lessThan": np.less,
    "lessOrEqual": np.less_equal,
    "greaterThan": np.greater,
    "greaterOrEqual": np.greater_equal,
}
_OBJECT_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "equal": lambda a, b: a == b,
    "notEqual": lambda a, b: a != b,
    "lessThan": lambda a, b: _elementwise(a, b, lambda x, y: x < y),
    "lessOrEqual": lambda a, b: _elementwise(a, b, lambda x, y: x <= y),
    "greaterThan": lambda a, b: _elementwise(a, b, lambda x, y: x > y),
    "greaterOrEqual": lambda a, b: _elementwise(a, b, lambda x, y: x >= y),
}


def _elementwise(a: np.ndarray, b: Any, op: Callable[[Any, Any], bool]) -> np.ndarray:
    right = b if isinstance(b, np.ndarray) else [b] * len(a)
    return np.array(
        [x is not None and y is not None and op(x, y) for x, y in zip(a, right, strict=True)],
        dtype=bool,
    )


def logical_and(values: list[np.ndarray]) -> np.ndarray:
    """PMML and: false if any false, else unknown if any unknown, else true."""
    stacked = np.vstack(values)
    any_false = (stacked == 0.0).any(axis=0)
    any_unknown = np.isnan(stacked).any(axis=0)
    return np.where(any_false, 0.0, np.where(any_unknown, math.nan, 1.0))


def logical_or(values: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(values)
    any_true = (stacked == 1.0).any(axis=0)
    any_unknown = np.isnan(stacked).any(axis=0)
    return np.where(any_true, 1.0, np.where(any_unknown, math.nan, 0.0))


def logical_xor(values: list[np.ndarray]) -> np.ndarray:
    stacked = np.vstack(values)
    unknown = np.isnan(stacked).any(axis=0)
    parity = np.nansum(stacked, axis=0) % 2
    return np.where(unknown, math.nan, parity)


def surrogate(values: list[np.ndarray]) -> np.ndarray:
    """The first known value among the alternatives."""
    out = values[-1].copy()
    for value in reversed(values[:-1]):
        out = np.where(np.isnan(value), out, value)
    return out


_ARRAY_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def parse_array(element: ET.Element) -> list[str]:
    """The values of a PMML Array: whitespace-separated, with "quoted strings"."""
    return [
        match.group(1).replace('\\"', '"') if match.group(1) is not None else match.group(2)
        for match in _ARRAY_TOKEN.finditer(element.text or "")
    ]


class Compiler:
    """Compiles expressions and predicates against the types of the fields in scope."""

    def __init__(self, types: dict[str, FieldType]) -> None:
        self.types = dict(types)

    def field_type(self, name: str, where: str) -> FieldType:
        if name not in self.types:
            raise unsupported(where, f"it refers to unknown field {name!r}")
        return self.types[name]

    # --- expressions ---------------------------------------------------------------------------
    def expression(self, element: ET.Element) -> Expr:
        tag = local(element.tag)
        method = getattr(self, f"_expr_{tag}", None)
        if method is None:
            raise unsupported(element)
        expr: Expr = method(element)
        return expr

    def _with_missing_to(self, element: ET.Element, expr: Expr, dtype: str | None = None) -> Expr:
        mapped = element.get("mapMissingTo")
        if mapped is None:
            return expr
        value = parse_scalar(mapped, dtype or ("double" if expr.kind == NUM else "string"))
        inner = expr.fn

        def fn(env: Env) -> np.ndarray:
            out = inner(env)
            mask = missing_mask(out)
            if mask.any():
                out = out.copy()
                out[mask] = value
            return out

        return Expr(expr.kind, fn)

    def _expr_Constant(self, element: ET.Element) -> Expr:
        dtype = element.get("dataType")
        text = element.text or ""
        if dtype is None:
            try:
                float(text)
                dtype = "double"
            except ValueError:
                dtype = "string"
        missing = element.get("missing") == "true"
        kind = kind_of(dtype)
        value = (math.nan if kind == NUM else None) if missing else parse_scalar(text, dtype)
        return Expr(
            kind, lambda env: full(env, value, kind), lambda values: value, ("constant", value)
        )

    def _expr_FieldRef(self, element: ET.Element) -> Expr:
        name = element.get("field", "")
        ftype = self.field_type(name, "FieldRef")
        expr = Expr(
            ftype.kind,
            lambda env: env.columns[name],
            lambda values: values[name],
            ("field", name),
        )
        if element.get("mapMissingTo") is not None:
            return self._with_missing_to(element, Expr(expr.kind, expr.fn), ftype.dtype)
        return expr

    def _expr_NormContinuous(self, element: ET.Element) -> Expr:
        name = element.get("field", "")
        self.field_type(name, "NormContinuous")
        points = [
            (float(p.get("orig", "nan")), float(p.get("norm", "nan")))
            for p in children(element, "LinearNorm")
        ]
        if len(points) < 2:
            raise unsupported(element, "it needs at least two LinearNorm points")
        orig = np.array([p[0] for p in points])
        norm = np.array([p[1] for p in points])
        outliers = element.get("outliers", "asIs")

        def fn(env: Env) -> np.ndarray:
            x = env.columns[name]
            out = np.interp(x, orig, norm)
            low, high = x < orig[0], x > orig[-1]
            if outliers == "asIs":
                out[low] = norm[0] + (x[low] - orig[0]) * (norm[1] - norm[0]) / (orig[1] - orig[0])
                out[high] = norm[-2] + (x[high] - orig[-2]) * (norm[-1] - norm[-2]) / (
                    orig[-1] - orig[-2]
                )
            elif outliers == "asMissingValues":
                out[low | high] = math.nan
            out[np.isnan(x)] = math.nan
            return out

        return self._with_missing_to(element, Expr(NUM, fn), "double")

    def _expr_NormDiscrete(self, element: ET.Element) -> Expr:
        name = element.get("field", "")
        ftype = self.field_type(name, "NormDiscrete")
        value = parse_scalar(element.get("value"), ftype.dtype)
        return self._with_missing_to(
            element, Expr(NUM, lambda env: compare("equal", env.columns[name], value)), "double"
        )

    def _expr_Discretize(self, element: ET.Element) -> Expr:
        name = element.get("field", "")
        self.field_type(name, "Discretize")
        dtype = element.get("dataType", "string")
        kind = kind_of(dtype)
        bins = []
        for bin_element in children(element, "DiscretizeBin"):
            interval = child(bin_element, "Interval")
            if interval is None:
                raise unsupported(bin_element, "it has no Interval")
            bins.append(
                (_interval_mask(interval), parse_scalar(bin_element.get("binValue"), dtype))
            )
        default = parse_scalar(element.get("defaultValue"), dtype)

        def fn(env: Env) -> np.ndarray:
            x = env.columns[name]
            out = full(env, default, kind)
            assigned = np.zeros(env.n, dtype=bool)
            for mask_of, value in bins:
                hit = mask_of(x) & ~assigned
                out[hit] = value
                assigned |= hit
            out[np.isnan(x)] = math.nan if kind == NUM else None
            return out

        return self._with_missing_to(element, Expr(kind, fn), dtype)

    def _expr_MapValues(self, element: ET.Element) -> Expr:
        pairs = [
            (p.get("field", ""), p.get("column", "")) for p in children(element, "FieldColumnPair")
        ]
        for field_name, _ in pairs:
            self.field_type(field_name, "MapValues")
        output_column = element.get("outputColumn", "")
        dtype = element.get("dataType", "string")
        kind = kind_of(dtype)
        table = child(element, "InlineTable")
        if table is None:
            raise unsupported(element, "only an InlineTable is supported")
        key_types = [self.types[f].dtype for f, _ in pairs]
        mapping: dict[tuple[Any, ...], Any] = {}
        for row in children(table, "row"):
            cells = {local(c.tag): (c.text or "") for c in row}
            key = tuple(
                parse_scalar(cells.get(column), key_types[i]) for i, (_, column) in enumerate(pairs)
            )
            mapping.setdefault(key, parse_scalar(cells.get(output_column), dtype))
        default = parse_scalar(element.get("defaultValue"), dtype)
        missing_value = math.nan if kind == NUM else None

        def fn(env: Env) -> np.ndarray:
            keys = list(zip(*(env.columns[f].tolist() for f, _ in pairs), strict=True))
            out = full(env, default, kind)
            for i, key in enumerate(keys):
                if any(k is None or (isinstance(k, float) and math.isnan(k)) for k in key):
                    out[i] = missing_value
                else:
                    out[i] = mapping.get(key, default)
            return out

        return self._with_missing_to(element, Expr(kind, fn), dtype)

    def _expr_Apply(self, element: ET.Element) -> Expr:
        function = element.get("function", "")
        args = [self.expression(a) for a in element if local(a.tag) != "Extension"]
        if function not in _FUNCTIONS:
            raise unsupported("Apply", f"function {function!r}")
        kind, build = _FUNCTIONS[function]
        inner = build(args)
        result_kind = args[1].kind if function == "if" and len(args) > 1 else kind
        default = element.get("defaultValue")
        mapped = element.get("mapMissingTo")
        rtype = "double" if result_kind == NUM else "string"
        default_value = parse_scalar(default, rtype) if default is not None else None
        mapped_value = parse_scalar(mapped, rtype) if mapped is not None else None
        if function in ("isMissing", "isNotMissing"):
            mapped_value = None

        def fn(env: Env) -> np.ndarray:
            if mapped_value is not None:
                inputs = [a.fn(env) for a in args]
                any_missing = np.zeros(env.n, dtype=bool)
                for column in inputs:
                    any_missing |= missing_mask(column)
                out = inner(env)
                if any_missing.any():
                    out = out.copy()
                    out[any_missing] = mapped_value
            else:
                out = inner(env)
            if default_value is not None:
                mask = missing_mask(out)
                if mask.any():
                    out = out.copy()
                    out[mask] = default_value
            return out

        one = None
        shape: Shape | None = None
        operator = _SCALAR_ARITHMETIC.get(function)
        scalar_args = [a.one for a in args if a.one is not None]
        if operator and mapped is None and default is None and len(scalar_args) == len(args) == 2:
            one = _scalar_binary(operator, scalar_args[0], scalar_args[1])
            if args[0].shape is not None and args[1].shape is not None:
                shape = ("binary", function, args[0].shape, args[1].shape)
        return Expr(result_kind, fn, one, shape)

    # --- predicates ----------------------------------------------------------------------------
    def predicate(self, element: ET.Element) -> Fn:
        tag = local(element.tag)
        if tag == "True":
            return lambda env: np.ones(env.n)
        if tag == "False":
            return lambda env: np.zeros(env.n)
        if tag == "SimplePredicate":
            name = element.get("field", "")
            ftype = self.field_type(name, "SimplePredicate")
            op = element.get("operator", "")
            if op == "isMissing":
                return lambda env: missing_mask(env.columns[name]).astype(np.float64)
            if op == "isNotMissing":
                return lambda env: (~missing_mask(env.columns[name])).astype(np.float64)
            if op not in _NUMERIC_COMPARE:
                raise unsupported(element, f"operator {op!r}")
            value = parse_scalar(element.get("value"), ftype.dtype)
            return lambda env: compare(op, env.columns[name], value)
        if tag == "SimpleSetPredicate":
            name = element.get("field", "")
            ftype = self.field_type(name, "SimpleSetPredicate")
            array = child(element, "Array")
            if array is None:
                raise unsupported(element, "it has no Array")
            members = {parse_scalar(v, ftype.dtype) for v in parse_array(array)}
            negate = element.get("booleanOperator") == "isNotIn"
            return lambda env: set_membership(env.columns[name], members, negate)
        if tag == "CompoundPredicate":
            parts = [self.predicate(c) for c in element if local(c.tag) != "Extension"]
            operator = element.get("booleanOperator", "")
            combine = {
                "and": logical_and,
                "or": logical_or,
                "xor": logical_xor,
                "surrogate": surrogate,
            }.get(operator)
            if combine is None:
                raise unsupported(element, f"booleanOperator {operator!r}")
            return lambda env: combine([p(env) for p in parts])
        raise unsupported(element)


def set_membership(column: np.ndarray, members: set[Any], negate: bool) -> np.ndarray:
    inside = np.fromiter((v in members for v in column.tolist()), dtype=bool, count=len(column))
    out = (inside != negate).astype(np.float64)
    out[missing_mask(column)] = math.nan
    return out


def _interval_mask(interval: ET.Element) -> Callable[[np.ndarray], np.ndarray]:
    closure = interval.get("closure", "closedClosed")
    left = float(interval.get("leftMargin", "-inf"))
    right = float(interval.get("rightMargin", "inf"))
    left_op = np.greater_equal if closure.startswith("closed") else np.greater
    right_op = np.less_equal if closure.endswith("Closed") else np.less

    def mask(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.asarray(left_op(x, left) & right_op(x, right))

    return mask


# --- built-in functions --------------------------------------------------------------------------
Builder = Callable[[list[Expr]], Fn]


def _reduce(op: Callable[[np.ndarray], np.ndarray]) -> Builder:
    """min, max, sum, avg, product: missing arguments are skipped; all missing gives missing."""

    def build(args: list[Expr]) -> Fn:
        def fn(env: Env) -> np.ndarray:
            stacked = np.vstack([a.fn(env) for a in args])
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                out = np.asarray(op(stacked), dtype=np.float64)
            out[np.isnan(stacked).all(axis=0)] = math.nan
            return out

        return fn

    return build


def _unary(op: Callable[[np.ndarray], np.ndarray]) -> Builder:
    def build(args: list[Expr]) -> Fn:
        (arg,) = args
        return lambda env: _quiet(op, arg.fn(env))

    return build


def _quiet(op: Callable[..., np.ndarray], *values: np.ndarray) -> np.ndarray:
    # Floating-point warnings are silenced once per batch by the scorer (np.errstate is costly).
    return np.asarray(op(*values), dtype=np.float64)


def _arith(op: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Builder:
    def build(args: list[Expr]) -> Fn:
        left, right = args
        return lambda env: _quiet(op, left.fn(env), right.fn(env))

    return build


def _comparison(op: str) -> Builder:
    """Comparison functions with a missing argument give false (notEqual: true), and two missing
    values are equal, as the reference evaluator does. A SimplePredicate is unknown instead."""
    when_missing = 1.0 if op == "notEqual" else 0.0
    when_both_missing = {"equal": 1.0, "notEqual": 0.0}.get(op, 0.0)

    def build(args: list[Expr]) -> Fn:
        left, right = args

        def fn(env: Env) -> np.ndarray:
            a, b = left.fn(env), right.fn(env)
            out = np.nan_to_num(compare(op, a, b), nan=when_missing)
            out[missing_mask(a) & missing_mask(b)] = when_both_missing
            return out

        return fn

    return build


def _logical(combine: Callable[[list[np.ndarray]], np.ndarray]) -> Builder:
    def build(args: list[Expr]) -> Fn:
        return lambda env: combine([a.fn(env) for a in args])

    return build


def _not(args: list[Expr]) -> Fn:
    (arg,) = args
    return lambda env: 1.0 - arg.fn(env)


def _is_missing(negate: bool) -> Builder:
    def build(args: list[Expr]) -> Fn:
        (arg,) = args
        return lambda env: (missing_mask(arg.fn(env)) != negate).astype(np.float64)

    return build


def _is_in(negate: bool) -> Builder:
    def build(args: list[Expr]) -> Fn:
        value, *members = args

        def fn(env: Env) -> np.ndarray:
            column = value.fn(env)
            out = np.zeros(env.n)
            for member in members:
                out = np.maximum(out, np.nan_to_num(compare("equal", column, member.fn(env))))
            # A missing value is in no set (IEEE-style, as the reference evaluator).
            return ((out == 1.0) != negate).astype(np.float64)

        return fn

    return build


def _if(args: list[Expr]) -> Fn:
    condition, then = args[0], args[1]
    otherwise = args[2] if len(args) > 2 else None

    def fn(env: Env) -> np.ndarray:
        test = condition.fn(env)
        a = then.fn(env)
        if otherwise is not None:
            b = otherwise.fn(env)
        else:
            b = full(env, math.nan if then.kind == NUM else None, then.kind)
        # A missing condition takes the else branch, as the reference evaluator does.
        return np.where(test == 1.0, a, b)

    return fn


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5)


def _threshold(args: list[Expr]) -> Fn:
    value, limit = args
    return lambda env: np.nan_to_num(compare("greaterThan", value.fn(env), limit.fn(env)))


def _string_map(op: Callable[[str], str]) -> Builder:
    def build(args: list[Expr]) -> Fn:
        (arg,) = args

        def fn(env: Env) -> np.ndarray:
            column = arg.fn(env)
            out = np.empty(env.n, dtype=object)
            out[:] = [None if v is None else op(v) for v in column.tolist()]
            return out

        return fn

    return build


def _concat(args: list[Expr]) -> Fn:
    def fn(env: Env) -> np.ndarray:
        columns = [a.fn(env).tolist() for a in args]
        out = np.empty(env.n, dtype=object)
        out[:] = [
            None
            if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values)
            else "".join(as_text(v) for v in values)
            for values in zip(*columns, strict=True)
        ]
        return out

    return fn


def as_text(value: Any) -> str:
    """A value as PMML text: integral floats without a decimal point."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def logistic(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


_FUNCTIONS: dict[str, tuple[str, Builder]] = {
    "+": (NUM, _arith(np.add)),
    "-": (NUM, _arith(np.subtract)),
    "*": (NUM, _arith(np.multiply)),
    "/": (NUM, _arith(np.divide)),
    "pow": (NUM, _arith(np.power)),
    "modulo": (NUM, _arith(np.mod)),
    "atan2": (NUM, _arith(np.arctan2)),
    "hypot": (NUM, _arith(np.hypot)),
    "min": (NUM, _reduce(lambda s: np.nanmin(s, axis=0))),
    "max": (NUM, _reduce(lambda s: np.nanmax(s, axis=0))),
    "sum": (NUM, _reduce(lambda s: np.nansum(s, axis=0))),
    "avg": (NUM, _reduce(lambda s: np.nanmean(s, axis=0))),
    "product": (NUM, _reduce(lambda s: np.nanprod(s, axis=0))),
    "log10": (NUM, _unary(np.log10)),
    "ln": (NUM, _unary(np.log)),
    "ln1p": (NUM, _unary(np.log1p)),
    "exp": (NUM, _unary(np.exp)),
    "expm1": (NUM, _unary(np.expm1)),
    "sqrt": (NUM, _unary(np.sqrt)),
    "abs": (NUM, _unary(np.abs)),
    "floor": (NUM, _unary(np.floor)),
    "ceil": (NUM, _unary(np.ceil)),
    "round": (NUM, _unary(_round_half_up)),
    "rint": (NUM, _unary(np.rint)),
    "sin": (NUM, _unary(np.sin)),
    "cos": (NUM, _unary(np.cos)),
    "tan": (NUM, _unary(np.tan)),
    "asin": (NUM, _unary(np.arcsin)),
    "acos": (NUM, _unary(np.arccos)),
    "atan": (NUM, _unary(np.arctan)),
    "sinh": (NUM, _unary(np.sinh)),
    "cosh": (NUM, _unary(np.cosh)),
    "tanh": (NUM, _unary(np.tanh)),
    "x-sigmoid": (NUM, _unary(logistic)),
    "threshold": (NUM, _threshold),
    "equal": (NUM, _comparison("equal")),
    "notEqual": (NUM, _comparison("notEqual")),
    "lessThan": (NUM, _comparison("lessThan")),
    "lessOrEqual": (NUM, _comparison("lessOrEqual")),
    "greaterThan": (NUM, _comparison("greaterThan")),
    "greaterOrEqual": (NUM, _comparison("greaterOrEqual")),
    "and": (NUM, _logical(logical_and)),
    "or": (NUM, _logical(logical_or)),
    "xor": (NUM, _logical(logical_xor)),
    "not": (NUM, _not),
    "isMissing": (NUM, _is_missing(False)),
    "isNotMissing": (NUM, _is_missing(True)),
    "isIn": (NUM, _is_in(False)),
    "isNotIn": (NUM, _is_in(True)),
    "if": (NUM, _if),
    "uppercase": (STR, _string_map(str.upper)),
    "lowercase": (STR, _string_map(str.lower)),
    "trimBlanks": (STR, _string_map(str.strip)),
    "concat": (STR, _concat),
}

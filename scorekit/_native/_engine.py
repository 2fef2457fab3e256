"""The native engine: a compiled PMML plan behind the Scorer protocol, verified at load."""

from __future__ import annotations

import math
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .._bundle import PMML_FILE, Bundle
from .._errors import UnsupportedModelError
from .._manifest import Manifest
from .._output import Scores, label_from_probabilities, labels_from_probabilities
from .._pmml_header import child, children, local, model_element, parse_pmml, parse_value
from .._schema import EXACT_INT, MISSING_TOKENS, Field
from .._scorer import OneAnswer
from ._expr import NUM, Compiler, Env, FieldType, as_text, kind_of, to_float32_precision
from ._models import (
    Context,
    apply_field_treatments,
    compile_field_treatments,
    compile_model,
    complete_env,
    complete_values,
    derived_fields,
    emit_derived,
    mining_replacements,
)
from ._source import Local, Source

# How score_values reads each field's value: a double, a double rounded to float32, or text.
_NUMBER, _FLOAT32, _TEXT = "number", "float32", "text"
DEFAULT_PRECISION = 1e-6
DEFAULT_ZERO_THRESHOLD = 1e-16


_FLOAT = struct.Struct("f")
_FLOAT32_WHOLE = float(2**24)  # every whole number up to this is exact in float32


def _to_float32(value: float) -> float:
    """value rounded to float32 as numpy rounds it (to nearest), without numpy's per-call cost;
    beyond float32's range it is +-inf, as numpy gives."""
    if value.is_integer() and -_FLOAT32_WHOLE <= value <= _FLOAT32_WHOLE:
        return value  # a float32 already: skip the rounding
    try:
        return float(_FLOAT.unpack(_FLOAT.pack(value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


class NativeScorer:
    engine = "native"

    def __init__(self, pmml: bytes, manifest: Manifest, where: str = PMML_FILE) -> None:
        self.manifest = manifest
        self.where = where
        root = parse_pmml(pmml, where)
        dictionary = child(root, "DataDictionary")
        if dictionary is None:
            raise UnsupportedModelError(f"{where} has no DataDictionary")
        data_fields = {f.get("name", ""): f for f in children(dictionary, "DataField")}
        types = {
            name: FieldType(kind_of(f.get("dataType")), f.get("dataType", "string"))
            for name, f in data_fields.items()
        }
        compiler = Compiler(types)
        transformations = child(root, "TransformationDictionary")
        self.global_fields = (
            derived_fields(transformations, compiler) if transformations is not None else []
        )
        model = model_element(root, where)
        self.treatments = compile_field_treatments(model, data_fields)
        self.active_treatments = [t for t in self.treatments if t.has_work]
        # Category codes from validation are usable where no treatment rewrites the field.
        # ...and whose values are not rounded to float32 (the manifest's categories are not).
        untouched = {t.name for t in self.treatments if not t.has_work and t.dtype != "float"}
        self._categories = {
            f.name: tuple(f.categories)
            for f in manifest.schema.fields
            if f.categories is not None and f.name in untouched
        }
        numeric = {t.name for t in self.treatments if t.kind == NUM}
        self._category_floats = {
            name: np.array([*(float(c) for c in categories), math.nan])
            for name, categories in self._categories.items()
            if name in numeric and all(isinstance(c, int | float) for c in categories)
        }
        self.replacements = mining_replacements(model, compiler)
        self._one_ready = False  # set once the model has passed its verification rows
        self.plan = compile_model(model, Context(compiler, None, None, data_fields), top_level=True)
        self.classification = self.plan.function == "classification"
        if self.classification != (manifest.task == "classification"):
            raise UnsupportedModelError(
                f"{where} is a {self.plan.function} model but the manifest says {manifest.task}"
            )
        self._order = self._class_order(model, data_fields)
        self._order_list = self._order.tolist()  # for one record: list indexes, not numpy ints
        self.verify(model)
        self._one_ready = not self.active_treatments and all(
            d.one is not None for d in self.global_fields
        )
        kinds = [
            (t.name, (_FLOAT32 if t.dtype == "float" else _NUMBER) if t.kind == NUM else _TEXT)
            for t in self.treatments
        ]
        self._numbers, self._float32s, self._texts = (
            tuple(name for name, kind in kinds if kind is wanted)
            for wanted in (_NUMBER, _FLOAT32, _TEXT)
        )

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> NativeScorer:
        return cls(bundle.read(PMML_FILE), bundle.manifest, f"{bundle.where}/{PMML_FILE}")

    def _class_order(self, model: ET.Element, data_fields: dict[str, ET.Element]) -> np.ndarray:
        """Column j of our output = column order[j] of the plan's probabilities."""
        if not self.classification:
            return np.empty(0, dtype=np.intp)
        categories = self.plan.categories or []
        target = self.manifest.target
        dtype = data_fields[target].get("dataType", "string") if target in data_fields else "string"
        parsed = [parse_value(dtype, c) for c in categories]
        classes = list(self.manifest.classes or [])
        if sorted(map(str, parsed)) != sorted(map(str, classes)):
            raise UnsupportedModelError(
                f"{self.where}: target categories {parsed} differ from the manifest's {classes}"
            )
        as_text = [str(p) for p in parsed]
        return np.array([as_text.index(str(c)) for c in classes], dtype=np.intp)

    def _env(self, batch: Mapping[str, np.ndarray]) -> Env:
        n = len(next(iter(batch.values()))) if batch else 0
        env = Env(n)
        codes_of = getattr(batch, "codes", {})
        for t in self.treatments:
            column = batch[t.name]
            if t.kind == NUM:
                floats = self._category_floats.get(t.name)
                if column.dtype == object and floats is not None and t.name in codes_of:
                    column = floats[codes_of[t.name]]  # code -1 (missing) takes the NaN at the end
                elif column.dtype == object:
                    column = np.array(
                        [math.nan if v is None else float(v) for v in column.tolist()],
                        dtype=np.float64,
                    )
                if t.dtype == "float":
                    column = to_float32_precision(column)
            elif column.dtype != object:
                text = np.empty(n, dtype=object)
                text[:] = [None if math.isnan(v) else as_text(v) for v in column.tolist()]
                column = text
            env.columns[t.name] = column
            codes = codes_of.get(t.name)
            categories = self._categories.get(t.name)
            if codes is not None and categories is not None:
                env.codes[t.name] = (codes, categories)
        if self.active_treatments:
            apply_field_treatments(
                env, self.active_treatments, self.manifest.ref, getattr(batch, "row_offset", 0)
            )
        complete_env(env, self.replacements, self.global_fields)
        return env

    def score_one(self, batch: Mapping[str, np.ndarray]) -> OneAnswer | None:
        """The first record of ``batch`` by the plan's one-record form: (prediction, class
        probabilities in the manifest's order, or None for a regression). None where the model
        has no one-record form; the caller then uses score()."""
        if not self._one_ready:
            return None
        return self.score_values({t.name: batch[t.name][0] for t in self.treatments})

    def score_values(self, prepared: Mapping[str, Any]) -> OneAnswer | None:
        """score_one for one record's values as InputSchema.prepare_one gives them."""
        if not self._one_ready:
            return None
        values: dict[str, Any] = {}
        missing = False
        # The fields kind by kind, each in a loop of its own: the fewest steps per field.
        for name in self._numbers:
            value = prepared[name]
            if value is None or value != value:
                values[name] = math.nan
                missing = True
            else:
                values[name] = float(value)
        for name in self._float32s:
            value = prepared[name]
            if value is None or value != value:
                values[name] = math.nan
                missing = True
                continue
            values[name] = _to_float32(float(value))
        for name in self._texts:
            value = prepared[name]
            if value is None or value != value:
                values[name] = None
                missing = True
            else:
                values[name] = value if isinstance(value, str) else as_text(value)
        return self._answer(values, missing)

    def _answer(self, values: dict[str, Any], missing: bool = False) -> OneAnswer | None:
        """score_values' last step: the plan's answer for the engine's values of one record."""
        if missing or self.global_fields:
            values = complete_values(values, self.replacements, self.global_fields)
        try:
            result = self.plan.one(values)
        except ArithmeticError:  # overflow or a zero divisor: numpy's IEEE answer is the batch's
            return None
        if result is None:
            return None
        if not self.classification:
            return float(result), None
        probabilities = [float(result[j]) for j in self._order_list]
        return label_from_probabilities(probabilities, self.manifest.classes or []), probabilities

    def record_scorer(
        self, keys: Sequence[str] | None = None
    ) -> Callable[[Mapping[str, Any]], OneAnswer | None] | None:
        """A function record -> ``score_values(schema.prepare_one(record, keys))`` (None where
        prepare_one declines), generated for this model where it can be: straight-line code
        reads, types and checks each field, without the two steps' loops and calls, and hands
        any record outside the common case (a missing value, a type other than float, int or
        str, an unknown category) to the two steps; elsewhere the two steps themselves. None
        where the model has no one-record form."""
        if not self._one_ready:
            return None
        schema = self.manifest.schema
        prepare_one = schema.prepare_one

        def general(record: Mapping[str, Any]) -> OneAnswer | None:
            values = prepare_one(record, keys)
            return self.score_values(values) if values is not None else None

        kinds = {name: _NUMBER for name in self._numbers}
        kinds.update((name, _FLOAT32) for name in self._float32s)
        kinds.update((name, _TEXT) for name in self._texts)
        generated = generate_record_scorer(
            schema.fields,
            list(keys or schema.names),
            kinds,
            general,
            self._answer,
            self._emit_answer,
        )
        return generated or general

    def _emit_answer(self, src: Source, inputs: Mapping[str, Local]) -> bool:
        """_answer for a record with no missing value (``inputs``: the fields' locals), written
        into ``src`` as the code that returns it; False where the plan can't be written."""
        inputs = dict(inputs)
        if self.global_fields and not emit_derived(src, self.global_fields, inputs):
            return False
        result = self.plan.emit_one(src, inputs)
        if result is None:
            return False
        if not self.classification:
            src.line(f"return float({result}), None")
            return True
        classes = list(self.manifest.classes or [])
        p = [src.fresh("p") for _ in self._order_list]
        for name, j in zip(p, self._order_list, strict=True):
            src.line(f"{name} = float({result}[{j}])")
        probabilities = f"[{', '.join(p)}]"
        if len(p) == 2 and len(classes) == 2:
            # label_from_probabilities, written out: no label for a NaN, a tie to the first class
            first, second = src.literal(classes[0]), src.literal(classes[1])
            src.line(f"if {p[0]} != {p[0]} or {p[1]} != {p[1]}: return None, {probabilities}")
            src.line(f"return ({second} if {p[1]} > {p[0]} else {first}), {probabilities}")
        else:
            label = src.bind(label_from_probabilities, "label")
            src.line(
                f"return {label}({probabilities}, {src.bind(classes, 'classes')}), {probabilities}"
            )
        return True

    def score(self, batch: Mapping[str, np.ndarray]) -> Scores:
        with np.errstate(all="ignore"):  # NaN and inf are values here, not warnings
            return self._score(batch)

    def _score(self, batch: Mapping[str, np.ndarray]) -> Scores:
        env = self._env(batch)
        result = self.plan.evaluate(env)
        if not self.classification:
            assert result.value is not None
            return Scores(np.asarray(result.value, dtype=np.float64))
        assert result.probabilities is not None
        probabilities = result.probabilities[:, self._order]
        return Scores(
            labels_from_probabilities(probabilities, self.manifest.classes or []), probabilities
        )

    def close(self) -> None:
        pass

    # --- ModelVerification -------------------------------------------------------------------
    def verify(self, model: ET.Element) -> None:
        """Score the PMML's embedded verification rows; refuse the model if any answer differs."""
        verification = child(model, "ModelVerification")
        if verification is None:
            return
        fields_element = child(verification, "VerificationFields")
        table = child(verification, "InlineTable")
        if fields_element is None or table is None:
            return
        spec = {
            f.get("field", ""): (
                # Columns may carry the InlineTable's namespace prefix, as in "data:Age".
                (f.get("column") or f.get("field") or "").rsplit(":", 1)[-1],
                float(f.get("precision", DEFAULT_PRECISION)),
                float(f.get("zeroThreshold", DEFAULT_ZERO_THRESHOLD)),
            )
            for f in children(fields_element, "VerificationField")
        }
        rows = [{local(c.tag): c.text for c in row} for row in children(table, "row")]
        if not rows:
            return
        schema = self.manifest.schema
        present = {name for row in rows for name in row}
        unreadable = sorted(f for f, (column, _, _) in spec.items() if column not in present)
        if unreadable:
            raise UnsupportedModelError(
                f"the verification rows of {self.where} have no column for {unreadable}; "
                "the native engine can't check itself against them, so it refuses the model. "
                "Use engine='pypmml'."
            )
        raw: dict[str, list[Any]] = {
            f.name: [row.get(spec.get(f.name, (f.name,))[0]) for row in rows] for f in schema.fields
        }
        try:
            scores = self.score(schema.prepare(raw, self.manifest.ref))
        except Exception as exc:
            raise UnsupportedModelError(
                f"the native engine could not score the verification rows of {self.where} "
                f"({type(exc).__name__}: {exc}); score this model with engine='pypmml'"
            ) from exc
        expected_outputs = self._verifiable_outputs(model)
        for field, (column, precision, zero) in spec.items():
            if field in schema.names or field not in expected_outputs:
                continue
            ours = expected_outputs[field](scores)
            for i, row in enumerate(rows):
                text = row.get(column)
                if text is None:
                    continue
                if not _agrees(ours[i], text, precision, zero):
                    raise UnsupportedModelError(
                        f"the native engine scores {self.where} differently from its "
                        f"verification row {i}: {field} is {ours[i]!r}, the PMML expects {text}. "
                        "Refusing to score it; use engine='pypmml'."
                    )

    def _verifiable_outputs(self, model: ET.Element) -> dict[str, Any]:
        classes = list(self.manifest.classes or [])
        outputs: dict[str, Any] = {}
        target = self.manifest.target
        outputs[target] = lambda s: s.prediction
        output = child(model, "Output")
        for output_field in children(output, "OutputField") if output is not None else []:
            name = output_field.get("name", "")
            feature = output_field.get("feature", "predictedValue")
            if feature == "probability" and self.classification:
                value = output_field.get("value")
                index = (
                    [str(c) for c in classes].index(str(value))
                    if str(value) in map(str, classes)
                    else None
                )
                if index is not None:
                    outputs[name] = lambda s, j=index: s.probabilities[:, j]
            elif feature == "predictedValue":
                outputs[name] = lambda s: s.prediction
        return outputs


def _agrees(ours: Any, text: str, precision: float, zero: float) -> bool:
    try:
        expected = float(text)
    except ValueError:
        return str(ours) == text
    if isinstance(ours, str):
        return ours == text
    if ours is None:
        return False
    actual = float(ours)
    if isinstance(ours, bool):
        return actual == expected
    if abs(expected) <= zero:
        return abs(actual) <= zero
    return abs(actual - expected) <= precision * abs(expected)


def _engine_value(kind: str, value: Any) -> Any:
    """A field's typed, present value as score_values reads it: a float, one rounded to float32,
    or text. Raises what float() raises for a value it can't read as a number."""
    if kind == _TEXT:
        return value if isinstance(value, str) else as_text(value)
    return _to_float32(float(value)) if kind == _FLOAT32 else float(value)


def generate_record_scorer(
    fields: Sequence[Field],
    keys: list[str],
    kinds: Mapping[str, str],
    general: Callable[[Mapping[str, Any]], OneAnswer | None],
    answer: Callable[[dict[str, Any]], OneAnswer | None],
    emit_answer: Callable[[Source, Mapping[str, Local]], bool] | None = None,
) -> Callable[[Mapping[str, Any]], OneAnswer | None] | None:
    """NativeScorer.record_scorer's code. For each field, in straight lines: ``record[key]``
    read as Field.read_one reads it and then as score_values does (``kinds``: _NUMBER,
    _FLOAT32 or _TEXT by field name; a field the model does not read is checked all the same);
    ``general(record)`` for a value outside the common case (a missing value, an infinity, an
    unknown category, a type read_one leaves to ``prepare``); ``answer(values)`` once every
    field is read. A category is one lookup of its raw spelling, straight to the value the
    engine reads. Where ``emit_answer`` writes the answer's code for the fields' locals, that
    code takes the place of the call to ``answer`` (see _source), an ArithmeticError in it
    handing the record to ``general``. None if a field is of a kind this does not cover, or a
    key is not a str."""
    if not set(kinds) <= {f.name for f in fields} or not all(type(k) is str for k in keys):
        return None  # a field the schema lacks (the two steps say so), or an odd key
    lines = ["def score(record):"]
    namespace: dict[str, Any] = {
        "GENERAL": general,
        "ANSWER": answer,
        "TO_FLOAT32": _to_float32,
        "MISSING_TOKENS": MISSING_TOKENS,
    }
    slow = "return GENERAL(record)"
    read: list[tuple[int, Field]] = []  # the fields the model reads, with their variables
    for i, (f, key) in enumerate(zip(fields, keys, strict=True)):
        kind = kinds.get(f.name)
        lines.append(f"    x = record[{key!r}]")
        if f.is_continuous:
            if kind == _TEXT:
                return None
            lines += [
                "    if type(x) is float:",
                f"        if x - x != 0.0: {slow}",  # NaN (missing) or an infinity
                f"    elif type(x) is int and -{EXACT_INT} <= x <= {EXACT_INT}:",
                "        x = float(x)",
                "    else:",
                f"        {slow}",
            ]
            if kind == _FLOAT32:
                lines.append("    x = TO_FLOAT32(x)")
        elif f.categories is None:
            if f.dtype != "string" or kind not in (_TEXT, None):
                return None
            lines.append(f"    if type(x) is not str or x in MISSING_TOKENS: {slow}")
        else:
            # raw spelling -> the value the engine reads (read_one's lookup, then kinds'); a
            # category that is itself missing (None, NaN), or that the engine can't read as
            # it reads the field, is left to the two steps
            lookup: dict[Any, Any] = {}
            for raw, (category, _) in f._lookup.items():
                if category is None or category != category:
                    continue
                try:
                    lookup[raw] = category if kind is None else _engine_value(kind, category)
                except (ValueError, TypeError, OverflowError):
                    continue
            namespace[f"LOOKUP{i}"] = lookup
            # read_one looks up any hashable value but a bool, which only a boolean field takes
            namespace[f"TYPES{i}"] = frozenset(
                (str, int, float, bool) if f.dtype == "boolean" else (str, int, float)
            )
            lines += [
                f"    if type(x) not in TYPES{i}: {slow}",
                f"    x = LOOKUP{i}.get(x)",
                f"    if x is None: {slow}",
            ]
        if kind is not None:
            lines.append(f"    v{i} = x")
            read.append((i, f))
    if emit_answer is not None:
        src = Source(slow, namespace, depth=2)
        if emit_answer(src, {f.name: Local(f"v{i}", True) for i, f in read}):
            body = ["    try:", *src.lines, "    except ArithmeticError:", f"        {slow}"]
            try:
                return _compiled([*lines, *body], namespace)
            except (SyntaxError, RecursionError, MemoryError):
                pass  # beyond what the parser takes: the calls serve, as where nothing is written
    entries = ", ".join(f"{f.name!r}: v{i}" for i, f in read)
    return _compiled([*lines, f"    return ANSWER({{{entries}}})"], namespace)


def _compiled(lines: list[str], namespace: dict[str, Any]) -> Callable[..., OneAnswer | None]:
    """The function ``score`` that ``lines`` define, compiled with ``namespace`` as globals."""
    exec(compile("\n".join(lines), "<scorekit record scorer>", "exec"), namespace)
    scorer: Callable[[Mapping[str, Any]], OneAnswer | None] = namespace["score"]
    return scorer

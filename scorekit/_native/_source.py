"""One record as one generated function: the source that plans write for it.

The one-record form of a model is a chain of calls: the record reader builds a dict of field
values, the plan's ``one`` copies it to add derived fields, each regression table and forest
is a function of that dict, and the answer is assembled from lists. Inside a database trigger,
where PostgreSQL's own work between two rows leaves the CPU caches cold, each call, dict and
code object costs several times what it costs in a loop. So where every step of a plan can
write itself as Python source (``Plan.emit_one``), NativeScorer.record_scorer makes the whole
model one function: the reader's locals go straight into the plan's arithmetic and then into
the answer, with the same operations in the same order as the calls it replaces.

The generated code covers the common case only. Wherever the calls would take another way (a
missing value, a NaN sum, a null leaf), it returns ``GENERAL(record)``, the two steps
(InputSchema.prepare_one, then the plan's calls), which give the same answer on their own;
and the code runs inside ``try: ... except ArithmeticError: return GENERAL(record)``, so that
an overflow (of exp, of a power) takes them too, where the calls give numpy's IEEE answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What an expression's one-record form computes, as data the generator writes out:
# ("constant", value), ("field", name) or ("binary", operator, left, right) with operator one of
# + - * /.
Shape = tuple[Any, ...]
ARITHMETIC = ("+", "-", "*", "/")


def ieee_divide(a: float, b: float) -> float:
    """a / b with numpy's IEEE results for a zero divisor instead of ZeroDivisionError."""
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


@dataclass(frozen=True)
class Local:
    """A value the generated function holds in a local variable."""

    name: str
    present: bool  # known to be neither None nor NaN (a field the reader has checked)


class Source:
    """The body of a generated function being written, and the names its code refers to."""

    def __init__(self, fallback: str, namespace: dict[str, Any], depth: int = 1) -> None:
        self.fallback = fallback  # the statement that hands the record to the two steps
        self.namespace = namespace
        self.depth = depth
        self.lines: list[str] = []
        self._count = 0

    def fresh(self, prefix: str) -> str:
        """A local variable name no other part of the function uses."""
        self._count += 1
        return f"{prefix}_{self._count}"

    def line(self, text: str) -> None:
        self.lines.append("    " * self.depth + text)

    def assign(self, code: str, prefix: str) -> Local:
        """A new local holding ``code``'s value, which may be None or NaN."""
        name = self.fresh(prefix)
        self.line(f"{name} = {code}")
        return Local(name, present=False)

    def bind(self, value: Any, prefix: str) -> str:
        """A global name of the generated function for ``value`` (a table, a function)."""
        name = self.fresh(prefix.upper())
        self.namespace[name] = value
        return name

    def literal(self, value: Any) -> str:
        """Source for ``value``: a literal where repr reads back as the same value, else a
        global name holding it."""
        kind = type(value)
        if kind is str or kind is int or (kind is float and math.isfinite(value)):
            return repr(value)
        return self.bind(value, "K")

    def expression(self, shape: Shape | None, inputs: Mapping[str, Local]) -> str | None:
        """Source for an expression's one-record form (a literal or a local: each operation
        is written as a line of its own, so that no depth of nesting trips the parser); None
        where it can't be written."""
        if shape is None:
            return None
        if shape[0] == "constant":
            return self.literal(shape[1])
        if shape[0] == "field":
            found = inputs.get(shape[1])
            return found.name if found is not None else None
        if shape[0] == "binary" and shape[1] in ARITHMETIC:
            left = self.expression(shape[2], inputs)
            right = self.expression(shape[3], inputs)
            if left is None or right is None:
                return None
            divisor = shape[3][1] if shape[3][0] == "constant" else None
            if shape[1] == "/" and not (type(divisor) in (int, float) and divisor != 0):
                # a zero divisor: the one-record form's IEEE answer, in line
                divide = self.bind(ieee_divide, "divide")
                code = f"{left} / {right} if {right} else {divide}({left}, {right})"
            else:
                code = f"{left} {shape[1]} {right}"
            return self.assign(code, "e").name
        return None

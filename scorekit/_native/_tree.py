"""TreeModels flattened into arrays of binary tests, and one vectorised walk for a whole forest.

PMML trees pick the first child whose predicate is true, so a node with children c1..ck becomes a
chain of binary tests: "c1? -> c1 : (c2? -> c2 : ... : no-true-child)". Every test reads one feature
row x and asks ``x <= threshold``, its children swapped where the predicate is the negation: with
``nextafter`` that states <=, <, > and >= exactly. Equality tests (a category, a code) and
predicates that aren't a simple comparison (sets, compounds, isMissing) become 1/0/NaN indicator
rows computed once per batch, tested with ``x <= 0.5``. A test whose x is missing follows the
tree's missing-value strategy (nullPrediction, lastPrediction, defaultChild or none).
"""

from __future__ import annotations

import functools
import itertools
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .._pmml_header import children, local
from ._expr import NUM, Compiler, Env, Fn, missing_mask, parse_scalar, unsupported

PREDICATES = ("True", "False", "SimplePredicate", "SimpleSetPredicate", "CompoundPredicate")
_MISSING_STRATEGIES = ("nullPrediction", "lastPrediction", "defaultChild", "none")


NO_VALUE = object()


@dataclass
class Feature:
    """A feature row of the walk: a numeric column, an "equals value" indicator, or a predicate."""

    name: str = ""
    equals: Any = NO_VALUE
    predicate: Fn | None = None

    def column(self, env: Env) -> np.ndarray:
        if self.predicate is not None:
            return self.predicate(env)
        values = env.columns[self.name]
        if self.equals is NO_VALUE:
            return values
        coded = env.codes.get(self.name)
        if coded is not None:
            codes, categories = coded
            k = categories.index(self.equals) if self.equals in categories else -2
            out = (codes == k).astype(np.float64)
            out[codes < 0] = math.nan
            return out
        if values.dtype == object:
            out = np.equal(values, self.equals).astype(np.float64)
            out[missing_mask(values)] = math.nan
            return out
        with np.errstate(invalid="ignore"):
            out = (values == self.equals).astype(np.float64)
        out[np.isnan(values)] = math.nan
        return out


@dataclass
class FlatForest:
    """Every tree of a model (or of a whole segmentation) in one set of node arrays."""

    width: int  # 1 for regression scores, k for class probabilities
    categories: list[str] | None
    features: list[Feature] = field(default_factory=list)
    feature_keys: dict[Any, int] = field(default_factory=dict)
    feature: list[int] = field(default_factory=list)  # -1 marks a leaf
    threshold: list[float] = field(default_factory=list)
    negate: list[bool] = field(default_factory=list)
    on_true: list[int] = field(default_factory=list)
    on_false: list[int] = field(default_factory=list)
    on_missing: list[int] = field(default_factory=list)
    leaf_row: list[int] = field(default_factory=list)
    leaf_values: list[list[float]] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)

    # --- building ------------------------------------------------------------------------------
    def _feature(self, key: Any, make: Feature) -> int:
        if key not in self.feature_keys:
            self.feature_keys[key] = len(self.features)
            self.features.append(make)
        return self.feature_keys[key]

    def _node(
        self,
        feature: int,
        threshold: float,
        negate: bool,
        on_true: int,
        on_false: int,
        on_missing: int,
    ) -> int:
        self.feature.append(feature)
        self.threshold.append(threshold)
        self.negate.append(negate)
        self.on_true.append(on_true)
        self.on_false.append(on_false)
        self.on_missing.append(on_missing)
        self.leaf_row.append(-1)
        return len(self.feature) - 1

    def leaf(self, values: list[float]) -> int:
        index = self._node(-1, 0.0, False, -1, -1, -1)
        self.on_true[index] = self.on_false[index] = self.on_missing[index] = index
        self.leaf_row[index] = len(self.leaf_values)
        self.leaf_values.append(values)
        return index

    def null_leaf(self) -> int:
        return self.leaf([math.nan] * self.width)

    def add_tree(self, tree: ET.Element, compiler: Compiler) -> None:
        strategy = tree.get("missingValueStrategy", "none")
        if strategy not in _MISSING_STRATEGIES:
            raise unsupported(tree, f"missingValueStrategy {strategy!r}")
        no_true_child = tree.get("noTrueChildStrategy", "returnNullPrediction")
        if no_true_child not in ("returnNullPrediction", "returnLastPrediction"):
            raise unsupported(tree, f"noTrueChildStrategy {no_true_child!r}")
        root = [c for c in tree if local(c.tag) == "Node"]
        if len(root) != 1:
            raise unsupported(tree, "it needs exactly one root Node")
        builder = _TreeBuilder(self, compiler, strategy, no_true_child == "returnLastPrediction")
        top = builder.build(root[0])
        predicate = _predicate_of(root[0])
        if local(predicate.tag) != "True":
            # A root predicate that fails means no prediction.
            top = builder.test(predicate, top, self.null_leaf(), self.null_leaf())
        self.roots.append(top)

    def compile(self) -> CompiledForest:
        return CompiledForest(self)


def _predicate_of(node: ET.Element) -> ET.Element:
    for element in node:
        if local(element.tag) in PREDICATES:
            return element
    raise unsupported(node, "a Node without a predicate")


class _TreeBuilder:
    def __init__(
        self, forest: FlatForest, compiler: Compiler, strategy: str, last_on_no_true_child: bool
    ) -> None:
        self.forest = forest
        self.compiler = compiler
        self.strategy = strategy
        self.last_on_no_true_child = last_on_no_true_child

    def own_leaf(self, node: ET.Element) -> int:
        forest = self.forest
        if forest.categories is None:
            score = node.get("score")
            return forest.leaf([float(score) if score is not None else math.nan])
        distribution = children(node, "ScoreDistribution")
        probabilities = [0.0] * forest.width
        if distribution:
            counts = {d.get("value", ""): d for d in distribution}
            total = sum(float(d.get("recordCount", "0")) for d in distribution)
            for j, category in enumerate(forest.categories):
                entry = counts.get(category)
                if entry is None:
                    continue
                if entry.get("probability") is not None:
                    probabilities[j] = float(entry.get("probability", "0"))
                elif total > 0:
                    probabilities[j] = float(entry.get("recordCount", "0")) / total
        elif node.get("score") is not None:
            score = node.get("score")
            if score not in forest.categories:
                raise unsupported(node, f"score {score!r} is not a target category")
            probabilities[forest.categories.index(score)] = 1.0
        else:
            return forest.null_leaf()
        return forest.leaf(probabilities)

    def build(self, node: ET.Element) -> int:
        kids = [c for c in node if local(c.tag) == "Node"]
        if not kids:
            return self.own_leaf(node)
        own = self.own_leaf(node)  # for lastPrediction / returnLastPrediction
        built = [(kid, self.build(kid)) for kid in kids]
        default_id = node.get("defaultChild")
        default = next((sub for kid, sub in built if kid.get("id") == default_id), None)
        if self.strategy == "defaultChild" and default is None:
            raise unsupported(node, f"defaultChild {default_id!r} names no child Node")
        following = own if self.last_on_no_true_child else self.forest.null_leaf()
        for kid, sub in reversed(built):
            predicate = _predicate_of(kid)
            tag = local(predicate.tag)
            if tag == "True":
                following = sub
                continue
            if tag == "False":
                continue
            if self.strategy == "nullPrediction":
                on_missing = self.forest.null_leaf()
            elif self.strategy == "lastPrediction":
                on_missing = own
            elif self.strategy == "defaultChild":
                assert default is not None
                on_missing = default
            else:  # "none": an unknown predicate counts as false
                on_missing = following
            following = self.test(predicate, sub, following, on_missing)
        return following

    def test(self, predicate: ET.Element, on_true: int, on_false: int, on_missing: int) -> int:
        forest = self.forest
        if local(predicate.tag) == "SimplePredicate":
            name = predicate.get("field", "")
            ftype = self.compiler.field_type(name, "SimplePredicate")
            op = predicate.get("operator", "")
            if ftype.kind == NUM and op in _NUMERIC_TESTS:
                value = parse_scalar(predicate.get("value"), ftype.dtype)
                threshold, negate = _NUMERIC_TESTS[op](value)
                feature = forest._feature(("num", name), Feature(name))
                return forest._node(feature, threshold, negate, on_true, on_false, on_missing)
            if op in ("equal", "notEqual"):
                value = parse_scalar(predicate.get("value"), ftype.dtype)
                feature = forest._feature(("equals", name, value), Feature(name, equals=value))
                # "indicator <= 0.5" means not equal: an equal test takes the other branch.
                negate = op == "equal"
                return forest._node(feature, 0.5, negate, on_true, on_false, on_missing)
        # Anything else: a 1/0/NaN indicator row computed once per batch.
        fn = self.compiler.predicate(predicate)
        key = ("predicate", ET.tostring(predicate))
        feature = forest._feature(key, Feature(predicate=fn))
        return forest._node(feature, 0.5, True, on_true, on_false, on_missing)


def _below(value: float) -> float:
    return float(np.nextafter(value, -math.inf))


# operator -> (threshold, negate) of the test "x <= threshold"
_NUMERIC_TESTS = {
    "lessOrEqual": lambda t: (t, False),
    "lessThan": lambda t: (_below(t), False),
    "greaterThan": lambda t: (t, True),
    "greaterOrEqual": lambda t: (_below(t), True),
}


class NodeLists(NamedTuple):
    """A compiled forest's node arrays as Python lists, for code that steps node by node (the
    one-record walk, the dense batch form): list indexing costs less than numpy's per item."""

    feature: list[int]
    threshold: list[float]
    on_hit: list[int]  # where a row at most the threshold goes, negation folded in
    on_miss: list[int]
    on_missing: list[int]
    leaf_row: list[int]


class CompiledForest:
    """The node arrays as numpy, and the walk.

    A negated test has its children swapped at compile time, so each level of the walk is one
    gather of x, one comparison and one gather of the next node. Rows are walked in chunks so
    the per-level arrays stay small enough for the CPU caches.

    A shallow forest (every path at most SHALLOW_DEPTH tests long, as gradient boosting's trees
    are) is walked level by level for exactly its depth, every (tree, row) pair at once, with
    its leaves sending rows to themselves: that needs no bookkeeping of which pairs are still
    walking. A deeper forest walks only the pairs still at a test, level by level.

    A shallow forest of small trees (at most DENSE_TESTS_PER_LEVEL tests per tree and level on
    average, as boosting's depth-3 trees have 7 in 3 levels) scoring at least DENSE_MIN_ROWS
    rows skips the walk: each test compares a whole feature row at once, and each tree's leaf
    is chosen by nested np.where from its leaves up. Comparing contiguous rows costs far less
    than gathering every (tree, row) pair's value at every level: boosting's leaves for 10,000
    rows take 10.7 ms instead of 25.4.

    Where each tree of such a forest has at most CODED_MAX_TESTS tests, the dense form goes
    further: each distinct test is made once per batch, a tree's tests make the bits of one
    number per row, and that number picks the tree's leaf from a table made when the forest is
    compiled (the leaf the walk reaches for each combination of outcomes). A missing value
    takes the branch its node sends it to, as a hit or a miss; a batch with a missing value
    that some node sends elsewhere (a null or its own prediction) takes the nested np.where.
    """

    CHUNK_ROWS = 2048
    SHALLOW_DEPTH = 8
    DENSE_TESTS_PER_LEVEL = 3
    DENSE_MIN_ROWS = 256  # below this, numpy's cost per call outweighs the dense form's saving
    DENSE_CHUNK_ROWS = 16384
    # a tree's tests for the coded form: its number's bits, in a uint8 (more would overflow it)
    CODED_MAX_TESTS = 8

    def __init__(self, flat: FlatForest) -> None:
        self.features = flat.features
        negate = np.array(flat.negate, dtype=bool)
        on_true = np.array(flat.on_true, dtype=np.intp)
        on_false = np.array(flat.on_false, dtype=np.intp)
        self.feature = np.array(flat.feature, dtype=np.intp)
        self.threshold = np.array(flat.threshold, dtype=np.float64)
        # children[node, hit]: where a test sends a row, negation folded in.
        self.children = np.where(
            negate[:, None],
            np.stack([on_true, on_false], axis=1),
            np.stack([on_false, on_true], axis=1),
        )
        self.on_missing = np.array(flat.on_missing, dtype=np.intp)
        self.leaf_row = np.array(flat.leaf_row, dtype=np.intp)
        self.values = np.array(flat.leaf_values, dtype=np.float64).reshape(-1, flat.width)
        self.roots = np.array(flat.roots, dtype=np.intp)
        self.is_test = self.feature >= 0
        self.safe_feature = np.where(self.is_test, self.feature, 0)
        # For the shallow walk: a leaf sends every row, missing or not, to itself.
        itself = np.arange(len(self.feature), dtype=np.intp)
        self.step = np.where(self.is_test[:, None], self.children, itself[:, None])
        self.step_missing = np.where(self.is_test, self.on_missing, itself)
        self.step_flat = self.step.ravel()
        self.depth = self._depth()
        n_tests = int(self.is_test.sum())
        self.dense = self.depth is not None and n_tests <= (
            self.DENSE_TESTS_PER_LEVEL * max(self.depth, 1) * len(self.roots)
        )
        self._node_lists: NodeLists | None = None

    def _depth(self) -> int | None:
        """The most tests on any path from a root (missing-value branches included); None if
        it exceeds SHALLOW_DEPTH."""
        frontier = self.roots
        depth = 0
        while True:
            tests = frontier[self.is_test[frontier]]
            if tests.size == 0:
                return depth
            if depth == self.SHALLOW_DEPTH:
                return None
            frontier = np.unique(
                np.concatenate([self.children[tests].ravel(), self.on_missing[tests]])
            )
            depth += 1

    def leaves(self, env: Env) -> np.ndarray:
        """(trees, rows) leaf-row indices into ``values``."""
        n = env.n
        rows = [f.column(env) for f in self.features] or [np.zeros(n)]
        walk, chunk = self._walk, self.CHUNK_ROWS
        if self.dense and n >= self.DENSE_MIN_ROWS:
            if n <= self.DENSE_CHUNK_ROWS:
                return self._coded_leaves(rows)  # no need to stack the rows
            walk, chunk = self._coded_leaves, self.DENSE_CHUNK_ROWS
        x_rows = np.vstack(rows)
        if n <= chunk:
            return walk(x_rows)
        return np.hstack([walk(x_rows[:, start : start + chunk]) for start in range(0, n, chunk)])

    def node_lists(self) -> NodeLists:
        """The node arrays as lists, made on first use (forests scored only in batches by the
        level walk never need them)."""
        if self._node_lists is None:
            self._node_lists = NodeLists(
                self.feature.tolist(),
                self.threshold.tolist(),
                self.children[:, 1].tolist(),
                self.children[:, 0].tolist(),
                self.on_missing.tolist(),
                self.leaf_row.tolist(),
            )
        return self._node_lists

    @functools.cached_property
    def coded_trees(self) -> CodedTrees | None:
        """The tables of the coded dense form, made on first use; None where a tree has more
        than CODED_MAX_TESTS tests, or none has any."""
        return CodedTrees.of(self)

    def _coded_leaves(self, x_rows: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """What _dense_leaves returns, each tree's leaf picked from its table by the outcomes of
        its tests as the bits of one number per row. ``x_rows``: the feature rows, stacked or
        not."""
        coded = self.coded_trees
        if coded is None:
            return self._dense_leaves(np.vstack(list(x_rows)))
        x_rows = [np.asarray(row, dtype=np.float64) for row in x_rows]
        missing_rows = [bool(np.isnan(row).any()) for row in x_rows]
        if any(missing_rows[f] for f in coded.missing_elsewhere):
            return self._dense_leaves(np.vstack(x_rows))
        n = len(x_rows[0])
        # one row per distinct test, and a last one that is always 0 (the bits a tree lacks)
        outcomes = np.zeros((len(coded.feature_rows) + 1, n), dtype=bool)
        missing: dict[int, np.ndarray] = {}
        with np.errstate(invalid="ignore"):
            for i, (f, threshold, missing_hits) in enumerate(
                zip(coded.feature_rows, coded.thresholds, coded.missing_hits, strict=True)
            ):
                np.less_equal(x_rows[f], threshold, out=outcomes[i])  # NaN: a miss
                if missing_hits and missing_rows[f]:
                    if f not in missing:
                        missing[f] = np.isnan(x_rows[f])
                    outcomes[i] |= missing[f]
        bits = outcomes.view(np.uint8)
        number = bits[coded.tests_by_bit[0]]  # (trees, rows)
        for j in range(1, len(coded.tests_by_bit)):
            number |= bits[coded.tests_by_bit[j]] << j
        return coded.leaf_rows[number + coded.table_starts]

    def _dense_leaves(self, x_rows: np.ndarray) -> np.ndarray:
        """What _walk returns, each tree's leaf chosen by nested np.where over whole rows."""
        feature, threshold, on_hit, on_miss, on_missing, leaf_row = self.node_lists()
        # float64 throughout: numpy compares a float32 row with a Python float in float32
        x_rows = np.asarray(x_rows, dtype=np.float64)
        has_missing = np.isnan(x_rows).any(axis=1).tolist()
        missing: dict[int, np.ndarray] = {}  # feature -> its NaN mask, made when first needed
        done: dict[int, Any] = {}  # node of this tree -> its rows' leaf rows (or one int)

        def leaf_of(node: int) -> Any:
            found = done.get(node)
            if found is not None:
                return found
            f = feature[node]
            if f < 0:
                result: Any = leaf_row[node]
            else:
                hit = x_rows[f] <= threshold[node]  # NaN: False, then overridden below
                result = np.where(hit, leaf_of(on_hit[node]), leaf_of(on_miss[node]))
                if has_missing[f]:
                    if f not in missing:
                        missing[f] = np.isnan(x_rows[f])
                    result = np.where(missing[f], leaf_of(on_missing[node]), result)
            done[node] = result
            return result

        out = np.empty((len(self.roots), x_rows.shape[1]), dtype=np.intp)
        with np.errstate(invalid="ignore"):
            for t, root in enumerate(self.roots.tolist()):
                out[t] = leaf_of(root)
                done.clear()  # a tree's nodes are its own: keep no rows past it
        return out

    def _walk(self, x_rows: np.ndarray) -> np.ndarray:
        n = x_rows.shape[1]
        n_trees = len(self.roots)
        x_flat = np.ascontiguousarray(x_rows).ravel()
        any_missing = bool(np.isnan(x_flat).any())
        offset = self.safe_feature * n  # where each node's feature row starts in x_flat
        node = np.repeat(self.roots, n)
        row = np.tile(np.arange(n, dtype=np.intp), n_trees)
        if self.depth is not None:
            for _ in range(self.depth):
                x = x_flat[offset[node] + row]
                with np.errstate(invalid="ignore"):
                    hit = x <= self.threshold[node]
                following = self.step_flat[2 * node + hit]
                if any_missing:
                    missing = np.isnan(x)
                    if missing.any():
                        following[missing] = self.step_missing[node[missing]]
                node = following
            return self.leaf_row[node].reshape(n_trees, n)
        active = np.flatnonzero(self.is_test[node])
        row = row[active]
        while active.size:
            at = node[active]
            x = x_flat[offset[at] + row]
            with np.errstate(invalid="ignore"):
                hit = x <= self.threshold[at]
            following = self.children[at, hit.view(np.int8)]
            if any_missing:
                missing = np.isnan(x)
                if missing.any():
                    following[missing] = self.on_missing[at[missing]]
            node[active] = following
            still = self.is_test[following]
            active = active[still]
            row = row[still]
        return self.leaf_row[node].reshape(n_trees, n)


class CodedTrees(NamedTuple):
    """The coded dense form of a forest (see CompiledForest): its distinct tests, which of them
    each tree takes as each bit of its number, and each tree's table of leaves by number."""

    feature_rows: list[int]  # each distinct test's feature row ...
    thresholds: list[float]  # ... its threshold ...
    missing_hits: list[bool]  # ... and whether a missing value counts as a hit
    tests_by_bit: list[np.ndarray]  # for bit j: each tree's test (len(feature_rows): none, 0)
    leaf_rows: np.ndarray  # every tree's table, one after the other
    table_starts: np.ndarray  # (trees, 1): where each tree's table starts in leaf_rows
    missing_elsewhere: list[int]  # feature rows a node sends a missing value to neither child

    @classmethod
    def of(cls, forest: CompiledForest) -> CodedTrees | None:
        feature, threshold, on_hit, on_miss, on_missing, leaf_row = forest.node_lists()
        tests: dict[tuple[int, float, bool], int] = {}
        elsewhere: set[int] = set()
        trees: list[list[int]] = []
        tables: list[list[int]] = []
        for root in forest.roots.tolist():
            nodes: list[int] = []  # the tree's tests, as its number's bits from the lowest
            stack = [root]
            while stack:
                node = stack.pop()
                if feature[node] >= 0 and node not in nodes:
                    nodes.append(node)
                    stack += (on_miss[node], on_hit[node])
            if len(nodes) > CompiledForest.CODED_MAX_TESTS:
                return None
            ids = []
            for node in nodes:
                missing_hits = on_missing[node] == on_hit[node]
                if not missing_hits and on_missing[node] != on_miss[node]:
                    elsewhere.add(feature[node])
                key = (feature[node], threshold[node], missing_hits)
                ids.append(tests.setdefault(key, len(tests)))
            bit = {node: j for j, node in enumerate(nodes)}
            table = []
            for number in range(1 << len(nodes)):
                node = root
                while feature[node] >= 0:
                    node = on_hit[node] if number >> bit[node] & 1 else on_miss[node]
                table.append(leaf_row[node])
            trees.append(ids)
            tables.append(table)
        size = 1 << max((len(ids) for ids in trees), default=0)
        if size == 1:
            return None  # no tests: the nested np.where has nothing to do either
        none = len(tests)
        return cls(
            feature_rows=[f for f, _, _ in tests],
            thresholds=[t for _, t, _ in tests],
            missing_hits=[m for _, _, m in tests],
            tests_by_bit=[
                np.array([ids[j] if j < len(ids) else none for ids in trees], dtype=np.intp)
                for j in range(size.bit_length() - 1)
            ],
            leaf_rows=np.array(
                [row for table in tables for row in table + [0] * (size - len(table))],
                dtype=np.intp,
            ),
            table_starts=(np.arange(len(trees), dtype=np.intp) * size)[:, None],
            missing_elsewhere=sorted(elsewhere),
        )


# --- one record: the forest as generated Python code --------------------------------------------
# Walking node lists costs ~100 ns per node in CPython; the same trees as nested if/else on local
# variables cost a few tens. So the one-record form of a forest that is small enough becomes one
# generated function. It declines (returns FALLBACK) on a missing input or a null leaf, and the
# caller then walks the node lists, which handle both.
FALLBACK = object()
MAX_GENERATED_NODES = 20_000  # beyond this, compiling the code takes longer than it saves
MAX_GENERATED_DEPTH = 80  # CPython's parser allows 100 nested blocks
# How often (expected, per record) the generated forest must make a test to make it once up front:
# for boosting's 100 trees of depth 3, thresholds of 2 and 3 were fastest (1 µs of 5 saved).
SHARED_TEST_EVALUATIONS = 2.0


def source_literal(value: Any, constants: list[Any]) -> str:
    """Python source for ``value``: a literal where repr gives one that reads back as the same
    value (a str, an int, a finite float), which the generated code compares without a lookup;
    else an entry of the constants list C."""
    kind = type(value)
    if kind is str or kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    constants.append(value)
    return f"C[{len(constants) - 1}]"


# A forest's node lists as its generated code reads them: features, feature, threshold, on_hit,
# on_miss, leaf_row, leaf_values, roots, weights (see generate_scalar_forest)
ForestLists = tuple[
    list[tuple[str, Any]],
    list[int],
    list[float],
    list[int],
    list[int],
    list[int],
    list[list[float]],
    list[int],
    list[float],
]


def forest_fields(forest: ForestLists) -> list[str]:
    """The fields a forest's tests read, each once, in order."""
    return list(dict.fromkeys(name for name, _ in forest[0]))


def generate_scalar_forest(forest: ForestLists) -> Any:
    """A function values -> the weighted sum of every tree's leaf values (a list, one per
    class), summed tree by tree in order as the batch form does; or None if the forest is too
    big. ``features`` (forest[0]) are (field name, NO_VALUE) for a number, (field name, value)
    for an "equals value" indicator, whose 0/1 test becomes a comparison of the field's value;
    ``weights``, one per tree, multiply its leaves."""
    read = {name: f"v{i}" for i, name in enumerate(forest_fields(forest))}
    constants: list[Any] = []
    names = itertools.count()
    written = forest_lines(
        forest,
        read,
        set(),
        lambda prefix: f"{prefix}{next(names)}",
        lambda value: source_literal(value, constants),
        "return FALLBACK",
        1,
    )
    if written is None:
        return None
    body, totals = written
    lines = ["def forest(values):", *(f"    {v} = values[{name!r}]" for name, v in read.items())]
    lines += [*body, f"    return [{', '.join(totals)}]"]
    namespace: dict[str, Any] = {"FALLBACK": FALLBACK, "C": constants}
    exec(compile("\n".join(lines), "<scorekit forest>", "exec"), namespace)
    return namespace["forest"]


def forest_lines(
    forest: ForestLists,
    read: dict[str, str],
    present: set[str],
    fresh: Callable[[str], str],
    literal: Callable[[Any], str],
    fallback: str,
    depth: int,
) -> tuple[list[str], list[str]] | None:
    """The code of generate_scalar_forest's function, from where each field is read into a
    local (``read``: field name -> local) to the sums, indented ``depth`` levels: the lines and
    the sums' locals (one per class). ``fallback`` is the statement for a missing input (a
    field not in ``present``, whose value may be None or NaN) or a null leaf; ``fresh`` names
    new locals, ``literal`` writes a value as source. None if the forest is too big."""
    features, feature, threshold, on_hit, on_miss, leaf_row, leaf_values, roots, weights = forest
    if len(feature) > MAX_GENERATED_NODES:
        return None
    if not all(math.isfinite(t) for t, f in zip(threshold, feature, strict=True) if f >= 0):
        return None
    indent = "    " * depth
    width = len(leaf_values[0]) if leaf_values else 1
    totals = [fresh("t") for _ in range(width)]
    lines: list[str] = []
    unchecked = [v for name, v in read.items() if name not in present]
    if unchecked:  # a missing value takes the node walk, which applies the missing-value strategy
        checks = " or ".join(f"{v} is None or {v} != {v}" for v in unchecked)
        lines += [f"{indent}if {checks}:", f"{indent}    {fallback}"]
    lines.append(f"{indent}{', '.join(totals)}, = {', '.join(['0.0'] * width)},")
    shared_at = len(lines)
    # each test's expected evaluations per record, were every test to go either way half the
    # time; and where each test is made: (line, indentation, test)
    expected: dict[str, float] = {}
    made: list[tuple[int, str, str]] = []

    def emit(node: int, level: int, weight: float) -> bool:
        if level > MAX_GENERATED_DEPTH:
            return False
        pad = indent + "    " * (level - 1)
        f = feature[node]
        if f < 0:
            leaf = leaf_values[leaf_row[node]]
            if any(math.isinf(v) for v in leaf):
                return False  # no literal for it; rare enough to leave to the node walk
            if any(v != v for v in leaf):
                lines.append(f"{pad}{fallback}")
            else:
                lines.extend(
                    f"{pad}{total} += {weight * value!r}"
                    for total, value in zip(totals, leaf, strict=True)
                )
            return True
        name, equals = features[f]
        if equals is NO_VALUE:
            test = f"{read[name]} <= {threshold[node]!r}"
        elif threshold[node] >= 1.0:  # the indicator is 0 or 1: always at most the threshold
            return emit(on_hit[node], level, weight)
        elif threshold[node] >= 0.0:  # at most the threshold exactly when the indicator is 0
            test = f"{read[name]} != {literal(equals)}"
        else:
            return emit(on_miss[node], level, weight)
        expected[test] = expected.get(test, 0.0) + 0.5 ** (level - 1)
        made.append((len(lines), pad, test))
        lines.append(f"{pad}if {test}:")
        if not emit(on_hit[node], level + 1, weight):
            return False
        lines.append(f"{pad}else:")
        return emit(on_miss[node], level + 1, weight)

    for root, weight in zip(roots, weights, strict=True):
        if not emit(root, 1, weight):
            return None
    # A test the trees share, made often enough, is made once per record into a local: reading
    # a local costs less than a comparison.
    shared = {
        test: fresh("s")
        for test in (t for t, e in expected.items() if e >= SHARED_TEST_EVALUATIONS)
    }
    for line, pad, test in made:
        if test in shared:
            lines[line] = f"{pad}if {shared[test]}:"
    lines[shared_at:shared_at] = [f"{indent}{name} = {test}" for test, name in shared.items()]
    return lines, totals

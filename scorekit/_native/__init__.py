"""scorekit's own PMML evaluator on numpy: parse once into a compiled plan, score whole batches
with vectorised numpy and no per-row Python loop on the tree and regression paths."""

from ._engine import NativeScorer

__all__ = ["NativeScorer"]

"""scorekit's exceptions: one root, mapped to exit codes, HTTP statuses and SQLSTATEs at the edges.

Hierarchy (exit code, HTTP status, SQLSTATE)::

    ScorekitError                     1  500  XX000  internal failure
    ├── UsageError                    2  400  22023  bad arguments or options
    ├── InputError                    3  422  22023  data that can't be scored
    │   └── MissingColumnsError       3  422  22023  required input fields absent
    ├── ModelNotFoundError            4  404  42704  unknown file, model, version or alias
    ├── ModelError                    4  500  22000  a model that must not be scored
    │   ├── IntegrityError            4  500  22000  sha256 mismatch, corrupt artifact
    │   ├── IncompatibleModelError    4  500  22000  pickle from another scikit-learn
    │   └── UnsupportedModelError     4  500  0A000  an engine can't score this model
    ├── EngineUnavailableError        4  503  58000  engine's libraries or JVM missing
    ├── StoreError                    5  503  58000  the model store can't be reached
    └── LockHeldError                 6  409  55P03  another batch run holds the lock

A batch run that finishes but could not score some rows exits with ``EXIT_ROWS_FAILED`` (7);
its rows and reasons are in its errors table or file. Too many of them (``--max-error-rate``)
abort the run with an InputError (3).

The core raises these with messages that name the object, what was expected, what arrived and
what to do; adapters (CLI, HTTP, PL/Python) only read ``exit_code``, ``http_status``, ``sqlstate``
and ``details``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EXIT_ROWS_FAILED = 7


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: which row and field, the value, and what was expected."""

    row: int | None
    field: str | None
    problem: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScorekitError(Exception):
    """Root of every error scorekit raises on purpose."""

    exit_code = 1
    http_status = 500
    sqlstate = "XX000"
    code = "internal_error"

    def __init__(self, message: str, details: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[Problem] = list(details or [])


class UsageError(ScorekitError):
    """The caller passed arguments or options that don't make sense."""

    exit_code = 2
    http_status = 400
    sqlstate = "22023"
    code = "bad_request"


class InputError(ScorekitError):
    """Input data that can't be scored: a bad value, an unseen category, a wrong shape."""

    exit_code = 3
    http_status = 422
    sqlstate = "22023"
    code = "invalid_input"


class MissingColumnsError(InputError):
    """Fields the model requires are absent from the input."""

    code = "missing_fields"


class ModelNotFoundError(ScorekitError):
    """No such model file, model name, version or alias."""

    exit_code = 4
    http_status = 404
    sqlstate = "42704"
    code = "model_not_found"


class ModelError(ScorekitError):
    """A model that exists but must not be scored."""

    exit_code = 4
    sqlstate = "22000"
    code = "model_error"


class IntegrityError(ModelError):
    """An artifact whose bytes don't match the sha256 in its manifest, or that can't be parsed."""

    code = "model_integrity"


class IncompatibleModelError(ModelError):
    """A pickle made with a different scikit-learn than the one installed."""

    code = "model_incompatible"


class UnsupportedModelError(ModelError):
    """An engine that can't score this model (an element or feature it does not implement)."""

    sqlstate = "0A000"
    code = "model_unsupported"


class EngineUnavailableError(ScorekitError):
    """An engine whose libraries (or JVM) are not installed here."""

    exit_code = 4
    http_status = 503
    sqlstate = "58000"
    code = "engine_unavailable"


class StoreError(ScorekitError):
    """The model store can't be read or written (permissions, network, missing bucket)."""

    exit_code = 5
    http_status = 503
    sqlstate = "58000"
    code = "store_unavailable"


class LockHeldError(ScorekitError):
    """Another batch run of the same model into the same target is running."""

    exit_code = 6
    http_status = 409
    sqlstate = "55P03"
    code = "lock_held"

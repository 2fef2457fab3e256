"""scorekit's public API is exactly its __all__."""

from __future__ import annotations

import types

import scorekit


def test_all_names_resolve() -> None:
    for name in scorekit.__all__:
        assert getattr(scorekit, name) is not None, name


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(scorekit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - set(scorekit.__all__) == set()


def test_all_has_no_duplicates() -> None:
    assert len(set(scorekit.__all__)) == len(scorekit.__all__)


def test_errors_share_one_root_and_map_to_edges() -> None:
    errors = [
        v for v in vars(scorekit).values() if isinstance(v, type) and issubclass(v, Exception)
    ]
    assert errors
    for error in errors:
        assert issubclass(error, scorekit.ScorekitError), error
        assert isinstance(error.exit_code, int)
        assert 400 <= error.http_status < 600
        assert len(error.sqlstate) == 5

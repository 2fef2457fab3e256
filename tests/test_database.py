"""The PostgreSQL that setup prepared: reachable at the DSN, with plpython3u able to import
scorekit and numpy from the project's .venv (the in-database issue builds on this)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.db


@pytest.fixture
def conn(dsn: str):
    import psycopg

    with psycopg.connect(dsn, autocommit=False) as connection:
        yield connection
        connection.rollback()


def test_database_is_reachable(conn) -> None:
    assert conn.execute("SELECT current_database()").fetchone() == ("scorekit",)


def test_plpython_imports_scorekit_from_the_venv(conn) -> None:
    site = str(
        Path(sys.prefix) / "lib" / f"python{sys.version_info.major}."
        f"{sys.version_info.minor}" / "site-packages"
    )
    conn.execute("""
        CREATE FUNCTION pg_temp.scorekit_probe(site text) RETURNS text LANGUAGE plpython3u AS $$
            import site as site_module, sys
            site_module.addsitedir(site)
            import numpy, scorekit
            return f"{sys.version_info[0]}.{sys.version_info[1]} numpy {numpy.__version__}"
        $$""")
    (answer,) = conn.execute("SELECT pg_temp.scorekit_probe(%s)", [site]).fetchone()
    import numpy

    assert answer == f"{sys.version_info.major}.{sys.version_info.minor} numpy {numpy.__version__}"

"""The client side of in-database scoring: install scorekit into PostgreSQL and manage models.

``scorekit db ...`` calls these. Every statement passes names as query parameters (a table as
``%s::regclass``), never spliced into SQL, so no table, column or model name can inject SQL.
The scoring itself runs inside the server (scorekit._plpython); psycopg is imported here only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import __version__
from ._bundle import PICKLE_FILE, PMML_FILE
from ._bytecode import write_bytecode
from ._config import database_url
from ._errors import (
    EngineUnavailableError,
    IncompatibleModelError,
    InputError,
    IntegrityError,
    MissingColumnsError,
    ModelError,
    ModelNotFoundError,
    ScorekitError,
    StoreError,
    UnsupportedModelError,
    UsageError,
)
from ._store import ModelStore, open_store

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
PUBLISHER_ROLE = "scorekit_publisher"
SCORER_ROLE = "scorekit_scorer"

# The error classes the server raises by code (scorekit._plpython puts the code in DETAIL).
_BY_CODE: dict[str, type[ScorekitError]] = {
    cls.code: cls
    for cls in (
        UsageError,
        InputError,
        MissingColumnsError,
        ModelNotFoundError,
        ModelError,
        IntegrityError,
        IncompatibleModelError,
        UnsupportedModelError,
        EngineUnavailableError,
        StoreError,
    )
}


def translate(exc: Exception, dsn: str, subject: str | None = None) -> ScorekitError:
    """A PostgreSQL error as the scorekit error it stands for, with the server's message
    (prefixed by ``subject``, such as "table 'x'", when the server's message may not name it)."""
    import psycopg

    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
        return StoreError(f"can't connect to the database at {dsn}: {str(exc).strip()}")
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or str(exc).strip()
    message = message.removeprefix("plpy.Error: ").removeprefix("scorekit: ")
    if subject and sqlstate in ("42P01", "42602", "3F000"):
        message = f"{subject}: {message}"
    try:
        code = json.loads(diag.message_detail or "{}").get("code") if diag is not None else None
    except ValueError:
        code = None
    hint = diag.message_hint if diag is not None else None
    if hint:
        message = f"{message} ({hint})"
    if code in _BY_CODE:
        return _BY_CODE[code](message)
    if sqlstate == "42501":
        return UsageError(
            f"{message}: the role lacks a privilege. Publishing, promoting and attaching need "
            f"role {PUBLISHER_ROLE}, scoring needs {SCORER_ROLE} (GRANT {PUBLISHER_ROLE} TO ...)"
        )
    if sqlstate == "42704":
        return ModelNotFoundError(message)
    if sqlstate and sqlstate.startswith(("22", "42", "55")):
        return UsageError(message)
    return ScorekitError(f"database error {sqlstate}: {message}")


@contextlib.contextmanager
def connect(dsn: str | None = None, subject: str | None = None) -> Iterator[Any]:
    """A psycopg connection in one transaction (committed on success), errors translated."""
    import psycopg

    url = dsn or database_url()
    try:
        with psycopg.connect(url) as conn:
            yield conn
    except psycopg.Error as exc:
        raise translate(exc, url, subject) from exc


@contextlib.contextmanager
def scratch_database(dsn: str, prefix: str) -> Iterator[str]:
    """A database of its own on the server ``dsn`` names, ``<prefix>_<pid>``, created (a leftover
    of the same name dropped first) and dropped afterwards, its connections ended first; yields
    its DSN. For benchmarks and tests."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [name],
            )
            admin.execute(f"DROP DATABASE IF EXISTS {name}")


def _role(conn: Any) -> tuple[str, bool]:
    """The connected role's name and whether it is a superuser."""
    who, is_super = conn.execute(
        "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return str(who), bool(is_super)


def site_packages() -> str:
    """Where this interpreter's packages (scorekit, numpy) are: what PL/Python must import."""
    return sysconfig.get_paths()["purelib"]


PACKAGE_DIR = Path(__file__).resolve().parent


def byte_compile(package: Path = PACKAGE_DIR) -> bool:
    """Write the bytecode of scorekit's own modules, as pip does for the packages it installs
    but not for an editable install. The server's OS user may not write it, and each new
    connection would then compile scorekit from source, which measured 60 to 80 ms of a first
    prediction's 0.2 to 0.3 s (docs/benchmarks.md). False where it can't be written here."""
    try:
        write_bytecode(package)
    except OSError:
        return False
    return True


MIN_SERVER_VERSION = 130000  # server_version_num of PostgreSQL 13


def install(dsn: str | None = None) -> str:
    """Create or update the scorekit schema, roles and functions; returns a summary line."""
    script = (SQL_DIR / "install.sql").read_text()
    with connect(dsn) as conn:
        who, is_super = _role(conn)
        if not is_super:
            raise UsageError(
                f"scorekit db install needs a superuser, because PL/Python (plpython3u) is "
                f"untrusted; connected as {who}, which is not one. Connect as a superuser "
                "(--dsn), or ask one to run the install"
            )
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        if int(version) < MIN_SERVER_VERSION:
            raise UsageError(
                f"scorekit needs PostgreSQL 13 or later (its triggers use pg_current_snapshot); "
                f"this server is version {int(version) // 10000}. Upgrade the server"
            )
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'plpython3u'"
        ).fetchone()
        if available is None:
            raise UsageError(
                "the database server has no PL/Python (plpython3u): install the Debian package "
                f"postgresql-plpython3-{int(version) // 10000} on the server (make setup does "
                "that locally), then run scorekit db install again"
            )
        conn.execute("SET LOCAL client_min_messages = warning")
        conn.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
        conn.execute(script)
        path = site_packages()
        conn.execute(
            "INSERT INTO scorekit.runtime (site_packages, scorekit_version) VALUES (%s, %s) "
            "ON CONFLICT (singleton) DO UPDATE SET site_packages = excluded.site_packages, "
            "scorekit_version = excluded.scorekit_version, installed_at = now(), "
            "installed_by = current_user",
            [path, __version__],
        )
        compiled = byte_compile()
        conn.execute(
            "CREATE FUNCTION pg_temp.scorekit_probe() RETURNS text LANGUAGE plpython3u AS $$\n"
            "try:\n"
            "    plpy.execute('SELECT scorekit._boot()')\n"
            "except plpy.SPIError as exc:\n"
            "    return str(exc)\n"
            "import scorekit, numpy\n"
            "return ''\n"
            "$$"
        )
        (problem,) = conn.execute("SELECT pg_temp.scorekit_probe()").fetchone()
        if problem:
            raise UsageError(
                f"the database server can't import scorekit from {path}: {problem}. Its OS user "
                "(postgres) needs read access to that directory and its parents, and the "
                "server's PL/Python must be the same Python as the virtualenv (build it from "
                "/usr/bin/python3)"
            )
    where = dsn or database_url()
    done = f"installed scorekit {__version__} into {where}; PL/Python imports from {path}"
    if not compiled:
        done += (
            f" (but its bytecode could not be written under {PACKAGE_DIR}, "
            "so each new connection compiles scorekit from source: run scorekit db install as "
            "a user who may write there)"
        )
    return done


def uninstall(dsn: str | None = None) -> str:
    """Drop the scorekit schema: models, deployments, attachments (and their triggers), errors.
    Scored tables and their columns stay; so do the roles, which other databases may use."""
    with connect(dsn) as conn:
        conn.execute("SET LOCAL client_min_messages = warning")
        conn.execute((SQL_DIR / "uninstall.sql").read_text())
    return (
        f"removed scorekit from {dsn or database_url()}; the roles {PUBLISHER_ROLE} and "
        f"{SCORER_ROLE} are kept (DROP ROLE them once no database uses them)"
    )


def publish(
    ref: str,
    *,
    store: str | ModelStore | None = None,
    promote: bool | None = None,
    trust_pickle: bool = False,
    dsn: str | None = None,
) -> tuple[str, int, str]:
    """Copy a version from a model store into scorekit.models, keeping its number.

    ``promote=None`` makes it champion only if the model has none; True always; False never.
    ``trust_pickle`` (a superuser only) lets the server's sklearn engine unpickle model.pkl,
    which runs code as the server's OS user. Returns (name, version, what happened)."""
    from ._loading import parse_ref

    name, selector = parse_ref(ref)
    model_store = open_store(store)
    version = model_store.resolve(name, selector)
    bundle = model_store.bundle(name, version)
    artifacts = {a: bundle.read(a) for a in (PMML_FILE, PICKLE_FILE) if bundle.has(a)}
    digests = bundle.manifest.artifacts
    with connect(dsn) as conn:
        if trust_pickle:
            _trust(conn, name, version, digests.get(PICKLE_FILE))
        # Publishes and promotes of one model take turns, as in scorekit.promote().
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('scorekit.deployments/' || %s, 0))",
            [name],
        )
        existing = conn.execute(
            "SELECT pmml_sha256, pickle_sha256 FROM scorekit.models WHERE name = %s AND "
            "version = %s",
            [name, int(version)],
        ).fetchone()
        if existing is None:
            conn.execute(
                "INSERT INTO scorekit.models (name, version, manifest, pmml, pickle, "
                "pmml_sha256, pickle_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    name,
                    int(version),
                    bundle.manifest.to_json().decode(),
                    artifacts.get(PMML_FILE),
                    artifacts.get(PICKLE_FILE),
                    digests.get(PMML_FILE),
                    digests.get(PICKLE_FILE),
                ],
            )
            what = "published"
        elif existing == (digests.get(PMML_FILE), digests.get(PICKLE_FILE)):
            what = "already published (same artifacts)"
        else:
            raise UsageError(
                f"{name}@{version} is already in the database with different artifacts "
                f"(pmml sha256 {existing[0]}, here {digests.get(PMML_FILE)}); versions are "
                "immutable. Publish from the store it came from, or train a new version"
            )
        champion = conn.execute("SELECT scorekit.champion(%s)", [name]).fetchone()[0]
        if promote or (promote is None and champion is None):
            action = "promote" if promote else "publish"
            conn.execute(
                "INSERT INTO scorekit.deployments (model, version, action, previous) "
                "SELECT %s, %s, %s, scorekit.champion(%s)",
                [name, int(version), action, name],
            )
            what += f"; champion is now version {version}"
        else:
            what += f"; champion stays version {champion}"
    return name, int(version), what


def _trust(conn: Any, name: str, version: str, digest: str | None) -> None:
    if digest is None:
        raise UsageError(f"{name}@{version} has no model.pkl to trust")
    who, is_super = _role(conn)
    if not is_super:
        raise UsageError(
            f"--trust-pickle needs a superuser: unpickling runs code as the database server's "
            f"OS user; connected as {who}. Publish without it (the native engine scores the "
            "PMML), or ask a superuser"
        )
    conn.execute(
        "INSERT INTO scorekit.trusted_pickles (sha256, model, version) VALUES (%s, %s, %s) "
        "ON CONFLICT (sha256) DO NOTHING",
        [digest, name, int(version)],
    )


def call(
    sql: str, params: Mapping[str, Any] | list[Any], dsn: str | None, subject: str | None = None
) -> Any:
    """Run one scorekit SQL function and return its value."""
    with connect(dsn, subject) as conn:
        return conn.execute(sql, params).fetchone()[0]


def attach(
    table: str,
    model: str,
    *,
    mode: str = "row",
    outputs: Mapping[str, str] | None = None,
    features: Mapping[str, str] | None = None,
    version_column: str | None = None,
    on_error: str = "raise",
    engine: str = "auto",
    dsn: str | None = None,
) -> str:
    return str(
        call(
            "SELECT scorekit.attach(%s::regclass, %s, mode => %s, outputs => %s::jsonb, "
            "features => %s::jsonb, version_column => %s, on_error => %s, engine => %s)",
            [
                table,
                model,
                mode,
                json.dumps(outputs) if outputs else None,
                json.dumps(features) if features else None,
                version_column,
                on_error,
                engine,
            ],
            dsn,
            f"table {table!r}",
        )
    )


def detach(table: str, dsn: str | None = None) -> str:
    return str(call("SELECT scorekit.detach(%s::regclass)", [table], dsn, f"table {table!r}"))


def rescore(
    table: str, *, stale_only: bool = False, batch_size: int | None = None, dsn: str | None = None
) -> int:
    """Rescore an attached table's rows; ``batch_size`` defaults to the server's (10,000)."""
    size = ", batch_size => %s" if batch_size is not None else ""
    params = [table, stale_only, *([batch_size] if batch_size is not None else [])]
    return int(
        call(
            f"SELECT scorekit.rescore(%s::regclass, stale_only => %s{size})",
            params,
            dsn,
            f"table {table!r}",
        )
    )


def promote(name: str, version: int, dsn: str | None = None) -> int:
    return int(call("SELECT scorekit.promote(%s, %s)", [name, version], dsn))


def rollback(name: str, dsn: str | None = None) -> int:
    return int(call("SELECT scorekit.rollback(%s)", [name], dsn))

"""In-database scoring against a real PostgreSQL with PL/Python (no mocks).

Each test session installs scorekit into a database of its own, created from the DSN setup
recorded (or $SCOREKIT_DSN) and dropped at the end, publishes models trained in this session,
and checks what the database writes against the Python engine, row by row, to 1e-9.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import scorekit
from scorekit import _db
from scorekit._cli import main

pytestmark = pytest.mark.db
psycopg = pytest.importorskip("psycopg")

FEATURES = [
    ("Age", "age", "integer"),
    ("Employment", "employment", "text"),
    ("Education", "education", "text"),
    ("Marital", "marital", "text"),
    ("Occupation", "occupation", "text"),
    ("Income", "income", "double precision"),
    ("Gender", "gender", "text"),
    ("Deductions", "deductions", "text"),
    ("Hours", "hours", "integer"),
]
COLUMNS = ", ".join(column for _, column, _ in FEATURES)
TOLERANCE = 1e-9
TEST_ROLES = ("sk_test_nobody", "sk_test_scorer", "sk_test_publisher")
PLAIN_LOGIN = ("sk_test_plain", "sk-test-password")


def _admin(dsn: str) -> Any:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture(scope="session")
def db(dsn: str, trained) -> Iterator[str]:
    """A database of this session's own with scorekit installed; yields its DSN."""
    from psycopg.conninfo import make_conninfo

    name = f"scorekit_test_{os.getpid()}"
    with _admin(dsn) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
        for role in (*TEST_ROLES, PLAIN_LOGIN[0]):
            admin.execute(f"DROP ROLE IF EXISTS {role}")
    url = make_conninfo(dsn, dbname=name)
    _db.install(url)
    with _admin(dsn) as admin:
        admin.execute("CREATE ROLE sk_test_nobody")
        admin.execute("CREATE ROLE sk_test_scorer IN ROLE scorekit_scorer")
        admin.execute("CREATE ROLE sk_test_publisher IN ROLE scorekit_publisher")
        admin.execute(f"CREATE ROLE {PLAIN_LOGIN[0]} LOGIN PASSWORD '{PLAIN_LOGIN[1]}'")
    yield url
    with _admin(dsn) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        for role in (*TEST_ROLES, PLAIN_LOGIN[0]):
            admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="session")
def published(db: str, trained, session_store) -> dict[str, tuple[str, int]]:
    """Models in the test database: key -> (name, version)."""
    out = {}
    for key, (dataset, algorithm) in {
        "audit": ("audit", "logreg"),
        "audit_na": ("audit_na", "logreg"),
        "audit_gbm": ("audit_na", "gbm"),
    }.items():
        manifest = trained(dataset, algorithm)
        name, version, _ = _db.publish(manifest.ref, store=session_store, dsn=db)
        out[key] = (name, version)
    return out


@pytest.fixture
def conn(db: str) -> Iterator[Any]:
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


@pytest.fixture
def table(conn) -> Iterator[str]:
    """A fresh applications table with feature, score and version columns."""
    name = "applications"
    create_table(
        conn,
        name,
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "batch integer, prediction integer, probability_0 double precision, "
        "probability_1 double precision, model_version integer",
    )
    yield name
    conn.execute(f"DROP TABLE IF EXISTS {name}")


def create_table(
    conn, name: str, before: str, after: str, types: dict[str, str] | None = None
) -> None:
    """A table with the feature columns (their types in FEATURES unless ``types`` says)
    between the ``before`` and ``after`` column definitions."""
    features = ", ".join(f"{c} {(types or {}).get(c, kind)}" for _, c, kind in FEATURES)
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE TABLE {name} ({before}, {features}, {after})")


def csv_rows(data_dir: Path, filename: str = "audit_na.csv") -> list[dict[str, str]]:
    with open(data_dir / filename, newline="") as f:
        return list(csv.DictReader(f))


def copy_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([row[field] for field, _, _ in FEATURES])
    return out.getvalue()


def load(conn, table: str, rows: list[dict[str, str]], how: str = "copy") -> None:
    """Insert rows (CSV strings, 'N/A' for missing) by COPY, one INSERT ... SELECT, or one
    single-row INSERT each."""
    if how == "copy":
        with conn.cursor().copy(
            f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT csv, NULL 'N/A')"
        ) as copy:
            copy.write(copy_text(rows))
        return
    values = [[None if row[f] == "N/A" else row[f] for f, _, _ in FEATURES] for row in rows]
    casts = ", ".join(f"%s::{kind}" for _, _, kind in FEATURES)
    if how == "single":
        with conn.transaction():
            for row in values:
                conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({casts})", row)
        return
    columns = list(zip(*values, strict=True))
    unnest = ", ".join(f"%s::{kind}[]" for _, _, kind in FEATURES)
    conn.execute(
        f"INSERT INTO {table} ({COLUMNS}) SELECT * FROM unnest({unnest})",
        [list(c) for c in columns],
    )


def expected(session_store, name: str, version: int, rows: list[dict[str, str]]) -> Any:
    model = scorekit.load_model(f"{name}@{version}", store=session_store, engine="native")
    return model.predict_columns({f: [row[f] for row in rows] for f, _, _ in FEATURES})


def assert_scored(conn, table: str, want: Any, version: int) -> None:
    got = conn.execute(
        f"SELECT prediction, probability_0, probability_1, model_version FROM {table} ORDER BY id"
    ).fetchall()
    assert len(got) == len(want["prediction"])
    assert [g[0] for g in got] == want["prediction"].tolist()
    np.testing.assert_allclose([g[1] for g in got], want["probability(0)"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose([g[2] for g in got], want["probability(1)"], rtol=0, atol=TOLERANCE)
    assert {g[3] for g in got} == {version}


# --- install ----------------------------------------------------------------------------------
def test_install_is_idempotent_and_keeps_models(db: str, published) -> None:
    message = _db.install(db)
    assert "PL/Python imports from" in message and "bytecode" not in message
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM scorekit.models").fetchone()[0] >= 2


def test_install_writes_the_bytecode_the_server_loads(tmp_path: Path) -> None:
    """What db install writes so that the server's connections load scorekit's bytecode rather
    than compile its sources (the server's OS user can't write it): a pyc beside each module,
    which the import system accepts for that source (magic number, timestamp-checked, the
    source's mtime and size), even where this process writes no bytecode of its own."""
    package = tmp_path / "scorekit"
    shutil.copytree(
        Path(scorekit.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    assert _db.byte_compile(package)
    modules = sorted(package.rglob("*.py"))
    assert len(modules) > 30
    for module in modules:
        cached = module.parent / "__pycache__" / f"{module.stem}.{sys.implementation.cache_tag}.pyc"
        header = cached.read_bytes()[:16]
        source = module.stat()
        assert header[:4] == importlib.util.MAGIC_NUMBER, module
        assert header[4:8] == bytes(4), module  # flags 0: checked by timestamp
        assert int.from_bytes(header[8:12], "little") == int(source.st_mtime) & 0xFFFFFFFF
        assert int.from_bytes(header[12:16], "little") == source.st_size & 0xFFFFFFFF


def test_install_needs_a_superuser(db: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dbname = conninfo_to_dict(db)["dbname"]
    url = make_conninfo(
        host="127.0.0.1", dbname=dbname, user=PLAIN_LOGIN[0], password=PLAIN_LOGIN[1]
    )
    with pytest.raises(scorekit.UsageError, match=r"needs a superuser.*sk_test_plain"):
        _db.install(url)


# --- scorekit.predict and predict_batch -------------------------------------------------------
@pytest.mark.parametrize("key", ["audit", "audit_na"])
def test_predict_equals_the_python_engine(conn, published, session_store, data_dir, key) -> None:
    name, version = published[key]
    rows = csv_rows(data_dir)
    want = expected(session_store, name, version, rows)
    records = [{f: (None if row[f] == "N/A" else row[f]) for f, _, _ in FEATURES} for row in rows]
    got = conn.execute(
        "SELECT scorekit.predict(%s, r) FROM jsonb_array_elements(%s::jsonb) r",
        [name, json.dumps(records)],
    ).fetchall()
    batch = conn.execute(
        "SELECT ordinal, scores FROM scorekit.predict_batch(%s, %s::jsonb) ORDER BY ordinal",
        [f"{name}@{version}", json.dumps(records)],
    ).fetchall()
    assert [b[0] for b in batch] == list(range(1, len(rows) + 1))
    for scored in ([g[0] for g in got], [b[1] for b in batch]):
        assert [s["prediction"] for s in scored] == want["prediction"].tolist()
        np.testing.assert_allclose(
            [s["probability(1)"] for s in scored], want["probability(1)"], rtol=0, atol=TOLERANCE
        )
        assert {(s["model"], s["version"]) for s in scored} == {(name, version)}


def test_predict_reads_rows_by_column_name_ignoring_case(conn, published, table) -> None:
    name, _ = published["audit"]
    conn.execute(
        f"INSERT INTO {table} ({COLUMNS}) VALUES "
        "(38, 'Private', 'College', 'Unmarried', 'Service', 81838, 'Female', 'FALSE', 72)"
    )
    (scored,) = conn.execute(
        f"SELECT scorekit.predict(%s, to_jsonb(t)) FROM {table} t", [name]
    ).fetchone()
    assert scored["prediction"] in (0, 1)


def test_predict_names_absent_fields_and_unknown_models(conn, published) -> None:
    name, _ = published["audit"]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="required field is absent"):
        conn.execute("SELECT scorekit.predict(%s, '{\"Age\": 38}')", [name])
    with pytest.raises(psycopg.errors.UndefinedObject, match=r"no model named 'nope'.*published"):
        conn.execute("SELECT scorekit.predict('nope', '{}')")
    with pytest.raises(
        psycopg.errors.UndefinedObject, match="has no version 99 in this database; versions: 1"
    ):
        conn.execute("SELECT scorekit.predict(%s, '{}')", [f"{name}@99"])
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=r"JSON object.*got a JSON array"
    ):
        conn.execute("SELECT scorekit.predict(%s, '[1]')", [name])


def test_a_connection_loads_a_model_once(conn, published) -> None:
    name, _ = published["audit"]
    for _ in range(20):
        conn.execute(
            "SELECT scorekit.predict(%s, %s)",
            [name, json.dumps({f: None for f, _, _ in FEATURES})],
        )
    conn.execute("""
        CREATE OR REPLACE FUNCTION pg_temp.loaded() RETURNS integer LANGUAGE plpython3u AS $$
            return GD["scorekit"].loads
        $$""")
    assert conn.execute("SELECT pg_temp.loaded()").fetchone()[0] == 1


# --- triggers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["row", "statement"])
@pytest.mark.parametrize("how", ["copy", "select", "single"])
@pytest.mark.parametrize("key", ["audit", "audit_na"])
def test_triggers_score_like_the_python_engine(
    conn, published, session_store, data_dir, table, mode, how, key
) -> None:
    name, version = published[key]
    rows = csv_rows(data_dir)
    if how == "single":
        rows = rows[:150]
    _db.attach(table, name, mode=mode, version_column="model_version", dsn=conn.info.dsn)
    load(conn, table, rows, how)
    assert_scored(conn, table, expected(session_store, name, version, rows), version)


@pytest.mark.parametrize("mode", ["row", "statement"])
def test_rescore_and_versions(conn, db, published, session_store, data_dir, table, mode) -> None:
    """Promote and rollback take effect for the next statement; rescore rewrites old rows."""
    name, first = published["audit"]
    rows = csv_rows(data_dir)[:200]
    _db.attach(table, name, mode=mode, version_column="model_version", dsn=db)
    load(conn, table, rows[:100])
    # A second version of the same model: the audit_na model's artifacts under a new number.
    second = _publish_copy(conn, name, published["audit_na"])
    try:
        _db.promote(name, second, db)
        load(conn, table, rows[100:])
        versions = conn.execute(f"SELECT model_version FROM {table} ORDER BY id").fetchall()
        assert [v[0] for v in versions] == [first] * 100 + [second] * 100
        assert _db.rescore(table, stale_only=True, dsn=db) == 100
        want = expected(session_store, *published["audit_na"], rows)
        assert_scored(conn, table, want, second)
        assert _db.rollback(name, db) == first
        assert _db.rescore(table, dsn=db) == 200
        assert_scored(conn, table, expected(session_store, name, first, rows), first)
    finally:
        _remove_version(conn, name, second)


@pytest.mark.parametrize("clock", ["server", "query"])
def test_each_statement_of_a_transaction_reads_the_deployed_version(
    conn, db, published, data_dir, table, clock
) -> None:
    """Single-row INSERTs in one transaction, with a promote between them in the same
    transaction: the statements after it score with the new version, those before with the old.
    Statements nested in one top-level statement keep the version its first row was scored
    with, even across a promote between them. With the server's statement clock, and without
    it (the query that replaces it where ctypes can't find it)."""
    name, first = published["audit"]
    rows = csv_rows(data_dir)[:6]
    second = _publish_copy(conn, name, published["audit_na"])
    _db.attach(table, name, mode="row", version_column="model_version", dsn=db)
    conn.execute(
        f"""CREATE FUNCTION pg_temp.insert_promote_insert(version integer) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {table} ({COLUMNS}) SELECT {COLUMNS} FROM {table} ORDER BY id LIMIT 1;
            PERFORM scorekit.promote('{name}', version);
            INSERT INTO {table} ({COLUMNS}) SELECT {COLUMNS} FROM {table} ORDER BY id LIMIT 1;
        END $$"""
    )
    use_clock(conn, clock)
    try:
        with conn.transaction():
            load(conn, table, rows[:2], how="single")
            conn.execute("SELECT scorekit.promote(%s, %s)", [name, second])
            load(conn, table, rows[2:4], how="single")
            conn.execute("SELECT pg_temp.insert_promote_insert(%s)", [first])
            load(conn, table, rows[4:], how="single")
        versions = conn.execute(f"SELECT model_version FROM {table} ORDER BY id").fetchall()
        assert [v[0] for v in versions] == [first] * 2 + [second] * 4 + [first] * 2
    finally:
        _db.detach(table, db)
        _remove_version(conn, name, second)


def use_clock(conn, clock: str) -> None:
    """'server': check that the connection reads statements' start times through ctypes;
    'query': make it ask with a query instead, as where ctypes can't find the functions."""
    conn.execute(
        f"""DO LANGUAGE plpython3u $$
        if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
        if {clock == "query"}:
            GD["scorekit"]._statement_clock = None
        elif GD["scorekit"]._statement_clock is None:
            plpy.error("no statement clock in this server")
        $$"""
    )


@pytest.mark.parametrize("clock", ["server", "query"])
def test_a_procedures_transactions_and_a_rescore_read_the_version_anew(
    conn, db, published, data_dir, table, clock
) -> None:
    """Within one CALL, each transaction a procedure COMMITs is a statement of its own for the
    version check; within one statement, rescore scores with the version deployed at its call."""
    name, first = published["audit"]
    second = _publish_copy(conn, name, published["audit_na"])
    _db.attach(table, name, mode="row", version_column="model_version", dsn=db)
    copy = f"INSERT INTO {table} ({COLUMNS}) SELECT {COLUMNS} FROM {table} ORDER BY id LIMIT 1"
    conn.execute(
        f"""CREATE PROCEDURE pg_temp.load_promote_load(version integer) LANGUAGE plpgsql AS $$
        BEGIN
            {copy};
            COMMIT;
            PERFORM scorekit.promote('{name}', version);
            COMMIT;
            {copy};
        END $$"""
    )
    use_clock(conn, clock)
    try:
        load(conn, table, csv_rows(data_dir)[:1], how="single")
        conn.execute("CALL pg_temp.load_promote_load(%s)", [second])
        versions = conn.execute(f"SELECT model_version FROM {table} ORDER BY id").fetchall()
        assert [v[0] for v in versions] == [first, first, second]
        conn.execute(
            f"""DO $$ BEGIN
                {copy};
                PERFORM scorekit.promote('{name}', {first});
                PERFORM scorekit.rescore('{table}', stale_only => true);
            END $$"""
        )
        versions = conn.execute(f"SELECT model_version FROM {table} ORDER BY id").fetchall()
        assert [v[0] for v in versions] == [first] * 4
    finally:
        _db.detach(table, db)
        _remove_version(conn, name, second)


def reads(conn) -> int:
    """How many times this connection's triggers read an attachment's state with a query."""
    conn.execute(
        """CREATE OR REPLACE FUNCTION pg_temp.scorekit_reads() RETURNS integer
        LANGUAGE plpython3u AS $$
        if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
        return GD["scorekit"].reads
        $$"""
    )
    return int(conn.execute("SELECT pg_temp.scorekit_reads()").fetchone()[0])


@pytest.mark.parametrize("snapshot", ["ctypes", "query"])
def test_a_transaction_keeps_the_state_until_something_changes(
    conn, db, published, data_dir, table, snapshot
) -> None:
    """Within a transaction, a statement's version check reads nothing while the server's
    snapshot stays the same; another connection's promote changes the snapshot, this
    connection's own promote is counted, a promote rolled back (to a savepoint, or with its
    transaction) is not kept, and every new transaction reads (autocommit statements too). A
    repeatable-read transaction keeps the version its snapshot shows, as reading would. With the
    snapshot read through ctypes, and with the query that replaces it where ctypes can't."""
    use_snapshot(conn, snapshot)
    name, first = published["audit"]
    second = _publish_copy(conn, name, published["audit_na"])
    _db.attach(table, name, mode="row", version_column="model_version", dsn=db)
    rows = csv_rows(data_dir)[:9]
    insert = f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})"  # no savepoint: no subxid

    def versions() -> list[int]:
        found = conn.execute(f"SELECT model_version FROM {table} ORDER BY id").fetchall()
        return [v[0] for v in found]

    try:
        with conn.transaction():
            load(conn, table, rows[:1], how="single")
            start = reads(conn)
            load(conn, table, rows[1:6], how="single")
            # kept by at least one of the five (any commit in the cluster changes the snapshot)
            assert reads(conn) - start < 5
            _db.promote(name, second, db)  # another connection, committed
            start = reads(conn)
            load(conn, table, rows[6:7], how="single")
            assert reads(conn) > start
            with conn.transaction() as savepoint:
                conn.execute("SELECT scorekit.promote(%s, %s)", [name, first])
                scored = conn.execute(f"{insert} RETURNING model_version").fetchone()[0]
                assert scored == first  # this connection's own promote, counted
                raise psycopg.Rollback(savepoint)
            load(conn, table, rows[8:9], how="single")
        assert versions() == [first] * 6 + [second] * 2
        assert conn.execute("SELECT scorekit.champion(%s)", [name]).fetchone()[0] == second
        start = reads(conn)
        for _ in range(3):
            conn.execute(insert)  # autocommit: three transactions, three reads
        assert reads(conn) == start + 3
        # A state read after this connection's own promote is not kept past its transaction,
        # even when rolling the promote back leaves the server's snapshot as it was: here an
        # older transaction is still open (the snapshot's xmin stays) and one with a later xid
        # ended first (its xmax stays).
        conn.execute(f"TRUNCATE {table}")
        with psycopg.connect(db) as older, _admin(db) as later:
            older.execute("SELECT pg_catalog.pg_current_xact_id()")  # open until the block ends
            with conn.transaction() as promoted:
                conn.execute("SELECT scorekit.promote(%s, %s)", [name, first])
                later.execute("SELECT pg_catalog.pg_current_xact_id()")
                conn.execute(insert)
                raise psycopg.Rollback(promoted)
            conn.execute(insert)
        assert versions() == [second]
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute(insert)
            _db.promote(name, first, db)  # another connection, after this snapshot was taken
            conn.execute(insert)
        conn.execute(insert)
        assert versions() == [second, second, second, first]
    finally:
        _db.detach(table, db)
        _remove_version(conn, name, second)


def snapshot_mode(conn, force: str | None = None) -> str:
    """How the connection reads statements' snapshots: 'ctypes' (a verified SnapshotReader),
    'unverified' (the query, the reader still to be checked) or 'query'. ``force``: 'query'
    drops the reader, as where ctypes can't find the function; 'ctypes' checks it now (against
    a pg_current_snapshot() of its own, as a refresh would)."""
    conn.execute(
        """CREATE OR REPLACE FUNCTION pg_temp.scorekit_snapshot_mode(force text) RETURNS text
        LANGUAGE plpython3u AS $$
        if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
        runtime = GD["scorekit"]
        if force == "query":
            runtime._snapshot_reader = runtime._unverified_reader = None
        elif force == "ctypes" and runtime._unverified_reader is not None:
            shown = plpy.execute("SELECT pg_catalog.pg_current_snapshot()::text AS s")
            runtime._verify_snapshot(shown[0]["s"])
        if runtime._snapshot_reader is not None:
            return "ctypes"
        return "unverified" if runtime._unverified_reader is not None else "query"
        $$"""
    )
    return str(conn.execute("SELECT pg_temp.scorekit_snapshot_mode(%s)", [force]).fetchone()[0])


def use_snapshot(conn, snapshot: str) -> None:
    """'ctypes': make the connection read statements' snapshots through ctypes (checked first;
    a transaction ending between the reading and the query makes the check try again);
    'query': make it ask pg_current_snapshot() instead, as where ctypes can't."""
    for _ in range(10):
        mode = snapshot_mode(conn, snapshot)
        if mode == snapshot:
            return
        if mode == "query":
            pytest.skip("this server has no snapshot reader (another version or no ctypes)")
    pytest.fail(f"this server's snapshots could not be read by {snapshot!r}")


def test_the_snapshot_reader_is_checked_by_the_first_reads(db, published, table) -> None:
    """A new connection reads snapshots with the query until a refresh has seen the ctypes
    reading agree with pg_current_snapshot(); from then on through ctypes."""
    name, _ = published["audit"]
    _db.attach(table, name, dsn=db)
    insert = f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})"
    with psycopg.connect(db, autocommit=True) as fresh:
        assert snapshot_mode(fresh) == "unverified"
        for _ in range(10):  # each autocommit INSERT reads, and so checks, until one agrees
            fresh.execute(insert)
            if snapshot_mode(fresh) == "ctypes":
                break
        assert snapshot_mode(fresh) == "ctypes"


def test_a_snapshot_reading_that_disagrees_with_the_server_is_not_used(conn) -> None:
    """A ctypes reading of another layout (as a future server's might be) is never used, nor
    is its list of xids read through its pointer unless its scalars agree: the runtime keeps
    asking with the query, and stops trying after SNAPSHOT_TRIES disagreements. A reading older
    than the query's, as the statement's snapshot may be when a transaction ends in between,
    counts as none. A server of a version whose layout is not known is not read at all."""
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute(
        """DO LANGUAGE plpython3u $$
        if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
        from scorekit import _plpython
        shown = plpy.execute("SELECT pg_catalog.pg_current_snapshot()::text AS s")[0]["s"]
        xmin, xmax, listed = shown.split(":")
        xmin, xmax = int(xmin) & 0xFFFFFFFF, int(xmax) & 0xFFFFFFFF
        count = len([x for x in listed.split(",") if x])

        class OtherLayout:
            def header(self):
                return xmax + 1, xmin, count  # two fields elsewhere

            def __call__(self):
                plpy.error("followed a pointer of a layout that disagrees")

        class OtherList(OtherLayout):
            def header(self):
                return xmin, xmax, count

            def __call__(self):
                return xmin, xmax, (xmax + 7,) * (count + 1)  # an xid list of its own

        class Older(OtherLayout):
            def header(self):
                return xmin - 1, xmax - 1, count

        found = []
        for reader in (OtherLayout(), OtherList()):
            runtime = _plpython.Runtime(plpy, GD)
            runtime._unverified_reader = reader
            for _ in range(_plpython.SNAPSHOT_TRIES - 1):
                runtime._verify_snapshot(shown)
            found.append(runtime._unverified_reader is reader)  # still trying
            runtime._verify_snapshot(shown)
            found.append((runtime._snapshot_reader, runtime._unverified_reader))
        runtime = _plpython.Runtime(plpy, GD)
        runtime._unverified_reader = older = Older()
        for _ in range(_plpython.SNAPSHOT_TRIES + 1):
            runtime._verify_snapshot(shown)
        found.append(runtime._unverified_reader is older and runtime._snapshot_reader is None)
        found.append(_plpython.snapshot_reader(190000))
        plpy.notice(repr(found))
        $$"""
    )
    assert notices == ["[True, (None, None), True, (None, None), True, None]"]


def test_without_the_counting_trigger_every_statement_reads(db, published, table) -> None:
    """A connection that starts while scorekit_changed is disabled (or was never installed)
    can't see its own changes counted, so it keeps nothing: each statement reads."""
    name, _ = published["audit"]
    _db.attach(table, name, dsn=db)
    insert = f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})"
    with _admin(db) as admin:
        admin.execute("ALTER TABLE scorekit.deployments DISABLE TRIGGER scorekit_changed")
        try:
            with psycopg.connect(db, autocommit=True) as fresh:
                fresh.execute(insert)  # boots the runtime
                with fresh.transaction():
                    start = reads(fresh)
                    fresh.execute(insert)
                    fresh.execute(insert)
                    assert reads(fresh) == start + 2
        finally:
            admin.execute("ALTER TABLE scorekit.deployments ENABLE ALWAYS TRIGGER scorekit_changed")


def test_dropping_a_table_that_is_not_attached_counts_no_change(conn) -> None:
    """scorekit._changed() runs only when an attached table goes (the DROP's event trigger
    deletes its attachment): other DROPs start no Python in the session."""
    count = """DO LANGUAGE plpython3u $$
        plpy.notice(str(GD.get("scorekit_changes", 0)))
        $$"""
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute(count)
    conn.execute("CREATE TABLE not_attached (i integer)")
    conn.execute("DROP TABLE not_attached")
    conn.execute(count)
    assert len(notices) == 2 and notices[0] == notices[1]


def test_a_promote_this_connection_commits_reaches_every_attached_table(
    conn, db, published, table
) -> None:
    """A state of another table, read in the transaction that promoted, is not kept after it
    commits (each transaction reads at its first statement), even where the server's snapshot
    text is then the same as when it was read: an older transaction still open keeps its xmin,
    and one with a later xid that ended first keeps its xmax; only this connection's own xid,
    which its own snapshots never list, has ended."""
    name, first = published["audit"]
    second = _publish_copy(conn, name, published["audit_na"])
    create_table(
        conn,
        "other_applications",
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "prediction integer, probability_0 double precision, "
        "probability_1 double precision, model_version integer",
    )
    for attached in (table, "other_applications"):
        _db.attach(attached, name, version_column="model_version", dsn=db)
    insert = f"INSERT INTO {{}} ({COLUMNS}) VALUES ({GOOD})"
    try:
        with psycopg.connect(db) as older, _admin(db) as later:
            older.execute("SELECT pg_catalog.pg_current_xact_id()")  # open until the block ends
            with conn.transaction():
                conn.execute("SELECT pg_catalog.pg_current_xact_id()")
                later.execute("SELECT pg_catalog.pg_current_xact_id()")
                conn.execute(insert.format("other_applications"))  # read under v1
                conn.execute("SELECT scorekit.promote(%s, %s)", [name, second])
                conn.execute(insert.format(table))  # sees the promote counted
            conn.execute(insert.format("other_applications"))
        versions = conn.execute(
            "SELECT model_version FROM other_applications ORDER BY id"
        ).fetchall()
        assert [v[0] for v in versions] == [first, second]
    finally:
        conn.execute("DROP TABLE other_applications")
        _remove_version(conn, name, second)


def test_statement_mode_writes_the_engines_probabilities_exactly(
    conn, db, published, session_store, data_dir
) -> None:
    """Bit for bit: the probability the write-back UPDATE computes as 1 - the other (both
    double precision columns), and the values sent as text when a column is real."""
    name, version = published["audit"]
    create_table(
        conn,
        "exact",
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "prediction integer, probability_0 double precision, probability_1 double precision, "
        "p0_real real",
    )
    rows = csv_rows(data_dir)[:300]
    want = expected(session_store, name, version, rows)
    p0, p1 = want["probability(0)"], want["probability(1)"]
    assert np.array_equal(p0, 1.0 - p1) or np.array_equal(p1, 1.0 - p0)  # the UPDATE computes
    try:
        _db.attach("exact", name, mode="statement", dsn=db)
        load(conn, "exact", rows)
        got = np.array(
            conn.execute("SELECT probability_0, probability_1 FROM exact ORDER BY id").fetchall()
        )
        assert np.array_equal(got[:, 0], p0) and np.array_equal(got[:, 1], p1)
        outputs = {
            "prediction": "prediction",
            "probability(0)": "p0_real",
            "probability(1)": "probability_1",
        }
        _db.attach("exact", name, mode="statement", outputs=outputs, dsn=db)
        conn.execute("TRUNCATE exact")
        load(conn, "exact", rows)
        got = np.array(
            conn.execute("SELECT p0_real, probability_1 FROM exact ORDER BY id").fetchall()
        )
        assert np.array_equal(got[:, 0].astype(np.float32), p0.astype(np.float32))
        assert np.array_equal(got[:, 1], p1)
    finally:
        conn.execute("DROP TABLE exact")


def _write_back_paths(conn, table: str) -> set[str]:
    """Which write-back UPDATEs this connection has prepared for ``table``: "range" finds the
    rows by key range, "key" joins their keys."""
    conn.execute(
        """CREATE OR REPLACE FUNCTION pg_temp.write_back_paths(tbl oid) RETURNS text[]
        LANGUAGE plpython3u AS $$
        plans = GD["scorekit"]._tables[str(tbl)].write_plans
        return sorted({"range" if ranged else "key" for _, ranged in plans})
        $$"""
    )
    (paths,) = conn.execute(
        "SELECT pg_temp.write_back_paths(%s::regclass::oid)", [table]
    ).fetchone()
    return set(paths)


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param(list(range(11, 311)), id="ascending"),
        pytest.param(list(range(310, 10, -1)), id="descending"),
        pytest.param([i * 7 % 300 + 11 for i in range(300)], id="shuffled"),
        pytest.param([11, *range(13, 312)], id="gap"),
        pytest.param([*range(11, 161), *range(11 + 1000, 161 + 1000)], id="two-ranges"),
    ],
)
@pytest.mark.parametrize("key_type", ["smallint", "integer", "bigint", "numeric"])
def test_statement_mode_writes_back_by_key_range_or_by_key(
    conn, db, published, session_store, data_dir, ids, key_type
) -> None:
    """Scores reach the rows of their own keys whichever way the write-back finds them: by
    range where a chunk's integer keys are every number from the lowest to the highest (in any
    order), by key otherwise; rows already in the table, in or around the range, keep theirs."""
    name, version = published["audit"]
    create_table(
        conn,
        "ranged",
        f"id {key_type} PRIMARY KEY",
        "prediction integer, probability_0 double precision, probability_1 double precision",
    )
    rows = csv_rows(data_dir)[: len(ids) + 20]
    old, new = rows[:20], rows[20:]
    old_ids = [*range(1, 11), 312, *range(1161, 1170)]  # below, between and above the new keys
    try:
        _db.attach("ranged", name, mode="statement", dsn=db)
        for keys, batch in ((old_ids, old), (ids, new)):
            values = [[None if r[f] == "N/A" else r[f] for f, _, _ in FEATURES] for r in batch]
            unnest = ", ".join(f"%s::{kind}[]" for _, _, kind in FEATURES)
            conn.execute(
                f"INSERT INTO ranged (id, {COLUMNS}) SELECT * FROM unnest(%s::{key_type}[], "
                f"{unnest})",
                [keys, *(list(c) for c in zip(*values, strict=True))],
            )
        want = expected(session_store, name, version, old + new)
        order = np.argsort(np.array(old_ids + ids), kind="stable")
        got = conn.execute(
            "SELECT prediction, probability_0, probability_1 FROM ranged ORDER BY id"
        ).fetchall()
        assert [g[0] for g in got] == want["prediction"][order].tolist()
        np.testing.assert_allclose(
            [g[2] for g in got], want["probability(1)"][order], rtol=0, atol=TOLERANCE
        )
        np.testing.assert_allclose(
            [g[1] for g in got], want["probability(0)"][order], rtol=0, atol=TOLERANCE
        )
        # the rows already there are not a range: they were written back by key
        ranged = key_type != "numeric" and sorted(ids) == [*range(min(ids), max(ids) + 1)]
        assert _write_back_paths(conn, "ranged") == ({"key", "range"} if ranged else {"key"})
    finally:
        conn.execute("DROP TABLE ranged")


def _older(row: dict[str, str], years: int) -> dict[str, str]:
    return {**row, "Age": row["Age"] if row["Age"] == "N/A" else str(int(row["Age"]) + years)}


@pytest.mark.parametrize("mode", ["row", "statement"])
@pytest.mark.parametrize("how", ["every-row", "some-rows", "one-row-each"])
def test_an_update_of_a_feature_scores_its_rows_again(
    conn, db, published, session_store, data_dir, table, mode, how
) -> None:
    """In either mode an UPDATE of feature columns leaves each row it changed scored for its new
    values (the statement mode at the end of the UPDATE); the other rows keep their scores, and
    an UPDATE of other columns scores nothing."""
    name, version = published["audit"]
    rows = csv_rows(data_dir)[:300]
    _db.attach(table, name, mode=mode, version_column="model_version", dsn=db)
    load(conn, table, rows)
    ids = [i for (i,) in conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]
    versions = f"SELECT xmin::text FROM {table} ORDER BY id"  # each row version's writer
    written = [x for (x,) in conn.execute(versions).fetchall()]
    changed = {
        "every-row": set(range(len(rows))),
        "some-rows": set(range(0, len(rows), 3)),
        "one-row-each": {5, 17, 250},
    }[how]
    if how == "one-row-each":
        with conn.transaction():
            for i in sorted(changed):
                conn.execute(
                    f"UPDATE {table} SET age = age + 40, employment = 'Private' WHERE id = %s",
                    [ids[i]],
                )
    else:
        conn.execute(
            f"UPDATE {table} SET age = age + 40, employment = 'Private' WHERE id = ANY (%s)",
            [[ids[i] for i in changed]],
        )
    rewritten = [x for (x,) in conn.execute(versions).fetchall()]
    assert [i for i in range(len(rows)) if rewritten[i] != written[i]] == sorted(changed)
    now = [
        {**_older(row, 40), "Employment": "Private"} if i in changed else row
        for i, row in enumerate(rows)
    ]
    assert_scored(conn, table, expected(session_store, name, version, now), version)
    conn.execute(f"UPDATE {table} SET batch = 7, model_version = NULL")  # no feature
    assert conn.execute(f"SELECT count(model_version) FROM {table}").fetchone()[0] == 0


@pytest.mark.parametrize("on_error", ["raise", "null"])
def test_a_bad_value_in_an_update_of_the_statement_mode_is_named(
    conn, db, published, table, on_error
) -> None:
    name, version = published["audit"]
    _db.attach(table, name, mode="statement", on_error=on_error, dsn=db)
    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD}), ({GOOD}), ({GOOD})")
    first, bad, last = [i for (i,) in conn.execute(f"SELECT id FROM {table} ORDER BY id")]
    before = conn.execute(f"SELECT probability_1 FROM {table} ORDER BY id").fetchall()
    update = f"UPDATE {table} SET employment = CASE id WHEN {bad} THEN 'Martian' ELSE 'Private' END"
    if on_error == "raise":
        with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
            conn.execute(update)
        message = caught.value.diag.message_primary
        assert f"model {name}@{version} can't score row (id={bad}) updated by this UPDATE" in (
            message or ""
        )
        assert "'Martian'" in (message or "")
        assert caught.value.diag.column_name == "employment"
        kept = conn.execute(f"SELECT employment, probability_1 FROM {table} ORDER BY id")
        assert [r[0] for r in kept.fetchall()] == ["Private"] * 3  # the UPDATE was undone
        return
    errors_before = conn.execute("SELECT coalesce(max(id), 0) FROM scorekit.errors").fetchone()[0]
    conn.execute(update)
    got = conn.execute(f"SELECT id, prediction, probability_1 FROM {table} ORDER BY id").fetchall()
    assert got[1][1:] == (None, None)
    assert got[0][2] is not None and got[2][2] is not None and got[0][0] == first
    assert got[2][0] == last and before[1][0] is not None
    (key, message) = conn.execute(
        "SELECT row_key, message FROM scorekit.errors WHERE id > %s", [errors_before]
    ).fetchone()
    assert key == {"id": str(bad)}
    assert f"row (id={bad}) updated by this UPDATE on public.applications" in message


def test_an_update_finds_its_rows_by_keys_of_any_type(
    conn, db, published, session_store, data_dir
) -> None:
    """The statement mode's UPDATE trigger notes each row's key as PL/Python hands it over
    (bytes, a date as text, a bool, a float) and finds the row again by it."""
    name, version = published["audit"]
    create_table(
        conn,
        "keyed",
        "tag bytea, day date, flag boolean, weight double precision, "
        "PRIMARY KEY (tag, day, flag, weight)",
        "prediction integer, probability_0 double precision, probability_1 double precision",
    )
    rows = csv_rows(data_dir)[:40]
    try:
        _db.attach("keyed", name, mode="statement", dsn=db)
        values = [[None if r[f] == "N/A" else r[f] for f, _, _ in FEATURES] for r in rows]
        unnest = ", ".join(f"%s::{kind}[]" for _, _, kind in FEATURES)
        conn.execute(
            f"INSERT INTO keyed (tag, day, flag, weight, {COLUMNS}) SELECT "
            "pg_catalog.decode(lpad(to_hex(n), 4, '0') || '5c22', 'hex'), "
            f"date '2026-01-01' + n::integer, n %% 2 = 0, n / 3.0, {COLUMNS} "
            f"FROM unnest({unnest}) WITH ORDINALITY AS f({COLUMNS}, n)",
            [*(list(c) for c in zip(*values, strict=True))],
        )
        conn.execute("UPDATE keyed SET age = age + 40 WHERE day < date '2026-01-21'")
        now = [_older(row, 40) if i < 19 else row for i, row in enumerate(rows)]
        want = expected(session_store, name, version, now)
        got = conn.execute("SELECT prediction, probability_1 FROM keyed ORDER BY day").fetchall()
        assert [g[0] for g in got] == want["prediction"].tolist()
        np.testing.assert_allclose(
            [g[1] for g in got], want["probability(1)"], rtol=0, atol=TOLERANCE
        )
    finally:
        conn.execute("DROP TABLE keyed")


def test_the_statement_mode_tells_a_role_what_to_grant(conn, db, published, table) -> None:
    """Its write-back UPDATE and, for an UPDATE of features, its read of the rows again need
    privileges beyond the statement's own: a role without them is told which to grant."""
    name, _ = published["audit"]
    _db.attach(table, name, mode="statement", dsn=db)

    def as_scorer(statement: str) -> None:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE sk_test_scorer")
            conn.execute(statement)

    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    conn.execute(f"GRANT INSERT, UPDATE ON {table} TO sk_test_scorer")
    for statement in (
        f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})",
        f"UPDATE {table} SET age = 50",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="GRANT SELECT, UPDATE ON"):
            as_scorer(statement)
    conn.execute(f"GRANT SELECT ON {table} TO sk_test_scorer")
    as_scorer(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    as_scorer(f"UPDATE {table} SET age = 50")
    conn.execute(f"REVOKE ALL ON {table} FROM sk_test_scorer")
    assert conn.execute(f"SELECT count(prediction) FROM {table}").fetchone()[0] == 2


def test_the_statement_mode_is_refused_for_a_child_table(conn, db, published) -> None:
    """Rows written through a parent fire no statement trigger of the child."""
    name, _ = published["audit"]
    create_table(
        conn,
        "parent",
        "id bigint GENERATED ALWAYS AS IDENTITY",
        "prediction integer, probability_0 double precision, probability_1 double precision",
    )
    try:
        conn.execute("ALTER TABLE parent ADD PRIMARY KEY (id)")
        conn.execute("CREATE TABLE child (LIKE parent INCLUDING ALL) INHERITS (parent)")
        with pytest.raises(scorekit.UsageError, match="inherits from another table"):
            _db.attach("child", name, mode="statement", dsn=db)
        _db.attach("child", name, mode="row", dsn=db)
    finally:
        conn.execute("DROP TABLE parent CASCADE")


def test_install_moves_the_statement_mode_off_a_before_update_trigger(
    conn, db, published, table
) -> None:
    """A table attached in mode 'statement' by an earlier install kept a BEFORE UPDATE row
    trigger; installing again replaces it with the AFTER triggers, on the same columns."""
    name, _ = published["audit"]
    _db.attach(table, name, mode="statement", dsn=db)
    for trigger in ("scorekit_updated_row", "scorekit_updated"):
        conn.execute(f"DROP TRIGGER {trigger} ON {table}")
    conn.execute(
        f"CREATE TRIGGER scorekit_row BEFORE UPDATE OF age, hours ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION scorekit._row_trigger()"
    )
    _db.install(db)
    _db.install(db)  # again: nothing left to move
    triggers = dict(
        conn.execute(
            "SELECT tgname::text, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgrelid = %s::regclass ORDER BY 1",
            [table],
        ).fetchall()
    )
    assert sorted(triggers) == ["scorekit_inserted", "scorekit_updated", "scorekit_updated_row"]
    assert "AFTER UPDATE OF age, hours" in triggers["scorekit_updated_row"]
    assert "FOR EACH ROW" in triggers["scorekit_updated_row"]
    assert "AFTER UPDATE OF age, hours" in triggers["scorekit_updated"]
    assert "FOR EACH STATEMENT" in triggers["scorekit_updated"]
    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    conn.execute(f"UPDATE {table} SET prediction = NULL, model_version = NULL")
    conn.execute(f"UPDATE {table} SET hours = 40")
    assert conn.execute(f"SELECT prediction FROM {table}").fetchone()[0] is not None


def test_a_connection_older_than_an_upgrade_is_asked_to_reconnect(conn, db, published, table):
    name, _ = published["audit"]
    _db.attach(table, name, dsn=db)
    # A runtime of this API that an older _boot made (no GD["scorekit_api"]) is kept.
    conn.execute(
        """DO LANGUAGE plpython3u $$
        if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
        del GD["scorekit_api"]
        $$"""
    )
    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    # What a connection that imported an older scorekit before `scorekit db install` looks like:
    # a runtime of another API in GD.
    conn.execute(
        """DO LANGUAGE plpython3u $$
        if GD.get("scorekit_api") != 4: plpy.execute("SELECT scorekit._boot()")
        GD["scorekit"].API = 1
        del GD["scorekit_api"]
        $$"""
    )
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as caught:
        conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    assert "upgraded in this database after this connection loaded it" in str(caught.value)
    assert "reconnect" in (caught.value.diag.message_hint or "")


def test_the_row_trigger_writes_only_the_score_columns(conn, db, published, data_dir) -> None:
    """The row's other columns keep exactly what the INSERT, an UPDATE and earlier BEFORE
    triggers put there (the trigger hands back only its score columns)."""
    name, _ = published["audit"]
    create_table(
        conn,
        "stamped",
        "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "stamp text, precise numeric, measured real, shifted integer[], prediction integer, "
        "probability_0 double precision, probability_1 double precision",
    )
    conn.execute(
        """CREATE FUNCTION pg_temp.stamp() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.stamp := 'set by an earlier trigger'; RETURN NEW; END $$"""
    )
    # Triggers of one kind fire in name order: "a_stamp" before "scorekit_row".
    conn.execute(
        "CREATE TRIGGER a_stamp BEFORE INSERT ON stamped FOR EACH ROW "
        "EXECUTE FUNCTION pg_temp.stamp()"
    )
    _db.attach("stamped", name, dsn=db)
    try:
        load(conn, "stamped", csv_rows(data_dir)[:1], how="single")
        conn.execute("UPDATE stamped SET precise = 0.10000000000000000000000000000000000001")
        # an array whose lower bound is 0: PL/Python's list of it would lose that bound
        conn.execute("UPDATE stamped SET measured = 'NaN', shifted = '[0:1]={1,2}', age = age + 1")
        stamp, precise, measured, shifted, prediction = conn.execute(
            "SELECT stamp, precise::text, measured::text, shifted::text, prediction FROM stamped"
        ).fetchone()
        assert stamp == "set by an earlier trigger"
        assert precise == "0.10000000000000000000000000000000000001"
        assert measured == "NaN"
        assert shifted == "[0:1]={1,2}"
        assert prediction is not None
    finally:
        conn.execute("DROP TABLE stamped")


def _publish_copy(conn, name: str, source: tuple[str, int]) -> int:
    """Publish source's artifacts as the next version of ``name`` (what a retrain would do)."""
    (version,) = conn.execute(
        "SELECT max(version) + 1 FROM scorekit.models WHERE name = %s", [name]
    ).fetchone()
    conn.execute(
        "INSERT INTO scorekit.models (name, version, manifest, pmml, pickle, pmml_sha256, "
        "pickle_sha256) SELECT %s, %s, manifest || jsonb_build_object('name', %s::text, "
        "'version', %s::text), pmml, pickle, pmml_sha256, pickle_sha256 "
        "FROM scorekit.models WHERE name = %s AND version = %s",
        [name, version, name, str(version), *source],
    )
    return int(version)


def _remove_version(conn, name: str, version: int) -> None:
    conn.execute(
        "DELETE FROM scorekit.deployments WHERE model = %s AND id >= (SELECT min(id) FROM "
        "scorekit.deployments WHERE model = %s AND version = %s)",
        [name, name, version],
    )
    conn.execute("DELETE FROM scorekit.models WHERE name = %s AND version = %s", [name, version])


@pytest.mark.parametrize("mode", ["row", "statement"])
def test_concurrent_inserts_during_promotes_never_mix_versions(
    db, published, session_store, data_dir, table, conn, mode
) -> None:
    name, first = published["audit"]
    second = _publish_copy(conn, name, published["audit_na"])
    rows = csv_rows(data_dir)[:40]
    _db.attach(table, name, mode=mode, version_column="model_version", dsn=db)
    errors: list[BaseException] = []
    stop = threading.Event()

    def insert(worker: int) -> None:
        try:
            with psycopg.connect(db, autocommit=True) as own:
                for statement in range(25):
                    batch = worker * 1000 + statement
                    with own.cursor().copy(
                        f"COPY {table} ({COLUMNS}, batch) FROM STDIN (FORMAT csv, NULL 'N/A')"
                    ) as copy:
                        copy.write(copy_text(rows).replace("\r\n", f",{batch}\r\n"))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def flip() -> None:
        try:
            while not stop.is_set():
                _db.promote(name, second, db)
                _db.promote(name, first, db)
        except BaseException as exc:
            errors.append(exc)

    try:
        workers = [threading.Thread(target=insert, args=(w,)) for w in range(3)]
        flipper = threading.Thread(target=flip)
        flipper.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        flipper.join()
        assert not errors
        mixed = conn.execute(
            f"SELECT batch FROM {table} GROUP BY batch HAVING count(DISTINCT model_version) > 1 "
            "OR bool_or(model_version IS NULL)"
        ).fetchall()
        assert mixed == []
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 3 * 25 * len(rows)
        by_version = {
            first: expected(session_store, name, first, rows),
            second: expected(session_store, *published["audit_na"], rows),
        }
        seen = set()
        for _batch, version, p1 in conn.execute(
            f"SELECT batch, model_version, array_agg(probability_1 ORDER BY id) FROM {table} "
            "GROUP BY batch, model_version"
        ).fetchall():
            seen.add(version)
            np.testing.assert_allclose(p1, by_version[version]["probability(1)"], atol=TOLERANCE)
        assert seen == {first, second}  # promotes landed between the statements
    finally:
        _db.detach(table, db)
        _remove_version(conn, name, second)


# --- bad input ----------------------------------------------------------------------------------
GOOD = "38, 'Private', 'College', 'Unmarried', 'Service', 81838, 'Female', 'FALSE', 72"
UNSEEN = "38, 'Martian', 'College', 'Unmarried', 'Service', 81838, 'Female', 'FALSE', 72"


@pytest.mark.parametrize("mode", ["row", "statement"])
def test_a_bad_row_fails_the_whole_statement_naming_it(conn, db, published, table, mode) -> None:
    name, version = published["audit"]
    _db.attach(table, name, mode=mode, dsn=db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD}), ({UNSEEN}), ({GOOD})")
    message = caught.value.diag.message_primary
    assert f"model {name}@{version} can't score row 2" in message
    assert "public.applications" in message
    assert "column employment (model field Employment)" in message
    assert "'Martian'" in message
    assert caught.value.diag.table_name == "public.applications"
    assert caught.value.diag.column_name == "employment"
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_text_that_is_not_a_number_is_refused(conn, db, published) -> None:
    name, _ = published["audit"]
    create_table(
        conn, "textual", "id serial PRIMARY KEY", "prediction integer",
        {column: "text" for _, column, _ in FEATURES},
    )  # fmt: skip
    try:
        _db.attach("textual", name, mode="statement", dsn=db)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"income.*'12x'"):
            conn.execute(
                f"INSERT INTO textual ({COLUMNS}) VALUES "
                "('38', 'Private', 'College', 'Unmarried', 'Service', '12x', 'Female', 'FALSE', "
                "'72')"
            )
    finally:
        conn.execute("DROP TABLE textual")


@pytest.mark.parametrize("mode", ["row", "statement"])
def test_on_error_null_keeps_the_row_and_records_why(conn, db, published, table, mode) -> None:
    name, version = published["audit"]
    _db.attach(table, name, mode=mode, on_error="null", version_column="model_version", dsn=db)
    before = conn.execute("SELECT coalesce(max(id), 0) FROM scorekit.errors").fetchone()[0]
    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD}), ({UNSEEN})")
    scored = conn.execute(
        f"SELECT id, prediction, probability_1, model_version FROM {table} ORDER BY id"
    ).fetchall()
    assert scored[0][1] is not None and scored[0][3] == version
    assert scored[1][1:] == (None, None, None)
    errors = conn.execute(
        "SELECT tbl, model, version, row_key, row_data, problems, message FROM scorekit.errors "
        "WHERE id > %s",
        [before],
    ).fetchall()
    assert len(errors) == 1
    tbl, model, err_version, key, data, problems, message = errors[0]
    assert (tbl, model, err_version) == ("public.applications", name, version)
    assert key == {"id": str(scored[1][0])}  # the key's values as text
    assert data["employment"] == "Martian"
    assert problems[0]["field"] == "Employment" and problems[0]["value"] == "Martian"
    assert "unseen category 'Martian'" in message


def test_a_tampered_model_row_is_refused(conn, db, published) -> None:
    name, version = published["audit"]
    tampered = _publish_copy(conn, name, (name, version))
    try:
        conn.execute(
            "UPDATE scorekit.models SET pmml = pmml || '\\x0a'::bytea "
            "WHERE name = %s AND version = %s",
            [name, tampered],
        )
        with pytest.raises(psycopg.errors.DataException, match="fails its integrity check"):
            conn.execute("SELECT scorekit.predict(%s, '{}')", [f"{name}@{tampered}"])
    finally:
        _remove_version(conn, name, tampered)


def test_attach_explains_missing_columns(conn, db, published) -> None:
    name, _ = published["audit"]
    conn.execute("DROP TABLE IF EXISTS bare")
    conn.execute("CREATE TABLE bare (id serial PRIMARY KEY, age integer)")
    try:
        with pytest.raises(scorekit.UsageError, match=r"no column for field.*Employment"):
            _db.attach("bare", name, dsn=db)
        conn.execute(
            "ALTER TABLE bare "
            + ", ".join(f"ADD COLUMN {c} {k}" for _, c, k in FEATURES if c != "age")
        )
        with pytest.raises(scorekit.UsageError, match="ADD COLUMN prediction integer"):
            _db.attach("bare", name, dsn=db)
        conn.execute("ALTER TABLE bare ADD COLUMN prediction text")
        with pytest.raises(scorekit.UsageError, match=r"mode 'statement'.*primary key"):
            conn.execute("ALTER TABLE bare DROP CONSTRAINT bare_pkey")
            _db.attach("bare", name, mode="statement", dsn=db)
        with pytest.raises(scorekit.UsageError, match="engine 'pypmml' would start a JVM"):
            _db.attach("bare", name, engine="pypmml", dsn=db)
    finally:
        conn.execute("DROP TABLE bare")


def test_names_are_quoted_never_spliced(conn, db, published) -> None:
    """Table and column names that look like SQL are only ever names."""
    name, version = published["audit"]
    weird = 'Robert"); DROP TABLE victims; --'
    conn.execute("DROP TABLE IF EXISTS victims")
    conn.execute("CREATE TABLE victims (x integer)")
    quoted = conn.execute("SELECT quote_ident(%s)", [weird]).fetchone()[0]
    conn.execute(f"DROP TABLE IF EXISTS {quoted}")
    conn.execute(
        f"CREATE TABLE {quoted} (id serial PRIMARY KEY, "
        + ", ".join(f'"{field}; --" {kind}' for field, _, kind in FEATURES)
        + ', "the prediction" integer)'
    )
    try:
        _db.attach(
            quoted,
            name,
            mode="statement",
            features={field: f"{field}; --" for field, _, _ in FEATURES},
            outputs={"prediction": "the prediction"},
            dsn=db,
        )
        cols = ", ".join(f'"{field}; --"' for field, _, _ in FEATURES)
        conn.execute(f"INSERT INTO {quoted} ({cols}) VALUES ({GOOD})")
        assert conn.execute(f'SELECT "the prediction" FROM {quoted}').fetchone()[0] in (0, 1)
        with pytest.raises(scorekit.UsageError, match=r"does not exist|invalid name"):
            _db.attach("victims; DROP TABLE victims", name, dsn=db)
        assert conn.execute("SELECT count(*) FROM victims").fetchone() == (0,)
        assert version
    finally:
        conn.execute(f"DROP TABLE {quoted}")
        conn.execute("DROP TABLE victims")


# --- roles ------------------------------------------------------------------------------------
def as_role(conn, role: str, sql: str, params: list[Any] | None = None) -> Any:
    with conn.transaction():
        conn.execute(f"SET LOCAL ROLE {role}")
        return conn.execute(sql, params).fetchall()


# Objects a hostile schema could plant: each matches scorekit's SQL exactly where pg_catalog's
# own needs a coercion or is polymorphic, so it would be chosen over pg_catalog's.
PLANTED = [
    "CREATE FUNCTION planted.boom2(regclass, regclass) RETURNS boolean",
    "CREATE OPERATOR planted.= (LEFTARG = regclass, RIGHTARG = regclass, FUNCTION = planted.boom2)",
    "CREATE FUNCTION planted.boom3(oid, regclass) RETURNS boolean",
    "CREATE OPERATOR planted.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = planted.boom3)",
    "CREATE FUNCTION planted.unnest(bigint[]) RETURNS SETOF bigint",
    "CREATE FUNCTION planted.unnest(text[]) RETURNS SETOF text",
    "CREATE FUNCTION planted.unnest(double precision[]) RETURNS SETOF double precision",
    "CREATE FUNCTION planted.array_position(smallint[], smallint) RETURNS integer",
    "CREATE FUNCTION planted.step(text, text) RETURNS text",
    "CREATE AGGREGATE planted.array_agg(text) (SFUNC = planted.step, STYPE = text)",
    "CREATE FUNCTION planted.fstep(text, double precision) RETURNS text",
    "CREATE AGGREGATE planted.array_agg(double precision) (SFUNC = planted.fstep, STYPE = text)",
    # pg_catalog has numeric - numeric and * numeric, not with an integer
    "CREATE FUNCTION planted.minus(numeric, integer) RETURNS numeric",
    "CREATE OPERATOR planted.- (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = planted.minus)",
    "CREATE FUNCTION planted.times(numeric, integer) RETURNS numeric",
    "CREATE OPERATOR planted.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = planted.times)",
    # varchar compares with text's =, through a cast: a varchar = varchar would match exactly
    "CREATE FUNCTION planted.same(varchar, varchar) RETURNS boolean",
    "CREATE OPERATOR planted.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = planted.same)",
]


def _plant(conn) -> None:
    conn.execute("DROP SCHEMA IF EXISTS planted CASCADE")
    conn.execute("CREATE SCHEMA planted")
    for statement in PLANTED:
        if statement.startswith("CREATE FUNCTION"):
            returns = statement.split(" RETURNS ")[1]
            body = "RETURN NEXT NULL; " if returns.startswith("SETOF") else ""
            statement += (
                f" LANGUAGE plpgsql AS $$BEGIN {body}RAISE EXCEPTION 'planted object called'; "
                "END $$"
            )
        conn.execute(statement)


@pytest.mark.parametrize("mode", ["row", "statement"])
def test_objects_planted_on_the_search_path_are_never_called(
    conn, db, published, data_dir, table, mode
) -> None:
    """scorekit resolves every name in pg_catalog, whatever the caller's search_path: operators
    and functions planted in a schema ahead on it (the pattern of CVE-2018-1058) would otherwise
    run with the privileges of whoever inserts into an attached table. Every entry point, with
    bad rows recorded (on_error 'null') so that the errors table is written too."""
    name, _ = published["audit"]
    _plant(conn)
    rows = csv_rows(data_dir)[:20]
    try:
        conn.execute("SET search_path = planted, public")
        conn.execute(
            "SELECT scorekit.attach(%s, %s, mode => %s, version_column => 'model_version', "
            "on_error => 'null')",
            [table, name, mode],
        )
        load(conn, table, rows[:10], how="single")
        load(conn, table, rows[10:])
        conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({UNSEEN})")
        conn.execute(f"SELECT scorekit.rescore('{table}', stale_only => true)")
        conn.execute(f"SELECT scorekit.rescore('{table}')")
        conn.execute(f"SELECT scorekit.predict(%s, to_jsonb(a)) FROM {table} a LIMIT 1", [name])
        conn.execute(
            f"SELECT * FROM scorekit.predict_batch(%s, "
            f"(SELECT jsonb_agg(a) FROM {table} a WHERE prediction IS NOT NULL))",
            [name],
        )
        conn.execute("SELECT scorekit.promote(%s, %s)", published["audit"])
        scored = conn.execute(
            f"SELECT count(*) FILTER (WHERE prediction IS NOT NULL), count(*) FROM {table}"
        ).fetchone()
        assert scored == (20, 21)
        errors = conn.execute(
            "SELECT count(*) FROM scorekit.errors WHERE tbl = %s", [f"public.{table}"]
        )
        assert errors.fetchone()[0] >= 1
        conn.execute(f"SELECT scorekit.detach('{table}')")
    finally:
        conn.execute("RESET search_path")
        conn.execute("DROP SCHEMA planted CASCADE")


def test_a_varchar_key_is_written_back_with_its_indexs_operator(
    conn, db, published, data_dir
) -> None:
    """The statement mode's write-back and rescore compare a varchar primary key with the
    operator its index uses, not one planted on the caller's search_path."""
    name, _ = published["audit"]
    create_table(
        conn,
        "keyed",
        "code varchar(12) PRIMARY KEY",
        "prediction integer, probability_0 double precision, probability_1 double precision",
    )
    _plant(conn)
    rows = csv_rows(data_dir)[:5]
    try:
        conn.execute("SET search_path = planted, public")
        conn.execute("SELECT scorekit.attach('keyed', %s, mode => 'statement')", [name])
        values = ", ".join(f"('k{i}', {GOOD})" for i in range(len(rows)))
        conn.execute(f"INSERT INTO keyed (code, {COLUMNS}) VALUES {values}")
        conn.execute("SELECT scorekit.rescore('keyed')")
        scored = conn.execute("SELECT count(prediction) FROM keyed").fetchone()
        assert scored == (len(rows),)
    finally:
        conn.execute("RESET search_path")
        conn.execute("DROP SCHEMA planted CASCADE")
        conn.execute("DROP TABLE keyed")


def test_the_tables_own_triggers_see_the_callers_search_path(
    conn, db, published, data_dir, table
) -> None:
    """The statement mode's write-back UPDATE and rescore fire the table's own UPDATE
    triggers, which may name objects without a schema, as on any UPDATE by the caller."""
    name, _ = published["audit"]
    conn.execute("DROP TABLE IF EXISTS audit_log")
    conn.execute("CREATE TABLE audit_log (id bigint, probability double precision)")
    conn.execute(
        """CREATE FUNCTION pg_temp.log_scores() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO audit_log VALUES (NEW.id, NEW.probability_1);  -- no schema named
            RETURN NULL;
        END $$"""
    )
    conn.execute(
        f"CREATE TRIGGER log_scores AFTER UPDATE OF probability_1 ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION pg_temp.log_scores()"
    )
    try:
        _db.attach(table, name, mode="statement", dsn=db)
        load(conn, table, csv_rows(data_dir)[:5])
        conn.execute(f"SELECT scorekit.rescore('{table}')")
        logged = conn.execute("SELECT count(*), count(probability) FROM audit_log").fetchone()
        assert logged == (10, 10)  # five rows written back, then rescored
    finally:
        conn.execute("DROP TABLE audit_log")


def test_a_role_with_neither_grant_can_read_or_change_nothing(conn, published) -> None:
    name, version = published["audit"]
    for sql, params in [
        ("SELECT pmml FROM scorekit.models", None),
        ("SELECT * FROM scorekit.deployments", None),
        ("SELECT scorekit.predict(%s, '{}')", [name]),
        ("SELECT scorekit.promote(%s, %s)", [name, version]),
        ("SELECT scorekit.rollback(%s)", [name]),
        ("INSERT INTO scorekit.deployments (model, version, action) VALUES (%s, %s, 'promote')",
         [name, version]),
        ("UPDATE scorekit.models SET pmml = NULL", None),
    ]:  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_role(conn, "sk_test_nobody", sql, params)


def test_a_scorer_scores_but_cannot_deploy(conn, db, published, table) -> None:
    name, version = published["audit"]
    _db.attach(table, name, mode="row", dsn=db)
    conn.execute(f"GRANT INSERT, SELECT ON {table} TO sk_test_scorer, sk_test_nobody")
    record = json.dumps({f: None for f, _, _ in FEATURES})
    (scored,) = as_role(conn, "sk_test_scorer", "SELECT scorekit.predict(%s, %s)", [name, record])
    assert scored[0]["version"] == version
    as_role(conn, "sk_test_scorer", f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD}) RETURNING id")
    assert conn.execute(f"SELECT prediction FROM {table}").fetchone()[0] in (0, 1)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role(conn, "sk_test_nobody", f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    for sql, params in [
        ("SELECT scorekit.promote(%s, %s)", [name, version]),
        ("INSERT INTO scorekit.models (name, version, manifest, pmml) VALUES ('x', 1, '{}', 'x')",
         None),
        ("UPDATE scorekit.models SET pmml = NULL", None),
        ("DELETE FROM scorekit.deployments", None),
    ]:  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_role(conn, "sk_test_scorer", sql, params)


def test_a_publisher_promotes_and_rolls_back(conn, published) -> None:
    name, version = published["audit"]
    assert as_role(conn, "sk_test_publisher", "SELECT scorekit.promote(%s, %s)", [name, version])
    assert as_role(conn, "sk_test_publisher", "SELECT scorekit.rollback(%s)", [name])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role(conn, "sk_test_publisher", "UPDATE scorekit.models SET pmml = NULL")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role(conn, "sk_test_publisher", "DELETE FROM scorekit.deployments")


# --- the command line -------------------------------------------------------------------------
def test_cli_publish_attach_promote_rollback(
    db, published, session_store, table, conn, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("SCOREKIT_STORE", str(session_store.url))
    name, version = published["audit"]
    assert main(["db", "publish", name, "--dsn", db]) == 0
    assert "already published (same artifacts)" in capsys.readouterr().out
    outputs = ["prediction=prediction", "probability(1)=probability_1"]
    attach = ["db", "attach", table, name, "--mode", "statement", "--output", *outputs]
    assert main([*attach, "--dsn", db]) == 0
    assert "probability_1 <- probability(1)" in capsys.readouterr().out
    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    assert conn.execute(f"SELECT probability_0 IS NULL, prediction FROM {table}").fetchone()[0]
    assert main(["db", "rescore", table, "--dsn", db]) == 0
    assert "rescored 1 rows" in capsys.readouterr().out
    assert main(["db", "promote", name, str(version), "--dsn", db]) == 0
    assert main(["db", "promote", name, str(version), "--dsn", db]) == 0
    assert main(["db", "rollback", name, "--dsn", db]) == 0
    assert f"now version {version}" in capsys.readouterr().out
    assert main(["db", "promote", name, "999", "--dsn", db]) == 4
    assert "not published in this database" in capsys.readouterr().err
    assert main(["db", "attach", "no_such_table", name, "--dsn", db]) == 2
    assert "table 'no_such_table'" in capsys.readouterr().err
    assert main(["db", "detach", table, "--dsn", db]) == 0
    assert "no longer scored" in capsys.readouterr().out


def test_array_literals_round_trip_through_postgresql(conn) -> None:
    from scorekit._plpython import array_literal

    texts = ['a"b', "back\\slash", "comma,brace{}", "NULL", "", "ünï", " padded ", None]
    assert conn.execute("SELECT %s::text::text[]", [array_literal(texts)]).fetchone()[0] == texts
    floats = [0.1, -0.0, 1e-300, 1.7976931348623157e308, 2.0 / 3.0]
    got = conn.execute("SELECT %s::text::float8[]", [array_literal(floats)]).fetchone()[0]
    assert got == floats
    mixed = [1.5, float("nan"), None, float("inf")]
    got = conn.execute("SELECT %s::text::float8[]", [array_literal(mixed)]).fetchone()[0]
    assert got == [1.5, None, None, float("inf")]
    ints = [1, None, -(2**62)]
    assert conn.execute("SELECT %s::text::int8[]", [array_literal(ints)]).fetchone()[0] == ints
    whole = [3, -(2**62), 0]
    assert conn.execute("SELECT %s::text::int8[]", [array_literal(whole)]).fetchone()[0] == whole
    assert array_literal([True, False]) == '{"True","False"}'  # bools are not ints here
    keys = ["17", "-4", "0"]  # integer keys read as text
    assert array_literal(keys) == "{17,-4,0}"
    assert conn.execute("SELECT %s::text::int8[]", [array_literal(keys)]).fetchone()[0] == [
        17,
        -4,
        0,
    ]
    odd = ["1", "", "2,3", "-"]
    assert conn.execute("SELECT %s::text::text[]", [array_literal(odd)]).fetchone()[0] == odd
    for commas in (["1,2", "3"], ["1,2"], ["-1", "2,-3"]):  # text keys that hold a comma
        got = conn.execute("SELECT %s::text::text[]", [array_literal(commas)]).fetchone()[0]
        assert got == commas


# --- review findings: each test failed before its fix --------------------------------------------
def test_an_untrusted_pickle_is_never_unpickled(conn, db, published) -> None:
    """Unpickling runs code; a publisher must not get the server to run theirs."""
    import hashlib
    import pickle

    marker = Path(f"/tmp/scorekit-test-unpickled-{os.getpid()}")
    payload = pickle.dumps(Evil(str(marker)))
    name = "evil"
    manifest = conn.execute(
        "SELECT manifest FROM scorekit.models WHERE name = %s AND version = %s",
        list(published["audit"]),
    ).fetchone()[0]
    manifest.update(
        name=name, version="1", artifacts={"model.pkl": hashlib.sha256(payload).hexdigest()}
    )
    try:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE sk_test_publisher")
            conn.execute(
                "INSERT INTO scorekit.models (name, version, manifest, pickle) "
                "VALUES (%s, 1, %s, %s)",
                [name, json.dumps(manifest), payload],
            )
            conn.execute("INSERT INTO scorekit.deployments (model, version, action) "
                         "VALUES (%s, 1, 'publish')", [name])  # fmt: skip
        with pytest.raises(psycopg.errors.DataException, match="is not trusted"):
            conn.execute("SELECT scorekit.predict(%s, '{}')", [name])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_role(conn, "sk_test_publisher", "INSERT INTO scorekit.trusted_pickles "
                    "(sha256, model, version) VALUES ('x', 'evil', 1)")  # fmt: skip
        assert not marker.exists()
    finally:
        conn.execute("DELETE FROM scorekit.deployments WHERE model = %s", [name])
        conn.execute("DELETE FROM scorekit.models WHERE name = %s", [name])


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_a_trusted_pickle_scores_with_the_sklearn_engine(
    conn, db, published, session_store, table
) -> None:
    name, version = published["audit"]
    with pytest.raises(scorekit.ModelError, match="not trusted"):
        _db.attach(table, name, engine="sklearn", dsn=db)
    ref = f"{name}@{version}"
    with pytest.raises(scorekit.UsageError, match="needs a superuser"):
        _db.publish(ref, store=session_store, trust_pickle=True, dsn=_plain_login(db))
    _db.publish(ref, store=session_store, trust_pickle=True, dsn=db)
    _db.attach(table, name, engine="sklearn", dsn=db)
    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD})")
    (p1,) = conn.execute(f"SELECT probability_1 FROM {table}").fetchone()
    native = scorekit.load_model(ref, store=session_store, engine="native")
    record = dict(zip([f for f, _, _ in FEATURES], [38, "Private", "College", "Unmarried",
                  "Service", 81838, "Female", "FALSE", 72], strict=True))  # fmt: skip
    assert p1 == pytest.approx(native.predict_one(record)["probability(1)"], abs=TOLERANCE)


def _plain_login(db: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    return make_conninfo(
        host="127.0.0.1",
        dbname=conninfo_to_dict(db)["dbname"],
        user=PLAIN_LOGIN[0],
        password=PLAIN_LOGIN[1],
    )


def test_only_roles_that_may_create_triggers_change_an_attachment(conn, db, published, table):
    name, _ = published["audit"]
    _db.attach(table, name, on_error="null", dsn=db)
    for sql in (
        'UPDATE scorekit.attachments SET outputs = \'{"prediction": "hours"}\'',
        "DELETE FROM scorekit.attachments",
    ):
        as_role(conn, "sk_test_publisher", sql + " RETURNING tbl")  # RLS: no row is visible
    (outputs,) = conn.execute(
        "SELECT outputs FROM scorekit.attachments WHERE tbl = %s::regclass", [table]
    ).fetchone()
    assert outputs["prediction"] == "prediction"
    conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD}), ({UNSEEN})")
    assert as_role(conn, "sk_test_publisher", "SELECT * FROM scorekit.errors") == []


def test_a_dropped_table_forgets_its_attachment(conn, db, published) -> None:
    name, _ = published["audit"]
    create_table(conn, "dropped", "id serial PRIMARY KEY", "prediction integer")
    _db.attach("dropped", name, dsn=db)
    conn.execute("DROP TABLE dropped")
    assert conn.execute("SELECT count(*) FROM scorekit.attachments WHERE NOT EXISTS "
                        "(SELECT FROM pg_class WHERE oid = tbl)").fetchone() == (0,)  # fmt: skip


def test_attach_checks_column_types(conn, db, published, table) -> None:
    name, _ = published["audit"]
    conn.execute(f"ALTER TABLE {table} ADD COLUMN born date, ADD COLUMN p_int integer")
    with pytest.raises(scorekit.UsageError, match=r"column born .* is date, but field Age"):
        _db.attach(table, name, features={"Age": "born"}, dsn=db)
    with pytest.raises(scorekit.UsageError, match=r"p_int .* is integer, .* a fraction"):
        _db.attach(table, name, outputs={"prediction": "prediction", "probability(1)": "p_int"},
                   dsn=db)  # fmt: skip


def test_statement_mode_suggests_room_for_its_update(conn, published, table) -> None:
    name, _ = published["audit"]
    attach = "SELECT scorekit.attach(%s, %s, mode => %s)"
    message = conn.execute(attach, [table, name, "statement"]).fetchone()[0]
    assert f"ALTER TABLE public.{table} SET (fillfactor = 50)" in message
    assert "fillfactor" not in conn.execute(attach, [table, name, "row"]).fetchone()[0]
    conn.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")
    assert "fillfactor" not in conn.execute(attach, [table, name, "statement"]).fetchone()[0]


def test_null_arguments_are_named_not_internal_errors(conn, published) -> None:
    for sql in (
        "SELECT scorekit.predict(NULL, '{}')",
        "SELECT scorekit.attach(NULL, 'audit')",
        "SELECT scorekit.attach('pg_class', NULL)",
        "SELECT scorekit.rescore(NULL)",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="is NULL"):
            conn.execute(sql)


def test_a_bad_row_in_a_statement_is_named_with_its_own_problems(conn, db, published, table):
    name, _ = published["audit"]
    _db.attach(table, name, mode="statement", dsn=db)
    bad_income = GOOD.replace("81838", "'-infinity'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD}), ({UNSEEN}), ({bad_income})")
    message = caught.value.diag.message_primary
    assert "row 2" in message and "employment" in message and "income" not in message
    assert "(1 more row(s) also fail)" in message
    # a value from a float8 column, named as the database holds it
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        conn.execute(f"INSERT INTO {table} ({COLUMNS}) VALUES ({GOOD}), ({bad_income})")
    message = caught.value.diag.message_primary
    assert "row 2 (id=" in message
    assert "column income (model field Income): expected a number, got -inf." in message


def test_statement_mode_keeps_a_row_whose_number_is_too_big(conn, db, published) -> None:
    name, _ = published["audit"]
    create_table(
        conn, "wide", "k1 text, k2 integer", "prediction integer, PRIMARY KEY (k1, k2)",
        {"income": "numeric"},
    )  # fmt: skip
    try:
        _db.attach("wide", name, mode="statement", on_error="null", dsn=db)
        huge = GOOD.replace("81838", "1e400")
        conn.execute(f"INSERT INTO wide VALUES ('a \"quoted\", {{key}}', 1, {GOOD}), "
                     f"('b', 2, {huge}), (E'back\\\\slash', 3, {GOOD})")  # fmt: skip
        scored = conn.execute("SELECT k2, prediction FROM wide ORDER BY k2").fetchall()
        assert [s[1] is not None for s in scored] == [True, False, True]
        (key,) = conn.execute(
            "SELECT row_key FROM scorekit.errors WHERE tbl = 'public.wide'"
        ).fetchone()
        assert key == {"k1": "b", "k2": "2"}
    finally:
        conn.execute("DROP TABLE wide")


def test_rescore_of_a_detached_table_says_so(conn, db, published, table) -> None:
    with pytest.raises(scorekit.UsageError, match="is not attached to a model"):
        _db.rescore(table, dsn=db)

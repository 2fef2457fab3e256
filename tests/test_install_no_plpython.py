"""`scorekit db install` into a real PostgreSQL server that has no PL/Python.

The server is this machine's PostgreSQL, copied beside a share directory without plpython3u's
extension files: PostgreSQL finds its share directory relative to its own binary, so the copy
is a server on which plpython3u is not available, as on a host without the Debian package.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import scorekit
from scorekit import _db
from scorekit._cli import main
from scorekit._config import database_url


def _run_as_server_user(*command: str | Path, check: bool = True) -> None:
    """initdb and the server refuse to run as root: run them as postgres when we are root."""
    args = [str(c) for c in command]
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    subprocess.run(args, check=check, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def server_without_plpython() -> Iterator[str]:
    with psycopg.connect(database_url()) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    major = int(row[0]) // 10000 if row else 0
    bindir = Path(f"/usr/lib/postgresql/{major}")
    sharedir = Path(f"/usr/share/postgresql/{major}")
    if not (bindir / "bin" / "initdb").is_file() or not sharedir.is_dir():
        pytest.skip(f"no Debian layout of PostgreSQL {major} at {bindir} and {sharedir}")
    root = Path(tempfile.mkdtemp(prefix="scorekit-noplpython-", dir="/tmp"))
    try:
        copied = root / "usr/lib/postgresql" / str(major)
        (copied / "bin").mkdir(parents=True)
        for program in ("postgres", "initdb", "pg_ctl"):
            shutil.copy2(bindir / "bin" / program, copied / "bin" / program)
        (copied / "lib").symlink_to(bindir / "lib")
        share = root / "usr/share/postgresql" / str(major)
        shutil.copytree(sharedir, share, ignore=shutil.ignore_patterns("*plpython*"), symlinks=True)
        assert not list(share.glob("extension/plpython3u*"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in [root, *root.rglob("*")]:
                os.lchown(path, owner.pw_uid, owner.pw_gid)
        data = root / "data"
        _run_as_server_user(copied / "bin/initdb", "-D", data, "-A", "trust", "-U", "postgres")
        try:
            _run_as_server_user(
                copied / "bin/pg_ctl",
                "-D",
                data,
                "-w",
                "-l",
                root / "server.log",
                "-o",
                f"-k {root} -c listen_addresses=''",
                "start",
            )
            yield f"host={root} port=5432 dbname=postgres user=postgres"
        finally:
            # also after a failed or timed-out start, before the directory goes
            if (data / "postmaster.pid").exists():
                stop = (copied / "bin/pg_ctl", "-D", data, "-m", "immediate", "stop")
                _run_as_server_user(*stop, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_install_says_what_the_server_needs(server_without_plpython: str) -> None:
    with psycopg.connect(server_without_plpython) as conn:
        available = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'plpython3u'"
        ).fetchone()
        assert available == (0,)
    with pytest.raises(scorekit.UsageError) as caught:
        _db.install(server_without_plpython)
    message = str(caught.value)
    assert "has no PL/Python (plpython3u)" in message
    assert re.search(r"install the Debian package postgresql-plpython3-\d+ on the server", message)
    with psycopg.connect(server_without_plpython) as conn:
        schema = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'scorekit'").fetchone()
        assert schema is None  # nothing was installed


def test_the_cli_exits_with_the_usage_code(server_without_plpython: str, capsys) -> None:
    assert main(["db", "install", "--dsn", server_without_plpython]) == 2
    err = capsys.readouterr().err
    assert "has no PL/Python (plpython3u)" in err
    assert "Traceback" not in err

"""Shared fixtures: the data sets, models trained once per session, S3 through moto, the DSN."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import scorekit

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

# name -> (csv, target, extra train options)
DATASETS: dict[str, tuple[str, str, dict[str, object]]] = {
    "audit": ("audit.csv", "Adjusted", {}),
    "audit_na": ("audit_na.csv", "Adjusted", {}),
    "iris": ("iris.csv", "Species", {}),
    "auto": ("auto.csv", "mpg", {"categorical": ("origin",)}),
}


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session", autouse=True)
def _stop_jvm_at_exit() -> Iterator[None]:
    """pypmml's py4j gateway may outlive the test process; stop it when the session ends."""
    yield
    from scorekit._engine_pypmml import shutdown_jvm

    shutdown_jvm()


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory) -> scorekit.ModelStore:
    return scorekit.open_store(tmp_path_factory.mktemp("store"))


TrainedModel = Callable[..., scorekit.Manifest]


@pytest.fixture(scope="session")
def trained(session_store: scorekit.ModelStore) -> TrainedModel:
    """trained("audit", "logreg") -> the manifest of a model published to session_store, trained
    once per session per (dataset, algorithm, invalid treatment)."""
    cache: dict[tuple[str, str, str], scorekit.Manifest] = {}

    def get(dataset: str, algorithm: str = "logreg", invalid: str = "error") -> scorekit.Manifest:
        key = (dataset, algorithm, invalid)
        if key not in cache:
            csv, target, options = DATASETS[dataset]
            name = f"{dataset}-{algorithm}-{invalid}".replace("_", "-")
            cache[key] = scorekit.train(
                DATA / csv,
                target,
                name,
                algorithm=algorithm,
                store=session_store,
                invalid=invalid,
                **options,
            )  # type: ignore[arg-type]
        return cache[key]

    return get


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The standalone moto server in its own process, on loopback; yields its endpoint URL."""
    port = _free_port()
    binary = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("moto_server did not start within 30 s")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def dsn() -> str:
    """The PostgreSQL DSN the project was set up with (SCOREKIT_DSN or what setup recorded)."""
    return os.environ.get("SCOREKIT_DSN") or scorekit.database_url()


@pytest.fixture(scope="session")
def make_database(dsn: str) -> Callable[[str], contextlib.AbstractContextManager[str]]:
    """make_database(prefix): a context manager for a scratch database on the test server."""
    from scorekit._db import scratch_database

    return lambda prefix: scratch_database(dsn, prefix)

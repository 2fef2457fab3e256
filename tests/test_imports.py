"""`import scorekit` and the scoring path without an engine pull in no heavy module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = [
    "sklearn",
    "scipy",
    "pandas",
    "pypmml",
    "py4j",
    "joblib",
    "sklearn2pmml",
    "boto3",
    "botocore",
    "psycopg",
    "azure",
    "pyarrow",
    "dask",
    "distributed",
]


def imported_heavy(code: str, cwd: Path | None = None) -> list[str]:
    probe = (
        f"{code}\nimport sys, json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=cwd
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_scorekit_is_light() -> None:
    assert imported_heavy("import scorekit") == []


def test_reading_a_store_and_validating_input_is_light(trained, session_store) -> None:
    manifest = trained("audit")
    code = (
        "import scorekit\n"
        f"store = scorekit.open_store({str(session_store.url)!r})\n"
        f"m = store.manifest({manifest.name!r}, store.resolve({manifest.name!r}))\n"
        "m.schema.prepare({f.name: ['1'] if f.is_continuous else [f.categories[0]] "
        "for f in m.schema.fields}, m.ref)\n"
    )
    assert imported_heavy(code) == []


def test_batch_scoring_of_a_csv_file_is_light(trained, session_store, tmp_path: Path) -> None:
    """`scorekit score` of a CSV file: no database client, no pyarrow, no Dask."""
    manifest = trained("audit")
    data = Path(__file__).resolve().parents[1] / "data" / "audit.csv"
    code = (
        "import scorekit._cli as c\n"
        f"c.main(['score', '--model', {manifest.ref!r}, '--store', {str(session_store.url)!r}, "
        f"'--input', {str(data)!r}, '--output', {str(tmp_path / 'out.csv')!r}])\n"
    )
    assert imported_heavy(code) == []
    assert (tmp_path / "out.csv").is_file()


def test_cli_db_url_is_light() -> None:
    assert imported_heavy("import scorekit._cli as c\nc.main(['db', 'url'])") == []


def test_native_scoring_path_needs_numpy_only(trained, session_store) -> None:
    """import scorekit, load a PMML from the store and score it natively: no heavy module."""
    for dataset, algorithm in [("audit", "logreg"), ("audit_na", "gbm")]:
        manifest = trained(dataset, algorithm)
        code = (
            "import scorekit\n"
            f"model = scorekit.load_model({manifest.ref!r}, engine='native', "
            f"store={str(session_store.url)!r})\n"
            "record = {f.name: None for f in model.manifest.schema.fields}\n"
            "model.predict_one(record)\n"
            "model.predict_records([record] * 3)\n"
        )
        assert imported_heavy(code) == []


def test_auto_engine_picks_native_without_heavy_imports(trained, session_store) -> None:
    manifest = trained("audit")
    code = (
        "import scorekit\n"
        f"model = scorekit.load_model({manifest.ref!r}, store={str(session_store.url)!r})\n"
        "assert model.engine == 'native', model.engine\n"
    )
    assert imported_heavy(code) == []


def test_the_database_runtime_is_light() -> None:
    """What PL/Python imports in the server (scorekit._plpython) pulls in no heavy module: a
    connection's first prediction pays for numpy and scorekit only."""
    assert imported_heavy("import scorekit._plpython") == []


def test_the_http_protocol_is_light() -> None:
    """What a function imports to serve (scorekit._http) pulls in no heavy module."""
    assert imported_heavy("import scorekit._http") == []

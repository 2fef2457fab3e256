"""Batch runs (`scorekit score`) over tables, CSV and Parquet, against a real PostgreSQL and a
real Dask LocalCluster: scores equal the Python engine's, bad rows are recorded and counted, a
run killed with SIGKILL resumes with every row written exactly once, overlapping runs are
refused by the lock, and Dask's output equals a single process's."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import scorekit
from scorekit._cli import main
from scorekit._progress import Progress

pytestmark = pytest.mark.db
psycopg = pytest.importorskip("psycopg")

MODEL = "audit-na-logreg-error"
# model field -> (column, type): lower-case names, as tables usually have them
COLUMNS = {
    "Age": ("age", "numeric"),
    "Employment": ("employment", "text"),
    "Education": ("education", "text"),
    "Marital": ("marital", "text"),
    "Occupation": ("occupation", "text"),
    "Income": ("income", "double precision"),
    "Gender": ("gender", "text"),
    "Deductions": ("deductions", "text"),
    "Hours": ("hours", "integer"),
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def store(trained, session_store) -> str:
    trained("audit_na")
    return str(session_store.url)


@pytest.fixture(scope="module")
def reference(store: str, data_dir: Path) -> dict[str, list[Any]]:
    """The Python engine's scores of audit_na.csv, row by row."""
    loaded = scorekit.load_model(MODEL, store=store)
    with open(data_dir / "audit_na.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    scored = loaded.predict_columns({name: [r[name] for r in rows] for name in COLUMNS})
    return {name: values.tolist() for name, values in scored.items()}


@pytest.fixture(scope="module")
def db(make_database) -> Iterator[str]:
    """A database of this module's own; yields its DSN."""
    with make_database("scorekit_batch_test") as url:
        yield url


@pytest.fixture
def conn(db: str) -> Iterator[Any]:
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


def make_table(conn: Any, name: str, data_dir: Path, copies: int = 1, extra: str = "") -> None:
    """``name``: audit_na.csv's rows (``copies`` times) with an id key from 1, in file order."""
    conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    columns = ", ".join(f"{c} {t}" for c, t in COLUMNS.values())
    conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, {columns}{extra})")
    with open(data_dir / "audit_na.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    n = 0
    for _ in range(copies):
        for row in rows:
            n += 1
            writer.writerow([n, *(row[field] for field in COLUMNS)])
    names = ", ".join(c for c, _ in COLUMNS.values())
    with conn.cursor().copy(
        f"COPY {name} (id, {names}) FROM STDIN (FORMAT csv, NULL 'N/A')"
    ) as copy:
        copy.write(buffer.getvalue())


def scores(
    conn: Any, table: str, columns: str = "prediction, probability_1, model_version"
) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT id, {columns} FROM {table} ORDER BY id").fetchall()


def score_table(capsys, store: str, db: str, *extra: str) -> tuple[int, str]:
    return run(capsys, "score", "--model", MODEL, "--store", store, "--dsn", db, *extra)


# --- tables ------------------------------------------------------------------------------------
def test_table_into_a_new_output_table_equals_the_python_engine(
    capsys, conn, db: str, store: str, data_dir: Path, reference: dict[str, list[Any]]
) -> None:
    make_table(conn, "apps", data_dir)
    code, err = score_table(
        capsys, store, db, "--input-table", "apps", "--output-table", "apps_scores",
        "--chunk-size", "250",
    )  # fmt: skip
    assert code == 0, err
    assert "scored 1,899 rows of public.apps" in err and "no row failed" in err
    rows = scores(conn, "apps_scores")
    assert [r[0] for r in rows] == list(range(1, 1900))
    assert [r[1] for r in rows] == reference["prediction"]
    assert np.array_equal([r[2] for r in rows], reference["probability(1)"])
    assert {r[3] for r in rows} == {"1"}
    run_row = conn.execute(
        "SELECT status, rows_scored, rows_failed, chunks_done, version FROM scorekit.batch_runs "
        "ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    assert run_row == ("succeeded", 1899, 0, 8, "1")


def test_table_url_forms_and_bad_rows_go_to_the_errors_table(
    capsys, conn, db: str, store: str, data_dir: Path
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    make_table(conn, "apps", data_dir)
    conn.execute("UPDATE apps SET employment = 'Martian' WHERE id IN (7, 1500)")
    conn.execute("UPDATE apps SET hours = NULL, income = 'Infinity' WHERE id = 9")
    info = conninfo_to_dict(db)
    url = f"postgresql:///{info['dbname']}?host={info.get('host', '/var/run/postgresql')}"
    if "port" in info:
        url += f"&port={info['port']}"
    code, err = run(
        capsys, "score", "--model", MODEL, "--store", store,
        "--input", f"{url}&table=public.apps", "--output", f"{url}&table=public.url_scores",
    )  # fmt: skip
    assert code == 7, err
    assert "3 row(s) could not be scored, see scorekit.batch_errors" in err
    errors = conn.execute(
        "SELECT key, field, value, problem FROM scorekit.batch_errors e JOIN scorekit.batch_runs "
        "r USING (run_id) WHERE r.target = 'public.url_scores' ORDER BY key::int"
    ).fetchall()
    assert [(k, f, v) for k, f, v, _ in errors] == [
        ("7", "Employment", "Martian"),
        ("9", "Income", "inf"),
        ("1500", "Employment", "Martian"),
    ]
    assert "unseen category 'Martian'" in errors[0][3]
    written = {r[0] for r in conn.execute("SELECT id FROM url_scores")}
    assert len(written) == 1896 and not written & {7, 9, 1500}


def test_write_back_stale_only_and_a_new_version_recorded_per_row(
    capsys, conn, db: str, store: str, data_dir: Path, trained, session_store
) -> None:
    make_table(
        conn, "apps_wb", data_dir,
        extra=", risk integer, risk_p double precision, model_version text",
    )  # fmt: skip
    common = ("--input-table", "apps_wb", "--write-back", "--output-column", "prediction=risk",
              "probability(1)=risk_p")  # fmt: skip
    code, err = score_table(capsys, store, db, *common, "--where", "id <= 1000", "--run", "a")
    assert code == 0, err
    counts = conn.execute(
        "SELECT count(*) FILTER (WHERE risk IS NOT NULL), count(*) FROM apps_wb"
    ).fetchone()
    assert counts == (1000, 1899)
    # --stale-only scores only the rows with no score from this version
    code, err = score_table(capsys, store, db, *common, "--stale-only", "--run", "b")
    assert code == 0, err
    assert "scored 899 rows" in err
    # a new champion: its rows are recorded with its version
    manifest = trained("audit_na")
    scorekit.train(
        data_dir / "audit_na.csv", "Adjusted", MODEL, store=session_store, seed=2, promote=True
    )
    code, err = score_table(capsys, store, db, *common, "--stale-only", "--where", "id % 2 = 0",
                            "--run", "c")  # fmt: skip
    assert code == 0, err
    by_version = dict(
        conn.execute("SELECT model_version, count(*) FROM apps_wb GROUP BY 1").fetchall()
    )
    assert by_version == {manifest.version: 950, "2": 949}
    session_store.promote(MODEL, manifest.version)  # back to the champion the others expect


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--input-table", "nope", "--output-table", "o"), "--input table nope does not exist"),
        (
            ("--input-table", "apps", "--output-table", "o", "--key", "zz"),
            "--key zz is not a column of public.apps",
        ),
        (
            ("--input-table", "apps", "--output-table", "o", "--key", "hours"),
            "--key hours of public.apps has no unique index of its own",
        ),
        (
            ("--input-table", "apps", "--output-table", "o", "--where", "nonsense ="),
            "--where 'nonsense =' is not a valid condition on public.apps",
        ),
        (
            ("--input-table", "apps", "--write-back"),
            "public.apps has no column for the predictions of model",
        ),
        (("--input-table", "apps"), "a table input is scored into a table"),
        (
            ("--input-table", "apps", "--output-table", "o", "--feature", "Age=nope"),
            "--feature maps field Age to column 'nope', which public.apps does not have",
        ),
    ],
)
def test_table_mistakes_are_named_before_any_work(
    capsys, conn, db: str, store: str, data_dir: Path, argv: tuple[str, ...], message: str
) -> None:
    make_table(conn, "apps", data_dir)
    before = (
        conn.execute("SELECT count(*) FROM scorekit.batch_runs").fetchone()[0]
        if conn.execute("SELECT to_regclass('scorekit.batch_runs')").fetchone()[0]
        else 0
    )
    code, err = score_table(capsys, store, db, *argv)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    after = conn.execute("SELECT count(*) FROM scorekit.batch_runs").fetchone()[0]
    assert after == before  # no run was started
    assert conn.execute("SELECT to_regclass('public.o')").fetchone()[0] is None


def test_resume_with_other_options_a_nullable_key_and_odd_names(
    capsys, conn, db: str, store: str, data_dir: Path, reference: dict[str, list[Any]]
) -> None:
    make_table(conn, "apps_r", data_dir)
    argv = ("--input-table", "apps_r", "--output-table", '"Mixed Case"', "--run", "r1")
    code, err = score_table(capsys, store, db, *argv)
    assert code == 0, err
    assert conn.execute('SELECT count(*) FROM "Mixed Case"').fetchone()[0] == 1899
    code, err = score_table(capsys, store, db, *argv, "--where", "id > 10", "--resume")
    assert code == 2 and "Resume it with the same input and options" in err
    # a nullable unique key can't order a resumable run
    conn.execute("ALTER TABLE apps_r ADD COLUMN code integer UNIQUE")
    code, err = score_table(capsys, store, db, "--input-table", "apps_r", "--output-table",
                            "o3", "--key", "code")  # fmt: skip
    assert code == 2 and "--key code of public.apps_r may be NULL" in err
    # a float key takes the row-by-row COPY path and keeps its values
    conn.execute("CREATE TABLE apps_f AS SELECT id + 0.5 AS fid, * FROM apps_r")
    conn.execute("ALTER TABLE apps_f ADD PRIMARY KEY (fid)")
    code, err = score_table(capsys, store, db, "--input-table", "apps_f", "--output-table",
                            "o4", "--chunk-size", "700")  # fmt: skip
    assert code == 0, err
    rows = conn.execute("SELECT fid, probability_1 FROM o4 ORDER BY fid").fetchall()
    assert [r[0] for r in rows] == [i + 0.5 for i in range(1, 1900)]
    assert [r[1] for r in rows] == reference["probability(1)"]


def test_enum_and_extension_types_are_read_as_text(
    capsys, conn, db: str, store: str, data_dir: Path, reference: dict[str, list[Any]]
) -> None:
    make_table(conn, "apps_t", data_dir)
    conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
    labels = [r[0] for r in conn.execute("SELECT DISTINCT employment FROM apps_t "
                                         "WHERE employment IS NOT NULL ORDER BY 1")]  # fmt: skip
    conn.execute("DROP TYPE IF EXISTS employment_kind CASCADE")
    conn.execute(f"CREATE TYPE employment_kind AS ENUM ({', '.join(map(repr, labels))})")
    conn.execute(
        "ALTER TABLE apps_t ALTER COLUMN employment TYPE employment_kind "
        "USING employment::employment_kind"
    )
    conn.execute("ALTER TABLE apps_t ADD COLUMN ref citext")
    conn.execute("UPDATE apps_t SET ref = 'App-' || lpad(id::text, 5, '0')")
    conn.execute("ALTER TABLE apps_t ALTER COLUMN ref SET NOT NULL")
    conn.execute("CREATE UNIQUE INDEX ON apps_t (ref)")
    code, err = score_table(capsys, store, db, "--input-table", "apps_t", "--key", "ref",
                            "--output-table", "o_t", "--chunk-size", "600")  # fmt: skip
    assert code == 0, err
    rows = conn.execute("SELECT ref::text, probability_1 FROM o_t ORDER BY ref").fetchall()
    assert rows[0][0] == "App-00001" and len(rows) == 1899
    assert [r[1] for r in rows] == reference["probability(1)"]


def test_a_missing_model_field_column_is_named(
    capsys, conn, db: str, store: str, data_dir: Path
) -> None:
    make_table(conn, "apps", data_dir)
    conn.execute("ALTER TABLE apps DROP COLUMN hours")
    code, err = score_table(capsys, store, db, "--input-table", "apps", "--output-table", "o2")
    assert code == 2
    assert "public.apps has no column for field(s) Hours" in err and "--feature FIELD=column" in err


def _wait_for(condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the batch run")
        time.sleep(0.02)


def _spawn(store: str, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "scorekit", "score", "--model", MODEL, "--store", store, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _chunks_done(conn: Any, target: str) -> int:
    row = conn.execute(
        "SELECT chunks_done FROM scorekit.batch_runs WHERE target = %s ORDER BY run_id DESC "
        "LIMIT 1",
        [target],
    ).fetchone()
    return int(row[0]) if row else 0


def test_killed_run_resumes_with_every_row_written_once_and_the_lock_refuses_a_second(
    capsys, conn, db: str, store: str, data_dir: Path
) -> None:
    make_table(conn, "big", data_dir, copies=60)  # 113,940 rows
    conn.execute(
        "CREATE TABLE big_scores (id bigint PRIMARY KEY, prediction integer, probability_0 "
        "double precision, probability_1 double precision, model_version text NOT NULL, "
        "run_id bigint, writes integer DEFAULT 1)"
    )
    # Each write of a row after its first increments `writes`: exactly once means all 1.
    conn.execute(
        "CREATE FUNCTION count_rewrites() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.writes := OLD.writes + 1; RETURN NEW; END $$"
    )
    conn.execute(
        "CREATE TRIGGER rewrites BEFORE UPDATE ON big_scores FOR EACH ROW "
        "EXECUTE FUNCTION count_rewrites()"
    )
    argv = ("--input-table", "big", "--output-table", "big_scores", "--dsn", db,
            "--chunk-size", "500", "--run", "nightly")  # fmt: skip
    first = _spawn(store, *argv)
    try:
        _wait_for(lambda: _chunks_done(conn, "public.big_scores") >= 5)
        # while it runs, a second run of the same model into the same table is refused
        code, err = score_table(capsys, store, db, *argv[:-4], "--run", "other")
        assert code == 6, err
        assert "another scorekit score run of model audit-na-logreg-error into " in err
        assert "public.big_scores is running (run 'nightly'" in err
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    written = conn.execute("SELECT count(*) FROM big_scores").fetchone()[0]
    assert 0 < written < 113_940
    status = conn.execute(
        "SELECT status FROM scorekit.batch_runs WHERE run_name = 'nightly'"
    ).fetchone()[0]
    assert status == "running"  # killed: nothing could mark it
    code, err = score_table(capsys, store, db, *argv[:-2], "--run", "nightly", "--resume")
    assert code == 0, err
    assert "run 'nightly'" in err and "resumed" in err
    counts = conn.execute(
        "SELECT count(*), max(writes), count(DISTINCT run_id) FROM big_scores"
    ).fetchone()
    assert counts == (113_940, 1, 1)
    run_row = conn.execute(
        "SELECT status, rows_scored, rows_failed FROM scorekit.batch_runs "
        "WHERE run_name = 'nightly'"
    ).fetchone()
    assert run_row == ("succeeded", 113_940, 0)
    # a finished run is not repeated
    code, err = score_table(capsys, store, db, *argv[:-2], "--run", "nightly", "--resume")
    assert code == 0 and "already finished" in err and "nothing to do" in err
    assert conn.execute("SELECT max(writes) FROM big_scores").fetchone()[0] == 1


def test_dask_local_cluster_matches_the_single_process_run(
    capsys, conn, db: str, store: str, data_dir: Path
) -> None:
    make_table(conn, "apps_d", data_dir, copies=3)
    conn.execute("UPDATE apps_d SET employment = 'Martian' WHERE id IN (5, 4000)")
    code, err = score_table(capsys, store, db, "--input-table", "apps_d", "--output-table",
                            "single", "--chunk-size", "400")  # fmt: skip
    assert code == 7, err
    code, err = score_table(capsys, store, db, "--input-table", "apps_d", "--output-table",
                            "spread", "--chunk-size", "400", "--dask", "local",
                            "--dask-workers", "3", "--partitions", "5")  # fmt: skip
    assert code == 7, err
    assert "in 5 partitions" in err and "2 row(s) could not be scored" in err
    columns = "prediction, probability_0, probability_1, model_version"
    assert scores(conn, "spread", columns) == scores(conn, "single", columns)
    assert len(scores(conn, "single", columns)) == 3 * 1899 - 2


# --- files -------------------------------------------------------------------------------------
def test_csv_bad_rows_go_to_the_errors_file_and_the_rest_is_scored(
    capsys, store: str, data_dir: Path, tmp_path: Path, reference: dict[str, list[Any]]
) -> None:
    with open(data_dir / "audit_na.csv", newline="") as f:
        rows = list(csv.reader(f))
    header = ["ID", *rows[0]]
    body = [[str(i), *row] for i, row in enumerate(rows[1:])]
    body[3][header.index("Employment")] = "Martian"
    body[1200][header.index("Age")] = "old"
    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    out = tmp_path / "out.csv"
    code, err = run(capsys, "score", "--model", MODEL, "--store", store, "--input", str(source),
                    "--output", str(out), "--key", "ID", "--keep", "ID",
                    "--chunk-size", "500")  # fmt: skip
    assert code == 7, err
    with open(out, newline="") as f:
        scored = list(csv.DictReader(f))
    assert len(scored) == 1897 and {r["model_version"] for r in scored} == {"1"}
    kept = [i for i in range(1899) if i not in (3, 1200)]
    assert [int(r["ID"]) for r in scored] == kept
    assert [float(r["probability(1)"]) for r in scored] == [
        reference["probability(1)"][i] for i in kept
    ]
    with open(tmp_path / "out.csv.errors.csv", newline="") as f:
        errors = list(csv.DictReader(f))
    assert [(e["row"], e["key"], e["field"], e["value"]) for e in errors] == [
        ("3", "3", "Employment", "Martian"),
        ("1200", "1200", "Age", "old"),
    ]
    # too many bad rows: the run stops, and no output appears under the final name
    code, err = run(capsys, "score", "--model", MODEL, "--store", store, "--input", str(source),
                    "--output", str(tmp_path / "strict.csv"), "--max-error-rate", "0")  # fmt: skip
    assert code == 3 and "more than --max-error-rate 0" in err
    assert not (tmp_path / "strict.csv").exists()


def test_killed_csv_run_resumes_into_the_same_bytes(
    capsys, store: str, data_dir: Path, tmp_path: Path
) -> None:
    lines = (data_dir / "audit_na.csv").read_text().splitlines()
    source = tmp_path / "big.csv"
    source.write_text("\n".join([lines[0], *(lines[1:] * 120)]) + "\n")  # 227,880 rows
    whole, resumed = tmp_path / "whole.csv", tmp_path / "resumed.csv"
    code, err = run(capsys, "score", "--model", MODEL, "--store", store, "--input", str(source),
                    "--output", str(whole), "--chunk-size", "1000")  # fmt: skip
    assert code == 0, err
    record = tmp_path / "resumed.csv.run.json"

    def chunks() -> int:
        try:
            return int(json.loads(record.read_text()).get("chunks_done", 0))
        except (OSError, ValueError):
            return 0

    process = _spawn(store, "--input", str(source), "--output", str(resumed),
                     "--chunk-size", "1000", "--run", "r")  # fmt: skip
    try:
        _wait_for(lambda: chunks() >= 20)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not resumed.exists()  # only the hidden partial file
    assert json.loads(record.read_text())["status"] == "running"
    code, err = run(capsys, "score", "--model", MODEL, "--store", store, "--input", str(source),
                    "--output", str(resumed), "--chunk-size", "700", "--run", "r",
                    "--resume")  # fmt: skip
    assert code == 0, err
    assert resumed.read_bytes() == whole.read_bytes()


def _parquet_inputs(data_dir: Path, directory: Path) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pacsv.read_csv(
        data_dir / "audit_na.csv",
        convert_options=pacsv.ConvertOptions(null_values=["N/A", ""], strings_can_be_null=True),
    )
    table = table.append_column("ID", pa.array(range(table.num_rows), type=pa.int64()))
    directory.mkdir()
    for i, start in enumerate(range(0, table.num_rows, 700)):
        pq.write_table(table.slice(start, 700), directory / f"part-{i}.parquet")
    return directory


def test_parquet_directory_scores_equal_the_engine_and_dask_matches(
    capsys, store: str, data_dir: Path, tmp_path: Path, reference: dict[str, list[Any]]
) -> None:
    import pyarrow.parquet as pq

    inputs = _parquet_inputs(data_dir, tmp_path / "in")
    single, spread = tmp_path / "single", tmp_path / "spread"
    common = ("score", "--model", MODEL, "--store", store, "--input", str(inputs), "--keep", "ID",
              "--chunk-size", "300")  # fmt: skip
    code, err = run(capsys, *common, "--output", str(single))
    assert code == 0, err
    assert sorted(p.name for p in single.iterdir()) == [f"part-{i}.parquet" for i in range(3)]
    table = pq.read_table(single)
    assert table.column_names == ["ID", "prediction", "probability(0)", "probability(1)",
                                  "model_version"]  # fmt: skip
    ordered = table.sort_by("ID")
    assert ordered.column("ID").to_pylist() == list(range(1899))
    assert ordered.column("prediction").to_pylist() == reference["prediction"]
    assert ordered.column("probability(1)").to_pylist() == reference["probability(1)"]
    code, err = run(capsys, *common, "--output", str(spread), "--dask", "local",
                    "--dask-workers", "2")  # fmt: skip
    assert code == 0, err
    for i in range(3):
        name = f"part-{i}.parquet"
        assert pq.read_table(spread / name).equals(pq.read_table(single / name))


def test_parquet_resume_redoes_only_unfinished_files(
    capsys, store: str, data_dir: Path, tmp_path: Path
) -> None:
    inputs = _parquet_inputs(data_dir, tmp_path / "in")
    out = tmp_path / "out"
    argv = ("score", "--model", MODEL, "--store", store, "--input", str(inputs), "--output",
            str(out), "--run", "p")  # fmt: skip
    assert run(capsys, *argv)[0] == 0
    # as if killed while scoring the last file: its output absent, the record still running
    record_path = tmp_path / "out.run.json"
    record = json.loads(record_path.read_text())
    last = str(inputs / "part-2.parquet")
    del record["files_done"][last]
    record["status"] = "running"
    record_path.write_text(json.dumps(record))
    (out / "part-2.parquet").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, err = run(capsys, *argv, "--resume")
    assert code == 0, err
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert after["part-0.parquet"] == before["part-0.parquet"]
    assert after["part-1.parquet"] == before["part-1.parquet"]
    assert "part-2.parquet" in after
    assert json.loads(record_path.read_text())["rows_scored"] == 1899


def test_file_lock_refuses_a_second_run(capsys, store: str, data_dir: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "out.csv"
    with open(tmp_path / "out.csv.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, err = run(capsys, "score", "--model", MODEL, "--store", store, "--input",
                        str(data_dir / "audit_na.csv"), "--output", str(out))  # fmt: skip
    assert code == 6
    assert f"another scorekit score run into {out} is running" in err
    assert not out.exists()


def test_mismatched_inputs_and_outputs_are_refused(
    capsys, store: str, data_dir: Path, tmp_path: Path
) -> None:
    base = ("score", "--model", MODEL, "--store", store)
    code, err = run(capsys, *base, "--input", str(data_dir / "audit_na.csv"), "--output",
                    str(tmp_path / "x.parquet"))  # fmt: skip
    assert code == 2 and "don't match" in err
    code, err = run(capsys, *base, "--input", str(data_dir / "audit_na.csv"), "--output",
                    str(tmp_path / "x.csv"), "--where", "x")  # fmt: skip
    assert code == 2 and "--where applies to a table input" in err
    code, err = run(capsys, *base, "--input", str(tmp_path / "absent.csv"), "--output",
                    str(tmp_path / "x.csv"))  # fmt: skip
    assert code == 3 and "does not exist" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--chunk-size", "0"), "--chunk-size must be at least 1, got 0"),
        (("--max-error-rate", "1.5"), "--max-error-rate is a fraction of the rows from 0 to 1"),
        (("--dask-workers", "2"), "--dask-workers sizes a local cluster: use it with --dask local"),
        (("--dask", "local", "--partitions", "0"), "--partitions must be at least 1, got 0"),
    ],
)
def test_score_option_mistakes(
    capsys, store: str, data_dir: Path, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    code, err = run(capsys, "score", "--model", MODEL, "--store", store,
                    "--input", str(data_dir / "audit_na.csv"),
                    "--output", str(tmp_path / "o.csv"), *extra)  # fmt: skip
    assert code == 2 and message in err
    assert not list(tmp_path.iterdir())


def test_a_table_url_without_a_table_is_refused(capsys, store: str) -> None:
    code, err = run(capsys, "score", "--model", MODEL, "--store", store,
                    "--input", "postgresql:///somedb", "--write-back")  # fmt: skip
    assert code == 2 and "names no table: add table=schema.name to the URL's query" in err


def test_progress_bar_on_a_terminal_and_log_lines_elsewhere() -> None:
    tty = io.StringIO()
    bar = Progress(1000, "run 'x'", tty, tty=True)
    bar.started -= 2.0  # as if two seconds in
    bar.update(250, 3)
    bar.close()
    shown = tty.getvalue()
    assert "[#######" in shown and " 25% 250/1,000 rows" in shown and "3 failed" in shown
    assert "ETA 0:00:06" in shown and shown.endswith("\n")
    log = io.StringIO()
    lines = Progress(None, "run 'x'", log, tty=False)
    lines.update(10)  # too soon for a log line
    lines._shown -= 60
    lines.update(20)
    assert log.getvalue().count("\n") == 1 and "scorekit: run 'x': 20 rows" in log.getvalue()

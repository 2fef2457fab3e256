"""The scorekit command line: train, score, models, db url, and its errors and exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scorekit._cli import main

AUDIT_HEADER = "Age,Employment,Education,Marital,Occupation,Income,Gender,Deductions,Hours"
GOOD_ROW = "38,Private,College,Unmarried,Service,81838,Female,FALSE,72"


@pytest.fixture
def store(trained, session_store) -> str:
    trained("audit")
    return str(session_store.url)


MODEL = "audit-logreg-error"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def score(
    capsys: pytest.CaptureFixture[str], store: str, source: object, target: object, *extra: str
) -> tuple[int, str, str]:
    """scorekit score with the test model: source CSV to target CSV."""
    return run(
        capsys,
        "score",
        "--model",
        MODEL,
        "--store",
        store,
        "--input",
        str(source),
        "--output",
        str(target),
        *extra,
    )


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_writes_the_contract_and_keeps_columns(
    capsys, store: str, data_dir: Path, tmp_path: Path
) -> None:
    out_path = tmp_path / "scored.csv"
    code, _, err = score(
        capsys,
        store,
        data_dir / "audit_na.csv",
        out_path,
        "--keep",
        "Age",
        "Income",
        "--chunk-size",
        "500",
    )
    assert code == 0, err
    with open(out_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1899
    assert list(rows[0]) == [
        "Age", "Income", "prediction", "probability(0)", "probability(1)", "model_version",
    ]  # fmt: skip
    with open(data_dir / "audit_na.csv") as f:
        source = list(csv.DictReader(f))
    assert [r["Age"] for r in rows] == [r["Age"] for r in source]  # input order, all rows
    assert "scored 1,899 rows" in err and "engine native" in err


def test_chunked_and_whole_file_scoring_agree(
    capsys, store: str, data_dir: Path, tmp_path: Path
) -> None:
    outputs = []
    for chunk in ("7", "100000"):
        target = tmp_path / f"out-{chunk}.csv"
        assert score(capsys, store, data_dir / "audit.csv", target, "--chunk-size", chunk)[0] == 0
        outputs.append(target.read_text())
    assert outputs[0] == outputs[1]


def test_missing_column_names_column_and_model(capsys, store: str, tmp_path: Path) -> None:
    bad = write(tmp_path / "in.csv", "Age,Employment", "38,Private")
    code, _, err = score(capsys, store, bad, tmp_path / "out.csv")
    assert code == 3
    assert "missing 7 field(s)" in err and "Education" in err and f"{MODEL}@1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out.csv").exists()


def test_bad_value_is_recorded_and_too_many_write_nothing(
    capsys, store: str, tmp_path: Path
) -> None:
    rows = [GOOD_ROW] * 5 + ["38,Martian,College,Unmarried,Service,81838,Female,FALSE,72"]
    bad = write(tmp_path / "in.csv", AUDIT_HEADER, *rows)
    out = tmp_path / "out.csv"
    out.write_text("previous results\n")
    code, _, err = score(capsys, store, bad, out, "--chunk-size", "2", "--max-error-rate", "0.1")
    assert code == 3
    assert "1 of 6 rows (16.7%) could not be scored, more than --max-error-rate 0.1" in err
    assert out.read_text() == "previous results\n"  # not replaced by a partial file
    errors = (tmp_path / "out.csv.errors.csv").read_text()
    assert "5,,Employment,Martian,\"unseen category 'Martian'" in errors
    assert "'Consultant', 'PSFederal'" in errors
    code, _, err = score(capsys, store, bad, out, "--max-error-rate", "0.2")
    assert code == 7 and "1 row(s) could not be scored" in err
    assert len(out.read_text().splitlines()) == 6  # the header and the five good rows


def test_non_numeric_value_is_named(capsys, store: str, tmp_path: Path) -> None:
    bad = write(
        tmp_path / "in.csv",
        AUDIT_HEADER,
        "thirty,Private,College,Unmarried,Service,81838,Female,FALSE,72",
    )
    code, _, err = score(capsys, store, bad, tmp_path / "o.csv")
    assert code == 3 and "One of them: row 0, field 'Age': expected a number" in err
    assert (
        "0,,Age,thirty,\"expected a number, got 'thirty'\""
        in (tmp_path / "o.csv.errors.csv").read_text()
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        (AUDIT_HEADER + "\n1,2\n", "has 2 fields, but the header has 9"),
        ("Age,Age\n1,2\n", "repeats column(s) Age"),
    ],
)
def test_malformed_csv_is_refused(
    capsys, store: str, tmp_path: Path, content: str, message: str
) -> None:
    bad = tmp_path / "in.csv"
    bad.write_text(content)
    code, _, err = score(capsys, store, bad, tmp_path / "o.csv")
    assert code == 3 and message in err


def test_usage_errors(capsys, store: str, data_dir: Path, tmp_path: Path) -> None:
    audit = str(data_dir / "audit.csv")
    code, _, err = score(capsys, store, audit, tmp_path / "o.csv", "--keep", "Nope")
    assert code == 2 and "--keep/--key name column(s) not in" in err and "Nope" in err
    code, _, err = score(capsys, store, audit, tmp_path / "o.csv", "--chunk-size", "0")
    assert code == 2 and "--chunk-size" in err
    code, _, err = score(capsys, store, tmp_path / "absent.csv", tmp_path / "o.csv")
    assert code == 3 and "does not exist" in err


def test_unknown_model_and_version(capsys, store: str, data_dir: Path, tmp_path: Path) -> None:
    audit = str(data_dir / "audit.csv")
    code, _, err = run(
        capsys,
        "score",
        "--model",
        "nosuch",
        "--store",
        store,
        "--input",
        audit,
        "--output",
        str(tmp_path / "o.csv"),
    )
    assert code == 4 and "no model named 'nosuch'" in err and MODEL in err
    code, _, err = run(
        capsys,
        "score",
        "--model",
        f"{MODEL}@99",
        "--store",
        store,
        "--input",
        audit,
        "--output",
        str(tmp_path / "o.csv"),
    )
    assert code == 4 and "no version 99" in err


def test_models_commands(capsys, trained, tmp_path: Path, data_dir: Path) -> None:
    store = str(tmp_path / "store")
    for _ in range(2):
        code, out, err = run(
            capsys,
            "train",
            "--data",
            str(data_dir / "iris.csv"),
            "--target",
            "Species",
            "--name",
            "iris",
            "--algorithm",
            "tree",
            "--store",
            store,
        )
        assert code == 0, err
    assert out.strip() == "2" and "champion is version 1" in err
    code, out, _ = run(capsys, "models", "list", "--store", store)
    assert code == 0 and "iris" in out
    code, out, _ = run(capsys, "models", "show", "iris@2", "--store", store)
    shown = json.loads(out)
    assert shown["version"] == "2" and shown["aliases"] == {"champion": "1"}
    assert set(shown["artifacts"]) == {"model.pmml", "model.pkl"}
    assert run(capsys, "models", "promote", "iris", "2", "--store", store)[1].startswith(
        "iris: champion is now version 2 (was 1)"
    )
    code, out, _ = run(capsys, "models", "rollback", "iris", "--store", store)
    assert code == 0 and "rolled back to version 1 (was 2)" in out
    code, _, err = run(capsys, "models", "rollback", "iris", "--store", store)
    assert code == 2 and "no earlier champion" in err
    code, _, err = run(capsys, "models", "promote", "iris", "7", "--store", store)
    assert code == 4 and "versions: 1, 2" in err


def test_train_errors(capsys, data_dir: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    code, _, err = run(
        capsys,
        "train",
        "--data",
        str(data_dir / "audit.csv"),
        "--target",
        "Nope",
        "--name",
        "x",
        "--store",
        store,
    )
    assert code == 2 and "target column 'Nope' is not in" in err and "Adjusted" in err
    code, _, err = run(
        capsys,
        "train",
        "--data",
        str(data_dir / "audit.csv"),
        "--target",
        "Adjusted",
        "--name",
        "x",
        "--categorical",
        "Nope",
        "--store",
        store,
    )
    assert code == 2 and "--categorical names column(s)" in err


def test_db_url_prints_the_dsn(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCOREKIT_DSN", "postgresql://example/db")
    assert run(capsys, "db", "url") == (0, "postgresql://example/db\n", "")


def test_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("scorekit")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "score" in result.stdout
    result = subprocess.run([str(script), "score"], capture_output=True, text=True)
    assert result.returncode == 2 and "required" in result.stderr


def test_utf8_bom_and_blank_lines(capsys, store: str, tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeff" + AUDIT_HEADER + "\n" + GOOD_ROW + "\n", encoding="utf-8")
    code, _, err = score(capsys, store, bom, tmp_path / "o.csv")
    assert code == 0, err
    blanks = write(
        tmp_path / "blanks.csv",
        AUDIT_HEADER,
        GOOD_ROW,
        "",
        "",
        GOOD_ROW,
        "thirty,Private,College,Unmarried,Service,81838,Female,FALSE,72",
    )
    code, _, err = score(capsys, store, blanks, tmp_path / "o.csv", "--chunk-size", "2")
    assert code == 3 and "row 2, field 'Age'" in err  # blank lines are not rows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "0"], "--rows must be at least 1"),
        (["--data", "nowhere.csv"], "--data nowhere.csv does not exist"),
        (["--target", "Nope"], "--target 'Nope' is not a column"),
    ],
)
def test_bench_argument_errors(capsys, argv: list[str], message: str, tmp_path: Path) -> None:
    code, _, err = run(capsys, "bench", "engines", "--output", str(tmp_path / "b.md"), *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "b.md").exists()

"""`scorekit package`: the Lambda zip, unpacked into a fresh virtualenv with only its contents
on the path, scores through the handler with a Function URL event; the Azure folder, with only
its contents and the worker's azure-functions, scores through the HTTP function; neither holds
scikit-learn, scipy or pandas; a package over the platform's limit is refused. The sizes are
printed in the test output."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

import scorekit
from scorekit._cli import main

RECORD = {"Age": 38, "Employment": "Private", "Education": "College", "Marital": "Unmarried",
          "Occupation": "Service", "Income": 81838, "Gender": "Female", "Deductions": "FALSE",
          "Hours": 72}  # fmt: skip
HEAVY = ("sklearn", "scipy", "pandas", "pypmml", "py4j")


@pytest.fixture(scope="module")
def model(trained, session_store) -> scorekit.Manifest:
    return trained("audit")


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A virtualenv of the system Python with nothing installed in it."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def run_isolated(python: str, paths: list[Path], cwd: Path, code: str) -> Any:
    """Run ``code`` in ``python`` with only ``paths`` added to sys.path; returns its JSON."""
    probe = f"import sys\nsys.path[:0] = {[str(p) for p in paths]!r}\n{code}"
    done = subprocess.run([python, "-c", probe], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_wheels_fit(site: Path, glibc_minor: int) -> None:
    """Every installed wheel is pure Python or built for CPython 3.11 on x86_64 Linux with a
    glibc no newer than 2.<glibc_minor>: what the platform can load."""
    tags = [
        line.split(": ", 1)[1]
        for wheel in site.glob("*.dist-info/WHEEL")
        for line in wheel.read_text().splitlines()
        if line.startswith("Tag: ")
    ]
    assert tags
    for tag in tags:
        python, _abi, platform = tag.split("-")
        if platform == "any":
            continue
        assert python == "cp311" and platform.endswith("x86_64"), tag
        found = re.match(r"manylinux_2_(\d+)_x86_64$", platform)
        minor = int(found[1]) if found else LEGACY_MANYLINUX.get(platform)
        assert minor is not None and minor <= glibc_minor, tag


# the glibc minor version of each manylinux tag's old name (PEP 600)
LEGACY_MANYLINUX = {"manylinux1_x86_64": 5, "manylinux2010_x86_64": 12, "manylinux2014_x86_64": 17}


def assert_bytecode(root: Path, packages: list[str]) -> None:
    """Every module of ``packages`` has its bytecode beside it for the platform's Python (the
    function can't write it on its read-only file system), unchecked: valid whatever mtimes
    the zip and its extraction leave."""
    for package in packages:
        modules = sorted((root / package).rglob("*.py"))
        assert modules, package
        missing = []
        for module in modules:
            cached = module.parent / "__pycache__" / f"{module.stem}.cpython-311.pyc"
            if not cached.exists():
                missing.append(module)
                continue
            header = cached.read_bytes()[:8]
            assert header[:4] == importlib.util.MAGIC_NUMBER, cached
            assert int.from_bytes(header[4:8], "little") == 0b01, cached  # hash-based, unchecked
        # a library's sources that don't compile (templates) are left to the import system
        assert len(missing) <= len(modules) // 50, missing[:5]


def expected_probability(session_store: Any, model: scorekit.Manifest) -> float:
    loaded = scorekit.load_model(model.ref, store=session_store)
    return float(loaded.predict_one(RECORD)["probability(1)"])


def test_lambda_zip_scores_in_a_fresh_virtualenv(
    capsys, model, session_store, fresh_python: str, tmp_path: Path
) -> None:
    zip_path = tmp_path / "lambda.zip"
    code = main(["package", "lambda", "--model", model.ref, "--store", str(session_store.url),
                 "--output", str(zip_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "MiB zipped" in out
    with capsys.disabled():
        print(f"\n[package sizes] {out.strip()}")
    task = tmp_path / "task"  # Lambda unpacks the zip into /var/task and runs from there
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(task)
        names = archive.namelist()
    assert not [n for n in names if n.split("/")[0] in HEAVY]
    assert_wheels_fit(task, glibc_minor=26)  # Amazon Linux 2, the python3.11 runtime's OS
    assert_bytecode(task, ["scorekit", "functions", "numpy"])
    event = {
        "version": "2.0",
        "rawPath": f"/api/models/{model.name}/predict",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST"}, "stage": "$default"},
        "body": json.dumps(RECORD),
        "isBase64Encoded": False,
    }
    result = run_isolated(
        fresh_python, [task], task,
        "import json\nfrom functions.aws_lambda import handler\n"
        f"response = handler({event!r}, None)\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'response': response, 'heavy': heavy, 'numpy': "
        "sys.modules['numpy'].__file__}))",
    )  # fmt: skip
    assert result["heavy"] == [] and result["numpy"].startswith(str(task))
    response = result["response"]
    assert response["statusCode"] == 200, response
    body = json.loads(response["body"])
    assert body["version"] == model.version
    assert body["predictions"][0]["probability(1)"] == expected_probability(session_store, model)


def test_azure_folder_scores_with_only_its_contents(
    capsys, model, session_store, fresh_python: str, tmp_path: Path
) -> None:
    from scorekit._package import AZURE_PLATFORMS, _pip_install

    app = tmp_path / "azure"
    assert main(["package", "azure", "--model", model.ref, "--store", str(session_store.url),
                 "--output", str(app)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n[package sizes] {out.strip()}")
    site = app / ".python_packages" / "lib" / "site-packages"
    assert (site / "numpy").is_dir() and not [p for p in HEAVY if (site / p).exists()]
    assert_wheels_fit(site, glibc_minor=31)  # Debian 11, Azure's Python 3.11 image
    assert_bytecode(app, ["scorekit", "functions"])
    assert_bytecode(site, ["numpy"])
    assert "numpy==" in (app / "requirements.txt").read_text()
    worker = tmp_path / "worker"  # what the Functions Python worker brings: azure-functions
    _pip_install(worker, ["azure-functions==1.26.0"], AZURE_PLATFORMS)
    url = f"http://localhost/api/models/{model.name}/predict"
    result = run_isolated(
        fresh_python, [app, site, worker], app,
        "import json\nimport azure.functions as func\nimport function_app\n"
        "fn = {f.get_function_name(): f for f in function_app.app.get_functions()}\n"
        "http = fn['scorekit_http'].get_user_function()\n"
        f"r = http(func.HttpRequest(method='POST', url={url!r}, "
        "headers={'Content-Type': 'application/json'}, "
        f"body={json.dumps(RECORD).encode()!r}))\n"
        "print(json.dumps({'status': r.status_code, 'body': json.loads(r.get_body()), "
        f"'functions': sorted(fn), 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))",
    )  # fmt: skip
    assert result["functions"] == ["scorekit_blob_drop", "scorekit_http"]
    assert result["status"] == 200 and result["heavy"] == []
    probability = result["body"]["predictions"][0]["probability(1)"]
    assert probability == expected_probability(session_store, model)


def test_a_package_over_the_limit_is_refused(
    capsys, model, session_store, tmp_path, monkeypatch
) -> None:
    from scorekit import _package

    monkeypatch.setattr(_package, "LAMBDA_UNZIPPED_LIMIT", 10 * _package.MIB)
    zip_path = tmp_path / "big.zip"
    code = main(["package", "lambda", "--model", model.ref, "--store", str(session_store.url),
                 "--output", str(zip_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "the Lambda package, unzipped would be" in err and "over the limit of 10 MiB" in err
    assert not list(tmp_path.iterdir())


def test_package_refuses_a_path_and_a_full_output(model, session_store, tmp_path, capsys) -> None:
    assert main(["package", "lambda", "--model", "x/model.pmml", "--output",
                 str(tmp_path / "l.zip")]) == 2  # fmt: skip
    assert "a package takes a model from the store" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["package", "azure", "--model", model.ref, "--store", str(session_store.url),
                 "--output", str(tmp_path / "full")]) == 2  # fmt: skip
    assert "is not empty" in capsys.readouterr().err

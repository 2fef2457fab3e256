"""File-drop batch scoring through the Lambda handler: S3 ObjectCreated events, with S3 through
moto (in-process and the standalone server). Files are scored in chunks; a bad file gets an
error report beside it and no output."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scorekit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["mock_aws", "moto_server"])
def bucket(request: pytest.FixtureRequest, aws_credentials) -> Iterator[str]:
    import boto3

    name = f"drops-{uuid.uuid4().hex[:12]}"
    if request.param == "mock_aws":
        from moto import mock_aws

        with mock_aws():
            boto3.client("s3").create_bucket(Bucket=name)
            yield name
        return
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_server"))
    boto3.client("s3").create_bucket(Bucket=name)
    yield name


@pytest.fixture
def lambda_module(session_store, trained, monkeypatch) -> Any:
    trained("audit")
    monkeypatch.setenv("SCOREKIT_STORE", str(session_store.url))
    monkeypatch.setenv("SCOREKIT_CHUNK_ROWS", "500")  # 1,899 rows: four chunks
    sys.path.insert(0, str(ROOT))
    try:
        module = importlib.reload(importlib.import_module("functions.aws_lambda"))
    finally:
        sys.path.remove(str(ROOT))
    module._s3 = None  # a client for this test's S3
    return module


def s3_event(bucket: str, *keys: str) -> dict[str, Any]:
    """The shape of an S3 ObjectCreated notification (keys are URL-encoded, as S3 sends them)."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                       "object": {"key": quote_plus(key, safe="/@"), "size": 1}},
            }
            for key in keys
        ]
    }  # fmt: skip


def put(bucket: str, key: str, data: bytes) -> None:
    import boto3

    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)


def get(bucket: str, key: str) -> bytes | None:
    import boto3

    s3 = boto3.client("s3")
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def test_a_dropped_file_is_scored_in_chunks(lambda_module, bucket, trained, session_store,
                                            data_dir) -> None:  # fmt: skip
    manifest = trained("audit")
    source = (data_dir / "audit_na.csv").read_bytes()
    key = f"input/{manifest.name}/2026-11-21 batch.csv"
    put(bucket, key, source)
    result = lambda_module.handler(s3_event(bucket, key), None)
    (outcome,) = result["files"]
    assert (
        outcome["rows"] == 1899
        and outcome["output_key"] == f"output/{manifest.name}/2026-11-21 batch.csv"
    )
    scored = list(csv.DictReader(io.StringIO(get(bucket, outcome["output_key"]).decode())))
    model = scorekit.load_model(manifest.ref, store=session_store)
    with open(data_dir / "audit_na.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    want = model.predict_columns({n: [r[n] for r in rows] for n in model.input_fields})
    assert [int(r["prediction"]) for r in scored] == want["prediction"].tolist()
    assert [float(r["probability(1)"]) for r in scored] == pytest.approx(
        want["probability(1)"].tolist(), abs=1e-12
    )


def test_a_bad_file_gets_a_report_and_no_output(lambda_module, bucket, trained) -> None:
    manifest = trained("audit")
    header = "Age,Employment,Education,Marital,Occupation,Income,Gender,Deductions,Hours\n"
    good = "38,Private,College,Unmarried,Service,81838,Female,FALSE,72\n"
    bad = "38,Martian,College,Unmarried,Service,81838,Female,FALSE,72\n"
    key = f"input/{manifest.name}/bad.csv"
    put(bucket, key, (header + good * 600 + bad).encode())  # the bad row is in the 2nd chunk
    unknown = "input/no-such-model/x.csv"
    put(bucket, unknown, (header + good).encode())
    result = lambda_module.handler(s3_event(bucket, key, unknown, f"{key}.error.json"), None)
    reports = [o.get("report_key") for o in result["files"]]
    assert reports == [f"{key}.error.json", f"{unknown}.error.json"]
    assert get(bucket, f"output/{manifest.name}/bad.csv") is None
    report = json.loads(get(bucket, f"{key}.error.json") or b"{}")
    assert report["error"]["code"] == "invalid_input"
    assert report["error"]["details"][0]["row"] == 600
    assert report["error"]["details"][0]["value"] == "Martian"
    report = json.loads(get(bucket, f"{unknown}.error.json") or b"{}")
    assert report["error"]["code"] == "model_not_found"


def test_files_outside_the_input_prefix_are_left_alone(lambda_module, bucket) -> None:
    put(bucket, "elsewhere/x.csv", b"a\n1\n")
    assert lambda_module.handler(s3_event(bucket, "elsewhere/x.csv"), None) == {"files": []}


def test_an_output_prefix_under_the_input_prefix_is_refused(session_store) -> None:
    from scorekit import _filedrop, _http

    models = _http.Models(session_store)
    with pytest.raises(scorekit.UsageError, match="dropped in again"):
        _filedrop.score_drop(models, "in/m/x.csv", io.BytesIO(b""), print, print,
                             input_prefix="in/", output_prefix="in/out/")  # fmt: skip
    assert os.environ.get("SCOREKIT_CHUNK_ROWS") is None


@pytest.mark.parametrize("rows", ["0", "2.5", "-1", "many", "inf"])
def test_a_bad_chunk_setting_is_named(rows: str) -> None:
    from scorekit import _filedrop

    with pytest.raises(scorekit.UsageError, match=f"SCOREKIT_CHUNK_ROWS.*{rows!r}"):
        _filedrop.DropSettings.from_env({"SCOREKIT_CHUNK_ROWS": rows})


def test_drop_settings_from_the_environment() -> None:
    from scorekit import _filedrop

    assert _filedrop.DropSettings.from_env({}) == _filedrop.DropSettings(
        "input/", "output/", 10_000
    )
    given = {"SCOREKIT_INPUT_PREFIX": "in/", "SCOREKIT_OUTPUT_PREFIX": "out/",
             "SCOREKIT_CHUNK_ROWS": "500"}  # fmt: skip
    assert _filedrop.DropSettings.from_env(given) == _filedrop.DropSettings("in/", "out/", 500)

"""AWS Lambda: scorekit's HTTP protocol for API Gateway and Lambda Function URL events, and
file-drop batch scoring for S3 ObjectCreated events.

`handler(event, context)` takes HTTP API and Function URL events (payload format 2.0) and REST
API events (1.0), answering in the matching shape; and S3 events for CSV files dropped under
SCOREKIT_INPUT_PREFIX (default input/), scored into SCOREKIT_OUTPUT_PREFIX (default output/) of
the same bucket, or refused with an error report beside the input. Settings come from the
function's environment (SCOREKIT_STORE=s3://bucket/prefix, ...). A model is loaded once per
execution environment, on first use, and kept across invocations.
"""

from __future__ import annotations

import base64
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

from scorekit import _filedrop, _http

logging.getLogger("scorekit.http").setLevel(logging.INFO)  # one line per request
if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # in Lambda: keep model files in /tmp as well
    os.environ.setdefault("SCOREKIT_CACHE_DIR", "/tmp/scorekit-cache")
_protocol = _http.HttpApp(_http.Settings.from_env())


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event.get("Records") or []
    if records and records[0].get("eventSource") == "aws:s3":
        return _on_s3_event(records)
    method, path = _method_and_path(event)
    headers = {k: v for k, v in (event.get("headers") or {}).items() if isinstance(v, str)}
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw)
        except ValueError:
            body = b"\xff"  # undecodable: the protocol answers 400
    else:
        body = raw.encode()
    status, out_headers, out_body = _protocol.handle(method, path, headers, body)
    return {
        "statusCode": status,
        "headers": out_headers,
        "body": out_body.decode(),
        "isBase64Encoded": False,
    }


def _method_and_path(event: dict[str, Any]) -> tuple[str, str]:
    if event.get("version") == "2.0":  # HTTP API, Function URL
        method = event["requestContext"]["http"]["method"]
        path = event.get("rawPath") or "/"
        stage = event["requestContext"].get("stage")
        if stage and stage != "$default" and path.startswith(f"/{stage}/"):
            path = path[len(stage) + 1 :]  # a named stage prefixes the raw path
        query = event.get("rawQueryString") or ""
    else:  # REST API (1.0)
        method = event.get("httpMethod") or "GET"
        path = event.get("path") or "/"
        pairs = event.get("multiValueQueryStringParameters") or {
            k: [v] for k, v in (event.get("queryStringParameters") or {}).items()
        }
        query = urllib.parse.urlencode([(k, v) for k, vs in pairs.items() for v in vs])
    return method, path + (f"?{query}" if query else "")


_s3: Any = None


def _client() -> Any:
    global _s3
    if _s3 is None:
        import boto3

        _s3 = boto3.client("s3")
    return _s3


def _on_s3_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Score each dropped CSV; a file that can't be scored gets <key>.error.json instead."""
    drop = _filedrop.DropSettings.from_env(os.environ)
    s3 = _client()
    outcomes = []
    for record in records:
        bucket = record["s3"]["bucket"]["name"]
        key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
        if not _filedrop.wants(key, drop.input_prefix):
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]

        def upload(path: Path, out_key: str, bucket: str = bucket) -> None:
            s3.upload_file(str(path), bucket, out_key)  # multipart for large files

        def put_report(report_key: str, data: bytes, bucket: str = bucket) -> None:
            s3.put_object(Bucket=bucket, Key=report_key, Body=data, ContentType="application/json")

        outcome = _filedrop.score_drop(
            _protocol.models,
            key,
            body,
            upload,
            put_report,
            input_prefix=drop.input_prefix,
            output_prefix=drop.output_prefix,
            chunk_size=drop.chunk_size,
        )
        logging.getLogger("scorekit.http").info("file drop %s", outcome.to_dict())
        outcomes.append({"bucket": bucket, **outcome.to_dict()})
    return {"files": outcomes}

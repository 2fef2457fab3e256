"""AWS Lambda: scorekit's HTTP protocol for API Gateway and Lambda Function URL events.

`handler(event, context)` takes HTTP API and Function URL events (payload format 2.0) and REST
API events (1.0), and answers in the matching shape. Settings come from the function's
environment (SCOREKIT_STORE=s3://bucket/prefix, ...). The model is loaded once per execution
environment, on its first request, and kept across invocations.
"""

from __future__ import annotations

import base64
import logging
import urllib.parse
from typing import Any

from scorekit import _http

logging.getLogger("scorekit.http").setLevel(logging.INFO)  # one line per request
_protocol = _http.HttpApp(_http.Settings.from_env())


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
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

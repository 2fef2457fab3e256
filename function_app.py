"""Azure Functions (Python v2 programming model): scorekit's HTTP protocol as one HTTP function,
and file-drop batch scoring as one Event Grid function.

This repo's root is the Function App root (host.json, requirements.txt). Every route is served
under /api, as Azure does: /api/models/{name}/predict, /api/v2/models/{name}/infer, ...
Settings come from the app settings (SCOREKIT_STORE, SCOREKIT_REFRESH_SECONDS, ...). The model
is loaded once per worker process, on its first request, and kept.

File drops: a storage account's BlobCreated events, delivered by an Event Grid subscription to
scorekit_blob_drop, for CSVs dropped under SCOREKIT_INPUT_PREFIX (input/<model>/<name>.csv)
in any container; each is streamed, scored, and written under SCOREKIT_OUTPUT_PREFIX of the
same container, or refused with <name>.csv.error.json beside it (docs/functions.md).
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

import azure.functions as func

from functions import azure_blob
from scorekit import _http

logging.getLogger("scorekit.http").setLevel(logging.INFO)  # one line per request
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
_protocol = _http.HttpApp(_http.Settings.from_env())


@app.route(route="{*path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def scorekit_http(req: func.HttpRequest) -> func.HttpResponse:
    url = urllib.parse.urlsplit(req.url)
    path = url.path + (f"?{url.query}" if url.query else "")
    status, headers, body = _protocol.handle(req.method, path, dict(req.headers), req.get_body())
    return func.HttpResponse(body=body, status_code=status, headers=headers)


_blob_service: Any = None


@app.event_grid_trigger(arg_name="event")
def scorekit_blob_drop(event: func.EventGridEvent) -> None:
    global _blob_service
    log = logging.getLogger("scorekit.http")
    found = azure_blob.blob_of(event.subject or "")
    if event.event_type != azure_blob.BLOB_CREATED or found is None:
        log.info("file drop: ignored %s event for %s", event.event_type, event.subject)
        return
    if _blob_service is None:
        _blob_service = azure_blob.service_client()
    outcome = azure_blob.score_blob(_blob_service, _protocol.models, *found)
    if outcome is not None:
        log.info("file drop %s", json.dumps({"container": found[0], **outcome.to_dict()}))

"""Azure Functions (Python v2 programming model): scorekit's HTTP protocol as one HTTP function.

This repo's root is the Function App root (host.json, requirements.txt). Every route is served
under /api, as Azure does: /api/models/{name}/predict, /api/v2/models/{name}/infer, ...
Settings come from the app settings (SCOREKIT_STORE, SCOREKIT_REFRESH_SECONDS, ...). The model
is loaded once per worker process, on its first request, and kept.
"""

from __future__ import annotations

import logging
import urllib.parse

import azure.functions as func

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

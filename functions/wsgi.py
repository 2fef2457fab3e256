"""The local server's WSGI app: scorekit's HTTP protocol behind any WSGI server.

`scorekit serve` runs it under gunicorn; `gunicorn functions.wsgi:application` does the same.
Settings come from the environment (SCOREKIT_STORE, SCOREKIT_REFRESH_SECONDS, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from scorekit import _http

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(app: _http.HttpApp) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        headers = {
            key[5:].replace("_", "-"): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        limit = app.settings.max_body
        declared = environ.get("CONTENT_LENGTH")
        try:
            length = int(declared) if declared else None
        except ValueError:
            length = None
        if length is not None and length > limit:
            status, out_headers, out_body = app.too_large(length)  # not read at all
        else:
            # Without a length (chunked), read at most one byte past the limit: enough to 413.
            stream = environ["wsgi.input"]
            body = stream.read(length) if length is not None else stream.read(limit + 1)
            status, out_headers, out_body = app.handle(
                environ.get("REQUEST_METHOD", "GET"), path, headers, body
            )
        phrase = HTTPStatus(status).phrase
        start_response(
            f"{status} {phrase}",
            [*out_headers.items(), ("Content-Length", str(len(out_body)))],
        )
        return [out_body]

    return application


_requests = logging.getLogger("scorekit.http")  # one line per request, to stderr
_requests.setLevel(logging.INFO)
if not _requests.handlers:
    _requests.addHandler(logging.StreamHandler())
application = make_app(_http.HttpApp(_http.Settings.from_env()))

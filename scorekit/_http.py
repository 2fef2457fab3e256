"""scorekit's HTTP protocol, once, in plain Python: (method, path, headers, body) in,
(status, headers, body) out. The Azure Functions, AWS Lambda and WSGI adapters in functions/
only translate their platform's request into these values and back.

Routes (Azure puts everything under /api; the others serve the same paths)::

    GET  /api/health                       liveness, and whether the store was reachable
    GET  /api/models                       the models in the store, with their champions
    GET  /api/models/{name}                a version's input schema and metrics (?version=)
    POST /api/models/{name}/predict        score records (?version=); formats below
    GET  /v2/health/live | /v2/health/ready          Open Inference Protocol (KServe v2)
    GET  /v2/models/{name} | /v2/models/{name}/ready
    POST /v2/models/{name}/infer

A predict body is JSON (one record as an object; a list of records; {"instances": [...]};
{"dataframe_records": [...]}; {"dataframe_split": {"columns": [...], "data": [[...]]}};
{"inputs": {column: [values]}}) or text/csv with a header line. The answer is
{"model", "version", "predictions": [{"prediction": ..., "probability(<class>)": ...}, ...]}
in input order. Every client mistake is a 4xx with one error shape,
{"error": {"code", "message", "details": [{"row", "field", "problem", "value"}]}}.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import threading
import time
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from ._config import env_number
from ._errors import InputError, Problem, ScorekitError, StoreError
from ._loading import open_scorer
from ._model import Model
from ._output import finite_or_none
from ._schema import json_kind
from ._store import CHAMPION, ModelStore, check_name, open_store

log = logging.getLogger("scorekit.http")

DEFAULT_MAX_BODY = 10 * 1024 * 1024  # bytes
DEFAULT_MAX_ROWS = 100_000
DEFAULT_REFRESH_SECONDS = 30.0  # how often the champion is re-resolved
MODEL_CACHE_SIZE = 16
JSON = "application/json"

Headers = dict[str, str]
Response = tuple[int, Headers, bytes]


class HttpError(ScorekitError):
    """A client error that is about the request itself, not its data (status chosen here)."""

    def __init__(self, status: int, code: str, message: str, allow: str | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.allow = allow  # for 405: the method the route takes


@dataclass
class Settings:
    """What an HTTP app serves and its limits; from_env reads SCOREKIT_* variables."""

    store: str | None = None  # a directory or s3://bucket/prefix; default $SCOREKIT_STORE or pmml/
    engine: str = "auto"
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    max_body: int = DEFAULT_MAX_BODY
    max_rows: int = DEFAULT_MAX_ROWS
    cache_dir: str | None = None  # local copies of an S3 store's published versions
    preload: tuple[str, ...] = ()  # models loaded when the app starts, not on first request

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        return cls(
            store=environ.get("SCOREKIT_STORE") or None,
            engine=environ.get("SCOREKIT_ENGINE", "auto"),
            refresh_seconds=env_number(
                environ, "SCOREKIT_REFRESH_SECONDS", DEFAULT_REFRESH_SECONDS
            ),
            max_body=int(env_number(environ, "SCOREKIT_MAX_BODY", DEFAULT_MAX_BODY)),
            max_rows=int(env_number(environ, "SCOREKIT_MAX_ROWS", DEFAULT_MAX_ROWS)),
            cache_dir=environ.get("SCOREKIT_CACHE_DIR") or None,
            preload=tuple(
                name.strip()
                for name in environ.get("SCOREKIT_PRELOAD", "").split(",")
                if name.strip()
            ),
        )


@dataclass
class Models:
    """Loaded model versions, once per process (a version is immutable, so it is loaded once).
    An alias (the champion, by default) is re-resolved at most every ``refresh_seconds``; while
    the store can't be reached, the version already resolved keeps serving, and ``degraded``
    says which models could not be re-resolved and why."""

    store: ModelStore
    engine: str = "auto"
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    clock: Callable[[], float] = time.monotonic
    degraded: dict[str, str] = field(default_factory=dict)  # model name -> the store's error
    _loaded: OrderedDict[tuple[str, str], Model] = field(default_factory=OrderedDict)
    _aliases: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    _alias_files: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loading: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)

    def get(self, name: str, version: str | None = None) -> Model:
        """The model ``name`` at ``version``: a number, an alias, or None for the champion."""
        check_name(name)
        selector = version or CHAMPION
        check_name(selector, "version or alias")
        number = selector if selector.isdigit() else self.resolve(name, selector)
        key = (name, number)
        with self._lock:
            model = self._loaded.get(key)
            if model is not None:
                self._loaded.move_to_end(key)
                return model
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one load per version, however many requests ask at once
            try:
                with self._lock:
                    model = self._loaded.get(key)
                if model is None:
                    bundle = self.store.bundle(name, self.store.resolve(name, number))
                    model = Model(bundle.manifest, open_scorer(bundle, self.engine))
                    with self._lock:
                        self._loaded[key] = model
                        # The oldest is dropped, not closed: a request may still be using it.
                        while len(self._loaded) > MODEL_CACHE_SIZE:
                            self._loaded.popitem(last=False)
            finally:  # also when the load fails (an unknown version): no lock left per request
                with self._lock:
                    self._loading.pop(key, None)
        return model

    def resolve(self, name: str, alias: str = CHAMPION) -> str:
        """The version ``alias`` names, re-read from the store at most every refresh_seconds."""
        now = self.clock()
        cached = self._aliases.get((name, alias))
        if cached is not None and now - cached[1] < self.refresh_seconds:
            return cached[0]
        try:
            version = self._read_alias(name, alias)
        except StoreError as exc:
            if cached is None:
                raise
            # Keep serving what was resolved, and wait a whole interval before trying again.
            self.degraded[name] = exc.message
            self._aliases[(name, alias)] = (cached[0], now)
            return cached[0]
        self.degraded.pop(name, None)
        self._aliases[(name, alias)] = (version, now)
        return version

    def _read_alias(self, name: str, alias: str) -> str:
        """The alias's version from aliases.json, fetched only if it changed since last read."""
        tagged = self.store.aliases_tagged(name, self._alias_files.get(name))
        if tagged is None or alias not in tagged[1]:
            return self.store.resolve(name, alias)  # raises, naming what exists
        self._alias_files[name] = tagged
        return str(tagged[1][alias]["version"])


class HttpApp:
    """The protocol: ``handle(method, path, headers, body)`` -> (status, headers, body)."""

    def __init__(self, settings: Settings | None = None, models: Models | None = None) -> None:
        self.settings = settings or Settings()
        self.models = models or Models(
            open_store(self.settings.store, self.settings.cache_dir),
            self.settings.engine,
            self.settings.refresh_seconds,
        )
        for name in self.settings.preload:  # in a cold start, not in the first request
            try:
                self.models.get(name)
            except ScorekitError as exc:  # served as usual later: the request gets the error
                log.warning("could not preload model %s: %s", name, exc.message)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        started = time.perf_counter()
        route, _, query_string = path.partition("?")
        query = dict(urllib.parse.parse_qsl(query_string))
        lowered = {k.lower(): v for k, v in headers.items()}
        served: dict[str, Any] = {}
        out_headers = {"Content-Type": JSON}
        parts = _segments(route)
        if parts[:1] == ["api"]:  # Azure serves every route under /api; the others may too
            parts = parts[1:]
        v2 = parts[:1] == ["v2"]
        try:
            status, payload = self._route(method.upper(), parts, query, lowered, body, served)
            body_out = _dumps(payload)
        except ScorekitError as exc:
            status, body_out = exc.http_status, _dumps(_error_body(exc, v2))
            if isinstance(exc, HttpError) and exc.allow:
                out_headers["Allow"] = exc.allow
        except Exception as exc:  # a bug: log it whole, answer without a traceback
            log.exception("internal error on %s %s", method, route)
            internal = ScorekitError(f"internal error: {type(exc).__name__}")
            status, body_out = 500, _dumps(_error_body(internal, v2))
        if "version" in served:
            out_headers["Scorekit-Model-Version"] = str(served["version"])
        log.info(
            json.dumps(
                {
                    "method": method,
                    "path": route,
                    "status": status,
                    "model": served.get("model"),
                    "version": served.get("version"),
                    "rows": served.get("rows"),
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
        )
        return status, out_headers, body_out

    def too_large(self, length: int) -> Response:
        """The 413 an adapter answers for a body it declines to read (Content-Length alone)."""
        error = HttpError(413, "payload_too_large", self._size_message(length))
        return 413, {"Content-Type": JSON}, _dumps(_error_body(error, False))

    # --- routing ------------------------------------------------------------------------------
    def _route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        served: dict[str, Any],
    ) -> tuple[int, Any]:
        if parts[:1] == ["v2"]:
            return self._v2(method, parts[1:], headers, body, served)
        if parts == ["openapi.json"]:
            self._allow(method, "GET")
            from ._openapi import openapi_document

            return 200, openapi_document()
        if parts == ["health"]:
            self._allow(method, "GET")
            return 200, {
                "status": "ok",
                "store": self.models.store.url,
                "degraded": dict(self.models.degraded) or None,
            }
        if parts == ["models"]:
            self._allow(method, "GET")
            return 200, {"models": self._list_models()}
        if len(parts) == 2 and parts[0] == "models":
            self._allow(method, "GET")
            return 200, self._describe(parts[1], query.get("version"), served)
        if len(parts) == 3 and parts[0] == "models" and parts[2] == "predict":
            self._allow(method, "POST")
            return 200, self._predict(parts[1], query.get("version"), headers, body, served)
        raise HttpError(
            404,
            "not_found",
            f"no route /{'/'.join(parts)}; the routes are listed in /api/openapi.json",
        )

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(
                405, "method_not_allowed", f"use {allowed} here, not {method}", allow=allowed
            )

    def _list_models(self) -> list[dict[str, Any]]:
        store = self.models.store
        out = []
        for name in store.models():
            champion = store.aliases(name).get("champion", {}).get("version")
            out.append({"name": name, "champion": champion, "versions": store.versions(name)})
        return out

    def _describe(self, name: str, version: str | None, served: dict[str, Any]) -> dict[str, Any]:
        model = self.models.get(name, version)
        served.update(model=model.name, version=model.version)
        manifest = model.manifest
        return {
            "name": manifest.name,
            "version": manifest.version,
            "task": manifest.task,
            "target": manifest.target,
            "classes": manifest.classes,
            "engine": model.engine,
            "inputs": manifest.schema.to_list(),
            "outputs": model.output_columns,
            "metrics": manifest.metrics,
            "created": manifest.created,
        }

    # --- predict ------------------------------------------------------------------------------
    def _predict(
        self,
        name: str,
        version: str | None,
        headers: dict[str, str],
        body: bytes,
        served: dict[str, Any],
    ) -> dict[str, Any]:
        self._check_size(body)
        model = self.models.get(name, version)
        served.update(model=model.name, version=model.version)
        content_type = headers.get("content-type", JSON).split(";")[0].strip().lower()
        if content_type in ("text/csv", "application/csv"):
            columns = _csv_columns(body)
        elif content_type in (JSON, "", "*/*") or content_type.endswith("+json"):
            columns = _json_columns(_parse_json(body), model.input_fields)
        else:
            raise HttpError(
                415,
                "unsupported_media_type",
                f"Content-Type {content_type!r} is not supported; send application/json or "
                "text/csv",
            )
        rows = len(next(iter(columns.values()))) if columns else 0
        self._check_rows(rows)
        served["rows"] = rows
        if rows == 1:  # the engine's one-record form: no arrays to build for one record
            one = model.predict_one({name: values[0] for name, values in columns.items()})
            predictions = [{name: finite_or_none(value) for name, value in one.items()}]
        else:
            scored = model.predict_columns(columns)
            names = list(scored)
            values = [[finite_or_none(v) for v in scored[n].tolist()] for n in names]
            predictions = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        return {"model": model.name, "version": model.version, "predictions": predictions}

    def _check_size(self, body: bytes) -> None:
        if len(body) > self.settings.max_body:
            raise HttpError(413, "payload_too_large", self._size_message(len(body)))

    def _size_message(self, length: int) -> str:
        return (
            f"the body is {length:,} bytes; the limit is {self.settings.max_body:,} "
            "(SCOREKIT_MAX_BODY). Send fewer records per request"
        )

    def _check_rows(self, rows: int) -> None:
        if rows == 0:
            raise InputError("the request holds no records; send at least one")
        if rows > self.settings.max_rows:
            raise HttpError(
                413,
                "too_many_rows",
                f"the request holds {rows:,} records; the limit is {self.settings.max_rows:,} "
                "(SCOREKIT_MAX_ROWS). Split it",
            )

    # --- Open Inference Protocol (KServe v2) --------------------------------------------------
    def _v2(
        self,
        method: str,
        parts: list[str],
        headers: dict[str, str],
        body: bytes,
        served: dict[str, Any],
    ) -> tuple[int, Any]:
        if headers.get("inference-header-content-length") is not None:
            raise HttpError(
                415,
                "unsupported_media_type",
                "binary tensor data is not supported; send the tensors as JSON "
                "(tritonclient: set_data_from_numpy(..., binary_data=False))",
            )
        if parts == []:
            self._allow(method, "GET")
            return 200, {"name": "scorekit", "version": __version__, "extensions": []}
        if parts in (["health", "live"], ["health", "ready"]):
            self._allow(method, "GET")
            return 200, {"live": True} if parts[1] == "live" else {"ready": True}
        if len(parts) >= 2 and parts[0] == "models":
            name, rest = parts[1], parts[2:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            if rest == []:
                self._allow(method, "GET")
                return 200, self._v2_metadata(name, version, served)
            if rest == ["ready"]:
                self._allow(method, "GET")
                self.models.get(name, version)  # raises for a model that can't be served
                return 200, {"name": name, "ready": True}
            if rest == ["infer"]:
                self._allow(method, "POST")
                return 200, self._v2_infer(name, version, body, served)
        raise HttpError(404, "not_found", f"no route /v2/{'/'.join(parts)}")

    def _v2_metadata(self, name: str, version: str | None, served: dict[str, Any]) -> Any:
        model = self.models.get(name, version)
        served.update(model=model.name, version=model.version)
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": "scorekit",
            "inputs": [
                {"name": f.name, "datatype": "FP64" if f.is_continuous else "BYTES", "shape": [-1]}
                for f in model.manifest.schema.fields
            ],
            "outputs": [
                {"name": c, "datatype": _v2_type(model, c), "shape": [-1]}
                for c in model.output_columns
            ],
        }

    def _v2_infer(
        self, name: str, version: str | None, body: bytes, served: dict[str, Any]
    ) -> dict[str, Any]:
        self._check_size(body)
        model = self.models.get(name, version)
        served.update(model=model.name, version=model.version)
        request = _parse_json(body)
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise HttpError(
                400,
                "bad_request",
                'an inference request is {"inputs": [{"name": ..., "shape": [N], '
                '"datatype": "FP64", "data": [...]}, ...]}',
            )
        requested = request.get("outputs") or []
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
        ):
            raise HttpError(
                400, "bad_request", 'outputs must be a list of {"name": "<output>"} objects'
            )
        wanted = [o["name"] for o in requested]
        unknown = [w for w in wanted if w not in model.output_columns]
        if unknown:
            raise HttpError(
                400,
                "bad_request",
                f"unknown output(s) {unknown}; model {model.ref} produces {model.output_columns}",
            )
        columns: dict[str, list[Any]] = {}
        for i, tensor in enumerate(request["inputs"]):
            tensor_name, data = _v2_tensor(tensor, i)
            if tensor_name in columns:
                raise HttpError(400, "bad_request", f"input {tensor_name!r} is sent twice")
            columns[tensor_name] = data
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise HttpError(
                400,
                "bad_request",
                "input tensors differ in length: "
                + ", ".join(f"{k} {len(v)}" for k, v in columns.items()),
            )
        rows = lengths.pop() if lengths else 0
        self._check_rows(rows)
        served["rows"] = rows
        scored = model.predict_columns(columns)
        outputs = [
            {
                "name": output,
                "shape": [rows],
                "datatype": _v2_type(model, output),
                "data": [finite_or_none(v) for v in values.tolist()],
            }
            for output, values in scored.items()
            if not wanted or output in wanted
        ]
        response: dict[str, Any] = {
            "model_name": model.name,
            "model_version": model.version,
            "outputs": outputs,
        }
        if "id" in request:
            response["id"] = request["id"]
        return response


# --- body formats -------------------------------------------------------------------------------
def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HttpError(400, "malformed_json", "the body's JSON is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; send null for a missing value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys repeat is refused: which of its values to score is a guess."""
    out = dict(pairs)
    if len(out) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        twice = sorted(key for key, n in counts.items() if n > 1)
        raise ValueError(f"key(s) {', '.join(map(repr, twice))} appear more than once")
    return out


def _segments(route: str) -> list[str]:
    """The path's segments, percent-decoded (as a WSGI server would have done already)."""
    return [urllib.parse.unquote(p) for p in route.split("/") if p]


def _dumps(payload: Any) -> bytes:
    try:
        return json.dumps(payload, allow_nan=False, default=_json_default).encode()
    except ValueError:  # a NaN or infinity somewhere (a metric, an echoed id): null, as JSON has
        return json.dumps(_finite(payload), allow_nan=False, default=_json_default).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _records_to_columns(records: Any, names: Sequence[str], what: str) -> dict[str, list[Any]]:
    if not isinstance(records, list):
        raise HttpError(400, "bad_request", f"{what} must be a list of records (objects)")
    problems: list[Problem] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(
                Problem(i, None, f"expected an object of field values, got {json_kind(record)}")
            )
    if problems:
        raise InputError(f"{what}: {len(problems)} record(s) are not objects", problems[:1000])
    absent = [
        Problem(i, name, "required field is absent (send null for a missing value)")
        for i, record in enumerate(records)
        for name in names
        if name not in record
    ]
    if absent:
        shown = "; ".join(f"record {p.row}: {p.field}" for p in absent[:5])
        raise InputError(f"records lack required fields: {shown}", absent[:1000])
    return {name: [record[name] for record in records] for name in names}


def _json_columns(payload: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    """Any of the accepted JSON shapes as columns (name -> values)."""
    if isinstance(payload, list):
        return _records_to_columns(payload, names, "the body")
    if not isinstance(payload, dict):
        raise HttpError(
            400,
            "bad_request",
            f"the body is a JSON {json_kind(payload)}; send a record (object), a list of "
            'records, or {"instances": [...]}',
        )
    for key in ("instances", "dataframe_records"):
        if key in payload:
            return _records_to_columns(payload[key], names, key)
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not (
            isinstance(split, dict)
            and isinstance(split.get("columns"), list)
            and isinstance(split.get("data"), list)
            and all(isinstance(row, list) for row in split["data"])
        ):
            raise HttpError(
                400,
                "bad_request",
                'dataframe_split must be {"columns": [...], "data": [[...], ...]}',
            )
        split_columns = split["columns"]
        if not all(isinstance(c, str) for c in split_columns) or len(set(split_columns)) != len(
            split_columns
        ):
            raise HttpError(
                400, "bad_request", "dataframe_split columns must be distinct field names"
            )
        width = len(split_columns)
        for i, row in enumerate(split["data"]):
            if len(row) != width:
                raise InputError(
                    f"dataframe_split row {i} has {len(row)} values for {width} columns",
                    [Problem(i, None, f"{len(row)} values for {width} columns")],
                )
        records = [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
        return _records_to_columns(records, names, "dataframe_split")
    if "inputs" in payload:
        inputs = payload["inputs"]
        if not isinstance(inputs, dict) or not all(isinstance(v, list) for v in inputs.values()):
            raise HttpError(400, "bad_request", 'inputs must be {"column": [values], ...}')
        absent = [n for n in names if n not in inputs]
        if absent:
            raise InputError(
                f"inputs lack required field(s): {', '.join(absent)}",
                [Problem(None, n, "required field is absent") for n in absent],
            )
        lengths = {len(inputs[n]) for n in names}
        if len(lengths) > 1:
            raise HttpError(400, "bad_request", "inputs columns differ in length")
        return {n: inputs[n] for n in names}
    return _records_to_columns([payload], names, "the record")


def _csv_columns(body: bytes) -> dict[str, list[str]]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HttpError(400, "bad_request", f"the CSV body is not UTF-8: {exc}") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    except csv.Error as exc:
        raise HttpError(400, "bad_request", f"the body is not readable CSV: {exc}") from None
    if not rows:
        raise InputError("the CSV body is empty; send a header line and records")
    header, data = rows[0], rows[1:]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise HttpError(
            400, "bad_request", f"the CSV header repeats column(s) {', '.join(repeated)}"
        )
    for i, row in enumerate(data):
        if len(row) != len(header):
            raise InputError(
                f"CSV row {i} has {len(row)} fields, but the header has {len(header)}",
                [Problem(i, None, f"{len(row)} fields for {len(header)} columns")],
            )
    return {name: [row[j] for row in data] for j, name in enumerate(header)}


def _v2_tensor(tensor: Any, index: int) -> tuple[str, list[Any]]:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise HttpError(400, "bad_request", f"inputs[{index}] is not a tensor with a name")
    name = tensor["name"]
    data = tensor.get("data")
    shape = tensor.get("shape")
    if not isinstance(data, list) or not isinstance(shape, list):
        raise HttpError(400, "bad_request", f"input {name!r} needs a shape and a data list")
    flat = _flatten(data)
    if not shape or not all(isinstance(d, int) for d in shape) or math.prod(shape) != len(flat):
        raise HttpError(
            400,
            "bad_request",
            f"input {name!r}: shape {shape} does not hold its {len(flat)} values; "
            "send one tensor per feature with shape [N] (or [N, 1])",
        )
    if len(shape) > 1 and math.prod(shape[1:]) != 1:
        raise HttpError(
            400,
            "bad_request",
            f"input {name!r} has shape {shape}; scorekit takes one tensor per feature, [N]",
        )
    datatype = tensor.get("datatype")
    if datatype not in V2_DATATYPES:
        raise HttpError(
            400,
            "bad_request",
            f"input {name!r} has datatype {datatype!r}; expected one of "
            f"{', '.join(sorted(V2_DATATYPES))}",
        )
    return name, flat


V2_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
     "FP16", "FP32", "FP64", "BYTES"}
)  # fmt: skip


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten(item))
        else:
            out.append(item)
    return out


def _v2_type(model: Model, output: str) -> str:
    if output != "prediction" or model.task == "regression":
        return "FP64"
    classes = model.classes or []
    return (
        "INT64"
        if all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
        else ("BYTES")
    )


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return finite_or_none(value.item())
    return str(value)


def _error_body(exc: ScorekitError, v2: bool) -> dict[str, Any]:
    """The one error shape, {"error": {"code", "message", "details"}}. On the Open Inference
    Protocol's routes the protocol's own shape, {"error": "<message>"}, which its clients
    (tritonclient, KServe's) read, with the code and details beside it."""
    details = [
        {"row": p.row, "field": p.field, "problem": p.problem, "value": finite_or_none(p.value)}
        for p in exc.details
    ]
    if v2:
        return {"error": exc.message, "code": exc.code, "details": details}
    return {"error": {"code": exc.code, "message": exc.message, "details": details}}

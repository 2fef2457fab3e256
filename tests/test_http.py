"""The HTTP protocol (scorekit._http) and its adapters: Azure Functions called in-process, the
Lambda handler with recorded-shape events, and the local server over real HTTP."""

from __future__ import annotations

import base64
import importlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scorekit
from scorekit import _http

ROOT = Path(__file__).resolve().parents[1]
RECORD = {
    "Age": 38, "Employment": "Private", "Education": "College", "Marital": "Unmarried",
    "Occupation": "Service", "Income": 81838, "Gender": "Female", "Deductions": "FALSE",
    "Hours": 72,
}  # fmt: skip
OTHER = {**RECORD, "Age": 51, "Occupation": "Executive", "Income": 150000.5}
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def audit(trained) -> scorekit.Manifest:
    return trained("audit")


@pytest.fixture(scope="module")
def app(session_store, audit) -> _http.HttpApp:
    return _http.HttpApp(_http.Settings(store=str(session_store.url), max_rows=1000))


def call(app: _http.HttpApp, method: str, path: str, body: Any = b"", headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, out_headers, out = app.handle(method, path, headers or JSON_HEADERS, raw)
    return status, out_headers, json.loads(out)


def same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    """Predictions equal: labels exactly, probabilities to 1e-12."""
    return len(got) == len(want) and all(
        g.keys() == w.keys() and all(g[k] == pytest.approx(w[k], abs=1e-12) for k in w)
        for g, w in zip(got, want, strict=True)
    )


def expected(session_store, audit, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    model = scorekit.load_model(audit.ref, store=session_store)
    return model.predict_records(records)


# --- predict: every accepted body shape --------------------------------------------------------
def test_every_body_shape_scores_the_same(app, audit, session_store) -> None:
    records = [RECORD, OTHER]
    want = expected(session_store, audit, records)
    path = f"/api/models/{audit.name}/predict"
    names = list(RECORD)
    csv_body = (
        ",".join(names) + "\n" + "\n".join(",".join(str(r[n]) for n in names) for r in records)
    ).encode()
    for body, headers in [
        (records, None),
        ({"instances": records}, None),
        ({"dataframe_records": records}, None),
        ({"dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in records]}},
         None),
        ({"inputs": {n: [r[n] for r in records] for n in names}}, None),
        (csv_body, {"Content-Type": "text/csv"}),
    ]:  # fmt: skip
        status, out_headers, out = call(app, "POST", path, body, headers)
        assert status == 200, out
        assert out["model"] == audit.name and out["version"] == audit.version
        assert out_headers["Scorekit-Model-Version"] == audit.version
        assert same(out["predictions"], want)
    status, _, out = call(app, "POST", path, RECORD)
    assert status == 200 and same(out["predictions"], want[:1])


def test_a_version_can_be_asked_for(app, audit) -> None:
    status, _, out = call(app, "POST", f"/api/models/{audit.name}/predict?version=1", RECORD)
    assert status == 200 and out["version"] == "1"
    status, _, out = call(app, "POST", f"/api/models/{audit.name}/predict?version=99", RECORD)
    assert status == 404 and "has no version 99" in out["error"]["message"]


# --- bad input: a 4xx with one error shape, never a 500 ----------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("POST", "predict", b"{not json", None, 400, "malformed_json"),
        ("POST", "predict", "a string", None, 400, "bad_request"),
        ("POST", "predict", {"Age": 38}, None, 422, "invalid_input"),
        ("POST", "predict", {**RECORD, "Age": "old"}, None, 422, "invalid_input"),
        ("POST", "predict", {**RECORD, "Employment": "Martian"}, None, 422, "invalid_input"),
        ("POST", "predict", [], None, 422, "invalid_input"),
        ("POST", "predict", [RECORD, 3], None, 422, "invalid_input"),
        ("POST", "predict", {"dataframe_split": {"columns": ["Age"]}}, None, 400, "bad_request"),
        ("POST", "predict", RECORD, {"Content-Type": "application/xml"}, 415,
         "unsupported_media_type"),
        ("POST", "predict", [RECORD] * 1001, None, 413, "too_many_rows"),
        ("GET", "predict", b"", None, 405, "method_not_allowed"),
        ("POST", "nope", RECORD, None, 404, "not_found"),
    ],
)  # fmt: skip
def test_client_mistakes_get_a_clear_4xx(app, audit, method, path, body, headers, status, code):
    route = {"predict": f"/api/models/{audit.name}/predict", "nope": "/api/nope"}[path]
    got, _, out = call(app, method, route, body, headers)
    assert got == status, out
    assert out["error"]["code"] == code
    assert out["error"]["message"]


def test_a_bad_value_names_its_row_field_and_value(app, audit) -> None:
    body = [RECORD, {**RECORD, "Employment": "Martian"}]
    status, _, out = call(app, "POST", f"/api/models/{audit.name}/predict", body)
    assert status == 422
    assert out["error"]["details"][0] == {
        "row": 1, "field": "Employment", "value": "Martian",
        "problem": out["error"]["details"][0]["problem"],
    }  # fmt: skip
    assert "Martian" in out["error"]["message"]


def test_unknown_model_is_404_naming_what_exists(app, audit) -> None:
    status, _, out = call(app, "POST", "/api/models/nope/predict", RECORD)
    assert status == 404 and audit.name in out["error"]["message"]
    status, _, out = call(app, "POST", "/api/models/..%2Fetc/predict", RECORD)
    assert status in (400, 404)


def test_a_body_above_the_limit_is_413(session_store, audit) -> None:
    small = _http.HttpApp(_http.Settings(store=str(session_store.url), max_body=100))
    status, _, out = call(small, "POST", f"/api/models/{audit.name}/predict", [RECORD] * 5)
    assert status == 413 and out["error"]["code"] == "payload_too_large"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.fixed_dictionaries({k: JSON_VALUES for k in RECORD}).map(
            lambda v: json.dumps(v).encode()
        ),
    ),
    route=st.sampled_from(["predict", "infer"]),
)  # fmt: skip
def test_no_body_a_client_sends_gets_a_500(app, audit, body: bytes, route: str) -> None:
    path = {
        "predict": f"/api/models/{audit.name}/predict",
        "infer": f"/v2/models/{audit.name}/infer",
    }[route]
    status, _, out = app.handle("POST", path, JSON_HEADERS, body)
    assert status < 500, out
    if status >= 400:
        error = json.loads(out)
        if route == "infer":  # the Open Inference Protocol's own error shape
            assert isinstance(error["error"], str) and {"code", "details"} <= set(error)
        else:
            assert set(error["error"]) == {"code", "message", "details"}


# --- discovery routes ------------------------------------------------------------------------
def test_health_models_and_a_model(app, audit) -> None:
    status, _, out = call(app, "GET", "/api/health")
    assert status == 200 and out["status"] == "ok" and out["degraded"] is None
    status, _, out = call(app, "GET", "/api/models")
    assert {m["name"] for m in out["models"]} >= {audit.name}
    status, _, out = call(app, "GET", f"/api/models/{audit.name}")
    assert status == 200 and out["version"] == audit.version
    assert [f["name"] for f in out["inputs"]] == list(RECORD)
    assert out["outputs"] == ["prediction", "probability(0)", "probability(1)"]


# --- Open Inference Protocol ---------------------------------------------------------------------
def v2_request(records: list[dict[str, Any]]) -> dict[str, Any]:
    def tensor(name: str) -> dict[str, Any]:
        values = [r[name] for r in records]
        numeric = all(isinstance(v, int | float) for v in values)
        return {"name": name, "shape": [len(values)], "datatype": "FP64" if numeric else "BYTES",
                "data": values}  # fmt: skip

    return {"id": "req-1", "inputs": [tensor(n) for n in RECORD]}


def test_v2_infer_metadata_and_health(app, audit, session_store) -> None:
    records = [RECORD, OTHER]
    want = expected(session_store, audit, records)
    status, _, out = call(app, "POST", f"/v2/models/{audit.name}/infer", v2_request(records))
    assert status == 200, out
    assert out["id"] == "req-1" and out["model_version"] == audit.version
    by_name = {o["name"]: o for o in out["outputs"]}
    assert by_name["prediction"]["datatype"] == "INT64"
    assert by_name["prediction"]["data"] == [w["prediction"] for w in want]
    assert by_name["probability(1)"]["data"] == pytest.approx([w["probability(1)"] for w in want])
    assert call(app, "GET", "/v2/health/live")[2] == {"live": True}
    assert call(app, "GET", "/v2/health/ready")[2] == {"ready": True}
    status, _, meta = call(app, "GET", f"/v2/models/{audit.name}")
    assert meta["versions"] == [audit.version]
    assert [i["name"] for i in meta["inputs"]] == list(RECORD)
    assert call(app, "GET", f"/v2/models/{audit.name}/ready")[2]["ready"] is True
    assert call(app, "GET", "/api/v2/health/live")[0] == 200  # as Azure routes it
    bad = v2_request(records)
    bad["inputs"][0]["shape"] = [3]
    status, _, out = call(app, "POST", f"/v2/models/{audit.name}/infer", bad)
    assert status == 400 and "shape [3]" in out["error"]  # the protocol's error shape


# --- model loading: reload on promote, keep serving while the store is away ---------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_promote_is_served_after_the_refresh_interval(tmp_path, data_dir) -> None:
    store = scorekit.open_store(tmp_path / "store")
    first = scorekit.train(data_dir / "audit.csv", "Adjusted", "m", store=store)
    clock = Clock()
    models = _http.Models(store, refresh_seconds=30, clock=clock)
    app = _http.HttpApp(_http.Settings(store=str(store.url)), models)
    assert call(app, "POST", "/api/models/m/predict", RECORD)[2]["version"] == first.version
    second = scorekit.train(data_dir / "audit.csv", "Adjusted", "m", store=store, promote=True)
    clock.now = 10
    assert call(app, "POST", "/api/models/m/predict", RECORD)[2]["version"] == first.version
    clock.now = 31
    assert call(app, "POST", "/api/models/m/predict", RECORD)[2]["version"] == second.version


class Unreachable:
    """A store whose reads fail, as when S3 is unreachable."""

    def __init__(self, store: scorekit.ModelStore) -> None:
        self.inner = store
        self.url = store.url
        self.down = False
        self.attempts = 0  # calls made while down

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if self.down and callable(attribute):

            def fail(*args: Any, **kwargs: Any) -> Any:
                self.attempts += 1
                raise scorekit.StoreError(f"can't reach {self.url}")

            return fail
        return attribute


def test_the_loaded_model_keeps_serving_while_the_store_is_away(tmp_path, data_dir) -> None:
    store = scorekit.open_store(tmp_path / "store")
    scorekit.train(data_dir / "audit.csv", "Adjusted", "m", store=store)
    flaky = Unreachable(store)
    clock = Clock()
    models = _http.Models(flaky, refresh_seconds=5, clock=clock)  # type: ignore[arg-type]
    app = _http.HttpApp(_http.Settings(), models)
    assert call(app, "POST", "/api/models/m/predict", RECORD)[0] == 200
    flaky.down = True
    clock.now = 60
    assert call(app, "POST", "/api/models/m/predict", RECORD)[0] == 200
    status, _, health = call(app, "GET", "/api/health")
    assert "can't reach" in health["degraded"]["m"]
    assert call(app, "GET", "/v2/models/m/ready")[2]["ready"] is True  # it still serves
    status, _, out = call(app, "POST", "/api/models/other/predict", RECORD)
    assert status == 503 and out["error"]["code"] == "store_unavailable"
    flaky.down = False
    clock.now = 120
    call(app, "POST", "/api/models/m/predict", RECORD)
    assert call(app, "GET", "/api/health")[2]["degraded"] is None


# --- Azure Functions, in-process as Azure's docs show ---------------------------------------------
def import_adapter(module_name: str, store: str) -> Any:
    """Import (or re-import) an adapter module, which builds its app from SCOREKIT_STORE."""
    before = os.environ.get("SCOREKIT_STORE")
    os.environ["SCOREKIT_STORE"] = store
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.reload(importlib.import_module(module_name))
    finally:
        sys.path.remove(str(ROOT))
        if before is None:
            del os.environ["SCOREKIT_STORE"]
        else:
            os.environ["SCOREKIT_STORE"] = before


@pytest.fixture(scope="module")
def azure_function(session_store, audit) -> Any:
    module = import_adapter("function_app", str(session_store.url))
    functions = {f.get_function_name(): f for f in module.app.get_functions()}  # once per app
    return functions["scorekit_http"].get_user_function()


def test_azure_function_in_process(azure_function, audit, session_store) -> None:
    import azure.functions as func

    request = func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/models/{audit.name}/predict?version={audit.version}",
        headers=JSON_HEADERS,
        body=json.dumps([RECORD]).encode(),
    )
    response = azure_function(request)
    assert response.status_code == 200
    assert response.headers["Scorekit-Model-Version"] == audit.version
    out = json.loads(response.get_body())
    assert same(out["predictions"], expected(session_store, audit, [RECORD]))
    bad = func.HttpRequest(method="POST", url=f"http://localhost/api/models/{audit.name}/predict",
                           headers=JSON_HEADERS, body=b"{")  # fmt: skip
    response = azure_function(bad)
    assert response.status_code == 400
    assert json.loads(response.get_body())["error"]["code"] == "malformed_json"


# --- AWS Lambda, with recorded-shape events ------------------------------------------------------
@pytest.fixture(scope="module")
def lambda_handler(session_store, audit) -> Any:
    return import_adapter("functions.aws_lambda", str(session_store.url)).handler


def http_api_event(method: str, path: str, body: str, query: str = "", b64: bool = False):
    """The shape of an API Gateway HTTP API / Function URL event (payload format 2.0)."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.aws"},
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "10.0.0.1"},
                           "requestId": "id", "stage": "$default"},
        "body": base64.b64encode(body.encode()).decode() if b64 else body,
        "isBase64Encoded": b64,
    }  # fmt: skip


def rest_api_event(method: str, path: str, body: str, query: dict[str, str] | None = None):
    """The shape of an API Gateway REST API event (payload format 1.0)."""
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": {"Content-Type": "application/json"},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "requestContext": {"stage": "prod", "httpMethod": method, "path": f"/prod{path}"},
        "body": body, "isBase64Encoded": False,
    }  # fmt: skip


def test_lambda_http_api_and_rest_api_events(lambda_handler, audit, session_store) -> None:
    want = expected(session_store, audit, [RECORD])
    path = f"/api/models/{audit.name}/predict"
    for event in (
        http_api_event("POST", path, json.dumps(RECORD)),
        http_api_event(
            "POST", path, json.dumps(RECORD), query=f"version={audit.version}", b64=True
        ),
        rest_api_event("POST", path, json.dumps([RECORD]), {"version": audit.version}),
    ):
        response = lambda_handler(event, None)
        assert response["statusCode"] == 200, response
        assert same(json.loads(response["body"])["predictions"], want)
    response = lambda_handler(http_api_event("GET", path, ""), None)
    assert response["statusCode"] == 405


# --- the local server over real HTTP -------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(session_store, audit) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("scorekit")), "serve", "--port", str(port),
         "--workers", "2", "--store", str(session_store.url)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"scorekit serve did not answer: {process.stderr.read().decode()[-2000:]}")
    yield url
    process.terminate()
    process.wait(timeout=20)
    assert process.stderr is not None
    process.stderr.close()


def test_the_local_server_answers_over_real_http(server, audit, session_store) -> None:
    request = urllib.request.Request(
        f"{server}/api/models/{audit.name}/predict",
        data=json.dumps([RECORD, OTHER]).encode(),
        headers=JSON_HEADERS,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Scorekit-Model-Version"] == audit.version
        out = json.loads(response.read())
    assert same(out["predictions"], expected(session_store, audit, [RECORD, OTHER]))
    request = urllib.request.Request(
        f"{server}/api/models/{audit.name}/predict", data=b"{", headers=JSON_HEADERS
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"]["code"] == "malformed_json"


# --- findings of a review: each test checks a failure it reported -----------------------------
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("infer", {"inputs": "TENSORS", "id": 1}, 400),
        ("infer", {"inputs": [], "outputs": 5}, 400),
        ("infer", {"inputs": [], "outputs": [{"name": ["x"]}]}, 400),
        ("predict", {"dataframe_split": {"columns": [1, [2]], "data": [[1, 2]]}}, 400),
        ("predict", b"[" * 100_000, 400),
        ("predict", b'{"Age": NaN}', 400),
        ("predict", b'{"Age": 1, "Age": 2}', 400),
        ("predict", b"Age,Age\n1,2\n", 400),
    ],
)
def test_odd_bodies_get_a_4xx_not_a_500(app, audit, path, body, status) -> None:
    route = {
        "predict": f"/api/models/{audit.name}/predict",
        "infer": f"/v2/models/{audit.name}/infer",
    }[path]
    headers = {"Content-Type": "text/csv"} if body == b"Age,Age\n1,2\n" else None
    assert call(app, "POST", route, body, headers)[0] == status


def test_a_nan_echoed_back_is_null_not_a_500(app, audit) -> None:
    request = v2_request([RECORD])
    request["id"] = float("nan")
    raw = json.dumps(request).encode()  # Python writes NaN; a strict client would not
    status, _, _ = app.handle("POST", f"/v2/models/{audit.name}/infer", JSON_HEADERS, raw)
    assert status == 400  # NaN is not JSON


def test_names_too_long_and_percent_encoded_paths(app, audit) -> None:
    status, _, out = call(app, "GET", "/api/models/" + "a" * 5000)
    assert status == 400 and "up to 200" in out["error"]["message"]
    encoded = "".join(f"%{ord(c):02X}" for c in audit.name)
    assert call(app, "GET", f"/api/models/{encoded}")[0] == 200


def test_405_says_which_method(app, audit) -> None:
    status, headers, _ = app.handle("GET", f"/api/models/{audit.name}/predict", {}, b"")
    assert status == 405 and headers["Allow"] == "POST"


def test_v2_server_metadata_errors_and_binary_tensors(app, audit) -> None:
    status, _, out = call(app, "GET", "/v2")
    assert status == 200 and out["name"] == "scorekit"
    status, _, out = call(app, "POST", "/v2/models/nope/infer", v2_request([RECORD]))
    assert status == 404 and isinstance(out["error"], str) and out["code"] == "model_not_found"
    binary = {**JSON_HEADERS, "Inference-Header-Content-Length": "120"}
    status, _, out = call(app, "POST", f"/v2/models/{audit.name}/infer", b"{}", binary)
    assert status == 415 and "binary_data=False" in out["error"]
    bad = v2_request([RECORD])
    bad["inputs"][0]["datatype"] = "WHATEVER"
    assert call(app, "POST", f"/v2/models/{audit.name}/infer", bad)[0] == 400


def test_an_alias_asked_for_follows_promotes(tmp_path, data_dir) -> None:
    store = scorekit.open_store(tmp_path / "store")
    first = scorekit.train(data_dir / "audit.csv", "Adjusted", "m", store=store)
    clock = Clock()
    app = _http.HttpApp(_http.Settings(), _http.Models(store, refresh_seconds=30, clock=clock))
    path = "/api/models/m?version=champion"
    assert call(app, "GET", path)[2]["version"] == first.version
    second = scorekit.train(data_dir / "audit.csv", "Adjusted", "m", store=store, promote=True)
    clock.now = 31
    assert call(app, "GET", path)[2]["version"] == second.version


def test_an_unreachable_store_is_asked_once_per_interval(tmp_path, data_dir) -> None:
    store = scorekit.open_store(tmp_path / "store")
    scorekit.train(data_dir / "audit.csv", "Adjusted", "m", store=store)
    scorekit.train(data_dir / "audit.csv", "Adjusted", "n", store=store)
    flaky = Unreachable(store)
    clock = Clock()
    models = _http.Models(flaky, refresh_seconds=5, clock=clock)  # type: ignore[arg-type]
    app = _http.HttpApp(_http.Settings(), models)
    for name in ("m", "n"):
        call(app, "POST", f"/api/models/{name}/predict", RECORD)
    flaky.down = True
    clock.now = 10
    for _ in range(5):
        assert call(app, "POST", "/api/models/m/predict", RECORD)[0] == 200
    assert flaky.attempts == 1  # then it waits out the interval
    assert set(models.degraded) == {"m"}
    flaky.down = False
    clock.now = 12  # n is re-resolved; m still waits out its interval
    call(app, "POST", "/api/models/n/predict", RECORD)
    assert set(call(app, "GET", "/api/health")[2]["degraded"]) == {"m"}


def test_concurrent_first_requests_load_a_model_once(tmp_path, data_dir) -> None:
    import threading

    store = scorekit.open_store(tmp_path / "store")
    scorekit.train(data_dir / "audit.csv", "Adjusted", "m", store=store)
    loads = {"n": 0}
    original = store.bundle

    def counted(*args: Any) -> Any:
        loads["n"] += 1
        time.sleep(0.05)
        return original(*args)

    store.bundle = counted  # type: ignore[method-assign]
    app = _http.HttpApp(_http.Settings(), _http.Models(store))
    threads = [
        threading.Thread(target=call, args=(app, "POST", "/api/models/m/predict", RECORD))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads["n"] == 1


def test_lambda_http_api_event_on_a_named_stage(lambda_handler, audit) -> None:
    event = http_api_event("GET", f"/prod/api/models/{audit.name}", "")
    event["requestContext"]["stage"] = "prod"
    assert lambda_handler(event, None)["statusCode"] == 200


def test_the_local_server_reads_chunked_bodies_and_refuses_big_ones(server, audit) -> None:
    import http.client

    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps([RECORD]).encode()
    connection.request(
        "POST", f"/api/models/{audit.name}/predict", body=iter([body[:50], body[50:]]),
        headers=JSON_HEADERS, encode_chunked=True,
    )  # fmt: skip
    response = connection.getresponse()
    assert response.status == 200, response.read()
    response.read()
    # A declared length above the limit is answered before any of the body is sent.
    size = 11 * 1024 * 1024
    connection.putrequest("POST", f"/api/models/{audit.name}/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(size))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert f"{size:,} bytes" in json.loads(response.read())["error"]["message"]
    connection.close()


# --- the OpenAPI document, and the routes fuzzed against it ------------------------------------
def test_the_openapi_document_in_the_repo_is_the_one_served(app) -> None:
    status, _, served = call(app, "GET", "/api/openapi.json")
    assert status == 200
    kept = json.loads((ROOT / "functions" / "openapi.json").read_text())
    assert served == kept, "rewrite it: .venv/bin/scorekit openapi > functions/openapi.json"


@pytest.fixture
def api_schema(app) -> Any:
    import schemathesis

    sys.path.insert(0, str(ROOT))
    try:
        from functions.wsgi import make_app
    finally:
        sys.path.remove(str(ROOT))
    return schemathesis.openapi.from_wsgi("/api/openapi.json", make_app(app))


def test_the_routes_hold_to_their_openapi_document(api_schema) -> None:
    """schemathesis generates requests from the document (valid and invalid bodies, odd
    names) and checks that no answer is a 5xx and every answer matches the document."""
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=30, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate()

        try:
            check()
        except Exception as exc:  # schemathesis's failures, gathered across operations
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:1500])
    assert not failures, "\n\n".join(failures)


def _http_document() -> dict[str, Any]:
    from scorekit._openapi import openapi_document

    return openapi_document()


def test_tritonclient_talks_to_the_local_server(server, audit, session_store) -> None:
    """The Open Inference Protocol's own client, unchanged, against /v2."""
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(audit.name)
        metadata = client.get_model_metadata(audit.name)
        assert [i["name"] for i in metadata["inputs"]] == list(RECORD)
        records = [RECORD, OTHER]
        inputs = []
        for name in RECORD:
            values = [r[name] for r in records]
            if isinstance(values[0], str):
                tensor = triton.InferInput(name, [len(values)], "BYTES")
                tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=False)
            else:
                tensor = triton.InferInput(name, [len(values)], "FP64")
                tensor.set_data_from_numpy(np.array(values, dtype=np.float64), binary_data=False)
            inputs.append(tensor)
        outputs = [triton.InferRequestedOutput(o, binary_data=False)
                   for o in ("prediction", "probability(1)")]  # fmt: skip
        result = client.infer(audit.name, inputs, outputs=outputs)
        want = expected(session_store, audit, records)
        assert result.as_numpy("prediction").tolist() == [w["prediction"] for w in want]
        assert result.as_numpy("probability(1)").tolist() == pytest.approx(
            [w["probability(1)"] for w in want], abs=1e-12
        )
        with pytest.raises(triton.InferenceServerException, match="no model named 'nope'"):
            client.infer("nope", inputs)
    finally:
        client.close()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "lots"])
def test_settings_refuse_limits_that_are_not_numbers(value: str) -> None:
    with pytest.raises(scorekit.UsageError, match="SCOREKIT_MAX_BODY"):
        _http.Settings.from_env({"SCOREKIT_MAX_BODY": value})
    assert _http.Settings.from_env({"SCOREKIT_MAX_ROWS": "5"}).max_rows == 5


def test_failed_loads_leave_no_lock_behind(app, audit) -> None:
    for version in range(100, 120):
        status, _, _ = call(
            app, "POST", f"/api/models/{audit.name}/predict?version={version}", RECORD
        )
        assert status == 404
    assert app.models._loading == {}

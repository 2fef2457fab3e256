"""`scorekit bench http`: the HTTP protocol measured side by side in one run.

For the native engine, for pypmml, and for the anti-pattern of loading the model inside each
request: the warm in-process handler for one record and for 1,000 records (median and p99), the
cold start (a fresh process to its first response), and the local server (`scorekit serve`,
gunicorn with 2 workers) under load from separate processes at 1, 8 and 32 connections.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._bench import latencies, machine_description, write_section

CONNECTIONS = (1, 8, 32)
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Latency:
    median_us: float
    p99_us: float


class _LoadEveryTime:
    """A Models that loads the model again for every request (what not to do)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.degraded: dict[str, str] = {}

    def get(self, name: str, version: str | None = None) -> Any:
        from ._loading import load_model

        return load_model(f"{name}@{version}" if version else name, store=self.store,
                          engine="native")  # fmt: skip


def _latency(fn: Callable[[], object], calls: int) -> Latency:
    return Latency(*latencies(fn, calls))


def _records(data: Path, target: str, n: int) -> list[dict[str, Any]]:
    with open(data, newline="") as f:
        rows = [{k: v for k, v in row.items() if k != target} for row in csv.DictReader(f)]
    numeric = {k for k in rows[0] if all(_is_number(r[k]) for r in rows)}
    typed = [{k: float(v) if k in numeric else v for k, v in r.items()} for r in rows]
    return [typed[i % len(typed)] for i in range(n)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load_worker(port: int, path: str, body: bytes, threads: int, seconds: float, out: Any) -> None:
    """One load-generating process: ``threads`` connections, each sending requests back to
    back for ``seconds``; reports (requests, errors, latencies)."""
    import http.client

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def run() -> None:
        mine: list[float] = []
        failed = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("POST", path, body=body, headers=JSON_HEADERS)
                response = connection.getresponse()
                response.read()
                connection.close()
                if response.status != 200:
                    failed += 1
            except OSError:
                failed += 1
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((len(latencies), errors[0], latencies))


def _load(port: int, path: str, body: bytes, connections: int, seconds: float) -> dict[str, float]:
    processes = min(2, connections)
    queue: Any = multiprocessing.get_context("spawn").Queue()
    split = [connections // processes + (1 if i < connections % processes else 0)
             for i in range(processes)]  # fmt: skip
    workers = [
        multiprocessing.get_context("spawn").Process(
            target=_load_worker, args=(port, path, body, n, seconds, queue)
        )
        for n in split
    ]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    requests = sum(r[0] for r in results)
    latencies = [x for r in results for x in r[2]]
    return {
        "rps": requests / seconds,
        "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies else float("nan"),
        "errors": float(sum(r[1] for r in results)),
    }


def _cold_start(store: str, engine: str, model: str, record: dict[str, Any], runs: int) -> float:
    code = (
        "import json, sys, time\n"
        "from scorekit import _http\n"
        f"app = _http.HttpApp(_http.Settings(store={store!r}, engine={engine!r}))\n"
        f"status, _, _ = app.handle('POST', '/api/models/{model}/predict', "
        f"{{'Content-Type': 'application/json'}}, {json.dumps(record).encode()!r})\n"
        "assert status == 200, status\n"
    )
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_http(
    data: Path,
    target: str,
    output: Path,
    calls: int,
    batch_calls: int,
    seconds: float,
    cold_runs: int,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> str:
    from . import _http
    from ._engine_pypmml import shutdown_jvm
    from ._training import train

    lines: list[str] = []
    with tempfile.TemporaryDirectory() as store:
        manifest = train(data, target, "bench-http", store=store)
        one = _records(data, target, 1)
        batch = _records(data, target, 1000)
        one_body = json.dumps(one[0]).encode()
        batch_body = json.dumps(batch).encode()
        path = f"/api/models/{manifest.name}/predict"
        rows: list[list[str]] = []
        for engine in ("native", "pypmml"):
            app = _http.HttpApp(_http.Settings(store=store, engine=engine))

            def call(body: bytes, app: _http.HttpApp = app) -> None:
                status, _, _ = app.handle("POST", path, JSON_HEADERS, body)
                assert status == 200, status

            single = _latency(lambda: call(one_body), calls)
            many = _latency(lambda: call(batch_body), batch_calls)
            cold = _cold_start(store, engine, manifest.name, one[0], cold_runs)
            rows.append([engine, f"{single.median_us:,.1f}", f"{single.p99_us:,.1f}",
                         f"{many.median_us / 1000:,.2f}", f"{many.p99_us / 1000:,.2f}",
                         f"{1000 / (many.median_us / 1e6):,.0f}", f"{cold:.2f}"])  # fmt: skip
            log(f"{engine}: one {single.median_us:.1f} us, 1000 {many.median_us / 1000:.2f} ms")
        shutdown_jvm()

        # The anti-pattern: the same handler, but the model loaded inside each request.
        reloading = _http.HttpApp(
            _http.Settings(store=store, engine="native"),
            _LoadEveryTime(_http.open_store(store)),  # type: ignore[arg-type]
        )

        def reload_call(body: bytes) -> None:
            status, _, _ = reloading.handle("POST", path, JSON_HEADERS, body)
            assert status == 200, status

        single = _latency(lambda: reload_call(one_body), max(1, calls // 10))
        many = _latency(lambda: reload_call(batch_body), max(1, batch_calls // 2))
        rows.append(["native, model loaded per request", f"{single.median_us:,.1f}",
                     f"{single.p99_us:,.1f}", f"{many.median_us / 1000:,.2f}",
                     f"{many.p99_us / 1000:,.2f}", f"{1000 / (many.median_us / 1e6):,.0f}",
                     "-"])  # fmt: skip

        served: list[list[str]] = []
        for engine in ("native", "pypmml"):
            port = _free_port()
            env = {**os.environ, "SCOREKIT_ENGINE": engine}
            server = subprocess.Popen(
                [str(Path(sys.executable).with_name("scorekit")), "serve", "--port", str(port),
                 "--workers", "2", "--store", store],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                _wait(port, path, one_body)
                for connections in CONNECTIONS:
                    figures = _load(port, path, one_body, connections, seconds)
                    rps, p99, errors = figures["rps"], figures["p99_ms"], figures["errors"]
                    served.append(
                        [engine, str(connections), f"{rps:,.0f}", f"{p99:.1f}", f"{errors:.0f}"]
                    )
                    log(f"serve {engine} x{connections}: {figures['rps']:,.0f} req/s")
            finally:
                server.terminate()
                server.wait(timeout=30)

    import datetime as dt

    lines = [
        "## HTTP: `scorekit bench http`",
        "",
        f"Measured {dt.date.today().isoformat()} on {machine_description()}. One run. Model: "
        f"logistic regression trained on {data}; records from it. In-process: "
        "`HttpApp.handle` with a JSON body (parsing, validation, scoring and the JSON answer "
        f"included), {calls:,} one-record calls and {batch_calls:,} 1,000-record calls, after "
        "a warm-up. Cold start: a fresh Python process importing scorekit, loading the model "
        f"and answering one request, median of {cold_runs}.",
        "",
        "| engine | one record median µs | p99 µs | 1,000 records median ms | p99 ms | "
        "rows/s (1,000-record requests) | cold start s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        f"`scorekit serve` (gunicorn, 2 sync workers) on 127.0.0.1, one-record requests, a new "
        f"connection per request, for {seconds:.0f} s per row, from up to 2 load-generating "
        "processes on the same 2-core machine (they compete with the server for the cores):",
        "",
        "| engine | connections | requests/s | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        *("| " + " | ".join(r) + " |" for r in served),
    ]
    body = "\n".join(lines) + "\n"
    write_section(output, "http", body)
    return body


def _wait(port: int, path: str, body: bytes) -> None:
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("POST", path, body=body, headers=JSON_HEADERS)
            if connection.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        raise RuntimeError(f"scorekit serve on port {port} did not answer")
    for _ in range(40):  # reach every worker, so each has loaded the model before timing
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", path, body=body, headers=JSON_HEADERS)
        connection.getresponse().read()
        connection.close()

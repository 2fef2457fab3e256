"""Benchmarks: `scorekit bench engines` measures every engine side by side in one run and writes
its table into docs/benchmarks.md (its own section, between markers, so other benchmarks can add
theirs). Timings are medians over repeats on the same rows; nothing here is asserted in tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ._csvio import CsvReader
from ._errors import UsageError
from ._loading import load_model

MODELS = (
    ("logreg", "logistic regression"),
    ("forest", "random forest, 100 trees"),
    ("gbm", "gradient boosting, 100 trees"),
)
ENGINE_ORDER = ("sklearn", "pypmml", "native")


@dataclass
class EngineFigures:
    rows_per_s: float
    one_median_us: float
    one_p99_us: float
    calls: int
    cold_start_s: float


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("numpy", "scikit-learn", "pypmml", "sklearn2pmml")
    )
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {versions}"


def _timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def latencies(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(median, p99) in µs of ``calls`` calls of ``fn``, after a warm-up."""
    for _ in range(min(100, calls)):
        fn()
    samples = np.empty(calls)
    for i in range(calls):
        started = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - started
    return float(np.median(samples) * 1e6), float(np.percentile(samples, 99) * 1e6)


COLD_START = """
import json, sys, time
started = time.perf_counter()
import scorekit
model = scorekit.load_model(sys.argv[1], engine=sys.argv[2], store=sys.argv[3])
model.predict_one(json.loads(sys.argv[4]))
print(time.perf_counter() - started)
"""


def cold_start(ref: str, engine: str, store: str, record: dict[str, Any], runs: int) -> float:
    """Median seconds from a fresh interpreter to the first prediction (imports, load, predict)."""
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", COLD_START, ref, engine, store, json.dumps(record)],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def bench_engines(
    target: str,
    data: Path,
    rows: int,
    calls: int,
    slow_calls: int,
    repeats: int,
    cold_runs: int,
    log: Callable[[str], None],
) -> dict[str, dict[str, EngineFigures]]:
    from ._engine_pypmml import shutdown_jvm
    from ._training import train

    with CsvReader(data) as reader:
        raw = reader.read_all()
    if target not in raw:
        raise UsageError(f"--target {target!r} is not a column of {data}: {', '.join(raw)}")
    features = {k: v for k, v in raw.items() if k != target}
    n_source = len(next(iter(features.values())))
    reps = -(-rows // n_source)
    big = {k: (v * reps)[:rows] for k, v in features.items()}
    record = {k: v[0] for k, v in features.items()}
    results: dict[str, dict[str, EngineFigures]] = {}
    with tempfile.TemporaryDirectory(prefix="scorekit-bench-") as store:
        for algorithm, _label in MODELS:
            manifest = train(data, target, f"bench-{algorithm}", algorithm=algorithm, store=store)
            results[algorithm] = {}
            for engine in ENGINE_ORDER:
                model = load_model(manifest.ref, engine=engine, store=store)
                prepared = model.manifest.schema.prepare(big, model.ref)
                batch = _timed(partial(model.scorer.score, prepared), repeats)
                n_calls = calls if engine == "native" else slow_calls
                median, p99 = latencies(partial(model.predict_one, record), n_calls)
                cold = cold_start(manifest.ref, engine, store, record, cold_runs)
                results[algorithm][engine] = EngineFigures(rows / batch, median, p99, n_calls, cold)
                log(
                    f"{algorithm:7} {engine:8} {rows / batch:12,.0f} rows/s  one {median:9.1f} us "
                    f"(p99 {p99:9.1f})  cold {cold:5.2f} s"
                )
                model.close()
            shutdown_jvm()
    return results


def engines_markdown(
    data: Path,
    results: dict[str, dict[str, EngineFigures]],
    rows: int,
    repeats: int,
    cold_runs: int,
) -> str:
    today = dt.date.today().isoformat()
    lines = [
        "## Engines: `scorekit bench engines`",
        "",
        f"Measured {today} on {machine_description()}. One run, the same model and rows for "
        f"every engine. Model: trained on {data} by `scorekit train`; rows: "
        f"{data} repeated to {rows:,}. Batch: engine time on validated columns, median "
        f"of {repeats}. One record: `predict_one` (dict in, dict out, validation included). "
        f"Cold start: a fresh Python process importing scorekit, loading the model from the "
        f"store and scoring one record, median of {cold_runs}.",
        "",
        "| model | engine | batch rows/s | vs sklearn | vs pypmml | one record median µs | "
        "p99 µs | calls | cold start s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for algorithm, label in MODELS:
        figures = results[algorithm]
        for engine in ENGINE_ORDER:
            f = figures[engine]
            vs_sklearn = f.rows_per_s / figures["sklearn"].rows_per_s
            vs_pypmml = f.rows_per_s / figures["pypmml"].rows_per_s
            lines.append(
                f"| {label} | {engine} | {f.rows_per_s:,.0f} | {vs_sklearn:.3g}x | "
                f"{vs_pypmml:.3g}x | {f.one_median_us:,.1f} | {f.one_p99_us:,.1f} | "
                f"{f.calls:,} | {f.cold_start_s:.2f} |"
            )
    return "\n".join(lines) + "\n"


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section between this benchmark's markers in ``path``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    block = f"{start}\n{body}{end}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_engines(
    data: Path,
    target: str,
    output: Path,
    rows: int,
    calls: int,
    slow_calls: int,
    repeats: int,
    cold_runs: int,
) -> str:
    results = bench_engines(
        target,
        data,
        rows,
        calls,
        slow_calls,
        repeats,
        cold_runs,
        lambda line: print(line, file=sys.stderr),
    )
    body = engines_markdown(data, results, rows, repeats, cold_runs)
    write_section(output, "engines", body)
    return body

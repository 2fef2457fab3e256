"""`scorekit bench db` end to end, with tiny sizes: it runs, and its table has every variant."""

from __future__ import annotations

from pathlib import Path

from scorekit._bench_db import MODELS, VARIANTS, run_db


def test_bench_db_writes_every_variant_with_its_ratio(dsn: str, data_dir: Path, tmp_path: Path):
    output = tmp_path / "benchmarks.md"
    lines: list[str] = []
    body = run_db(
        data_dir / "audit.csv",
        "Adjusted",
        output,
        rows=300,
        singles=20,
        slow_rows=5,
        repeats=1,
        cold_runs=1,
        dsn=dsn,
        log=lines.append,
    )
    assert output.read_text().count("## In-database scoring") == 1
    rows = [line for line in body.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == len(MODELS) * len(VARIANTS)
    for (_, model), variant in zip(
        [m for m in MODELS for _ in VARIANTS], VARIANTS * len(MODELS), strict=True
    ):
        assert any(row.startswith(f"| {model} | {variant.label} |") for row in rows)
    assert all(row.split(" | ")[3] == "1x" for row in rows if "| no trigger |" in row)
    assert sum("first prediction in a new connection" in line for line in lines) == len(MODELS)

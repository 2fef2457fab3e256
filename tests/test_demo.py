"""`make demo`'s script runs to its summary (on a private store and output directory)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_script_ends_with_a_summary(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SCOREKIT_STORE": str(tmp_path / "store"),
        "SCOREKIT_DEMO_OUT": str(tmp_path / "out"),
    }
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unseen category 'Martian'" in result.stderr
    assert result.stdout.count("1899/1899 labels equal") == 2  # native vs pypmml and sklearn
    assert "model_version" in result.stdout and "(3 rows)" in result.stdout  # scored by psql
    assert "can't score row 1" in result.stdout and "unseen category 'Martian'" in result.stdout
    assert '"predictions": [{"prediction": 0' in result.stdout  # over HTTP, with curl
    assert "HTTP 422" in result.stdout
    assert (tmp_path / "out" / "audit_scored.csv").is_file()
    assert not (tmp_path / "out" / "bad_scored.csv").exists()
    assert "scorekit_nightly 2026-11-18 02:00 UTC: success" in result.stdout  # Airflow
    assert "night of 2026-11-15  challenger roc_auc" in result.stdout
    assert "promoted as version 1" in result.stdout
    assert "rows scored     CLI file 1899; database trigger 3 of 3" in result.stdout
    assert "scored 1,424 rows of etl.features" in result.stdout  # the batch DAG
    assert "drift 2026-11-17   highest PSI" in result.stdout

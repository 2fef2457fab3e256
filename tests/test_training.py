"""Training: inferred schema, manifest contents, PMML with verification rows, declared
treatment of invalid values."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import scorekit
from scorekit import InputError, load_model

RECORD = {
    "Age": 38,
    "Employment": "Private",
    "Education": "College",
    "Marital": "Unmarried",
    "Occupation": "Service",
    "Income": 81838.0,
    "Gender": "Female",
    "Deductions": False,
    "Hours": 72,
}


def test_manifest_describes_the_model(trained, session_store) -> None:
    manifest = trained("audit")
    assert manifest.task == "classification" and manifest.target == "Adjusted"
    assert manifest.classes == [0, 1]
    assert set(manifest.metrics) == {"roc_auc", "accuracy", "log_loss"}
    assert 0.5 < manifest.metrics["roc_auc"] <= 1
    assert set(manifest.libraries) >= {"python", "scikit-learn", "numpy", "sklearn2pmml"}
    schema = manifest.schema
    low, high = schema["Age"].observed_range or (0, 0)
    assert schema["Age"].optype == "continuous" and 17 <= low < high <= 90
    assert schema["Employment"].categories is not None
    assert "Private" in schema["Employment"].categories
    assert schema["Deductions"].dtype == "boolean"
    assert all(f.missing_replacement is not None for f in schema.fields)
    directory = Path(session_store.url) / manifest.name / "versions" / manifest.version
    for artifact, digest in manifest.artifacts.items():
        assert hashlib.sha256((directory / artifact).read_bytes()).hexdigest() == digest


def test_pmml_embeds_verification_rows_and_domains(trained, session_store) -> None:
    manifest = trained("audit")
    pmml = session_store.bundle(manifest.name, manifest.version).read("model.pmml").decode()
    assert "<ModelVerification" in pmml and 'recordCount="20"' in pmml
    assert 'missingValueTreatment="asValue"' in pmml
    assert "<Interval" not in pmml  # out-of-range numbers stay valid


def test_regression_and_categorical_codes(trained) -> None:
    manifest = trained("auto", "gbm")
    assert manifest.task == "regression" and manifest.classes is None
    assert set(manifest.metrics) == {"rmse", "mae", "r2"}
    origin = manifest.schema["origin"]
    assert origin.optype == "categorical" and origin.dtype == "integer"
    assert origin.categories == (1, 2, 3)


def test_out_of_range_number_is_scored(trained, session_store) -> None:
    manifest = trained("audit")
    for engine in ("sklearn", "pypmml"):
        model = load_model(manifest.ref, engine=engine, store=session_store)
        assert 0 <= model.predict_one({**RECORD, "Income": 1e9})["probability(1)"] <= 1


def test_invalid_as_missing_scores_unseen_categories_as_missing(trained, session_store) -> None:
    strict = trained("audit")
    lenient = trained("audit", invalid="missing")
    with pytest.raises(InputError):
        load_model(strict.ref, store=session_store).predict_one({**RECORD, "Occupation": "Pilot"})
    results = []
    for engine in ("sklearn", "pypmml"):
        model = load_model(lenient.ref, engine=engine, store=session_store)
        unseen = model.predict_one({**RECORD, "Occupation": "Pilot"})
        missing = model.predict_one({**RECORD, "Occupation": None})
        assert unseen == pytest.approx(missing, abs=1e-12)
        results.append(unseen)
    assert results[0] == pytest.approx(results[1], abs=1e-9)


def test_training_is_reproducible(data_dir: Path, tmp_path: Path) -> None:
    first = scorekit.train(
        data_dir / "iris.csv", "Species", "iris", algorithm="forest", store=tmp_path
    )
    second = scorekit.train(
        data_dir / "iris.csv", "Species", "iris", algorithm="forest", store=tmp_path
    )
    assert (first.version, second.version) == ("1", "2")
    assert first.metrics == second.metrics
    assert first.artifacts["model.pmml"] != ""


def test_bad_training_inputs(data_dir: Path, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("x,y\n1,0\n2,1\n")
    with pytest.raises(InputError, match="at least 10"):
        scorekit.train(tiny, "y", "tiny", store=tmp_path)
    with pytest.raises(scorekit.UsageError, match="--algorithm"):
        scorekit.train(data_dir / "iris.csv", "Species", "iris", algorithm="svm", store=tmp_path)

"""load_model's sources, engine choice, and refusals (tampering, versions, unknown names)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import scorekit
from scorekit import (
    IncompatibleModelError,
    IntegrityError,
    ModelNotFoundError,
    UnsupportedModelError,
    UsageError,
    load_model,
)

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


@pytest.fixture
def bundle_dir(trained, session_store, tmp_path: Path) -> Path:
    """A private copy of the audit model's bundle directory, safe to tamper with."""
    manifest = trained("audit")
    source = Path(session_store.url) / manifest.name / "versions" / manifest.version
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    return target


def test_every_source_form_scores_the_same(
    trained, session_store, bundle_dir: Path, tmp_path: Path
) -> None:
    manifest = trained("audit")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(bundle_dir / "model.pmml", alone / "audit.pmml")
    shutil.copy(bundle_dir / "model.pkl", alone / "audit.pkl")
    sources = [
        manifest.name,
        f"{manifest.name}@champion",
        f"{manifest.name}@{manifest.version}",
        bundle_dir,
        str(bundle_dir / "model.pmml"),
        str(bundle_dir / "model.pkl"),
        str(alone / "audit.pmml"),
        alone / "audit.pkl",
    ]
    results = [load_model(s, store=session_store).predict_one(RECORD) for s in sources]
    for result in results[1:]:
        assert result == pytest.approx(results[0], abs=1e-9)


def test_standalone_pmml_is_described_from_its_dictionary(bundle_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "model-copy.pmml"
    shutil.copy(bundle_dir / "model.pmml", path)
    model = load_model(path)
    assert model.engine == "native"
    assert model.task == "classification" and model.classes == [0, 1]
    assert sorted(model.input_fields) == sorted(RECORD)
    deductions = model.manifest.schema["Deductions"]
    assert deductions.dtype == "boolean" and deductions.categories == (False, True)


def test_standalone_pickle_refuses_other_engines(bundle_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.pkl"
    shutil.copy(bundle_dir / "model.pkl", path)
    with pytest.raises(UnsupportedModelError, match="only the sklearn engine"):
        load_model(path, engine="pypmml")


def test_tampered_pickle_is_refused_before_unpickling(bundle_dir: Path) -> None:
    pickle = bundle_dir / "model.pkl"
    pickle.write_bytes(pickle.read_bytes() + b"\x00")
    with pytest.raises(IntegrityError, match=r"model\.pkl .* fails its integrity check"):
        load_model(bundle_dir, engine="sklearn")


@pytest.mark.parametrize("engine", ["native", "pypmml", "auto"])
def test_tampered_pmml_is_refused(bundle_dir: Path, engine: str) -> None:
    pmml = bundle_dir / "model.pmml"
    pmml.write_text(pmml.read_text().replace("Adjusted", "Adjustee"))
    with pytest.raises(IntegrityError, match="sha256 is"):
        load_model(bundle_dir, engine=engine)  # auto must not fall back to the pickle


def test_pickle_from_another_sklearn_is_refused_naming_both(bundle_dir: Path) -> None:
    manifest_path = bundle_dir / "manifest.json"
    data = json.loads(manifest_path.read_text())
    installed = data["libraries"]["scikit-learn"]
    data["libraries"]["scikit-learn"] = "1.6.1"
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleModelError) as caught:
        load_model(bundle_dir, engine="sklearn")
    assert "1.6.1" in caught.value.message and installed in caught.value.message
    assert load_model(bundle_dir).engine == "native"  # the PMML has no such limit


def test_auto_falls_back_to_pypmml_and_says_why(
    bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A PMML the native engine can't score goes to the reference engine, with a log line."""
    path = bundle_dir.parent / "unusual.pmml"
    derived = (
        '<DerivedField name="job3" optype="categorical" dataType="string">'
        '<Apply function="substring"><FieldRef field="Employment"/>'
        '<Constant dataType="integer">1</Constant><Constant dataType="integer">3</Constant>'
        "</Apply></DerivedField>"
    )
    pmml = (bundle_dir / "model.pmml").read_text()
    path.write_text(pmml.replace("<LocalTransformations>", "<LocalTransformations>" + derived))
    with pytest.raises(UnsupportedModelError, match="function 'substring'"):
        load_model(path, engine="native")
    with caplog.at_level(logging.INFO, logger="scorekit"):
        model = load_model(path)
    assert model.engine == "pypmml"
    assert "skipped native" in caplog.text and "substring" in caplog.text


def test_missing_file_and_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "absent.pmml")
    with pytest.raises(ModelNotFoundError, match=r"no manifest\.json"):
        load_model(tmp_path)
    with pytest.raises(UsageError, match="not valid"):
        load_model("bad name!")


def test_unknown_model_lists_available(trained, session_store) -> None:
    trained("audit")
    with pytest.raises(ModelNotFoundError, match=r"available: .*audit-logreg-error"):
        load_model("nosuch", store=session_store)


def test_unknown_engine_is_a_usage_error(bundle_dir: Path) -> None:
    with pytest.raises(UsageError, match="unknown engine 'turbo'"):
        load_model(bundle_dir, engine="turbo")


def test_corrupt_pmml_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.pmml"
    path.write_text("<PMML><DataDictionary>")
    with pytest.raises(IntegrityError, match="not valid PMML"):
        load_model(path)


def test_record_errors_name_row_field_and_value(bundle_dir: Path) -> None:
    model = load_model(bundle_dir)
    with pytest.raises(scorekit.InputError) as caught:
        model.predict_records([RECORD, {**RECORD, "Age": "old"}, {"Age": 3}])
    fields = {(p.row, p.field) for p in caught.value.details}
    assert (2, "Employment") in fields and (2, "Hours") in fields
    with pytest.raises(scorekit.InputError, match="expects a record as a dict"):
        model.predict_one(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(scorekit.InputError, match=r"row 1, field 'Age': expected a number"):
        model.predict_records([RECORD, {**RECORD, "Age": "old"}])


def test_a_path_to_a_pickle_scores_that_pickle(bundle_dir: Path) -> None:
    assert load_model(bundle_dir / "model.pkl").engine == "sklearn"
    assert load_model(bundle_dir / "model.pmml").engine == "native"
    assert load_model(bundle_dir).engine == "native"

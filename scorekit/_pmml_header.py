"""Read a PMML document's data dictionary and mining schema with the standard library only.

Used to describe a standalone .pmml file (no manifest beside it) as a Manifest, so it is scored
with the same input validation and output contract as a published bundle.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from ._errors import IntegrityError, UnsupportedModelError
from ._manifest import Manifest
from ._schema import Field, InputSchema

MODEL_ELEMENTS = (
    "RegressionModel",
    "TreeModel",
    "MiningModel",
    "GeneralRegressionModel",
    "NeuralNetwork",
    "NaiveBayesModel",
    "SupportVectorMachineModel",
    "NearestNeighborModel",
    "Scorecard",
    "ClusteringModel",
    "RuleSetModel",
    "AssociationModel",
    "TextModel",
    "TimeSeriesModel",
    "BayesianNetworkModel",
    "GaussianProcessModel",
    "AnomalyDetectionModel",
)
_DTYPES = {
    "double": "double",
    "float": "double",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
}
_INVALID = {"returnInvalid": "return_invalid", "asMissing": "as_missing"}


def local(tag: str) -> str:
    """An element's tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if local(c.tag) == name]


def child(element: ET.Element, name: str) -> ET.Element | None:
    found = children(element, name)
    return found[0] if found else None


def parse_value(dtype: str, text: str) -> Any:
    """A PMML value string as the canonical Python value of ``dtype``."""
    if dtype == "integer":
        return int(float(text))
    if dtype == "double":
        return float(text)
    if dtype == "boolean":
        return text.strip().lower() == "true"
    return text


def parse_pmml(data: bytes, where: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise IntegrityError(f"{where} is not valid PMML XML: {exc}") from exc


def model_element(root: ET.Element, where: str) -> ET.Element:
    for element in root:
        if local(element.tag) in MODEL_ELEMENTS:
            return element
    raise UnsupportedModelError(f"{where} contains no PMML model element")


def manifest_from_pmml(data: bytes, name: str, where: str) -> Manifest:
    """Describe a PMML document: task, target, classes and the active fields' schema."""
    root = parse_pmml(data, where)
    dictionary = child(root, "DataDictionary")
    if dictionary is None:
        raise IntegrityError(f"{where} has no DataDictionary")
    data_fields = {f.get("name", ""): f for f in children(dictionary, "DataField")}
    model = model_element(root, where)
    function = model.get("functionName", "")
    if function not in ("classification", "regression"):
        raise UnsupportedModelError(
            f"{where}: functionName {function!r} is not supported; expected classification or "
            "regression"
        )
    mining_schema = child(model, "MiningSchema")
    if mining_schema is None:
        raise IntegrityError(f"{where}: the {local(model.tag)} has no MiningSchema")
    target = ""
    fields: list[Field] = []
    for mining_field in children(mining_schema, "MiningField"):
        field_name = mining_field.get("name", "")
        usage = mining_field.get("usageType", "active")
        data_field = data_fields.get(field_name)
        if data_field is None:
            raise IntegrityError(
                f"{where}: MiningField {field_name!r} is not in the DataDictionary"
            )
        if usage in ("target", "predicted"):
            target = field_name
            continue
        if usage != "active":
            continue
        dtype = _DTYPES.get(data_field.get("dataType", "string"), "string")
        optype = data_field.get("optype", "continuous")
        values = [
            v.get("value", "")
            for v in children(data_field, "Value")
            if v.get("property", "valid") == "valid"
        ]
        replacement = mining_field.get("missingValueReplacement")
        fields.append(
            Field(
                name=field_name,
                optype="categorical" if optype in ("categorical", "ordinal") else "continuous",
                dtype="double" if optype == "continuous" else dtype,
                categories=tuple(parse_value(dtype, v) for v in values) if values else None,
                missing_replacement=(
                    parse_value(dtype, replacement) if replacement is not None else None
                ),
                invalid_treatment=_INVALID.get(
                    mining_field.get("invalidValueTreatment", "returnInvalid"), "return_invalid"
                ),
            )
        )
    if not target:
        raise UnsupportedModelError(f"{where}: the model declares no target field")
    classes = None
    if function == "classification":
        target_field = data_fields[target]
        dtype = _DTYPES.get(target_field.get("dataType", "string"), "string")
        classes = [parse_value(dtype, v.get("value", "")) for v in children(target_field, "Value")]
    return Manifest(
        name=name,
        version="",
        task=function,
        target=target,
        schema=InputSchema(tuple(fields)),
        classes=classes,
        algorithm=model.get("algorithmName", local(model.tag)),
    )

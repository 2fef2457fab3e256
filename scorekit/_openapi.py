"""The OpenAPI 3.0 document of scorekit's HTTP routes (scorekit/_http.py).

Served at /api/openapi.json and kept in the repo as functions/openapi.json (a test holds the two
equal; `scorekit openapi > functions/openapi.json` rewrites it). Field names depend on the model,
so a record is any JSON object here; GET /api/models/{name} lists a model's fields.
"""

from __future__ import annotations

from typing import Any

from . import __version__

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "malformed JSON or a body of the wrong shape",
        404: "no such model, version or route",
        405: "wrong method (the Allow header names the right one)",
        413: "body above SCOREKIT_MAX_BODY or more records than SCOREKIT_MAX_ROWS",
        415: "unsupported Content-Type",
        422: "values that can't be scored: missing or wrong-typed fields, unseen categories",
        503: "the model store can't be reached and the model was never loaded",
    }
    return {str(s): _json(_ref("Error"), meaning[s]) for s in statuses}


def _v2_errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref("V2Error"), "the protocol's error shape") for s in statuses}


NAME_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$", "maxLength": 200}
NAME = {"name": "name", "in": "path", "required": True, "schema": NAME_SCHEMA}
VERSION = {
    "name": "version",
    "in": "query",
    "required": False,
    "description": "a version number or an alias; default: the champion",
    "schema": NAME_SCHEMA,
}
RECORD = {"type": "object", "description": "field name -> value (null for missing)"}
RECORDS = {"type": "array", "items": RECORD, "minItems": 1}


def openapi_document() -> dict[str, Any]:
    predict_body = {
        "oneOf": [
            RECORD,
            RECORDS,
            {"type": "object", "required": ["instances"], "properties": {"instances": RECORDS}},
            {
                "type": "object",
                "required": ["dataframe_records"],
                "properties": {"dataframe_records": RECORDS},
            },
            {
                "type": "object",
                "required": ["dataframe_split"],
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "required": ["columns", "data"],
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": {"type": "array"}},
                        },
                    }
                },
            },
            {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {"type": "object", "additionalProperties": {"type": "array"}}
                },
            },
        ]
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "scorekit",
            "version": __version__,
            "description": "Score scikit-learn pipelines exported as PMML and pickles. Azure "
            "Functions serve every path under /api; the Open Inference Protocol's /v2 routes "
            "are also served as /api/v2 there.",
        },
        "paths": {
            "/api/health": {
                "get": {
                    "summary": "liveness, and which models could not be re-resolved",
                    "responses": {"200": _json(_ref("Health"), "alive"), **_errors(405)},
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
                }
            },
            "/api/models": {
                "get": {
                    "summary": "the models in the store, with their champions",
                    "responses": {"200": _json(_ref("ModelList"), "the models"), **_errors(405)},
                }
            },
            "/api/models/{name}": {
                "get": {
                    "summary": "a version's input fields, outputs and holdout metrics",
                    "parameters": [NAME, VERSION],
                    "responses": {
                        "200": _json(_ref("ModelDescription"), "the model"),
                        **_errors(400, 404, 405, 503),
                    },
                }
            },
            "/api/models/{name}/predict": {
                "post": {
                    "summary": "score records",
                    "parameters": [NAME, VERSION],
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {"schema": predict_body},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _json(_ref("Predictions"), "one prediction per record, in order"),
                        **_errors(400, 404, 405, 413, 415, 422, 503),
                    },
                }
            },
            "/v2": {
                "get": {
                    "summary": "server metadata (Open Inference Protocol)",
                    "responses": {"200": _json({"type": "object"}, "server metadata")},
                }
            },
            "/v2/health/live": {"get": {"responses": {"200": _json({"type": "object"}, "live")}}},
            "/v2/health/ready": {"get": {"responses": {"200": _json({"type": "object"}, "ready")}}},
            "/v2/models/{name}": {
                "get": {
                    "summary": "model metadata: input and output tensors",
                    "parameters": [NAME],
                    "responses": {
                        "200": _json({"type": "object"}, "model metadata"),
                        **_v2_errors(400, 404, 503),
                    },
                }
            },
            "/v2/models/{name}/ready": {
                "get": {
                    "parameters": [NAME],
                    "responses": {
                        "200": _json({"type": "object"}, "ready"),
                        **_v2_errors(400, 404, 503),
                    },
                }
            },
            "/v2/models/{name}/infer": {
                "post": {
                    "summary": "inference: one input tensor per field, shape [N]",
                    "parameters": [NAME],
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("InferRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("InferResponse"), "one output tensor per output"),
                        **_v2_errors(400, 404, 405, 413, 415, 422, 503),
                    },
                }
            },
        },
        "components": {"schemas": _schemas()},
    }


def _schemas() -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": _problem()},
                    },
                }
            },
        },
        "V2Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "code": {"type": "string"},
                "details": {"type": "array", "items": _problem()},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "store": {"type": "string"},
                "degraded": {"type": "object", "nullable": True},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["models"],
            "properties": {"models": {"type": "array", "items": {"type": "object"}}},
        },
        "ModelDescription": {
            "type": "object",
            "required": ["name", "version", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "task": {"type": "string"},
                "inputs": {"type": "array", "items": {"type": "object"}},
                "outputs": {"type": "array", "items": {"type": "string"}},
                "metrics": {"type": "object"},
            },
        },
        "Predictions": {
            "type": "object",
            "required": ["model", "version", "predictions"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string"},
                "predictions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "description": 'prediction, and "probability(<class>)" per class',
                    },
                },
            },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "items": tensor},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": tensor},
            },
        },
    }


def _problem() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "row": {"type": "integer", "nullable": True},
            "field": {"type": "string", "nullable": True},
            "problem": {"type": "string"},
            "value": {"nullable": True},
        },
    }

"""The OpenAPI 3 document of the server's routes, written from the KServe v2 REST
specification (``docs/predict-api/v2/required_api.md``: health, server and model metadata,
model readiness and inference, with the ``$inference_request`` / ``$inference_response``
/ ``$metadata_model_response`` / error objects it defines), plus ``/metrics``.

The model name is an ``enum`` of the models this server serves, so that a fuzzer (the tests
run schemathesis on it) reaches the inference code rather than only 404s; any other name is
a 404 ``{"error"}`` all the same.
"""

from __future__ import annotations

__all__ = ["openapi_document"]

DATATYPE_NAMES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                  "FP16", "FP32", "FP64", "BYTES"]


def _schemas() -> dict:
    parameters = {"type": "object", "additionalProperties": True}
    tensor_metadata = {"type": "object", "required": ["name", "datatype", "shape"],
                       "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                                      "shape": {"type": "array", "items": {"type": "integer"}}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Parameters": parameters,
        "ServerMetadataResponse": {
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}}},
        "ModelMetadataResponse": {
            "type": "object", "required": ["name", "platform", "inputs", "outputs"],
            "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string"},
                           "inputs": {"type": "array", "items": tensor_metadata},
                           "outputs": {"type": "array", "items": tensor_metadata}}},
        "LiveResponse": {"type": "object", "properties": {"live": {"type": "boolean"}}},
        "ReadyResponse": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        "ModelReadyResponse": {"type": "object", "properties": {"name": {"type": "string"},
                                                                "ready": {"type": "boolean"}}},
        "RequestInput": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"},
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                           "datatype": {"type": "string", "enum": DATATYPE_NAMES},
                           "parameters": {"$ref": "#/components/schemas/Parameters"},
                           # nested lists or a flat list of values, row-major (the binary
                           # extension sends the bytes after the JSON header instead)
                           "data": {"type": "array"}}},
        "RequestOutput": {"type": "object", "required": ["name"],
                          "properties": {"name": {"type": "string"},
                                         "parameters": {"$ref": "#/components/schemas/Parameters"}}},
        "InferenceRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {"id": {"type": "string"},
                           "parameters": {"$ref": "#/components/schemas/Parameters"},
                           "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/RequestInput"}},
                           "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/RequestOutput"}}}},
        "ResponseOutput": {
            "type": "object", "required": ["name", "shape", "datatype"],
            "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                           "datatype": {"type": "string"},
                           "parameters": {"$ref": "#/components/schemas/Parameters"},
                           "data": {"type": "array"}}},
        "InferenceResponse": {
            "type": "object", "required": ["model_name", "outputs"],
            "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                           "id": {"type": "string"}, "parameters": {"$ref": "#/components/schemas/Parameters"},
                           "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/ResponseOutput"}}}},
    }


def _json(schema: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _errors(*codes: int) -> dict:
    meaning = {400: "malformed request", 401: "missing or wrong bearer token (when the server has one)",
               404: "unknown model or version", 413: "request body above --max-body-mb",
               503: "queue full, too many request bytes in flight, or not ready"}
    return {str(code): _json("Error", meaning[code]) for code in codes}


def openapi_document(model_names: list[str], version: str) -> dict:
    """The OpenAPI 3.0 document for a server serving ``model_names``."""
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": model_names}}
    model_version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "enum": ["1"]}}
    infer = {
        "summary": "Inference (JSON tensors; the binary tensor extension is also accepted)",
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}}},
        "responses": {"200": _json("InferenceResponse", "the outputs"), **_errors(400, 401, 404, 413, 503)},
    }
    metadata = {"summary": "Model metadata",
                "responses": {"200": _json("ModelMetadataResponse", "inputs and outputs"), **_errors(401, 404)}}
    ready = {"summary": "Model readiness",
             "responses": {"200": _json("ModelReadyResponse", "ready"), **_errors(401, 404, 503)}}
    paths = {
        "/v2/health/live": {"get": {"summary": "Server liveness",
                                    "responses": {"200": _json("LiveResponse", "live")}}},
        "/v2/health/ready": {"get": {"summary": "Server readiness",
                                     "responses": {"200": _json("ReadyResponse", "ready"), **_errors(503)}}},
        "/v2": {"get": {"summary": "Server metadata",
                        "responses": {"200": _json("ServerMetadataResponse", "name, version, extensions"),
                                      **_errors(401)}}},
        "/v2/models/{name}": {"parameters": [name], "get": metadata},
        "/v2/models/{name}/versions/{version}": {"parameters": [name, model_version], "get": metadata},
        "/v2/models/{name}/ready": {"parameters": [name], "get": ready},
        "/v2/models/{name}/versions/{version}/ready": {"parameters": [name, model_version], "get": ready},
        "/v2/models/{name}/infer": {"parameters": [name], "post": infer},
        "/v2/models/{name}/versions/{version}/infer": {"parameters": [name, model_version], "post": infer},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}},
                                           **_errors(401)}}},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "aeserve (KServe v2 / Open Inference Protocol)", "version": version},
            "paths": paths, "components": {"schemas": _schemas()}}

"""``GET /openapi.json``: an OpenAPI 3.1 document of batchd's routes, in OpenAI's shapes.

It is data, built once per app from the code's own constants (endpoints, purposes, statuses,
completion windows, the limits on ids and metadata), so it states what the handlers accept and
render; ``tests/e2e/test_fuzz.py`` holds them to it. It is served without a key, as OpenAI's
is published: it names nothing a caller could not learn from one error message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from batchd.api.batches import BATCH_PAGE
from batchd.batches import MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE
from batchd.files import MAX_EXPIRY, MIN_EXPIRY
from batchd.idempotency import MAX_KEY as MAX_IDEMPOTENCY_KEY
from batchd.lifecycle import TIMESTAMP_FIELD
from batchd.models import (
    ENDPOINTS,
    OUTPUT_PURPOSE,
    UPLOAD_PURPOSES,
    UPSTREAM_STATES,
    BatchStatus,
)
from batchd.text import MAX_FILENAME, MAX_ID
from batchd.webhooks import EVENT_TYPES

JSON = dict[str, Any]

FILE_PAGE_MAX = 10_000
"""``limit`` of ``GET /v1/files``: its default and its maximum, as ``api/files.py`` reads it."""
NO_NUL = "^[^\\x00]*$"
ERROR_TYPES = (
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "rate_limit_error",
    "server_error",
)


async def serve(request: Request) -> Response:
    body: bytes = request.app.state.openapi
    return Response(body, media_type="application/json")


routes = [Route("/openapi.json", serve, methods=["GET"])]


def document_bytes(completion_windows: Sequence[str]) -> bytes:
    return orjson.dumps(document(completion_windows))


def document(completion_windows: Sequence[str]) -> JSON:
    """The document for a server that offers ``completion_windows``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "batchd",
            "version": "1",
            "description": "A self-hosted OpenAI Batch API: the Files and Batches endpoints.",
        },
        "paths": {
            **_files_paths(),
            **_batches_paths(),
            **_models_paths(),
            **_webhooks_paths(),
            **_operator_paths(),
        },
        "components": {
            "schemas": _schemas(completion_windows),
            "responses": _error_responses(),
            "headers": {"RequestId": {"schema": {"type": "string"}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# -- building blocks ---------------------------------------------------------------------------

_HEADERS = {"x-request-id": {"$ref": "#/components/headers/RequestId"}}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON, description: str = "OK", **more: Any) -> JSON:
    return {
        "description": description,
        "headers": _HEADERS,
        "content": {"application/json": {"schema": schema}},
        **more,
    }


def _links(parameter: str, *operation_ids: str) -> JSON:
    """Operations that take the new object's id as ``parameter``."""
    value = "$response.body#/id"
    return {op: {"operationId": op, "parameters": {parameter: value}} for op in operation_ids}


def _errors(*statuses: int) -> JSON:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _operation(op_id: str, summary: str, ok: JSON, *errors: int, **more: Any) -> JSON:
    """An operation under ``/v1``: bearer auth, so a 401 besides ``errors``."""
    return {
        "operationId": op_id,
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {"200": ok, **_errors(*errors, 401)},
        **more,
    }


def _id_parameter(name: str) -> JSON:
    """An id in the path: one longer than ``MAX_ID``, or with a NUL, names nothing (404)."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _storable(MAX_ID, minLength=1),
    }


def _query(name: str, schema: JSON, description: str) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _limit(default: int, maximum: int) -> JSON:
    schema = {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}
    return _query("limit", schema, "How many objects a page holds.")


_AFTER = _query(
    "after",
    {"type": "string"},
    "The id of the last object of the previous page; an id this project does not have "
    "(another's, or none at all) is past every object, and the page is empty.",
)


def _storable(max_length: int, **more: Any) -> JSON:
    """A string ``batchd.text.storable`` takes: at most ``max_length`` characters, no NUL."""
    return {"type": "string", "maxLength": max_length, "pattern": NO_NUL, **more}


def _nullable(type_: str) -> JSON:
    return {"type": [type_, "null"]}


def _object(properties: JSON, *, required: Sequence[str] | None = None) -> JSON:
    """A response object: every property present (unset ones null), no others."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


def _list_page(item: str) -> JSON:
    return _object(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(item)},
            "first_id": _nullable("string"),
            "last_id": _nullable("string"),
            "has_more": {"type": "boolean"},
        }
    )


# -- paths -------------------------------------------------------------------------------------


def _files_paths() -> JSON:
    file_id = [_id_parameter("file_id")]
    return {
        "/v1/files": {
            "post": _operation(
                "createFile",
                "Upload a file.",
                _json(
                    _ref("File"),
                    links=_links("file_id", "retrieveFile", "deleteFile", "downloadFile"),
                ),
                400,
                requestBody={
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("FileUpload")}},
                },
            ),
            "get": _operation(
                "listFiles",
                "List the project's files.",
                _json(_ref("FileList")),
                400,
                parameters=[
                    _query(
                        "purpose",
                        _storable(MAX_ID),
                        "Only files with this purpose.",
                    ),
                    _limit(FILE_PAGE_MAX, FILE_PAGE_MAX),
                    _query(
                        "order",
                        {"enum": ["asc", "desc"], "default": "desc"},
                        "By created_at.",
                    ),
                    _AFTER,
                ],
            ),
        },
        "/v1/files/{file_id}": {
            "parameters": file_id,
            "get": _operation("retrieveFile", "A file.", _json(_ref("File")), 404),
            "delete": _operation("deleteFile", "Delete a file.", _json(_ref("DeletedFile")), 404),
        },
        "/v1/files/{file_id}/content": {
            "parameters": file_id,
            "get": _operation(
                "downloadFile",
                "The file's bytes.",
                {
                    "description": "The bytes, as uploaded or written.",
                    "headers": _HEADERS,
                    "content": {"application/octet-stream": {"schema": {}}},
                },
                404,
            ),
        },
    }


def _batches_paths() -> JSON:
    batch_id = [_id_parameter("batch_id")]
    return {
        "/v1/batches": {
            "post": _operation(
                "createBatch",
                "Create a batch from an uploaded file of requests.",
                _json(_ref("Batch"), links=_links("batch_id", "retrieveBatch", "cancelBatch")),
                400,
                409,
                413,
                429,
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": _storable(MAX_IDEMPOTENCY_KEY, minLength=1),
                        "description": "The same key and parameters within a day answer the "
                        "batch the key made; other parameters, a 409.",
                    }
                ],
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BatchCreate")}},
                },
            ),
            "get": _operation(
                "listBatches",
                "List the project's batches, newest first.",
                _json(_ref("BatchList")),
                400,
                parameters=[_AFTER, _limit(BATCH_PAGE.default, BATCH_PAGE.high)],
            ),
        },
        "/v1/batches/{batch_id}": {
            "parameters": batch_id,
            "get": _operation("retrieveBatch", "A batch.", _json(_ref("Batch")), 404),
        },
        "/v1/batches/{batch_id}/cancel": {
            "parameters": batch_id,
            "post": _operation(
                "cancelBatch",
                "Cancel a batch: lines not yet sent end as batch_cancelled.",
                _json(_ref("Batch")),
                404,
                409,
            ),
        },
        **{
            f"/v1/batches/{{batch_id}}/{kind}": {
                "parameters": batch_id,
                "get": _operation(
                    f"{kind}SoFar",
                    f"batchd's own: the {kind} lines finished so far (the final file once the "
                    "batch has ended).",
                    {
                        "description": "JSON lines.",
                        "headers": _HEADERS,
                        "content": {"application/jsonl": {"schema": {}}},
                    },
                    404,
                ),
            }
            for kind in ("output", "error")
        },
        "/v1/upstreams": {
            "get": _operation(
                "listUpstreams",
                "batchd's own: each model server as the workers see it.",
                _json(_ref("UpstreamList")),
            )
        },
    }


def _models_paths() -> JSON:
    return {
        "/v1/models": {
            "get": _operation("listModels", "The models batchd serves.", _json(_ref("ModelList")))
        },
        "/v1/models/{model}": {
            "parameters": [
                {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": _operation("retrieveModel", "A model batchd serves.", _json(_ref("Model")), 404),
        },
    }


def _webhooks_paths() -> JSON:
    """OpenAI's webhook endpoints. Their bodies are described loosely (``additionalProperties``):
    the use cases check them; the fuzz run leaves these out, as they send HTTP to given URLs."""
    one = [_id_parameter("webhook_endpoint_id")]
    body = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    endpoint, with_secret = _json(_ref("WebhookEndpoint")), _json(_ref("WebhookEndpointSecret"))
    return {
        "/v1/webhook_endpoints": {
            "post": _operation(
                "createWebhookEndpoint", "Add an endpoint.", with_secret, 400, requestBody=body
            ),
            "get": _operation(
                "listWebhookEndpoints",
                "The project's endpoints.",
                _json(_list_page("WebhookEndpoint")),
                400,
                parameters=[_AFTER, _limit(20, 100)],
            ),
        },
        "/v1/webhook_endpoints/{webhook_endpoint_id}": {
            "parameters": one,
            "get": _operation("retrieveWebhookEndpoint", "An endpoint.", endpoint, 404),
            "post": _operation(
                "updateWebhookEndpoint", "Change an endpoint.", endpoint, 400, 404, requestBody=body
            ),
            "delete": _operation(
                "deleteWebhookEndpoint",
                "Remove an endpoint.",
                _json(
                    _object(
                        {
                            "id": {"type": "string"},
                            "object": {"const": "webhook_endpoint.deleted"},
                            "deleted": {"const": True},
                        }
                    )
                ),
                404,
            ),
        },
        "/v1/webhook_endpoints/{webhook_endpoint_id}/rotate_secret": {
            "parameters": one,
            "post": _operation(
                "rotateWebhookSecret", "A new signing secret.", with_secret, 400, 404
            ),
        },
        "/v1/webhook_endpoints/{webhook_endpoint_id}/test": {
            "parameters": one,
            "post": _operation(
                "testWebhookEndpoint",
                "Send a test event now.",
                _json({"type": "object"}),
                400,
                404,
                requestBody=body,
            ),
        },
        "/v1/webhook_event_types": {
            "get": _operation(
                "listWebhookEventTypes",
                "The event types batchd sends.",
                _json(
                    _object(
                        {
                            "object": {"const": "list"},
                            "data": {"type": "array", "items": {"enum": list(EVENT_TYPES)}},
                        }
                    )
                ),
            )
        },
    }


def _operator_paths() -> JSON:
    """Outside ``/v1``, so outside auth."""
    status = _json(_ref("Status"))
    return {
        "/healthz": {
            "get": {"operationId": "healthz", "summary": "Alive.", "responses": {"200": status}}
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Ready: the store and the blob store take writes, the worker runs.",
                "responses": {"200": status, **_errors(503)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics.",
                "responses": {
                    "200": {
                        "description": "The Prometheus text format.",
                        "headers": _HEADERS,
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {"200": _json({"type": "object"})},
            }
        },
    }


# -- schemas -----------------------------------------------------------------------------------


def _schemas(completion_windows: Sequence[str]) -> JSON:
    return {
        "Error": _error_schema(),
        "File": _file_schema(),
        "FileList": _list_page("File"),
        "FileUpload": _file_upload_schema(),
        "DeletedFile": _object(
            {"id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"const": True}}
        ),
        "Batch": _batch_schema(),
        "BatchList": _list_page("Batch"),
        "BatchCreate": _batch_create_schema(completion_windows),
        "Upstream": _upstream_schema(),
        "UpstreamList": _object(
            {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Upstream")}}
        ),
        "Model": _object(
            {
                "id": {"type": "string"},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
            }
        ),
        "ModelList": _object(
            {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}}
        ),
        "WebhookEndpoint": _object(_WEBHOOK_ENDPOINT),
        "WebhookEndpointSecret": _object(
            {**_WEBHOOK_ENDPOINT, "signing_secret": {"type": "string"}}
        ),
        "Status": _object({"status": {"const": "ok"}}),
    }


_WEBHOOK_ENDPOINT = {
    "id": {"type": "string"},
    "object": {"const": "webhook_endpoint"},
    "created_at": {"type": "integer"},
    "updated_at": {"type": "integer"},
    "name": {"type": "string"},
    "url": {"type": "string"},
    "event_types": {"type": "array", "items": {"enum": list(EVENT_TYPES)}},
    "signing_secret_hint": {"type": "string"},
}


def _error_schema() -> JSON:
    return _object(
        {
            "error": _object(
                {
                    "message": {"type": "string"},
                    "type": {"enum": list(ERROR_TYPES)},
                    "param": _nullable("string"),
                    "code": _nullable("string"),
                }
            )
        }
    )


def _error_responses() -> JSON:
    meanings = {
        400: "The request is invalid.",
        401: "Incorrect API key provided.",
        404: "No such object.",
        409: "The request conflicts with the object's status.",
        413: "The request body is too large.",
        429: "A quota of the project is reached.",
        503: "Not ready.",
    }
    return {f"Error{status}": _json(_ref("Error"), text) for status, text in meanings.items()}


def _file_schema() -> JSON:
    return _object(
        {
            "id": {"type": "string"},
            "object": {"const": "file"},
            "bytes": {"type": "integer", "minimum": 0},
            "created_at": {"type": "integer"},
            "expires_at": _nullable("integer"),
            "filename": {"type": "string", "maxLength": MAX_FILENAME},
            "purpose": {"enum": [*UPLOAD_PURPOSES, OUTPUT_PURPOSE]},
            "status": {"const": "processed"},
            "status_details": {"type": "null"},
        }
    )


def _file_upload_schema() -> JSON:
    """The multipart form. ``file``'s filename is at most ``MAX_FILENAME`` characters without
    NUL; a ``batch`` file's first line is a JSON object (else 400 invalid_file_format)."""
    seconds, anchor = "expires_after[seconds]", "expires_after[anchor]"
    return {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"enum": list(UPLOAD_PURPOSES)},
            anchor: {"const": "created_at"},
            seconds: {"type": "integer", "minimum": MIN_EXPIRY, "maximum": MAX_EXPIRY},
        },
        "required": ["file", "purpose"],
        "dependentRequired": {anchor: [seconds], seconds: [anchor]},
    }


def _batch_schema() -> JSON:
    timestamps = [name for name in TIMESTAMP_FIELD.values() if name != "created_at"]
    counts = ("total", "completed", "failed")
    return _object(
        {
            "id": {"type": "string"},
            "object": {"const": "batch"},
            "endpoint": {"enum": list(ENDPOINTS)},
            "model": _nullable("string"),
            "errors": {"oneOf": [{"type": "null"}, _batch_errors_schema()]},
            "input_file_id": {"type": "string"},
            "completion_window": {"type": "string"},
            "status": {"enum": [status.value for status in BatchStatus]},
            "output_file_id": _nullable("string"),
            "error_file_id": _nullable("string"),
            "created_at": {"type": "integer"},
            "expires_at": {"type": "integer"},
            **{name: _nullable("integer") for name in timestamps},
            "request_counts": _object({name: _count() for name in counts}),
            "metadata": {"oneOf": [{"type": "null"}, _metadata_schema()]},
            "usage": _usage_schema(),
        }
    )


def _count() -> JSON:
    return {"type": "integer", "minimum": 0}


def _batch_errors_schema() -> JSON:
    error = _object(
        {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "param": _nullable("string"),
            "line": _nullable("integer"),
        }
    )
    return _object(
        {
            "object": {"const": "list"},
            "data": {"type": "array", "items": error},
            "total": _count(),
        }
    )


def _usage_schema() -> JSON:
    return _object(
        {
            "input_tokens": _count(),
            "input_tokens_details": _object({"cached_tokens": _count()}),
            "output_tokens": _count(),
            "output_tokens_details": _object({"reasoning_tokens": _count()}),
            "total_tokens": _count(),
        }
    )


def _metadata_schema() -> JSON:
    return {
        "type": "object",
        "maxProperties": MAX_METADATA_PAIRS,
        "propertyNames": _storable(MAX_METADATA_KEY),
        "additionalProperties": _storable(MAX_METADATA_VALUE),
    }


def _batch_create_schema(completion_windows: Sequence[str]) -> JSON:
    """The body of ``POST /v1/batches``. Other keys are ignored, as OpenAI's SDKs may send them.
    An ``input_file_id`` that names no file is taken: the batch fails its validation."""
    return {
        "type": "object",
        "properties": {
            "input_file_id": _storable(MAX_ID),
            "endpoint": {"enum": list(ENDPOINTS)},
            "completion_window": {"enum": list(completion_windows)},
            "metadata": {"oneOf": [{"type": "null"}, _metadata_schema()]},
            "output_expires_after": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "properties": {
                            "anchor": {"const": "created_at"},
                            "seconds": {
                                "type": "integer",
                                "minimum": MIN_EXPIRY,
                                "maximum": MAX_EXPIRY,
                            },
                        },
                        "required": ["anchor", "seconds"],
                    },
                ]
            },
        },
        "required": ["input_file_id", "endpoint", "completion_window"],
    }


def _upstream_schema() -> JSON:
    return _object(
        {
            "object": {"const": "upstream"},
            "name": {"type": "string"},
            "state": {"enum": list(UPSTREAM_STATES)},
            "reason": _nullable("string"),
            "since": _nullable("integer"),
            "lines_waiting": _count(),
            "batches": _count(),
            "workers": {"type": "integer", "minimum": 1},
        }
    )

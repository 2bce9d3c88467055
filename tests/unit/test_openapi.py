"""GET /openapi.json: the document names exactly the app's routes and is valid OpenAPI 3.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import schemathesis
from starlette.routing import Route

from batchd.api import routes as api_routes
from batchd.api.openapi import document
from batchd.models import ENDPOINTS, UPLOAD_PURPOSES

WINDOWS = ["24h", "3s"]
METHODS = {"get", "post", "put", "patch", "delete"}


def app_operations() -> set[tuple[str, str]]:
    """(path, method) of every API route, HEAD aside (Starlette adds it to each GET). The
    dashboard's pages are for browsers, not part of the API."""
    operations = set()
    for route in api_routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                operations.add((route.path.replace(":path}", "}"), method.lower()))
    return operations


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in METHODS & set(item)}


def test_every_route_is_documented_and_nothing_else() -> None:
    """Each (path, method) the app routes is in the document, and the document has no other."""
    assert documented_operations(document(WINDOWS)) == app_operations()


def test_the_document_is_valid_openapi() -> None:
    """It passes the OpenAPI 3.1 meta-schema (as schemathesis checks it) and every $ref in it
    points at a component that exists."""
    doc = document(WINDOWS)
    schemathesis.openapi.from_dict(doc).validate()
    for ref in refs(doc):
        _, section, kind, name = ref.split("/")
        assert section == "components" and name in doc["components"][kind], ref


def test_path_parameters_are_declared() -> None:
    """Each ``{name}`` in a path is a required path parameter of it."""
    for path, item in document(WINDOWS)["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        named = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert declared == named, path


def test_values_come_from_the_code() -> None:
    """Endpoints, purposes and the server's completion windows are the code's own."""
    schemas = document(WINDOWS)["components"]["schemas"]
    create = schemas["BatchCreate"]["properties"]
    assert create["endpoint"]["enum"] == list(ENDPOINTS)
    assert create["completion_window"]["enum"] == WINDOWS
    assert schemas["FileUpload"]["properties"]["purpose"]["enum"] == list(UPLOAD_PURPOSES)


def test_every_operation_has_an_id_and_every_v1_one_needs_a_key() -> None:
    """Operation ids are unique; routes under /v1 declare bearer auth and a 401, the others
    (health, metrics, this document) neither."""
    ids = []
    for path, item in document(WINDOWS)["paths"].items():
        for method in METHODS & set(item):
            operation = item[method]
            ids.append(operation["operationId"])
            needs_key = path.startswith("/v1/")
            assert ("security" in operation) is needs_key, (path, method)
            assert ("401" in operation["responses"]) is needs_key, (path, method)
    assert len(ids) == len(set(ids))


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)

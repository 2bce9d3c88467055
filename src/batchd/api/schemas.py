"""The OpenAI wire shapes, rendered from domain objects (SPEC §2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from batchd.catalog import ServedModel
from batchd.models import Batch, LineError, StoredFile, UpstreamStatus, WebhookEndpoint
from batchd.webhooks import secret_hint

T = TypeVar("T")
JSON = dict[str, Any]


def file_object(file: StoredFile) -> JSON:
    return {
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": file.created_at,
        "expires_at": file.expires_at,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": None,
    }


def deleted_file(file: StoredFile) -> JSON:
    return {"id": file.id, "object": "file", "deleted": True}


def batch_object(batch: Batch) -> JSON:
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model,
        "errors": _errors(batch.errors, batch.errors_found),
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status.value,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_at,
        "in_progress_at": batch.in_progress_at,
        "expires_at": batch.expires_at,
        "finalizing_at": batch.finalizing_at,
        "completed_at": batch.completed_at,
        "failed_at": batch.failed_at,
        "expired_at": batch.expired_at,
        "cancelling_at": batch.cancelling_at,
        "cancelled_at": batch.cancelled_at,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "metadata": batch.metadata,
        "usage": {
            "input_tokens": batch.usage.input_tokens,
            "input_tokens_details": {"cached_tokens": batch.usage.cached_tokens},
            "output_tokens": batch.usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": batch.usage.reasoning_tokens},
            "total_tokens": batch.usage.total_tokens,
        },
    }


def _errors(errors: list[LineError] | None, total: int) -> JSON | None:
    """OpenAI's list of validation errors, and batchd's ``total``: how many were found, of which
    ``data`` holds the first 1,000."""
    if errors is None:
        return None
    return {
        "object": "list",
        "data": [
            {"code": e.code, "message": e.message, "param": e.param, "line": e.line} for e in errors
        ],
        "total": total,
    }


def list_page(items: Sequence[T], has_more: bool, render: Callable[[T], JSON]) -> JSON:
    data = [render(item) for item in items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def error_body(message: str, type_: str, param: str | None, code: str | None) -> JSON:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def model_object(model: ServedModel) -> JSON:
    """OpenAI's Model object. batchd does not know when a model was made: ``created`` is 0."""
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.upstream}


def webhook_endpoint_object(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> JSON:
    """OpenAI's WebhookEndpoint; its whole signing secret only when just made or rotated."""
    rendered: JSON = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
        "name": endpoint.name,
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "signing_secret_hint": secret_hint(endpoint.secret),
    }
    if with_secret:
        rendered["signing_secret"] = endpoint.secret
    return rendered


def upstream_object(status: UpstreamStatus, workers: int) -> JSON:
    """batchd's own: an upstream as its workers see it (``GET /v1/upstreams``)."""
    return {
        "object": "upstream",
        "name": status.upstream,
        "state": status.state,
        "reason": status.reason,
        "since": int(status.since) if status.since is not None else None,
        "lines_waiting": status.lines_waiting,
        "batches": status.batches,
        "workers": workers,
    }

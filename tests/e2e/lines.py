"""Input lines and the checks every output and error line must pass (SPEC §3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai

BODIES: dict[str, Any] = {
    "/v1/chat/completions": lambda i, m: {
        "model": m,
        "messages": [{"role": "user", "content": f"hello {i}"}],
    },
    "/v1/completions": lambda i, m: {"model": m, "prompt": f"say {i}"},
    "/v1/embeddings": lambda i, m: {"model": m, "input": f"text {i}"},
    "/v1/responses": lambda i, m: {"model": m, "input": f"hello {i}"},
    "/v1/moderations": lambda i, m: {"model": m, "input": f"text {i}"},
    "/v1/images/generations": lambda i, m: {"model": m, "prompt": f"a cat, take {i}"},
    "/v1/images/edits": lambda i, m: {
        "model": m,
        "prompt": f"add a hat, take {i}",
        "images": [{"image_url": "https://example.com/cat.png"}],
    },
}


def request_line(
    i: int, endpoint: str = "/v1/chat/completions", model: str = "gpt-test", **overrides: Any
) -> dict[str, Any]:
    line = {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": endpoint,
        "body": BODIES[endpoint](i, model),
    }
    line.update(overrides)
    return line


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def upload(client: openai.OpenAI, path: Path) -> str:
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="batch").id


def submit(
    client: openai.OpenAI,
    tmp_path: Path,
    lines: list[Any],
    endpoint: str = "/v1/chat/completions",
    window: str = "24h",
) -> Any:
    file_id = upload(client, write_jsonl(tmp_path / "input.jsonl", lines))
    return client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,
    )  # type: ignore[arg-type]


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        check_line_shape(line)
    return lines


def check_line_shape(line: dict[str, Any]) -> None:
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["id"].startswith("batch_req_")
    assert isinstance(line["custom_id"], str)
    if line["response"] is not None:
        assert line["error"] is None
        assert set(line["response"]) == {"status_code", "request_id", "body"}
        assert isinstance(line["response"]["status_code"], int)
        assert isinstance(line["response"]["body"], dict)
    else:
        assert set(line["error"]) == {"code", "message"}
        assert isinstance(line["error"]["code"], str) and line["error"]["message"]


def results(client: openai.OpenAI, batch: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Output and error lines, checked: each custom_id once, counts matching the batch."""
    output = read_lines(client, batch.output_file_id)
    errors = read_lines(client, batch.error_file_id)
    ids = [line["custom_id"] for line in output + errors]
    assert len(ids) == len(set(ids)) == batch.request_counts.total
    assert len(output) == batch.request_counts.completed
    assert len(errors) == batch.request_counts.failed
    assert all(200 <= line["response"]["status_code"] < 300 for line in output)
    return output, errors

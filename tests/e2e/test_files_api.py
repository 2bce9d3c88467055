"""The Files API as the SDK uses it."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import openai
import pytest

from batchd.api.files import attachment
from tests.e2e.conftest import Server, ServerFactory
from tests.e2e.lines import request_line, write_jsonl


def _upload(client: openai.OpenAI, name: str, content: bytes, purpose: str = "batch") -> str:
    return client.files.create(file=(name, io.BytesIO(content)), purpose=purpose).id  # type: ignore[arg-type]


JSONL = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'


def test_upload_retrieve_download_delete(server: Server, tmp_path: Path) -> None:
    """An uploaded file is retrievable, downloads byte for byte, and is gone once deleted."""
    client = server.client()
    path = write_jsonl(tmp_path / "in.jsonl", [request_line(i) for i in range(100)])
    with path.open("rb") as handle:
        file = client.files.create(file=handle, purpose="batch")
    assert file.id.startswith("file-")
    assert file.bytes == path.stat().st_size
    assert file.filename == "in.jsonl" and file.purpose == "batch" and file.status == "processed"
    assert file.expires_at == file.created_at + 30 * 86400
    assert client.files.retrieve(file.id) == file
    assert client.files.content(file.id).content == path.read_bytes()
    deleted = client.files.delete(file.id)
    assert deleted.deleted is True and deleted.id == file.id
    with pytest.raises(openai.NotFoundError) as caught:
        client.files.retrieve(file.id)
    assert caught.value.body == {  # type: ignore[comparison-overlap]
        "message": f"No such File object: {file.id}",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }


def test_content_is_served_as_bytes_not_json(server: Server) -> None:
    """File content never comes back as application/json."""
    client = server.client()
    file_id = _upload(client, "a.jsonl", JSONL)
    response = httpx.get(
        f"{server.base_url}/files/{file_id}/content", headers={"Accept": "application/binary"}
    )
    assert response.status_code == 200
    assert not response.headers["content-type"].startswith("application/json")
    assert response.content == JSONL


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("a.jsonl", "attachment; filename=\"a.jsonl\"; filename*=UTF-8''a.jsonl"),
        (
            "résumé\\.jsonl",
            "attachment; filename=\"r_sum__.jsonl\"; filename*=UTF-8''r%C3%A9sum%C3%A9%5C.jsonl",
        ),
    ],
)
def test_content_is_an_attachment_named_as_uploaded(server: Server, name: str, header: str) -> None:
    """Downloads carry Content-Disposition with the upload's name; a name with non-ASCII
    letters or a backslash is escaped, never able to break the header."""
    file_id = _upload(server.client(), name, JSONL)

    response = httpx.get(f"{server.base_url}/files/{file_id}/content")

    assert response.headers["content-disposition"] == header


def test_a_quote_in_a_filename_cannot_end_the_header_value() -> None:
    """The ASCII name replaces quotes and control characters; the exact name is encoded."""
    assert attachment('a"b\r\n.jsonl') == (
        "attachment; filename=\"a_b__.jsonl\"; filename*=UTF-8''a%22b%0D%0A.jsonl"
    )


def test_list_pages_with_exact_has_more(server: Server) -> None:
    """Listing pages newest first (or oldest first) with an exact has_more."""
    client = server.client()
    ids = [_upload(client, f"{i}.jsonl", JSONL) for i in range(5)]
    page = client.files.list(limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more is True
    walked = [f.id for f in client.files.list(limit=2)]  # auto-paging follows `after`
    assert walked == ids[::-1]
    raw = httpx.get(f"{server.base_url}/files", params={"limit": 5}).json()
    assert raw["has_more"] is False and raw["first_id"] == ids[-1] and raw["last_id"] == ids[0]
    ascending = client.files.list(limit=3, order="asc")
    assert [f.id for f in ascending.data] == ids[:3] and ascending.has_more is True


def test_list_filters_by_purpose(server: Server) -> None:
    """The purpose filter returns only files of that purpose."""
    client = server.client()
    batch_id = _upload(client, "a.jsonl", JSONL)
    other_id = _upload(client, "notes.txt", b"hello", purpose="user_data")
    assert [f.id for f in client.files.list(purpose="batch")] == [batch_id]
    assert [f.id for f in client.files.list(purpose="user_data")] == [other_id]


def test_a_batch_file_that_is_not_jsonl_is_refused(server: Server) -> None:
    """Uploading a non-JSONL file for purpose batch is a 400."""
    client = server.client()
    with pytest.raises(openai.BadRequestError) as caught:
        _upload(client, "a.csv", b"a,b,c\n1,2,3\n")
    assert caught.value.body["message"].startswith("Invalid file format for Batch API")  # type: ignore[index]


def test_later_bad_lines_are_accepted_at_upload(server: Server) -> None:
    """Only the first line is checked at upload; the rest waits for batch validation."""
    client = server.client()
    assert _upload(client, "a.jsonl", JSONL + b"not json\n").startswith("file-")


def test_a_file_over_the_size_limit_is_refused(start_server: ServerFactory) -> None:
    """A batch file over the configured limit is a 400 'File is too large.'"""
    server = start_server(extra_env={"BATCHD_MAX_BATCH_FILE_BYTES": "1000"})
    client = server.client()
    with pytest.raises(openai.BadRequestError) as caught:
        _upload(client, "big.jsonl", JSONL * 20)
    assert caught.value.body["message"] == "File is too large."  # type: ignore[index]
    assert list(client.files.list()) == []


def test_unknown_purpose_is_refused(server: Server) -> None:
    """An unknown purpose is a 400 naming the param."""
    with pytest.raises(openai.BadRequestError) as caught:
        _upload(server.client(), "a.jsonl", JSONL, purpose="nonsense")
    assert caught.value.param == "purpose"  # type: ignore[attr-defined]


def test_expires_after_sets_the_expiry(server: Server) -> None:
    """expires_after[seconds] anchored at created_at sets expires_at."""
    client = server.client()
    file = client.files.create(
        file=("a.jsonl", io.BytesIO(JSONL)),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert file.expires_at == file.created_at + 7200
    with pytest.raises(openai.BadRequestError):
        client.files.create(
            file=("a.jsonl", io.BytesIO(JSONL)),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 10},
        )


def test_upload_without_a_file_part_is_a_clear_error(server: Server) -> None:
    """A multipart body with no file is a 400 in the OpenAI envelope."""
    response = httpx.post(
        f"{server.base_url}/files", data={"purpose": "batch"}, files={"other": ("x", b"y")}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"

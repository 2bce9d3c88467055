"""Fuzzing at the doors (issue 17), on both engines, against one live server per engine.

schemathesis drives every operation of ``/openapi.json`` (its coverage, fuzzing and stateful
phases, every check: no 5xx, status codes, content types, headers and bodies as documented,
nothing invalid accepted, nothing valid refused, a deleted file gone). Hypothesis then sends what
the document cannot describe: NUL bytes, invalid UTF-8 and over-long text in path ids, cursors,
filters, JSON fields, form fields and filenames. Every test ends by reading what the server
logged meanwhile: no traceback, nothing at level error.

Bounded: ``BATCHD_FUZZ_EXAMPLES`` (default 40) examples per operation for schemathesis, five
times as many per hypothesis test, from seed ``BATCHD_FUZZ_SEED`` (default 0, so that a run
repeats; set another to explore).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st

from batchd.batches import MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE
from batchd.files import MAX_EXPIRY, MIN_EXPIRY
from batchd.models import ENDPOINTS, UPLOAD_PURPOSES
from batchd.text import MAX_FILENAME, MAX_ID, storable
from tests.e2e.conftest import ModelServer, Server, launch
from tests.support.hostile import hostile_bytes, hostile_text, json_values, percent_encoded

EXAMPLES = int(os.environ.get("BATCHD_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("BATCHD_FUZZ_SEED", "0"))
KEY = "sk-fuzz"
AUTH = {"Authorization": f"Bearer {KEY}"}
WINDOWS = ("24h", "3s")  # as the e2e servers are started
CONFIG = Path(__file__).parent / "fuzz" / "schemathesis.toml"
FUZZ = settings(
    max_examples=5 * EXAMPLES,  # a request each, where schemathesis makes several per example
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ERROR_KEYS = {"message", "type", "param", "code"}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzzed(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    model_server: ModelServer,
) -> Iterator[Server]:
    """One server per engine, shared by this module's tests: they only add objects."""
    flags = ["--api-key", f"fuzz:{KEY}"]
    if request.param == "postgres":
        flags += ["--database-url", request.getfixturevalue("postgres_cluster").create_database()]
    servers: list[Server] = []
    try:
        yield launch(
            servers, tmp_path_factory.mktemp(f"fuzz-{request.param}"), model_server, *flags
        )
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def server(fuzzed: Server) -> Iterator[Server]:
    """The engine's server; what it logs during the test must hold no traceback and no error."""
    start = fuzzed.log_path.stat().st_size
    yield fuzzed
    with fuzzed.log_path.open("rb") as log:
        log.seek(start)
        problems = log_problems(log.read())
    assert not problems, "the server logged:\n" + "\n".join(problems)


def log_problems(log: bytes) -> list[str]:
    """Lines of a JSON-lines log that hold a traceback or are at level error or critical."""
    problems = []
    for line in log.decode("utf-8", "replace").splitlines():
        try:
            level = orjson.loads(line).get("level")
        except (orjson.JSONDecodeError, AttributeError):
            level = None  # not one of batchd's lines: uvicorn or Python writing on its own
        if "Traceback" in line or level in ("error", "critical"):
            problems.append(line[:2000])
    return problems


def origin(server: Server) -> str:
    return server.base_url.removesuffix("/v1")


def send(server: Server, method: str, target: str, **kwargs: Any) -> httpx.Response:
    """``target`` goes on the wire as written (percent-escapes and all), with the key."""
    headers = {**AUTH, **kwargs.pop("headers", {})}
    url = httpx.URL(origin(server)).copy_with(raw_path=target.encode("ascii"))
    response = httpx.request(method, url, headers=headers, timeout=30, **kwargs)
    assert response.status_code < 500, f"{method} {target}: {response.text[:500]}"
    assert response.headers.get("x-request-id", "").startswith("req_")
    return response


def error_of(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """The OpenAI error envelope of a refusal with one of ``statuses``."""
    assert response.status_code in statuses, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == ERROR_KEYS
    return error


# -- schemathesis ----------------------------------------------------------------------------


def test_schemathesis_finds_nothing(server: Server, tmp_path: Path) -> None:
    """Every operation of the document, with schema-valid and schema-invalid input and in
    sequences (create, then read, cancel, delete): every check of schemathesis passes."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{origin(server)}/openapi.json",
        "--header",
        f"Authorization: Bearer {KEY}",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",
        # Webhook endpoints make batchd send HTTP to the URLs given: never to random hosts.
        "--exclude-path-regex",
        "webhook",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-30_000:] + done.stderr[-5_000:]


# -- hostile strings, where the document cannot say them ------------------------------------

PATH_OPERATIONS = (
    ("GET", "/v1/files/{}"),
    ("DELETE", "/v1/files/{}"),
    ("GET", "/v1/files/{}/content"),
    ("GET", "/v1/batches/{}"),
    ("POST", "/v1/batches/{}/cancel"),
)


def test_hostile_ids_name_nothing(server: Server) -> None:
    """An id with NUL, invalid UTF-8 or past any length, in any path: 404 in the envelope (a
    307 or 405 when its decoded ``/`` makes the path another URL)."""

    @FUZZ
    @seed(SEED)
    @given(operation=st.sampled_from(PATH_OPERATIONS), raw=hostile_bytes(min_size=1))
    def probe(operation: tuple[str, str], raw: bytes) -> None:
        method, template = operation
        response = send(server, method, template.format(percent_encoded(raw)))
        if response.status_code in (307, 405):  # a decoded "/" made it another URL
            assert b"/" in raw
        else:
            error_of(response, 404)

    probe()


QUERY_LISTS = {
    "/v1/files": ("after", "purpose", "order", "limit"),
    "/v1/batches": ("after", "limit"),
}
LIMITS = {"/v1/files": 10_000, "/v1/batches": 100}


def query_values() -> st.SearchStrategy[bytes | None]:
    fine = st.sampled_from((b"1", b"20", b"asc", b"desc", b"batch", b"file-abc", b""))
    odd = st.sampled_from(
        (b"0", b"-1", b"101", b"10001", b"1_0", b" 5", b"+5", b"5.0", b"\xd9\xa5")
    )
    return st.one_of(st.none(), fine, odd, hostile_bytes())


def refused_params(path: str, query: dict[str, str]) -> set[str]:
    """The parameters the contract refuses, read as the server reads a query (UTF-8, invalid
    bytes replaced): ``limit`` a decimal integer in range, ``order`` asc or desc, ``purpose``
    text the store can hold; ``after`` anything (an unknown id is past every object)."""
    refused = set()
    limit = query.get("limit")
    if limit is not None and not (
        re.fullmatch(r"-?[0-9]+", limit) and 1 <= int(limit) <= LIMITS[path]
    ):
        refused.add("limit")
    if query.get("order", "asc") not in ("asc", "desc"):
        refused.add("order")
    purpose = query.get("purpose")
    if purpose is not None and not storable(purpose, MAX_ID):
        refused.add("purpose")
    return refused


def test_hostile_cursors_and_filters_are_refused_or_match_nothing(server: Server) -> None:
    """A list query answers 400 naming a parameter the contract refuses, or 200 when there is
    none; an ``after`` or ``purpose`` that names nothing gives an empty page."""

    @FUZZ
    @seed(SEED)
    @given(data=st.data(), path=st.sampled_from(sorted(QUERY_LISTS)))
    def probe(data: st.DataObject, path: str) -> None:
        raw = {name: data.draw(query_values(), label=name) for name in QUERY_LISTS[path]}
        sent = {name: value for name, value in raw.items() if value is not None}
        target = path + "?" + "&".join(f"{k}={percent_encoded(v)}" for k, v in sent.items())
        assume(len(target) < 60_000)  # httpx refuses longer queries
        response = send(server, "GET", target)
        refused = refused_params(path, {k: unquote(percent_encoded(v)) for k, v in sent.items()})
        if refused:
            assert error_of(response, 400)["param"] in refused
            return
        assert response.status_code == 200, response.text[:500]
        page = response.json()["data"]
        if sent.get("after"):  # names nothing here: past every object
            assert page == []
        if "purpose" in sent:
            assert {file["purpose"] for file in page} <= {unquote(percent_encoded(sent["purpose"]))}

    probe()


def metadata() -> st.SearchStrategy[Any]:
    fine = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
    hostile = st.dictionaries(
        st.one_of(st.text(max_size=8), hostile_text()),
        st.one_of(st.text(max_size=8), hostile_text(), json_values()),
        max_size=MAX_METADATA_PAIRS + 2,
    )
    return st.one_of(st.none(), fine, hostile, json_values())


def batch_fields() -> st.SearchStrategy[dict[str, Any]]:
    """A create body: each field absent, right, hostile or of another type."""

    def maybe(right: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(right, right, hostile_text(), json_values())

    expiry = st.fixed_dictionaries(
        {"anchor": st.sampled_from(("created_at", "now")), "seconds": st.integers(0, 2**40)}
    )
    fields = {
        "input_file_id": maybe(st.just("file-abc")),
        "endpoint": maybe(st.sampled_from(list(ENDPOINTS))),
        "completion_window": maybe(st.sampled_from(WINDOWS)),
        "metadata": metadata(),
        "output_expires_after": st.one_of(st.none(), expiry, json_values()),
    }
    return st.fixed_dictionaries({}, optional=fields)


def create_is_allowed(body: dict[str, Any]) -> bool:
    """What the contract accepts at ``POST /v1/batches`` (SPEC §4, level 1; ``file-abc`` names
    no file, which fails the batch later, not the request)."""
    file_id, metadata, expiry = (
        body.get("input_file_id"),
        body.get("metadata"),
        body.get("output_expires_after"),
    )
    return (
        isinstance(file_id, str)
        and storable(file_id, MAX_ID)
        and body.get("endpoint") in list(ENDPOINTS)
        and body.get("completion_window") in WINDOWS
        and (metadata is None or metadata_is_allowed(metadata))
        and (expiry is None or expiry_is_allowed(expiry))
    )


def metadata_is_allowed(metadata: object) -> bool:
    return (
        isinstance(metadata, dict)
        and len(metadata) <= MAX_METADATA_PAIRS
        and all(
            storable(key, MAX_METADATA_KEY)
            and isinstance(value, str)
            and storable(value, MAX_METADATA_VALUE)
            for key, value in metadata.items()
        )
    )


def expiry_is_allowed(expiry: object) -> bool:
    if not isinstance(expiry, dict) or expiry.get("anchor") != "created_at":
        return False
    seconds = expiry.get("seconds")
    whole = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    return whole and float(seconds).is_integer() and MIN_EXPIRY <= seconds <= MAX_EXPIRY


def is_utf8(body: object) -> bool:
    """Whether ``body`` has a UTF-8 spelling: no lone surrogate in any of its strings."""
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def test_hostile_batch_bodies_are_refused_unless_allowed(server: Server) -> None:
    """``POST /v1/batches`` answers 200 exactly when the contract allows the body, and the batch
    keeps what was sent; a body that is not UTF-8 JSON (a lone surrogate, escaped or raw) is a
    400."""

    @FUZZ
    @seed(SEED)
    @given(body=batch_fields(), spelling=st.sampled_from(("escaped", "raw")))
    def probe(body: dict[str, Any], spelling: str) -> None:
        text = json.dumps(body, ensure_ascii=spelling == "escaped")
        response = send(
            server,
            "POST",
            "/v1/batches",
            content=text.encode("utf-8", "surrogatepass"),
            headers={"Content-Type": "application/json"},
        )
        if is_utf8(body) and create_is_allowed(body):
            assert response.status_code == 200, response.text[:500]
            batch = response.json()
            assert batch["input_file_id"] == body["input_file_id"]
            assert batch["metadata"] == body.get("metadata")
        else:
            error_of(response, 400)

    probe()


def upload_form() -> st.SearchStrategy[tuple[bytes, bytes, bytes | None, bytes | None]]:
    """(purpose, filename, expires_after[anchor], expires_after[seconds]) as raw bytes."""
    purpose = st.one_of(st.sampled_from([p.encode() for p in UPLOAD_PURPOSES]), hostile_bytes())
    filename = st.one_of(st.just(b"in.jsonl"), hostile_bytes())
    anchor = st.one_of(st.none(), st.just(b"created_at"), hostile_bytes())
    seconds = st.one_of(st.none(), st.just(b"3600"), st.integers().map(lambda n: str(n).encode()))
    return st.tuples(purpose, filename, anchor, seconds)


FRAMING = (b"\r", b"\n", b'"')
"""Bytes that end a header or a quoted filename: a field holding one is no longer the field sent."""


def multipart(fields: list[tuple[bytes, bytes]], filename: bytes, content: bytes) -> bytes:
    """A form written by hand: an attacker's filename is raw bytes, not a client's escape."""
    parts = [b'Content-Disposition: form-data; name="%s"\r\n\r\n%s' % field for field in fields]
    parts.append(
        b'Content-Disposition: form-data; name="file"; filename="%s"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n%s" % (filename, content)
    )
    return b"".join(b"--fuzz\r\n" + part + b"\r\n" for part in parts) + b"--fuzz--\r\n"


def test_hostile_uploads_are_refused_or_kept_as_the_contract_says(server: Server) -> None:
    """``POST /v1/files`` with a hostile purpose, filename or expiry answers a 400 in the
    envelope, or a File whose purpose is one of the upload purposes and whose filename the store
    can hold; never a 5xx."""
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'

    @FUZZ
    @seed(SEED)
    @given(form=upload_form())
    def probe(form: tuple[bytes, bytes, bytes | None, bytes | None]) -> None:
        purpose, filename, anchor, seconds = form
        fields = [(b"purpose", purpose)]
        if anchor is not None:
            fields.append((b"expires_after[anchor]", anchor))
        if seconds is not None:
            fields.append((b"expires_after[seconds]", seconds))
        response = send(
            server,
            "POST",
            "/v1/files",
            content=multipart(fields, filename, line),
            headers={"Content-Type": "multipart/form-data; boundary=fuzz"},
        )
        if response.status_code != 200:
            error_of(response, 400)
            return
        file = response.json()
        assert file["purpose"] in UPLOAD_PURPOSES
        assert storable(file["filename"], MAX_FILENAME)
        if not any(mark in value for _, value in fields for mark in FRAMING) and not any(
            mark in filename for mark in FRAMING
        ):  # the form reads as it was meant
            assert file["purpose"].encode() == purpose and file["bytes"] == len(line)
            assert (anchor, seconds) == (None, None) or (
                anchor == b"created_at"
                and seconds is not None
                and MIN_EXPIRY <= int(seconds) <= MAX_EXPIRY
                and file["expires_at"] == file["created_at"] + int(seconds)
            )

    probe()

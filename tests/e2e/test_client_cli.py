"""The ``batchd`` client commands, run as a real process against a real batchd server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit, write_jsonl
from tests.fakes.model_server import start_model_server_process, stop_model_server_process
from tests.support.ports import free_port

CHAT = "/v1/chat/completions"
BATCH_FIELDS = {"id", "object", "status", "request_counts", "input_file_id", "output_file_id"}


@dataclass
class Cli:
    """Runs ``python -m batchd …`` in ``cwd`` with ``OPENAI_BASE_URL`` pointing at a server."""

    base_url: str
    cwd: Path
    api_key: str | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BATCHD_"))}
        env["OPENAI_BASE_URL"] = self.base_url
        if self.api_key is not None:
            env["OPENAI_API_KEY"] = self.api_key
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "batchd", *args],
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            timeout=90,
        )

    def json(self, *args: str, code: int = 0) -> Any:
        done = self.run(*args, "--json")
        assert done.returncode == code, done.stderr
        return json.loads(done.stdout)

    def start(self, *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "batchd", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env=self.env(),
        )


@pytest.fixture
def cli(server: Server, fake: ModelServer, tmp_path: Path) -> Cli:
    return Cli(server.base_url, tmp_path)


def chat_file(tmp_path: Path, count: int, name: str = "requests.jsonl") -> Path:
    return write_jsonl(tmp_path / name, [request_line(i) for i in range(count)])


def jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def custom_ids(path: str | Path) -> set[str]:
    return {line["custom_id"] for line in jsonl(path)}


def no_traceback(done: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in done.stdout + done.stderr


# ------------------------------------------------------------------ submit


def test_submit_uploads_the_file_creates_the_batch_and_prints_its_id(
    cli: Cli, server: Server, tmp_path: Path
) -> None:
    """submit prints only the batch id; the batch exists with its metadata and input file."""
    done = cli.run(
        "submit", str(chat_file(tmp_path, 3)), "--endpoint", CHAT, "--metadata", "team=search"
    )
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    batch = server.client().batches.retrieve(batch_id)
    assert batch.endpoint == CHAT and batch.completion_window == "24h"
    assert batch.metadata == {"team": "search"}
    uploaded = server.client().files.retrieve(batch.input_file_id)
    assert uploaded.purpose == "batch" and uploaded.filename == "requests.jsonl"


def test_submit_json_prints_the_created_batch_object(cli: Cli, tmp_path: Path) -> None:
    """submit --json prints the batch object as the server returned it."""
    batch = cli.json("submit", str(chat_file(tmp_path, 2)), "--endpoint", CHAT)
    assert set(batch) >= BATCH_FIELDS
    assert batch["object"] == "batch" and batch["status"] == "validating"


def test_submit_wait_follows_the_batch_to_the_end_and_downloads_its_files(
    cli: Cli, fake: ModelServer, tmp_path: Path
) -> None:
    """submit --wait reports progress up to completed, writes the output and error files, points
    at the error file and exits 9: the batch completed, some of its requests failed."""
    fake.set_faults(rules=[{"fault": "status", "status": 400, "custom_id": "^req-[0-2]$"}])
    path = chat_file(tmp_path, 20)
    done = cli.run(
        "submit", str(path), "--endpoint", CHAT, "--wait", "-o", "out", "--poll-interval", "0.1"
    )
    assert done.returncode == 9, done.stderr
    batch_id = done.stdout.splitlines()[0]
    assert f"{batch_id} completed: 20/20 done, 3 failed" in done.stderr
    assert f"3 of 20 requests failed: see out/{batch_id}_error.jsonl" in done.stderr
    output = tmp_path / "out" / f"{batch_id}_output.jsonl"
    errors = tmp_path / "out" / f"{batch_id}_error.jsonl"
    assert custom_ids(output) == {f"req-{i}" for i in range(3, 20)}
    assert custom_ids(errors) == {"req-0", "req-1", "req-2"}
    assert all(line["response"]["status_code"] == 400 for line in jsonl(errors))
    assert f"output file: out/{batch_id}_output.jsonl" in done.stdout
    assert not list((tmp_path / "out").glob("*.part"))


def test_submit_wait_json_prints_the_finished_batch_and_the_downloaded_paths(
    cli: Cli, tmp_path: Path
) -> None:
    """With --json, one document: the final batch and where its files were saved."""
    document = cli.json(
        "submit",
        str(chat_file(tmp_path, 5)),
        "--endpoint",
        CHAT,
        "--wait",
        "--poll-interval",
        "0.1",
    )
    assert set(document) == {"batch", "downloaded"}
    batch = document["batch"]
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 5
    output = f"{batch['id']}_output.jsonl"  # in the current directory by default
    assert document["downloaded"] == {"output": output, "error": None}
    assert len(jsonl(tmp_path / output)) == 5


def test_submit_wait_of_an_invalid_file_exits_5_and_shows_the_bad_lines(
    cli: Cli, tmp_path: Path
) -> None:
    """A batch that fails validation: exit 5, each problem shown with its line number."""
    path = write_jsonl(tmp_path / "bad.jsonl", [request_line(1), "not json", request_line(1)])
    done = cli.run("submit", str(path), "--endpoint", CHAT, "--wait", "--poll-interval", "0.1")
    assert done.returncode == 5, done.stderr
    assert "failed" in done.stdout
    assert "invalid_json_line" in done.stdout and "duplicate_custom_id" in done.stdout
    assert list(tmp_path.glob("batch_*")) == []


def test_submit_wait_of_a_batch_that_expires_exits_6_with_the_finished_results(
    cli: Cli, fake: ModelServer, tmp_path: Path
) -> None:
    """A batch whose window ends first: exit 6; finished lines in the output, the rest expired."""
    fake.set_faults(rules=[{"fault": "hang", "custom_id": "^req-[3-4]$"}])
    document = cli.json(
        "submit",
        str(chat_file(tmp_path, 5)),
        "--endpoint",
        CHAT,
        "--completion-window",
        "3s",
        "--wait",
        "--poll-interval",
        "0.1",
        code=6,
    )
    assert document["batch"]["status"] == "expired"
    assert custom_ids(tmp_path / document["downloaded"]["output"]) == {"req-0", "req-1", "req-2"}
    expired = jsonl(tmp_path / document["downloaded"]["error"])
    assert {line["error"]["code"] for line in expired} == {"batch_expired"}


def test_submit_needs_an_endpoint_and_output_needs_wait(cli: Cli, tmp_path: Path) -> None:
    """Usage mistakes exit 2 before anything is uploaded."""
    path = str(chat_file(tmp_path, 1))
    assert cli.run("submit", path).returncode == 2
    assert cli.run("submit", path, "--endpoint", CHAT, "-o", "out").returncode == 2
    assert cli.run("submit", path, "--endpoint", CHAT, "--metadata", "novalue").returncode == 2
    assert cli.json("files", "ls")["data"] == []


def test_a_batch_the_server_refuses_is_shown_and_its_upload_removed(
    cli: Cli, tmp_path: Path
) -> None:
    """An endpoint the server refuses: exit 1 with its message; the uploaded file is deleted."""
    done = cli.run("submit", str(chat_file(tmp_path, 1)), "--endpoint", "/v1/nope")
    assert done.returncode == 1 and no_traceback(done)
    assert "endpoint" in done.stderr and "HTTP 400" in done.stderr
    assert cli.json("files", "ls")["data"] == []


# ------------------------------------------------------------------ Ctrl-C


@pytest.fixture
def slow_server(start_server: ServerFactory, fake: ModelServer) -> Server:
    """A server that takes seconds over a 100-line batch: two at a time, 200 ms each."""
    fake.set_faults(latency_ms=200)
    return start_server("--max-concurrency", "2")


@contextmanager
def watching(
    cli: Cli, path: Path, *flags: str, stdin: Any = subprocess.DEVNULL
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``submit --wait``; (process, batch id) once it is watching the running batch."""
    args = ["submit", str(path), "--endpoint", CHAT, "--wait", "--poll-interval", "0.1"]
    process = cli.start(*args, *flags, stdin=stdin)
    try:
        assert process.stdout is not None and process.stderr is not None
        batch_id = process.stdout.readline().strip()
        while "in_progress" not in process.stderr.readline():
            assert process.poll() is None, process.communicate()
        yield process, batch_id
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def interrupt(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def test_ctrl_c_without_a_terminal_stops_watching_and_leaves_the_batch_running(
    slow_server: Server, tmp_path: Path
) -> None:
    """With nobody to ask, Ctrl-C exits 130 and says how to follow or cancel the batch."""
    cli = Cli(slow_server.base_url, tmp_path)
    with watching(cli, chat_file(tmp_path, 100)) as (process, batch_id):
        code, _, err = interrupt(process)
        assert code == 130
        assert f"batchd wait {batch_id}" in err and f"batchd cancel {batch_id}" in err
        batch = slow_server.client().batches.retrieve(batch_id)
        assert batch.status in {"in_progress", "finalizing", "completed"}


def test_ctrl_c_with_cancel_on_interrupt_cancels_and_downloads_what_finished(
    slow_server: Server, tmp_path: Path
) -> None:
    """--on-interrupt cancel: the batch is cancelled, partial results downloaded, exit 7."""
    cli = Cli(slow_server.base_url, tmp_path)
    with watching(cli, chat_file(tmp_path, 100), "--on-interrupt", "cancel") as (process, batch_id):
        code, _, err = interrupt(process)
        assert code == 7, err
        assert f"{batch_id} cancelled" in err
        errors = jsonl(tmp_path / f"{batch_id}_error.jsonl")
        assert errors and {line["error"]["code"] for line in errors} == {"batch_cancelled"}


def test_ctrl_c_at_a_terminal_asks_and_cancels_on_c(slow_server: Server, tmp_path: Path) -> None:
    """On a terminal, Ctrl-C asks; answering c cancels the batch and waits for it to stop."""
    cli = Cli(slow_server.base_url, tmp_path)
    controller, terminal = os.openpty()
    try:
        os.write(controller, b"c\n")  # typed ahead; read when the question is asked
        with watching(cli, chat_file(tmp_path, 100), stdin=terminal) as (process, batch_id):
            code, _, err = interrupt(process)
            assert "[c] cancel the batch" in err
            assert code == 7, err
            assert slow_server.client().batches.retrieve(batch_id).status == "cancelled"
    finally:
        os.close(controller)
        os.close(terminal)


def test_wait_follows_an_existing_batch_and_exits_7_when_it_is_cancelled(
    slow_server: Server, tmp_path: Path
) -> None:
    """wait ID re-attaches to a batch; a cancel from elsewhere ends it with exit 7."""
    client = slow_server.client()
    batch = submit(client, tmp_path, [request_line(i) for i in range(100)])
    wait_for_batch(client, batch.id, until={"in_progress"})
    client.batches.cancel(batch.id)
    cli = Cli(slow_server.base_url, tmp_path)
    document = cli.json("wait", batch.id, "--poll-interval", "0.1", code=7)
    assert document["batch"]["status"] == "cancelled"


# ------------------------------------------------------------------ status, ls, cancel, results


def test_status_shows_the_batch_readably_and_as_the_api_object(
    cli: Cli, server: Server, tmp_path: Path
) -> None:
    """status prints a panel by default and the API's batch object with --json."""
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(1)]).id)
    done = cli.run("status", batch.id)
    assert done.returncode == 0
    assert batch.id in done.stdout and "completed" in done.stdout
    assert "1 completed, 0 failed, 1 total" in done.stdout
    assert cli.json("status", batch.id) == client.batches.retrieve(batch.id).model_dump(
        mode="json", exclude_unset=True
    )


def test_ls_lists_newest_first_and_pages(cli: Cli, server: Server, tmp_path: Path) -> None:
    """ls is newest first; --limit and --after page through; --all follows every page."""
    client = server.client()
    created = [submit(client, tmp_path, [request_line(1)]).id for _ in range(5)]
    newest_first = created[::-1]
    first = cli.json("ls", "--limit", "2")
    assert [b["id"] for b in first["data"]] == newest_first[:2] and first["has_more"]
    second = cli.json("ls", "--limit", "2", "--after", first["last_id"])
    assert [b["id"] for b in second["data"]] == newest_first[2:4]
    every = cli.json("ls", "--limit", "2", "--all")
    assert [b["id"] for b in every["data"]] == newest_first and not every["has_more"]
    table = cli.run("ls", "--limit", "2")
    assert table.stdout.index(newest_first[0]) < table.stdout.index(newest_first[1])
    assert newest_first[2] not in table.stdout
    assert f"--after {newest_first[1]}" in table.stdout


def test_cancel_cancels_a_running_batch(slow_server: Server, tmp_path: Path) -> None:
    """cancel answers the batch as cancelling (or already cancelled)."""
    batch = submit(slow_server.client(), tmp_path, [request_line(i) for i in range(50)])
    cli = Cli(slow_server.base_url, tmp_path)
    assert cli.json("cancel", batch.id)["status"] in {"cancelling", "cancelled"}
    assert wait_for_batch(slow_server.client(), batch.id).status == "cancelled"
    shown = cli.run("cancel", batch.id)
    assert shown.returncode == 0 and f"{batch.id}: cancelled" in shown.stdout


def test_cancelling_a_finished_batch_shows_the_409(
    cli: Cli, server: Server, tmp_path: Path
) -> None:
    """The server's refusal is shown with its message and status, exit 1."""
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(1)]).id)
    done = cli.run("cancel", batch.id)
    assert done.returncode == 1 and no_traceback(done)
    assert "Cannot cancel a batch with status 'completed'." in done.stderr
    assert "HTTP 409" in done.stderr


def test_results_downloads_the_output_and_error_files(
    cli: Cli, server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """results writes <id>_output.jsonl and <id>_error.jsonl (the server's names) with every
    line; a failed request makes it exit 9."""
    fake.set_faults(rules=[{"fault": "status", "status": 422, "custom_id": "^req-1$"}])
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(i) for i in range(4)]).id)
    document = cli.json("results", batch.id, "--output", "saved", code=9)
    assert document["batch"]["id"] == batch.id
    assert custom_ids(tmp_path / "saved" / f"{batch.id}_output.jsonl") == {
        "req-0",
        "req-2",
        "req-3",
    }
    assert custom_ids(tmp_path / "saved" / f"{batch.id}_error.jsonl") == {"req-1"}
    assert client.files.retrieve(batch.error_file_id).filename == f"{batch.id}_error.jsonl"
    done = cli.run("results", batch.id, "--output", "saved")
    assert done.returncode == 9 and f"error file: saved/{batch.id}_error.jsonl" in done.stdout
    assert f"1 of 4 requests failed: see saved/{batch.id}_error.jsonl" in done.stderr


def test_a_batch_whose_every_request_failed_exits_9_and_points_at_the_error_file(
    cli: Cli, fake: ModelServer, tmp_path: Path
) -> None:
    """Every line failed: not a success (exit 9), and the line to read next is named."""
    fake.set_faults(rules=[{"fault": "status", "status": 400, "custom_id": "^req-"}])
    path = chat_file(tmp_path, 4)
    done = cli.run("submit", str(path), "--endpoint", CHAT, "--wait", "--poll-interval", "0.1")
    assert done.returncode == 9, done.stderr
    batch_id = done.stdout.splitlines()[0]
    assert f"4 of 4 requests failed: see {batch_id}_error.jsonl" in done.stderr


def test_results_names_the_file_that_is_gone(
    cli: Cli, server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """A deleted error file: results says which of the batch's files is missing, exit 1."""
    fake.set_faults(rules=[{"fault": "status", "status": 422, "custom_id": "^req-1$"}])
    client = server.client()
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(i) for i in range(2)]).id)
    client.files.delete(batch.error_file_id)
    done = cli.run("results", batch.id)
    assert done.returncode == 1 and no_traceback(done)
    assert f"The batch's error file {batch.error_file_id} was deleted or has expired" in done.stderr
    assert not (tmp_path / f"{batch.id}_error.jsonl").exists()


def test_validate_says_how_many_of_how_many_problems_it_shows(tmp_path: Path) -> None:
    """Past 1,000 problems, the list stops and the summary says it shows 1,000 of them all."""
    path = write_jsonl(tmp_path / "bad.jsonl", ["not json"] * 2000)
    done = Cli("http://127.0.0.1:1/v1", tmp_path).run("validate", str(path), "--endpoint", CHAT)
    assert done.returncode == 4
    assert "2,000 problems in 2,000 lines; showing the first 1,000 of 2,000." in done.stdout
    assert "line 1001:" not in done.stdout


def test_results_of_a_running_batch_exits_8(slow_server: Server, tmp_path: Path) -> None:
    """A batch still running has no results yet: exit 8 and a message saying so."""
    batch = submit(slow_server.client(), tmp_path, [request_line(i) for i in range(50)])
    done = Cli(slow_server.base_url, tmp_path).run("results", batch.id)
    assert done.returncode == 8
    assert "no results until it finishes" in done.stderr


# ------------------------------------------------------------------ files


def test_files_ls_get_and_rm(cli: Cli, server: Server, tmp_path: Path) -> None:
    """files ls lists, get shows or downloads, rm deletes."""
    path = chat_file(tmp_path, 3)
    with path.open("rb") as handle:
        file_id = server.client().files.create(file=handle, purpose="batch").id
    assert [f["id"] for f in cli.json("files", "ls")["data"]] == [file_id]
    assert cli.json("files", "ls", "--purpose", "batch_output")["data"] == []
    assert cli.json("files", "get", file_id)["bytes"] == path.stat().st_size
    shown = cli.run("files", "get", file_id)
    assert file_id in shown.stdout and "requests.jsonl" in shown.stdout
    assert cli.run("files", "get", file_id, "--content").stdout == path.read_text()
    assert cli.run("files", "get", file_id, "-o", "copy.jsonl").returncode == 0
    assert (tmp_path / "copy.jsonl").read_bytes() == path.read_bytes()
    assert cli.json("files", "rm", file_id) == {"id": file_id, "object": "file", "deleted": True}
    gone = cli.run("files", "get", file_id)
    assert gone.returncode == 1 and "No such File object" in gone.stderr


# ------------------------------------------------------------------ errors and connection


def test_an_unknown_batch_is_a_clear_404(cli: Cli) -> None:
    """A 404 shows the server's message and status, never a traceback; --json gives the envelope."""
    done = cli.run("status", "batch_missing")
    assert done.returncode == 1 and no_traceback(done)
    assert "No batch found with id 'batch_missing'." in done.stderr and "HTTP 404" in done.stderr
    document = cli.json("status", "batch_missing", code=1)
    assert document["http_status"] == 404
    assert document["error"]["message"] == "No batch found with id 'batch_missing'."
    assert document["error"]["type"] == "invalid_request_error"


def test_a_refused_connection_names_the_base_url_and_exits_3(tmp_path: Path) -> None:
    """Nothing listening: exit 3 and a message naming the base URL."""
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    done = Cli(base_url, tmp_path).run("ls")
    assert done.returncode == 3 and no_traceback(done)
    assert f"Cannot reach the server at {base_url}: connection refused." in done.stderr
    document = Cli(base_url, tmp_path).json("status", "batch_x", code=3)
    assert document["error"]["type"] == "connection_error"
    assert base_url in document["error"]["message"]


def test_base_url_and_api_key_flags_override_the_environment(
    start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """--base-url/--api-key win over OPENAI_BASE_URL/OPENAI_API_KEY; a wrong key is a 401."""
    server = start_server("--api-key", "sk-right")
    cli = Cli(f"http://127.0.0.1:{free_port()}/v1", tmp_path, api_key="sk-wrong")
    flags = ["--base-url", server.base_url]
    refused = cli.run("ls", *flags)
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr
    assert cli.json("ls", *flags, "--api-key", "sk-right")["data"] == []
    assert Cli(server.base_url, tmp_path, api_key="sk-right").json("ls")["object"] == "list"


# ------------------------------------------------------------------ validate


def test_validate_reports_every_problem_by_line_and_exits_4(tmp_path: Path) -> None:
    """validate runs the server's validator locally and lists each bad line."""
    lines = [request_line(1), "not json", request_line(1), request_line(3, url="/v1/embeddings")]
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    done = Cli("http://127.0.0.1:1/v1", tmp_path).run("validate", str(path), "--endpoint", CHAT)
    assert done.returncode == 4
    assert "line 2: invalid_json_line" in done.stdout
    assert "line 3: duplicate_custom_id (custom_id)" in done.stdout
    assert "line 4: invalid_url (url)" in done.stdout
    assert "3 problems in 4 lines" in done.stdout


def test_validate_json_and_a_valid_file(tmp_path: Path) -> None:
    """--json gives the problems as error objects; a valid file exits 0."""
    cli = Cli("http://127.0.0.1:1/v1", tmp_path)
    bad = write_jsonl(tmp_path / "bad.jsonl", [request_line(1, method="GET")])
    report = cli.json("validate", str(bad), "--endpoint", CHAT, code=4)
    assert report["valid"] is False and report["error_count"] == 1
    assert report["errors"] == [
        {
            "code": "invalid_request",
            "message": "Only the POST method is supported.",
            "param": "method",
            "line": 1,
        }
    ]
    good = cli.json("validate", str(chat_file(tmp_path, 3)), "--endpoint", CHAT)
    assert good["valid"] is True and good["requests"] == 3 and good["model"] == "gpt-test"
    unserved = cli.run("validate", str(bad), "--endpoint", CHAT, "--model", "other")
    assert "model_not_found" in unserved.stdout


def test_submit_wait_says_why_the_batch_is_held_up(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """With the model server down, the progress says which one and why, instead of a silent
    ETA; once it answers, the batch completes."""
    port = free_port()
    server = start_server("--upstream", f"gpt-test@http://127.0.0.1:{port}/v1", upstream=False)
    cli = Cli(server.base_url, tmp_path)
    waiting = cli.start(
        "submit",
        str(chat_file(tmp_path, 3)),
        "--endpoint",
        CHAT,
        "--wait",
        "--poll-interval",
        "0.2",
    )
    assert waiting.stderr is not None
    seen = ""
    while "retrying" not in seen:
        line = waiting.stderr.readline()
        assert line, f"batchd submit ended without saying why: {seen}"
        seen += line
    assert "model server upstream-0" in seen and "(connection refused), retrying" in seen
    process, _ = start_model_server_process(tmp_path, port=port)
    try:
        _, rest = waiting.communicate(timeout=60)
    finally:
        stop_model_server_process(process)
    assert waiting.returncode == 0, seen + rest
    assert "completed: 3/3 done, 0 failed" in rest

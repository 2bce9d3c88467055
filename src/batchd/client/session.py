"""What every client command shares: ``--base-url``, ``--api-key`` and ``--json``, an API client,
and the one place that turns a ``ClientError`` into a message and an exit code."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from batchd.client.api import DEFAULT_BASE_URL, BatchAPI
from batchd.client.errors import ClientError
from batchd.client.exits import ExitCode
from batchd.client.output import Output


@dataclass
class Session:
    api: BatchAPI
    output: Output


Command = Callable[..., int]

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the API objects as one JSON document."
)


def with_session(command: Command) -> Callable[..., None]:
    """Add the connection options; call ``command(session, **params)``; exit with its code."""

    @click.option(
        "--base-url",
        envvar="OPENAI_BASE_URL",
        default=DEFAULT_BASE_URL,
        show_default=True,
        help="The Batch API to talk to (env: OPENAI_BASE_URL).",
    )
    @click.option(
        "--api-key",
        envvar="OPENAI_API_KEY",
        help="Bearer key (env: OPENAI_API_KEY); a batchd without keys accepts any or none.",
    )
    @json_option
    @functools.wraps(command)
    def run(base_url: str, api_key: str | None, as_json: bool, **params: Any) -> None:
        output = Output(as_json)
        with BatchAPI(base_url, api_key) as api:
            code = guarded(output, lambda: command(Session(api, output), **params))
        raise SystemExit(code)

    return run


def guarded(output: Output, body: Callable[[], int]) -> int:
    """Run a command body; a ``ClientError`` or Ctrl-C becomes a message and an exit code."""
    try:
        return body()
    except ClientError as error:
        output.error(error)
        return error.exit_code
    except KeyboardInterrupt:
        output.note("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # stdout closed early, as by `| head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK

"""``batchd validate``: the server's own line validator, run on a local file before uploading.

The file is streamed a block at a time, and each problem is printed as soon as it is found.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import click
from rich.text import Text

from batchd.client.errors import LocalFileError
from batchd.client.exits import ExitCode
from batchd.client.output import Output
from batchd.client.session import guarded, json_option
from batchd.models import ENDPOINTS, LineError
from batchd.validation import LineValidator, Outcome, Rules, iter_line_runs

READ_BLOCK = 1 << 20
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024  # the Batch API's limits (SPEC §4)
MAX_REQUESTS = 50_000
MAX_EMBEDDING_INPUTS = 50_000


@click.command()
@click.argument(
    "path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--endpoint", required=True, type=click.Choice(list(ENDPOINTS)))
@click.option(
    "--model",
    "models",
    multiple=True,
    help="A model the server serves (repeatable); without any, every model is accepted.",
)
@click.option("--max-requests", type=click.IntRange(min=1), default=MAX_REQUESTS)
@click.option("--max-embedding-inputs", type=click.IntRange(min=1), default=MAX_EMBEDDING_INPUTS)
@click.option("--max-bytes", type=click.IntRange(min=1), default=MAX_BATCH_FILE_BYTES)
@json_option
def validate(
    path: Path,
    endpoint: str,
    models: tuple[str, ...],
    max_requests: int,
    max_embedding_inputs: int,
    max_bytes: int,
    as_json: bool,
) -> None:
    """Check a batch input file locally, as the server will; print every problem by line.

    Exits 0 when the file is valid, 4 when it has problems. Nothing is uploaded.
    """
    rules = Rules(
        endpoint=endpoint,
        max_requests=max_requests,
        max_embedding_inputs=max_embedding_inputs,
        model_is_served=(lambda model: model in models) if models else (lambda _: True),
        served_models=models,
    )
    output = Output(as_json)
    raise SystemExit(guarded(output, lambda: Report(output, path).run(rules, max_bytes)))


class Report:
    """Prints problems as the validator finds them, then a summary; the exit code."""

    def __init__(self, output: Output, path: Path) -> None:
        self.output = output
        self.path = path
        self.shown = 0

    def run(self, rules: Rules, max_bytes: int) -> int:
        validator = LineValidator(rules)
        try:
            with self.path.open("rb") as handle:
                outcome = asyncio.run(self._feed(validator, handle))
        except OSError as exc:
            raise LocalFileError.of("read", self.path, exc) from exc
        too_big = self._size_problem(max_bytes)
        if too_big is not None:
            outcome.report(too_big)
        self._show_new(outcome)
        self._summarise(outcome)
        return ExitCode.INVALID_INPUT if outcome.error_count else ExitCode.OK

    async def _feed(self, validator: LineValidator, handle: IO[bytes]) -> Outcome:
        async for number, offset, lines in iter_line_runs(_blocks(handle)):
            validator.feed(number, offset, lines)
            self._show_new(validator.outcome)
        return validator.finish()

    def _size_problem(self, max_bytes: int) -> LineError | None:
        size = self.path.stat().st_size
        if size <= max_bytes:
            return None
        message = f"The input file is larger than {max_bytes} bytes, the limit for one batch."
        return LineError("invalid_request", message, "input_file_id")

    def _show_new(self, outcome: Outcome) -> None:
        if self.output.json:
            return
        for error in outcome.errors[self.shown :]:
            self.output.out.print(_problem_line(error))
        self.shown = len(outcome.errors)

    def _summarise(self, outcome: Outcome) -> None:
        errors = [_error_object(error) for error in outcome.errors]
        self.output.document(
            {
                "object": "validation",
                "file": str(self.path),
                "valid": not outcome.error_count,
                "requests": outcome.total,
                "model": outcome.model,
                "error_count": outcome.error_count,
                "errors": errors,
            }
        )
        self.output.show(_summary(self.path, outcome))


async def _blocks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while block := handle.read(READ_BLOCK):
        yield block


def _error_object(error: LineError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "param": error.param, "line": error.line}


def _problem_line(error: LineError) -> Text:
    where = "file" if error.line is None else f"line {error.line}"
    param = f" ({error.param})" if error.param else ""
    return Text.assemble((where, "bold"), ": ", (error.code, "red"), param, ": ", error.message)


def _summary(path: Path, outcome: Outcome) -> Text:
    if not outcome.error_count:
        return Text(f"{path}: {outcome.total} requests for {outcome.model}, valid.", style="green")
    shown, found = len(outcome.errors), outcome.error_count
    more = f"; showing the first {shown:,} of {found:,}" if found > shown else ""
    return Text(f"{path}: {found:,} problems in {outcome.total:,} lines{more}.", style="red")

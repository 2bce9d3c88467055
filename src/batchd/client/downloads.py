"""Downloading a finished batch's output and error files, streamed to disk.

A file is written as ``NAME.part`` and renamed when complete, so a file under its final name is
always whole. The names are the server's: ``<batch_id>_output.jsonl``, ``<batch_id>_error.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

from batchd.client.api import BatchAPI, Json
from batchd.client.errors import LocalFileError, ServerError

KINDS = {"output": "output_file_id", "error": "error_file_id"}
"""Each file a batch may have, by the field holding its id."""


def result_paths(directory: Path, batch_id: str) -> dict[str, Path]:
    """Where ``results`` puts a batch's files: ``<id>_output.jsonl`` and ``<id>_error.jsonl``."""
    return {kind: directory / f"{batch_id}_{kind}.jsonl" for kind in KINDS}


def download_results(api: BatchAPI, batch: Json, directory: Path) -> dict[str, str | None]:
    """Download the files a batch has; the path of each, or None where the batch has none."""
    paths = result_paths(directory, str(batch["id"]))
    file_ids = {kind: batch.get(field) for kind, field in KINDS.items()}
    if any(file_ids.values()):
        _make_directory(directory)
    return {
        kind: str(_save_result(api, kind, str(file_id), paths[kind])) if file_id else None
        for kind, file_id in file_ids.items()
    }


def _save_result(api: BatchAPI, kind: str, file_id: str, path: Path) -> Path:
    try:
        return save(api, file_id, path)
    except ServerError as error:
        if error.status_code != 404:
            raise
        gone = f"The batch's {kind} file {file_id} was deleted or has expired ({error.message})."
        raise error.restated(gone) from error


def save(api: BatchAPI, file_id: str, path: Path) -> Path:
    """Stream a file's content to ``path``."""
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("wb") as sink:
            api.download(file_id, sink)
        partial.replace(path)
    except OSError as exc:
        raise LocalFileError.of("write", path, exc) from exc
    finally:
        partial.unlink(missing_ok=True)
    return path


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalFileError.of("create", directory, exc) from exc

"""Downloading a finished batch's output and error files, streamed to disk.

A file is written as ``NAME.part`` and renamed when complete, so a file under its final name is
always whole.
"""

from __future__ import annotations

from pathlib import Path

from batchd.client.api import BatchAPI, Json
from batchd.client.errors import LocalFileError


def result_paths(directory: Path, batch_id: str) -> dict[str, Path]:
    """Where ``results`` puts a batch's files: ``<id>_output.jsonl`` and ``<id>_errors.jsonl``."""
    return {
        "output": directory / f"{batch_id}_output.jsonl",
        "errors": directory / f"{batch_id}_errors.jsonl",
    }


def download_results(api: BatchAPI, batch: Json, directory: Path) -> dict[str, str | None]:
    """Download the files a batch has; the path of each, or None where the batch has none."""
    paths = result_paths(directory, str(batch["id"]))
    file_ids = {"output": batch.get("output_file_id"), "errors": batch.get("error_file_id")}
    if any(file_ids.values()):
        _make_directory(directory)
    return {
        kind: str(save(api, file_id, paths[kind])) if file_id else None
        for kind, file_id in file_ids.items()
    }


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

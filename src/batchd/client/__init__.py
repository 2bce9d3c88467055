"""The client commands: talk to any server speaking the Batch API, through its HTTP API."""

from __future__ import annotations

import click

from batchd.client.batches import COMMANDS as BATCH_COMMANDS
from batchd.client.files import files
from batchd.client.validate import validate


def register(group: click.Group) -> None:
    """Add the client commands to the ``batchd`` command group."""
    for command in [*BATCH_COMMANDS, files, validate]:
        group.add_command(command)

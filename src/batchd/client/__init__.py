"""The client commands: talk to any server speaking the Batch API, through its HTTP API."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add the client commands to the ``batchd`` command group."""

"""The reference docs name every setting and every client exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.client.exits import ExitCode
from batchd.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
REFERENCE = DOCS / "configuration.md"
CLIENT = DOCS / "client.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    """docs/configuration.md has a row for each setting."""
    assert f"| `{name}` |" in REFERENCE.read_text()


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda code: code.name)
def test_every_client_exit_code_is_documented(code: ExitCode) -> None:
    """docs/client.md's exit code table has a row for each code the client commands use."""
    assert f"| {int(code)} |" in CLIENT.read_text()

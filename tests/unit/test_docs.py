"""The configuration reference names every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    """docs/configuration.md has a row for each setting."""
    assert f"| `{name}` |" in REFERENCE.read_text()

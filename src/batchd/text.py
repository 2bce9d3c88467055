"""What a caller's string must be before batchd keeps it or looks it up: text the store can
hold (no NUL, which PostgreSQL refuses in text; no lone surrogates, which are not UTF-8), and not
longer than its limit. A string that breaks these is the caller's mistake (a 400, or a 404 for an
id), never the store's error (a 500)."""

from __future__ import annotations

MAX_ID = 64
"""Ids batchd makes are under 40 characters: a longer one names nothing batchd has."""
MAX_CUSTOM_ID = 512
MAX_FILENAME = 1024


def storable(value: str, max_length: int) -> bool:
    """Whether ``value`` fits its column: at most ``max_length`` characters, valid UTF-8,
    no NUL."""
    if len(value) > max_length or "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate (decoded with surrogateescape)
        return False
    return True

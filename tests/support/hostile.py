"""Hypothesis strategies for what an attacker sends: NUL bytes, invalid UTF-8 (lone surrogates
encoded, overlong forms, stray continuation bytes), control and bidi characters, and strings far
past any limit; with the byte-level spelling for URLs and raw bodies beside the text one."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

NASTY_BYTES = (
    b"\x00",
    b"\xff",
    b"\xfe",
    b"\x80",  # a continuation byte alone
    b"\xc0\x80",  # an overlong NUL
    b"\xed\xa0\x80",  # a lone high surrogate, encoded
    b"\xed\xbf\xbf",  # a lone low surrogate, encoded
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xe2\x80\xae",  # right-to-left override
    b"%",
    b"%00",
    b"/",
    b"\\",
    b"..",
    b"\r\n",
    b'"',
    b"'",
    b"\t",
    b" ",
)
NASTY_TEXT = (
    "\x00",
    "\ufffd",
    "\u202e",
    "\U0010ffff",
    "\ud800",  # a lone surrogate: not UTF-8, refused by orjson and PostgreSQL alike
    "\udfff",
    "\x7f",
    "%00",
    "/",
    "..",
    '"',
    "\n",
)
PREFIXES = (b"", b"file-", b"batch_", b"req_")
"""Ids look like batchd's own at times, so that the hostile part is what the server meets."""


def hostile_bytes(min_size: int = 0) -> st.SearchStrategy[bytes]:
    """Short runs of nasty and arbitrary bytes, or one long run around and far past the limits
    on ids (64), metadata values (512), custom_ids (512) and filenames (1024)."""
    pieces = st.one_of(
        st.sampled_from(NASTY_BYTES),
        st.binary(min_size=1, max_size=6),
        st.text(min_size=1, max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
    mixed = st.builds(
        lambda prefix, parts: prefix + b"".join(parts),
        st.sampled_from(PREFIXES),
        st.lists(pieces, max_size=10),
    )
    long = st.builds(
        lambda size, fill: fill * size,
        st.sampled_from((63, 64, 65, 511, 512, 513, 1024, 1025, 10_000)),
        st.sampled_from((b"x", b"\x00", b"\xff", "é".encode())),
    )
    return st.one_of(mixed, long).filter(lambda raw: len(raw) >= min_size)


def hostile_text(min_size: int = 0) -> st.SearchStrategy[str]:
    """Like ``hostile_bytes``, as Python text: NUL, lone surrogates, control characters."""
    pieces = st.one_of(st.sampled_from(NASTY_TEXT), st.text(min_size=1, max_size=6))
    mixed = st.builds(
        lambda prefix, parts: prefix.decode() + "".join(parts),
        st.sampled_from(PREFIXES),
        st.lists(pieces, max_size=10),
    )
    long = st.builds(
        lambda size, fill: fill * size,
        st.sampled_from((63, 64, 65, 511, 512, 513, 1024, 10_000)),
        st.sampled_from(("x", "\x00", "é", "\U0001f600")),
    )
    return st.one_of(mixed, long).filter(lambda text: len(text) >= min_size)


def percent_encoded(raw: bytes) -> str:
    """``raw`` as it travels in a URL: every byte that is not unreserved, %XX."""
    return quote(raw, safe="")


def json_values(leaves: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value, nested, with ``leaves`` (default: every JSON scalar, hostile text,
    integers past 64 bits) at the bottom."""
    scalars = (
        leaves
        if leaves is not None
        else st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
            hostile_text(),
        )
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=6), inner, max_size=4),
        ),
        max_leaves=12,
    )

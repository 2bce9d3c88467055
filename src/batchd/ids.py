"""The one id generator: OpenAI-style prefixed random base62 ids."""

from __future__ import annotations

import os
import string

_ALPHABET = (string.ascii_letters + string.digits).encode()
_UNBIASED = 4 * len(_ALPHABET)
"""248: the random bytes below it map onto the alphabet exactly four times each."""
_TO_DIGIT = bytes(_ALPHABET[byte % len(_ALPHABET)] for byte in range(256))
_OVER = bytes(range(_UNBIASED, 256))
_SPARE = 8
"""Extra random bytes drawn so that the 1 in 32 rejected rarely leaves too few digits."""


def _random(length: int) -> str:
    # Rejection sampling in C (bytes.translate) instead of a divmod loop: several times faster,
    # and every digit stays uniform over the alphabet.
    digits = os.urandom(length + _SPARE).translate(_TO_DIGIT, _OVER)
    while len(digits) < length:
        digits += os.urandom(length).translate(_TO_DIGIT, _OVER)
    return digits[:length].decode("ascii")


def file_id() -> str:
    return "file-" + _random(22)


def is_file_id(text: str) -> bool:
    """Whether ``text`` is an id ``file_id`` could have made."""
    return (
        len(text) == 27 and text.startswith("file-") and text[5:].isascii() and text[5:].isalnum()
    )


def batch_id() -> str:
    return "batch_" + _random(24)


def batch_request_id() -> str:
    return "batch_req_" + _random(24)


def request_id() -> str:
    return "req_" + _random(24)


def worker_id() -> str:
    return "wrk_" + _random(12)


def key_id() -> str:
    return "key_" + _random(16)


def event_id() -> str:
    return "evt_" + _random(24)


def webhook_endpoint_id() -> str:
    return "we_" + _random(24)

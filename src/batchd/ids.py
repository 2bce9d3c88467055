"""The one id generator: OpenAI-style prefixed random base62 ids."""

from __future__ import annotations

import os
import string

_ALPHABET = (string.ascii_letters + string.digits).encode()
_UNBIASED = 4 * len(_ALPHABET)
"""248: the random bytes below it map onto the alphabet exactly four times each."""
_TO_DIGIT = bytes(_ALPHABET[byte % len(_ALPHABET)] for byte in range(256))
_OVER = bytes(range(_UNBIASED, 256))
_DRAW = 4096
"""Random bytes read from the OS at a time: one system call serves ~160 ids. One per id was the
largest single cost of writing a result line."""


class _Digits:
    """Unbiased base62 digits, drawn from the OS a block at a time. A forked child starts with
    none of its parent's, so that no two processes hand out the same ids."""

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._digits, self._used = b"", 0

    def take(self, length: int) -> str:
        if self._used + length > len(self._digits):
            self._draw(length)
        start = self._used
        self._used += length
        return self._digits[start : self._used].decode("ascii")

    def _draw(self, length: int) -> None:
        # Rejection sampling in C (bytes.translate) instead of a divmod loop: several times faster,
        # and every digit stays uniform over the alphabet.
        digits = self._digits[self._used :]
        while len(digits) < length:
            digits += os.urandom(_DRAW).translate(_TO_DIGIT, _OVER)
        self._digits, self._used = digits, 0


_random = _Digits().take


def file_id() -> str:
    return "file-" + _random(22)


def batch_id() -> str:
    return "batch_" + _random(24)


def batch_request_id() -> str:
    return "batch_req_" + _random(24)


def request_id() -> str:
    return "req_" + _random(24)


def worker_id() -> str:
    return "wrk_" + _random(12)

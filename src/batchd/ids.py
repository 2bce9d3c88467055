"""The one id generator: OpenAI-style prefixed random base62 ids."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def _random(length: int) -> str:
    number = int.from_bytes(secrets.token_bytes(length))  # 8 bits of entropy per base62 digit
    digits = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(digits)


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
